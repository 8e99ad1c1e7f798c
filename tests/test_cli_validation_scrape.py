"""`fairytale scrape`: a bad --delay, --timeout or --base-url is one line and a non-zero exit
before any request is sent (sending one fails the test)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import scraping.crawl
from fairytale.cli import app
from fairytale.errors import FairytaleError
from scraping.crawl import _check_base_url
from scraping.http import HttpConfig


@pytest.fixture(autouse=True)
def _no_requests(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a request was about to be sent for a refused option")

    monkeypatch.setattr(scraping.crawl, "PoliteSession", refuse)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delay", "inf"], "--delay must be a number of seconds between 0 and 600"),
        (["--delay", "1e308"], "--delay must be a number of seconds between 0 and 600"),
        (["--delay", "nan"], "--delay must be a number of seconds between 0 and 600"),
        (["--delay", "-1"], "delay between requests cannot be negative"),
        (["--timeout", "nan"], "--timeout must be a positive number of seconds, at most 600"),
        (["--timeout", "inf"], "--timeout must be a positive number of seconds, at most 600"),
        (["--timeout", "0"], "--timeout must be a positive number of seconds"),
        (["--base-url", "http://[::1"], "--base-url must be an http(s) URL"),
        (["--base-url", "http://127.0.0.1:99999/"], "--base-url must be an http(s) URL"),
        (["--base-url", "http://127.0.0.1:port/"], "--base-url must be an http(s) URL"),
        (["--base-url", "http://:80/"], "--base-url must be an http(s) URL"),
        (["--base-url", "ftp://127.0.0.1/"], "--base-url must be an http(s) URL"),
    ],
)
def test_bad_options_are_one_line_before_any_request(tmp_path, args, message):
    result = CliRunner().invoke(app, ["scrape", "--out", str(tmp_path / "books"), *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert message in line


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -float("inf"), 1e308])
def test_http_config_refuses_delays_that_are_not_finite_seconds(delay):
    with pytest.raises(FairytaleError, match="delay"):
        HttpConfig(delay=delay)


def test_good_values_pass():
    for delay in (0, 1, 600):
        HttpConfig(delay=delay, read_timeout=600)
    assert _check_base_url("http://[::1]:8000/").startswith("http://[::1]:8000/")
    assert _check_base_url("https://monkeypen.com").startswith("https://monkeypen.com/")
