"""`fairytale studio`: a bad --port, --backend, --device or --idle-minutes is one line and a
non-zero exit before gradio starts (no server is started here: launching one fails the test)."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.cli.studio import check_idle_minutes, check_port
from fairytale.errors import FairytaleError


@pytest.fixture(autouse=True)
def _no_server(monkeypatch):
    import fairytale.studio_app as studio_app

    def refuse(*args, **kwargs):
        raise AssertionError("the studio was launched for a refused option")

    monkeypatch.setattr(studio_app, "launch_studio", refuse)


def studio(tmp_path, *args: str):
    result = CliRunner().invoke(app, ["studio", str(tmp_path), *args])
    return result, " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "--port must be between 1 and 65535"),
        (["--port", "-1"], "--port must be between 1 and 65535"),
        (["--idle-minutes", "-1"], "--idle-minutes must be between 0 and 10080"),
        (["--idle-minutes", "nan"], "--idle-minutes must be between 0 and 10080"),
        (["--idle-minutes", "inf"], "--idle-minutes must be between 0 and 10080"),
        (["--idle-minutes", "1e300"], "--idle-minutes must be between 0 and 10080"),
        (["--backend", "bogus"], "Unknown backend 'bogus'"),
        (["--device", "bogus"], "Unknown device 'bogus'"),
        (["--device", "cuda:x"], "Unknown device"),
        (["--steps", "0"], "--steps must be between 1 and 500"),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, message):
    result, said = studio(tmp_path, *args)
    assert result.exit_code == 1, result.output
    assert message in said
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(FairytaleError, match=rf"--port {port}: .*in use"):
            check_port(port)
        result, said = studio(tmp_path, "--port", str(port))
    assert result.exit_code == 1 and f"--port {port}" in said and "in use" in said
    assert "Traceback" not in result.output


def test_good_values_pass():
    check_port(None)
    check_port(0)  # any free port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    check_port(free)
    for minutes in (0, 0.5, 10, 10080):
        check_idle_minutes(minutes)
