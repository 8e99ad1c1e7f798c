"""The studio's paint actions with drafts and live previews, on the tiny SD model, the tiny
LCM-LoRA and the tiny autoencoder: drafts first, finals later repaint the drafts only, and
previews at the chosen interval (none when nobody looks)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fairytale.errors import FairytaleError
from fairytale.render import load_manifest
from fairytale.render.previews import PreviewDecoder
from fairytale.studio_actions import (
    IllustratorPool,
    StudioOptions,
    lock_page,
    open_book,
    page_views,
    pages_to_paint,
    paint_book,
    paint_candidates,
    repaint_page,
)
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    tiny_settings,
    write_plan,
)


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def pool():
    pool = IllustratorPool(idle_seconds=3600)
    yield pool
    pool.release()


@pytest.fixture()
def options(tiny_sd, tiny_models):
    settings = tiny_settings(
        tiny_sd,
        batch_size=1,
        draft_lora=str(tiny_models("lcm_lora")),
        preview_model=str(tiny_models("taesd")),
    )
    return StudioOptions(settings=settings)


@pytest.fixture()
def book(tmp_path):
    folder = tmp_path / "zoe"
    folder.mkdir()
    write_plan(folder, make_plan(3))
    return open_book(folder)


def test_drafts_first_then_a_final_paint_repaints_the_drafts_only(book, options, pool):
    first = paint_book(book, options, pool, pages=None)
    assert first.painted == [1, 2, 3] and first.drafts == []
    finals = {p.number: pixels(first.book_dir / p.image) for p in first.pages}

    # a new prompt for page 2, painted as a draft; the other pages keep their finals
    repaint_page(book, 2, options, pool, prompt="a girl and a red kite on the beach", draft=True)
    views = page_views(book, options.settings)
    assert [v.status for v in views] == ["painted", "draft", "painted"]
    assert views[1].picture is not None  # the draft is shown
    assert pages_to_paint(book, options.settings) == [2]  # a final paint repaints the draft
    assert pages_to_paint(book, options.settings.with_(draft=True)) == []
    assert [p.draft for p in load_manifest(book.folder).pages] == [False, True, False]
    draft_picture = pixels(views[1].picture)

    again = paint_book(book, options, pool, draft=True)  # nothing new to draft
    assert again.painted == [] and again.drafts == [2]

    done = paint_book(book, options, pool)
    assert done.painted == [2] and done.redrawn_drafts == [2] and done.drafts == []
    assert [v.status for v in page_views(book, options.settings)] == ["painted"] * 3
    manifest = load_manifest(book.folder)
    assert not any(p.draft for p in manifest.pages)
    for number in (1, 3):
        assert np.array_equal(pixels(book.folder / manifest.page(number).image), finals[number])
    assert not np.array_equal(pixels(book.folder / manifest.page(2).image), draft_picture)


def test_draft_candidates_are_drafts_and_a_chosen_one_is_painted_in_full_later(book, options, pool):
    from fairytale.studio_actions import choose_candidate

    drafts = paint_candidates(book, 1, options, pool, count=2, draft=True)
    finals = paint_candidates(book, 1, options, pool, count=2)
    assert [c.seed for c in drafts] == [c.seed for c in finals]
    for d, f in zip(drafts, finals, strict=True):
        assert d.key != f.key and d.image and f.image
        assert not np.array_equal(pixels(d.image), pixels(f.image))
    # a draft candidate whose final is in the cache now shows the final
    assert [c.key for c in paint_candidates(book, 1, options, pool, count=2, draft=True)] == [
        f.key for f in finals
    ]

    choose_candidate(book, 1, drafts[0].seed)
    result = paint_book(book, options, pool, draft=True)
    assert result.painted == [2, 3] and result.drafts == [2, 3] and result.reused == [1]


def test_previews_come_at_the_interval_and_none_when_off(book, options, pool, monkeypatch):
    seen = []
    options = StudioOptions(settings=options.settings.with_(steps=5))
    result = paint_book(book, options, pool, on_preview=seen.append, preview_every=2)
    assert result.painted == [1, 2, 3]
    assert [(p.pages, p.step, p.steps) for p in seen] == [
        ((n,), step, 5) for n in (1, 2, 3) for step in (2, 4)
    ]
    assert all(len(p.images) == 1 and p.images[0].size == (64, 64) for p in seen)

    draft_seen = []
    repaint_page(
        book, 2, options, pool, new_seed=True, draft=True, on_preview=draft_seen.append, preview_every=1
    )
    assert [(p.pages, p.step, p.steps) for p in draft_seen] == [((2,), 1, 4), ((2,), 2, 4), ((2,), 3, 4)]

    def refuse(*args, **kwargs):
        raise AssertionError("the preview decoder was loaded")

    monkeypatch.setattr(PreviewDecoder, "load", refuse)
    quiet = repaint_page(book, 3, options, pool, new_seed=True)  # no callback: no previews
    assert quiet.painted == [2, 3] and quiet.redrawn_drafts == [2]  # the draft of page 2 is painted in full
    assert len(seen) == 6 and len(draft_seen) == 3  # the earlier callbacks were not called again


def test_a_page_locks_only_on_a_final_picture(book, options, pool):
    """A lock keeps a finished picture for good: not nothing, and not a draft a final render
    would otherwise repaint."""
    with pytest.raises(FairytaleError, match="Page 1 has no picture yet"):
        lock_page(book, 1, options.settings)
    paint_book(book, options, pool, draft=True)
    with pytest.raises(FairytaleError, match="Page 1 shows a draft"):
        lock_page(book, 1, options.settings)
    assert not book.plan().pages[0].locked
    paint_book(book, options, pool)
    plan = lock_page(book, 1, options.settings)
    assert plan.pages[0].locked and plan.pages[0].picture == page_views(book, options.settings)[0].key
