"""`fairytale scrape` and `fairytale dataset build`: collect the free books, build the style dataset.

Both are thin layers over :func:`scraping.scrape` and :func:`scraping.build_dataset`. Everything
they print that comes from outside (titles, URLs, file names, server messages, paths) goes through
``rich.markup.escape``: a book called ``Evil [/] Book`` is shown as it is, never read as markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fairytale.cli.app import stderr, user_errors
from fairytale.errors import FairytaleError
from scraping.site import DEFAULT_BASE_URL, LISTING_PATH, TERMS

dataset_app = typer.Typer(help="Build the picture-book style dataset the trainer reads.", no_args_is_help=True)


@user_errors
def scrape_command(
    base_url: Annotated[
        str,
        typer.Option(
            "--base-url",
            help=f"Site root ({LISTING_PATH} is appended) or the listing page itself. "
            "Point it at a local copy to crawl that instead.",
        ),
    ] = DEFAULT_BASE_URL,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PDFs and manifest.jsonl.")] = Path("books"),
    delay: Annotated[
        float, typer.Option(help="Seconds between requests, up to 600 (0 allowed, for your own server).")
    ] = 1.0,
    limit: Annotated[int | None, typer.Option(help="Only the first N books of the listing.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read the listing and book pages, list the PDFs, download nothing.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds (up to 600) to wait for a server's answer before retrying.")
    ] = 30.0,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Also download PDFs from this host (and its subdomains; HOST:PORT for one port). "
            "Repeatable. By default PDFs come only from the site's own host and its known CDN.",
        ),
    ] = None,
    check_updates: Annotated[
        bool,
        typer.Option(
            "--check-updates",
            help="Also ask the site whether each complete book's PDF changed (a conditional request "
            "per book: If-None-Match/If-Modified-Since); download only the ones it replaced.",
        ),
    ] = False,
) -> None:
    """Download Monkey Pen's free children's books (PDFs) for your own research use.

    Obeys robots.txt, sends a clear User-Agent, waits --delay seconds between requests, retries 429/5xx with backoff (honouring Retry-After) and records every book in OUT/manifest.jsonl.

    Run it again to resume: complete books whose files are intact (size and SHA-256) are not fetched again; failed or damaged ones are. --check-updates also asks the site about complete books.
    """
    from scraping import HttpConfig, scrape

    # --delay, --timeout (HttpConfig) and --base-url are one line before any request is sent
    http_config = HttpConfig(delay=delay, read_timeout=timeout, allow_hosts=tuple(allow_host or ()))
    console = stderr()
    console.print(f"[dim]{TERMS}[/]", highlight=False)
    report = scrape(
        base_url,
        out,
        limit=limit,
        dry_run=dry_run,
        check_updates=check_updates,
        http_config=http_config,
        show_progress=True,
        console=console,
    )
    for line in report.pace:
        console.print(f"Pace: {escape(line)}", highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False)
    if dry_run:
        table = Table(title=f"Would fetch ({escape(report.listing_url)})")
        for column in ("book", "PDF", "file"):
            table.add_column(column, overflow="fold")
        for book in report.books:
            table.add_row(
                escape(book.title),
                escape(book.pdf_url) if book.pdf_url else f"[red]{escape(book.error or book.action)}[/]",
                escape(book.file or book.action),
            )
        Console().print(table)
        return
    for book in report.books:
        if book.action in ("failed", "no pdf", "disallowed"):
            console.print(f"[red]✗[/] {escape(book.title)}: {book.action} ({escape(book.error or '')})", highlight=False)
    counts = ", ".join(f"{report.count(a)} {a}" for a in ("downloaded", "skipped", "unchanged", "duplicate") if report.count(a))
    console.print(
        f"[green]✓[/] {counts or 'nothing new'} → {escape(str(out))} (manifest: {escape(str(report.manifest_path))})",
        highlight=False,
    )
    retry = [b for b in report.books if b.action in ("failed", "no pdf")]
    disallowed = report.count("disallowed")
    if retry or disallowed:
        # The README promises a non-zero exit while any book is missing, whatever the reason.
        reasons = []
        if retry:
            reasons.append(f"{len(retry)} failed or without a PDF (run the same command again to retry them)")
        if disallowed:
            reasons.append(f"{disallowed} disallowed by the site's robots.txt (not fetched; a new run will not change that)")
        raise FairytaleError(
            f"{len(retry) + disallowed} of {len(report.books)} books were not downloaded: {'; '.join(reasons)}; "
            f"see {report.manifest_path}"
        )


@dataset_app.command("build")
@user_errors
def build_command(
    pdf_dir: Annotated[Path, typer.Argument(help="Folder of PDFs, e.g. the --out of `fairytale scrape`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the imagefolder dataset.")] = Path("dataset"),
    size: Annotated[int, typer.Option(help="Picture size: 512 for SD 1.x, 768 for SD 2.x.")] = 512,
    dpi: Annotated[int, typer.Option(help="Resolution pages are rendered at before cropping.")] = 150,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split (recorded in README.md).")] = 0,
    validation: Annotated[float, typer.Option(help="Share of pictures held out for validation.")] = 0.1,
    min_picture: Annotated[
        float, typer.Option(help="Keep a page when solid ink outside its text covers at least this share of it.")
    ] = 0.10,
    keep_covers: Annotated[bool, typer.Option("--keep-covers", help="Keep the first and last pages too.")] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a dataset fAIrytale built in --out from other books or settings (nothing else)."),
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Build again even a dataset in --out built from the same books and settings (it is kept by default).",
        ),
    ] = False,
) -> None:
    """Render the books' pages, keep the illustrations, write a Hugging Face imagefolder.

    Covers (first and last page), near-blank and text-only pages are dropped by a measured rule (see scraping/pages.py); the rest are centre-cropped to --size.

    Output: OUT/train and OUT/validation, each with metadata.jsonl (file_name, caption, book, page), and a README.md recording the settings.

    Run again with the same books and settings, the dataset in OUT is kept while its files are unchanged (--rebuild builds it anyway).
    """
    from scraping import build_dataset
    from scraping.pages import PageRule

    console = stderr()
    report = build_dataset(
        pdf_dir,
        out,
        size=size,
        dpi=dpi,
        seed=seed,
        validation_fraction=validation,
        rule=PageRule(min_picture=min_picture, drop_covers=not keep_covers),
        overwrite=force or rebuild,
        reuse=not rebuild,
        show_progress=True,
        console=console,
    )
    if report.reused:
        console.print(
            f"Kept the dataset in {escape(str(out))}: built from the same books and settings, its files unchanged "
            "(--rebuild builds it again)",
            highlight=False,
        )
    for name, why in report.skipped_files.items():
        console.print(f"[yellow]Skipped[/] {escape(name)}: {escape(why)}", highlight=False)
    if report.upscaled:
        console.print(
            f"[yellow]Warning:[/] {report.upscaled} pages rendered smaller than {size} px at {dpi} dpi and were "
            "enlarged; a higher --dpi gives sharper pictures",
            highlight=False,
        )
    if report.scaled_down:
        from scraping.pages import MAX_PAGE_PIXELS

        console.print(
            f"[yellow]Warning:[/] {report.scaled_down} pages were too large to render at {dpi} dpi and were rendered "
            f"smaller (at most {MAX_PAGE_PIXELS / 1e6:g} million pixels a page)",
            highlight=False,
        )
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(report.dropped.items())) or "none"
    console.print(
        f"[green]✓[/] {report.kept} pictures ({report.count('train')} train, {report.count('validation')} validation) "
        f"from {len(report.books)} books at {size} px → {escape(str(out))}; pages dropped: {dropped}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `fairytale scrape` and `fairytale dataset` to ``app``."""
    app.command("scrape")(scrape_command)
    app.add_typer(dataset_app, name="dataset")
