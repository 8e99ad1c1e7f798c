"""Safe file writing: never leave a half-written file behind.

Everything the product writes goes through :func:`atomic_path`: the content is written to a
temporary file in the destination folder and renamed over the target only when complete, so a
crash or Ctrl-C leaves either the old file or the new one, never a torn one.

The temporary file is named ``.<target name>.~fairytale-<pid>-<random><suffix>``: recognisably
ours, and tied to the process that writes it. A process killed mid-write (``kill -9``, a power
cut) cannot remove its own temporary file, so the next write of the same target removes the
leftovers of writers that are no longer running; nothing else in the folder is touched.
Finished files get the permissions any new file of the user gets (``0666`` less the umask),
not the ``0600`` that temporary files are created with.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fairytale.errors import FairytaleError

TEMP_MARK = ".~fairytale-"
# Write failures that come from the machine (full disk, quota, read-only mount, permissions).
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its closest existing ancestor."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder(folder: Path, what: str = "Output folder") -> Path:
    """Check that ``folder`` exists and takes new files, or that it can be created.

    A missing folder is not created here (a run that fails later leaves nothing behind); the
    first write creates it (:func:`atomic_path`, :func:`ensure_dir`). Raises
    :class:`FairytaleError` with one line naming the folder otherwise. Returns ``folder``.
    """
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise FairytaleError(f"{what} is not a folder: {folder}")
        if not can_create_files_in(folder):
            raise FairytaleError(f"{what} is not writable: {folder}")
        return folder
    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise FairytaleError(f"Cannot create {what.lower()} {folder}: {existing} is a file")
    if not can_create_files_in(existing):
        raise FairytaleError(f"Cannot create {what.lower()} {folder}: {existing} is not writable")
    return folder


def check_text_name(path: Path) -> None:
    """Refuse a path that is not valid UTF-8 text (Linux lets a name hold any bytes): paths go
    into plans, manifests and PDFs, which hold text, and would fail there after the work."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise FairytaleError(f"{shown}: the name is not valid UTF-8 text; rename it") from None


def check_output_path(path: Path, *, overwrite: bool = True) -> Path:
    """Check that ``path`` can be written: its folder exists and is writable, or can be made.

    A missing folder (``-o out/book.pdf`` on a fresh machine) is created by the write itself.
    Raises :class:`FairytaleError` with one clear line otherwise. Returns the path.
    """
    path = Path(path)
    check_text_name(path)
    parent = path.parent if str(path.parent) else Path(".")
    check_output_folder(parent)
    if path.is_dir():
        raise FairytaleError(f"Output path is a folder, not a file: {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise FairytaleError(f"Output file is read-only: {path}")
    if path.exists() and not overwrite:
        raise FairytaleError(f"Output file already exists: {path} (pass --force to overwrite)")
    return path


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) as a folder, with a clear error if that is impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise FairytaleError(f"Cannot create folder {path}: a file of that name exists") from exc
    except OSError as exc:
        raise FairytaleError(f"Cannot create folder {path}: {exc.strerror or exc}") from exc
    if not can_create_files_in(path):
        raise FairytaleError(f"Folder is not writable: {path}")
    return path


def can_create_files_in(folder: Path) -> bool:
    """Whether a file can really be created in ``folder``.

    Tries it rather than trusting permission bits, which say nothing for root or for
    read-only mounts.
    """
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def new_file_mode() -> int:
    """The mode a new file of this process gets: ``0666`` less the umask."""
    return 0o666 & ~_umask()


def new_folder_mode() -> int:
    """The mode a new folder of this process gets: ``0777`` less the umask (for a folder made by
    ``tempfile.mkdtemp``, always ``0700``, that becomes a user's output)."""
    return 0o777 & ~_umask()


def _umask() -> int:
    try:  # Linux ≥ 4.7 reports the umask without changing it
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def process_running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it is running
        return True
    except OverflowError:
        return False
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files that writers of ``path`` left when they were killed.

    Only files named by :func:`atomic_path` for this very target, whose writing process is no
    longer running, are removed. Returns them.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(re.escape(f".{path.name}{TEMP_MARK}") + r"(\d+)-[^/]*\Z")
    return _remove_dead_writers(folder, f".{glob_escape(path.name)}{TEMP_MARK}*", pattern)


def remove_stale_temporaries_in(folder: Path) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder`` (not below it), for
    any target: files named by :func:`atomic_path` whose writing process is no longer running.

    :func:`atomic_path` only clears the leftovers of the file it writes; a folder whose files
    are named by what made them (a picture cache) may never write that name again. Returns the
    files removed.
    """
    pattern = re.compile(r"\A\..+" + re.escape(TEMP_MARK) + r"(\d+)-[^/]*\Z")
    return _remove_dead_writers(Path(folder), f".*{TEMP_MARK}*", pattern)


def _remove_dead_writers(folder: Path, glob: str, pattern: re.Pattern[str]) -> list[Path]:
    """Remove the files in ``folder`` matching ``glob`` whose name ``pattern`` reads a writer's
    process ID from (group 1) when that process is no longer running; returns them."""
    removed: list[Path] = []
    try:
        candidates = list(folder.glob(glob))
    except OSError:
        return removed
    for candidate in candidates:
        match = pattern.match(candidate.name)
        if match and candidate.is_file() and not process_running(int(match.group(1))):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters made literal."""
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so libraries that pick a
    format by extension still work. On error the temporary file is removed and ``path``
    is untouched. A missing folder is created; leftovers of killed earlier writes of
    ``path`` are removed first; the finished file gets the user's normal permissions.

    >>> with atomic_path(Path("book.pdf")) as tmp:   # doctest: +SKIP
    ...     write_pdf(tmp)
    """
    path = Path(path)
    tmp = _temporary_beside(path, suffix)
    try:
        yield tmp
        _move_into_place(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in _ENVIRONMENT_ERRNOS:  # the disk, not the program: the user can act on it
            raise FairytaleError(f"Cannot write {path}: {exc.strerror}") from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _temporary_beside(path: Path, suffix: str | None = None) -> Path:
    """A new, empty temporary file in ``path``'s folder (created if missing), named after
    ``path``, once the leftovers of killed earlier writes of ``path`` are removed."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        ensure_dir(folder)
    remove_stale_temporaries(path)
    suffix = path.suffix if suffix is None else suffix
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}{TEMP_MARK}{os.getpid()}-", suffix=suffix, dir=folder
        )
    except OSError as exc:
        raise FairytaleError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    return Path(tmp_name)


def _move_into_place(tmp: Path, path: Path) -> None:
    if tmp.exists():
        os.chmod(tmp, new_file_mode())
    os.replace(tmp, path)


class FileSet:
    """Files that belong together (a book's interior and its cover), staged by
    :func:`atomic_file_set`: each is written to a temporary file, and all are renamed into
    place only when every one of them is complete."""

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}  # target -> temporary file

    def stage(self, path: Path) -> Path:
        """A temporary path to write ``path``'s content to (the target keeps its old content
        until the whole set is complete). Staging the same target again replaces its content."""
        path = Path(path)
        if path in self._staged:
            return self._staged[path]
        self._staged[path] = _temporary_beside(path)
        return self._staged[path]

    def final(self, staged: Path) -> Path:
        """The target a temporary path returned by :meth:`stage` stands for."""
        for path, tmp in self._staged.items():
            if tmp == Path(staged):
                return path
        raise KeyError(staged)

    def _commit(self) -> None:
        pending = list(self._staged.items())
        for index, (path, tmp) in enumerate(pending):
            try:
                _move_into_place(tmp, path)
            except OSError as exc:
                for _, rest in pending[index:]:
                    rest.unlink(missing_ok=True)
                done = ", ".join(str(p) for p, _ in pending[:index]) or "none"
                raise FairytaleError(
                    f"Cannot write {path}: {exc.strerror or exc} (already written: {done})"
                ) from exc

    def _discard(self) -> None:
        for tmp in self._staged.values():
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file_set() -> Iterator[FileSet]:
    """Write several files so that they appear together or not at all.

    Each file is written to :meth:`FileSet.stage`'s temporary path; when the block ends
    without error every temporary file is renamed onto its target (renames in one folder
    take microseconds, so no reader sees half a set); on error they are all removed and
    every target keeps what it held before.

    >>> with atomic_file_set() as files:                      # doctest: +SKIP
    ...     write_interior(files.stage(Path("book-interior.pdf")))
    ...     write_cover(files.stage(Path("book-cover.pdf")))
    """
    files = FileSet()
    try:
        yield files
    except BaseException:
        files._discard()
        raise
    files._commit()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
