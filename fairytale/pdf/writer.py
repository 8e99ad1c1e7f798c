"""Drawing the book with reportlab: cover, title page, story pages, in that order.

The layout is decided first (:mod:`fairytale.pdf.layout`), pictures are prepared at print
resolution in parallel (:mod:`fairytale.pdf.images`; Pillow releases the GIL while it resizes
and encodes), and only then is the PDF drawn, into a temporary file renamed into place when
complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from fairytale import __version__
from fairytale.book_words import BookWords, book_words
from fairytale.errors import FairytaleError, PlanError
from fairytale.files import atomic_path, ensure_dir
from fairytale.pdf.fonts import FontFamily, book_fonts, describe_missing, printable
from fairytale.pdf.images import PictureJob, PreparedPicture, prepare_picture
from fairytale.pdf.layout import (
    INCH,
    LAYOUT_CHOICES,
    MARGIN_IN,
    NUMBER_SIZE,
    LayoutChoice,
    PageGeometry,
    PictureBox,
    Rect,
    StoryPageLayout,
    layout_facing_pages,
    layout_story_page,
)
from fairytale.pdf.right_to_left import joined_letters
from fairytale.pdf.text import ASCENT, TextBlock, fit_text
from fairytale.reading_direction import Binding

INK = (0.13, 0.13, 0.15)
BAND_ALPHA = 0.85


@dataclass(frozen=True)
class BookPage:
    """One story page as the PDF needs it."""

    number: int
    text: str
    picture: Path
    layout: LayoutChoice | None = None  # None: the book's default


@dataclass(frozen=True)
class BookContents:
    """What goes into the PDF."""

    title: str
    author: str | None
    pages: Sequence[BookPage]
    cover_picture: Path
    credit: str | None = None  # a small line at the foot of the title page
    language: str = "en"  # BCP 47: the language of the words the book adds ("The End", "by …")


@dataclass(frozen=True)
class PdfSettings:
    """Print options: trim size, bleed, resolution, JPEG quality and the default layout.

    The print-on-demand presets (:mod:`fairytale.publish.presets`) also set: bleed on the
    outside edges only, a gutter, no cover page (the cover is a separate file), closing pages
    ("The End", credits) and a minimum, even page count. The words the book adds are in the
    language of its :class:`BookContents` (:mod:`fairytale.book_words`).
    """

    trim: str = "8.5x8.5"
    bleed: bool = False
    dpi: int = 300
    jpeg_quality: int = 90
    layout: LayoutChoice = "auto"
    bleed_edges: Literal["all", "outside"] = "all"
    inside_margin_in: float = MARGIN_IN
    cover_page: bool = True
    closing_pages: bool = False
    min_pages: int = 0
    even_pages: bool = False
    facing: bool = False  # each story page as a spread: text on the first page, picture on the next
    binding: Binding = "left"  # the bound edge seen from the front cover: "right" for right-to-left books
    last_page_blank: bool = False  # the book's last page left empty (a printer's barcode goes there)

    def geometry(self, page_index: int = 0) -> PageGeometry:
        """The geometry of the PDF page at ``page_index`` (0-based). Even indexes are rectos, as
        the first page of a bound book is: right-hand pages of a book bound on the left, and
        left-hand pages of one bound on the right (a right-to-left book), so its gutter and
        bleed are mirrored. The order of the pages is the reading order either way."""
        base = PageGeometry.for_trim(self.trim, self.bleed)
        recto, verso = ("right", "left") if self.binding == "left" else ("left", "right")
        side = recto if page_index % 2 == 0 else verso
        return replace(base, bleed_edges=self.bleed_edges, side=side, inside_margin_in=self.inside_margin_in)

    def story_page_index(self, number: int) -> int:
        """The 0-based PDF page index of story page ``number`` (after the cover and title page);
        with ``facing``, of its text page (the picture page follows)."""
        first = 2 if self.cover_page else 1
        return first + (2 * (number - 1) if self.facing else number - 1)


@dataclass(frozen=True)
class PlacedText:
    """A text block as drawn: the PDF page (0-based), what it is, the box its ink stays inside,
    and that page's safe area."""

    page_index: int
    what: str
    box: Rect
    safe: Rect


@dataclass
class PdfReport:
    """What was written: page count, size, layouts and the effective DPI of each picture."""

    path: Path
    page_count: int
    bytes: int
    seconds: float
    font: str
    layouts: dict[int, str] = field(default_factory=dict)
    effective_dpi: dict[int, float] = field(default_factory=dict)  # by story page; 0 is the cover
    warnings: list[str] = field(default_factory=list)
    texts: list[PlacedText] = field(default_factory=list)  # every text block drawn, for preflight
    closing_pages: int = 0  # pages after the story ("The End", credits, padding)


def _printable(text: str, fonts: FontFamily, where: str, warnings: list[str]) -> str:
    result, missing = printable(joined_letters(text), fonts)
    if missing:
        warnings.append(f"{where}: the font has no glyph for {describe_missing(missing)}; shown as {fonts.replacement}")
    return result


def plan_story_layouts(
    pages: Sequence[tuple[int, str, LayoutChoice | None]],
    settings: PdfSettings,
    picture_aspect: float = 1.0,
    *,
    geometry: PageGeometry | None = None,
) -> tuple[dict[int, StoryPageLayout], list[str]]:
    """Lay out every story page (number, text, layout choice) without drawing anything.

    Raises :class:`PlanError` naming the first page whose text cannot fit. Returns the layouts
    by page number and warnings (replaced characters, changed layouts). ``geometry`` defaults
    to the settings' right-hand page (a left-hand page's safe area has the same size).
    """
    fonts = book_fonts()
    geometry = geometry or settings.geometry()
    layouts, warnings = {}, []
    for number, text, choice in pages:
        if (choice or settings.layout) not in LAYOUT_CHOICES:
            raise PlanError(f"Unknown layout '{choice}' on page {number}. Choose one of: {', '.join(LAYOUT_CHOICES)}")
        drawable = _printable(text, fonts, f"page {number}", warnings)
        layout, warning = layout_story_page(
            number, drawable, fonts.regular, geometry, choice or settings.layout, picture_aspect
        )
        if warning:
            warnings.append(warning)
        layouts[number] = layout
    return layouts, warnings


def _picture_aspect(path: Path) -> float:
    from fairytale.images import picture_size

    width, height = picture_size(path, what="page picture")  # reads the header only
    return width / height


@contextlib.contextmanager
def _binary_streams() -> Iterator[None]:
    # reportlab ASCII85-encodes every stream by default (25 % larger files, for 7-bit mail
    # transports nobody uses for PDFs any more). It is a module setting, so set it for this build
    # only and put it back.
    from reportlab import rl_config

    saved = rl_config.useA85
    rl_config.useA85 = 0
    try:
        yield
    finally:
        rl_config.useA85 = saved


def _draw_picture(canvas, picture: PreparedPicture, box: PictureBox) -> None:
    # A file name, not an ImageReader: reportlab then embeds the JPEG bytes as they are, where
    # an ImageReader would be decoded and hashed pixel by pixel (a second per ten pictures).
    rect = box.rect
    canvas.drawImage(str(picture.path), rect.x, rect.y, rect.width, rect.height)


def _draw_block(canvas, block: TextBlock, box: Rect, centre_vertically: bool = True) -> None:
    """Draw ``block`` centred in ``box`` (lines centred horizontally)."""
    canvas.setFont(block.font, block.size)
    canvas.setFillColorRGB(*INK)
    spare = box.height - block.height if centre_vertically else 0.0
    first_baseline = box.top - spare / 2 - ASCENT * block.size
    centre = box.x + box.width / 2
    for line, offset in block.drawn():
        canvas.drawCentredString(centre, first_baseline + offset, line)


def _band(canvas, rect: Rect) -> None:
    canvas.saveState()
    canvas.setFillColorRGB(1, 1, 1)
    canvas.setFillAlpha(BAND_ALPHA)
    canvas.rect(rect.x, rect.y, rect.width, rect.height, stroke=0, fill=1)
    canvas.restoreState()


def _cover_layout(title: str, author: str | None, fonts: FontFamily, geometry: PageGeometry):
    safe, trim, media = geometry.safe, geometry.trim, geometry.media
    max_height = trim.height * 0.30
    title_block = fit_text(title, fonts.bold, safe.width, max_height, 44.0, 18.0)
    if title_block is None:
        raise PlanError(f"The title is too long to fit the cover of a {geometry.trim_name} book; shorten it.")
    author_block = None
    if author:
        size = max(12.0, min(20.0, title_block.size * 0.5))
        author_block = fit_text(author, fonts.regular, safe.width, trim.height * 0.1, size, 10.0)
        if author_block is None:
            raise PlanError("The author line is too long to fit the cover; shorten it.")
    gap = 0.15 * INCH
    content = title_block.height + (gap + author_block.height if author_block else 0.0)
    top = safe.top
    band_bottom = top - content - 0.25 * INCH
    band = Rect(media.x, band_bottom, media.width, media.top - band_bottom)
    title_box = Rect(safe.x, top - title_block.height, safe.width, title_block.height)
    author_box = (
        Rect(safe.x, title_box.y - gap - author_block.height, safe.width, author_block.height) if author_block else None
    )
    return band, (title_block, title_box), (author_block, author_box)


def check_cover_text(title: str, author: str | None, settings: PdfSettings) -> None:
    """Raise the one-line :class:`PlanError` :func:`write_book_pdf` would raise for a title or
    an author line too long for the cover, so a render can say it before painting a page."""
    fonts = book_fonts()
    ignored: list[str] = []  # characters the font lacks are reported when the book is written
    title = _printable(title, fonts, "title", ignored)
    author = _printable(author, fonts, "author", ignored) if author else None
    _cover_layout(title, author, fonts, settings.geometry())


#: Threads that scale and encode a book's pictures (None: one per CPU, at most 8). A process
#: told to work on N threads (a `fairytale library` worker) sets it, so that it keeps to them.
PICTURE_THREADS: int | None = None


def _prepare_all(jobs: dict[int, PictureJob], cache: Path, settings: PdfSettings) -> dict[int, PreparedPicture]:
    # Identical jobs (the cover and a full-bleed page of the same picture) are prepared once.
    unique = {job: None for job in jobs.values()}
    workers = max(1, min(PICTURE_THREADS or min(8, os.cpu_count() or 1), len(unique)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            job: pool.submit(prepare_picture, job, cache, dpi=settings.dpi, quality=settings.jpeg_quality)
            for job in unique
        }
        done = {job: future.result() for job, future in futures.items()}
    return {key: done[job] for key, job in jobs.items()}


def _prune(cache: Path, keep: set[Path]) -> None:
    for stale in cache.glob("*.jpg"):
        if stale not in keep:
            stale.unlink(missing_ok=True)


def _by_line(words: BookWords, author: str, fonts: FontFamily, warnings: list[str]) -> str:
    """The drawable author line ("by Sam", "מאת Sam") of the drawable ``author``: the book's
    words around it made drawable on their own, so a character the author's name lacks in the
    font is reported once, as the author's."""
    before, _, after = words.by_author.partition("{author}")
    return "".join(
        (
            _printable(before, fonts, "author line", warnings) if before else "",
            author,
            _printable(after, fonts, "author line", warnings) if after else "",
        )
    )


def _closing_texts(
    settings: PdfSettings, credit: str | None, count: int, contents: BookContents, words: BookWords
) -> list[tuple[str, str]]:
    """The pages after the story, as (what, text): "The End" and the credits when asked for
    (in the book's language), then pages to draw on (or blank ones) until the minimum and an
    even count are met; with ``last_page_blank`` the last of them is empty."""
    pages: list[tuple[str, str]] = []
    if settings.closing_pages:
        pages.append(("the end", words.the_end))
        made_by = contents.title + (f"\n{words.by(contents.author)}" if contents.author else "")
        pages.append(("credits", f"{made_by}\n\n{credit}" if credit else made_by))
    filler = "drawing page" if settings.closing_pages else "blank"
    while count + len(pages) < settings.min_pages or (settings.even_pages and (count + len(pages)) % 2):
        pages.append((filler, ""))
    if settings.last_page_blank and (not pages or pages[-1][0] != "blank"):
        if pages and pages[-1][0] == "drawing page":  # padding anyway: its last page stays empty
            pages[-1] = ("blank", "")
        else:
            pages.append(("blank", ""))
            if settings.even_pages and (count + len(pages)) % 2:
                pages.insert(-1, (filler, ""))
    return pages


def _drawing_page(canvas, fonts: FontFamily, geometry: PageGeometry, block, caption_text: str) -> None:
    """A framed space to draw in, with a caption (drawable, in the book's language): kinder
    padding than a blank page."""
    safe = geometry.safe
    caption = fit_text(caption_text, fonts.regular, safe.width, 0.6 * INCH, 16.0, 9.0)
    caption_box = Rect(safe.x, safe.top - 0.6 * INCH, safe.width, 0.6 * INCH)
    if caption:
        block(geometry, "drawing page", caption, caption_box)
    frame = Rect(safe.x, safe.y, safe.width, caption_box.y - 0.2 * INCH - safe.y)
    canvas.saveState()
    canvas.setStrokeColorRGB(*INK)
    canvas.setLineWidth(1.0)
    canvas.setDash(4, 4)
    canvas.rect(frame.x, frame.y, frame.width, frame.height, stroke=1, fill=0)
    canvas.restoreState()


def write_book_pdf(
    contents: BookContents,
    path: Path,
    settings: PdfSettings | None = None,
    *,
    picture_cache: Path | None = None,
) -> PdfReport:
    """Write the picture book to ``path`` (atomically) and report what went into it.

    Pages: a cover (picture, title, author), a title page, then one page per story page with
    its number. Every font is embedded; every picture is placed at ``settings.dpi``.

    ``picture_cache`` keeps the print-resolution JPEGs between builds (a book folder's
    ``print/``; pictures this build does not use are removed from it); without it they go to a
    temporary folder.
    """
    if picture_cache is None:
        with tempfile.TemporaryDirectory(prefix="fairytale-pdf-") as tmp:
            return write_book_pdf(contents, path, settings, picture_cache=Path(tmp))
    from reportlab.pdfgen.canvas import Canvas

    start = time.perf_counter()
    settings = settings or PdfSettings()
    path = Path(path)
    picture_cache = ensure_dir(Path(picture_cache))
    fonts = book_fonts()
    words = book_words(contents.language)
    geometry = settings.geometry()
    warnings: list[str] = []
    if not contents.pages:
        raise PlanError("A book needs at least one page")

    # 1. lay out every page (text fitting needs no pictures, but uses their real shapes)
    story_pages = [(p.number, p.text, p.layout) for p in contents.pages]
    aspects = {p.number: _picture_aspect(p.picture) for p in contents.pages}
    layouts: dict[int, StoryPageLayout] = {}
    for number, text, choice in story_pages:
        index = settings.story_page_index(number)
        if settings.facing:
            drawable = _printable(text, fonts, f"page {number}", warnings)
            layouts[number] = layout_facing_pages(
                number, drawable, fonts.regular, settings.geometry(index), settings.geometry(index + 1)
            )
            continue
        found, page_warnings = plan_story_layouts(
            [(number, text, choice)], settings, aspects[number], geometry=settings.geometry(index)
        )
        layouts.update(found)
        warnings.extend(page_warnings)
    title = _printable(contents.title, fonts, "title", warnings)
    author = _printable(contents.author, fonts, "author", warnings) if contents.author else None
    band, (title_block, title_box), (author_block, author_box) = _cover_layout(title, author, fonts, geometry)

    # 2. prepare the pictures at print resolution, in parallel (0 is the cover)
    # (a print-on-demand interior has no cover page: its cover is a separate file)
    boxes = {0: PictureBox(geometry.media, crop=True)} if settings.cover_page else {}
    boxes.update({n: layout.picture for n, layout in layouts.items()})
    sources = {0: Path(contents.cover_picture)} | {p.number: Path(p.picture) for p in contents.pages}
    jobs = {key: PictureJob(sources[key], boxes[key].rect, boxes[key].crop) for key in boxes}
    pictures = _prepare_all(jobs, picture_cache, settings)

    # 3. draw, into a temporary file renamed into place when complete
    media = geometry.media
    with _binary_streams(), atomic_path(path) as tmp:
        canvas = Canvas(
            str(tmp),
            pagesize=(media.width, media.height),
            pageCompression=1,
            initialFontName=fonts.regular,  # never the unembedded base-14 Helvetica
        )
        canvas.setTitle(contents.title)
        canvas.setAuthor(contents.author or "")
        canvas.setCreator(f"fAIrytale {__version__}")
        canvas.setSubject(words.book_subject)
        texts: list[PlacedText] = []
        index = 0

        def begin(page_index: int) -> PageGeometry:
            page_geometry = settings.geometry(page_index)
            if page_geometry.bleed_in:
                canvas.setTrimBox(page_geometry.trim.as_box())
                canvas.setBleedBox(page_geometry.media.as_box())
            return page_geometry

        def block(page_geometry: PageGeometry, what: str, text_block: TextBlock, box: Rect, **how) -> None:
            _draw_block(canvas, text_block, box, **how)
            texts.append(PlacedText(index, what, box, page_geometry.safe))

        def number(page_geometry: PageGeometry, value: int, baseline: float) -> None:
            canvas.setFont(fonts.regular, NUMBER_SIZE)
            canvas.setFillColorRGB(*INK)
            trim, label = page_geometry.trim, str(value)
            centre = trim.x + trim.width / 2
            canvas.drawCentredString(centre, baseline, label)
            width = canvas.stringWidth(label, fonts.regular, NUMBER_SIZE)
            box = Rect(centre - width / 2, baseline, width, ASCENT * NUMBER_SIZE)  # digits have no descent
            texts.append(PlacedText(index, f"page number {value}", box, page_geometry.safe))

        # cover (not in a print-on-demand interior: its cover is a separate file)
        if settings.cover_page:
            page_geometry = begin(index)
            _draw_picture(canvas, pictures[0], boxes[0])
            _band(canvas, band)
            block(page_geometry, "cover title", title_block, title_box, centre_vertically=False)
            if author_block and author_box:
                block(page_geometry, "cover author", author_block, author_box, centre_vertically=False)
            canvas.showPage()
            index += 1

        # title page
        safe = begin(index).safe
        # each block is fitted to exactly the box it is drawn in, so nothing can spill out of it
        title_page_block = fit_text(title, fonts.bold, safe.width, safe.height * 0.45, 36.0, 16.0) or fit_text(
            title, fonts.bold, safe.width, safe.height * 0.45, 16.0, 6.0
        )
        if title_page_block is None:
            raise PlanError("The title is too long to fit on the title page; shorten it in the plan")
        page_geometry = settings.geometry(index)
        block(page_geometry, "title", title_page_block, Rect(safe.x, safe.y + safe.height * 0.45, safe.width, safe.height * 0.45))
        if author:
            by = fit_text(_by_line(words, author, fonts, warnings), fonts.regular, safe.width, safe.height * 0.18, 18.0, 10.0)
            if by:
                block(page_geometry, "author", by, Rect(safe.x, safe.y + safe.height * 0.25, safe.width, safe.height * 0.18))
        credit = _printable(contents.credit, fonts, "credit line", warnings) if contents.credit else None
        if credit:
            credit_block = fit_text(credit, fonts.regular, safe.width, safe.height * 0.12, 9.0, 6.0)
            if credit_block:
                block(page_geometry, "credit", credit_block, Rect(safe.x, safe.y, safe.width, safe.height * 0.12))
        canvas.showPage()
        index += 1

        # story pages
        for page in contents.pages:
            page_geometry = begin(index)
            layout = layouts[page.number]
            if settings.facing:  # the text page, then the picture page
                block(page_geometry, f"page {page.number}", layout.text, layout.text_box)
                number(page_geometry, page.number, layout.number_y)
                canvas.showPage()
                index += 1
                begin(index)
                _draw_picture(canvas, pictures[page.number], layout.picture)
                canvas.showPage()
                index += 1
                continue
            _draw_picture(canvas, pictures[page.number], layout.picture)
            if layout.band:
                _band(canvas, layout.band)
            block(page_geometry, f"page {page.number}", layout.text, layout.text_box)
            number(page_geometry, page.number, layout.number_y)
            canvas.showPage()
            index += 1

        # closing pages: "The End", the credits, then pages to draw on until the count is right
        story_end = index
        closing = _closing_texts(settings, credit, index, contents, words)
        caption = None  # of the pages to draw on, made drawable once
        for what, text in closing:
            page_geometry = begin(index)
            safe = page_geometry.safe
            if text:
                size = 40.0 if what == "the end" else 12.0
                fitted = fit_text(_printable(text, fonts, what, warnings), fonts.bold if what == "the end" else fonts.regular,
                                  safe.width, safe.height * 0.5, size, 6.0)
                if fitted:
                    block(page_geometry, what, fitted, Rect(safe.x, safe.y + safe.height * 0.25, safe.width, safe.height * 0.5))
            elif what == "drawing page":
                if caption is None:
                    caption = _printable(words.drawing_caption, fonts, "drawing page", warnings)
                _drawing_page(canvas, fonts, page_geometry, block, caption)
            canvas.showPage()
            index += 1
        try:
            canvas.save()
        except OSError as exc:
            raise FairytaleError(f"Cannot write {path}: {exc.strerror or exc}") from exc

    _prune(picture_cache, {picture.path for picture in pictures.values()})
    size = path.stat().st_size
    report = PdfReport(
        path=path,
        page_count=index,
        texts=texts,
        closing_pages=index - story_end,
        bytes=size,
        seconds=time.perf_counter() - start,
        font=fonts.name,
        layouts={n: layout.layout for n, layout in layouts.items()},
        effective_dpi={key: picture.effective_dpi for key, picture in pictures.items()},
        warnings=warnings,
    )
    return report



# For the wraparound cover (fairytale.publish.cover), which draws in the same style.
draw_block = _draw_block
draw_band = _band
binary_streams = _binary_streams
cover_layout = _cover_layout
