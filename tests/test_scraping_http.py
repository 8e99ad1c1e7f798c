"""Politeness and robust HTTP against the local fixture site: robots.txt, User-Agent, delays,
Retry-After, 5xx retries and hanging servers. Waits go through a fake clock: no test sleeps."""

from __future__ import annotations

import time

import pytest

from fairytale.errors import FairytaleError
from scraping import scrape
from scraping.crawl import _check_base_url
from scraping.http import USER_AGENT, HttpConfig
from tests.scraping_site import (
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


def _pdf_path(site: Site, index: int = 0) -> str:
    return site.books[index].pdf_path()


def test_every_request_carries_our_user_agent_and_robots_is_read_once_per_host(site, clock, tmp_path):
    scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert {agent for _, agent in site.log} == {USER_AGENT}
    assert USER_AGENT.startswith("fairytale-books/")
    # Two hosts (the shop and its "CDN" at localhost): one robots.txt request each.
    assert site.requests_for("/robots.txt") == 2


def test_robots_disallowed_book_is_recorded_and_never_fetched(clock, tmp_path):
    secret = Book("members-only", "Members Only", "secret.pdf", book_pdf("Members Only"))
    with serve(Site(books=[*Site().books[:1], secret])) as site:
        report = scrape(site.url, tmp_path, http_config=quick_http(clock))
        assert site.requests_for("/blogs/news/members-only") == 0
        assert site.requests_for(secret.pdf_path()) == 0
    assert [b.action for b in report.books] == ["downloaded", "disallowed"]
    rows = read_manifest(tmp_path)
    assert [r["status"] for r in rows] == ["complete", "disallowed"]
    assert "robots.txt" in rows[1]["error"]
    assert files_in(tmp_path) == [rows[0]["file"]]


@pytest.mark.parametrize(
    ("robots", "kept_out"),
    [
        # The longest matching rule wins, whatever the order (RFC 9309, 2.2.2).
        ("User-agent: *\nAllow: /\nDisallow: /blogs/news/ginger\n", 0),
        # "*" matches any characters ...
        ("User-agent: *\nDisallow: /blogs/*seek*\n", 1),
        # ... and "$" anchors the end: the third book's PDF is linked as ".PDF" with no query.
        ("User-agent: *\nDisallow: /*.PDF$\n", 2),
        # A byte order mark (as Windows editors write it) is not part of the first line.
        ("\ufeffUser-agent: *\nDisallow: /blogs/news/ginger\n", 0),
    ],
    ids=["longest-match", "wildcard", "end-anchor", "byte-order-mark"],
)
def test_robots_rules_are_read_as_rfc_9309_says(robots, kept_out, site, clock, tmp_path):
    site.robots = robots
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    expected = ["downloaded"] * 3
    expected[kept_out] = "disallowed"
    assert [b.action for b in report.books] == expected
    book = site.books[kept_out]
    assert site.requests_for(book.pdf_path()) == 0
    assert files_in(tmp_path) == sorted(r["file"] for r in read_manifest(tmp_path) if r["file"])

def test_robots_disallowing_the_listing_stops_with_a_clear_error(site, clock, tmp_path):
    site.robots = "User-agent: fairytale-books\nDisallow: /pages/\n"
    with pytest.raises(FairytaleError, match="robots.txt .* disallows"):
        scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert site.requests_for("/pages/free-childrens-books") == 0


# 429 "too many requests" is no invitation to crawl (Google reads it as a server error too)
@pytest.mark.parametrize("status", [500, 429])
def test_unreadable_robots_means_do_not_crawl(status, site, clock, tmp_path):
    site.faults["/robots.txt"] = [Fault.error(status)] * 3
    with pytest.raises(FairytaleError, match=f"Cannot read the listing page .*HTTP {status}"):
        scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert site.requests_for("/pages/free-childrens-books") == 0


def test_delay_between_requests_is_waited_through_the_injected_sleep(site, clock, tmp_path):
    report = scrape(site.url, tmp_path, http_config=quick_http(clock, delay=1.5))
    # The fake clock only moves when we sleep, so every gap needs the full delay.
    # robots x2, listing x2, then page + PDF for each of the three books.
    assert report.requests == len(site.log) == 10
    assert clock.sleeps == [1.5] * (report.requests - 1)


@pytest.mark.parametrize(
    "fault",
    [Fault.error(503), Fault.error(429, {"Retry-After": "0"}), Fault.hang()],
    ids=["5xx", "retry-after-0", "timeout"],
)
def test_a_retry_waits_the_delay_too(fault, site, clock, tmp_path):
    # urllib3 retries the first failure at once (its backoff starts at the second): a server
    # already in trouble would get two requests back to back.
    site.faults[_pdf_path(site)] = [fault]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock, delay=1.5))
    assert [b.action for b in report.books] == ["downloaded"] * 3
    assert len(site.log) == report.requests + 1  # one retry, inside urllib3
    assert len(clock.sleeps) == len(site.log) - 1 and min(clock.sleeps) >= 1.5

def test_delay_zero_never_sleeps(site, clock, tmp_path):
    scrape(site.url, tmp_path, delay=0, http_config=quick_http(clock, delay=5))
    assert clock.sleeps == []


# The standard library's parser reads whole seconds only, and ignored "2.5".
@pytest.mark.parametrize(("written", "waited"), [("4", 4.0), ("2.5", 2.5), ("1.5 # be gentle", 1.5)])
def test_a_longer_crawl_delay_in_robots_is_honoured(written, waited, site, clock, tmp_path):
    site.robots = f"User-agent: *\nCrawl-delay: {written}\nDisallow: /cart\n"
    scrape(site.url, tmp_path, http_config=quick_http(clock, delay=1.0))
    assert clock.sleeps and set(clock.sleeps) <= {1.0, waited}
    assert waited in clock.sleeps


def test_429_with_retry_after_is_waited_out_then_fetched(site, clock, tmp_path):
    site.faults[_pdf_path(site)] = [Fault.error(429, {"Retry-After": "7"})]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert 7.0 in clock.sleeps  # asked for, and waited (through the fake clock)
    assert site.requests_for(_pdf_path(site)) == 2
    assert [b.action for b in report.books] == ["downloaded"] * 3
    row = read_manifest(tmp_path)[0]
    assert row["status"] == "complete"
    assert (tmp_path / row["file"]).read_bytes() == site.books[0].pdf


def test_retry_after_beyond_our_patience_fails_that_book_only(site, clock, tmp_path):
    site.faults[_pdf_path(site)] = [Fault.error(429, {"Retry-After": "3600"})]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock, max_retry_after=60))
    assert 3600.0 not in clock.sleeps
    assert [b.action for b in report.books] == ["failed", "downloaded", "downloaded"]
    row = read_manifest(tmp_path)[0]
    assert row["status"] == "failed" and "3600" in row["error"]
    assert row["file"] is None and len(files_in(tmp_path)) == 2


def test_500_then_success_is_retried_with_backoff(site, clock, tmp_path):
    site.faults[_pdf_path(site)] = [Fault.error(500), Fault.error(502)]
    site.faults[f"/blogs/news/{site.books[1].handle}"] = [Fault.error(503)]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in report.books] == ["downloaded"] * 3
    assert site.requests_for(_pdf_path(site)) == 3
    assert 1.0 in clock.sleeps  # urllib3's exponential backoff: 0.5 * 2 for the second retry
    assert [r["status"] for r in read_manifest(tmp_path)] == ["complete"] * 3


def test_a_server_error_that_persists_fails_the_book_and_the_next_run_gets_it(site, clock, tmp_path):
    site.faults[_pdf_path(site)] = [Fault.error(503)] * 3  # first try + 2 retries
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert report.books[0].action == "failed" and report.books[0].error.startswith("HTTP 503")
    assert read_manifest(tmp_path)[0]["status"] == "failed"
    assert len(files_in(tmp_path)) == 2

    again = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert [b.action for b in again.books] == ["downloaded", "skipped", "skipped"]
    assert [r["status"] for r in read_manifest(tmp_path)] == ["complete"] * 3


def test_a_hanging_connection_times_out_and_is_retried(site, clock, tmp_path):
    site.faults[_pdf_path(site)] = [Fault.hang()]
    start = time.perf_counter()
    report = scrape(site.url, tmp_path, http_config=quick_http(clock, read_timeout=0.2))
    assert time.perf_counter() - start < 5  # a 0.2 s timeout, not the server's 10 s hang
    assert site.requests_for(_pdf_path(site)) == 2
    assert [b.action for b in report.books] == ["downloaded"] * 3
    row = read_manifest(tmp_path)[0]
    assert row["status"] == "complete" and (tmp_path / row["file"]).read_bytes() == site.books[0].pdf


def test_a_server_that_never_answers_fails_that_book_and_leaves_no_part_file(site, clock, tmp_path):
    site.faults[_pdf_path(site)] = [Fault.hang()] * 3
    report = scrape(site.url, tmp_path, http_config=quick_http(clock, read_timeout=0.2))
    assert report.books[0].action == "failed"
    assert report.books[0].error.startswith("timed out")
    assert [b.action for b in report.books[1:]] == ["downloaded", "downloaded"]
    assert read_manifest(tmp_path)[0]["status"] == "failed"
    assert not any(name.endswith(".part") for name in files_in(tmp_path))
    assert len(files_in(tmp_path)) == 2


@pytest.mark.parametrize("status", [300, 302, 304])
def test_a_page_answering_3xx_without_a_location_is_an_error_not_a_page(status, site, clock, tmp_path):
    # Without a Location there is nothing to follow; its body is no listing (nor a book page).
    site.faults["/pages/free-childrens-books"] = [Fault.error(status)]
    with pytest.raises(FairytaleError, match=f"Cannot read the listing page .*: HTTP {status}"):
        scrape(site.url, tmp_path, http_config=quick_http(clock))
    site.faults[f"/blogs/news/{site.books[0].handle}"] = [Fault.error(status)]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock))
    assert report.books[0].action == "failed" and report.books[0].error.startswith(f"HTTP {status}")

@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -float("inf"), 1e308])
def test_http_config_refuses_delays_that_are_not_finite_seconds(delay):
    with pytest.raises(FairytaleError, match="delay"):
        HttpConfig(delay=delay)


def test_good_delays_timeouts_and_base_urls_pass():
    for delay in (0, 1, 600):
        HttpConfig(delay=delay, read_timeout=600)
    assert _check_base_url("http://[::1]:8000/").startswith("http://[::1]:8000/")
    assert _check_base_url("https://monkeypen.com").startswith("https://monkeypen.com/")


@pytest.mark.parametrize(
    ("rules", "waited", "source"),
    [
        ("Request-rate: 1/5\n", 5.0, "Request-rate: 1/5s"),
        ("Request-rate: 2/3s\n", 1.5, "Request-rate: 2/3s"),
        ("Request-rate: 1/5\nCrawl-delay: 2\n", 5.0, "Request-rate: 1/5s"),  # the slower wins
        ("Request-rate: 1/2\nCrawl-delay: 4\n", 4.0, "Crawl-delay: 4"),
    ],
)
def test_a_request_rate_in_robots_is_honoured_and_said(rules, waited, source, site, clock, tmp_path):
    site.robots = f"User-agent: *\n{rules}Disallow: /cart\n"
    report = scrape(site.url, tmp_path, http_config=quick_http(clock, delay=1.0))
    # Every gap before a request to the site's own host (127.0.0.1) is the pause robots.txt
    # asked for; the CDN host (localhost) has the same robots.txt.
    assert clock.sleeps and set(clock.sleeps) <= {1.0, waited} and waited in clock.sleeps
    assert f"127.0.0.1:{site.port}: {waited:g} s between requests, as its robots.txt asks ({source})" in report.pace


def test_our_own_delay_still_applies_when_robots_asks_for_less(site, clock, tmp_path):
    site.robots = "User-agent: *\nRequest-rate: 10/1\nDisallow: /cart\n"  # 0.1 s
    report = scrape(site.url, tmp_path, http_config=quick_http(clock, delay=1.5))
    assert clock.sleeps == [1.5] * (report.requests - 1)
    assert report.pace == []


def test_a_request_rate_slower_than_our_patience_stops_that_host(site, clock, tmp_path):
    site.robots = "User-agent: *\nRequest-rate: 1/120\n"
    with pytest.raises(FairytaleError, match=r"asks for 120 s between requests \(Request-rate: 1/120s\)"):
        scrape(site.url, tmp_path, http_config=quick_http(clock, delay=1.0))
    assert clock.sleeps == []


def test_the_cli_says_the_pause_in_use(site, tmp_path, monkeypatch):
    import functools

    from typer.testing import CliRunner

    import scraping.http
    from fairytale.cli import app

    clock = FakeClock()
    monkeypatch.setattr(scraping.http, "HttpConfig", functools.partial(HttpConfig, sleep=clock.sleep, clock=clock, retries=1))
    site.robots = "User-agent: *\nRequest-rate: 1/5\n"
    result = CliRunner().invoke(app, ["scrape", "--base-url", site.url, "--allow-host", "localhost", "--out", str(tmp_path), "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert f"Pace: 127.0.0.1:{site.port}: 5 s between requests" in result.output


def test_a_retry_keeps_the_pause_robots_asked_for(site, clock, tmp_path):
    site.robots = "User-agent: *\nRequest-rate: 1/5\n"
    site.faults[_pdf_path(site)] = [Fault.error(503)]
    report = scrape(site.url, tmp_path, http_config=quick_http(clock, delay=1.0))
    assert [b.action for b in report.books] == ["downloaded"] * 3
    assert len(site.log) == report.requests + 1  # one retry, inside urllib3
    # One sleep before each request but the first; the 5 s asked for before each, the retry's
    # included, except before a host's own robots.txt (its rules are not known yet).
    assert len(clock.sleeps) == len(site.log) - 1
    waits = [(path.split("?")[0], wait) for (path, _), wait in zip(site.log[1:], clock.sleeps, strict=True)]
    assert {wait for path, wait in waits if path != "/robots.txt"} == {5.0}
    assert [path for path, _ in waits].count(_pdf_path(site)) == 2
