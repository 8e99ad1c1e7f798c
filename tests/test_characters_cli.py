"""`fairytale vary` and `fairytale evaluate` with the tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.errors import FairytaleError
from fairytale.evaluation import evaluate_book
from fairytale.render import render_book
from fairytale.variations import clip_preprocess, make_variations
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    tiny_settings,
    write_plan,
)
from training.data import find_training_images

runner = CliRunner()


@pytest.fixture()
def portrait(tmp_path):
    gradient = np.linspace(0, 255, 80 * 60 * 3).reshape(60, 80, 3).astype(np.uint8)
    path = tmp_path / "ginger.png"
    Image.fromarray(gradient).save(path)
    return path


def test_clip_preprocess_resizes_without_antialiasing():
    # A one-pixel checkerboard: an anti-aliased downscale averages it to flat grey, the card's
    # plain bicubic resize (what the model was trained on) keeps the contrast.
    board = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    picture = Image.fromarray(np.stack([board] * 3, axis=-1))
    pixels = clip_preprocess(picture, 24, [0.5] * 3, [0.5] * 3)
    assert pixels.shape == (1, 3, 24, 24)
    smooth = torch.nn.functional.interpolate(
        torch.from_numpy(board / 255.0)[None, None].float(), size=(24, 24), mode="bicubic", antialias=True
    )
    assert pixels.std() > 5 * (smooth * 2 - 1).std()
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(board / 255.0)[None, None].float(), size=(24, 24), mode="bicubic", antialias=False
    )
    assert torch.allclose(pixels[0, 0], (expected[0, 0] - 0.5) / 0.5, atol=1e-5)


def test_vary_writes_pictures_and_a_training_set(tiny_variations, portrait, tmp_path):
    out = tmp_path / "pics"
    result = runner.invoke(
        app,
        ["vary", str(portrait), "-n", "3", "--model", str(tiny_variations), "-o", str(out), "--steps", "2",
         "--device", "cpu", "--training-set", "--seed", "5"],
    )
    assert result.exit_code == 0, result.output
    pictures = sorted(out.glob("variation-*.png"))
    assert [p.name for p in pictures] == ["variation-01.png", "variation-02.png", "variation-03.png"]
    assert all(Image.open(p).size == (64, 64) for p in pictures)
    record = json.loads((out / "variations.json").read_text())
    assert record["guidance"] == 3.0 and len({v["seed"] for v in record["variations"]}) == 3
    # the trainer reads the folder: the source picture plus its variations
    found = find_training_images(out)
    assert sorted(i.path.name for i in found) == ["source.png", *[p.name for p in pictures]]
    # the same seed paints the same variations
    again = make_variations(portrait, tmp_path / "again", 1, model=str(tiny_variations), seed=5, steps=2, device="cpu")
    assert np.array_equal(np.asarray(Image.open(again.pictures[0])), np.asarray(Image.open(pictures[0])))


def test_vary_refuses_bad_input(tiny_variations, portrait, tmp_path):
    (tmp_path / "not-a-picture.png").write_text("hello")
    result = runner.invoke(app, ["vary", str(tmp_path / "not-a-picture.png"), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and "Cannot read" in result.output
    with pytest.raises(FairytaleError, match="-n must be"):
        make_variations(portrait, tmp_path / "o", 0)
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def book(tiny_sd, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    plan_path = write_plan(folder, make_plan(3))
    return render_book(plan_path, folder / "zoe.pdf", tiny_settings(tiny_sd, steps=2), progress=False)


def test_evaluate_a_rendered_book(book, tiny_clip):
    result = runner.invoke(app, ["evaluate", str(book.book_dir), "--clip-model", str(tiny_clip), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "CLIP-T" in result.output and "CLIP-I" in result.output
    saved = json.loads((book.book_dir / "evaluation.json").read_text())
    assert [p["number"] for p in saved["pages"]] == [1, 2, 3]
    assert all(0 <= p["clip_t"] <= 100 for p in saved["pages"])
    # Zoë is on pages 1 and 3, Father only on page 2: one CLIP-I row
    assert [(c["id"], c["pages"]) for c in saved["characters"]] == [("zoe", [1, 3])]
    assert -100 <= saved["characters"][0]["clip_i"] <= 100


def test_evaluate_is_batch_independent_and_honest(book, tiny_clip):
    one = evaluate_book(book.book_dir, clip_model=str(tiny_clip), batch_size=1)
    many = evaluate_book(book.book_dir, clip_model=str(tiny_clip), batch_size=16)
    assert [p.clip_t for p in one.pages] == pytest.approx([p.clip_t for p in many.pages], abs=1e-3)
    # identical pictures are perfectly alike
    manifest_pages = sorted((book.book_dir / "pages").glob("page-*.png"))
    Image.open(manifest_pages[0]).save(manifest_pages[2])
    same = evaluate_book(book.book_dir, clip_model=str(tiny_clip))
    assert same.characters[0].clip_i == pytest.approx(100, abs=1e-2)


def test_evaluate_refuses_a_folder_that_is_not_a_book(tmp_path, tiny_clip):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nothing"), "--clip-model", str(tiny_clip)])
    assert result.exit_code != 0 and "Book folder not found" in result.output


def test_evaluate_says_a_mistyped_or_absent_device_in_one_line(book, tiny_clip, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, message in (("gpu", "Unknown device 'gpu'"), ("cuda:1", "CUDA is not available on this machine")):
        result = runner.invoke(app, ["evaluate", str(book.book_dir), "--clip-model", str(tiny_clip), "--device", device])
        assert result.exit_code != 0 and message in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_evaluate_scores_on_the_cuda_device_the_user_chose(book, monkeypatch):
    import torch

    from fairytale import registry

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []

    def load_clip(ref=None, device=None):
        chosen.append(device)
        raise RuntimeError("stop before painting on a GPU this machine lacks")

    monkeypatch.setattr(registry, "load_clip", load_clip)
    with pytest.raises(RuntimeError, match="stop before"):
        evaluate_book(book.book_dir, device=" CUDA:1")
    assert chosen == ["cuda:1"]
