"""No test may reach outside this machine: every socket connection must go to loopback.

This module is the guard itself. The test session's conftest imports it and also puts this
folder first on ``PYTHONPATH``, so every Python subprocess a test starts (the CLI, `accelerate
launch`, notebook kernels, a stand-in hub) imports it as its ``sitecustomize`` and is guarded
too. A blocked attempt raises :class:`OutsideNetworkError` *before* any packet is sent and is
appended to the file named by ``FAIRYTALE_NETGUARD_LOG``, so the test session can fail the
test even when library code swallows the exception.
"""

from __future__ import annotations

import ipaddress
import os
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


def _blocked(family: int, address: object) -> OutsideNetworkError:
    message = f"test tried to connect to {address!r}: only loopback is allowed in tests"
    log = os.environ.get(_LOG_VARIABLE)
    if log:
        try:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {address!r}\n")
        except OSError:
            pass
    return OutsideNetworkError(message)


def install() -> None:
    """Wrap ``socket.socket.connect``/``connect_ex`` (idempotent)."""
    if getattr(socket.socket, "_fairytale_guarded", False):
        return
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: object) -> None:
        if not _allowed(self.family, address):
            raise _blocked(self.family, address)
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if not _allowed(self.family, address):
            raise _blocked(self.family, address)
        return original_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket._fairytale_guarded = True  # type: ignore[attr-defined]


if os.environ.get(_LOG_VARIABLE):
    install()
