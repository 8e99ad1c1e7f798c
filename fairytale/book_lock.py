"""One painting job per book at a time, across processes.

A book folder (plan, pictures, cache, manifest) is shared by the CLI, notebooks, the studio
and the library runner. Two jobs painting into it at once would race on the plan's seeds and
the manifest, so every job that writes a book holds ``BOOK/.fairytale.lock`` while it works.
The lock is an OS file lock (``filelock``): it is released when the holder ends, even if it is
killed, so a crash never leaves a book locked.

>>> with book_lock(Path("out/ginger")):          # doctest: +SKIP
...     render_book(...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from fairytale.errors import FairytaleError
from fairytale.files import ensure_dir

LOCK_NAME = ".fairytale.lock"


class BookBusyError(FairytaleError):
    """Another job is painting this book right now."""


@contextlib.contextmanager
def book_lock(book_dir: Path, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold the book folder's lock for the duration of the block.

    ``wait`` is how many seconds to wait for another job to finish (0: refuse at once,
    a negative number: wait as long as it takes). Raises :class:`BookBusyError` when the book
    stays busy. Re-entrant within one lock object only: nest jobs on one book in one call.
    """
    from filelock import FileLock, Timeout

    folder = Path(book_dir)
    created = not folder.exists()
    ensure_dir(folder)
    lock = FileLock(folder / LOCK_NAME, timeout=wait, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        raise BookBusyError(
            f"The book {folder} is being painted by another fairytale job; "
            "wait for it to finish (or stop it), then run this again"
        ) from None
    try:
        yield folder
    finally:
        # A job that stopped before writing anything (a bad option, a missing model) leaves no
        # trace: the folder it made for its lock goes again.
        if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink(missing_ok=True)
            lock.release()
            with contextlib.suppress(OSError):
                folder.rmdir()
        else:
            lock.release()


def book_is_busy(book_dir: Path) -> bool:
    """Whether another job holds the lock of ``book_dir`` right now (without waiting)."""
    folder = Path(book_dir)
    if not (folder / LOCK_NAME).exists():
        return False
    try:
        with book_lock(folder):
            return False
    except BookBusyError:
        return True
