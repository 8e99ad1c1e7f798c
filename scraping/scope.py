"""Where a crawl may send requests: the book site, the hosts it serves PDFs from, and never a
local address unless the site itself is local.

A link may point anywhere on the web (the PDFs live on a CDN), but a hostile page or redirect
could point the crawler at the machine it runs on or its network (``http://127.0.0.1:…``, a
cloud metadata address such as ``169.254.169.254``, ``10.…``). :class:`SiteScope` refuses those
before any connection is made, unless the book site is itself on an address of that kind (a
local copy for testing). Redirects are held to more: a hop must stay on the book site or on a
host the site links its PDFs from.

Host names are resolved (once per name) to see what they point at. A name can resolve
differently when the connection is made (DNS rebinding: public for the check, ``127.0.0.1`` a
moment later), so the address actually connected to is checked too (:meth:`SiteScope.check_peer`,
called by :class:`scraping.http.PoliteSession` before a byte of the request is sent).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from fairytale.errors import FairytaleError


class OffSite(FairytaleError):
    """A URL or a redirect leads somewhere this crawl may not go; nothing was sent there."""


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Looks a host name up: its addresses, or none when it does not resolve.
Resolver = Callable[[str], tuple[Address, ...]]


def address_kind(host: str, resolve: Resolver | None = None) -> str | None:
    """``"loopback"``, ``"link-local"`` or ``"private"`` when ``host`` is (or resolves to) such an
    address, ``None`` for a public one or a name that does not resolve (the request then fails
    on its own). ``resolve`` looks names up (default: the system resolver, cached).

    >>> address_kind("127.0.0.1"), address_kind("169.254.169.254"), address_kind("10.1.2.3")
    ('loopback', 'link-local', 'private')
    >>> address_kind("8.8.8.8") is None
    True
    """
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = (resolve or _resolve)(host)
    kinds = {_kind(address) for address in addresses} - {None}
    # A name with several addresses is as local as its most local one.
    for kind in ("loopback", "link-local", "private"):
        if kind in kinds:
            return kind
    return None


def _kind(address: Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if not address.is_global:
        return "private"
    return None


@functools.lru_cache(maxsize=256)
def _resolve(host: str) -> tuple[Address, ...]:
    # Numeric forms such as "2130706433" or "0x7f.1" resolve without any DNS query.
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return ()
    found = []
    for *_, sockaddr in infos:
        with contextlib.suppress(ValueError):
            found.append(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
    return tuple(found)


def host_key(url: str) -> str:
    """What makes two URLs the same host here: host and port; ``www.`` and default ports dropped.

    >>> host_key("https://www.MonkeyPen.com/pages/x"), host_key("http://127.0.0.1:8000/a")
    ('monkeypen.com', '127.0.0.1:8000')
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".").removeprefix("www.")
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port not in (None, 80, 443) else host


class SiteScope:
    """Where a crawl of one book site may go.

    Links may point anywhere on the web (PDFs live on a CDN), but never at a loopback,
    link-local or private address unless the site itself is on one of that kind. Redirects are
    stricter: a hop must stay on the book site or on a host the site links its PDFs from
    (:meth:`add_pdf_host`). ``resolve`` looks host names up (default: the system resolver;
    tests pass their own, so that no name is looked up outside the machine).
    """

    def __init__(self, site_url: str, resolve: Resolver | None = None) -> None:
        self.resolve = resolve or _resolve
        self.site = host_key(site_url)
        self.site_kind = address_kind(urlsplit(site_url).hostname or "", self.resolve)
        self.pdf_hosts: set[str] = set()

    def add_pdf_host(self, url: str) -> None:
        """Allow redirects to ``url``'s host: the site links a PDF there."""
        self.pdf_hosts.add(host_key(url))

    def check_link(self, url: str) -> None:
        """Raise :class:`OffSite` unless ``url`` may be requested at all."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OffSite(f"not an http(s) URL: {url}")
        kind = address_kind(parts.hostname, self.resolve)
        if kind is not None and kind != self.site_kind:
            raise OffSite(f"refusing {parts.hostname}: a {kind} address (the book site is not on one)")

    def check_peer(self, host: str, address: str) -> None:
        """Raise :class:`OffSite` unless a connection to ``host`` may stay open now that it has
        reached ``address`` (the socket's peer); ``host`` passed :meth:`check_link` already."""
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return  # not an IP socket (never for http/https)
        kind = _kind(ip)
        if kind is not None and kind != self.site_kind:
            raise OffSite(
                f"refusing {host}: it led to {address}, a {kind} address, when connecting "
                "(the book site is not on one)"
            )

    def check_redirect(self, url: str) -> None:
        """Raise :class:`OffSite` unless a redirect may lead to ``url``."""
        self.check_link(url)
        if host_key(url) != self.site and host_key(url) not in self.pdf_hosts:
            raise OffSite(
                f"redirected to {urlsplit(url).netloc}, which is neither the book site nor a host it serves PDFs from"
            )
