"""The paint view's stream (no browser): the newest live preview is shown while a page is
painted only when "Show previews" is ticked, and hidden when the painting ends; the message at
the end says which pages are drafts and that a final is a new painting."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from PIL import Image

from fairytale.render.previews import Preview
from fairytale.studio_actions import StudioOptions
from tests.render_support import make_plan, tiny_settings, write_plan
from tests.studio_support import require_gradio


def result(**changes):
    done = dict(painted=[1], reused=[2], seconds=1.0, drafts=[], redrawn_drafts=[], draft_note=None)
    return SimpleNamespace(**(done | changes))


def stream(tmp_path, tiny_sd, monkeypatch, previews: bool, work):
    require_gradio()
    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.setenv(name, "")  # put back after the test
    from fairytale.studio_app import StudioSession, _import_gradio, stream_painting

    gr = _import_gradio(tmp_path / ".studio")
    folder = tmp_path / "zoe"
    folder.mkdir(exist_ok=True)
    write_plan(folder, make_plan(2))
    session = StudioSession(StudioOptions(tiny_settings(tiny_sd)), tmp_path)
    return stream_painting(gr, session, str(folder), work, previews)


def test_the_newest_preview_is_shown_while_painting_when_ticked(tmp_path, tiny_sd, monkeypatch):
    shown = threading.Event()

    def work(book, job, on_preview):
        on_preview(Preview((1,), 2, 10, [Image.new("RGB", (8, 8), "red")]))
        on_preview(
            Preview((1, 2), 4, 10, [Image.new("RGB", (8, 8), "red"), Image.new("RGB", (6, 6), "blue")])
        )
        assert shown.wait(120), "the preview never reached the page"
        return result()

    updates = []
    for update in stream(tmp_path, tiny_sd, monkeypatch, True, work):
        updates.append(update)
        if update[3].get("visible"):
            shown.set()
    visible = [picture for *_, picture in updates if picture.get("visible")]
    # the newest preview is on the page (each shown once; one the page missed is not shown late)
    assert 1 <= len(visible) <= 2 and visible[-1]["label"] == "Live preview · page 1, 2 · step 4 of 10"
    assert visible[-1]["value"].size == (14, 8)  # the pages of the batch side by side
    assert updates[-1][3] == {"__type__": "update", "value": None, "visible": False}  # hidden at the end
    assert updates[-1][0].startswith("Done: 1 painted, 1 kept")


def test_no_previews_when_the_box_is_not_ticked(tmp_path, tiny_sd, monkeypatch):
    given = []

    def work(book, job, on_preview):
        given.append(on_preview)
        return result(drafts=[2], draft_note="drafts: 4 LCM steps with the LCM-LoRA")

    updates = list(stream(tmp_path, tiny_sd, monkeypatch, False, work))
    assert given == [None]  # nothing decodes previews
    assert not any(picture.get("visible") for *_, picture in updates)
    message = updates[-1][0]
    assert "Page 2 is a draft (drafts: 4 LCM steps" in message and "not an enlargement" in message
