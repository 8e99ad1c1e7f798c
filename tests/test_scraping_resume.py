"""Resuming a crawl: a finished file is verified by its SHA-256 (not only its size), the server's
validators are recorded, and ``check_updates`` asks the site with conditional requests so an
unchanged PDF is not downloaded again. Everything runs against the local site; no test sleeps."""

from __future__ import annotations

import functools
import hashlib
import json
import os

from typer.testing import CliRunner

import scraping.http
from fairytale.cli import app
from scraping import scrape
from tests.scraping_site import FakeClock, Fault, Site, book_pdf, files_in, quick_http, read_manifest, serve


def _pdf_requests(site: Site) -> int:
    return sum(site.requests_for(book.pdf_path()) for book in site.books)


def _damage_in_place(path) -> None:
    """Change bytes in the middle of ``path``, keeping its size and modification time."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\0" * 64
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def _rewrite_manifest(folder, change) -> None:
    path = folder / "manifest.jsonl"
    rows = [change(row) for row in read_manifest(folder)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_a_file_of_the_right_size_but_wrong_bytes_is_fetched_again(site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    rows = read_manifest(tmp_path)
    _damage_in_place(tmp_path / rows[1]["file"])
    site.log.clear()
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["skipped", "downloaded", "skipped"]
    assert (tmp_path / rows[1]["file"]).read_bytes() == site.books[1].pdf
    assert len(files_in(tmp_path)) == 3  # replaced in place, not stored beside


def test_the_manifest_records_the_servers_validators(site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    for row, book in zip(read_manifest(tmp_path), site.books, strict=True):
        assert row["etag"] == f'"{hashlib.sha256(book.pdf).hexdigest()[:16]}"'
        assert row["last_modified"] == site.last_modified


def test_a_server_without_validators_records_none(site, clock, tmp_path):
    site.validators = False
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert {(row["etag"], row["last_modified"]) for row in read_manifest(tmp_path)} == {(None, None)}


def test_an_old_manifest_without_the_new_fields_still_resumes_and_verifies(site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    old_fields = ("title", "page_url", "pdf_url", "file", "bytes", "sha256", "status", "error", "duplicate_of")
    _rewrite_manifest(tmp_path, lambda row: {key: row[key] for key in old_fields})
    rows = read_manifest(tmp_path)
    _damage_in_place(tmp_path / rows[2]["file"])
    site.log.clear()
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["skipped", "skipped", "downloaded"]
    assert _pdf_requests(site) == 1
    assert (tmp_path / rows[2]["file"]).read_bytes() == site.books[2].pdf


def test_a_record_without_a_hash_is_checked_by_its_size(site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    _rewrite_manifest(tmp_path, lambda row: {**row, "sha256": None})
    site.log.clear()
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["skipped"] * 3
    assert _pdf_requests(site) == 0


def test_a_damaged_file_that_duplicates_point_at_is_fetched_again(clock, tmp_path):
    from tests.scraping_site import Book

    pdf = book_pdf("Ginger the Giraffe")
    books = [Book("ginger", "Ginger", "002-GINGER.pdf", pdf), Book("again", "Again", "002-AGAIN.pdf", pdf, "relative")]
    with serve(Site(books=books, per_page=5)) as site:
        scrape(site.url, tmp_path, http_config=quick_http(clock))
        _damage_in_place(tmp_path / "002-GINGER.pdf")
        report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    # The stored copy is mended first; the duplicate then points at an intact file again.
    assert [b.action for b in report.books] == ["downloaded", "skipped"]
    assert (tmp_path / "002-GINGER.pdf").read_bytes() == pdf
    assert files_in(tmp_path) == ["002-GINGER.pdf"]


# -- asking the site whether a PDF changed ------------------------------------------------------


def test_check_updates_downloads_only_the_pdf_the_site_replaced(site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    rows = read_manifest(tmp_path)
    kept = {row["file"]: (tmp_path / row["file"]).stat().st_mtime_ns for row in rows}
    site.books[0].pdf = book_pdf("Ginger the Giraffe", seed=1)  # the site replaced this one
    site.log.clear()
    site.headers.clear()
    report = scrape(site.url, tmp_path, check_updates=True, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["downloaded", "unchanged", "unchanged"]
    for row, book in zip(rows, site.books, strict=True):
        # Each PDF was asked for once, conditionally, with what the first run recorded.
        assert site.conditions_for(book.pdf_path()) == [(row["etag"], row["last_modified"])]
    new = read_manifest(tmp_path)
    assert (tmp_path / new[0]["file"]).read_bytes() == site.books[0].pdf
    assert new[0]["sha256"] == hashlib.sha256(site.books[0].pdf).hexdigest() != rows[0]["sha256"]
    assert new[1:] == rows[1:]
    for row in rows[1:]:
        assert (tmp_path / row["file"]).stat().st_mtime_ns == kept[row["file"]]  # not written again
    assert len(files_in(tmp_path)) == 3


def test_check_updates_uses_if_modified_since_when_no_etag_was_recorded(site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    _rewrite_manifest(tmp_path, lambda row: {**row, "etag": None})
    site.headers.clear()
    report = scrape(site.url, tmp_path, check_updates=True, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["unchanged"] * 3
    assert site.conditions_for(site.books[0].pdf_path()) == [(None, site.last_modified)]


def test_check_updates_without_validators_compares_the_bytes(site, clock, tmp_path):
    site.validators = False
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    rows = read_manifest(tmp_path)
    kept = {row["file"]: (tmp_path / row["file"]).stat().st_mtime_ns for row in rows}
    site.headers.clear()
    report = scrape(site.url, tmp_path, check_updates=True, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["unchanged"] * 3
    assert site.conditions_for(site.books[0].pdf_path()) == [(None, None)]  # nothing to ask with
    assert {row["file"]: (tmp_path / row["file"]).stat().st_mtime_ns for row in rows} == kept
    assert [r["status"] for r in read_manifest(tmp_path)] == ["complete"] * 3


def test_a_failed_update_check_keeps_the_book_and_its_record(site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    rows = read_manifest(tmp_path)
    site.faults[site.books[0].pdf_path()] = [Fault.error(500)] * 5
    report = scrape(site.url, tmp_path, check_updates=True, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["failed", "unchanged", "unchanged"]
    assert "could not check for an update" in report.books[0].error
    assert read_manifest(tmp_path) == rows
    assert (tmp_path / rows[0]["file"]).read_bytes() == site.books[0].pdf
    again = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in again.books] == ["skipped"] * 3


def test_cli_check_updates(site, tmp_path, monkeypatch):
    clock = FakeClock()
    config = functools.partial(scraping.http.HttpConfig, sleep=clock.sleep, clock=clock, retries=1)
    monkeypatch.setattr(scraping.http, "HttpConfig", config)
    args = ["scrape", "--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path), "--delay", "0"]
    assert CliRunner().invoke(app, args).exit_code == 0
    result = CliRunner().invoke(app, [*args, "--check-updates"])
    assert result.exit_code == 0, result.output
    assert "3 unchanged" in result.output
