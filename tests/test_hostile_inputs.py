"""Hostile input on the command line: every case ends in one line on stderr and a non-zero exit,
with no traceback and nothing lost (issue 11, section 3).

Each test names the defect it guards against: 3.2 markup in user text, 3.5 pictures that are not
what they claim, 3.6 a damaged render cache, 3.7 embedding files with unexpected content, 3.8 a
token that is a word, 3.9 huge page ranges, 3.10 read-only outputs, 3.11 file permissions, 3.12
output folders that do not exist yet.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.plan import Embedding, Reference
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    write_plan,
)
from tests.training_fixtures import character_folder

ROOT = Path(__file__).resolve().parent.parent
FAST_TRAIN = ["--steps", "1", "--grad-accum", "1", "--no-gradient-checkpointing", "--checkpoint-every", "1"]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_one_line(result, *messages: str) -> str:
    """A refusal: non-zero exit, exactly one line on stderr holding ``messages``, no traceback."""
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:"), lines[0]
    for message in messages:
        assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def normal_mode() -> int:
    """What a new file of this user gets: 0666 less the umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def squashed(text: str) -> str:
    return " ".join(text.split())


# --- pictures that are not what they claim (3.5) -------------------------------------------


def png_bytes(width: int = 16, height: int = 16) -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A real 16×16 PNG whose header claims ``width × height``: a few hundred bytes that would
    decode into gigabytes."""
    data = png_bytes()
    body = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF) + data[33:]


BAD_PICTURES = {
    "bomb": (bomb_png, "too large"),
    "text": (lambda: b"hello, I am not a picture", "not a PNG, JPEG"),
    "truncated": (lambda: png_bytes(64, 64)[:300], "damaged or cut short"),
}


@pytest.mark.parametrize("kind", sorted(BAD_PICTURES))
def test_vary_refuses_a_bad_picture_in_one_line(kind, tmp_path, tiny_variations):
    make, message = BAD_PICTURES[kind]
    picture = tmp_path / "portrait.png"
    picture.write_bytes(make())
    before = snapshot(tmp_path)
    result = run("vary", picture, "-o", tmp_path / "pics", "--model", tiny_variations, "--device", "cpu")
    assert_one_line(result, str(picture), message)
    assert snapshot(tmp_path) == before


def test_train_refuses_a_bomb_among_the_pictures(tmp_path, tiny_sd):
    data = character_folder(tmp_path / "pics", count=3)
    (data / "huge.png").write_bytes(bomb_png())
    before = snapshot(tmp_path)
    result = run("train", "character", "--data", data, "--token", "<pip>", "--model", tiny_sd,
                 *FAST_TRAIN, "-o", tmp_path / "pip.safetensors")  # fmt: skip
    line = assert_one_line(result, "huge.png", "too large")
    assert "training picture" in line
    assert snapshot(tmp_path) == before


def test_a_user_reference_portrait_that_is_a_bomb_is_refused(tmp_path, tiny_unclip, tiny_safety_checker):
    plan = make_plan(1)
    (tmp_path / "zoe.png").write_bytes(bomb_png())
    plan.characters[0].reference = Reference(image="zoe.png")
    plan_path = write_plan(tmp_path, plan)
    result = run("render", plan_path, "-o", tmp_path / "b.pdf", "--backend", "unclip", "--model", tiny_unclip, "--safety-model", tiny_safety_checker,
                 "--steps", 1, "--device", "cpu")  # fmt: skip
    assert_one_line(result, "zoe.png", "too large")  # the only line: refused before the model loads
    assert not (tmp_path / "b.pdf").exists()


# --- rendered books: markup, a damaged cache, embeddings, page ranges ------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, tiny_sd):
    """A 2-page book rendered with the tiny model, whose prompt holds text in brackets."""
    folder = tmp_path_factory.mktemp("hostile-book")
    plan = make_plan(2)
    plan.pages[0].prompt = "a girl in a [red scarf] by the sea"
    plan_path = write_plan(folder, plan)
    result = run("render", plan_path, "-o", folder / "zoe.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 1, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    return folder, plan_path


def render_again(rendered, tiny_sd, *extra):
    folder, plan_path = rendered
    return run("render", plan_path, "-o", folder / "zoe.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 1, "--device", "cpu", *extra)


def test_brackets_in_a_prompt_survive_the_evaluate_table(rendered, tiny_clip):
    folder, _ = rendered
    result = run("evaluate", folder / "zoe", "--clip-model", tiny_clip)
    assert result.exit_code == 0, result.output
    assert "[red scarf]" in squashed(result.stdout)


def test_a_file_name_with_brackets_is_named_exactly(tmp_path):
    result = run("render", tmp_path / "plan [draft].json", "-o", tmp_path / "b.pdf")
    assert_one_line(result, "plan [draft].json")
    result = run("book", tmp_path / "story [draft].txt", "-o", tmp_path / "b.pdf")
    assert_one_line(result, "story [draft].txt")
    result = run("vary", tmp_path / "[/]pic.png", "-o", tmp_path / "o")
    assert_one_line(result, "[/]pic.png")


def test_a_truncated_cached_picture_is_painted_again(rendered, tiny_sd):
    folder, _ = rendered
    cache = folder / "zoe" / "cache"
    record = json.loads(next(p for p in sorted(cache.glob("*.json"))).read_text())
    picture = cache / f"{record['key']}.png"
    picture.write_bytes(picture.read_bytes()[:200])  # the record stays intact
    result = render_again(rendered, tiny_sd)
    assert result.exit_code == 0, result.output
    assert "1 painted, 1 reused" in squashed(result.stderr)
    Image.open(picture).load()  # whole again


def test_a_cache_record_without_a_hash_is_trusted_when_its_picture_decodes(rendered, tiny_sd):
    # Books rendered before records carried hashes are not painted again.
    folder, _ = rendered
    for record_path in (folder / "zoe" / "cache").glob("*.json"):
        record = json.loads(record_path.read_text())
        record.pop("sha256", None)
        record_path.write_text(json.dumps(record))
    result = render_again(rendered, tiny_sd)
    assert result.exit_code == 0, result.output
    assert "0 painted, 2 reused" in squashed(result.stderr)


def test_a_huge_page_range_is_refused_without_expanding_it():
    # Under a 1 GiB address-space limit, expanding 1-1000000000 into a set runs out of memory.
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from fairytale.errors import FairytaleError\n"
        "from fairytale.render.settings import parse_pages\n"
        "try:\n    parse_pages('1-1000000000', 12)\nexcept FairytaleError as exc:\n    print(exc)\n"
        "print(parse_pages('2-4,1-1', 12))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Page 1000000000 out of range: the plan has pages 1 to 12", "[1, 2, 3, 4]"]


def _bad_embedding(path: Path, kind: str) -> None:
    from safetensors.torch import save_file

    if kind == "nan":
        save_file({"<zoe>": torch.full((1, 32), float("nan"))}, str(path))
    elif kind == "empty":
        save_file({"emb_params": torch.zeros(0, 32)}, str(path))
    elif kind == "int":
        torch.save(5, path)
    elif kind == "list":
        torch.save([torch.zeros(1, 32)], path)
    elif kind == "empty-string-to-param":
        torch.save({"string_to_param": {}}, path)
    elif kind == "text":
        path.write_text("these are not the vectors you are looking for")


@pytest.mark.parametrize(
    "kind, suffix, message",
    [
        ("nan", ".safetensors", "NaN or infinite"),
        ("empty", ".safetensors", "holds no vectors"),
        ("int", ".pt", "holds a int"),
        ("list", ".pt", "holds a list"),
        ("empty-string-to-param", ".pt", "string_to_param is empty"),
        ("text", ".pt", "zoe.pt"),
    ],
)
def test_render_refuses_an_embedding_file_with_unexpected_content(kind, suffix, message, tmp_path, tiny_sd):
    path = tmp_path / f"zoe{suffix}"
    _bad_embedding(path, kind)
    plan = make_plan(1)
    plan.embeddings = [Embedding(token="<zoe>", path=path.name)]
    plan.pages[0].prompt = "<zoe> by the sea"
    plan_path = write_plan(tmp_path, plan)
    before = snapshot(tmp_path)
    result = run("render", plan_path, "-o", tmp_path / "b.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 1, "--device", "cpu")
    assert_one_line(result, message)
    assert snapshot(tmp_path) == before


# --- tokens (3.8, 3.2) -----------------------------------------------------------------------


def test_train_refuses_a_token_that_is_a_word(tmp_path, tiny_sd):
    data = character_folder(tmp_path / "pics", count=3)
    before = snapshot(tmp_path)
    result = run("train", "character", "--data", data, "--token", "giraffe", "--model", tiny_sd,
                 *FAST_TRAIN, "-o", tmp_path / "g.safetensors")  # fmt: skip
    assert_one_line(result, "giraffe", "already knows the token")
    assert snapshot(tmp_path) == before


def test_render_refuses_a_plan_token_that_is_a_word(tmp_path, tiny_sd):
    from safetensors.torch import save_file

    save_file({"giraffe": torch.randn(1, 32)}, str(tmp_path / "giraffe.safetensors"))
    plan = make_plan(1)
    plan.embeddings = [Embedding(token="giraffe", path="giraffe.safetensors")]
    plan.pages[0].prompt = "a tall giraffe by the sea"
    plan_path = write_plan(tmp_path, plan)
    before = snapshot(tmp_path)
    result = run("render", plan_path, "-o", tmp_path / "b.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 1, "--device", "cpu", "--quiet")
    assert_one_line(result, "giraffe", "already knows the token")
    assert snapshot(tmp_path) == before


def test_train_prints_a_token_with_brackets_as_it_is(tmp_path, tiny_sd):
    data = character_folder(tmp_path / "pics", count=3)
    output = tmp_path / "odd [v2].safetensors"
    result = run("train", "character", "--data", data, "--token", "[/]", "--model", tiny_sd, *FAST_TRAIN, "-o", output)
    assert result.exit_code == 0, result.output
    assert "token [/]" in result.output and "Trained [/]" in result.output
    assert "[v2]" in result.output  # the output path in the summary
    assert output.is_file()


# --- outputs (3.10, 3.11, 3.12) --------------------------------------------------------------


def test_vary_into_a_folder_that_cannot_be_made_is_refused_before_painting(tmp_path, read_only_folder, tiny_variations):
    picture = tmp_path / "p.png"
    picture.write_bytes(png_bytes())
    result = run("vary", picture, "-o", read_only_folder / "pics", "--model", tiny_variations, "--device", "cpu", "--quiet")
    assert_one_line(result, "not writable")
    assert not (read_only_folder / "pics").exists()


def test_train_with_a_read_only_checkpoint_folder_is_refused_before_training(tmp_path, read_only_folder, tiny_sd):
    data = character_folder(tmp_path / "pics", count=3)
    before = snapshot(tmp_path)
    result = run("train", "character", "--data", data, "--token", "<pip>", "--model", tiny_sd, *FAST_TRAIN,
                 "--checkpoint-dir", read_only_folder / "ckpt", "-o", tmp_path / "pip.safetensors")  # fmt: skip
    assert_one_line(result, "checkpoint folder", "not writable")
    assert "Training" not in result.output
    assert snapshot(tmp_path) == before


def test_outputs_have_the_users_normal_permissions(rendered):
    folder, _ = rendered
    mode = normal_mode()
    assert (folder / "zoe.pdf").stat().st_mode & 0o777 == mode
    assert {p.stat().st_mode & 0o777 for p in (folder / "zoe").rglob("*") if p.is_file()} == {mode}


def test_evaluate_refuses_a_truncated_page_picture(tmp_path, tiny_sd, tiny_clip):
    plan_path = write_plan(tmp_path, make_plan(1))
    assert run("render", plan_path, "-o", tmp_path / "z.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 1, "--device", "cpu", "--quiet").exit_code == 0
    page = tmp_path / "z" / "pages" / "page-01.png"
    page.write_bytes(page.read_bytes()[:200])
    result = run("evaluate", tmp_path / "z", "--clip-model", tiny_clip)
    assert_one_line(result, "page-01.png", "damaged or cut short")
    assert not (tmp_path / "z" / "evaluation.json").exists()


def test_umask_is_respected_for_a_new_book(tmp_path, tiny_sd):
    plan_path = write_plan(tmp_path, make_plan(1))
    old = os.umask(0o027)
    try:
        result = run("render", plan_path, "-o", tmp_path / "new" / "z.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 1, "--device", "cpu", "--quiet")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "z.pdf").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("options", [["--format", "epub"], ["--preset", "kdp"], ["--format", "pdf"]])
def test_export_refuses_a_page_picture_that_is_a_bomb_in_one_line(tmp_path, options):
    from tests.publish_support import fake_book

    book = fake_book(tmp_path, make_plan(2))
    (book / "pages" / "page-01.png").write_bytes(bomb_png())
    before = snapshot(tmp_path)
    result = run("export", book, *options)
    assert_one_line(result, "page-01.png", "too large")
    assert snapshot(tmp_path) == before
