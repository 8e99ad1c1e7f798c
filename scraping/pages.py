"""Rendering PDF pages and deciding which ones are pictures.

The rule (all numbers are options of :class:`PageRule`):

1. **cover**: the first and the last page of a book are its covers and are dropped
   (``drop_covers``);
2. the page is rendered and reduced to at most 384 px for measuring. The *paper* colour is the
   page's most common colour (channels quantised to 8 levels), so cream or tinted paper counts
   as paper; a pixel is *ink* when one of its channels differs from the paper by more than
   ``ink_threshold`` (out of 255);
3. **blank**: ink covers less than ``min_ink`` of the page (default 1 %);
4. **text**: *picture ink* covers less than ``min_picture`` of the page (default 10 %). Picture
   ink is ink in solid areas (the pixel and its 8 neighbours are all ink, so the thin strokes of
   letters vanish while painted areas stay) outside the boxes of the PDF's text layer. A page of
   text, typed or scanned, measures about 0–1 %; the illustrations of the test books measure
   about 40 %.

Everything else is kept as an illustration. The measures are returned so the thresholds can be
checked and tuned (``fairytale dataset build --min-picture``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
from PIL import Image

MEASURE_SIZE = 384
MAX_PAGE_PIXELS = 25_000_000
"""A page is rendered at a lower scale when its render would exceed this many pixels (about
100 MB as RGBA): an 8.5 × 11 in page stays under it up to 500 dpi, a 200-inch page no longer takes
gigabytes. :attr:`Page.scaled_down` says when it happened."""


@dataclass(frozen=True)
class PageRule:
    """Which pages count as illustrations; see the module docstring for the rule."""

    min_ink: float = 0.01
    min_picture: float = 0.10
    ink_threshold: int = 40
    drop_covers: bool = True


@dataclass
class Page:
    """One rendered page with what was measured on it."""

    number: int
    """1-based page number in its PDF."""
    image: Image.Image | None
    text: str
    ink: float
    picture_ink: float
    scaled_down: bool = False
    """The page was too large to render at the asked dpi within :data:`MAX_PAGE_PIXELS`."""


def render_scale(width_pt: float, height_pt: float, dpi: int, max_pixels: int = MAX_PAGE_PIXELS) -> float:
    """The render scale (pixels per point) for ``dpi``, lowered so the page stays within ``max_pixels``.

    >>> render_scale(612, 792, 144)
    2.0
    >>> round(render_scale(14400, 14400, 150) * 14400)   # a 200-inch page: 5000 px, not 30000
    5000
    """
    scale = dpi / 72
    pixels = width_pt * scale * height_pt * scale
    if pixels > max_pixels:
        scale *= (max_pixels / pixels) ** 0.5
    return scale


def page_count(pdf_path: Path) -> int:
    """How many pages a PDF has (raises ``pypdfium2.PdfiumError`` if it cannot be read)."""
    document = pdfium.PdfDocument(str(pdf_path))
    try:
        return len(document)
    finally:
        document.close()


def is_cover(number: int, count: int, rule: PageRule) -> bool:
    """Whether page ``number`` (1-based) of ``count`` is a front or back cover under ``rule``."""
    return rule.drop_covers and (number == 1 or (number == count and count > 1))


def iter_pages(
    pdf_path: Path,
    dpi: int,
    *,
    skip: set[int] | None = None,
    rule: PageRule | None = None,
    max_pixels: int = MAX_PAGE_PIXELS,
) -> Iterator[Page]:
    """Render every page of ``pdf_path`` at ``dpi`` (pages in ``skip`` are not rendered) and
    measure its ink; yields :class:`Page` objects in order. A page whose render would exceed
    ``max_pixels`` is rendered at a lower scale (``Page.scaled_down``). A page pdfium cannot load
    or render raises ``pypdfium2.PdfiumError`` naming its number (the pages before it were yielded).
    """
    rule = rule or PageRule()
    skip = skip or set()
    document = pdfium.PdfDocument(str(pdf_path))
    try:
        for index in range(len(document)):
            number = index + 1
            if number in skip:
                continue
            try:
                page = document[index]
            except pdfium.PdfiumError as exc:
                raise pdfium.PdfiumError(f"page {number} cannot be read ({exc})") from exc
            try:
                scale = render_scale(*page.get_size(), dpi, max_pixels)
                image = page.render(scale=scale).to_pil().convert("RGB")
                text, boxes = _text_layer(page, scale)
            except pdfium.PdfiumError as exc:
                raise pdfium.PdfiumError(f"page {number} cannot be rendered ({exc})") from exc
            finally:
                page.close()
            ink, picture_ink = measure_ink(image, boxes, rule.ink_threshold)
            yield Page(number=number, image=image, text=text, ink=ink, picture_ink=picture_ink,
                       scaled_down=scale < dpi / 72)
    finally:
        document.close()


def classify(page: Page, rule: PageRule) -> str | None:
    """Why ``page`` is dropped (``"blank"`` or ``"text"``), or ``None`` when it is kept."""
    if page.ink < rule.min_ink:
        return "blank"
    if page.picture_ink < rule.min_picture:
        return "text"
    return None


def measure_ink(image: Image.Image, text_boxes: list[tuple[float, float, float, float]], threshold: int = 40) -> tuple[float, float]:
    """``(ink, picture_ink)``: the share of the page that is ink, and that is solid ink outside
    text boxes (see the module docstring).

    ``text_boxes`` are ``(left, top, right, bottom)`` in the image's pixels.
    """
    factor = max(1, max(image.size) // MEASURE_SIZE)
    small = image.reduce(factor) if factor > 1 else image
    pixels = np.asarray(small, dtype=np.int16)
    # The paper is the most common colour, so a cream or tinted page is paper too.
    bins = (pixels[..., 0] >> 5) * 64 + (pixels[..., 1] >> 5) * 8 + (pixels[..., 2] >> 5)
    values, counts = np.unique(bins, return_counts=True)
    paper = pixels[bins == values[np.argmax(counts)]].mean(axis=0)
    ink = np.abs(pixels - paper).max(axis=-1) > threshold

    mask = np.zeros(ink.shape, dtype=bool)
    height, width = ink.shape
    for left, top, right, bottom in text_boxes:
        margin = 0.25 * (bottom - top)
        x0, x1 = int((left - margin) / factor), int(np.ceil((right + margin) / factor))
        y0, y1 = int((top - margin) / factor), int(np.ceil((bottom + margin) / factor))
        mask[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)] = True
    # Erode by one pixel: a pixel is solid when its 3×3 neighbourhood is all ink.
    padded = np.pad(ink, 1)
    solid = np.ones_like(ink)
    for dy in range(3):
        for dx in range(3):
            solid &= padded[dy : dy + height, dx : dx + width]
    total = ink.size
    return float(ink.sum() / total), float((solid & ~mask).sum() / total)


def square_crop(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square of ``image``, resized to ``size`` × ``size`` (Lanczos)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def _text_layer(page: pdfium.PdfPage, scale: float) -> tuple[str, list[tuple[float, float, float, float]]]:
    textpage = page.get_textpage()
    try:
        text = textpage.get_text_range().replace("\r", "")
        boxes: list[tuple[float, float, float, float]] = []
        # Text boxes are in PDF points from the media box origin; the render shows the crop box.
        # A rotated page's boxes would need rotating too: leave them unmasked (conservative: the
        # page then looks more like a picture, never less).
        if page.get_rotation() == 0:
            crop_left, _, _, crop_top = page.get_cropbox()
            for index in range(textpage.count_rects()):
                left, bottom, right, top = textpage.get_rect(index)
                boxes.append(
                    ((left - crop_left) * scale, (crop_top - top) * scale, (right - crop_left) * scale, (crop_top - bottom) * scale)
                )
        return text, boxes
    finally:
        textpage.close()
