"""The test-session guard: no connection leaves the machine, in-process or in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.netguard.sitecustomize import OutsideNetworkError, _allowed, _lookup_allowed

# TEST-NET-1 (RFC 5737): never routed. The guard refuses before any packet is sent anyway.
OUTSIDE = ("192.0.2.1", 80)


@pytest.mark.parametrize(
    ("family", "address", "allowed"),
    [
        (socket.AF_INET, ("127.0.0.1", 80), True),
        (socket.AF_INET, ("127.8.9.10", 80), True),
        (socket.AF_INET, ("localhost", 80), True),
        (socket.AF_INET6, ("::1", 80, 0, 0), True),
        (socket.AF_INET6, ("::ffff:127.0.0.1", 80, 0, 0), True),
        (socket.AF_INET, OUTSIDE, False),
        (socket.AF_INET, ("10.0.0.1", 80), False),
        (socket.AF_INET, ("192.168.1.1", 80), False),
        (socket.AF_INET, ("169.254.169.254", 80), False),
        (socket.AF_INET, ("huggingface.co", 443), False),
        (socket.AF_INET6, ("::ffff:10.0.0.1", 80, 0, 0), False),
    ],
)
def test_only_loopback_is_allowed(family, address, allowed):
    assert _allowed(family, address) is allowed


def test_outside_connection_is_refused_in_process(tmp_path, monkeypatch):
    log = tmp_path / "attempts.log"  # not the session's log, which would fail this test
    monkeypatch.setenv("FAIRYTALE_NETGUARD_LOG", str(log))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(OutsideNetworkError):
            sock.connect(OUTSIDE)
        with pytest.raises(OutsideNetworkError):
            sock.connect_ex(OUTSIDE)
    finally:
        sock.close()
    assert log.read_text(encoding="utf-8").count("192.0.2.1") == 2


def test_loopback_connection_works(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    try:
        client = socket.create_connection(server.getsockname(), timeout=5)
        client.close()
    finally:
        server.close()


def test_subprocesses_are_guarded_too():
    code = (
        "import socket\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.connect(('192.0.2.1', 80))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    env = {**os.environ, "FAIRYTALE_NETGUARD_LOG": os.devnull}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.strip() == "OutsideNetworkError", result.stderr


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (None, True),
        ("", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("192.0.2.1", True),  # numeric: no query is sent (connecting to it is refused)
        (b"127.0.0.1", True),
        ("2130706433", True),  # 127.0.0.1 as one number: the C library reads it without a query
        ("0x7f.1", True),
        ("1.2.3.4 evil.example", False),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("ip6-localhost", True),
        ("box.localhost", True),
        (socket.gethostname(), True),
        ("huggingface.co", False),
        (b"monkeypen.com", False),
        ("cdn.example", False),
        ("localhost.example.com", False),
    ],
)
def test_only_local_names_may_be_looked_up(host, allowed):
    assert _lookup_allowed(host) is allowed


def test_name_lookups_and_datagrams_outside_are_refused_in_process(tmp_path, monkeypatch):
    log = tmp_path / "attempts.log"  # not the session's log, which would fail this test
    monkeypatch.setenv("FAIRYTALE_NETGUARD_LOG", str(log))
    with pytest.raises(OutsideNetworkError):
        socket.getaddrinfo("huggingface.co", 443)
    with pytest.raises(OutsideNetworkError):
        socket.gethostbyname("huggingface.co")
    with pytest.raises(OutsideNetworkError):
        socket.gethostbyname_ex("huggingface.co")
    with pytest.raises(OutsideNetworkError):
        socket.gethostbyaddr("192.0.2.1")  # a PTR query for an outside address
    with pytest.raises(OutsideNetworkError):
        socket.getnameinfo(("192.0.2.1", 443), 0)
    with pytest.raises(OutsideNetworkError):
        socket.gethostbyaddr("huggingface.co")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(OutsideNetworkError):
            udp.sendto(b"x", OUTSIDE)
        with pytest.raises(OutsideNetworkError):
            udp.sendto(b"x", 0, OUTSIDE)
        with pytest.raises(OutsideNetworkError):
            udp.sendmsg([b"x"], [], 0, OUTSIDE)
    finally:
        udp.close()
    text = log.read_text(encoding="utf-8")
    assert text.count("huggingface.co") == 4 and text.count("192.0.2.1") == 5
    # what stays on the machine still works
    assert socket.getaddrinfo("localhost", 80) and socket.gethostbyname("127.0.0.1") == "127.0.0.1"
    assert socket.gethostbyaddr("127.0.0.1")[2] == ["127.0.0.1"]
    assert socket.getnameinfo(("192.0.2.1", 443), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV) == ("192.0.2.1", "443")


def test_loopback_datagrams_work():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        client.sendto(b"hello", server.getsockname())
        client.sendmsg([b"again"], [], 0, server.getsockname())
        assert server.recv(16) == b"hello" and server.recv(16) == b"again"
    finally:
        server.close()
        client.close()


def test_subprocesses_guard_name_lookups_and_datagrams_too(tmp_path):
    code = (
        "import socket\n"
        "for attempt in (lambda: socket.getaddrinfo('huggingface.co', 443),\n"
        "                lambda: socket.gethostbyname('huggingface.co'),\n"
        "                lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 53))):\n"
        "    try:\n"
        "        attempt()\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__)\n"
    )
    log = tmp_path / "attempts.log"
    env = {**os.environ, "FAIRYTALE_NETGUARD_LOG": str(log)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.split() == ["OutsideNetworkError"] * 3, result.stderr
    assert len(log.read_text(encoding="utf-8").splitlines()) == 3
