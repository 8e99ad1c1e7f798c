"""`fairytale library`: every story in a folder made into a book, here or on a Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fairytale.cli.app import plain, stderr, user_errors
from fairytale.cli.render import (
    AdapterEncoder,
    AdapterModel,
    AdapterScale,
    AttentionStrength,
    Backend,
    BatchSize,
    Bleed,
    Consistency,
    Device,
    Guidance,
    Height,
    Layout,
    LowVram,
    MaxRepaints,
    Model,
    NoiseLevel,
    Quiet,
    SafetyModel,
    Scheduler,
    Steps,
    Trim,
    Width,
    render_settings,
)
from fairytale.errors import FairytaleError

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.library import LibraryReport


def print_report(report: LibraryReport) -> None:
    """The summary table: one row per story."""
    from rich.table import Table

    table = Table(title=f"Library · {report.seconds:.0f} s on {report.where}", title_justify="left")
    for column, justify in (
        ("Story", "left"),
        ("Book", "left"),
        ("Pages", "right"),
        ("Painted", "right"),
        ("Reused", "right"),
        ("Time", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    styles = {"made": "green", "finished": "dim", "failed": "red"}
    for book in report.books:
        state = {"made": "made", "finished": "already finished", "failed": f"failed: {plain(book.error)}"}[
            book.status
        ]
        table.add_row(
            plain(book.name), f"[{styles[book.status]}]{state}[/]", str(book.pages or ""), str(book.painted), str(book.reused),
            f"{book.seconds:.0f} s" if book.status == "made" else "",
        )  # fmt: skip
    stderr().print(table, highlight=False)


@user_errors
def library(
    stories: Annotated[Path, typer.Argument(help="A folder of stories, one .txt file each.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Where the books go: NAME.pdf and the book folder NAME/ for each story NAME.txt.",
        ),
    ],
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Books made at once on this machine, each by its own process (with GPUs: one GPU each, in turn).",
        ),
    ] = 1,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="CPU threads per worker (default: the cores shared by the workers)."),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run on a Ray cluster: auto (the cluster this machine belongs to) or its address (HOST:PORT). Needs the \\[ray] extra.",
        ),
    ] = None,
    painters: Annotated[
        int | None,
        typer.Option(
            "--painters",
            help="With --ray: painting actors (default: one per GPU of the cluster); without GPUs, actors making whole books (default: one per CPU).",
        ),
    ] = None,
    author: Annotated[str | None, typer.Option("--author", help="Author shown on every cover.")] = None,
    words_per_page: Annotated[
        int | None,
        typer.Option("--words-per-page", help="About how many words go on a page, 5-120 (default 35)."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Master seed of every story's plan (default: a new one each, recorded)."),
    ] = None,
    ner_model: Annotated[
        str | None, typer.Option("--ner-model", help="NER model (characters): hub id or local folder.")
    ] = None,
    qa_model: Annotated[
        str | None,
        typer.Option("--qa-model", help="Question-answering model (looks, scenes): hub id or local folder."),
    ] = None,
    nli_model: Annotated[
        str | None,
        typer.Option("--nli-model", help="NLI model (kind, mood, presence): hub id or local folder."),
    ] = None,
    model: Model = None,
    backend: Backend = "sd14",
    consistency: Consistency = None,
    adapter_scale: AdapterScale = 0.6,
    adapter_model: AdapterModel = None,
    adapter_encoder: AdapterEncoder = None,
    attention_strength: AttentionStrength = 0.5,
    noise_level: NoiseLevel = 0,
    steps: Steps = 25,
    guidance: Guidance = None,
    scheduler: Scheduler = "dpm++",
    width: Width = None,
    height: Height = None,
    batch_size: BatchSize = None,
    device: Device = None,
    low_vram: LowVram = False,
    safety_model: SafetyModel = None,
    max_repaints: MaxRepaints = 3,
    trim: Trim = "8.5x8.5",
    bleed: Bleed = False,
    layout: Layout = "auto",
    quiet: Quiet = False,
) -> None:
    """Make a book of every story in a folder: plan, paint, lay out.

    Run it again to resume: finished books are skipped, half-done ones continue, and a
    plan.json you edited is kept. One story that fails never stops the others; they are
    named at the end, with a non-zero exit.

    [bold]fairytale library stories/ --out books/[/]
    [bold]fairytale library stories/ --out /shared/books/ --ray auto[/]
    """
    settings = render_settings(locals())  # first: before any other name is bound here
    from fairytale.library import PlanOptions, make_library
    from fairytale.pages import check_words_per_page

    check_words_per_page(words_per_page)  # said once, not once a story

    plan_options = PlanOptions(
        author=author, words_per_page=words_per_page, seed=seed, ner_model=ner_model, qa_model=qa_model,
        nli_model=nli_model, device=device,
    )  # fmt: skip
    if ray is None and painters is not None:
        raise FairytaleError("--painters goes with --ray (on this machine, use --workers)")
    if ray is None:
        # Here, every model a book needs is checked before the first story starts (missing ones
        # named in one line); on a cluster the models come from each node's own cache.
        from fairytale.library import find_books
        from fairytale.model_check import ensure, plan_needs, render_needs

        find_books(stories, out)  # a missing or empty stories folder is said first
        ensure(
            render_needs(
                backend, model, safety_model, consistency=consistency, adapter_model=adapter_model,
                adapter_encoder=adapter_encoder,
            )
            + plan_needs(ner_model, qa_model, nli_model, backend, model, device),
            stderr(),
        )  # fmt: skip
    report = make_library(
        stories, out, settings, plan_options, workers=workers, threads=threads, ray_address=ray, painters=painters,
        progress=not quiet,
    )  # fmt: skip
    if not quiet:
        print_report(report)
    if report.failed:
        from fairytale.library import NOT_STARTED_DISK_FULL

        names = ", ".join(book.name for book in report.failed)
        full = any(book.error == NOT_STARTED_DISK_FULL for book in report.failed)
        why = " (the disk is full: free some space, then run the same command again)" if full else ""
        raise FairytaleError(f"{len(report.failed)} of {len(report.books)} stories failed: {names}{why}")


def register(app: typer.Typer) -> None:
    """Add `fairytale library` to ``app``."""
    app.command("library")(library)
