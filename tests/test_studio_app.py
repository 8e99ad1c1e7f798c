"""The studio server (no browser): where it listens, which files it serves, the CLI around it."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

from fairytale.cli import app as cli
from fairytale.errors import FairytaleError
from fairytale.studio_actions import StudioOptions
from tests.render_support import make_plan, tiny_settings, write_plan
from tests.studio_support import require_gradio


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def keep_environment(monkeypatch) -> None:
    """The studio sets gradio's variables in os.environ: put them back after the test."""
    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED", "GRADIO_SERVER_NAME"):
        monkeypatch.setenv(name, "")


@pytest.fixture()
def studio(tmp_path, tiny_sd, monkeypatch):
    require_gradio()
    from fairytale.studio_app import launch_studio

    keep_environment(monkeypatch)
    folder = tmp_path / "zoe"
    folder.mkdir()
    write_plan(folder, make_plan(2))
    running = launch_studio(folder, options=StudioOptions(tiny_settings(tiny_sd)))
    yield running, folder
    running.close()


def test_studio_listens_on_loopback_and_serves_no_file_outside_its_folder(studio, tmp_path):
    running, folder = studio
    import os

    assert running.url.startswith("http://127.0.0.1:") and running.share_url is None
    assert status_of(running.url) == 200
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    temp = running.session_dir / "gradio"
    assert temp.is_relative_to(folder) and os.environ["GRADIO_TEMP_DIR"] == str(temp)

    secret = tmp_path / "secret.txt"
    secret.write_text("not for the browser")
    for path in (
        "/etc/passwd",
        str(secret),
        str(folder / "plan.json"),
        "../../../../etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
    ):
        assert status_of(f"{running.url}gradio_api/file={path}") in (403, 404), path


def test_missing_gradio_is_one_line_with_the_install_command(tmp_path, monkeypatch):
    from fairytale.studio_app import _import_gradio

    keep_environment(monkeypatch)
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    with pytest.raises(FairytaleError, match=r'pip install -e "\.\[studio\]"'):
        _import_gradio(tmp_path)
    result = CliRunner().invoke(cli, ["studio", str(tmp_path / "nothing-here")])
    assert result.exit_code != 0 and "Book folder not found" in result.output


def test_share_warns_before_anything_starts(tmp_path):
    result = CliRunner().invoke(cli, ["studio", str(tmp_path / "nothing-here"), "--share"])
    assert result.exit_code != 0 and "public" in result.output and "Traceback" not in result.output


def test_cli_prints_the_address_and_serves_until_stopped(tmp_path, tiny_sd, monkeypatch):
    require_gradio()
    from fairytale import studio_app

    keep_environment(monkeypatch)
    folder = tmp_path / "zoe"
    folder.mkdir()
    write_plan(folder, make_plan(2))
    served = []

    def serve_once(self):  # instead of waiting for Ctrl-C: check it answers, then stop
        served.append(status_of(self.url))
        self.close()

    monkeypatch.setattr(studio_app.Studio, "wait", serve_once)
    result = CliRunner().invoke(cli, ["studio", str(folder), "--model", str(tiny_sd), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "running at http://127.0.0.1:" in result.output and served == [200]


def test_a_missing_browser_skips_here_but_fails_on_ci(monkeypatch, tmp_path):
    from tests import studio_support

    monkeypatch.setattr(studio_support, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("FAIRYTALE_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        studio_support.require("chromium", False, "apt-get install -y chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the studio tests"):
        studio_support.require_browser()


def test_gradio_variables_in_the_environment_open_nothing_more(tmp_path, tiny_sd, monkeypatch):
    require_gradio()
    from fairytale.studio_app import launch_studio

    keep_environment(monkeypatch)
    for name, value in {
        "GRADIO_SERVER_NAME": "0.0.0.0",  # listen on every network
        "GRADIO_SHARE": "true",  # a public link
        "GRADIO_SSR_MODE": "true",  # a Node server beside the studio
        "GRADIO_MCP_SERVER": "true",  # the studio's actions as tools for remote agents
        "GRADIO_VIBE_MODE": "1",  # a code editor that asks a hosted model
    }.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / "zoe"
    folder.mkdir()
    write_plan(folder, make_plan(2))
    running = launch_studio(folder, options=StudioOptions(tiny_settings(tiny_sd)))
    try:
        app = running.app
        assert running.url.startswith("http://127.0.0.1:") and running.share_url is None
        assert app.server_name == "127.0.0.1" and app.server.config.host == "127.0.0.1"
        assert not app.share and not app.ssr_mode and not app.mcp_server and not app.vibe_mode
        assert status_of(f"{running.url}gradio_api/mcp/schema") == 404
    finally:
        running.close()


def test_gradio_asks_nothing_of_its_servers_even_when_imported_first(tmp_path, tiny_sd, monkeypatch):
    """gradio imported before the studio (a notebook), with its analytics variable left on: the
    studio still turns them off; no version check, no analytics request is even attempted
    (the network guard would fail the test on one that was)."""
    require_gradio()
    import gradio.analytics

    from fairytale.studio_app import launch_studio

    keep_environment(monkeypatch)
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")
    asked = []
    monkeypatch.setattr(gradio.analytics, "version_check", lambda: asked.append("version check"))
    monkeypatch.setattr(gradio.analytics, "_do_analytics_request", lambda topic, data: asked.append(topic))
    folder = tmp_path / "zoe"
    folder.mkdir()
    write_plan(folder, make_plan(2))
    running = launch_studio(folder, options=StudioOptions(tiny_settings(tiny_sd)))
    try:
        assert status_of(running.url) == 200
        assert not running.app.analytics_enabled
    finally:
        running.close()
    assert asked == []
