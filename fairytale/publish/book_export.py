"""Publishing a painted book: the EPUB, and the print-on-demand interior, cover and preflight.

Works on a book folder (``out/ginger/`` beside ``out/ginger.pdf``): the plan, the page pictures
and the manifest a render left there. Nothing is painted again, so ``fairytale export`` takes
seconds, and an edit of the plan's text or alt text reaches the EPUB without a render.

Files written beside the book folder::

    out/ginger.epub                   --format epub
    out/ginger.pdf                    --format pdf (fairytale export; render writes it anyway)
    out/ginger-kdp-interior.pdf       --preset kdp: the interior, no cover
    out/ginger-kdp-cover.pdf          --preset kdp: the wraparound cover
    out/ginger/preflight-kdp.txt      --preset kdp: the preflight report
    out/ginger/print-kdp/             --preset kdp: the interior's pictures at print resolution
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

from fairytale import __version__
from fairytale.book_words import book_words
from fairytale.errors import FairytaleError
from fairytale.files import atomic_file_set, check_output_path, ensure_dir
from fairytale.pdf import BookContents, BookPage, PdfReport, PdfSettings, write_book_pdf
from fairytale.plan import BookPlan, load_plan
from fairytale.publish.alt_text import alt_text
from fairytale.publish.cover import CoverReport, write_cover_pdf
from fairytale.publish.epub import EpubBook, EpubPage, EpubReport, write_epub
from fairytale.publish.page_order import reverse_page_order
from fairytale.publish.preflight import PreflightReport, run_preflight
from fairytale.publish.presets import cover_spec, get_preset
from fairytale.reading_direction import binding_edge
from fairytale.render.manifest import Manifest, load_manifest, resolve_in_book

FORMATS = ("pdf", "epub")


def parse_formats(spec: str) -> tuple[str, ...]:
    """``"pdf,epub"`` -> ``("pdf", "epub")``; an unknown format is a one-line error."""
    formats = tuple(dict.fromkeys(part.strip().lower() for part in spec.split(",") if part.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise FairytaleError(
            f"Unknown format '{spec}'. Choose from: {', '.join(FORMATS)} (e.g. --format pdf,epub)"
        )
    return formats


@dataclass(frozen=True)
class PublishOptions:
    """What to make of a painted book: formats, and a print-on-demand preset with its paper."""

    formats: tuple[str, ...] = ("pdf",)
    preset: str | None = None
    paper: str | None = None
    spine_width: float | None = None  # inches; overrides the paper arithmetic
    facing: bool = False  # the interior as spreads: text on the left page, picture on the right

    def __post_init__(self) -> None:
        if self.formats:
            parse_formats(",".join(self.formats))
        if self.preset is not None:  # paper and spine width: one line before any work
            get_preset(self.preset).check_spine(self.paper, self.spine_width)
        elif self.paper or self.spine_width is not None or self.facing:
            raise FairytaleError("--paper, --spine-width and --facing go with --preset kdp|ingramspark")


@dataclass
class PublishResult:
    """The files made and the preflight, if a preset was given."""

    book_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # "epub", "pdf", "interior", "cover", "preflight"
    epub: EpubReport | None = None
    pdf: PdfReport | None = None
    interior: PdfReport | None = None
    cover: CoverReport | None = None
    preflight: PreflightReport | None = None
    warnings: list[str] = field(default_factory=list)


def _output(book_dir: Path, suffix: str) -> Path:
    return check_output_path(book_dir.parent / f"{book_dir.name}{suffix}")


def _credit(manifest: Manifest, language: str) -> str:
    """The credit line, in the book's language: the model that painted it, and our version."""
    return book_words(language).credit(manifest.model_credit or _public(manifest.model), __version__)


def _public(label: str) -> str:
    """The model ``label`` of an older manifest ("REF (role)") with a local path cut to its last
    part: a printed book never shows the painter's folders."""
    ref, role = label.rsplit(" (", 1) if label.endswith(")") and " (" in label else (label, None)
    if ref.startswith(("/", "~", ".", "\\")) or (len(ref) > 1 and ref[1] == ":") or ref.count("/") > 1:
        ref = ref.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return f"{ref} ({role}" if role else ref


def _pictures(book_dir: Path, manifest: Manifest, plan: BookPlan) -> dict[int, Path]:
    numbers = [p.number for p in manifest.pages]
    if numbers != [p.number for p in plan.pages]:
        raise FairytaleError(
            f"The plan has {len(plan.pages)} pages but {book_dir} holds pictures of {len(numbers)}: "
            "render the plan again first (`fairytale render`)"
        )
    pictures = {}
    for page in manifest.pages:
        path = resolve_in_book(book_dir, page.print_image or page.image)
        if not path.is_file():
            raise FairytaleError(f"Picture of page {page.number} is missing: {path} (render the book again)")
        pictures[page.number] = path
    return pictures


def publish_book(
    book_dir: Path | str,
    options: PublishOptions,
    *,
    trim: str | None = None,
    layout: str | None = None,
    modified: _dt.datetime | None = None,
) -> PublishResult:
    """Make the formats and preset files of ``options`` from the painted book in ``book_dir``.

    ``trim`` and ``layout`` default to those the book was rendered with. Bad input (no painted
    book, a plan whose pages no longer match the pictures, an unknown preset or paper, a
    trim the service does not print) is a :class:`FairytaleError` before anything is written.
    """
    book_dir = Path(book_dir)
    if not book_dir.is_dir():
        raise FairytaleError(f"Book folder not found: {book_dir}")
    manifest = load_manifest(book_dir)
    plan = load_plan(resolve_in_book(book_dir, manifest.plan))
    pictures = _pictures(book_dir, manifest, plan)
    settings = manifest.settings
    trim = trim or settings.get("trim", "8.5x8.5")
    layout = layout or settings.get("layout", "auto")
    dpi = int(settings.get("dpi", 300))
    quality = int(settings.get("jpeg_quality", 90))
    upscaled = bool(settings.get("upscale", False))
    cover_number = manifest.cover_page if manifest.cover_page in pictures else 1
    result = PublishResult(book_dir)
    preset = get_preset(options.preset) if options.preset else None
    if preset and trim.lower() not in preset.trims:
        raise FairytaleError(
            f"{preset.label} does not print the trim size {trim}. Choose one of: {', '.join(preset.trims)}"
        )
    contents = BookContents(
        title=plan.title,
        author=plan.author,
        pages=[BookPage(p.number, p.text, pictures[p.number], p.layout) for p in plan.pages],
        cover_picture=pictures[cover_number],
        credit=_credit(manifest, plan.language),
        language=plan.language,
    )
    cache = ensure_dir(book_dir / "print")

    # Every file is staged and renamed into place only when all are made: an export that fails
    # half-way (a cover that cannot be drawn) leaves the previous export's files as they were,
    # never a new interior beside an old cover.
    with atomic_file_set() as staged:
        if "epub" in options.formats:
            book = EpubBook(
                title=plan.title,
                author=plan.author,
                language=plan.language,
                identifier=plan.book_id,
                pages=[
                    EpubPage(p.number, p.text, pictures[p.number], alt_text(plan, p), p.layout)
                    for p in plan.pages
                ],
                cover_picture=pictures[cover_number],
                cover_alt=alt_text(plan, plan.pages[cover_number - 1]),
                credit=_credit(manifest, plan.language),
                trim=trim,
                layout=layout,  # type: ignore[arg-type]
            )
            result.files["epub"] = _output(book_dir, ".epub")
            result.epub = write_epub(book, staged.stage(result.files["epub"]), modified=modified)
            result.warnings.extend(result.epub.warnings)

        if "pdf" in options.formats:
            pdf_settings = PdfSettings(trim, bool(settings.get("bleed", False)), dpi, quality, layout)  # type: ignore[arg-type]
            result.files["pdf"] = _output(book_dir, ".pdf")
            result.pdf = write_book_pdf(
                contents, staged.stage(result.files["pdf"]), pdf_settings, picture_cache=cache
            )

        if preset:
            # the page count (and with it the gutter) is known before drawing: title page, story
            # pages (two each when facing), "The End" and credits (and an empty last page for
            # the printer's barcode), padded to the minimum and even
            pages = max(
                preset.min_pages,
                1 + len(plan.pages) * (2 if options.facing else 1) + 2 + preset.last_page_blank,
            )
            pages += pages % 2
            interior_settings = PdfSettings(
                trim=trim,
                bleed=True,
                dpi=dpi,
                jpeg_quality=quality,
                layout=layout,  # type: ignore[arg-type]
                bleed_edges="outside",
                inside_margin_in=preset.gutter_in(pages),
                cover_page=False,
                closing_pages=True,
                min_pages=preset.min_pages,
                even_pages=True,
                facing=options.facing,
                binding=binding_edge(plan.language),
                last_page_blank=preset.last_page_blank,
            )
            interior_path = _output(book_dir, f"-{preset.name}-interior.pdf")
            cover_path = _output(book_dir, f"-{preset.name}-cover.pdf")
            # its own picture cache: each build prunes the JPEGs it does not use from its cache
            interior = write_book_pdf(
                contents,
                staged.stage(interior_path),
                interior_settings,
                picture_cache=ensure_dir(book_dir / f"print-{preset.name}"),
            )
            last_page_first = interior_settings.binding == "right" and preset.right_bound_last_page_first
            if last_page_first:
                interior = reverse_page_order(interior)
            spec = cover_spec(
                preset,
                trim,
                interior.page_count,
                options.paper,
                options.spine_width,
                interior_settings.binding,
            )
            cover = write_cover_pdf(
                staged.stage(cover_path),
                spec,
                preset,
                title=plan.title,
                author=plan.author,
                back_text=plan.back_cover_text,
                language=plan.language,
                cover_picture=pictures[cover_number],
                dpi=dpi,
                jpeg_quality=quality,
            )
            sheet = interior_settings.geometry().media
            report = run_preflight(
                preset,
                interior,
                cover,
                dpi=dpi,
                upscaled=upscaled,
                sheet_in=(sheet.width / 72, sheet.height / 72),
                binding=interior_settings.binding,
                last_page_first=last_page_first,
            )
            result.interior, result.cover, result.preflight = interior, cover, report
            preflight_path = book_dir / f"preflight-{preset.name}.txt"
            report.save(staged.stage(preflight_path))
            result.files |= {"interior": interior_path, "cover": cover_path, "preflight": preflight_path}
    for made in (result.epub, result.pdf, result.interior, result.cover):
        if made is not None:  # the reports name the files' final paths, not the staged ones
            made.path = staged.final(made.path)
    return result
