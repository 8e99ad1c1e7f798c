"""`fairytale render` and `fairytale book` on the command line: runs, summaries, and bad input
(one clear line, exit code not 0, nothing half-written)."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.files import sha256_file
from fairytale.plan import Embedding, load_plan
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    pdf_page_texts,
    single_torch_thread,
    squash,
    write_plan,
)

STORIES = Path(__file__).parent / "data" / "stories"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_refused(result, message: str, folder: Path, before: dict[str, bytes]) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:") and message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert snapshot(folder) == before  # nothing written, nothing changed


@pytest.fixture()
def plan_file(tmp_path):
    return write_plan(tmp_path, make_plan(3))


def test_render_paints_lays_out_and_summarises(tiny_sd, plan_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = run("render", plan_file, "-o", out / "zoe.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 2, "--device", "cpu", "--bleed")
    assert result.exit_code == 0, result.output
    assert (out / "zoe.pdf").is_file() and (out / "zoe" / "manifest.json").is_file()
    assert "3 painted, 0 reused" in result.stderr and "s/page" in result.stderr
    assert "Painting pages" in result.stderr  # the progress bar

    again = run("render", plan_file, "-o", out / "zoe.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 2, "--pages", "2", "--quiet")
    assert again.exit_code == 0 and again.stderr == ""
    assert load_plan(plan_file).pages[1].seed != make_plan(3).pages[1].seed


def test_help_documents_the_commands():
    for command in ("render", "book"):
        result = run(command, "--help")
        assert result.exit_code == 0
        for option in ("--output", "--model", "--steps", "--low-vram", "--print", "--trim", "--bleed"):
            assert option in result.output
    assert "--pages" in run("render", "--help").output
    assert "--ner-model" in run("book", "--help").output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backend", "sd99"], "Unknown backend 'sd99'. Available: sd14"),
        (["--pages", "2,9"], "Page 9 out of range: the plan has pages 1 to 3"),
        (["--pages", "x"], "Cannot read page list 'x'"),
        (["--seed", "5"], "--seed goes with --pages"),
        (["--steps", "0"], "--steps must be between 1 and 500"),
        (["--scheduler", "fancy"], "Unknown scheduler 'fancy'"),
        (["--trim", "b5"], "Unknown trim size 'b5'"),
        (["--width", "100"], "multiple of 8"),
        (["--device", "tpu"], "Unknown device 'tpu'"),
    ],
)
def test_bad_options_are_refused(tiny_sd, plan_file, tmp_path, extra, message):
    before = snapshot(tmp_path)
    result = run("render", plan_file, "-o", tmp_path / "b.pdf", "--model", tiny_sd, "--consistency", "seed", *extra)
    assert_refused(result, message, tmp_path, before)


def test_a_missing_embedding_file_is_refused(tiny_sd, tmp_path):
    plan = make_plan(2)
    plan.embeddings = [Embedding(token="<zoe>", path="learned/zoe.safetensors", family="sd1")]
    plan.characters[0].token = "<zoe>"
    plan.pages[0].prompt = "<zoe> at the lighthouse"
    plan_path = write_plan(tmp_path, plan)
    before = snapshot(tmp_path)
    result = run("render", plan_path, "-o", tmp_path / "b.pdf", "--model", tiny_sd, "--consistency", "seed")
    assert_refused(result, "Embedding file for <zoe> not found", tmp_path, before)


def test_an_output_in_a_missing_folder_is_made(tiny_sd, plan_file, tmp_path):
    # The README's `-o out/ginger.pdf` on a fresh machine: the folder is created, as users expect.
    pdf = tmp_path / "out" / "deeper" / "b.pdf"
    result = run("render", plan_file, "-o", pdf, "--model", tiny_sd, "--consistency", "seed", "--steps", 1, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert pdf.is_file() and (pdf.parent / "b" / "manifest.json").is_file()


def test_an_output_below_a_file_is_refused(tiny_sd, plan_file, tmp_path):
    (tmp_path / "out").write_text("a file, not a folder")
    before = snapshot(tmp_path)
    result = run("render", plan_file, "-o", tmp_path / "out" / "b.pdf", "--model", tiny_sd, "--consistency", "seed")
    assert_refused(result, "is not a folder", tmp_path, before)


def test_a_read_only_output_is_refused(tiny_sd, plan_file, tmp_path, read_only_folder):
    before = snapshot(tmp_path)
    result = run("render", plan_file, "-o", read_only_folder / "b.pdf", "--model", tiny_sd, "--consistency", "seed")
    assert_refused(result, "not writable", tmp_path, before)
    assert not (read_only_folder / "b.pdf").exists()


def test_an_output_that_is_not_a_pdf_is_refused(tiny_sd, plan_file, tmp_path):
    before = snapshot(tmp_path)
    assert_refused(run("render", plan_file, "-o", tmp_path / "b.txt"), "must be a .pdf file", tmp_path, before)


def test_a_missing_plan_is_refused(tmp_path):
    before = snapshot(tmp_path)
    assert_refused(run("render", tmp_path / "nope.json", "-o", tmp_path / "b.pdf"), "Plan file not found", tmp_path, before)


def test_a_missing_model_is_refused(plan_file, tmp_path):
    before = snapshot(tmp_path)
    result = run("render", plan_file, "-o", tmp_path / "b.pdf", "--model", tmp_path / "no-model")
    assert_refused(result, "Model path for sd14 does not exist", tmp_path, before)


@pytest.fixture()
def unwritable_plan(plan_file):
    """The plan, reached through a folder nobody can create files in, so its new seeds cannot be
    saved (the save writes a temporary file beside it): for root (who ignores file modes, as CI
    runs) the plan is opened through /proc/self/fd, for anyone else its folder is made read-only."""
    if os.geteuid() == 0:
        handle = os.open(plan_file, os.O_RDONLY)
        yield Path(f"/proc/self/fd/{handle}")
        os.close(handle)
        return
    plan_file.parent.chmod(0o500)
    yield plan_file
    plan_file.parent.chmod(0o700)


def test_repainting_needs_a_writable_plan(tiny_sd, plan_file, unwritable_plan, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o700)
    before = snapshot(tmp_path)
    result = run("render", unwritable_plan, "-o", out / "b.pdf", "--model", tiny_sd, "--consistency", "seed", "--pages", "1")
    assert_refused(result, "is not writable", tmp_path, before)


@pytest.fixture()
def fake_planner(monkeypatch):
    """A stand-in for fairytale.planner, registered where the real one lives."""
    calls = []

    def plan_story(story_path, **options):
        calls.append(options)
        plan = make_plan(2, title="Ginger the Giraffe")
        plan.source.sha256 = sha256_file(story_path)
        return plan

    module = types.ModuleType("fairytale.planner")
    module.plan_story = plan_story
    monkeypatch.setitem(sys.modules, "fairytale.planner", module)
    # ... which loads no language models, so `book` must not look for any
    monkeypatch.setattr("fairytale.model_check.plan_needs", lambda *args, **kwargs: [])
    return calls


def test_book_plans_then_renders_and_keeps_the_plan(fake_planner, tiny_sd, tmp_path):
    story = tmp_path / "ginger.txt"
    story.write_text("Ginger the Giraffe\n\nGinger was tall.\n", encoding="utf-8")
    pdf = tmp_path / "ginger.pdf"
    args = ["book", story, "-o", pdf, "--model", tiny_sd, "--consistency", "seed", "--steps", 2, "--ner-model", "n", "--qa-model", "q", "--nli-model", "i", "--quiet"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert pdf.is_file() and (tmp_path / "ginger" / "plan.json").is_file()
    assert fake_planner[0]["ner_model"] == "n" and fake_planner[0]["qa_model"] == "q" and fake_planner[0]["nli_model"] == "i"
    assert fake_planner[0]["model"] == str(tiny_sd) and fake_planner[0]["backend"] == "sd14"

    # the same story again: the plan (perhaps edited) is reused, nothing is planned or painted
    again = run(*args[:-1])
    assert again.exit_code == 0 and len(fake_planner) == 1
    assert "0 painted, 2 reused" in again.stderr

    # another story into the same folder would overwrite the plan: refused unless --force
    story.write_text("Another story.\n", encoding="utf-8")
    before = snapshot(tmp_path)
    assert_refused(run(*args), "pass --force to plan the story again", tmp_path, before)
    assert run(*args, "--force").exit_code == 0 and len(fake_planner) == 2


def test_book_makes_the_output_folder_as_the_readme_example_does(fake_planner, tiny_sd, tmp_path, monkeypatch):
    # README: `fairytale book story.txt -o out/ginger.pdf`, on a machine without out/.
    monkeypatch.chdir(tmp_path)
    Path("story.txt").write_text("Ginger the Giraffe\n\nGinger was tall.\n", encoding="utf-8")
    result = run("book", "story.txt", "-o", "out/ginger.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 1, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "ginger.pdf").is_file() and (tmp_path / "out" / "ginger" / "plan.json").is_file()


def test_book_refuses_bad_input_before_planning(fake_planner, tiny_sd, tmp_path):
    story = tmp_path / "s.txt"
    story.write_text("A story.", encoding="utf-8")
    before = snapshot(tmp_path)
    assert_refused(run("book", tmp_path / "none.txt", "-o", tmp_path / "b.pdf"), "Story file not found", tmp_path, before)
    assert_refused(run("book", story, "-o", story / "b.pdf"), "is not a folder", tmp_path, before)
    assert_refused(run("book", story, "-o", tmp_path / "b.pdf", "--backend", "nope"), "Unknown backend", tmp_path, before)
    assert fake_planner == []


def test_book_end_to_end_with_the_real_planner(tiny_ner, tiny_qa, tiny_nli, tiny_sd, tmp_path):
    pytest.importorskip("fairytale.planner")
    story = STORIES / "ginger_giraffe.txt"
    pdf = tmp_path / "out" / "book.pdf"
    pdf.parent.mkdir()
    result = run(
        "book", story, "-o", pdf, "--model", tiny_sd, "--consistency", "seed", "--ner-model", tiny_ner, "--qa-model", tiny_qa,
        "--nli-model", tiny_nli, "--steps", 2, "--device", "cpu", "--quiet",
    )
    assert result.exit_code == 0, result.output
    plan = load_plan(pdf.parent / "book" / "plan.json")
    texts = pdf_page_texts(pdf)
    assert len(texts) == len(plan.pages) + 2
    everything = squash(" ".join(texts))
    for word in story.read_text(encoding="utf-8").split():
        assert word in everything, word


def test_raising_max_repaints_paints_a_placeholder_page_again(tiny_sd2, tiny_safety_checker, tmp_path):
    """``--max-repaints`` raised after a page got a placeholder: the page is tried again."""
    import shutil

    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    from fairytale.render import load_manifest
    from tests.tiny_models.diffusion import make_checker_flag_everything

    flagging = tmp_path / "flagging-checker"
    shutil.copytree(tiny_safety_checker, flagging)
    checker = StableDiffusionSafetyChecker.from_pretrained(flagging)
    make_checker_flag_everything(checker)
    checker.save_pretrained(flagging, safe_serialization=True)
    plan_path = write_plan(tmp_path, make_plan(1))
    common = ["render", plan_path, "-o", tmp_path / "b.pdf", "--backend", "sd21", "--model", tiny_sd2, "--steps", "1",
              "--width", "64", "--height", "64", "--device", "cpu", "--consistency", "seed", "--quiet"]
    given_up = run(*common, "--safety-model", flagging, "--max-repaints", "0")
    assert given_up.exit_code == 0, given_up.output
    assert load_manifest(tmp_path / "b").pages[0].safety == "placeholder"
    same = run(*common, "--safety-model", tiny_safety_checker, "--max-repaints", "0")
    assert same.exit_code == 0 and load_manifest(tmp_path / "b").pages[0].safety == "placeholder"
    raised = run(*common, "--safety-model", tiny_safety_checker, "--max-repaints", "1")
    assert raised.exit_code == 0, raised.output
    assert load_manifest(tmp_path / "b").pages[0].safety == "passed"
