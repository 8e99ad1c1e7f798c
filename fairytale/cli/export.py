"""`fairytale export`: make an EPUB, a print-on-demand interior and cover, from a painted book.

Also holds the ``--format``/``--preset`` options that ``render`` and ``book`` share, and the
summary both print.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fairytale.cli.app import plain, stderr, user_errors

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.publish import PublishOptions, PublishResult

Format = Annotated[
    str,
    typer.Option(
        "--format",
        help="What to make, comma-separated: pdf, epub (fixed-layout EPUB 3 with alt text), e.g. pdf,epub.",
    ),
]
Preset = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="Print on demand: kdp or ingramspark. Adds an interior PDF, a wraparound cover PDF and a preflight report.",
    ),
]
Paper = Annotated[
    str | None,
    typer.Option(
        "--paper",
        help="With --preset: kdp standard-color or premium-color (default); ingramspark white-70 or white-50.",
    ),
]
SpineWidth = Annotated[
    float | None,
    typer.Option(
        "--spine-width",
        help="With --preset: the spine width in inches, as the service's cover template gives it (needed for ingramspark).",
    ),
]

Facing = Annotated[
    bool,
    typer.Option(
        "--facing",
        help="With --preset: lay the interior out as spreads, text on the left page and the picture on the right.",
    ),
]


def publish_options(
    formats: str,
    preset: str | None,
    paper: str | None,
    spine_width: float | None,
    *,
    rendering: bool,
    facing: bool = False,
) -> PublishOptions:
    """The checked options; ``rendering``: the render writes the PDF itself, so it is left out."""
    from fairytale.publish import PublishOptions, parse_formats

    chosen = parse_formats(formats) if formats else ()
    if rendering:
        chosen = tuple(f for f in chosen if f != "pdf")
    return PublishOptions(formats=chosen, preset=preset, paper=paper, spine_width=spine_width, facing=facing)


def check_trim(options: PublishOptions, trim: str) -> None:
    """A trim the preset's service does not print fails before any painting."""
    from fairytale.errors import FairytaleError
    from fairytale.publish import get_preset

    if options.preset:
        preset = get_preset(options.preset)
        if trim.lower() not in preset.trims:
            raise FairytaleError(
                f"{preset.label} does not print the trim size {trim}. Choose one of: {', '.join(preset.trims)}"
            )


def print_publish_summary(result: PublishResult) -> None:
    """The files made and, with a preset, the preflight report."""
    console = stderr()
    names = {"epub": "EPUB", "pdf": "PDF", "interior": "Interior", "cover": "Cover", "preflight": "Preflight"}
    for key, path in result.files.items():
        console.print(f"[bold]{plain(names.get(key, key))}[/] {plain(path)}", highlight=False)
    if result.preflight:
        colours = {"ok": "green", "warning": "yellow", "error": "bold red"}
        for item in result.preflight.items:
            console.print(
                f"  [{colours[item.level]}]{item.level:7}[/] {plain(item.check)}: {plain(item.detail)}",
                highlight=False,
            )
    for warning in result.warnings:
        console.print(f"[yellow]Warning:[/] {plain(warning)}", highlight=False)


@user_errors
def export(
    book_dir: Annotated[
        Path, typer.Argument(help="A painted book's folder (beside its PDF), e.g. out/ginger.")
    ],
    formats: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="What to make, comma-separated: epub, pdf (default: epub, or nothing more with --preset).",
        ),
    ] = None,
    preset: Preset = None,
    paper: Paper = None,
    spine_width: SpineWidth = None,
    facing: Facing = False,
    trim: Annotated[
        str | None, typer.Option("--trim", help="Page size (default: the one the book was rendered with).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary.")] = False,
) -> None:
    """Make an EPUB or print-on-demand files from a painted book, without painting again.

    Uses the plan in the book folder as it is now: an edited text or alt text is in the result.

    [bold]fairytale export out/ginger --format epub --preset kdp[/]
    """
    from fairytale.errors import FairytaleError
    from fairytale.publish import publish_book

    if formats is None and preset is None:
        formats = "epub"
    if not (formats or "").strip() and preset is None:  # `--format ""`: nothing would be made
        raise FairytaleError("--format is empty: name what to make (epub, pdf), or give --preset")
    options = publish_options(formats or "", preset, paper, spine_width, rendering=False, facing=facing)
    result = publish_book(book_dir, options, trim=trim)
    if not quiet:
        print_publish_summary(result)
    if result.preflight and result.preflight.errors:
        raise FairytaleError(
            f"preflight found {len(result.preflight.errors)} problems the service would reject (see {result.files['preflight']})"
        )


def register(app: typer.Typer) -> None:
    """Add `fairytale export` to ``app``."""
    app.command("export")(export)
