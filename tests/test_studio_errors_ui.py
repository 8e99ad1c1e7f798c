"""What the studio page shows when things go wrong (no browser): one line, never a traceback or
raw exception text; a second painting of a book (another tab, another button) is refused at
once instead of waiting unseen; a painting stays stoppable after its page stream is gone."""

from __future__ import annotations

import inspect
import threading
from types import SimpleNamespace

import pytest

from fairytale.errors import FairytaleError
from fairytale.studio_actions import open_book
from tests.render_support import make_plan, write_plan


def book_of(session):
    return open_book(session.books_dir / "zoe")


def last(said):
    """What a handler showed last (the painting ones stream their progress first)."""
    return list(said)[-1] if inspect.isgenerator(said) else said


def test_an_unforeseen_error_is_one_plain_line_and_its_traceback_goes_to_the_terminal(gradio, capsys):
    from fairytale.studio_app import _errors

    status, picture = object(), object()

    def broken(path):
        return [][1]

    with pytest.warns(UserWarning) as warned:
        message, kept = _errors(gradio, broken, [status, picture], say=[status])("x")
    assert message.startswith("Something went wrong inside the studio (IndexError)")
    assert "list index out of range" not in message and "Traceback" not in message
    assert kept == gradio.update()  # the picture stays as it was, not marked "Error" and hidden
    assert [str(w.message) for w in warned] == [message]  # the same line in a box
    assert "Traceback" in capsys.readouterr().err


def test_running_out_of_memory_says_what_to_do(gradio):
    import torch

    from fairytale.studio_app import _errors

    def paint(path):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total)")

    status = object()
    with pytest.warns(UserWarning, match="ran out of memory.*--low-vram"):
        message = _errors(gradio, paint, [status], say=[status])("x")
    assert "--low-vram" in message and "GiB" not in message


def test_a_refusal_naming_a_file_is_not_markup_in_the_box(gradio):
    from fairytale.studio_app import _errors

    def upload(path):
        raise FairytaleError('<img src=x onerror="alert(1)">.png is not a picture this studio can read')

    with pytest.warns(UserWarning) as warned:
        _errors(gradio, upload, [object()])("x")
    assert str(warned[0].message).startswith("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.png")


def test_a_painting_that_breaks_ends_with_one_line_in_the_progress(gradio, session):
    from fairytale.studio_app import stream_painting

    def work(book, job, on_preview):
        raise RuntimeError("Expected all tensors to be on the same device, but found cuda:0 and cpu")

    updates = list(stream_painting(gradio, session, str(book_of(session).folder), work, False))
    last = updates[-1][0]
    assert last.startswith("Something went wrong inside the studio (RuntimeError)")
    assert "tensors" not in last
    assert not session.jobs  # the book is free again


def test_a_second_painting_of_the_book_is_refused_at_once(gradio, session):
    from fairytale.studio_app import build_app, stream_painting

    book = book_of(session)
    app = build_app(session)
    handlers = {f.name: f.fn for f in app.fns.values()}
    with session.painting(book):
        with pytest.raises(FairytaleError, match="being painted already"):
            next(stream_painting(gradio, session, str(book.folder), lambda *a: None, False))
        # the Fix-a-page buttons too: before, they waited unseen for the painting, then painted
        for name, args in [
            ("repaint_with_prompt", ("1", "a new prompt", False)),
            ("repaint_new_seed", ("1", False)),
            ("four", ("1", False)),
            ("paint_reference", ("zoe",)),
            ("lay_out", ()),
        ]:
            with pytest.warns(UserWarning, match="being painted already"):
                said = last(handlers[name](str(book.folder), *args))
            assert any("being painted already" in str(value) for value in said), name
    assert not (book.folder / "cache").exists() or not any((book.folder / "cache").rglob("*.png"))


def test_a_painting_stays_claimed_and_stoppable_after_its_page_is_gone(gradio, session):
    from fairytale.studio_app import stream_painting

    book = book_of(session)
    started, stopped = threading.Event(), threading.Event()

    def work(book, job, on_preview):
        started.set()
        while not job.stopping:  # a painting checks stop at every step
            job._stop.wait(1)
        stopped.set()

    stream = stream_painting(gradio, session, str(book.folder), work, False)
    next(stream)
    assert started.wait(60)
    stream.close()  # the tab was reloaded or closed: gradio drops the stream
    assert book.folder in session.jobs, "the painting goes on, so the book must stay claimed"
    session.jobs[book.folder].progress.stop()  # Stop, pressed in the reloaded page
    assert stopped.wait(60)
    for thread in threading.enumerate():
        if thread.name == "fairytale-studio-paint":
            thread.join(60)
    assert book.folder not in session.jobs


def test_a_reloaded_page_opens_the_book_the_browser_had_open(gradio, session, tmp_path):
    from fairytale.studio_app import build_app

    book = book_of(session)
    other = tmp_path / "other"
    other.mkdir()
    write_plan(other, make_plan(2))
    restore = {f.name: f.fn for f in build_app(session, other).fns.values()}["restore"]
    # the browser remembers the book it opened (BrowserState): it wins over the one started with
    path, message, shown, *_ = restore(str(other), str(book.folder))
    assert path == shown == str(book.folder) and "Open:" in message
    # a remembered book that was moved away meanwhile: the studio's own book, not an error
    path, *_ = restore(str(other), str(tmp_path / "moved-away"))
    assert path == str(other.resolve())
    # a book being painted says so, and where Stop is
    with session.painting(book):
        assert "being painted now" in restore(None, str(book.folder))[1]


def test_a_refused_lock_leaves_the_box_showing_the_page_as_it_is(gradio, session):
    from fairytale.studio_app import build_app

    book = book_of(session)
    set_lock = {f.name: f.fn for f in build_app(session).fns.values()}["set_lock"]
    with pytest.warns(UserWarning, match="no picture yet"):
        message, _picture, _prompt, locked, *_ = set_lock(str(book.folder), "1", True)  # not painted
    assert "Page 1 has no picture yet" in message and locked is False
    with pytest.warns(UserWarning, match="Choose a page first"):
        message, _picture, _prompt, locked, *_ = set_lock(str(book.folder), None, True)
    assert locked is False


def test_stop_stops_candidates_and_the_layout_of_a_book_with_pages_to_paint(session):
    from fairytale.studio_actions import PaintingStopped, StudioProgress, book_pdf, paint_candidates

    book = book_of(session)
    stopped = StudioProgress()
    stopped.stop()  # Stop, pressed on the Fix or Book tab while they paint
    with pytest.raises(PaintingStopped):
        paint_candidates(book, 1, session.options, session.pool, progress=stopped)
    with pytest.raises(PaintingStopped):
        book_pdf(book, session.options, session.pool, progress=stopped)
    assert not book.pdf.exists()
    session.pool.release()


def test_a_missing_model_is_one_line_in_the_progress(gradio, session, tmp_path):
    from dataclasses import replace

    from fairytale.studio_actions import paint_book
    from fairytale.studio_app import stream_painting

    missing = tmp_path / "no-such-model"
    session.options = replace(session.options, settings=session.options.settings.with_(model=str(missing)))

    def work(book, job, on_preview):
        return paint_book(book, session.options, session.pool, progress=job)

    last = list(stream_painting(gradio, session, str(book_of(session).folder), work, False))[-1][0]
    assert str(missing) in last and "\n" not in last and "Traceback" not in last
    # the plan can still be read and edited: its pages are listed, their status unknown
    from fairytale.studio_app import UNKNOWN, build_app

    restore = {f.name: f.fn for f in build_app(session).fns.values()}["restore"]
    _path, _message, _shown, _character, table, *_ = restore(None, str(book_of(session).folder))
    assert [row[:2] for row in table] == [[1, UNKNOWN], [2, UNKNOWN]]


def test_candidates_all_turned_down_say_so_instead_of_an_empty_gallery(gradio, session, monkeypatch):
    from fairytale import studio_app
    from fairytale.studio_actions import Candidate

    book = book_of(session)
    four = {f.name: f.fn for f in studio_app.build_app(session).fns.values()}["four"]
    flagged = [Candidate(seed, f"key{seed}", None) for seed in range(4)]
    monkeypatch.setattr(studio_app, "paint_candidates", lambda *a, **k: flagged)
    with pytest.warns(UserWarning, match="safety checker turned down all 4 candidates of page 1"):
        gallery, seeds, message = last(four(str(book.folder), "1", False))
    assert "change the prompt" in message  # it said "Click the candidate to use" over an empty gallery
    monkeypatch.setattr(
        studio_app, "paint_candidates", lambda *a, **k: flagged[:3] + [Candidate(9, "k9", book.plan_file)]
    )
    gallery, seeds, message = last(four(str(book.folder), "1", False))
    assert seeds == [9] and "3 turned down by the safety checker" in message


def test_fixing_a_page_shows_its_progress_and_stop_stops_it(gradio, session, monkeypatch):
    from fairytale import studio_app
    from fairytale.studio_actions import PaintingStopped

    book = book_of(session)
    handlers = {f.name: f.fn for f in studio_app.build_app(session).fns.values()}

    def repaint_page(book, number, options, pool, *, progress, **kwargs):
        progress.start_pages(1)
        for _ in range(30):  # a painting checks Stop at every step (bounded: before, nothing pressed Stop)
            progress.step(1, 25)
            progress._stop.wait(1)
        return SimpleNamespace(new_seeds={1: 7})

    monkeypatch.setattr(studio_app, "repaint_page", repaint_page)
    stream = handlers["repaint_new_seed"](str(book.folder), "1", False)
    first = next(stream)
    # before, the page showed nothing until the painting ended, and no Stop reached it
    assert first[0].startswith("Page 1: Painting page 1 of 1 · ")
    assert all(update == gradio.update() for update in first[1:])
    with pytest.warns(UserWarning, match="Painting stopped"):
        assert "Nothing is being painted" not in handlers["stop_painting"](str(book.folder))
        told = list(stream)[-1]
    assert told[0] == str(
        PaintingStopped("Painting stopped; the finished pictures are kept — paint again to go on")
    )
    assert book.folder not in session.jobs
