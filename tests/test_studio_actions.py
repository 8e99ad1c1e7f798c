"""The studio's actions as plain functions, on the tiny SD model: paint, stop and resume, fix a
page (new prompt, candidates, locks, earlier pictures), character edits, uploads, the lock."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fairytale.book_lock import BookBusyError, book_lock
from fairytale.errors import FairytaleError
from fairytale.plan import load_plan
from fairytale.render import load_manifest, render_book
from fairytale.studio_actions import (
    MAX_PICTURE_BYTES,
    Book,
    IllustratorPool,
    PageLockedError,
    PaintingStopped,
    StudioOptions,
    StudioProgress,
    book_pdf,
    check_picture_upload,
    choose_candidate,
    create_book,
    earlier_pictures,
    lock_page,
    open_book,
    page_views,
    paint_book,
    paint_candidates,
    preview_pages,
    repaint_page,
    repaint_reference,
    save_character,
    save_page,
    use_earlier_picture,
    use_my_picture,
)
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    tiny_settings,
    write_plan,
)


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def count_words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def pool():
    pool = IllustratorPool(idle_seconds=3600)
    yield pool
    pool.release()


@pytest.fixture()
def options(tiny_sd):
    return StudioOptions(settings=tiny_settings(tiny_sd, batch_size=1))


@pytest.fixture()
def book(tmp_path):
    folder = tmp_path / "zoe"
    folder.mkdir()
    write_plan(folder, make_plan(3))
    return open_book(folder)


def test_locked_page_keeps_its_picture_through_fairytale_render(book, options, pool):
    with pool.borrow(options.settings) as illustrator:
        check_render_respects_locks(book, options, illustrator)


def check_render_respects_locks(book, options, illustrator):
    first = render_book(book.plan_file, book.pdf, options.settings, illustrator=illustrator, progress=False)
    before = {p.number: p.key for p in first.pages}
    lock_page(book, 2, options.settings)
    plan = load_plan(book.plan_file)
    assert plan.pages[1].locked and plan.pages[1].picture == before[2]

    # a new prompt typed into the plan by hand, and --pages 2: page 2 keeps its picture
    plan.pages[1].prompt = "a completely different picture"
    from fairytale.plan import save_plan

    save_plan(plan, book.plan_file)
    again = render_book(
        book.plan_file, book.pdf, options.settings, pages=[2, 3], illustrator=illustrator, progress=False
    )
    assert again.painted == [3] and {p.number: p.key for p in again.pages}[2] == before[2]
    assert load_plan(book.plan_file).pages[1].seed == plan.pages[1].seed  # no new seed recorded
    assert any("page 2 is locked" in w for w in again.warnings)
    with pytest.raises(PageLockedError):
        repaint_page(book, 2, options, IllustratorPool(), new_seed=True)

    lock_page(book, 2, options.settings, locked=False)
    unlocked = render_book(
        book.plan_file, book.pdf, options.settings, illustrator=illustrator, progress=False
    )
    assert unlocked.painted == [2]  # its own prompt now


def test_stop_keeps_finished_pages_and_painting_again_resumes(book, options, pool):
    class StopAfterFirst(StudioProgress):
        def pages_done(self, count, seconds_per_page):
            super().pages_done(count, seconds_per_page)
            self.stop()

    progress = StopAfterFirst()
    with pytest.raises(PaintingStopped):
        paint_book(book, options, pool, progress=progress)
    assert progress.done == 1 and progress.total == 3
    assert [v.status for v in page_views(book, options.settings)] == ["painted", "to paint", "to paint"]

    progress = StudioProgress()
    result = paint_book(book, options, pool, progress=progress)
    assert result.painted == [2, 3] and result.reused == [1]
    assert progress.done == progress.total == 2 and progress.seconds_left == 0
    assert "2 of 2" in progress.describe()


def test_paint_refused_while_another_job_holds_the_book(book, options, pool):
    with book_lock(book.folder):
        with pytest.raises(BookBusyError):
            paint_book(book, options, pool)


def test_new_prompt_repaints_only_that_page_and_the_old_picture_can_come_back(book, options, pool):
    paint_book(book, options, pool)
    before = {v.number: v for v in page_views(book, options.settings)}
    result = repaint_page(book, 2, options, pool, prompt="a red lighthouse at night")
    assert result.painted == [2]
    after = {v.number: v for v in page_views(book, options.settings)}
    assert after[2].key != before[2].key and after[2].prompt == "a red lighthouse at night"
    assert all(after[n].key == before[n].key for n in (1, 3))
    assert not np.array_equal(pixels(after[2].picture), pixels(before[2].picture))

    earlier = earlier_pictures(book, 2)
    assert [e.key for e in earlier] == [before[2].key, after[2].key]
    use_earlier_picture(book, 2, before[2].key)
    plan = load_plan(book.plan_file)
    assert plan.pages[1].prompt == before[2].prompt and plan.pages[1].locked
    again = paint_book(book, options, pool)
    assert again.painted == [] and load_manifest(book.folder).page(2).key == before[2].key


def test_four_candidates_and_the_chosen_one_becomes_the_page(book, options, pool):
    candidates = paint_candidates(book, 1, options, pool)
    assert len(candidates) == 4 and len({c.seed for c in candidates}) == 4
    assert all(c.image.is_file() for c in candidates)
    assert len({pixels(c.image).tobytes() for c in candidates}) == 4
    assert paint_candidates(book, 1, options, pool) == candidates  # asked again: from the cache

    choose_candidate(book, 1, candidates[2].seed)
    view = page_views(book, options.settings)[0]
    assert view.status == "painted" and view.picture == candidates[2].image
    result = paint_book(book, options, pool)
    assert 1 in result.reused and result.pages[0].key == candidates[2].key


def test_a_new_seed_after_rejected_candidates_paints_a_new_picture(book, options, pool):
    paint_book(book, options, pool)
    candidates = paint_candidates(book, 1, options, pool)
    seen = {c.key for c in candidates}
    for _ in range(2):  # none chosen; "paint again with a new seed", twice
        again = repaint_page(book, 1, options, pool, new_seed=True)
        assert again.painted == [1] and again.pages[0].key not in seen
        seen.add(again.pages[0].key)


def compose_prompts(book) -> None:
    """Give every page the prompt composed from the plan (as an older plan holds it: without a
    fingerprint, which the first edit adds)."""
    from fairytale.plan import save_plan
    from fairytale.planner import compose_prompt

    plan = book.plan()
    for page in plan.pages:
        page.prompt = compose_prompt(plan, page, count_words)
    save_plan(plan, book.plan_file)


def test_new_description_marks_the_pages_showing_the_character(book, options, pool):
    compose_prompts(book)
    paint_book(book, options, pool)
    lock_page(book, 3, options.settings)
    result = save_character(
        book,
        "zoe",
        settings=options.settings,
        description="a girl with a yellow raincoat",
        count_tokens=count_words,
    )
    assert (result.changed, result.hand_written) == ([1], [])  # zoe is on pages 1 and 3; page 3 is locked
    assert [v.status for v in page_views(book, options.settings)] == ["to paint", "painted", "locked"]


def test_a_prompt_written_in_the_studio_survives_a_new_description(book):
    from fairytale.render.settings import RenderSettings

    settings = RenderSettings()  # the tokenizer is never loaded: count_tokens is given
    compose_prompts(book)
    save_page(book, 1, prompt="Zoë waves from the café door, morning light")
    result = save_character(
        book, "zoe", settings=settings, description="a girl with a yellow raincoat", count_tokens=count_words
    )
    plan = book.plan()
    assert plan.pages[0].prompt == "Zoë waves from the café door, morning light"
    assert "yellow raincoat" in plan.pages[2].prompt
    assert (result.changed, result.hand_written) == ([3], [1])

    from fairytale.studio_actions import compose_page_prompt, recomposed_note

    note = recomposed_note(result)
    assert "pages to paint again: 3" in note and "page 1 kept the prompt you wrote" in note
    # the person asks for the composed prompt back
    prompt = compose_page_prompt(book, 1, settings=settings, count_tokens=count_words)
    assert "yellow raincoat" in prompt and book.plan().pages[0].prompt == prompt
    assert book.plan().pages[0].prompt_is_composed()


def test_compose_page_prompt_refuses_a_locked_page(book):
    from fairytale.plan import save_plan
    from fairytale.render.settings import RenderSettings
    from fairytale.studio_actions import compose_page_prompt

    plan = book.plan()
    plan.pages[1].locked = True
    save_plan(plan, book.plan_file)
    with pytest.raises(PageLockedError, match="Page 2 is locked"):
        compose_page_prompt(book, 2, settings=RenderSettings(), count_tokens=count_words)
    assert book.plan().pages[1].prompt == plan.pages[1].prompt


def test_use_my_picture_checks_the_upload(book, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    with pytest.raises(FairytaleError, match="not a picture"):
        use_my_picture(book, "zoe", fake)
    gif = tmp_path / "x.gif"
    Image.new("RGB", (8, 8)).save(gif)
    with pytest.raises(FairytaleError, match="GIF"):
        check_picture_upload(gif)
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_PICTURE_BYTES + 1))
    with pytest.raises(FairytaleError, match="limit"):
        check_picture_upload(big)

    mine = tmp_path / "mine.jpg"
    Image.new("RGB", (32, 40), (200, 20, 20)).save(mine)
    path = use_my_picture(book, "zoe", mine)
    reference = load_plan(book.plan_file).character("zoe").reference
    assert path.parent == book.folder / "references" and reference.image == "references/zoe.png"
    assert reference.seed is None and pixels(path).shape == (40, 32, 3)


def test_pool_reuses_the_loaded_model_and_releases_it(options):
    pool = IllustratorPool(idle_seconds=3600)
    with pool.borrow(options.settings) as first:
        pass
    with pool.borrow(options.settings) as second:
        assert second is first
    pool._release_if_idle()  # what the idle timer runs
    assert not pool.loaded and first.pipe is None


def test_pool_loads_again_for_another_precision_or_compile(options, monkeypatch):
    import fairytale.render

    loaded = []

    class Loaded:
        def __init__(self, settings):
            self.settings, self.previews, self.closed = settings, None, False
            loaded.append(self)

        def close(self):
            self.closed = True

    monkeypatch.setattr(fairytale.render, "load_illustrator", Loaded)
    pool = IllustratorPool(idle_seconds=3600)
    fp32 = options.settings.with_(precision="fp32")
    for settings in (fp32, fp32.with_(steps=3), fp32.with_(precision="bf16"), fp32.with_(compile=True)):
        with pool.borrow(settings) as illustrator:
            assert (illustrator.settings.precision, illustrator.settings.compile) == (
                settings.precision,
                settings.compile,
            )
    pool.release()
    # before, the bf16 and compiled borrows got the fp32 model loaded first
    assert len(loaded) == 3 and all(model.closed for model in loaded)


def test_bad_stories_are_refused_and_leave_nothing(tmp_path):
    with pytest.raises(FairytaleError, match="empty"):
        create_book(tmp_path, "   \n ")
    with pytest.raises(FairytaleError, match="too long"):
        create_book(tmp_path, "word " * 200_000)
    binary = tmp_path / "upload.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(FairytaleError):
        create_book(tmp_path / "books", story_file=binary)
    assert not any((tmp_path / "books").iterdir())


def test_open_book_needs_a_plan(tmp_path):
    with pytest.raises(FairytaleError, match="no plan.json"):
        open_book(tmp_path)
    assert isinstance(Book(tmp_path).pdf.name, str)


def test_new_seed_repaints_one_page_and_records_the_seed(book, options, pool):
    first = paint_book(book, options, pool)
    result = repaint_page(book, 3, options, pool, new_seed=True)
    assert result.painted == [3] and set(result.new_seeds) == {3}
    assert load_plan(book.plan_file).pages[2].seed == result.new_seeds[3] != first.pages[2].requested_seed


def test_paint_the_reference_again_records_a_new_seed(book, options, pool):
    path = repaint_reference(book, "zoe", options, pool)
    first = load_plan(book.plan_file).character("zoe").reference
    again = repaint_reference(book, "zoe", options, pool)
    second = load_plan(book.plan_file).character("zoe").reference
    assert path == again == book.folder / "references" / "zoe.png" and second.image == "references/zoe.png"
    assert first.seed != second.seed and second.prompt and second.model


def test_a_new_portrait_tells_its_steps_and_stop_keeps_the_one_there_was(book, options, pool):
    class StopAfterFirstStep(StudioProgress):
        lines: list[str] = []

        def step(self, step, steps):
            super().step(step, steps)
            self.lines.append(self.describe())
            self.stop()  # Stop, pressed while the portrait is painted

    progress = StudioProgress()
    path = repaint_reference(book, "zoe", options, pool, progress=progress)
    assert progress.steps == options.settings.steps  # it heard of every step (before: of none)
    kept, picture = load_plan(book.plan_file).character("zoe").reference, path.read_bytes()
    assert kept.model is not None and "/" not in kept.model  # a local model by its folder name, not its path
    stopping = StopAfterFirstStep()
    with pytest.raises(PaintingStopped):
        repaint_reference(book, "zoe", options, pool, progress=stopping)
    assert stopping.lines == [f"Painting a new portrait of Zoë · step 1 of {options.settings.steps}"]
    assert load_plan(book.plan_file).character("zoe").reference == kept and path.read_bytes() == picture


def test_the_laid_out_book_page_by_page(book, options, pool):
    pdf = book_pdf(book, options, pool)
    assert pdf == book.pdf and pdf.is_file()
    shown = preview_pages(book, width=120)
    assert len(shown) == 3 + 2 and all(image.width == 120 for image in shown)
    save_page(book, 1, text="A new first sentence.")  # only the text: nothing to paint, a new PDF
    assert book_pdf(book, options, pool).stat().st_mtime_ns >= book.plan_file.stat().st_mtime_ns


def test_a_book_made_by_the_cli_opens_as_it_is(book, options, pool):
    with pool.borrow(
        options.settings
    ) as illustrator:  # what `fairytale book` leaves: plan, pictures, PDF beside
        made = render_book(
            book.plan_file,
            book.folder.with_suffix(".pdf"),
            options.settings,
            illustrator=illustrator,
            progress=False,
        )
    opened = open_book(book.folder)
    assert opened.pdf == made.pdf
    assert [v.status for v in page_views(opened, options.settings)] == ["painted"] * 3
    assert paint_book(opened, options, pool).painted == []


def test_editing_a_pages_characters_keeps_its_regions_in_step(book):
    """Automatic regions (as the planner writes them) follow the page's new characters; regions
    someone placed are kept for the characters still shown."""
    from fairytale.plan import Region, save_plan
    from fairytale.scenes import side_by_side

    plan = book.plan()
    plan.pages[0].characters = ["zoe", "dad"]
    plan.pages[0].regions = side_by_side(["dad", "zoe"])
    save_plan(plan, book.plan_file)
    assert save_page(book, 1, characters=["zoe"]).pages[0].regions is None  # one character: the whole picture
    save_page(book, 1, characters=["zoe", "dad"])
    plan = book.plan()
    placed = Region(left=0.0, top=0.5, right=0.5, bottom=1.0)
    plan.pages[0].regions = {"zoe": placed, "dad": Region(left=0.5, top=0, right=1, bottom=1)}
    save_plan(plan, book.plan_file)
    assert save_page(book, 1, characters=["zoe"]).pages[0].regions == {"zoe": placed}


def test_candidates_are_painted_with_the_plans_learned_tokens(tiny_sd, tmp_path):
    """A candidate is the picture a render paints with its seed: the borrowed model is taught
    the plan's learned tokens first (its cache key names the token's file)."""
    import shutil

    import torch

    from fairytale.embeddings import save_embedding
    from fairytale.plan import Embedding

    folder = tmp_path / "zoe"
    folder.mkdir()
    save_embedding(folder / "style.safetensors", "<zoe-style>", torch.randn(2, 32, generator=torch.Generator().manual_seed(0)) * 5, family="sd1")
    plan = make_plan(1)
    plan.pages[0].prompt = "<zoe-style> <zoe-style> a lighthouse"
    plan.embeddings = [Embedding(token="<zoe-style>", path="style.safetensors", family="sd1")]
    write_plan(folder, plan)
    options = StudioOptions(settings=tiny_settings(tiny_sd, batch_size=1, steps=2))
    fresh = IllustratorPool(idle_seconds=3600)  # nothing painted with it yet
    try:
        [candidate] = paint_candidates(open_book(folder), 1, options, fresh, count=1)
    finally:
        fresh.release()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(folder / "style.safetensors", elsewhere)
    plan.pages[0].seed = candidate.seed
    result = render_book(write_plan(elsewhere, plan), tmp_path / "elsewhere.pdf", options.settings, progress=False)
    assert result.pages[0].key == candidate.key
    assert np.array_equal(pixels(result.book_dir / result.pages[0].image), pixels(candidate.image))


def test_a_candidate_chosen_before_the_portraits_exist_is_kept_by_the_next_paint(book, tiny_sd, pool):
    """In a portrait mode a page's key names its characters' portraits: candidates paint the
    missing portraits first, as a render does, so the chosen one is not repainted later."""
    options = StudioOptions(settings=tiny_settings(tiny_sd, batch_size=1, steps=2, consistency="attention"))
    candidates = paint_candidates(book, 1, options, pool, count=2)
    main = [c for c in book.plan().characters if c.main]
    assert main and all(c.reference for c in main)
    choose_candidate(book, 1, candidates[1].seed)
    result = paint_book(book, options, pool)
    assert 1 in result.reused and result.pages[0].key == candidates[1].key


def test_candidates_tell_of_the_portraits_they_paint_first_and_stop_before_them(book, tiny_sd, pool):
    options = StudioOptions(settings=tiny_settings(tiny_sd, batch_size=1, steps=2, consistency="attention"))
    stopped = StudioProgress()
    stopped.stop()  # Stop, pressed before the portraits were painted
    with pytest.raises(PaintingStopped):
        paint_candidates(book, 1, options, pool, count=1, progress=stopped)
    assert not any(c.reference for c in book.plan().characters)  # before: painted anyway, Stop unheard

    class Heard(StudioProgress):
        heard: list[str] = []

        def stage(self, text):
            self.heard.append(text)
            super().stage(text)

    heard = Heard()
    paint_candidates(book, 1, options, pool, count=1, progress=heard)
    assert heard.heard == ["Painting reference portraits of Zoë…"]
    assert heard.describe() == "Painted 1 of 1 pages"  # not the portraits' line, over


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5])
def test_choosing_a_seed_out_of_range_is_one_line(book, seed):
    with pytest.raises(FairytaleError, match="A seed is a whole number from 0 to 2\\^63-1"):
        choose_candidate(book, 1, seed)
    assert book.plan().pages[0].seed != seed


def test_a_placeholder_shows_as_to_paint_and_is_retried_when_more_repaints_are_allowed(book, options):
    """A page (and candidates) given up by the safety checker under ``max_repaints`` 0 show as
    to paint, and are painted again, once the studio's settings allow more repaints; under the
    same limit they are kept, as a render keeps them."""
    from tests.tiny_models.diffusion import make_checker_flag_everything

    strict = options.settings.with_(max_repaints=0)
    flagging = IllustratorPool(idle_seconds=3600)
    with flagging.borrow(strict) as illustrator:
        make_checker_flag_everything(illustrator.safety.checker)
    with flagging.borrow(strict) as illustrator:
        given_up = render_book(book.plan_file, book.pdf, strict, illustrator=illustrator, progress=False)
    assert given_up.placeholders == [1, 2, 3]
    assert page_views(book, strict)[0].status == "painted"  # a placeholder, kept under the same limit
    assert page_views(book, options.settings.with_(max_repaints=1))[0].status == "to paint"

    flagged = paint_candidates(book, 2, StudioOptions(settings=strict), flagging, count=2)
    assert [c.image for c in flagged] == [None, None]
    again = paint_candidates(book, 2, StudioOptions(settings=strict), flagging, count=2)
    assert [c.key for c in again] == [c.key for c in flagged] and [c.image for c in again] == [None, None]
    flagging.release()

    retried = paint_candidates(book, 2, StudioOptions(settings=options.settings.with_(max_repaints=1)), IllustratorPool(), count=2)
    assert [c.key for c in retried] == [c.key for c in flagged]
    assert all(c.image is not None and c.image.is_file() for c in retried)
