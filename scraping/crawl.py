"""``scrape()``: discover every free book, download each PDF once, record it in the manifest.

>>> report = scrape("https://monkeypen.com", "books/", delay=1.0)   # doctest: +SKIP
>>> report.count("downloaded"), report.manifest_path                 # doctest: +SKIP
(50, PosixPath('books/manifest.jsonl'))

Run it again and it resumes: books recorded as complete, whose files are still intact (size and
SHA-256), are neither looked up nor downloaded again; failed or damaged ones are fetched again.
With ``check_updates=True`` complete books are asked about too, with a conditional request
(``If-None-Match``/``If-Modified-Since`` from the recorded ``ETag``/``Last-Modified``): a file
the site has not changed is not downloaded again, one it replaced is. Ctrl-C keeps every
finished book.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.text import Text

from fairytale.errors import FairytaleError
from fairytale.files import ensure_dir
from scraping.discovery import BookLink, listing_url, parse_book_page, parse_listing, same_listing_page
from scraping.download import (
    DownloadRejected,
    IncompleteDownload,
    NotModified,
    Validators,
    fetch_pdf,
    file_name_for,
    part_path,
    remove_stale_parts,
    store,
)
from scraping.http import DisallowedByRobots, HttpConfig, PoliteSession, describe_error
from scraping.manifest import MANIFEST_NAME, Manifest, Record, Status
from scraping.site import DEFAULT_BASE_URL

log = logging.getLogger(__name__)

MAX_LISTING_PAGES = 50
MAX_BOOKS = 1000
"""Books one crawl takes at most (Monkey Pen lists about 50); the rest are ignored with a warning."""

ACTIONS = ("downloaded", "skipped", "unchanged", "duplicate", "failed", "no pdf", "disallowed", "would fetch")


@dataclass
class BookOutcome:
    """What happened to one book in this run.

    ``action`` is one of: ``downloaded``, ``skipped`` (already complete), ``unchanged``
    (complete, and the site says it has not changed: ``check_updates``), ``duplicate`` (same
    bytes as a stored book), ``failed``, ``no pdf``, ``disallowed`` (robots.txt) or
    ``would fetch`` (dry run).
    """

    title: str
    page_url: str | None
    pdf_url: str | None
    action: str
    file: str | None = None
    bytes: int | None = None
    error: str | None = None


@dataclass
class ScrapeReport:
    """The result of :func:`scrape`: one outcome per book, in listing order."""

    listing_url: str
    out_dir: Path
    manifest_path: Path | None
    dry_run: bool
    books: list[BookOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pace: list[str] = field(default_factory=list)
    """One line per host whose robots.txt asked for a longer pause than ``delay`` (and got it)."""
    requests: int = 0

    def count(self, action: str) -> int:
        """How many books ended with ``action``."""
        return sum(1 for book in self.books if book.action == action)

    @property
    def failed(self) -> list[BookOutcome]:
        """Books that could not be fetched this time (a new run retries them)."""
        return [book for book in self.books if book.action == "failed"]


def scrape(
    base_url: str = DEFAULT_BASE_URL,
    out_dir: str | Path = "books",
    *,
    delay: float | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    check_updates: bool = False,
    http_config: HttpConfig | None = None,
    show_progress: bool = False,
    console: Console | None = None,
) -> ScrapeReport:
    """Download every free book listed at ``base_url`` into ``out_dir``.

    ``base_url`` is the site root (the listing path is appended) or the listing page itself.
    ``delay`` (seconds between requests, 0 allowed) overrides ``http_config.delay``; ``limit``
    takes only the first N books of the listing; ``dry_run`` reads the listing and book pages
    but downloads and writes nothing; ``check_updates`` asks the site whether each complete
    book's PDF changed (a conditional request each) and downloads the ones it replaced. Raises :class:`FairytaleError` when the listing cannot be
    read or holds no books; a single book's failure is recorded, not raised.
    """
    # 1. Check the inputs.
    listing = _check_base_url(base_url)
    if limit is not None and limit < 1:
        raise FairytaleError(f"--limit must be at least 1 (got {limit})")
    config = http_config or HttpConfig()
    if delay is not None:
        config = dataclasses.replace(config, delay=delay)
    out = Path(out_dir)
    if dry_run:
        manifest = Manifest.load(out) if out.is_dir() else Manifest(out / MANIFEST_NAME)
    else:
        _prepare_out(out)
        for stale in remove_stale_parts(out):
            log.info("Removed %s left by an interrupted run", stale.name)
        manifest = Manifest.load(out)
        manifest.compact()
    report = ScrapeReport(listing, out, None if dry_run else manifest.path, dry_run)

    http = PoliteSession(config, site=listing)
    try:
        with _progress(show_progress, console) as progress:
            # 2. Discover the books on the listing page(s).
            books = discover(http, listing, limit=limit, warnings=report.warnings, progress=progress)

            # 3. Fetch each book that is not already complete, recording it as we go.
            task = progress.add_task("Books", total=len(books))
            for book in books:
                progress.update(task, description=f"Books · {_short(book.title)}")
                report.books.append(_fetch_book(http, book, out, manifest, dry_run, progress, check_updates))
                progress.advance(task)
            progress.update(task, description="Books")
    except OSError as exc:
        if isinstance(exc, requests.RequestException):
            raise
        # A book's network errors are caught with the book; a plain OSError is the download
        # folder (a full disk, a quota, a mount gone read-only), which every next book would hit too.
        raise FairytaleError(
            f"Cannot write to {out}: {exc.strerror or exc}. The books finished so far are kept; "
            "run the same command again to resume"
        ) from None
    finally:
        report.requests = http.requests_made
        report.warnings.extend(http.notes)
        report.pace.extend(http.pace)
        http.close()
        if not dry_run:
            manifest.compact()
    return report


def discover(
    http: PoliteSession,
    listing: str,
    *,
    limit: int | None = None,
    warnings: list[str] | None = None,
    progress: Progress | None = None,
) -> list[BookLink]:
    """Every book linked from the listing page and the pages it paginates to, in order.

    At most :data:`MAX_BOOKS` books and :data:`MAX_LISTING_PAGES` pages, each page giving at
    most ``MAX_BOOKS_PER_PAGE``; what is cut is reported in ``warnings``.
    """
    warnings = warnings if warnings is not None else []
    queue, seen = [listing], {same_listing_page(listing)}
    books: dict[str, BookLink] = {}
    task = progress.add_task("Listing pages", total=None) if progress else None
    read = 0
    while queue:
        # Pages read, not pages seen: a pager linking all 60 pages at once must not end the walk.
        if read >= MAX_LISTING_PAGES:
            warnings.append(
                f"more than {MAX_LISTING_PAGES} listing pages; only the first {MAX_LISTING_PAGES} were read"
            )
            break
        read += 1
        url = queue.pop(0)
        try:
            final_url, html = http.get_text(url)
        except (requests.RequestException, FairytaleError) as exc:
            if url == listing:
                raise FairytaleError(f"Cannot read the listing page {url}: {describe_error(exc, http)}") from None
            warnings.append(f"listing page {url} skipped: {describe_error(exc, http)}")
            continue
        page = parse_listing(html, final_url)
        if page.more:
            warnings.append(f"listing page {final_url} links more than {len(page.books)} books; only those were taken")
        for book in page.books:
            if book.key not in books and len(books) >= MAX_BOOKS:
                warnings.append(f"more than {MAX_BOOKS} books found; only the first {MAX_BOOKS} are taken")
                queue.clear()
                break
            books.setdefault(book.key, book)
        for next_url in page.next_pages:
            if same_listing_page(next_url) not in seen:
                seen.add(same_listing_page(next_url))
                queue.append(next_url)
        if progress is not None and task is not None:
            progress.update(task, description=f"Listing pages · {len(books)} books", advance=1)
        if limit is not None and len(books) >= limit:
            break
    if not books:
        raise FairytaleError(
            f"No books found on {listing}: it links no book pages or PDFs (wrong --base-url, or the site changed)"
        )
    found = list(books.values())
    return found[:limit] if limit is not None else found


# -- one book -------------------------------------------------------------------------------


def _fetch_book(
    http: PoliteSession,
    book: BookLink,
    out: Path,
    manifest: Manifest,
    dry_run: bool,
    progress: Progress,
    check_updates: bool = False,
) -> BookOutcome:
    key = book.key
    done = manifest.get(key) if manifest.is_done(key) else None
    if done is not None and not check_updates:
        return BookOutcome(done.title, done.page_url, done.pdf_url, "skipped", done.file or done.duplicate_of, done.bytes)

    earlier = manifest.get(key)
    record = Record(title=book.title, page_url=book.page_url, pdf_url=book.pdf_url, status=Status.FAILED)
    try:
        # a. The book's own page names the title and links the PDF.
        if book.page_url is not None:
            final_url, html = http.get_text(book.page_url)
            page = parse_book_page(html, final_url)  # relative links count from where we landed
            record.title = page.title or book.title
            if not page.pdf_urls:
                record.status, record.error = Status.NO_PDF, "no link to a .pdf on the book's page"
                return _finish(record, manifest, dry_run, "no pdf", keep=done)
            candidates = page.pdf_urls
        else:
            assert book.pdf_url is not None
            candidates = [book.pdf_url]
        # Only from the site's own hosts, its known CDN and --allow-host (scraping.scope).
        scope = http.scope
        allowed = [url for url in candidates if scope is None or scope.pdf_host_allowed(url)]
        if not allowed:
            assert scope is not None
            record.pdf_url = candidates[0]
            record.status, record.error = Status.NO_PDF, scope.pdf_refusal(candidates[0])
            log.info("%s: %s", record.title, record.error)
            return _finish(record, manifest, dry_run, "no pdf", keep=done)
        record.pdf_url = allowed[0]
        if dry_run:
            return BookOutcome(record.title, record.page_url, record.pdf_url, "would fetch",
                               file_name_for(record.pdf_url, record.title))

        # b. Stream the PDF to a hidden .part file and verify it. A book already complete is
        # asked for conditionally: the validators only speak for the URL they came from.
        name = file_name_for(record.pdf_url, record.title)
        unless = None
        if done is not None and done.pdf_url == record.pdf_url:
            unless = Validators(done.etag, done.last_modified)
        try:
            download = _download_with_progress(
                http, record.pdf_url, part_path(out, name), progress, record.title, unless=unless
            )
        except NotModified:
            assert done is not None
            return BookOutcome(done.title, done.page_url, done.pdf_url, "unchanged", done.file or done.duplicate_of, done.bytes)
        record.bytes, record.sha256 = download.bytes, download.sha256
        record.etag, record.last_modified = download.validators.etag, download.validators.last_modified
        if done is not None and download.sha256 == done.sha256:
            # Sent again (no validators, or the server ignored them) but the same bytes: keep the file.
            download.part.unlink(missing_ok=True)
            record.status, record.file, record.duplicate_of = done.status, done.file, done.duplicate_of
            return _finish(record, manifest, dry_run, "unchanged")

        # c. Keep one copy of identical PDFs, then give the file its name.
        twin = manifest.with_sha256(download.sha256)
        if twin is not None and twin.key != key:
            download.part.unlink(missing_ok=True)
            record.status, record.duplicate_of = Status.DUPLICATE, twin.file
            return _finish(record, manifest, dry_run, "duplicate")

        def taken(candidate: str) -> bool:
            owner = manifest.owner_of(candidate)
            return owner is not None and owner.key != key

        replaces = earlier.file if earlier is not None and earlier.status is Status.COMPLETE else None
        record.file = store(download, out, name, taken, replaces=replaces)
        record.status = Status.COMPLETE
        return _finish(record, manifest, dry_run, "downloaded")
    except DisallowedByRobots as exc:
        record.status, record.error = Status.DISALLOWED, str(exc)
        return _finish(record, manifest, dry_run, "disallowed", keep=done)
    except (requests.RequestException, DownloadRejected, IncompleteDownload, FairytaleError) as exc:
        record.error = describe_error(exc, http)
        log.info("%s: %s", record.title, record.error)
        return _finish(record, manifest, dry_run, "failed", keep=done)


def _finish(
    record: Record, manifest: Manifest, dry_run: bool, action: str, *, keep: Record | None = None
) -> BookOutcome:
    """Record what happened to a book. ``keep`` is the book's intact complete record when only
    checking for an update: a failed check leaves that record (and its file) as they are."""
    if keep is not None and action in ("failed", "no pdf", "disallowed"):
        return BookOutcome(
            keep.title, keep.page_url, keep.pdf_url, action, keep.file or keep.duplicate_of, keep.bytes,
            f"could not check for an update, the copy held is kept: {record.error}",
        )
    if not dry_run:
        manifest.put(record)
    return BookOutcome(
        record.title, record.page_url, record.pdf_url, action,
        record.file or record.duplicate_of, record.bytes, record.error,
    )


def _download_with_progress(
    http: PoliteSession, url: str, part: Path, progress: Progress, title: str, *, unless: Validators | None = None
):
    task: TaskID = progress.add_task(f"  {_short(title)}", total=None, bytes=True)
    try:
        return fetch_pdf(
            http,
            url,
            part,
            on_start=lambda total: progress.reset(task, total=total),
            on_bytes=lambda n: progress.advance(task, n),
            unless=unless,
        )
    finally:
        progress.remove_task(task)


# -- helpers --------------------------------------------------------------------------------


def _prepare_out(out: Path) -> None:
    """Create ``out`` and make sure files can be written there, before any request is sent."""
    try:
        ensure_dir(out)
    except OSError as exc:  # ensure_dir reports the usual cases; a read-only mount or /proc land here
        raise FairytaleError(
            f"Cannot create folder {out} ({exc.strerror or exc}); choose an --out folder you can write to"
        ) from None


def _check_base_url(base_url: str) -> str:
    """The listing page of ``base_url``, or one line saying why it is not a usable address."""
    wanted = f"--base-url must be an http(s) URL such as {DEFAULT_BASE_URL} (got {base_url!r})"
    try:
        parts = urlsplit(base_url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", …
        raise FairytaleError(f"{wanted}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FairytaleError(wanted)
    return listing_url(base_url)


def _short(title: str, width: int = 40) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


class _AmountColumn(ProgressColumn):
    """"3/50" for counted tasks, "1.2/4.8 MB" for downloads (tasks added with ``bytes=True``)."""

    def __init__(self) -> None:
        super().__init__()
        self._count, self._bytes = MofNCompleteColumn(), DownloadColumn()

    def render(self, task: Task) -> Text:
        return (self._bytes if task.fields.get("bytes") else self._count).render(task)


@contextlib.contextmanager
def _progress(show: bool, console: Console | None) -> Iterator[Progress]:
    progress = Progress(
        SpinnerColumn(),
        # Book titles come from the site: shown as plain text, never read as rich markup.
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        _AmountColumn(),
        console=console or Console(stderr=True),
        disable=not show,
        transient=False,
    )
    with progress:
        yield progress


