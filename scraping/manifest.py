"""The crawl's record: one JSON line per book in ``OUT/manifest.jsonl``.

Each line holds the title, the book's page URL, its PDF URL, the file name, byte count,
SHA-256, the server's ``ETag`` and ``Last-Modified`` when it sent them, and a status (see
:class:`Status`). A book's record is appended when the book is done, so writing N books costs N
lines, not N rewrites of the whole file; the last line of a book wins. A run starts and ends by
rewriting the file atomically with one line per book when it holds older or torn lines
(:meth:`Manifest.compact`).

A later run skips every book whose status is ``complete`` or ``duplicate`` and whose file is
still the one recorded: present, of the recorded size, and with the recorded SHA-256. The file is
hashed on every run (about 20 ms for a 20 MB PDF, so about a second for Monkey Pen's 50 books):
a file damaged in place keeps its size and often its modification time, so neither proves it
intact. A file that fails is fetched again. Manifests written before the hash or validators were
recorded still load; a record without a SHA-256 is checked by its size alone. Other statuses
are tried again.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from fairytale.files import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"


class Status(str, Enum):
    """Where a book stands."""

    COMPLETE = "complete"
    """Its PDF is stored in ``file``, verified."""
    DUPLICATE = "duplicate"
    """Its PDF has the same bytes as another book's; stored once, under ``duplicate_of``."""
    FAILED = "failed"
    """Fetching failed (see ``error``); the next run tries again."""
    NO_PDF = "no_pdf"
    """Its page links no PDF; the next run looks again."""
    DISALLOWED = "disallowed"
    """robots.txt forbids fetching it."""


DONE = (Status.COMPLETE, Status.DUPLICATE)


class Record(BaseModel):
    """One book in the manifest."""

    model_config = ConfigDict(extra="ignore", use_enum_values=False)

    title: str
    page_url: str | None = None
    pdf_url: str | None = None
    file: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    status: Status
    error: str | None = None
    duplicate_of: str | None = None
    etag: str | None = None
    """The server's ``ETag`` for the PDF it sent, to ask later whether it changed (``If-None-Match``)."""
    last_modified: str | None = None
    """The server's ``Last-Modified`` for the PDF it sent (``If-Modified-Since``)."""
    updated_at: str = ""

    @property
    def key(self) -> str:
        """What identifies the book across runs: its page URL, else its PDF URL."""
        return self.page_url or self.pdf_url or ""


class Manifest:
    """The records of one download folder, in the order books were first seen."""

    def __init__(self, path: Path, records: dict[str, Record] | None = None) -> None:
        self.path = Path(path)
        self.records: dict[str, Record] = records or {}
        self._stale = False
        self._torn = False
        # Indexes, so that a crawl of N books does N lookups, not N scans.
        self._by_file: dict[str, Record] = {}
        self._by_sha: dict[str, Record] = {}
        # Files found intact this run, by (name, size, mtime): hashed once however many
        # duplicates point at them.
        self._intact: set[tuple[str, int, int]] = set()
        for record in self.records.values():
            self._index(record)

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        """Read ``folder/manifest.jsonl`` if it exists; unreadable lines are skipped with a warning
        (their books are simply fetched again). For a book with several lines, the last wins."""
        path = Path(folder) / MANIFEST_NAME
        records: dict[str, Record] = {}
        stale = torn = False
        if path.is_file():
            data = path.read_bytes()
            torn = stale = bool(data) and not data.endswith(b"\n")
            # Line by line as bytes: a line damaged on disk (not UTF-8, not JSON, nested past
            # Python's recursion limit) costs that book a new fetch, never the whole run.
            for number, line in enumerate(data.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = Record.model_validate(json.loads(line.decode("utf-8")))
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValidationError):
                    log.warning("Ignoring unreadable line %d of %s", number, path)
                    stale = True
                    continue
                stale = stale or record.key in records
                records[record.key] = record  # the latest line wins; the order stays first-seen
        manifest = cls(path, records)
        manifest._stale, manifest._torn = stale, torn
        return manifest

    def get(self, key: str) -> Record | None:
        """The record of the book identified by ``key``, if any."""
        return self.records.get(key)

    def is_done(self, key: str) -> bool:
        """Whether the book needs no fetching: stored and intact (the recorded size and SHA-256),
        or a duplicate of one that is."""
        record = self.records.get(key)
        if record is None or record.status not in DONE:
            return False
        name = record.file if record.status is Status.COMPLETE else record.duplicate_of
        owner = self.owner_of(name) if name else None
        if owner is None or name is None:
            return False
        return self.intact(owner)

    def intact(self, owner: Record) -> bool:
        """Whether ``owner``'s file is on disk as recorded: its size, and its SHA-256 when one
        was recorded (older manifests may lack it)."""
        assert owner.file is not None
        path = self.path.parent / owner.file
        try:
            stat = path.stat()
        except OSError:
            return False
        if not path.is_file() or stat.st_size != owner.bytes:
            return False
        if owner.sha256 is None:
            return True
        seen = (owner.file, stat.st_size, stat.st_mtime_ns)
        if seen in self._intact:
            return True
        try:
            ok = sha256_file(path) == owner.sha256
        except OSError:
            return False
        if ok:
            self._intact.add(seen)
        else:
            log.info("%s no longer has the SHA-256 recorded for it; fetching it again", owner.file)
        return ok

    def owner_of(self, file_name: str) -> Record | None:
        """The complete record that stored ``file_name``."""
        return self._by_file.get(file_name)

    def with_sha256(self, sha256: str) -> Record | None:
        """A complete record whose file has this SHA-256, if its file is still there."""
        record = self._by_sha.get(sha256)
        if record is not None and record.file and (self.path.parent / record.file).is_file():
            return record
        return None

    def put(self, record: Record) -> None:
        """Add or replace a record and append it to the manifest file (one line, closed at once)."""
        record.updated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        old = self.records.get(record.key)
        if old is not None:
            self._unindex(old)
        self.records[record.key] = record
        self._index(record)
        if self._torn or not self.path.is_file():
            self.save()  # never append to a line cut short by a crash
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(record.model_dump_json() + "\n")
        self._stale = self._stale or old is not None  # the file now holds an older line for this book

    def compact(self) -> None:
        """Rewrite the file with one line per book if it holds older or torn lines."""
        if self._stale:
            self.save()

    def save(self) -> None:
        """Write every record, one JSON object per line, through a temporary file."""
        lines = [record.model_dump_json() for record in self.records.values()]
        atomic_write_text(self.path, "".join(line + "\n" for line in lines))
        self._stale = self._torn = False

    def complete_files(self) -> dict[str, str]:
        """File name → book title, for every stored PDF."""
        return {
            record.file: record.title
            for record in self.records.values()
            if record.status is Status.COMPLETE and record.file
        }

    def _index(self, record: Record) -> None:
        if record.status is Status.COMPLETE:
            if record.file:
                self._by_file.setdefault(record.file, record)
            if record.sha256:
                self._by_sha.setdefault(record.sha256, record)

    def _unindex(self, record: Record) -> None:
        for index, value in ((self._by_file, record.file), (self._by_sha, record.sha256)):
            if value is not None and index.get(value) is record:
                del index[value]
