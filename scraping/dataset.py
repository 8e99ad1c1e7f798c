"""``build_dataset()``: the illustrated pages of the downloaded books as a Hugging Face imagefolder.

>>> build_dataset("books/", "dataset/", size=512, dpi=150, seed=0)   # doctest: +SKIP

The output, read by ``datasets.load_dataset("imagefolder", data_dir="dataset/")`` and by the
trainer (``fairytale train style --data dataset/``)::

    dataset/
      README.md                  what was built, from what, with which settings (and the terms)
      build.json                 the same for a program: inputs (PDF SHA-256s, titles), settings,
                                 the report, and every file written with its SHA-256
      train/metadata.jsonl       {"file_name": "...jpg", "caption": "...", "book": "...", "page": 7}
      train/*.jpg                size × size RGB pictures
      validation/metadata.jsonl
      validation/*.jpg

Captions never contain a placeholder token: they read ``a children's book illustration`` and,
when the page has a text layer, continue with the first words printed on the page
(``a children's book illustration, Ginger the giraffe loved to run``). A style trainer can use
them as ``f"{caption}, in the style of {token}"`` (the content words then explain the content,
so the token learns the style) or ignore them for its own templates.

The split is decided per picture from a hash of ``(seed, book sha256, page)``: the same inputs
and seed always give the same split, and adding a book never moves another book's pages.

``build.json`` lets a caller skip a build that would only write the same dataset again
(``reuse=True``, what the style notebook does): a dataset whose record names the same PDFs, titles
and settings, and whose files are all there unchanged, is kept as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pypdfium2 as pdfium
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from fairytale.errors import FairytaleError
from fairytale.files import atomic_path, atomic_write_text, ensure_dir, new_folder_mode, sha256_file
from scraping.discovery import title_from_url
from scraping.manifest import Manifest
from scraping.pages import PageRule, classify, is_cover, iter_pages, page_count, square_crop
from scraping.site import TERMS

log = logging.getLogger(__name__)

SIZES = (512, 768)
SPLITS = ("train", "validation")
CARD_HEADING = "# Picture-book style dataset (built by fAIrytale)"
BUILD_RECORD = "build.json"
"""What a dataset was built from and what it holds (see the module docstring)."""
RECORD_FORMAT = 1
"""Raised when what a build writes changes, so older datasets are built again, not reused."""
OUR_ENTRIES = ("README.md", *SPLITS, BUILD_RECORD)
"""Everything a dataset folder holds; --force replaces a folder holding only these (with our card)."""
STAGING_PREFIX = ".fairytale-dataset.tmp-"
CAPTION_PREFIX = "a children's book illustration"
CAPTION_WORDS = 20


@dataclass
class PageDecision:
    """What happened to one page: kept (``reason`` is None) or dropped, with its measures."""

    book: str
    page: int
    reason: str | None
    ink: float | None = None
    picture_ink: float | None = None
    split: str | None = None
    file_name: str | None = None
    upscaled: bool = False
    """The page rendered smaller than ``size`` at this dpi, so its picture was enlarged."""
    scaled_down: bool = False
    """The page was so large that it was rendered below the asked dpi (see ``MAX_PAGE_PIXELS``)."""


@dataclass
class DatasetReport:
    """The result of :func:`build_dataset`."""

    out_dir: Path
    size: int
    dpi: int
    seed: int
    validation_fraction: float
    books: list[str] = field(default_factory=list)
    skipped_files: dict[str, str] = field(default_factory=dict)
    pages: list[PageDecision] = field(default_factory=list)
    reused: bool = False
    """The dataset at ``out_dir`` was built earlier from the same inputs and settings and kept."""

    @property
    def kept(self) -> int:
        """How many pictures the dataset holds."""
        return sum(1 for page in self.pages if page.reason is None)

    def count(self, split: str) -> int:
        """How many pictures went to ``split`` (``train`` or ``validation``)."""
        return sum(1 for page in self.pages if page.split == split)

    @property
    def scaled_down(self) -> int:
        """How many pages were too large to render at the asked dpi (a pixel cap protects memory)."""
        return sum(1 for page in self.pages if page.scaled_down)

    @property
    def upscaled(self) -> int:
        """How many pictures had to be enlarged (raise the dpi to avoid it)."""
        return sum(1 for page in self.pages if page.upscaled)

    @property
    def dropped(self) -> Counter[str]:
        """Dropped pages by reason: ``cover``, ``blank``, ``text``."""
        return Counter(page.reason for page in self.pages if page.reason is not None)


@dataclass
class _Picture:
    book: str
    book_sha: str
    page: int
    file_name: str
    caption: str
    split: str = "train"
    order: float = 0.0


def build_dataset(
    pdf_dir: str | Path,
    out_dir: str | Path,
    *,
    size: int = 512,
    dpi: int = 150,
    seed: int = 0,
    validation_fraction: float = 0.1,
    rule: PageRule | None = None,
    overwrite: bool = False,
    reuse: bool = False,
    show_progress: bool = False,
    console: Console | None = None,
) -> DatasetReport:
    """Turn the illustrated pages of every PDF in ``pdf_dir`` into an imagefolder at ``out_dir``.

    ``size`` is 512 (SD 1.x) or 768 (SD 2.x); pages are rendered at ``dpi`` before the centre
    crop. Titles come from ``pdf_dir/manifest.jsonl`` when :func:`scraping.scrape` wrote one.
    Identical PDFs are used once. The dataset is assembled in a temporary folder beside
    ``out_dir`` and moved into place when complete; an existing non-empty ``out_dir`` is
    replaced only with ``overwrite``. With ``reuse``, a dataset at ``out_dir`` built earlier from
    the same PDFs (same contents and titles) with the same settings, with every file it wrote
    still there unchanged (see ``build.json``), is kept and its report returned with
    ``reused`` set; anything else is built as without it. Raises :class:`FairytaleError` for bad options, no PDFs,
    or no illustrated page at all.
    """
    # 1. Check the inputs before any work.
    rule = rule or PageRule()
    pdf_dir, out = Path(pdf_dir), Path(out_dir)
    _check_options(pdf_dir, out, size, dpi, validation_fraction, rule)
    inputs = _inputs(pdf_dir)
    settings = {"size": size, "dpi": dpi, "seed": seed, "validation_fraction": validation_fraction, **asdict(rule)}
    if reuse and (earlier := _earlier_build(out, inputs, settings)) is not None:
        return earlier
    _check_out_folder(out, overwrite)
    report = DatasetReport(out, size, dpi, seed, validation_fraction)

    # 2. The books: every readable PDF once, titled from the manifest when there is one.
    books = _list_books(pdf_dir, inputs, report)
    if not books:
        raise FairytaleError(f"No readable PDF files in {pdf_dir}")

    ensure_dir(out.parent if str(out.parent) else Path("."))
    with _staging(out, overwrite) as staging, _progress(show_progress, console) as progress:
        images = ensure_dir(staging / "images")
        task = progress.add_task("Pages", total=sum(count for *_, count in books))
        pictures: list[_Picture] = []
        # 3. Render, sort out and crop every page; write the pictures as they come.
        for path, title, sha, count in books:
            progress.update(task, description=f"Pages · {title[:40]}")
            try:
                decisions, book_pictures = _render_book(
                    path, title, sha, count, images, size, dpi, rule, progress, task
                )
            except pdfium.PdfiumError as exc:
                # A page tree that opens but breaks further on: the book is left out, the rest go on.
                report.skipped_files[path.name] = str(exc)
                log.warning("Skipping %s: %s", path.name, exc)
                continue
            report.books.append(title)
            report.pages.extend(decisions)
            pictures.extend(book_pictures)
        if not report.books:
            raise FairytaleError(
                f"No readable PDF files in {pdf_dir}: "
                + "; ".join(f"{name}: {why}" for name, why in list(report.skipped_files.items())[:3])
            )
        if not pictures:
            raise FairytaleError(
                f"No illustrated pages found in {len(books)} PDF(s) in {pdf_dir} "
                f"(all were covers, blank or text; try a lower --min-picture than {rule.min_picture})"
            )

        # 4. Split deterministically and write each split's folder and metadata.
        _split(pictures, seed, validation_fraction)
        for split in SPLITS:
            folder = ensure_dir(staging / split)
            rows = []
            for picture in pictures:
                if picture.split == split:
                    os.replace(images / picture.file_name, folder / picture.file_name)
                    rows.append(
                        {"file_name": picture.file_name, "caption": picture.caption, "book": picture.book, "page": picture.page}
                    )
            atomic_write_text(folder / "metadata.jsonl", "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        images.rmdir()
        splits = {(p.book, p.page): p.split for p in pictures}
        for decision in report.pages:
            decision.split = splits.get((decision.book, decision.page)) if decision.reason is None else None
        atomic_write_text(staging / "README.md", _card(report, rule))
        _write_record(staging, inputs, settings, report)
    # 5. The staging folder is now ``out``.
    return report


def _render_book(
    path: Path,
    title: str,
    sha: str,
    count: int,
    images: Path,
    size: int,
    dpi: int,
    rule: PageRule,
    progress: Progress,
    task: TaskID,
) -> tuple[list[PageDecision], list[_Picture]]:
    """Sort out every page of one book and write its pictures into ``images``.

    Raises ``pypdfium2.PdfiumError`` (naming the page, see :func:`iter_pages`) when a page cannot
    be read; the book's pictures written so far are removed first, so a damaged book leaves nothing.
    """
    covers = {n for n in range(1, count + 1) if is_cover(n, count, rule)}
    decisions = [PageDecision(title, number, "cover") for number in sorted(covers)]
    pictures: list[_Picture] = []
    progress.advance(task, len(covers))
    pages = iter_pages(path, dpi, skip=covers, rule=rule)
    try:
        for page in pages:
            decision = PageDecision(title, page.number, classify(page, rule), page.ink, page.picture_ink)
            decision.scaled_down = page.scaled_down
            decisions.append(decision)
            if decision.reason is None and page.image is not None:
                name = f"{_slug(title)}-{sha[:8]}-p{page.number:03d}.jpg"
                with atomic_path(images / name) as tmp:
                    square_crop(page.image, size).save(tmp, quality=95, subsampling=0)
                pictures.append(_Picture(title, sha, page.number, name, caption_for(page.text)))
                decision.file_name = name
                decision.upscaled = min(page.image.size) < size
            progress.advance(task)
    except pdfium.PdfiumError:
        for picture in pictures:
            (images / picture.file_name).unlink(missing_ok=True)
        progress.advance(task, count - len(decisions))  # the bar still reaches its end
        raise
    finally:
        pages.close()
    return sorted(decisions, key=lambda d: d.page), pictures


def caption_for(page_text: str) -> str:
    """The caption for a picture whose page carries ``page_text`` (may be empty).

    >>> caption_for("Ginger the giraffe loved to run. She ran every day.")
    "a children's book illustration, Ginger the giraffe loved to run"
    >>> caption_for("")
    "a children's book illustration"
    """
    text = " ".join(page_text.split())
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0] if text else ""
    words = re.sub(r"[\"“”«»]", "", sentence).split()[:CAPTION_WORDS]
    snippet = " ".join(words).rstrip(".,;:!?-–— ")
    return f"{CAPTION_PREFIX}, {snippet}" if snippet else CAPTION_PREFIX


# -- steps ----------------------------------------------------------------------------------


def _check_options(
    pdf_dir: Path, out: Path, size: int, dpi: int, validation_fraction: float, rule: PageRule
) -> None:
    if size not in SIZES:
        raise FairytaleError(f"--size must be 512 (SD 1.x) or 768 (SD 2.x), not {size}")
    if not 36 <= dpi <= 600:
        raise FairytaleError(f"--dpi must be between 36 and 600 (got {dpi})")
    if not 0 <= validation_fraction <= 0.5:
        raise FairytaleError(f"The validation fraction must be between 0 and 0.5 (got {validation_fraction})")
    if not 0 <= rule.min_picture < 1:
        raise FairytaleError(f"--min-picture is a fraction of the page, from 0 up to 1, not {rule.min_picture}")
    if not 0 <= rule.min_ink < 1:  # the Python API's only
        raise FairytaleError(f"min_ink is a fraction of the page, from 0 up to 1, not {rule.min_ink}")
    if not pdf_dir.is_dir():
        raise FairytaleError(f"PDF folder not found: {pdf_dir}")
    if out.exists() and not out.is_dir():
        raise FairytaleError(f"Output path is a file, not a folder: {out}")
    books, target = pdf_dir.resolve(), out.resolve()
    if target == books:
        raise FairytaleError("The dataset folder must not be the PDF folder")
    if target in books.parents:
        raise FairytaleError(
            f"The dataset folder {out} contains the PDF folder {pdf_dir}; choose a folder outside it, such as {pdf_dir.parent / 'dataset'}"
        )


def _check_out_folder(out: Path, overwrite: bool) -> None:
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FairytaleError(f"Output folder {out} is not empty (pass --force to replace it)")
        strangers = _not_ours(out)
        if strangers:
            raise FairytaleError(
                f"Output folder {out} holds files fAIrytale did not write ({', '.join(strangers[:3])}"
                f"{', …' if len(strangers) > 3 else ''}); --force replaces only a dataset it built: choose another folder"
            )


def _inputs(pdf_dir: Path) -> list[dict[str, str]]:
    """Every PDF of ``pdf_dir`` by name, with its SHA-256 and the title it is built under."""
    titles = Manifest.load(pdf_dir).complete_files()
    return [
        {"file": path.name, "sha256": sha256_file(path), "title": titles.get(path.name) or title_from_url(path.name)}
        for path in sorted(p for p in pdf_dir.iterdir() if p.is_file() and p.suffix.lower() == ".pdf")
    ]


def _list_books(pdf_dir: Path, inputs: list[dict[str, str]], report: DatasetReport) -> list[tuple[Path, str, str, int]]:
    seen: dict[str, str] = {}
    books = []
    for entry in inputs:
        path, sha = pdf_dir / entry["file"], entry["sha256"]
        if sha in seen:
            report.skipped_files[path.name] = f"same file as {seen[sha]}"
            continue
        try:
            count = page_count(path)
        except pdfium.PdfiumError as exc:
            report.skipped_files[path.name] = f"unreadable PDF ({exc})"
            log.info("Skipping %s: unreadable PDF (%s)", path.name, exc)
            continue
        seen[sha] = path.name
        books.append((path, entry["title"], sha, count))
    return books


def _written_files(folder: Path) -> dict[str, str]:
    """Every file of a dataset folder but its record, by path relative to it, with its SHA-256."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for name in ("README.md", *SPLITS)
        for path in ([folder / name] if name == "README.md" else sorted((folder / name).glob("*")))
        if path.is_file()
    }


def _write_record(folder: Path, inputs: list[dict[str, str]], settings: dict, report: DatasetReport) -> None:
    """Write ``build.json`` into the finished dataset ``folder`` (atomically: it is there whole or not at all)."""
    record = {
        "format": RECORD_FORMAT,
        "inputs": inputs,
        "settings": settings,
        "report": {
            "books": report.books,
            "skipped_files": report.skipped_files,
            "pages": [asdict(page) for page in report.pages],
        },
        "files": _written_files(folder),
    }
    atomic_write_text(folder / BUILD_RECORD, json.dumps(record, ensure_ascii=False, indent=1) + "\n")


def _earlier_build(out: Path, inputs: list[dict[str, str]], settings: dict) -> DatasetReport | None:
    """The report of the dataset at ``out`` when its record says it was built from ``inputs``
    with ``settings`` and every file it lists is there unchanged, with nothing else; else ``None``."""
    try:
        record = json.loads((out / BUILD_RECORD).read_text(encoding="utf-8"))
        if (
            record.get("format") != RECORD_FORMAT
            or record["inputs"] != inputs
            or record["settings"] != settings
            or record["files"] != _written_files(out)
        ):
            return None
        report = DatasetReport(
            out, settings["size"], settings["dpi"], settings["seed"], settings["validation_fraction"], reused=True
        )
        report.books = list(record["report"]["books"])
        report.skipped_files = dict(record["report"]["skipped_files"])
        report.pages = [PageDecision(**page) for page in record["report"]["pages"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # no record, or not one we can trust
        return None
    return report


def _split(pictures: list[_Picture], seed: int, fraction: float) -> None:
    for picture in pictures:
        digest = hashlib.sha256(f"{seed}:{picture.book_sha}:{picture.page}".encode()).hexdigest()
        picture.order = int(digest[:12], 16) / 16**12
        picture.split = "validation" if picture.order < fraction else "train"
    # Small sets: keep both splits non-empty when that is possible and asked for.
    validation = [p for p in pictures if p.split == "validation"]
    train = [p for p in pictures if p.split == "train"]
    if fraction > 0 and len(pictures) >= 2:
        if not validation:
            min(train, key=lambda p: p.order).split = "validation"
        elif not train:
            max(validation, key=lambda p: p.order).split = "train"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].strip("-") or "book"


def _not_ours(out: Path) -> list[str]:
    """The entries of ``out`` that are not part of a dataset this module wrote (sorted names)."""
    names = sorted(entry.name for entry in out.iterdir() if not entry.name.startswith(STAGING_PREFIX))
    card = out / "README.md"
    try:
        ours = card.is_file() and card.read_text(encoding="utf-8", errors="replace").startswith(CARD_HEADING)
    except OSError:
        ours = False
    return [name for name in names if not ours or name not in OUR_ENTRIES]


@contextlib.contextmanager
def _staging(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder whose content becomes ``out``'s on success.

    The temporary folder is removed on every way out (success, error, Ctrl-C). A new ``out``
    is the temporary folder renamed. An existing ``out`` stays the same folder (it may be the
    current directory): the temporary folder is made inside it (hidden), the old dataset's
    entries (only ever ours: see :func:`_check_options`) are moved aside and deleted, and the
    new entries are moved in.
    """
    out = out.resolve()
    existed = out.is_dir()
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out if existed else out.parent))
    trash: Path | None = None
    try:
        yield staging
        if not existed:
            os.replace(staging, out)
            # mkdtemp makes 0700 folders whatever the umask: the dataset gets a new folder's mode.
            os.chmod(out, new_folder_mode())
            return
        old = [out / name for name in OUR_ENTRIES if (out / name).exists() or (out / name).is_symlink()]
        old += [entry for entry in out.iterdir() if entry.name.startswith(STAGING_PREFIX) and entry != staging]
        if _not_ours(out) or (old and not overwrite):  # checked up front; re-checked against a race
            raise FairytaleError(f"Output folder {out} is not empty (pass --force to replace a dataset fAIrytale built)")
        trash = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
        for entry in old:
            os.replace(entry, trash / entry.name)
        # the record last: a dataset cut short while moving in has none, so it is never reused
        for entry in sorted(staging.iterdir(), key=lambda entry: entry.name == BUILD_RECORD):
            os.replace(entry, out / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _progress(show: bool, console: Console | None) -> Iterator[Progress]:
    progress = Progress(
        SpinnerColumn(),
        # Titles come from the books: shown as plain text, never read as rich markup.
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=not show,
    )
    with progress:
        yield progress


def _card(report: DatasetReport, rule: PageRule) -> str:
    dropped = ", ".join(f"{count} {reason}" for reason, count in sorted(report.dropped.items())) or "none"
    books = "\n".join(f"- {title}" for title in report.books)
    covers = "dropped the covers (first and last page)" if rule.drop_covers else "kept the covers"
    return f"""{CARD_HEADING}

{report.kept} pictures, {report.size}×{report.size}, from {len(report.books)} book(s):
{report.count("train")} train, {report.count("validation")} validation.

**For your own research use only. Do not share or redistribute these pictures.** {TERMS}

## How it was built

`fairytale dataset build` rendered every page at {report.dpi} dpi, {covers}, dropped near-blank pages (ink below {rule.min_ink:.0%} of the page) and text pages (solid ink outside
the PDF's text boxes below {rule.min_picture:.0%}; ink = a colour channel more than {rule.ink_threshold}/255 from
the paper colour, solid = its 8 neighbours are ink too), then centre-cropped and resized the rest. Dropped pages: {dropped}.
Split: seed {report.seed}, validation fraction {report.validation_fraction}, decided per picture from
a hash of (seed, book SHA-256, page).

Each `metadata.jsonl` row: `file_name`, `caption`, `book`, `page`.

## Books

{books}
"""
