"""One polite HTTP client for a whole crawl.

:class:`PoliteSession` wraps a single ``requests.Session`` and adds what a well-behaved crawler
owes a small publisher:

- a clear ``User-Agent`` naming the project and how to reach it;
- ``robots.txt`` obeyed for every host it touches, as RFC 9309 reads it (Protego, Scrapy's
  parser: ``*`` and ``$`` in paths, the longest matching rule wins; the standard library's parser
  knows neither and takes the first rule that matches); a ``Crawl-delay`` or ``Request-rate``
  asking for a longer pause than ours is honoured (the slowest of the three wins) and reported;
- a pause of at least ``delay`` seconds between requests (default 1 s), or the longer one a
  host's robots.txt asks for, retries included;
- urllib3 ``Retry`` on connection errors, read timeouts, 429 and 5xx, with exponential backoff
  and the server's ``Retry-After`` honoured;
- connect and read timeouts on every request, and an overall deadline and size limit on
  every body (a server that trickles or a gzip bomb cannot hold the crawl);
- redirects followed hop by hop (at most :data:`MAX_REDIRECTS`), each hop checked like a link:
  it must stay on the book site or a host the site serves its PDFs from, pass robots.txt, and
  never lead to a loopback, link-local or private address unless the site itself is on one;
- every new connection checked once more for the address it really reached, before the request
  is sent, so a name that resolves to a public address for the check and to ``127.0.0.1`` for the
  connection (DNS rebinding) is refused too. Through a proxy (``HTTPS_PROXY``…) the proxy
  resolves names and this last check does not apply.

Waiting goes through ``HttpConfig.sleep`` and ``HttpConfig.clock`` so tests assert the waits
without spending them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from bs4 import UnicodeDammit
from protego import Protego
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from fairytale import __version__
from fairytale.errors import FairytaleError
from scraping.scope import OffSite, SiteScope, parse_allowed_host

log = logging.getLogger(__name__)

USER_AGENT = (
    f"fairytale-books/{__version__} (+https://github.com/fairytale-books/fairytale; "
    "personal research crawler, one request at a time)"
)
"""Sent with every request. Its first word is the token robots.txt rules are matched against."""

RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_REDIRECTS = 5
"""Hops a request may take before it is given up (robots.txt: RFC 9309 asks for at least five)."""
MAX_DELAY = 600.0
"""The longest ``delay`` between requests (``--delay``): longer is no crawl at all."""
MAX_TIMEOUT = 600.0
"""The longest connect or read timeout (``--timeout``): a server silent this long is not answering."""
MAX_ROBOTS_BYTES = 500 * 1024
"""robots.txt beyond this size is ignored, as Google does (its documented limit is 500 KiB)."""
MAX_PAGE_BYTES = 5 * 1024 * 1024
"""An HTML page larger than this (after decompression) is refused; Monkey Pen's pages are ~200 KB."""
BODY_CHUNK = 64 * 1024


DISALLOW_ALL = "User-agent: *\nDisallow: /\n"
"""The robots.txt a host is held to when its own cannot be read (RFC 9309, 2.3.1.4)."""


class DisallowedByRobots(FairytaleError):
    """robots.txt asks crawlers like ours not to fetch this URL."""


class RobotsUnavailable(FairytaleError):
    """A host's robots.txt could not be read, so (RFC 9309) the host is not crawled this run."""


class RetryAfterTooLong(FairytaleError):
    """The server asked us to come back later than we are willing to wait."""


class CrawlDelayTooLong(DisallowedByRobots):
    """robots.txt asks for more time between requests than we are willing to wait."""


class BodyTooLarge(FairytaleError):
    """A body grew past its size limit (counted after decompression)."""


class BodyTooSlow(FairytaleError):
    """A body did not arrive within its overall deadline."""


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
    max_crawl_delay: float = 60.0
    """A robots.txt Crawl-delay (or Request-rate pause) above this is not waited out: the host is not crawled."""
    page_deadline: float = 120.0
    """Seconds a whole HTML page or robots.txt may take to arrive, however it trickles."""
    download_deadline: float = 1800.0
    """Seconds a whole PDF may take to arrive (500 MB at about 300 kB/s)."""
    max_page_bytes: int = MAX_PAGE_BYTES
    max_robots_bytes: int = MAX_ROBOTS_BYTES
    user_agent: str = USER_AGENT
    allow_hosts: tuple[str, ...] = ()
    """Hosts PDFs may also come from (``--allow-host``), besides the site's own and its known
    CDN (:mod:`scraping.scope` has the rule)."""
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        # nan passes every comparison below unnoticed (and would remove the wait), inf
        # overflows time.sleep: numbers of seconds must be finite.
        if self.delay < 0:
            raise FairytaleError(f"The delay between requests cannot be negative (got {self.delay} s)")
        if not (math.isfinite(self.delay) and self.delay <= MAX_DELAY):
            raise FairytaleError(
                f"--delay must be a number of seconds between 0 and {MAX_DELAY:g}, not {self.delay}"
            )
        if not (math.isfinite(self.read_timeout) and 0 < self.read_timeout <= MAX_TIMEOUT):
            raise FairytaleError(
                f"--timeout must be a positive number of seconds, at most {MAX_TIMEOUT:g} (got {self.read_timeout})"
            )
        if not (math.isfinite(self.connect_timeout) and 0 < self.connect_timeout <= MAX_TIMEOUT):
            raise FairytaleError(f"Timeouts must be positive numbers of seconds, at most {MAX_TIMEOUT:g}")
        seconds = (self.backoff_factor, self.backoff_max, self.max_retry_after, self.max_crawl_delay)
        if not all(math.isfinite(value) and value >= 0 for value in seconds):
            raise FairytaleError("Backoff times and caps must be finite numbers of seconds, 0 or more")
        if not all(math.isfinite(value) for value in (self.page_deadline, self.download_deadline)):
            raise FairytaleError("Deadlines must be finite numbers of seconds")
        if self.retries < 0:
            raise FairytaleError(f"Retries cannot be negative (got {self.retries})")
        if min(self.max_crawl_delay, self.page_deadline, self.download_deadline) <= 0:
            raise FairytaleError("Deadlines and the Crawl-delay cap must be positive numbers of seconds")
        self.allow_hosts = tuple(self.allow_hosts)
        for entry in self.allow_hosts:
            parse_allowed_host(entry)  # one clear line for a bad --allow-host, before any request


class _PoliteRetry(Retry):
    """urllib3's ``Retry`` that sleeps through an injected function, caps ``Retry-After`` and
    never retries sooner than ``min_wait`` (the crawl's delay between requests).

    urllib3 sleeps with ``time.sleep`` directly; routing it through ``HttpConfig.sleep`` keeps
    tests instant. A ``Retry-After`` beyond ``max_retry_after`` stops the request instead of
    silently shortening the wait the server asked for. urllib3's backoff is 0 before the first
    retry, which would send a server that just failed a second request at once.
    """

    def __init__(
        self,
        *args: object,
        sleep: Callable[[float], None] = time.sleep,
        max_retry_after: float = 300.0,
        min_wait: float = 0.0,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sleep_function = sleep
        self.max_retry_after = max_retry_after
        self.min_wait = min_wait

    def new(self, **kw: object) -> _PoliteRetry:
        # Retry.new() rebuilds the object from its own list of arguments; carry ours over.
        retry = super().new(**kw)
        retry.sleep_function = self.sleep_function
        retry.max_retry_after = self.max_retry_after
        retry.min_wait = self.min_wait
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
        self.sleep_function(max(retry_after, self.min_wait))
        return True

    def _sleep_backoff(self) -> None:
        backoff = max(self.get_backoff_time(), self.min_wait)
        if backoff > 0:
            self.sleep_function(backoff)


PeerCheck = Callable[[str, str], None]
"""Called with (host name, connected address) for every new connection; raises to refuse it."""


def _checked_connection(base: type[HTTPConnection], check: PeerCheck) -> type[HTTPConnection]:
    class Checked(base):  # type: ignore[valid-type, misc]
        def _new_conn(self):  # noqa: ANN202 - urllib3's signature
            sock = super()._new_conn()
            try:
                check(self.host, str(sock.getpeername()[0]))
            except BaseException:
                sock.close()
                raise
            return sock

    return Checked


class _PeerCheckingAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections call ``check`` with the address they reached, right
    after connecting and before the request is written (urllib3 resolves the name itself, so
    this is the only place the address that is really used can be seen)."""

    def __init__(self, check: PeerCheck, **kwargs: object) -> None:
        self._peer_check = check  # set first: HTTPAdapter.__init__ calls init_poolmanager
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        pools = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}
        connections = {"http": HTTPConnection, "https": HTTPSConnection}
        self.poolmanager.pool_classes_by_scheme = {
            scheme: type(
                f"Checked{pool.__name__}",
                (pool,),
                {"ConnectionCls": _checked_connection(connections[scheme], self._peer_check)},
            )
            for scheme, pool in pools.items()
        }


class PoliteSession:
    """A ``requests.Session`` that obeys robots.txt, paces itself, retries and times out.

    ``site`` is the book site's URL (the first URL requested when not given); it decides where
    links and redirects may lead (:class:`SiteScope`).

    >>> http = PoliteSession(HttpConfig(delay=1.0), site="https://monkeypen.com")   # doctest: +SKIP
    >>> with http.request("https://monkeypen.com/robots.txt") as response:         # doctest: +SKIP
    ...     print(response.status_code)
    """

    def __init__(self, config: HttpConfig | None = None, *, site: str | None = None) -> None:
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
            min_wait=self.config.delay,
        )
        self._retry = retry
        adapter = _PeerCheckingAdapter(self._check_peer, max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.scope = SiteScope(site, allow_hosts=self.config.allow_hosts) if site else None
        self._robots: dict[str, Protego] = {}
        self._robots_problems: dict[str, str] = {}
        self._last_done: float | None = None
        self.requests_made = 0
        self.notes: list[str] = []
        """Things the user should know (a robots.txt cut at its size limit…), once each."""
        self.pace: list[str] = []
        """The pause each host's robots.txt set, when longer than ``delay`` (one line per host)."""
        self._paced: set[str] = set()

    # -- politeness -------------------------------------------------------------------------

    def allowed(self, url: str) -> bool:
        """Whether robots.txt of ``url``'s host lets this crawler fetch it."""
        return self._robots_for(url).can_fetch(url, self.config.user_agent)

    def _robots_for(self, url: str) -> Protego:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            self._robots[origin] = self._fetch_robots(origin)
        return self._robots[origin]

    def _fetch_robots(self, origin: str) -> Protego:
        # RFC 9309: a robots.txt that does not exist (4xx) allows everything; one that cannot
        # be read (5xx, network error) means "do not crawl". 429 is the server asking for less,
        # not saying there is no robots.txt: it counts as unreadable (as Google treats it).
        try:
            with self._follow(f"{origin}/robots.txt", check_robots=False) as response:
                status = response.status_code
                body = b""
                if status < 400:
                    body, cut = self._read_capped(response, self.config.max_robots_bytes, self.config.page_deadline)
                    if cut:
                        self._note(
                            f"{origin}/robots.txt is larger than {self.config.max_robots_bytes // 1024} KiB; "
                            "only its beginning was read (as Google does)"
                        )
        except (requests.RequestException, RetryAfterTooLong, OffSite, BodyTooSlow) as exc:
            self._robots_problems[origin] = describe_error(exc, self)
            return Protego.parse(DISALLOW_ALL)
        if status >= 500 or status == 429:
            self._robots_problems[origin] = f"HTTP {status}"
            return Protego.parse(DISALLOW_ALL)
        if status >= 400:
            return Protego.parse("")
        # utf-8-sig: a byte order mark would otherwise glue itself to the first "User-agent".
        return Protego.parse(body.decode("utf-8-sig", errors="replace"))

    def _robots_gap(self, url: str) -> tuple[float, str]:
        """The pause robots.txt of ``url``'s host asks for, and where it says so.

        ``Crawl-delay: 4`` asks for 4 s between requests, ``Request-rate: 1/5`` (one request per
        5 s) for 5 s; when both are given the slower wins. A Request-rate's time window
        (``1/5 0800-1300``) is not read: the rate applies at every hour, the cautious reading.
        """
        parser = self._robots.get("{0.scheme}://{0.netloc}".format(urlsplit(url)))
        if parser is None:
            return 0.0, ""
        found = [(0.0, "")]
        delay = parser.crawl_delay(self.config.user_agent)
        if delay:
            found.append((float(delay), f"Crawl-delay: {float(delay):g}"))
        rate = parser.request_rate(self.config.user_agent)
        if rate is not None and rate.requests > 0 and rate.seconds > 0:
            found.append((rate.seconds / rate.requests, f"Request-rate: {rate.requests}/{rate.seconds}s"))
        return max(found, key=lambda item: item[0])

    def _wait_turn(self, url: str) -> None:
        gap = max(self.config.delay, min(self._robots_gap(url)[0], self.config.max_crawl_delay))
        self._retry.min_wait = gap  # urllib3's retries of this request keep the host's pace too
        if self._last_done is not None and gap > 0:
            remaining = gap - (self.config.clock() - self._last_done)
            if remaining > 0:
                self.config.sleep(remaining)

    def _say_pace(self, url: str) -> None:
        """Tell the user, once per host, when its robots.txt slows the crawl down."""
        netloc = urlsplit(url).netloc
        asked, source = self._robots_gap(url)
        if asked > self.config.delay and netloc not in self._paced:
            self._paced.add(netloc)
            text = f"{netloc}: {asked:g} s between requests, as its robots.txt asks ({source})"
            self.pace.append(text)
            log.info("%s", text)

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning("%s", text)

    # -- requests ---------------------------------------------------------------------------

    def _check(self, url: str, *, redirect: bool, check_robots: bool = True, pdf: bool = False) -> None:
        """Everything a URL must pass before a byte is sent to it."""
        if self.scope is None:
            self.scope = SiteScope(url, allow_hosts=self.config.allow_hosts)
        if redirect:
            self.scope.check_redirect(url)
        elif pdf:
            self.scope.check_pdf_link(url)
        else:
            self.scope.check_link(url)
        if not check_robots:
            return
        parts = urlsplit(url)
        if not self.allowed(url):
            problem = self._robots_problems.get(f"{parts.scheme}://{parts.netloc}")
            if problem:
                raise RobotsUnavailable(
                    f"cannot read {parts.scheme}://{parts.netloc}/robots.txt ({problem}), so not crawling that host"
                )
            raise DisallowedByRobots(f"robots.txt of {parts.netloc} disallows {url}")
        delay, source = self._robots_gap(url)
        if delay > self.config.max_crawl_delay:
            raise CrawlDelayTooLong(
                f"robots.txt of {parts.netloc} asks for {delay:g} s between requests ({source}), more than "
                f"the {self.config.max_crawl_delay:g} s fAIrytale waits, so not crawling that host"
            )
        self._say_pace(url)

    def _check_peer(self, host: str, address: str) -> None:
        if self.scope is not None:
            self.scope.check_peer(host, address)

    @contextlib.contextmanager
    def request(
        self, url: str, *, stream: bool = False, headers: dict[str, str] | None = None, pdf: bool = False
    ) -> Iterator[requests.Response]:
        """GET ``url`` politely; yields the final response (after redirects) and closes it afterwards.

        Raises :class:`DisallowedByRobots` when robots.txt forbids the URL or a redirect's
        target, :class:`RobotsUnavailable` when a host's robots.txt cannot be read,
        :class:`OffSite` when the URL or a redirect leads where the crawl may not go, and the
        usual ``requests`` exceptions when the server cannot be reached after the retries. The
        body is not read: use :func:`iter_body` (bounded) on the response. The pause before the
        next request counts from when this one is closed, so a long download is followed by the
        full delay too. ``stream`` is accepted for compatibility; bodies are always streamed.
        ``headers`` are sent with every hop (conditional requests: ``If-None-Match``…). With
        ``pdf`` the URL must also be on a host PDFs may come from (:meth:`SiteScope.check_pdf_link`).
        """
        with self._follow(url, check_robots=True, headers=headers, pdf=pdf) as response:
            yield response

    @contextlib.contextmanager
    def _follow(
        self, url: str, *, check_robots: bool, headers: dict[str, str] | None = None, pdf: bool = False
    ) -> Iterator[requests.Response]:
        current = url
        for hop in range(MAX_REDIRECTS + 1):
            self._check(current, redirect=hop > 0, check_robots=check_robots, pdf=pdf)
            response = self._open(current, headers)
            if not response.is_redirect:
                break
            location = response.headers["Location"]
            self._close(response)
            current = urljoin(current, location)
        else:
            raise OffSite(f"more than {MAX_REDIRECTS} redirects starting at {url}")
        try:
            yield response
        finally:
            self._close(response)

    def _open(self, url: str, headers: dict[str, str] | None = None) -> requests.Response:
        self._wait_turn(url)
        self.requests_made += 1
        try:
            return self.session.get(
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(self.config.connect_timeout, self.config.read_timeout),
            )
        except ValueError as exc:
            # requests reads a redirect's Location even when it does not follow it, and
            # urllib.parse refuses some ("http://[oops/"): a malformed redirect, not a crash.
            self._last_done = self.config.clock()
            raise OffSite(f"{url} redirected to a malformed address ({exc})") from None
        except BaseException:
            self._last_done = self.config.clock()
            raise

    def _close(self, response: requests.Response) -> None:
        response.close()
        self._last_done = self.config.clock()

    def _read_capped(self, response: requests.Response, limit: int, deadline: float) -> tuple[bytes, bool]:
        """At most ``limit`` bytes of the body, and whether there was more."""
        data = bytearray()
        # A chunk is at most BODY_CHUNK bytes, so this returns before iter_body's own limit.
        for chunk in iter_body(response, max_bytes=limit + BODY_CHUNK, deadline=deadline, clock=self.config.clock):
            data += chunk
            if len(data) > limit:
                return bytes(data[:limit]), True
        return bytes(data), False

    def get_text(self, url: str) -> tuple[str, str]:
        """GET an HTML page; returns ``(final_url, text)`` after redirects.

        Raises ``requests.HTTPError`` for an error status (after the retries) or a 3xx that
        does not say where to go,
        :class:`BodyTooLarge` past ``max_page_bytes`` (after decompression) and
        :class:`BodyTooSlow` past ``page_deadline``.
        """
        with self.request(url) as response:
            response.raise_for_status()
            if response.status_code >= 300:  # a 3xx with no Location to follow: its body is no page
                reason = f"{response.status_code} {response.reason or ''}".strip()
                raise requests.HTTPError(f"HTTP {reason} without a Location", response=response)
            body = b"".join(
                iter_body(
                    response, max_bytes=self.config.max_page_bytes, deadline=self.config.page_deadline, clock=self.config.clock
                )
            )
            # requests would assume ISO-8859-1 for text/html without a charset; bs4's detector
            # reads <meta charset> and the bytes instead.
            declared = requests.utils.get_encoding_from_headers(response.headers)
            known = [declared] if declared and "charset" in response.headers.get("Content-Type", "").lower() else []
            text = UnicodeDammit(body, known_definite_encodings=known).unicode_markup
            return response.url, text if text is not None else body.decode("utf-8", errors="replace")

    def close(self) -> None:
        """Close the underlying connections."""
        self.session.close()


def iter_body(
    response: requests.Response,
    *,
    max_bytes: int,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    chunk_size: int = BODY_CHUNK,
) -> Iterator[bytes]:
    """The body of a streamed response, decompressed, in chunks as they arrive.

    Raises :class:`BodyTooLarge` once more than ``max_bytes`` have arrived (counted after
    decompression, so a gzip bomb stops at the limit) and :class:`BodyTooSlow` once the whole
    body has taken more than ``deadline`` seconds: each read returns what the network has (one
    ``read1``), so a server that trickles a byte at a time cannot stretch a read past the read
    timeout. Network errors come out as ``requests`` exceptions, as from ``iter_content``.
    """
    raw = response.raw
    start = clock()
    received = 0
    while True:
        if clock() - start > deadline:
            raise BodyTooSlow(f"the body took longer than {deadline:g} s (got {received} bytes); the server is too slow")
        try:
            chunk = raw.read1(chunk_size, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        except urllib3.exceptions.DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from exc
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError, OSError) as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from exc
        if not chunk:
            return
        received += len(chunk)
        if received > max_bytes:
            raise BodyTooLarge(f"the body is larger than {_size(max_bytes)} (after decompression); refused")
        yield chunk


def _size(count: int) -> str:
    return f"{count / 1024 / 1024:g} MiB" if count >= 1024 * 1024 else f"{count / 1024:g} KiB"


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
