"""`fairytale studio`: make and fix a book in the browser (a local Gradio app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairytale.cli.app import stderr, user_errors
from fairytale.cli.render import Backend, Device, DraftLora, DraftSteps, LowVram, Model, Steps


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
        int | None, typer.Option("--port", help="Port on 127.0.0.1 (default: a free one).")
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
        float, typer.Option("--idle-minutes", help="Free the loaded model after this many idle minutes.")
    ] = 10.0,
) -> None:
    """Open the studio in your browser: paste a story, edit the plan, paint, fix pages, download the PDF.

    It runs on this computer only (127.0.0.1) and keeps everything in the book folder.

    [bold]fairytale studio out/ginger[/]
    """
    from fairytale.render import RenderSettings
    from fairytale.studio_actions import StudioOptions
    from fairytale.studio_app import launch_studio

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
    options = StudioOptions(settings=settings, ner_model=ner_model, qa_model=qa_model, nli_model=nli_model)
    if share:
        console.print(
            "[yellow]Warning:[/] --share puts your studio on a public gradio.live address: anyone who has the "
            "link can read your book and paint with your computer.",
            highlight=False,
        )
    running = launch_studio(
        book_dir, books_dir=books_dir, options=options, port=port, share=share, idle_seconds=idle_minutes * 60
    )
    console.print(f"fAIrytale Studio is running at [bold]{running.url}[/] (Ctrl-C to stop)", highlight=False)
    if running.share_url:
        console.print(f"Public link: {running.share_url}", highlight=False)
    running.wait()


def register(app: typer.Typer) -> None:
    """Add `fairytale studio` to ``app``."""
    app.command("studio")(studio)
