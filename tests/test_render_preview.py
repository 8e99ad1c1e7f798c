"""Live previews: the batch in progress decoded by the tiny autoencoder every N steps, handed
to the Python API's callback and to the progress display; nothing loaded when nobody looks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fairytale.errors import FairytaleError
from fairytale.render import render_book
from fairytale.render.previews import PreviewDecoder
from fairytale.render.progress import RenderProgress
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    tiny_settings,
    write_plan,
)


@pytest.fixture(scope="session")
def tiny_taesd(tiny_models):
    return tiny_models("taesd")


class Recorder(RenderProgress):
    def __init__(self):
        self.previews = []

    def preview(self, preview):
        self.previews.append((preview.pages, preview.step))


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_previews_come_at_the_chosen_interval_and_do_not_change_the_pictures(tiny_sd, tiny_taesd, tmp_path):
    plan = make_plan(3)
    seen, recorder = [], Recorder()
    settings = tiny_settings(tiny_sd, steps=5, batch_size=2, preview_model=str(tiny_taesd))
    (tmp_path / "on").mkdir()
    with_previews = render_book(
        write_plan(tmp_path / "on", plan), tmp_path / "on" / "b.pdf", settings,
        progress=recorder, on_preview=seen.append, preview_every=2,
    )
    # batches (1, 2) and (3,); steps 2 and 4 of 5 (the last step's picture is the real one)
    assert [(p.pages, p.step, p.steps) for p in seen] == [((1, 2), 2, 5), ((1, 2), 4, 5), ((3,), 2, 5), ((3,), 4, 5)]
    assert recorder.previews == [(p.pages, p.step) for p in seen]
    for preview in seen:
        assert len(preview.images) == len(preview.pages)
        assert all(image.size == (64, 64) and image.mode == "RGB" for image in preview.images)
    assert not np.array_equal(np.asarray(seen[0].images[0]), np.asarray(seen[1].images[0]))  # the picture forms

    (tmp_path / "off").mkdir()
    without = render_book(write_plan(tmp_path / "off", plan), tmp_path / "off" / "b.pdf", settings, progress=False)
    for a, b in zip(with_previews.pages, without.pages, strict=True):
        assert np.array_equal(pixels(with_previews.book_dir / a.image), pixels(without.book_dir / b.image))


def test_no_previews_and_no_tiny_autoencoder_when_nobody_looks(tiny_sd, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the preview decoder was loaded")

    monkeypatch.setattr(PreviewDecoder, "load", refuse)
    recorder = Recorder()
    result = render_book(write_plan(tmp_path, make_plan(2)), tmp_path / "b.pdf", tiny_settings(tiny_sd), progress=recorder)
    assert result.painted == [1, 2] and recorder.previews == []


def test_previews_of_drafts_and_a_bad_interval(tiny_sd, tiny_taesd, tiny_models, tmp_path):
    seen = []
    settings = tiny_settings(
        tiny_sd, draft=True, draft_lora=str(tiny_models("lcm_lora")), preview_model=str(tiny_taesd)
    )
    plan_path = write_plan(tmp_path, make_plan(1))
    render_book(plan_path, tmp_path / "b.pdf", settings, progress=False, on_preview=seen.append, preview_every=1)
    assert [(p.pages, p.step, p.steps) for p in seen] == [((1,), 1, 4), ((1,), 2, 4), ((1,), 3, 4)]
    with pytest.raises(FairytaleError, match="at least 1"):
        render_book(plan_path, tmp_path / "c.pdf", settings, progress=False, on_preview=seen.append, preview_every=0)
