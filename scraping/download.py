"""Downloading one PDF safely: streamed to a hidden ``.part`` file (:func:`part_path`), checked,
then renamed.

A file only gets its real name once all of it has arrived and looks like a whole PDF:

1. the status is 200 and the body starts with ``%PDF-`` (an HTML error or login page served
   in its place is rejected, whatever its Content-Type says);
2. the byte count matches ``Content-Length`` when the server sent one, and the file ends with
   the ``%%EOF`` marker (catches a cut connection when there is no Content-Length);
3. its SHA-256 is not already stored (the same book reached twice is kept once).

Interrupted bodies (timeouts, resets, truncation) are fetched again a few times with backoff;
a rejected body is not, nor one that outlived its overall deadline (``HttpConfig.download_deadline``:
a server trickling a byte at a time never resets the read timeout, so the whole download has a
deadline too). Whatever happens, no ``.part`` file is left behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from fairytale.errors import FairytaleError
from fairytale.files import TEMP_MARK, glob_escape, remove_stale_temporaries, sha256_file
from scraping.http import BodyTooLarge, PoliteSession, iter_body

MAX_NAME_LENGTH = 100
MAX_PDF_BYTES = 500 * 1024 * 1024
PART_SUFFIX = ".part"
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


class DownloadRejected(FairytaleError):
    """The server answered, but not with a whole PDF; fetching again will not help."""


class IncompleteDownload(Exception):
    """The body stopped early; fetching again may help."""


class NotModified(Exception):
    """The server answered 304 to a conditional request: the copy we hold is current."""


@dataclass(frozen=True)
class Validators:
    """What the server said identifies the version of a file it sent (``ETag``,
    ``Last-Modified``), kept to ask later whether it has changed."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        """The conditional request headers for these validators (none when there are none)."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass(frozen=True)
class Downloaded:
    """A verified PDF waiting under its ``.part`` name, with the server's validators."""

    part: Path
    bytes: int
    sha256: str
    validators: Validators = Validators()


def safe_file_name(name: str, *, fallback: str = "book", max_length: int = MAX_NAME_LENGTH) -> str:
    """A file name that stays in its folder and works on every file system, ending in ``.pdf``.

    Path separators and ``..`` cannot survive, only ASCII letters, digits, ``.``, ``-`` and
    ``_`` are kept, and the length is bounded.

    >>> safe_file_name("../../etc/passwd.pdf")
    'etc-passwd.pdf'
    >>> safe_file_name("Ginger the Giraffe (2020)!.PDF")
    'Ginger-the-Giraffe-2020.pdf'
    """
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"\.pdf$", "", text.strip(), flags=re.IGNORECASE)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem)
    stem = re.sub(r"\.{2,}", ".", stem)
    stem = re.sub(r"-{2,}", "-", stem).strip(".-_ ")
    if not stem:
        stem = re.sub(r"[^A-Za-z0-9]+", "-", fallback).strip("-") or "book"
    if stem.split(".")[0].lower() in _WINDOWS_RESERVED:
        stem = f"book-{stem}"
    stem = stem[: max_length - len(".pdf")].rstrip(".-_ ")
    return f"{stem}.pdf"


def file_name_for(pdf_url: str, title: str) -> str:
    """The safe file name for a PDF: its URL's own file name, else the book title."""
    last = unquote(urlsplit(pdf_url).path).replace("\\", "/").rsplit("/", 1)[-1]
    return safe_file_name(last, fallback=title)


def fetch_pdf(
    http: PoliteSession,
    url: str,
    part: Path,
    *,
    attempts: int = 3,
    max_bytes: int = MAX_PDF_BYTES,
    on_start: Callable[[int | None], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    unless: Validators | None = None,
) -> Downloaded:
    """Stream ``url`` into ``part`` and verify it is a whole PDF.

    Raises :class:`DownloadRejected` for a wrong body, ``requests`` exceptions when the server
    stays unreachable, and :class:`IncompleteDownload` when every attempt was cut short. On
    any failure (Ctrl-C included) ``part`` is removed. With ``unless`` (the validators of the
    copy we hold) the request is conditional, and :class:`NotModified` is raised when the
    server answers 304: nothing was downloaded.
    """
    headers = unless.headers() if unless is not None else {}
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_once(http, url, part, max_bytes, on_start, on_bytes, headers)
        except (IncompleteDownload, requests.exceptions.ChunkedEncodingError, _BodyError) as exc:
            cause = exc.__cause__ if isinstance(exc, _BodyError) else exc
            if attempt == attempts:
                raise IncompleteDownload(f"download kept breaking off ({cause})") from None
            http.config.sleep(http.config.backoff_factor * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover


class _BodyError(Exception):
    """A network error while the body was streaming (as opposed to before the headers)."""


def _fetch_once(
    http: PoliteSession,
    url: str,
    part: Path,
    max_bytes: int,
    on_start: Callable[[int | None], None] | None,
    on_bytes: Callable[[int], None] | None,
    headers: dict[str, str],
) -> Downloaded:
    digest = hashlib.sha256()
    received = 0
    head = b""
    tail = b""
    try:
        with http.request(url, stream=True, headers=headers or None, pdf=True) as response:
            if response.status_code == 304 and headers:
                raise NotModified(url)
            if response.status_code != 200:
                raise DownloadRejected(f"HTTP {response.status_code} {response.reason or ''}".strip())
            expected = _content_length(response)
            if expected is not None and expected > max_bytes:
                raise DownloadRejected(f"refusing a {expected / 1e6:.0f} MB file (limit {max_bytes / 1e6:.0f} MB)")
            if on_start:
                on_start(expected)
            with open(part, "wb") as handle:
                body = iter_body(
                    response, max_bytes=max_bytes, deadline=http.config.download_deadline, clock=http.config.clock
                )
                try:
                    for chunk in body:
                        if len(head) < 1024:
                            head = (head + chunk)[:1024]
                            _check_head(head, response, final=False)
                        handle.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        tail = (tail + chunk)[-2048:]
                        if on_bytes:
                            on_bytes(len(chunk))
                except BodyTooLarge:
                    raise DownloadRejected(f"file larger than {max_bytes / 1e6:.0f} MB") from None
                except (requests.ConnectionError, requests.Timeout) as exc:
                    raise _BodyError(str(exc)) from exc
                handle.flush()
                os.fsync(handle.fileno())
            _check_head(head, response, final=True)
            if expected is not None and received != expected:
                raise IncompleteDownload(f"got {received} of {expected} bytes")
            if b"%%EOF" not in tail:
                raise IncompleteDownload(f"the PDF has no end marker after {received} bytes (cut short)")
            validators = Validators(
                etag=response.headers.get("ETag") or None,
                last_modified=response.headers.get("Last-Modified") or None,
            )
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Downloaded(part=part, bytes=received, sha256=digest.hexdigest(), validators=validators)


def _content_length(response: requests.Response) -> int | None:
    # A compressed transfer's length counts compressed bytes; urllib3 checks that one itself.
    if response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return None
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _check_head(head: bytes, response: requests.Response, *, final: bool) -> None:
    if b"%PDF-" in head:
        return
    if not final and len(head) < 1024 and b"%PDF-"[: len(head)] == head[:5]:
        return  # too little has arrived to tell yet
    sniff = head[:512].lower()
    content_type = response.headers.get("Content-Type", "?").split(";")[0]
    if b"<html" in sniff or b"<!doctype" in sniff or content_type == "text/html":
        raise DownloadRejected(f"got an HTML page ({content_type}) instead of a PDF")
    if final or len(head) >= 1024:
        raise DownloadRejected(f"not a PDF ({content_type}, starts with {head[:16]!r})")


def store(
    download: Downloaded, folder: Path, name: str, taken: Callable[[str], bool], *, replaces: str | None = None
) -> str:
    """Rename a verified ``.part`` to a free name in ``folder``; returns the name used.

    ``taken(name)`` says whether a name belongs to another book; ``-2``, ``-3``… are tried
    until one is free, so two books never overwrite each other, nor a file we did not write.
    ``replaces`` is this book's own earlier file (missing or damaged), which may be overwritten.
    """
    stem = name[: -len(".pdf")]
    candidate, number = name, 1
    while True:
        target = folder / candidate
        if candidate == replaces or not (taken(candidate) or target.exists()):
            break
        if not taken(candidate) and sha256_file(target) == download.sha256:
            # Our own file from a run killed between the rename and the manifest update.
            download.part.unlink(missing_ok=True)
            return candidate
        number += 1
        candidate = f"{stem[: MAX_NAME_LENGTH - 10]}-{number}.pdf"
    os.replace(download.part, target)
    return candidate


def part_path(folder: Path, name: str) -> Path:
    """Where the PDF ``name`` is streamed before it is checked: a hidden name carrying this
    process's id, which no browser download or file of the user's can have (see
    :func:`remove_stale_parts`)."""
    return folder / f".{name}{TEMP_MARK}{os.getpid()}-download{PART_SUFFIX}"


def remove_stale_parts(folder: Path) -> list[Path]:
    """Delete the ``.part`` files (named by :func:`part_path`) of runs that were killed; returns
    what was removed. A folder may be shared: a browser's ``x.pdf.part`` or the file of a scrape
    still running there is kept."""
    removed: list[Path] = []
    for candidate in folder.glob(f".*{glob_escape(TEMP_MARK)}*-download{PART_SUFFIX}"):
        target = candidate.name[1 : candidate.name.index(TEMP_MARK)]
        removed += remove_stale_temporaries(folder / target)  # only if its process is gone
    return sorted(set(removed))
