"""Hostile sites and hostile inputs for `fairytale scrape` and `fairytale dataset build`.

Everything runs against local servers on 127.0.0.1 (two ports are two hosts). Redirects must
pass the same checks as links; markup in titles is shown, never interpreted; every body, wait
and list is bounded; outputs never swallow or delete inputs; every refusal is one clear line.
Waits go through the fake clock or sub-second deadlines: no test sleeps.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import scraping.http
import scraping.manifest
import scraping.scope
from fairytale.cli import app
from fairytale.errors import FairytaleError
from scraping import build_dataset, scrape
from scraping.http import BodyTooLarge, PoliteSession
from scraping.manifest import Manifest, Record, Status
from scraping.pages import iter_pages
from scraping.scope import OffSite, SiteScope
from tests.scraping_site import (
    CDN_DIR,
    LISTING,
    Book,
    FakeClock,
    Fault,
    Site,
    book_pdf,
    files_in,
    quick_http,
    read_manifest,
    serve,
)


@pytest.fixture
def other_host():
    """A second server: another port, so another host to the crawler."""
    with serve(Site(books=[])) as running:
        yield running


@pytest.fixture
def quick_cli(monkeypatch):
    """The command builds its own HttpConfig: make it wait through a fake clock."""
    clock = FakeClock()
    monkeypatch.setattr(
        scraping.http,
        "HttpConfig",
        functools.partial(scraping.http.HttpConfig, sleep=clock.sleep, clock=clock, retries=1),
    )
    return clock


def _scrape_cli(*args: str):
    return CliRunner().invoke(app, ["scrape", "--delay", "0", *args])


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


# -- 3.1 redirects pass the same checks as links ----------------------------------------------


def test_a_redirect_to_a_host_the_site_does_not_use_is_refused_unvisited(site, other_host, clock, tmp_path):
    evil = f"{CDN_DIR}/evil.pdf"
    other_host.faults[evil] = [Fault.content(book_pdf("Evil"))]
    site.faults[site.books[0].pdf_path()] = [Fault.redirect(f"{other_host.url}{evil}")]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["failed", "downloaded", "downloaded"]
    assert "neither the book site nor a host it serves PDFs from" in report.books[0].error
    assert other_host.log == []  # not even its robots.txt was asked for
    assert read_manifest(tmp_path)[0]["status"] == "failed"
    assert len(files_in(tmp_path)) == 2


def test_a_redirect_is_checked_against_the_robots_txt_of_its_target(site, other_host, clock, tmp_path):
    # The other host is allowed to serve PDFs (--allow-host, so redirects may go there), but its
    # robots.txt disallows everything: a redirect from another book's PDF must not get around it.
    other_host.robots = "User-agent: *\nDisallow: /\n"
    hidden = f"{CDN_DIR}/hidden.pdf"
    other_host.faults[hidden] = [Fault.content(book_pdf("Hidden"))]
    first = Book(
        "on-the-other-host",
        "On the Other Host",
        "other.pdf",
        b"",
        link=f"{other_host.url}{CDN_DIR}/other.pdf",
    )
    site.books = [first, *site.books[:1]]
    site.faults[site.books[1].pdf_path()] = [Fault.redirect(f"{other_host.url}{hidden}")]
    allowed = ("localhost", f"127.0.0.1:{other_host.port}")
    report = scrape(site.url, tmp_path, http_config=quick_http(clock, allow_hosts=allowed))
    assert [b.action for b in report.books] == ["disallowed", "disallowed"]
    assert "robots.txt" in report.books[1].error and "hidden.pdf" in report.books[1].error
    assert [path for path, _ in other_host.log] == ["/robots.txt"]
    assert files_in(tmp_path) == []


def test_a_redirect_within_the_site_is_followed(site, clock, tmp_path):
    moved = f"/cdn/shop/files/{site.books[0].file}"
    site.faults[site.books[0].pdf_path()] = [Fault.redirect(moved, status=301)]
    site.faults[moved] = [Fault.content(site.books[0].pdf)]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["downloaded"] * 3
    assert (tmp_path / read_manifest(tmp_path)[0]["file"]).read_bytes() == site.books[0].pdf


def test_a_redirect_loop_is_given_up_after_five_hops(site, clock, tmp_path):
    loop = f"{CDN_DIR}/loop.pdf"
    site.faults[site.books[0].pdf_path()] = [Fault.redirect(loop)]
    site.faults[loop] = [Fault.redirect(loop)] * 50
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert report.books[0].action == "failed" and "more than 5 redirects" in report.books[0].error
    assert site.requests_for(loop) == 5


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data.pdf", "http://10.0.0.1/book.pdf"]
)
def test_a_redirect_from_a_loopback_site_to_other_private_addresses_is_refused(target, site, clock, tmp_path):
    site.faults[site.books[0].pdf_path()] = [Fault.redirect(target)]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert report.books[0].action == "failed"
    assert "address" in report.books[0].error  # refused before any connection (the net guard would fail us)


@pytest.mark.parametrize(
    "target", ["file:///etc/passwd", "ftp://127.0.0.1/book.pdf", "data:application/pdf;base64,JVBERi0xLjQK"]
)
def test_a_redirect_to_another_scheme_is_refused(target, site, clock, tmp_path):
    site.faults[site.books[0].pdf_path()] = [Fault.redirect(target)]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["failed", "downloaded", "downloaded"]
    assert report.books[0].error == f"not an http(s) URL: {target}"

@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/book.pdf",
        "http://localhost/book.pdf",
        "http://[::1]/book.pdf",
        "http://2130706433/book.pdf",  # 127.0.0.1 written as a number
        "http://169.254.169.254/latest/",
        "http://10.1.2.3/book.pdf",
        "http://192.168.0.10/book.pdf",
        "http://[fe80::1]/book.pdf",
    ],
)
def test_a_public_site_never_sends_a_request_to_a_local_address(url, clock):
    http = PoliteSession(quick_http(clock), site="https://93.184.215.14")  # a public address: no DNS needed
    with pytest.raises(OffSite, match="address"):
        with http.request(url):
            pass
    assert http.requests_made == 0


def public_names(host: str) -> tuple:
    """A stand-in resolver: every name is one public address, and no query leaves
    the machine."""
    import ipaddress

    return (ipaddress.ip_address("93.184.215.14"),)


def test_a_name_that_rebinds_to_a_local_address_when_connecting_gets_no_request(
    site, clock, tmp_path, monkeypatch
):
    """DNS rebinding: books.test looks public when checked, then resolves to 127.0.0.1 when
    urllib3 connects. The connection is refused before a byte of the request is written."""
    import socket

    monkeypatch.setattr(scraping.scope, "_resolve", public_names)
    lookup = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if host == "books.test":  # no query leaves the machine: the test answers it
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]
        return lookup(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    refused = r"Cannot read the listing page .*refusing books.test: it led to 127.0.0.1"
    with pytest.raises(FairytaleError, match=refused):
        scrape(f"http://books.test:{site.port}", tmp_path, http_config=quick_http(clock))
    assert site.log == []  # connected, found out, closed: no request line was sent
    # https goes through the same check (TLS is set up on the socket that was checked)
    https = PoliteSession(quick_http(clock)).session.get_adapter("https://x").poolmanager
    assert https.pool_classes_by_scheme["https"].ConnectionCls.__name__ == "Checked"

def test_pdfs_come_only_from_the_sites_own_hosts_its_known_cdn_and_allowed_hosts():
    scope = SiteScope("https://monkeypen.com/pages/free-childrens-books", resolve=public_names)
    for url in (
        "https://monkeypen.com/cdn/shop/files/x.pdf",
        "https://www.monkeypen.com/x.pdf",
        "https://files.monkeypen.com/x.pdf",  # a subdomain is the site's own
        "https://cdn.shopify.com/s/files/1/2081/8163/files/x.pdf?v=1",  # its known CDN (site.PDF_HOSTS)
    ):
        assert scope.pdf_host_allowed(url), url
        scope.check_pdf_link(url)
    for url in (
        "https://cdn.example/x.pdf",
        "https://monkeypen.com.evil.example/x.pdf",
        "https://notmonkeypen.com/x.pdf",
        "https://monkeypen.com:8443/x.pdf",  # another port is another host
    ):
        assert scope.pdf_refusal(url) == (
            f"PDF link to {url.split('/')[2]} skipped: not the book site or a host it serves PDFs from "
            f"(--allow-host {url.split('/')[2]} allows it)"
        )
        with pytest.raises(OffSite, match="skipped"):
            scope.check_pdf_link(url)
    other = SiteScope("https://books.example", resolve=public_names)
    assert not other.pdf_host_allowed("https://cdn.shopify.com/x.pdf")  # monkeypen.com's CDN only
    allowed = SiteScope("https://books.example", resolve=public_names, allow_hosts=("example.org", "cdn.test:8443"))
    assert allowed.pdf_host_allowed("https://files.example.org/x.pdf")
    assert allowed.pdf_host_allowed("https://cdn.test:8443/x.pdf")
    assert not allowed.pdf_host_allowed("https://cdn.test/x.pdf")
    allowed.check_redirect("https://files.example.org/x.pdf")  # redirects may go to allowed hosts too


def test_an_allowed_host_still_never_reaches_a_local_address(clock):
    http = PoliteSession(quick_http(clock, allow_hosts=("127.0.0.1", "localhost")), site="https://93.184.215.14")
    with pytest.raises(OffSite, match="loopback address"):
        with http.request("http://127.0.0.1:8000/book.pdf", pdf=True):
            pass
    assert http.requests_made == 0


def test_a_pdf_linked_on_an_unrelated_host_is_skipped_with_one_line(site, other_host, clock, tmp_path):
    other_host.faults[f"{CDN_DIR}/other.pdf"] = [Fault.content(book_pdf("Elsewhere"))]
    elsewhere = Book("elsewhere", "Elsewhere", "other.pdf", b"", link=f"{other_host.url}{CDN_DIR}/other.pdf")
    site.books = [elsewhere, *site.books[:1]]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["no pdf", "downloaded"]
    assert report.books[0].error == (
        f"PDF link to 127.0.0.1:{other_host.port} skipped: not the book site or a host it serves PDFs from "
        f"(--allow-host 127.0.0.1:{other_host.port} allows it)"
    )
    assert other_host.log == []  # not even its robots.txt
    assert read_manifest(tmp_path)[0]["status"] == "no_pdf"
    # Named with --allow-host, the same link is fetched.
    report = scrape(
        site.url, tmp_path, http_config=quick_http(clock, allow_hosts=("localhost", f"127.0.0.1:{other_host.port}"))
    )
    assert [b.action for b in report.books] == ["downloaded", "skipped"]


def test_the_first_allowed_pdf_link_on_a_page_is_taken(site, other_host, clock, tmp_path):
    book = site.books[0]
    page = f"""<html><body><article><div class="article__content">
<a href="{other_host.url}/elsewhere.pdf">Download</a> <a href="{site.cdn}{book.pdf_path()}">Download</a>
</div></article></body></html>""".encode()
    site.faults[f"/blogs/news/{book.handle}"] = [Fault.content(page, "text/html; charset=utf-8")]
    report = scrape(site.url, tmp_path, limit=1, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["downloaded"]
    assert other_host.log == []


def test_cli_allow_host(site, other_host, quick_cli, tmp_path):
    elsewhere = Book("elsewhere", "Elsewhere", "other.pdf", b"", link=f"{other_host.url}{CDN_DIR}/other.pdf")
    other_host.faults[f"{CDN_DIR}/other.pdf"] = [Fault.content(book_pdf("Elsewhere"))]
    site.books = [elsewhere]
    result = _scrape_cli("--base-url", site.url, "--out", str(tmp_path))
    assert result.exit_code == 1
    assert f"Elsewhere: no pdf (PDF link to 127.0.0.1:{other_host.port} skipped" in result.output
    result = _scrape_cli("--base-url", site.url, "--out", str(tmp_path), "--allow-host", f"127.0.0.1:{other_host.port}")
    assert result.exit_code == 0, result.output
    assert "1 downloaded" in result.output
    result = _scrape_cli("--base-url", site.url, "--out", str(tmp_path), "--allow-host", "a b/c")
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert "--allow-host takes a host name" in line


def test_redirects_may_only_go_to_the_site_and_its_pdf_hosts():
    scope = SiteScope("https://monkeypen.com/pages/free-childrens-books", resolve=public_names)
    scope.check_redirect("https://www.monkeypen.com/blogs/news/x")  # www. is the same shop
    with pytest.raises(OffSite, match="neither"):
        scope.check_redirect("https://cdn.example/files/x.pdf")
    scope.add_pdf_host("https://cdn.example/files/y.pdf")
    scope.check_redirect("https://cdn.example/files/x.pdf")
    with pytest.raises(OffSite, match="neither"):
        scope.check_redirect("https://monkeypen.com:8443/x.pdf")  # another port is another host


# -- malformed addresses in what the site sends -------------------------------------------------

BROKEN_URL = "http://[oops/book.pdf"  # urllib.parse raises "Invalid IPv6 URL" for it


def test_a_malformed_pdf_link_on_a_book_page_fails_that_book_only(clock, tmp_path):
    broken = Book("broken-link", "Broken Link", "broken.pdf", book_pdf("Broken"), link=BROKEN_URL)
    with serve(Site(books=[broken, *Site().books[:1]])) as site:
        report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["no pdf", "downloaded"]
    assert [r["status"] for r in read_manifest(tmp_path)] == ["no_pdf", "complete"]


def test_a_malformed_link_on_the_listing_is_ignored(site, clock, tmp_path):
    book = site.books[0]
    page = f"""<html><body><main><a href="{BROKEN_URL}">Broken</a> <a href="http://[::1">Next</a>
<a href="/blogs/news/{book.handle}">{book.title}</a></main></body></html>""".encode()
    site.faults[LISTING] = [Fault.content(page, "text/html; charset=utf-8")]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [(b.title, b.action) for b in report.books] == [(book.title, "downloaded")]


def test_a_redirect_to_a_malformed_address_fails_that_book_only(site, clock, tmp_path):
    site.faults[site.books[0].pdf_path()] = [Fault.redirect(BROKEN_URL)]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["failed", "downloaded", "downloaded"]
    assert "redirected to a malformed address" in report.books[0].error
    assert read_manifest(tmp_path)[0]["status"] == "failed"


# -- 3.2 markup in what the site says ------------------------------------------------------------


def _markup_site() -> Site:
    evil = Book("evil-book", "Evil [/] Book", "evil-book.pdf", book_pdf("Evil"))
    return Site(books=[evil, *Site().books[:1]])


def test_a_title_with_markup_is_shown_and_the_crawl_finishes_every_time(quick_cli, tmp_path):
    with serve(_markup_site()) as site:
        for _ in range(2):  # the first run and every rerun
            result = _scrape_cli("--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path))
            assert result.exit_code == 0, result.output
        assert "2 skipped" in result.output
        result = _scrape_cli("--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path / "dry"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Evil [/] Book" in result.output
    assert [r["title"] for r in read_manifest(tmp_path)] == ["Evil [/] Book", "Ginger the Giraffe"]


def test_a_failing_book_with_markup_in_its_title_is_reported_as_written(quick_cli, tmp_path):
    with serve(_markup_site()) as site:
        site.faults[site.books[0].pdf_path()] = [Fault.html_page()]
        result = _scrape_cli("--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "✗ Evil [/] Book: failed" in result.output
    assert len(_error_lines(result.output)) == 1


def test_an_error_quoting_markup_is_one_plain_line(site, quick_cli, tmp_path):
    result = _scrape_cli("--base-url", f"{site.url}/pages/[/]books", "--out", str(tmp_path))
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert f"{site.url}/pages/[/]books" in line and "HTTP 404" in line
    result = CliRunner().invoke(app, ["dataset", "build", str(tmp_path / "[red]missing")])
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert "[red]missing" in line


def test_dataset_build_shows_titles_and_file_names_with_markup(tmp_path):
    import io

    from rich.console import Console

    books = tmp_path / "books"
    books.mkdir()
    (books / "evil.pdf").write_bytes(book_pdf("Evil"))
    (books / "broken [red] book.pdf").write_bytes(b"%PDF-1.4 not really")
    title = "[bold red]Evil[/] [/] Book"
    Manifest(books / "manifest.jsonl").put(Record(title=title, file="evil.pdf", status=Status.COMPLETE))
    result = CliRunner().invoke(
        app, ["dataset", "build", str(books), "--out", str(tmp_path / "ds"), "--dpi", "72"]
    )
    assert result.exit_code == 0, result.output
    assert "Skipped broken [red] book.pdf" in result.output
    assert title in (tmp_path / "ds" / "README.md").read_text()
    screen = io.StringIO()  # the progress bar on a terminal shows the title as written
    console = Console(file=screen, force_terminal=True, width=200)
    build_dataset(books, tmp_path / "ds2", dpi=72, show_progress=True, console=console)
    assert "Pages · [bold red]Evil[/] [/] Book" in screen.getvalue()


# -- 3.3 the dataset's output never swallows its input ------------------------------------------


def _books_in(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "ginger.pdf").write_bytes(book_pdf("Ginger"))
    return folder


def test_an_output_folder_containing_the_books_is_refused(tmp_path):
    books = _books_in(tmp_path / "parent" / "books")
    result = CliRunner().invoke(
        app, ["dataset", "build", str(books), "--out", str(tmp_path / "parent"), "--force"]
    )
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert "contains the PDF folder" in line
    assert (books / "ginger.pdf").read_bytes() == book_pdf("Ginger")
    assert sorted(os.listdir(tmp_path / "parent")) == ["books"]


def test_out_dot_builds_in_place_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    books = _books_in(tmp_path / "books")
    here = tmp_path / "work" / "dataset"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    for extra in ([], ["--force"]):  # a new build, then a rebuild over our own dataset
        result = CliRunner().invoke(
            app, ["dataset", "build", str(books), "--out", ".", "--dpi", "72", *extra]
        )
        assert result.exit_code == 0, result.output
        assert sorted(os.listdir(here)) == ["README.md", "build.json", "train", "validation"]
        assert os.listdir(tmp_path / "work") == ["dataset"]
    assert Path.cwd() == here  # the folder we stand in was kept, not swapped


def test_a_failed_build_into_an_existing_folder_leaves_it_as_it_was(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "text-only.pdf").write_bytes(book_pdf("Text Only"))
    out = tmp_path / "ds"
    out.mkdir()
    with pytest.raises(FairytaleError, match="No illustrated pages"):
        build_dataset(books, out, dpi=72, rule=scraping.pages.PageRule(min_picture=0.99))
    assert os.listdir(out) == []
    assert sorted(os.listdir(tmp_path)) == ["books", "ds"]


# -- 3.4 every body, wait and list is bounded ----------------------------------------------------


def test_a_gzip_bomb_page_stops_at_the_size_limit(site, clock):
    site.faults[LISTING] = [Fault.gzip_bomb(100)]
    http = PoliteSession(quick_http(clock), site=site.url)
    with pytest.raises(BodyTooLarge, match="larger than 5 MiB"):
        http.get_text(f"{site.url}{LISTING}")


def test_a_gzip_bomb_listing_ends_the_crawl_with_one_line(site, quick_cli, tmp_path):
    site.faults[LISTING] = [Fault.gzip_bomb(100)]
    result = _scrape_cli("--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path))
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert "Cannot read the listing page" in line and "larger than 5 MiB" in line


def test_a_huge_robots_txt_is_read_up_to_its_limit_only(site, clock, tmp_path):
    rules = b"User-agent: *\nDisallow: /cart\n"
    late_rule = b"User-agent: *\nDisallow: /\n"  # beyond the limit: ignored, as Google does
    filler = b"# " + b"x" * 60 + b"\n"
    site.faults["/robots.txt"] = [Fault.huge(rules + filler * 20_000 + late_rule, filler, 64 * 1024 * 1024)]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert site.sent["/robots.txt"] < 16 * 1024 * 1024  # we hung up, far before 64 MB
    assert [b.action for b in report.books] == ["downloaded"] * 3
    assert any("robots.txt is larger than 500 KiB" in warning for warning in report.warnings)


def test_a_trickling_pdf_hits_the_download_deadline(site, clock, tmp_path):
    site.faults[site.books[0].pdf_path()] = [Fault.trickle(10_000_000)]
    start = time.monotonic()
    report = scrape(
        site.url,
        tmp_path,
        http_config=replace(quick_http(clock), clock=time.monotonic, download_deadline=0.5),
    )
    assert time.monotonic() - start < 5  # every byte came within the read timeout; the deadline ended it
    assert report.books[0].action == "failed" and "longer than 0.5 s" in report.books[0].error
    assert site.requests_for(site.books[0].pdf_path()) == 1  # a slow server is not asked again at once
    assert [b.action for b in report.books[1:]] == ["downloaded", "downloaded"]
    assert not any(name.endswith(".part") for name in files_in(tmp_path))


def test_a_trickling_page_hits_the_page_deadline(site, clock):
    site.faults[LISTING] = [Fault.trickle(10_000_000)]
    http = PoliteSession(replace(quick_http(clock), clock=time.monotonic, page_deadline=0.3), site=site.url)
    start = time.monotonic()
    with pytest.raises(FairytaleError, match="longer than 0.3 s"):
        http.get_text(f"{site.url}{LISTING}")
    assert time.monotonic() - start < 5


def test_an_absurd_crawl_delay_is_not_obeyed_silently(site, quick_cli, tmp_path):
    site.robots = "User-agent: *\nCrawl-delay: 100000\n"
    result = _scrape_cli("--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path))
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert "100000 s between requests" in line and "more than the 60 s" in line
    assert not [s for s in quick_cli.sleeps if s > 60]


def test_a_listing_with_ten_thousand_pdf_links_is_cut_with_a_warning(site, clock, tmp_path):
    links = "".join(f'<p><a href="{site.cdn}/files/book-{n}.pdf">Book {n}</a></p>' for n in range(10_000))
    page = f"<html><body><main>{links}</main></body></html>".encode()
    site.faults[LISTING] = [Fault.content(page, "text/html; charset=utf-8")]
    report = scrape(site.url, tmp_path, dry_run=True, http_config=quick_http(clock))
    assert len(report.books) == 200
    assert any("links more than 200 books" in warning for warning in report.warnings)


def test_the_manifest_is_appended_to_not_rewritten_per_book(tmp_path, monkeypatch):
    rewrites = []
    original = scraping.manifest.atomic_write_text
    monkeypatch.setattr(scraping.manifest, "atomic_write_text", lambda *a: (rewrites.append(1), original(*a)))
    manifest = Manifest.load(tmp_path)
    for n in range(2000):
        manifest.put(
            Record(title=f"Book {n}", pdf_url=f"https://x/{n}.pdf", file=f"{n}.pdf", status=Status.COMPLETE)
        )
    manifest.put(Record(title="Book 7, again", pdf_url="https://x/7.pdf", status=Status.FAILED))
    assert len(rewrites) <= 1  # the first write creates the file; every other book is one appended line
    again = Manifest.load(tmp_path)
    assert len(again.records) == 2000
    assert again.get("https://x/7.pdf").title == "Book 7, again"  # the last line of a book wins
    assert list(again.records)[:3] == ["https://x/0.pdf", "https://x/1.pdf", "https://x/2.pdf"]
    again.compact()
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 2000


def test_a_manifest_line_torn_by_a_crash_is_not_appended_to(tmp_path):
    manifest = Manifest.load(tmp_path)
    manifest.put(Record(title="A", pdf_url="https://x/a.pdf", status=Status.FAILED))
    with open(tmp_path / "manifest.jsonl", "a") as handle:
        handle.write('{"title": "B", "pdf_u')  # killed mid-line
    manifest = Manifest.load(tmp_path)
    manifest.put(Record(title="C", pdf_url="https://x/c.pdf", status=Status.FAILED))
    assert [r.title for r in Manifest.load(tmp_path).records.values()] == ["A", "C"]



@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xfe\x00 not UTF-8 \x80\n", b"[" * 100_000 + b"\n", b'{"title": "\xe9t\xe9"}\n'],
    ids=["bytes", "deep-json", "latin-1"],
)
def test_a_corrupt_manifest_line_is_skipped_and_the_run_resumes(garbage, site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    path = tmp_path / "manifest.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + garbage + lines[2])  # the second book's line is damaged
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["skipped", "downloaded", "skipped"]
    assert [r["status"] for r in read_manifest(tmp_path)] == ["complete"] * 3

# -- 3.5 a PDF page too large to render whole -----------------------------------------------------


def _big_page_pdf(inches: float) -> bytes:
    import io

    from reportlab.pdfgen import canvas

    side = inches * 72
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=(side, side), invariant=1)
    pdf.setFillColorRGB(0.2, 0.6, 0.9)
    pdf.rect(0, 0, side, side, stroke=0, fill=1)
    pdf.setFillColorRGB(0.9, 0.3, 0.1)
    pdf.circle(side / 2, side / 2, side / 4, stroke=0, fill=1)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def test_a_huge_page_is_rendered_within_the_pixel_cap(tmp_path):
    path = tmp_path / "poster.pdf"
    path.write_bytes(_big_page_pdf(40))  # 2880 pt: 8.3 million pixels at 72 dpi
    [page] = list(iter_pages(path, 72, max_pixels=1_000_000))
    width, height = page.image.size
    assert width * height <= 1_000_000 and width >= 990
    assert page.scaled_down


def test_a_200_inch_page_is_built_at_a_lower_scale_and_said_so(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "giant.pdf").write_bytes(_big_page_pdf(200))
    result = CliRunner().invoke(
        app, ["dataset", "build", str(books), "--out", str(tmp_path / "ds"), "--dpi", "72", "--keep-covers"]
    )
    assert result.exit_code == 0, result.output
    assert "1 pages were too large to render at 72 dpi" in result.output


# -- 3.10 a read-only output folder ------------------------------------------------------------


@pytest.mark.parametrize("inside", [False, True])
def test_scrape_into_a_read_only_folder_is_one_line_before_any_request(
    inside, read_only_folder, site, quick_cli
):
    out = read_only_folder / "books" if inside else read_only_folder
    result = _scrape_cli("--base-url", site.url, "--allow-host", "localhost", "--out", str(out))
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [line] = _error_lines(result.output)
    assert str(out) in line
    assert site.log == []


def test_a_full_disk_stops_the_crawl_with_one_line_and_keeps_the_finished_books(
    site, quick_cli, tmp_path, monkeypatch
):
    import errno
    import io

    import scraping.download

    opened = []

    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open_part(path, mode="r", *args, **kwargs):
        opened.append(path)
        if len(opened) == 2:  # the second book's .part file
            return FullDisk(path, "wb")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(scraping.download, "open", open_part, raising=False)
    result = _scrape_cli("--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [line] = _error_lines(result.output)
    assert "No space left on device" in line and str(tmp_path) in line
    assert len(opened) == 2  # the crawl stopped: no third book was tried on a full disk
    assert [r["status"] for r in read_manifest(tmp_path)] == ["complete"]
    assert not list(tmp_path.glob("*.part"))

# -- 3.13 a book robots.txt keeps out is a missing book -----------------------------------------


def test_robots_disallowing_every_book_exits_non_zero(site, quick_cli, tmp_path):
    site.robots = "User-agent: *\nDisallow: /blogs/\n"
    result = _scrape_cli("--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path))
    assert result.exit_code == 1
    [line] = _error_lines(result.output)
    assert "3 of 3 books were not downloaded" in line and "disallowed by the site's robots.txt" in line
    assert [r["status"] for r in read_manifest(tmp_path)] == ["disallowed"] * 3
