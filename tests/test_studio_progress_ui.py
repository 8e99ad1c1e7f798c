"""Every long studio action shows its progress and stops with Stop (no browser): painting a new
reference portrait like painting a page; and a page opened on a book while it is being painted
(a reload, a second tab) follows that painting, previews and Stop included, to its end."""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from fairytale.render.previews import Preview
from fairytale.studio_actions import PaintingStopped, StudioOptions, open_book
from tests.render_support import tiny_settings

STOPPED = str(PaintingStopped("Painting stopped; the finished pictures are kept — paint again to go on"))


def handlers(app):
    return {f.name: f for f in app.fns.values()}


def until_stopped(progress, steps: int = 25) -> None:
    """A painting's steps, each checking Stop (bounded: a test that never presses Stop ends)."""
    for _ in range(60):
        progress.step(3, steps)
        progress._stop.wait(1)


def test_a_new_portrait_shows_its_progress_and_stop_stops_it(gradio, session, monkeypatch):
    from fairytale import studio_app

    book = open_book(session.books_dir / "zoe")
    app = studio_app.build_app(session)
    fns = handlers(app)

    def repaint_reference(book, character_id, options, pool, progress):
        progress.stage("Painting a new portrait of Zoë")
        until_stopped(progress)
        return book.folder / "references" / "zoe.png"

    monkeypatch.setattr(studio_app, "repaint_reference", repaint_reference)
    stream = fns["paint_reference"].fn(str(book.folder), "zoe")
    # before, the page showed nothing until the portrait was painted, and no Stop reached it
    portrait, line, table = next(stream)
    assert line.startswith("A new portrait of Zoë: Painting a new portrait of Zoë · step 3 of 25 · ")
    assert portrait == table == gradio.update()  # they stay as they were until the portrait is done
    # the Plan tab has its own Stop, next to "Paint again"
    [stop] = [
        f for f in app.fns.values() if f.name == "stop_painting" and _elem_ids(app, f) == ["reference-stop"]
    ]
    with pytest.warns(UserWarning, match="Painting stopped"):
        assert "Nothing is being painted" not in stop.fn(str(book.folder))
        told = list(stream)[-1]
    assert told[1] == STOPPED and book.folder not in session.jobs


def _elem_ids(app, fn) -> list[str]:
    return [app.blocks[target].elem_id for target, _event in fn.targets if target in app.blocks]


def test_a_page_opened_while_the_book_is_painted_follows_that_painting_to_its_end(gradio, session):
    from fairytale.studio_app import build_app, stream_painting

    book = open_book(session.books_dir / "zoe")
    fns = handlers(build_app(session))
    ready = threading.Event()

    def work(book, job, on_preview):
        job.start_pages(2)
        job.batch([1])
        job.step(3, 10)
        on_preview(Preview((1,), 3, 10, [Image.new("RGB", (8, 8), "red")]))
        ready.set()
        until_stopped(job, steps=10)

    first_tab = stream_painting(gradio, session, str(book.folder), work, True)
    next(first_tab)
    assert ready.wait(60)
    first_tab.close()  # the first tab was reloaded: gradio dropped its stream

    # the reloaded page (or a second tab) opens on the Paint tab, where it follows the painting
    *_, tab = fns["restore"].fn(None, str(book.folder))
    assert tab.selected == "paint"
    follow = fns["follow_painting"]
    assert fns["restore"]._id == follow.trigger_after  # it runs when the page has loaded the book
    stream = follow.fn(str(book.folder))
    status, line, pictures, table, preview, pick, portrait = next(stream)
    # before, the page showed "being painted now (…)" as one line of text, and nothing more
    assert status == gradio.update() and line == "Painting page 1 of 2 · step 3 of 10"
    assert preview["visible"] and preview["label"] == "Live preview · page 1 · step 3 of 10"
    assert pictures == [] and table == gradio.update()

    # Stop, pressed in the reloaded page
    assert "Nothing is being painted" not in fns["stop_painting"].fn(str(book.folder))
    *_, (_, line, _pictures, table, preview, *_portrait), (status, *rest) = list(stream)
    assert line == status == STOPPED  # the status line no longer says "being painted now"
    assert [row[:2] for row in table] == [[1, "to paint"], [2, "to paint"]]
    assert preview == {"__type__": "update", "value": None, "visible": False}
    assert book.folder not in session.jobs
    # no portrait was painted: the Plan tab keeps its character and portrait
    assert rest[-2:] == [gradio.update(), gradio.update()]


def test_a_page_following_a_new_portrait_shows_the_new_one_when_it_is_painted(gradio, session, monkeypatch):
    from fairytale import studio_app

    book = open_book(session.books_dir / "zoe")
    fns = handlers(studio_app.build_app(session))
    painting, go_on = threading.Event(), threading.Event()
    real = studio_app.repaint_reference

    def repaint_reference(book, character_id, options, pool, progress):
        painting.set()
        assert go_on.wait(60)  # the second tab is following by now
        return real(book, character_id, options, pool, progress=progress)

    monkeypatch.setattr(studio_app, "repaint_reference", repaint_reference)
    first_tab = fns["paint_reference"].fn(str(book.folder), "zoe")
    next(first_tab)
    assert painting.wait(60)
    # a second tab (or the first one, reloaded) follows the portrait
    follow = fns["follow_painting"].fn(str(book.folder))
    next(follow)
    go_on.set()
    *_, (status, *_rest, pick, portrait) = list(follow)
    list(first_tab)
    painted = book.folder / "references" / "zoe.png"
    assert status == "A new portrait of Zoë: done" and painted.is_file()
    # before, the followed page said "done" and kept showing the old portrait
    assert pick == gradio.update(value="zoe") and portrait == str(painted)


def test_a_page_opened_on_a_book_not_being_painted_changes_nothing(gradio, session):
    from fairytale.studio_app import build_app

    book = open_book(session.books_dir / "zoe")
    fns = handlers(build_app(session))
    assert list(fns["follow_painting"].fn(str(book.folder))) == [[gradio.update()] * 7]
    assert list(fns["follow_painting"].fn(None)) == [[gradio.update()] * 7]
    assert fns["restore"].fn(None, str(book.folder))[-1] == gradio.update()  # the tab it was on


def test_planning_tells_its_steps_and_stop_ends_it_leaving_no_book(
    tmp_path, tiny_sd, tiny_ner, tiny_qa, tiny_nli
):
    from fairytale.studio_actions import StudioProgress, create_book

    options = StudioOptions(
        tiny_settings(tiny_sd), ner_model=str(tiny_ner), qa_model=str(tiny_qa), nli_model=str(tiny_nli)
    )
    story = "Zoë and the Sea\n\nZoë saw a dog on the beach. The dog barked at Zoë.\n"

    class Heard(StudioProgress):
        def __init__(self, stop_at: str | None = None) -> None:
            super().__init__(stopped="Planning stopped; no book was made")
            self.stop_at, self.heard = stop_at, []

        def stage(self, text: str) -> None:
            self.heard.append(text)
            if text == self.stop_at:
                self.stop()  # Stop, pressed while the models load
            super().stage(text)

    heard = Heard()
    book = create_book(tmp_path / "books", story, options=options, progress=heard)
    assert heard.heard[:2] == ["Loading models", "Finding characters"] and heard.heard[-1] == "Done"
    stopping = Heard(stop_at="Finding characters")
    with pytest.raises(PaintingStopped, match="Planning stopped; no book was made"):
        create_book(tmp_path / "books", story, options=options, progress=stopping)
    assert [p.name for p in (tmp_path / "books").iterdir()] == [book.folder.name]  # nothing left of it


def test_make_the_plan_shows_the_step_and_its_stop_stops_it(gradio, session, monkeypatch):
    from types import SimpleNamespace

    from fairytale import studio_app

    app = studio_app.build_app(session)
    fns = handlers(app)
    tab, other_tab = SimpleNamespace(session_hash="tab-1"), SimpleNamespace(session_hash="tab-2")

    def create_book(books_dir, *, progress, **kwargs):
        for _ in range(60):  # bounded: a test that never presses Stop ends
            progress.stage("Finding characters")  # a stopped planning ends here
            progress._stop.wait(1)
        raise AssertionError("Stop never reached the planning")

    monkeypatch.setattr(studio_app, "create_book", create_book)
    stream = fns["start"].fn("Zoë\n\nZoë swam.", None, "", "", "", "browser-1", tab)
    book_state, status, *others = next(stream)
    # before, the page showed nothing until the plan was made, and nothing could stop it
    assert status.startswith("Planning the story: Finding characters · ")
    assert book_state == gradio.update() and all(other == gradio.update() for other in others)
    [stop] = [f for f in app.fns.values() if _elem_ids(app, f) == ["plan-stop"]]
    assert stop.fn("browser-2", other_tab) == "Nothing is being planned."  # another browser's Stop is its own
    reloaded = SimpleNamespace(session_hash="tab-3")  # the tab reloaded, or a second tab of the browser
    # Stopped; the status line is left to the planning's stream, which says "stopping", then how
    # it ended (a line written by Stop could arrive after that last one and stay: seen in Chromium)
    planning = session.plannings["browser-1"]
    assert stop.fn("browser-1", reloaded) == gradio.update()
    assert "stopping after this step" in planning.line()
    with pytest.warns(UserWarning, match="Planning stopped"):
        told = list(stream)[-1]
    assert told[1] == "Planning stopped; no book was made" and not session.plannings


def test_a_page_opened_while_the_browser_plans_a_story_follows_it_and_opens_the_book(
    gradio, session, monkeypatch
):
    from types import SimpleNamespace

    from fairytale import studio_app

    fns = handlers(studio_app.build_app(session))
    planning, go_on = threading.Event(), threading.Event()

    def create_book(books_dir, *, progress, **kwargs):
        progress.stage("Finding characters")
        planning.set()
        assert go_on.wait(60)  # the reloaded page is following by now
        return open_book(books_dir / "zoe")

    monkeypatch.setattr(studio_app, "create_book", create_book)
    first_tab = fns["start"].fn(
        "Zoë\n\nZoë swam.", None, "", "", "", "browser-1", SimpleNamespace(session_hash="tab-1")
    )
    next(first_tab)
    assert planning.wait(60)
    first_tab.close()  # the tab was reloaded: gradio dropped its stream

    # a page of another browser is not told about it, and gets an id of its own
    *_, other, tab = fns["restore"].fn(None, None, None)
    assert other and other != "browser-1" and tab == gradio.update()
    # the reloaded page (or a second tab) of the browser goes to the Start tab, where its Stop is
    restore = fns["restore"]
    _state, status, *_, browser_id, tab = restore.fn(None, None, "browser-1")
    assert browser_id == "browser-1" and tab.selected == "start"
    assert status.startswith("Planning a story now (Planning the story: Finding characters · ")
    follow = fns["follow_planning"]
    assert follow.trigger_after == restore._id  # it runs when the page has loaded
    stream = follow.fn("browser-1")
    # before, the page showed an empty studio until the plan was made, and its Stop stopped nothing
    book_state, status, *others = next(stream)
    assert status.startswith("Planning the story: Finding characters · ") and book_state == gradio.update()
    go_on.set()
    book_state, status, shown, tab, remembered, *_ = list(stream)[-1]
    folder = str(session.books_dir / "zoe")
    assert book_state == shown == remembered == folder and tab.selected == "plan"
    assert status.startswith("Planned **") and not session.plannings
    assert list(follow.fn("browser-1")) == [[gradio.update()] * len(others + [book_state, status])]
