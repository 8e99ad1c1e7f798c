"""One job per folder at a time, across processes: a book being painted, a token being trained.

A book folder (plan, pictures, cache, manifest) is shared by the CLI, notebooks, the studio
and the library runner. Two jobs painting into it at once would race on the plan's seeds and
the manifest, so every job that writes a book holds ``BOOK/.fairytale.lock`` while it works
(:func:`book_lock`). A training run holds its checkpoint folder the same way, so two runs of one
token cannot overwrite each other's checkpoints (:func:`folder_lock`, used by ``training``).

The lock is an OS file lock (``filelock``): it is released when the holder ends, even if it is
killed, so a crash never leaves a folder locked: the lock file a killed job leaves behind is
free for the next job to take. Beside it the holder records who it is
(``.fairytale.lock.holder``: PID, host, start time), only so that a refused job can say which
job holds the folder; a record whose process is gone is ignored.

>>> with book_lock(Path("out/ginger")):          # doctest: +SKIP
...     render_book(...)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from fairytale.errors import FairytaleError
from fairytale.files import atomic_write_text, ensure_dir, process_running

LOCK_NAME = ".fairytale.lock"
HOLDER_NAME = ".fairytale.lock.holder"


class FolderBusyError(FairytaleError):
    """Another job holds this folder's lock right now."""


class BookBusyError(FolderBusyError):
    """Another job is painting this book right now."""


@contextlib.contextmanager
def folder_lock(
    folder: Path, *, refuse: Callable[[str], FolderBusyError], wait: float = 0.0
) -> Iterator[Path]:
    """Hold ``folder``'s lock for the duration of the block (the folder is created if missing).

    ``wait`` is how many seconds to wait for another job to finish (0: refuse at once, a
    negative number: wait as long as it takes). When the folder stays busy, raises
    ``refuse(holder)``, where ``holder`` names the job that holds it ("PID 4242", "PID 4242 on
    host gpu-2", or "PID unknown"). Re-entrant within one lock object only: nest jobs on one
    folder in one call. A folder this call created, left holding nothing but the lock, is
    removed again on release.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    created = not folder.exists()
    ensure_dir(folder)
    lock = FileLock(folder / LOCK_NAME, timeout=wait, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        raise refuse(lock_holder(folder)) from None
    with contextlib.suppress(OSError, FairytaleError):  # the record only serves messages
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(folder / HOLDER_NAME, json.dumps(record) + "\n")
    try:
        yield folder
    finally:
        # The record goes before the lock, so it can never remove the next holder's record.
        with contextlib.suppress(OSError):
            (folder / HOLDER_NAME).unlink(missing_ok=True)
        # A job that stopped before writing anything (a bad option, a missing model) leaves no
        # trace: the folder it made for its lock goes again.
        if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink(missing_ok=True)
            lock.release()
            with contextlib.suppress(OSError):
                folder.rmdir()
        else:
            lock.release()


def lock_holder(folder: Path) -> str:
    """Who holds ``folder``'s lock, as its record says: "PID 4242" (this machine), "PID 4242 on
    host gpu-2", or "PID unknown" (no record yet, or one left by a process that has ended)."""
    try:
        record = json.loads((Path(folder) / HOLDER_NAME).read_text(encoding="utf-8"))
        pid, host = int(record["pid"]), str(record["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return "PID unknown"
    if host != socket.gethostname():
        return f"PID {pid} on host {host}"
    return f"PID {pid}" if process_running(pid) else "PID unknown"


@contextlib.contextmanager
def book_lock(book_dir: Path, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold the book folder's lock for the duration of the block.

    ``wait`` is how many seconds to wait for another job to finish (0: refuse at once,
    a negative number: wait as long as it takes). Raises :class:`BookBusyError` when the book
    stays busy. Re-entrant within one lock object only: nest jobs on one book in one call.
    """
    folder = Path(book_dir)

    def refuse(holder: str) -> BookBusyError:
        return BookBusyError(
            f"The book {folder} is being painted by another fairytale job ({holder}); "
            "wait for it to finish (or stop it), then run this again"
        )

    with folder_lock(folder, refuse=refuse, wait=wait):
        yield folder


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
