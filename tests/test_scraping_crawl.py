"""The whole crawl against the local site: discovery with pagination, the manifest, resuming
after a crash, --dry-run, --limit, and the `fairytale scrape` command's errors."""

from __future__ import annotations

import functools
import hashlib
import os

import pytest
from typer.testing import CliRunner

import scraping.crawl
import scraping.http
from fairytale.cli import app
from fairytale.files import TEMP_MARK
from scraping import scrape
from tests.scraping_site import (
    LISTING,
    Book,
    FakeClock,
    Site,
    book_pdf,
    files_in,
    quick_http,
    read_manifest,
    serve,
)


def test_scrape_downloads_every_book_and_records_it(site, clock, tmp_path):
    report = scrape(site.url, tmp_path / "books", http_config=quick_http(clock))
    out = tmp_path / "books"
    assert [b.action for b in report.books] == ["downloaded"] * 3
    assert site.requests_for("/pages/free-childrens-books") == 2  # page 1, then ?page=2
    assert site.requests_for("/blogs/news/our-story-so-far") == 0  # a footer link, not a book
    rows = read_manifest(out)
    assert [r["title"] for r in rows] == ["Ginger the Giraffe", "Hide and Seek", "Doing My Chores"]
    for row, book in zip(rows, site.books, strict=True):
        data = (out / row["file"]).read_bytes()
        assert data == book.pdf
        assert row["status"] == "complete"
        assert row["bytes"] == len(data)
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert row["page_url"] == f"{site.url}/blogs/news/{book.handle}"
        assert row["pdf_url"].split("?")[0].endswith(book.pdf_path())
    assert files_in(out) == sorted(r["file"] for r in rows)
    assert report.manifest_path == out / "manifest.jsonl"


def test_second_run_fetches_nothing_already_complete(site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    site.log.clear()
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["skipped"] * 3
    fetched = {path.split("?")[0] for path, _ in site.log}
    assert fetched == {"/robots.txt", "/pages/free-childrens-books"}  # the listing only
    assert len(read_manifest(tmp_path)) == 3


def test_a_missing_or_damaged_file_is_fetched_again(site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    rows = read_manifest(tmp_path)
    (tmp_path / rows[0]["file"]).unlink()
    (tmp_path / rows[1]["file"]).write_bytes(b"%PDF-1.4 damaged")
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["downloaded", "downloaded", "skipped"]
    assert read_manifest(tmp_path) and [r["file"] for r in read_manifest(tmp_path)] == [r["file"] for r in rows]
    for row, book in zip(read_manifest(tmp_path), site.books, strict=True):
        assert (tmp_path / row["file"]).read_bytes() == book.pdf
    assert len(files_in(tmp_path)) == 3  # the damaged file was replaced, not kept beside


def test_crash_mid_crawl_then_resume_loses_nothing_and_refetches_nothing(site, tmp_path):
    clock = FakeClock()
    second_page = f"/blogs/news/{site.books[1].handle}"

    def crash_before_second_pdf(seconds: float) -> None:
        # Ctrl-C while waiting to download the second book, its page already read.
        if site.log and site.log[-1][0] == second_page:
            raise KeyboardInterrupt
        clock.sleep(seconds)

    with pytest.raises(KeyboardInterrupt):
        scrape(site.url, tmp_path, http_config=quick_http(clock, delay=1.0, sleep=crash_before_second_pdf))
    rows = read_manifest(tmp_path)
    assert [(r["title"], r["status"]) for r in rows] == [("Ginger the Giraffe", "complete")]
    assert files_in(tmp_path) == [rows[0]["file"]]  # no .part, no half file
    assert (tmp_path / rows[0]["file"]).read_bytes() == site.books[0].pdf

    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["skipped", "downloaded", "downloaded"]
    assert site.requests_for(f"/blogs/news/{site.books[0].handle}") == 1
    assert site.requests_for(site.books[0].pdf_path()) == 1
    assert [r["status"] for r in read_manifest(tmp_path)] == ["complete"] * 3
    assert len(files_in(tmp_path)) == 3


def test_leftovers_of_a_killed_run_are_cleaned(site, clock, tmp_path):
    # A kill -9 can leave a .part file; a manifest line can only be damaged from outside.
    stale = tmp_path / f".002-GINGER.pdf{TEMP_MARK}999999999-download.part"  # its process is gone
    stale.write_bytes(b"%PDF-1.4 half")
    (tmp_path / "manifest.jsonl").write_text('{"title": "x", "status": "complete"\n')
    # --out may be a folder shared with others: a browser's unfinished downloads, another
    # scrape still running there. None of those is ours to delete.
    kept = [
        tmp_path / "holiday.mkv.part",
        tmp_path / "report.pdf.part",
        tmp_path / f".003-CHORES.pdf{TEMP_MARK}{os.getpid()}-download.part",
    ]
    for path in kept:
        path.write_bytes(b"keep")
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["downloaded"] * 3
    assert not stale.exists()
    assert all(path.read_bytes() == b"keep" for path in kept)
    assert [r["status"] for r in read_manifest(tmp_path)] == ["complete"] * 3


def test_dry_run_lists_the_pdfs_and_writes_nothing(site, clock, tmp_path):
    out = tmp_path / "books"
    report = scrape(site.url, out, dry_run=True, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["would fetch"] * 3
    assert [b.file for b in report.books] == [
        "002-GINGER-THE-GIRAFFE-Free-Childrens-Book-By-Monkey-Pen.pdf",
        "001-HIDE-AND-SEEK-Free-Childrens-Book-By-Monkey-Pen.pdf",
        "003-DOING_MY_CHORES-Free-Childrens-Book-By-Monkey-Pen.pdf",
    ]
    assert not out.exists()
    assert not any(site.requests_for(book.pdf_path()) for book in site.books)


def test_limit_takes_the_first_books_and_stops_reading_the_listing(site, clock, tmp_path):
    report = scrape(site.url, tmp_path, limit=1, http_config=quick_http(clock))
    assert [b.title for b in report.books] == ["Ginger the Giraffe"]
    assert site.requests_for("/pages/free-childrens-books") == 1
    assert len(read_manifest(tmp_path)) == 1


def test_a_pager_linking_every_page_is_read_up_to_the_page_limit_with_a_warning(clock, tmp_path):
    # The first page links all 55 listing pages at once, as many themes' pagers do.
    books = [Book(f"book-{n}", f"Book {n}", f"book-{n}.pdf", b"") for n in range(55)]
    with serve(Site(books=books, per_page=1)) as site:
        report = scrape(site.url, tmp_path, dry_run=True, http_config=quick_http(clock))
        assert site.requests_for(LISTING) == scraping.crawl.MAX_LISTING_PAGES == 50
    assert [b.title for b in report.books] == [f"Book {n}" for n in range(50)]
    assert any("more than 50 listing pages" in warning for warning in report.warnings)

def test_a_pdf_linked_straight_from_the_listing_is_a_book(clock, tmp_path):
    direct = Book("bully-bill", "Bully Bill", "030-BULLY-BILL-Free-Childrens-Book-By-Monkey-Pen.pdf", book_pdf("Bully Bill"), "listing")
    with serve(Site(books=[direct])) as site:
        report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [(b.title, b.action) for b in report.books] == [("Bully Bill", "downloaded")]
    [row] = read_manifest(tmp_path)
    assert row["page_url"] is None and row["pdf_url"].endswith(".pdf?v=1") and row["status"] == "complete"
    assert (tmp_path / row["file"]).read_bytes() == direct.pdf


def test_the_listing_page_itself_can_be_the_base_url(site, clock, tmp_path):
    report = scrape(f"{site.url}/pages/free-childrens-books", tmp_path, http_config=quick_http(clock))
    assert len(report.books) == 3


# -- the command --------------------------------------------------------------------------------


@pytest.fixture
def quick_cli(monkeypatch):
    """Make the command's HttpConfig wait through a fake clock (the CLI builds its own)."""
    clock = FakeClock()
    monkeypatch.setattr(scraping.http, "HttpConfig", functools.partial(scraping.http.HttpConfig, sleep=clock.sleep, clock=clock, retries=1))
    return clock


def test_cli_scrape_downloads_and_reports(site, quick_cli, tmp_path):
    out = tmp_path / "books"
    result = CliRunner().invoke(app, ["scrape", "--base-url", site.url, "--allow-host", "localhost", "--out", str(out), "--delay", "0"])
    assert result.exit_code == 0, result.output
    assert "3 downloaded" in result.output
    assert "research use" in result.output  # the site's terms are shown
    assert len(read_manifest(out)) == 3


def test_cli_dry_run_prints_the_plan(site, quick_cli, tmp_path):
    result = CliRunner().invoke(app, ["scrape", "--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path / "b"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Would fetch" in result.output and "Ginger the Giraffe" in result.output
    assert not (tmp_path / "b").exists()


def test_cli_exits_non_zero_when_a_book_failed(site, quick_cli, tmp_path):
    from tests.scraping_site import Fault

    site.faults[site.books[0].pdf_path()] = [Fault.html_page()]
    result = CliRunner().invoke(app, ["scrape", "--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path), "--delay", "0"])
    assert result.exit_code == 1
    assert "1 of 3 books were not downloaded" in result.output
    assert "run the same command again" in result.output


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base-url", "ftp://example.com"], "--base-url must be an http(s) URL"),
        (["--base-url", "monkeypen.com"], "--base-url must be an http(s) URL"),
        (["--base-url", "http://[::1"], "--base-url must be an http(s) URL"),
        (["--base-url", "http://127.0.0.1:99999/"], "--base-url must be an http(s) URL"),
        (["--base-url", "http://127.0.0.1:port/"], "--base-url must be an http(s) URL"),
        (["--base-url", "http://:80/"], "--base-url must be an http(s) URL"),
        (["--delay", "-1"], "delay between requests cannot be negative"),
        (["--delay", "inf"], "--delay must be a number of seconds between 0 and 600"),
        (["--delay", "1e308"], "--delay must be a number of seconds between 0 and 600"),
        (["--delay", "nan"], "--delay must be a number of seconds between 0 and 600"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--timeout", "0"], "--timeout must be a positive"),
        (["--timeout", "nan"], "--timeout must be a positive number of seconds, at most 600"),
        (["--timeout", "inf"], "--timeout must be a positive number of seconds, at most 600"),
    ],
)
def test_cli_bad_options_give_one_clear_line(args, message, quick_cli, tmp_path, monkeypatch):
    def no_request(*args, **kwargs):
        raise AssertionError("a request was about to be sent for a refused option")

    monkeypatch.setattr(scraping.crawl, "PoliteSession", no_request)
    result = CliRunner().invoke(app, ["scrape", "--out", str(tmp_path), *args])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [line] = _error_lines(result.output)
    assert message in line


def test_cli_unreachable_site_and_missing_listing_give_one_clear_line(site, quick_cli, tmp_path):
    result = CliRunner().invoke(app, ["scrape", "--base-url", f"{site.url}/pages/no-such-page", "--out", str(tmp_path)])
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert "Cannot read the listing page" in line and "HTTP 404" in line

    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    result = CliRunner().invoke(app, ["scrape", "--base-url", closed, "--out", str(tmp_path)])
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert "Cannot read the listing page" in line and "connection refused" in line


def test_cli_listing_without_books_says_so(site, quick_cli, tmp_path):
    site.books = []
    result = CliRunner().invoke(app, ["scrape", "--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path)])
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert "No books found" in line


def test_progress_bars_show_listing_books_and_bytes(site, clock, tmp_path):
    import io

    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    scrape(site.url, tmp_path, http_config=quick_http(clock), show_progress=True, console=console)
    shown = screen.getvalue()
    assert "Listing pages" in shown and "Books" in shown and "3/3" in shown
