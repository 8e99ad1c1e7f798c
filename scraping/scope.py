"""Where a crawl may send requests: the book site, the hosts it serves PDFs from, and never a
local address unless the site itself is local.

**PDF hosts.** A PDF is downloaded only from

1. the book site's own host: the ``--base-url`` host with or without ``www.``, or a subdomain of
   it (``cdn.monkeypen.com``), on the same port;
2. the hosts the site is known to serve its PDFs from (:data:`scraping.site.PDF_HOSTS`: for
   monkeypen.com, Shopify's file CDN ``cdn.shopify.com``, which its pages link and its own
   ``/cdn/shop/files/`` paths redirect to);
3. hosts the user names with ``--allow-host HOST`` (``HOST`` also covers its subdomains; a
   ``HOST:PORT`` only that port).

A PDF link to any other host is skipped with one line naming the host and the option
(:meth:`SiteScope.pdf_refusal`); a redirect there fails that book without contacting the host.
HTML pages are read from the book site (a redirect may also lead to one of the PDF hosts).

**Local addresses.** A hostile page or redirect could point the crawler at the machine it runs
on or its network (``http://127.0.0.1:…``, a cloud metadata address such as
``169.254.169.254``, ``10.…``). :class:`SiteScope` refuses those before any connection is made,
unless the book site is itself on an address of that kind (a local copy for testing), whatever
the PDF host rules allow.

Host names are resolved (once per name) to see what they point at. A name can resolve
differently when the connection is made (DNS rebinding: public for the check, ``127.0.0.1`` a
moment later), so the address actually connected to is checked too (:meth:`SiteScope.check_peer`,
called by :class:`scraping.http.PoliteSession` before a byte of the request is sent).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from fairytale.errors import FairytaleError
from scraping.site import PDF_HOSTS


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


def _bare(host: str | None) -> str:
    return (host or "").strip("[]").lower().rstrip(".").removeprefix("www.")


def _port(url: str) -> int | None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None or (parts.scheme, port) in (("http", 80), ("https", 443)):
        return None
    return port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _within(host: str, parent: str) -> bool:
    """``host`` is ``parent`` or (for a name, not an address) one of its subdomains."""
    return host == parent or (not _is_ip(parent) and host.endswith("." + parent))


def parse_allowed_host(entry: str) -> tuple[str, int | None]:
    """``(host, port)`` from an ``--allow-host`` value: ``cdn.example.org``, ``cdn.example.org:8443``
    or a URL on that host; ``port`` is None for any port.

    >>> parse_allowed_host("CDN.Example.org"), parse_allowed_host("https://files.example.org:8443/x.pdf")
    (('cdn.example.org', None), ('files.example.org', 8443))
    """
    text = entry.strip()
    try:
        parts = urlsplit(text if "//" in text else f"//{text}")
        port = parts.port
    except ValueError:
        parts, port = None, None
    host = _bare(parts.hostname) if parts is not None else ""
    if not re.fullmatch(r"[a-z0-9._-]+|[0-9a-f:.]+", host) or (
        parts is not None and parts.path not in ("", "/") and "//" not in text
    ):
        raise FairytaleError(f"--allow-host takes a host name such as cdn.example.org or cdn.example.org:8443 (got {entry!r})")
    return host, (None if port in (80, 443) else port)  # a default port: any port, as in a URL


class SiteScope:
    """Where a crawl of one book site may go.

    Links may point at any public host, never at a loopback, link-local or private address
    unless the site itself is on one of that kind. PDFs come only from the site's own hosts, the
    hosts it is known to serve them from and ``allow_hosts`` (:meth:`pdf_host_allowed`, the rule
    in this module's docstring). Redirects must stay on the book site or on those PDF hosts.
    ``resolve`` looks host names up (default: the system resolver; tests pass their own, so
    that no name is looked up outside the machine).
    """

    def __init__(self, site_url: str, resolve: Resolver | None = None, allow_hosts: tuple[str, ...] = ()) -> None:
        self.resolve = resolve or _resolve
        self.site = host_key(site_url)
        self.site_kind = address_kind(urlsplit(site_url).hostname or "", self.resolve)
        self.site_host, self.site_port = _bare(urlsplit(site_url).hostname), _port(site_url)
        self.allowed = [(host, None) for host in PDF_HOSTS.get(self.site_host, ())]
        self.allowed += [parse_allowed_host(entry) for entry in allow_hosts]
        self.pdf_hosts: set[str] = set()

    def add_pdf_host(self, url: str) -> None:
        """Allow PDFs from (and redirects to) ``url``'s host, that port only."""
        self.pdf_hosts.add(host_key(url))

    def pdf_host_allowed(self, url: str) -> bool:
        """Whether a PDF may be downloaded from ``url``'s host (the rule in this module's docstring)."""
        host, port = _bare(urlsplit(url).hostname), _port(url)
        if not host:
            return False
        if host_key(url) in self.pdf_hosts:
            return True
        if port == self.site_port and _within(host, self.site_host):
            return True
        return any(_within(host, allowed) and allowed_port in (None, port) for allowed, allowed_port in self.allowed)

    def pdf_refusal(self, url: str) -> str | None:
        """Why a PDF link to ``url`` is skipped (one line), or None when its host is allowed."""
        if self.pdf_host_allowed(url):
            return None
        netloc = urlsplit(url).netloc
        return (
            f"PDF link to {netloc} skipped: not the book site or a host it serves PDFs from "
            f"(--allow-host {netloc} allows it)"
        )

    def check_pdf_link(self, url: str) -> None:
        """Raise :class:`OffSite` unless a PDF may be downloaded from ``url``."""
        self.check_link(url)
        refusal = self.pdf_refusal(url)
        if refusal is not None:
            raise OffSite(refusal)

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
        if host_key(url) != self.site and not self.pdf_host_allowed(url):
            raise OffSite(
                f"redirected to {urlsplit(url).netloc}, which is neither the book site nor a host it serves PDFs from "
                f"(--allow-host {urlsplit(url).netloc} allows it)"
            )
