"""`fairytale studio`: make and fix a book in the browser (a local Gradio app)."""

from __future__ import annotations

import errno
import math
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from fairytale.cli.app import stderr, user_errors
from fairytale.cli.render import Backend, Device, DraftLora, DraftSteps, LowVram, Model, Steps
from fairytale.errors import FairytaleError

#: The studio listens here only (as fairytale.studio_app.HOST).
HOST = "127.0.0.1"
#: --idle-minutes: at most a week (a longer wait is "never", and overflows the timer).
MAX_IDLE_MINUTES = 7 * 24 * 60


def check_port(port: int | None) -> None:
    """Refuse a port outside 0-65535, or one this user cannot listen on now (in use,
    or privileged), in one line. ``None`` and 0 mean a free port, chosen at launch."""
    if port is None or port == 0:
        return
    if not 1 <= port <= 65535:
        raise FairytaleError(f"--port must be between 1 and 65535 (or 0 for a free one), not {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if os.name == "posix":  # as the server will, so a just-closed port's TIME_WAIT is no obstacle
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            reason = "it is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
            raise _cannot_listen(port, reason) from None


def _cannot_listen(port: int, reason: str) -> FairytaleError:
    return FairytaleError(
        f"--port {port}: cannot listen on {HOST}:{port} ({reason}); choose another, or leave --port out for a free one"
    )


def check_idle_minutes(minutes: float) -> None:
    """Refuse an --idle-minutes that is not a number from 0 to a week."""
    if not (math.isfinite(minutes) and 0 <= minutes <= MAX_IDLE_MINUTES):
        raise FairytaleError(
            f"--idle-minutes must be between 0 and {MAX_IDLE_MINUTES} (a week), not {minutes}"
        )


@user_errors
def studio(
    book_dir: Annotated[
        Path | None,
        typer.Argument(help="A book folder to open (one made by `fairytale book` opens as it is)."),
    ] = None,
    books_dir: Annotated[
        Path | None,
        typer.Option(
            "--books-dir", help="Where new books go (default: beside BOOK_DIR, else ./fairytale-books)."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port on 127.0.0.1, 1-65535 (default, or 0: a free one)."),
    ] = None,
    share: Annotated[
        bool,
        typer.Option(
            "--share", help="Also make a public gradio.live link: anyone with it can use your studio."
        ),
    ] = False,
    model: Model = None,
    backend: Backend = "sd14",
    steps: Steps = 25,
    device: Device = None,
    low_vram: LowVram = False,
    ner_model: Annotated[
        str | None, typer.Option("--ner-model", help="NER model (characters): hub id or local folder.")
    ] = None,
    qa_model: Annotated[
        str | None, typer.Option("--qa-model", help="Question-answering model: hub id or local folder.")
    ] = None,
    nli_model: Annotated[
        str | None, typer.Option("--nli-model", help="NLI model: hub id or local folder.")
    ] = None,
    draft_steps: DraftSteps = 4,
    draft_lora: DraftLora = None,
    preview_model: Annotated[
        str | None,
        typer.Option(
            "--preview-model",
            help="Tiny autoencoder for live previews (Show previews): hub id or local folder.",
        ),
    ] = None,
    idle_minutes: Annotated[
        float,
        typer.Option(
            "--idle-minutes",
            help=f"Free the loaded model after this many idle minutes (0-{MAX_IDLE_MINUTES}; 0: after every action).",
        ),
    ] = 10.0,
) -> None:
    """Open the studio in your browser: paste a story, edit the plan, paint, fix pages, download the PDF.

    It runs on this computer only (127.0.0.1) and keeps everything in the book folder.

    [bold]fairytale studio out/ginger[/]
    """
    # Impossible options are one line, before gradio is imported or a model is looked at.
    check_port(port)
    check_idle_minutes(idle_minutes)
    from fairytale.render import RenderSettings, get_backend
    from fairytale.render.devices import plan_for

    console = stderr()
    settings = RenderSettings(
        backend=backend,
        model=model,
        steps=steps,
        device=device,
        low_vram=low_vram,
        draft_steps=draft_steps,
        draft_lora=draft_lora,
        preview_model=preview_model,
    )
    get_backend(settings.backend)  # an unknown --backend, as `fairytale render` says it
    plan_for(settings)  # an unknown or absent --device, as `fairytale render` says it

    from fairytale.studio_actions import StudioOptions
    from fairytale.studio_app import launch_studio

    options = StudioOptions(settings=settings, ner_model=ner_model, qa_model=qa_model, nli_model=nli_model)
    if share:
        console.print(
            "[yellow]Warning:[/] --share puts your studio on a public gradio.live address: anyone who has the "
            "link can read your book and paint with your computer.",
            highlight=False,
        )
    try:
        running = launch_studio(
            book_dir,
            books_dir=books_dir,
            options=options,
            port=port or None,
            share=share,
            idle_seconds=idle_minutes * 60,
        )
    except OSError as exc:
        # taken between the check above and gradio's own try ("Cannot find empty port")
        if port and "port" in str(exc).lower():
            raise _cannot_listen(port, "it is in use") from None
        raise
    console.print(f"fAIrytale Studio is running at [bold]{running.url}[/] (Ctrl-C to stop)", highlight=False)
    if running.share_url:
        console.print(f"Public link: {running.share_url}", highlight=False)
    running.wait()


def register(app: typer.Typer) -> None:
    """Add `fairytale studio` to ``app``."""
    app.command("studio")(studio)
