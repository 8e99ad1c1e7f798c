"""One painting job per book: the lock file is respected across processes and by render_book."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fairytale.book_lock import BookBusyError, book_is_busy, book_lock, lock_holder


def _hold_in_subprocess(book_dir):
    """Start a process that takes the book's lock and waits for a line on stdin."""
    code = textwrap.dedent(
        f"""
        import sys
        from fairytale.book_lock import book_lock
        with book_lock({str(book_dir)!r}):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_book_locked_by_another_process_is_refused_then_free_again(tmp_path):
    book = tmp_path / "book"
    holder = _hold_in_subprocess(book)
    try:
        assert book_is_busy(book)
        with pytest.raises(BookBusyError, match="being painted by another fairytale job") as refused:
            with book_lock(book):
                pass
        assert f"(PID {holder.pid})" in str(refused.value)  # which job to wait for, or stop
    finally:
        holder.communicate("\n", timeout=30)
    assert not book_is_busy(book)
    with book_lock(book):  # released when the holder ended
        assert book_is_busy(book)  # held by us: any other caller sees it busy


def test_a_killed_holder_leaves_no_lock(tmp_path):
    book = tmp_path / "book"
    holder = _hold_in_subprocess(book)
    holder.kill()
    holder.wait(timeout=30)
    assert (book / ".fairytale.lock").exists()  # left behind, and free
    assert lock_holder(book) == "PID unknown"  # the dead holder's record names nobody
    with book_lock(book):
        pass
    assert sorted(p.name for p in book.iterdir()) == [".fairytale.lock"]  # its record went with the next job


def test_two_locks_in_one_process_exclude_each_other(tmp_path):
    with book_lock(tmp_path / "book"):
        with pytest.raises(BookBusyError):
            with book_lock(tmp_path / "book"):
                pass


def test_render_book_refuses_a_book_another_job_is_painting(tmp_path, tiny_sd):
    from fairytale.render import render_book
    from tests.render_support import make_plan, tiny_settings, write_plan

    plan_path = write_plan(tmp_path, make_plan(pages=2))
    holder = _hold_in_subprocess(tmp_path / "book")
    try:
        with pytest.raises(BookBusyError):
            render_book(plan_path, tmp_path / "book.pdf", tiny_settings(tiny_sd), progress=False)
    finally:
        holder.communicate("\n", timeout=30)
    assert not (tmp_path / "book" / "cache").exists()  # nothing was painted


def test_a_job_that_wrote_nothing_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with book_lock(tmp_path / "new-book"):
            raise RuntimeError("a bad option found after the lock was taken")
    assert not (tmp_path / "new-book").exists()
    existing = tmp_path / "old-book"
    existing.mkdir()
    with book_lock(existing):
        pass
    assert existing.is_dir()  # a folder we did not make is never removed
