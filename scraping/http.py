"""One polite HTTP client for a whole crawl.

:class:`PoliteSession` wraps a single ``requests.Session`` and adds what a well-behaved crawler
owes a small publisher:

- a clear ``User-Agent`` naming the project and how to reach it;
- ``robots.txt`` obeyed for every host it touches (the standard library's parser; a
  ``Crawl-delay`` longer than ours is honoured);
- a pause of at least ``delay`` seconds between requests (default 1 s);
- urllib3 ``Retry`` on connection errors, read timeouts, 429 and 5xx, with exponential backoff
  and the server's ``Retry-After`` honoured;
- connect and read timeouts on every request.

Waiting goes through ``HttpConfig.sleep`` and ``HttpConfig.clock`` so tests assert the waits
without spending them.
"""

from __future__ import annotations

import contextlib
import logging
import time
import urllib.robotparser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from fairytale import __version__
from fairytale.errors import FairytaleError

log = logging.getLogger(__name__)

USER_AGENT = (
    f"fairytale-books/{__version__} (+https://github.com/fairytale-books/fairytale; "
    "personal research crawler, one request at a time)"
)
"""Sent with every request. Its first word is the token robots.txt rules are matched against."""

RETRY_STATUSES = (429, 500, 502, 503, 504)


class DisallowedByRobots(FairytaleError):
    """robots.txt asks crawlers like ours not to fetch this URL."""


class RobotsUnavailable(FairytaleError):
    """A host's robots.txt could not be read, so (RFC 9309) the host is not crawled this run."""


class RetryAfterTooLong(FairytaleError):
    """The server asked us to come back later than we are willing to wait."""


@dataclass
class HttpConfig:
    """Timeouts, retries and politeness for a crawl; every value has a safe default.

    ``sleep`` and ``clock`` are injectable so tests can check waits without waiting.
    """

    delay: float = 1.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 4
    backoff_factor: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 300.0
    user_agent: str = USER_AGENT
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise FairytaleError(f"The delay between requests cannot be negative (got {self.delay} s)")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise FairytaleError("Timeouts must be positive numbers of seconds")
        if self.retries < 0:
            raise FairytaleError(f"Retries cannot be negative (got {self.retries})")


class _PoliteRetry(Retry):
    """urllib3's ``Retry`` that sleeps through an injected function and caps ``Retry-After``.

    urllib3 sleeps with ``time.sleep`` directly; routing it through ``HttpConfig.sleep`` keeps
    tests instant. A ``Retry-After`` beyond ``max_retry_after`` stops the request instead of
    silently shortening the wait the server asked for.
    """

    def __init__(
        self,
        *args: object,
        sleep: Callable[[float], None] = time.sleep,
        max_retry_after: float = 300.0,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sleep_function = sleep
        self.max_retry_after = max_retry_after

    def new(self, **kw: object) -> _PoliteRetry:
        # Retry.new() rebuilds the object from its own list of arguments; carry ours over.
        retry = super().new(**kw)
        retry.sleep_function = self.sleep_function
        retry.max_retry_after = self.max_retry_after
        return retry

    def sleep_for_retry(self, response) -> bool:  # noqa: ANN001 - urllib3's signature
        retry_after = self.get_retry_after(response)
        if not retry_after:
            return False
        if retry_after > self.max_retry_after:
            raise RetryAfterTooLong(
                f"the server asked us to wait {retry_after:.0f} s before retrying "
                f"(more than {self.max_retry_after:.0f} s); run again later"
            )
        self.sleep_function(retry_after)
        return True

    def _sleep_backoff(self) -> None:
        backoff = self.get_backoff_time()
        if backoff > 0:
            self.sleep_function(backoff)


class PoliteSession:
    """A ``requests.Session`` that obeys robots.txt, paces itself, retries and times out.

    >>> http = PoliteSession(HttpConfig(delay=1.0))            # doctest: +SKIP
    >>> with http.request("https://monkeypen.com/robots.txt") as response:   # doctest: +SKIP
    ...     print(response.status_code)
    """

    def __init__(self, config: HttpConfig | None = None) -> None:
        self.config = config or HttpConfig()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = self.config.user_agent
        retry = _PoliteRetry(
            total=self.config.retries,
            connect=self.config.retries,
            read=self.config.retries,
            status=self.config.retries,
            other=0,
            allowed_methods=frozenset({"GET", "HEAD"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.config.backoff_factor,
            backoff_max=self.config.backoff_max,
            respect_retry_after_header=True,
            # The last 429/5xx response comes back to the caller, which reports its status.
            raise_on_status=False,
            sleep=self.config.sleep,
            max_retry_after=self.config.max_retry_after,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._robots: dict[str, urllib.robotparser.RobotFileParser] = {}
        self._robots_problems: dict[str, str] = {}
        self._last_done: float | None = None
        self.requests_made = 0

    # -- politeness -------------------------------------------------------------------------

    def allowed(self, url: str) -> bool:
        """Whether robots.txt of ``url``'s host lets this crawler fetch it."""
        return self._robots_for(url).can_fetch(self.config.user_agent, url)

    def _robots_for(self, url: str) -> urllib.robotparser.RobotFileParser:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            self._robots[origin] = self._fetch_robots(origin)
        return self._robots[origin]

    def _fetch_robots(self, origin: str) -> urllib.robotparser.RobotFileParser:
        # RFC 9309: a robots.txt that does not exist (4xx) allows everything; one that cannot
        # be read (5xx, network error) means "do not crawl".
        parser = urllib.robotparser.RobotFileParser(f"{origin}/robots.txt")
        try:
            with self._send(f"{origin}/robots.txt") as response:
                status, text = response.status_code, response.text
        except (requests.RequestException, RetryAfterTooLong) as exc:
            self._robots_problems[origin] = describe_error(exc, self)
            parser.disallow_all = True
            return parser
        if status >= 500:
            self._robots_problems[origin] = f"HTTP {status}"
            parser.disallow_all = True
        elif status >= 400:
            parser.allow_all = True
        else:
            parser.parse(text.splitlines())
        return parser

    def _wait_turn(self, url: str) -> None:
        gap = self.config.delay
        parser = self._robots.get("{0.scheme}://{0.netloc}".format(urlsplit(url)))
        if parser is not None:
            crawl_delay = parser.crawl_delay(self.config.user_agent)
            if crawl_delay:
                gap = max(gap, float(crawl_delay))
        if self._last_done is not None and gap > 0:
            remaining = gap - (self.config.clock() - self._last_done)
            if remaining > 0:
                self.config.sleep(remaining)

    # -- requests ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def request(self, url: str, *, stream: bool = False) -> Iterator[requests.Response]:
        """GET ``url`` politely; yields the response and closes it afterwards.

        Raises :class:`DisallowedByRobots` when robots.txt forbids the URL,
        :class:`RobotsUnavailable` when the host's robots.txt cannot be read, and the usual
        ``requests`` exceptions when the server cannot be reached after the retries. The pause
        before the next request counts from when this one is closed, so a long download is
        followed by the full delay too.
        """
        if not self.allowed(url):
            parts = urlsplit(url)
            problem = self._robots_problems.get(f"{parts.scheme}://{parts.netloc}")
            if problem:
                raise RobotsUnavailable(f"cannot read {parts.scheme}://{parts.netloc}/robots.txt ({problem}), so not crawling that host")
            raise DisallowedByRobots(f"robots.txt of {parts.netloc} disallows {url}")
        with self._send(url, stream=stream) as response:
            yield response

    @contextlib.contextmanager
    def _send(self, url: str, *, stream: bool = False) -> Iterator[requests.Response]:
        self._wait_turn(url)
        try:
            self.requests_made += 1
            response = self.session.get(
                url, stream=stream, timeout=(self.config.connect_timeout, self.config.read_timeout)
            )
            try:
                yield response
            finally:
                response.close()
        finally:
            self._last_done = self.config.clock()

    def get_text(self, url: str) -> tuple[str, str]:
        """GET an HTML page; returns ``(final_url, text)`` after redirects.

        Raises ``requests.HTTPError`` for an error status (after the retries).
        """
        with self.request(url) as response:
            response.raise_for_status()
            if "charset" not in response.headers.get("Content-Type", "").lower():
                # requests would assume ISO-8859-1 for text/html; guess from the bytes instead.
                response.encoding = response.apparent_encoding
            return response.url, response.text

    def close(self) -> None:
        """Close the underlying connections."""
        self.session.close()


def describe_error(exc: BaseException, http: PoliteSession | None = None) -> str:
    """One short line for a network or download error (not urllib3's nest of reprs)."""
    text = str(exc)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason or ''}".strip()
    if isinstance(exc, requests.Timeout) or "timed out" in text.lower():
        limit = f" (no answer within {http.config.read_timeout:g} s)" if http else ""
        return f"timed out{limit}"
    if isinstance(exc, requests.ConnectionError):
        lowered = text.lower()
        if "refused" in lowered:
            return "connection refused"
        if "resolve" in lowered or "name or service" in lowered or "nodename" in lowered:
            return "host name not found"
        return "connection failed"
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:200]
