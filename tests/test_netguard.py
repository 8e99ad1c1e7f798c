"""The test-session guard: no connection leaves the machine, in-process or in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.netguard.sitecustomize import OutsideNetworkError, _allowed

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
