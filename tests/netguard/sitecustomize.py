"""No test may reach outside this machine: every socket connection, every datagram and every
name lookup must stay on loopback.

This module is the guard itself. The test session's conftest imports it and also puts this
folder first on ``PYTHONPATH``, so every Python subprocess a test starts (the CLI, `accelerate
launch`, notebook kernels, a stand-in hub) imports it as its ``sitecustomize`` and is guarded
too. Connections (``connect``/``connect_ex``) and datagrams with an address (``sendto``,
``sendmsg``) must go to loopback; a name lookup (``getaddrinfo``, ``gethostbyname``,
``gethostbyname_ex``) may only name a numeric address or this machine (``localhost``, its own
host name), since looking up any other name is itself a DNS query leaving the machine; a
reverse lookup (``gethostbyaddr``, ``getnameinfo``) may only ask about a loopback address or
this machine's names, since asking for any other address's name is a query too. A
blocked attempt raises :class:`OutsideNetworkError` *before* any packet is sent and is
appended to the file named by ``FAIRYTALE_NETGUARD_LOG``, so the test session can fail the
test even when library code swallows the exception.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket

_LOG_VARIABLE = "FAIRYTALE_NETGUARD_LOG"


class OutsideNetworkError(RuntimeError):
    """A test tried to connect to an address that is not on this machine."""


def _allowed(family: int, address: object) -> bool:
    if family == getattr(socket, "AF_UNIX", None):
        return True
    if not isinstance(address, tuple) or not address:
        return False
    host = str(address[0]).split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: connect() with a name resolves it outside our sight
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


#: Names that resolve on this machine without asking a DNS server (/etc/hosts, RFC 6761).
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


_INET_ATON_FORM = re.compile(r"[0-9a-fx.]+")


def _lookup_allowed(host: object) -> bool:
    """A name lookup that sends no query off the machine: none (a wildcard), a numeric
    address, or a name of this machine."""
    if host is None:
        return True
    if isinstance(host, bytes | bytearray):
        try:
            host = bytes(host).decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str):
        return False
    name = host.split("%", 1)[0].rstrip(".").lower()
    if name in ("", "<broadcast>"):
        return True
    try:
        ipaddress.ip_address(name)
        return True  # numeric: no query; connecting to it is checked by connect()
    except ValueError:
        pass
    if _INET_ATON_FORM.fullmatch(name):
        # The C library reads "2130706433" or "0x7f.1" as an IPv4 address, with no query.
        try:
            socket.inet_aton(name)
            return True
        except OSError:
            pass
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return True
    # This machine's own name (torch.distributed and accelerate look it up): /etc/hosts.
    return name == _own_name()


def _reverse_lookup_allowed(host: object) -> bool:
    """A reverse lookup (address → name) that sends no query off the machine: of a loopback
    address or of this machine's names (a name is looked up forward first, which
    :func:`_lookup_allowed` judges)."""
    if not _lookup_allowed(host) or host is None:
        return False
    name = (bytes(host).decode("ascii") if isinstance(host, bytes | bytearray) else str(host)).split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(name.rstrip("."))
    except ValueError:
        return True  # one of this machine's names
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _own_name() -> str:
    try:
        return _original_gethostname().rstrip(".").lower()
    except OSError:
        return ""


_original_gethostname = socket.gethostname

# The families whose datagrams can leave the machine (netlink, unix sockets cannot).
_INTERNET = (socket.AF_INET, socket.AF_INET6)


def _blocked(address: object, what: str = "connect to") -> OutsideNetworkError:
    message = f"test tried to {what} {address!r}: only loopback is allowed in tests"
    log = os.environ.get(_LOG_VARIABLE)
    if log:
        try:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {what} {address!r}\n")
        except OSError:
            pass
    return OutsideNetworkError(message)


def install() -> None:
    """Wrap ``socket.socket.connect``/``connect_ex``/``sendto``/``sendmsg`` and the module's
    ``getaddrinfo``/``gethostbyname``/``gethostbyname_ex``/``gethostbyaddr``/``getnameinfo``
    (idempotent)."""
    if getattr(socket.socket, "_fairytale_guarded", False):
        return
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_sendto = socket.socket.sendto
    original_sendmsg = socket.socket.sendmsg
    original_getaddrinfo = socket.getaddrinfo
    original_gethostbyname = socket.gethostbyname
    original_gethostbyname_ex = socket.gethostbyname_ex
    original_gethostbyaddr = socket.gethostbyaddr
    original_getnameinfo = socket.getnameinfo

    def connect(self: socket.socket, address: object) -> None:
        if not _allowed(self.family, address):
            raise _blocked(address)
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if not _allowed(self.family, address):
            raise _blocked(address)
        return original_connect_ex(self, address)

    def sendto(self: socket.socket, data: object, *args: object) -> int:
        # sendto(data, address) or sendto(data, flags, address)
        if args and self.family in _INTERNET and not _allowed(self.family, args[-1]):
            address = args[-1]
            raise _blocked(address, "send a datagram to")
        return original_sendto(self, data, *args)  # type: ignore[arg-type]

    def sendmsg(self: socket.socket, buffers: object, *args: object) -> int:
        # sendmsg(buffers[, ancdata[, flags[, address]]]): without an address, the connected peer
        # (which connect() checked).
        if len(args) >= 3 and args[2] is not None and self.family in _INTERNET and not _allowed(self.family, args[2]):
            raise _blocked(args[2], "send a message to")
        return original_sendmsg(self, buffers, *args)  # type: ignore[arg-type]

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if not _lookup_allowed(host):
            raise _blocked(host, "look up")
        return original_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    def gethostbyname(host: str) -> str:
        if not _lookup_allowed(host):
            raise _blocked(host, "look up")
        return original_gethostbyname(host)

    def gethostbyname_ex(host: str) -> tuple[str, list[str], list[str]]:
        if not _lookup_allowed(host):
            raise _blocked(host, "look up")
        return original_gethostbyname_ex(host)

    def gethostbyaddr(host: str) -> tuple[str, list[str], list[str]]:
        if not _reverse_lookup_allowed(host):
            raise _blocked(host, "look up the name of")
        return original_gethostbyaddr(host)

    def getnameinfo(sockaddr: tuple, flags: int) -> tuple[str, str]:
        host = sockaddr[0] if isinstance(sockaddr, tuple) and sockaddr else sockaddr
        numeric = flags & socket.NI_NUMERICHOST and flags & socket.NI_NUMERICSERV
        if not numeric and not _reverse_lookup_allowed(host):
            raise _blocked(host, "look up the name of")
        return original_getnameinfo(sockaddr, flags)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = sendto  # type: ignore[method-assign, assignment]
    socket.socket.sendmsg = sendmsg  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex
    socket.gethostbyaddr = gethostbyaddr
    socket.getnameinfo = getnameinfo
    socket.socket._fairytale_guarded = True  # type: ignore[attr-defined]


if os.environ.get(_LOG_VARIABLE):
    install()
