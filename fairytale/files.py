"""Safe file writing: never leave a half-written file behind.

Everything the product writes goes through :func:`atomic_path`: the content is written to a
temporary file in the destination folder and renamed over the target only when complete, so a
crash or Ctrl-C leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fairytale.errors import FairytaleError


def check_output_path(path: Path, *, overwrite: bool = True) -> Path:
    """Check that ``path`` can be written: its folder exists and is writable.

    Raises :class:`FairytaleError` with one clear line otherwise. Returns the path.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise FairytaleError(f"Output folder does not exist: {parent}")
    if not parent.is_dir():
        raise FairytaleError(f"Output folder is not a folder: {parent}")
    if path.is_dir():
        raise FairytaleError(f"Output path is a folder, not a file: {path}")
    if not can_create_files_in(parent):
        raise FairytaleError(f"Output folder is not writable: {parent}")
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
    except PermissionError as exc:
        raise FairytaleError(f"Cannot create folder {path}: permission denied") from exc
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


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so libraries that pick a
    format by extension still work. On error the temporary file is removed and ``path``
    is untouched.

    >>> with atomic_path(Path("book.pdf")) as tmp:   # doctest: +SKIP
    ...     write_pdf(tmp)
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=suffix, dir=path.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
