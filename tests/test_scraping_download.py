"""Downloads that must not lose or corrupt anything: truncation, HTML instead of PDF,
duplicates, hostile file names, stale ``.part`` files. Each test checks manifest and disk."""

from __future__ import annotations

import pytest

from scraping import scrape
from scraping.download import MAX_NAME_LENGTH, DownloadRejected, fetch_pdf, file_name_for, safe_file_name
from scraping.http import PoliteSession
from tests.scraping_site import (
    Book,
    Fault,
    Site,
    book_pdf,
    files_in,
    quick_http,
    read_manifest,
    serve,
)

# -- file names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd.pdf", "etc-passwd.pdf"),
        ("..\\..\\Windows\\evil.pdf", "Windows-evil.pdf"),
        ("/absolute/path.pdf", "absolute-path.pdf"),
        ("Ginger the Giraffe (2020)!.PDF", "Ginger-the-Giraffe-2020.pdf"),
        ("Ça va? Émile & Zoë.pdf", "Ca-va-Emile-Zoe.pdf"),
        ("....pdf", "book.pdf"),
        ("CON.pdf", "book-CON.pdf"),
        ("nul", "book-nul.pdf"),
        ("a\x00b\nc.pdf", "a-b-c.pdf"),
    ],
)
def test_safe_file_name(name, expected):
    assert safe_file_name(name) == expected


def test_safe_file_name_is_bounded_and_keeps_the_suffix():
    name = safe_file_name("x" * 500 + ".pdf")
    assert len(name) == MAX_NAME_LENGTH and name.endswith(".pdf")
    assert safe_file_name("", fallback="Hide and Seek") == "Hide-and-Seek.pdf"


def test_file_name_for_decodes_the_url_before_making_it_safe():
    assert file_name_for("https://cdn.x/files/..%2F..%2Fescape.pdf?v=1", "T") == "escape.pdf"
    assert file_name_for("https://cdn.x/files/..%5C..%5Cevil.pdf", "T") == "evil.pdf"
    assert file_name_for("https://cdn.x/files/My%20Book.PDF", "T") == "My-Book.pdf"
    assert file_name_for("https://cdn.x/files/%2E%2E.pdf", "Bully Bill") == "Bully-Bill.pdf"


def test_a_traversal_file_name_stays_inside_the_output_folder(clock, tmp_path):
    evil = Book("evil-book", "Evil Book", "..%2F..%2F..%2Fescape.pdf", book_pdf("Evil Book"))
    out = tmp_path / "deep" / "books"
    with serve(Site(books=[evil])) as site:
        report = scrape(site.url, out, http_config=quick_http(clock))
    assert report.books[0].action == "downloaded"
    row = read_manifest(out)[0]
    assert row["file"] == "escape.pdf" and row["status"] == "complete"
    assert files_in(out) == ["escape.pdf"]
    assert (out / "escape.pdf").read_bytes() == evil.pdf
    # Three levels up from out/ is tmp_path's parent: nothing escaped there or anywhere else.
    assert list(tmp_path.rglob("escape.pdf")) == [out / "escape.pdf"]
    assert not (tmp_path.parent / "escape.pdf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


# -- bodies -------------------------------------------------------------------------------------


def test_a_truncated_body_is_fetched_again_and_stored_whole(site, clock, tmp_path):
    site.faults[site.books[0].pdf_path()] = [Fault.truncate(1000)]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert report.books[0].action == "downloaded"
    assert site.requests_for(site.books[0].pdf_path()) == 2
    row = read_manifest(tmp_path)[0]
    assert row["bytes"] == len(site.books[0].pdf)
    assert (tmp_path / row["file"]).read_bytes() == site.books[0].pdf


def test_a_body_that_is_always_cut_short_fails_and_leaves_nothing(site, clock, tmp_path):
    site.faults[site.books[0].pdf_path()] = [Fault.truncate(1000)] * 3
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert report.books[0].action == "failed"
    assert "breaking off" in report.books[0].error
    row = read_manifest(tmp_path)[0]
    assert row["status"] == "failed" and row["file"] is None and row["sha256"] is None
    assert len(files_in(tmp_path)) == 2 and not list(tmp_path.glob("*.part"))


def test_a_cut_without_content_length_is_caught_by_the_end_marker(site, clock, tmp_path):
    cut = site.books[0].pdf[: len(site.books[0].pdf) // 2]
    site.faults[site.books[0].pdf_path()] = [Fault.content(cut, length=False)] * 3
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert report.books[0].action == "failed" and "end marker" in report.books[0].error
    assert read_manifest(tmp_path)[0]["status"] == "failed"
    assert not list(tmp_path.glob("*.part")) and len(files_in(tmp_path)) == 2


def test_an_html_page_instead_of_a_pdf_is_rejected_then_fetched_next_run(site, clock, tmp_path):
    site.faults[site.books[1].pdf_path()] = [Fault.html_page()]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert report.books[1].action == "failed"
    assert "HTML page" in report.books[1].error
    assert site.requests_for(site.books[1].pdf_path()) == 1  # a wrong body is not retried at once
    rows = read_manifest(tmp_path)
    assert rows[1]["status"] == "failed" and rows[1]["file"] is None
    assert len(files_in(tmp_path)) == 2 and not list(tmp_path.glob("*.part"))

    again = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in again.books] == ["skipped", "downloaded", "skipped"]
    assert (tmp_path / read_manifest(tmp_path)[1]["file"]).read_bytes() == site.books[1].pdf


def test_html_sent_as_application_pdf_is_still_rejected(site, clock, tmp_path):
    site.faults[site.books[0].pdf_path()] = [Fault.content(b"<!DOCTYPE html><html>Access denied</html>")]
    site.faults[site.books[1].pdf_path()] = [Fault.content(b"PK\x03\x04 a zip file" + b"\0" * 2000)]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert "HTML page" in report.books[0].error
    assert report.books[1].error.startswith("not a PDF")
    assert [r["status"] for r in read_manifest(tmp_path)] == ["failed", "failed", "complete"]
    assert len(files_in(tmp_path)) == 1


def test_the_same_pdf_reached_twice_is_stored_once(clock, tmp_path):
    pdf = book_pdf("Ginger the Giraffe")
    books = [
        Book("ginger", "Ginger the Giraffe", "002-GINGER.pdf", pdf),
        Book("ginger-again", "Ginger the Giraffe (reprint)", "002-GINGER-v2.pdf", pdf, "relative"),
        Book("hide", "Hide and Seek", "001-HIDE.pdf", book_pdf("Hide and Seek")),
    ]
    with serve(Site(books=books, per_page=5)) as site:
        report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["downloaded", "duplicate", "downloaded"]
    rows = read_manifest(tmp_path)
    assert [r["status"] for r in rows] == ["complete", "duplicate", "complete"]
    assert rows[1]["duplicate_of"] == rows[0]["file"] == "002-GINGER.pdf"
    assert rows[1]["sha256"] == rows[0]["sha256"] and rows[1]["file"] is None
    assert files_in(tmp_path) == ["001-HIDE.pdf", "002-GINGER.pdf"]


def test_two_books_with_the_same_file_name_do_not_overwrite_each_other(clock, tmp_path):
    books = [
        Book("one", "One", "book.pdf", book_pdf("One"), "cdn"),
        Book("two", "Two", "book.pdf", book_pdf("Two"), "relative"),
    ]
    with serve(Site(books=books)) as site:
        scrape(site.url, tmp_path, http_config=quick_http(clock))
    rows = read_manifest(tmp_path)
    assert [r["file"] for r in rows] == ["book.pdf", "book-2.pdf"]
    assert (tmp_path / "book.pdf").read_bytes() == books[0].pdf
    assert (tmp_path / "book-2.pdf").read_bytes() == books[1].pdf


def test_a_file_we_did_not_write_is_never_overwritten(site, clock, tmp_path):
    name = "002-GINGER-THE-GIRAFFE-Free-Childrens-Book-By-Monkey-Pen.pdf"
    (tmp_path / name).write_bytes(b"the user's own notes")
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert (tmp_path / name).read_bytes() == b"the user's own notes"
    assert read_manifest(tmp_path)[0]["file"] == name.replace(".pdf", "-2.pdf")


def test_interrupted_download_removes_its_part_file(site, clock, tmp_path):
    http = PoliteSession(quick_http(clock))
    part = tmp_path / "book.pdf.part"

    def interrupt(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_pdf(http, f"{site.cdn}{site.books[0].pdf_path()}", part, on_bytes=interrupt)
    assert not part.exists()


def test_oversized_files_are_refused(site, clock, tmp_path):
    http = PoliteSession(quick_http(clock))
    with pytest.raises(DownloadRejected, match="refusing"):
        fetch_pdf(http, f"{site.cdn}{site.books[0].pdf_path()}", tmp_path / "x.part", max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_a_body_without_length_is_cut_at_the_limit_and_leaves_nothing(site, clock, tmp_path):
    # No Content-Length to refuse up front (an endless chunked body looks the same): the limit
    # is counted as the bytes arrive.
    endless = b"%PDF-1.4\n" + b"0" * 200_000
    site.faults[site.books[0].pdf_path()] = [Fault.content(endless, length=False)]
    http = PoliteSession(quick_http(clock))
    with pytest.raises(DownloadRejected, match="file larger than"):
        fetch_pdf(http, f"{site.cdn}{site.books[0].pdf_path()}", tmp_path / "x.part", max_bytes=100_000)
    assert list(tmp_path.iterdir()) == []
