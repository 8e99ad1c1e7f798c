"""`fairytale vary` and `fairytale evaluate`: characters that look the same on every page.

    fairytale vary ginger.png -n 8 -o ginger_pics/ --training-set
    fairytale train character --data ginger_pics/ --token "<ginger>" --init giraffe -o ginger.safetensors
    fairytale evaluate out/ginger/
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fairytale.cli.app import plain, stderr, user_errors


@user_errors
def vary(
    image: Annotated[Path, typer.Argument(help="The picture to make variations of (e.g. a reference portrait).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for variation-01.png … and variations.json.")],
    count: Annotated[int, typer.Option("-n", "--count", help="How many variations.")] = 4,
    model: Annotated[str | None, typer.Option("--model", help="Image-variations model: hub id or local folder.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Master seed; each variation's seed is recorded in variations.json.")] = 0,
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps per picture.")] = 25,
    guidance: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance, 0-50 (the model card's 3 by default).")] = 3.0,
    device: Annotated[str | None, typer.Option("--device", help="cuda, cuda:N, mps or cpu (default: the best available).")] = None,
    low_vram: Annotated[bool, typer.Option("--low-vram", help="For 8-12 GiB cards: model CPU offload, attention slicing, one at a time.")] = False,
    safety_model: Annotated[str | None, typer.Option("--safety-model", help="Safety checker if the model ships none: hub id or local folder.")] = None,
    training_set: Annotated[
        bool, typer.Option("--training-set", help="Also copy the picture in: the folder becomes a `fairytale train character` data set.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")] = False,
) -> None:
    """Paint variations of a picture with the SD image-variations model (no prompt needed).

    [bold]fairytale vary ginger.png -n 8 -o ginger_pics/ --training-set[/]
    """
    from fairytale.variations import check_options, make_variations

    check_options(count, seed, steps, guidance)  # impossible numbers are said first
    console = stderr()
    from fairytale.model_check import ensure, vary_needs
    from fairytale.render.devices import plan_device
    from fairytale.variations import _read_picture

    _read_picture(image)  # an unreadable picture is said before missing models
    plan_device(device, low_vram=low_vram)  # …and so is an unknown or absent --device
    ensure(vary_needs(model, safety_model), console)
    with console.status("Painting variations…", spinner="dots") if not quiet else contextlib.nullcontext():
        result = make_variations(
            image, output, count, model=model, seed=seed, steps=steps, guidance=guidance, device=device,
            low_vram=low_vram, safety_model=safety_model, training_set=training_set,
        )
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {plain(warning)}")
    if not quiet:
        console.print(f"[green]✓[/] {len(result.pictures)} variation(s) in {plain(result.folder)}")
        if training_set:
            console.print(
                f"Train a character token on them: [bold]fairytale train character --data {plain(result.folder)} "
                '--token "<name>" -o name.safetensors[/]'
            )


@user_errors
def evaluate(
    book_dir: Annotated[Path, typer.Argument(help="The book folder a render wrote (beside the PDF).")],
    clip_model: Annotated[str | None, typer.Option("--clip-model", help="CLIP model: hub id or local folder.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cuda, cuda:N, mps or cpu (default: cuda if available, else cpu).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pictures per CLIP batch.")] = 16,
) -> None:
    """Score a rendered book with CLIP: prompt alignment per page (CLIP-T) and how alike each
    character looks across its pages (CLIP-I). Saves BOOK_DIR/evaluation.json.

    [bold]fairytale evaluate out/ginger/[/]
    """
    from fairytale.evaluation import EVALUATION_FILE, check_book, evaluate_book
    from fairytale.model_check import ensure, evaluate_needs

    check_book(book_dir, batch_size, device)  # a mistyped folder or device is said before CLIP is fetched
    ensure(evaluate_needs(clip_model), stderr())
    result = evaluate_book(book_dir, clip_model=clip_model, device=device, batch_size=batch_size)
    console = Console()
    pages = Table(title=f"Prompt alignment (CLIP-T) · {plain(result.backend)}")
    pages.add_column("page", justify="right")
    pages.add_column("CLIP-T", justify="right")
    pages.add_column("characters")
    pages.add_column("like portrait", justify="right")
    pages.add_column("prompt", overflow="fold")
    for page in result.pages:
        likeness = ", ".join(f"{plain(c)} {v:.1f}" for c, v in page.portrait.items()) or "–"
        pages.add_row(str(page.number), f"{page.clip_t:.1f}", plain(", ".join(page.characters)), likeness, plain(page.prompt))
    console.print(pages)
    if result.characters:
        alike = Table(title="Character likeness across pages (CLIP-I)")
        alike.add_column("character")
        alike.add_column("pages")
        alike.add_column("CLIP-I", justify="right")
        alike.add_column("least alike pair", justify="right")
        for character in result.characters:
            a, b, score = character.lowest_pair
            alike.add_row(plain(character.name), ",".join(map(str, character.pages)), f"{character.clip_i:.1f}", f"{a}–{b}: {score:.1f}")
        console.print(alike)
    else:
        console.print("No character appears on two or more pages: no CLIP-I.")
    if result.mean_clip_t is not None:
        console.print(f"Mean CLIP-T {result.mean_clip_t:.1f} · scores saved to {plain(book_dir / EVALUATION_FILE)}")


def register(app: typer.Typer) -> None:
    """Add `fairytale vary` and `fairytale evaluate` to ``app``."""
    app.command("vary")(vary)
    app.command("evaluate")(evaluate)
