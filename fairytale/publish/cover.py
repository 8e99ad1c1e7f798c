"""The wraparound cover PDF of a printed book: back, spine and front on one sheet, with bleed.

The front is the cover picture with the title and author on a light band; the back carries the
plan's back-cover text on a soft colour taken from the cover picture, with the barcode area
(lower right of the back, where the services print it) left white and empty; the spine has the
title and author only where the service allows spine text and the spine is wide enough.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fairytale.book_words import book_words
from fairytale.errors import FairytaleError, PlanError
from fairytale.files import atomic_path
from fairytale.pdf.fonts import book_fonts, printable
from fairytale.pdf.images import PictureJob, prepare_picture
from fairytale.pdf.layout import INCH, Rect
from fairytale.pdf.right_to_left import joined_letters
from fairytale.pdf.text import fit_text
from fairytale.pdf.writer import INK, PlacedText, binary_streams, draw_band, draw_block
from fairytale.publish.presets import CoverSpec, PrintPreset


@dataclass
class CoverReport:
    """What the cover PDF holds: its arithmetic, the texts drawn and the barcode area."""

    path: Path
    spec: CoverSpec
    barcode: Rect
    texts: list[PlacedText] = field(default_factory=list)
    effective_dpi: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _soft_colour(picture: Path) -> tuple[float, float, float]:
    """The cover picture's mean colour, lightened so dark text on it stays readable."""
    from PIL import ImageStat

    from fairytale.images import open_rgb

    mean = ImageStat.Stat(open_rgb(picture, what="cover picture").resize((32, 32))).mean
    return tuple(0.75 + 0.25 * channel / 255 for channel in mean)  # type: ignore[return-value]


def write_cover_pdf(
    path: Path,
    spec: CoverSpec,
    preset: PrintPreset,
    *,
    title: str,
    author: str | None,
    back_text: str | None,
    cover_picture: Path,
    dpi: int = 300,
    jpeg_quality: int = 90,
    language: str = "en",
) -> CoverReport:
    """Write the wraparound cover to ``path`` (atomically) and report what is on it. Its
    document title names it the cover in the book's ``language`` (BCP 47)."""
    from reportlab.pdfgen.canvas import Canvas

    fonts = book_fonts()
    warnings: list[str] = []
    title = printable(joined_letters(title), fonts)[0]
    author = printable(joined_letters(author), fonts)[0] if author else None
    margin = preset.cover_margin_in * INCH
    fold = preset.spine_fold_margin_in * INCH
    media, back, spine, front = spec.media, spec.back, spec.spine, spec.front
    bleed = spec.bleed_in * INCH
    texts: list[PlacedText] = []

    # Each panel keeps the fold margin on its spine side: the front's left and the back's right
    # in a book bound on the left, the other way round in one bound on the right.
    bound_left = spec.binding == "left"

    def panel_safe(panel: Rect, spine_on_right: bool) -> Rect:
        left, right = (margin, max(margin, fold)) if spine_on_right else (max(margin, fold), margin)
        return Rect(panel.x + left, panel.y + margin, panel.width - left - right, panel.height - 2 * margin)

    # front: the picture over the front panel and its outer bleed, the title on a band at the top
    front_safe = panel_safe(front, spine_on_right=not bound_left)
    picture_box = (
        Rect(front.x, 0.0, front.width + bleed, media.height)
        if bound_left
        else Rect(0.0, 0.0, front.right, media.height)
    )
    title_block = fit_text(title, fonts.bold, front_safe.width, front.height * 0.3, 44.0, 14.0)
    if title_block is None:
        raise PlanError("The title is too long to fit the front cover; shorten it in the plan")
    author_block = (
        fit_text(author, fonts.regular, front_safe.width, front.height * 0.1, 20.0, 9.0) if author else None
    )
    gap = 0.15 * INCH
    content = title_block.height + (gap + author_block.height if author_block else 0.0)
    band_bottom = front_safe.top - content - 0.25 * INCH
    band = Rect(picture_box.x, band_bottom, picture_box.width, media.top - band_bottom)
    title_box = Rect(front_safe.x, front_safe.top - title_block.height, front_safe.width, title_block.height)
    author_box = (
        Rect(front_safe.x, title_box.y - gap - author_block.height, front_safe.width, author_block.height)
        if author_block
        else None
    )

    # back: the barcode area at the foot beside the spine (lower right of a left-bound book's
    # back, mirrored on a right-bound one's), the text above it
    barcode_w, barcode_h = (v * INCH for v in preset.barcode_in)
    back_safe = panel_safe(back, spine_on_right=bound_left)
    barcode_x = back_safe.right - barcode_w if bound_left else back_safe.x
    barcode = Rect(barcode_x, back_safe.y, barcode_w, barcode_h)
    text_box = Rect(
        back_safe.x, barcode.top + 0.3 * INCH, back_safe.width, back_safe.top - barcode.top - 0.3 * INCH
    )
    back_block = None
    if back_text:
        back_block = fit_text(
            printable(joined_letters(back_text), fonts)[0], fonts.regular, text_box.width, text_box.height, 16.0, 8.0
        )
        if back_block is None:
            raise PlanError(
                "The back-cover text is too long for the back cover; shorten back_cover_text in the plan"
            )
    else:
        warnings.append("no back-cover text: the back cover is plain (set back_cover_text in the plan)")

    # spine: rotated text only when allowed and wide enough
    spine_block = None
    if spec.spine_text:
        line = f"{title} · {author}" if author else title
        spine_block = fit_text(line, fonts.bold, spine.height - 2 * margin, spine.width - 2 * fold, 14.0, 6.0)
        if spine_block and len([t for t in spine_block.lines if t]) > 1:
            spine_block = None  # a spine line never wraps
        if spine_block is None:
            warnings.append("the spine is too narrow for its text; it is left plain")

    colour = _soft_colour(cover_picture)
    with tempfile.TemporaryDirectory(prefix="fairytale-cover-") as cache:
        picture = prepare_picture(
            PictureJob(Path(cover_picture), picture_box, crop=True),
            Path(cache),
            dpi=dpi,
            quality=jpeg_quality,
        )
        with binary_streams(), atomic_path(path) as tmp:
            canvas = Canvas(
                str(tmp),
                pagesize=(media.width, media.height),
                pageCompression=1,
                initialFontName=fonts.regular,
            )
            canvas.setTitle(f"{title} ({book_words(language).cover})")
            canvas.setAuthor(author or "")
            canvas.setTrimBox(spec.trim.as_box())
            canvas.setBleedBox(media.as_box())
            canvas.setFillColorRGB(*colour)
            # back and spine, with their bleed: all of the sheet the picture does not cover
            plain = (
                Rect(0, 0, front.x, media.height)
                if bound_left
                else Rect(front.right, 0, media.width - front.right, media.height)
            )
            canvas.rect(plain.x, plain.y, plain.width, plain.height, stroke=0, fill=1)
            canvas.drawImage(
                str(picture.path), picture_box.x, picture_box.y, picture_box.width, picture_box.height
            )
            draw_band(canvas, band)
            draw_block(canvas, title_block, title_box, centre_vertically=False)
            texts.append(PlacedText(0, "front title", title_box, front_safe))
            if author_block and author_box:
                draw_block(canvas, author_block, author_box, centre_vertically=False)
                texts.append(PlacedText(0, "front author", author_box, front_safe))
            if back_block:
                draw_block(canvas, back_block, text_box)
                texts.append(PlacedText(0, "back text", text_box, back_safe))
            canvas.setFillColorRGB(1, 1, 1)
            canvas.rect(barcode.x, barcode.y, barcode.width, barcode.height, stroke=0, fill=1)
            if spine_block:
                canvas.saveState()
                # rotated to read top to bottom, as spines of English books do
                canvas.translate(spine.x + spine.width / 2, spine.top - margin)
                canvas.rotate(-90)
                box = Rect(0, -spine_block.height / 2, spine.height - 2 * margin, spine_block.height)
                draw_block(canvas, spine_block, box)
                canvas.restoreState()
                spine_safe = Rect(
                    spine.x + fold, spine.y + margin, spine.width - 2 * fold, spine.height - 2 * margin
                )
                ink = Rect(
                    spine.x + spine.width / 2 - spine_block.height / 2,
                    spine.y + margin,
                    spine_block.height,
                    spine.height - 2 * margin,
                )
                texts.append(PlacedText(0, "spine", ink, spine_safe))
            canvas.setFillColorRGB(*INK)
            canvas.showPage()
            try:
                canvas.save()
            except OSError as exc:
                raise FairytaleError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    return CoverReport(Path(path), spec, barcode, texts, picture.effective_dpi, warnings)
