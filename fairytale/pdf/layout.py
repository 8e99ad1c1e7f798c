"""Where things go on a page: trim sizes, bleed, and the page layouts, in points.

Pure geometry and text fitting, no drawing: the writer draws what these functions decide, and
:func:`layout_story_pages` can run before a single picture is painted, so a page whose text can
never fit is reported at once rather than after an hour of painting.

Layouts of a story page:

``picture_above_text``
    The picture (never cropped) in the upper part of the safe area, the text centred below it.
    When the text needs room the picture gives way, down to 40 % of the page height.
``full_bleed``
    The picture fills the whole page, bleed included (cropped to the page's shape), with the text
    on a light band across the bottom.

``auto`` (the default) sets short texts full-bleed and longer ones picture-above-text.

``facing_pages`` (a whole-book choice of the print presets, :func:`layout_facing_pages`)
    Each story page becomes a spread: the text alone on the left-hand page, the picture over the
    whole right-hand page (the other way round in a book bound on the right, read right to left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fairytale.errors import PlanError
from fairytale.pdf.text import TextBlock, fit_text

INCH = 72.0
BLEED_IN = 0.125
MARGIN_IN = 0.5  # safe margin inside the trim: nothing important closer to the cut
NUMBER_SPACE_IN = 0.45  # room at the bottom of the safe area kept for the page number
GAP_IN = 0.25  # between picture and text

BODY_MAX, BODY_COMFORT, BODY_MIN = 22.0, 16.0, 11.0
NUMBER_SIZE = 11.0

#: Trim sizes by the name users pass to ``--trim``: (width, height) in inches.
TRIMS: dict[str, tuple[float, float]] = {
    "8.5x8.5": (8.5, 8.5),
    "8x10": (8.0, 10.0),
    "a4": (210 / 25.4, 297 / 25.4),
    "letter": (8.5, 11.0),
}

LayoutName = Literal["picture_above_text", "full_bleed", "facing_pages"]
LayoutChoice = Literal["auto", "picture_above_text", "full_bleed"]
LAYOUT_CHOICES = ("auto", "picture_above_text", "full_bleed")


@dataclass(frozen=True)
class Rect:
    """A rectangle in points, origin at the bottom left of the sheet."""

    x: float
    y: float
    width: float
    height: float

    @property
    def top(self) -> float:
        return self.y + self.height

    @property
    def right(self) -> float:
        return self.x + self.width

    def inset(self, dx: float, dy: float | None = None) -> Rect:
        dy = dx if dy is None else dy
        return Rect(self.x + dx, self.y + dy, self.width - 2 * dx, self.height - 2 * dy)

    def as_box(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)``, as PDF page boxes are written."""
        return (self.x, self.y, self.right, self.top)


@dataclass(frozen=True)
class PageGeometry:
    """The sheet: trim size plus optional bleed, and the margins of the safe area.

    ``bleed_edges="all"`` adds the bleed on every side (a print shop's usual request);
    ``"outside"`` only on the top, bottom and outside edge, as print-on-demand interiors want
    (KDP, IngramSpark): the bound edge is never cut, so it gets none. Which edge is the outside
    depends on ``side``: a right-hand page is bound on its left, a left-hand page on its right
    (which of them is a recto depends on the book's binding, see ``PdfSettings.geometry``).
    ``inside_margin_in`` widens the margin on the bound edge (the gutter), which binding
    services require to grow with the page count.
    """

    trim_name: str
    trim_width_in: float
    trim_height_in: float
    bleed_in: float = 0.0
    bleed_edges: Literal["all", "outside"] = "all"
    side: Literal["right", "left"] = "right"
    inside_margin_in: float = MARGIN_IN

    @classmethod
    def for_trim(cls, trim: str, bleed: bool = False) -> PageGeometry:
        """The geometry of a named trim size (see :data:`TRIMS`)."""
        key = trim.lower()
        if key not in TRIMS:
            raise PlanError(f"Unknown trim size '{trim}'. Choose one of: {', '.join(TRIMS)}")
        width, height = TRIMS[key]
        return cls(key, width, height, BLEED_IN if bleed else 0.0)

    @property
    def media(self) -> Rect:
        """The whole sheet, bleed included (the PDF MediaBox and BleedBox)."""
        bleed = self.bleed_in * INCH
        across = bleed if self.bleed_edges == "outside" else 2 * bleed
        return Rect(0, 0, self.trim_width_in * INCH + across, self.trim_height_in * INCH + 2 * bleed)

    @property
    def trim(self) -> Rect:
        """The finished page after cutting (the PDF TrimBox)."""
        b = self.bleed_in * INCH
        # outside-only bleed: a right-hand page's bleed is on its right, so its trim starts at 0
        x = 0.0 if self.bleed_edges == "outside" and self.side == "right" else b
        return Rect(x, b, self.trim_width_in * INCH, self.trim_height_in * INCH)

    @property
    def safe(self) -> Rect:
        """Where text and page numbers may go: the margin inside the trim, the gutter on the
        bound edge."""
        trim, margin = self.trim, MARGIN_IN * INCH
        inside = max(margin, self.inside_margin_in * INCH)
        left, right = (inside, margin) if self.side == "right" else (margin, inside)
        return Rect(trim.x + left, trim.y + margin, trim.width - left - right, trim.height - 2 * margin)


@dataclass(frozen=True)
class PictureBox:
    """Where a picture goes and whether it is cropped to fill the box ('cover') or not."""

    rect: Rect
    crop: bool


@dataclass(frozen=True)
class StoryPageLayout:
    """Everything the writer needs to draw one story page."""

    layout: LayoutName
    picture: PictureBox
    text: TextBlock
    text_box: Rect
    band: Rect | None  # the light band behind the text on full-bleed pages
    number_y: float


def _contain(box: Rect, aspect: float) -> Rect:
    """The largest rectangle of ``aspect`` (width/height) centred horizontally in ``box``,
    pushed to its top."""
    width = min(box.width, box.height * aspect)
    height = width / aspect
    return Rect(box.x + (box.width - width) / 2, box.top - height, width, height)


def _picture_above_text(text: str, font: str, geometry: PageGeometry, aspect: float) -> StoryPageLayout | None:
    safe = geometry.safe
    number_space = NUMBER_SPACE_IN * INCH
    area = Rect(safe.x, safe.y + number_space, safe.width, safe.height - number_space)
    gap = GAP_IN * INCH
    fractions = [0.70 - 0.05 * i for i in range(7)]  # picture height share: 70 % down to 40 %
    # Prefer a large picture with comfortable text; only then let the text get small.
    for floor in (BODY_COMFORT, BODY_MIN):
        for fraction in fractions:
            picture = _contain(Rect(area.x, area.top - area.height * fraction, area.width, area.height * fraction), aspect)
            text_box = Rect(area.x, area.y, area.width, picture.y - gap - area.y)
            block = fit_text(text, font, text_box.width, text_box.height, BODY_MAX, floor)
            if block:
                return StoryPageLayout(
                    "picture_above_text", PictureBox(picture, crop=False), block, text_box, None,
                    number_y=geometry.trim.y + MARGIN_IN * INCH,
                )
    return None


def _full_bleed(text: str, font: str, geometry: PageGeometry, max_share: float = 0.40) -> StoryPageLayout | None:
    trim, safe, media = geometry.trim, geometry.safe, geometry.media
    padding = 0.2 * INCH
    bottom = trim.y + MARGIN_IN * INCH + NUMBER_SPACE_IN * INCH * 0.8
    for floor in (BODY_COMFORT, BODY_MIN):
        share = 0.18
        while share <= max_share + 1e-9:
            band_top = trim.y + trim.height * share
            text_box = Rect(safe.x, bottom, safe.width, band_top - padding - bottom)
            if text_box.height > 0:
                block = fit_text(text, font, text_box.width, text_box.height, BODY_MAX, floor)
                if block:
                    band = Rect(media.x, media.y, media.width, band_top - media.y)
                    return StoryPageLayout(
                        "full_bleed", PictureBox(media, crop=True), block, text_box, band,
                        number_y=trim.y + MARGIN_IN * INCH,  # inside the safe area, as on every page
                    )
            share = round(share + 0.02, 4)
    return None


def layout_story_page(
    number: int,
    text: str,
    font: str,
    geometry: PageGeometry,
    choice: LayoutChoice = "auto",
    picture_aspect: float = 1.0,
) -> tuple[StoryPageLayout, str | None]:
    """Lay out one story page; returns the layout and a warning when the choice was changed.

    Raises :class:`PlanError` when the text cannot fit the page in any layout.
    """
    warning = None
    if choice == "auto":
        # Short texts sit on a band over a full-page picture; longer ones get a page area.
        found = _full_bleed(text, font, geometry, max_share=0.30)
        if found and found.text.size >= BODY_COMFORT:
            return found, None
        found = _picture_above_text(text, font, geometry, picture_aspect)
    elif choice == "full_bleed":
        found = _full_bleed(text, font, geometry)
        if found is None:
            found = _picture_above_text(text, font, geometry, picture_aspect)
            if found:
                warning = f"page {number}: text too long for a full-bleed band; set as picture above text"
    elif choice == "picture_above_text":
        found = _picture_above_text(text, font, geometry, picture_aspect)
    else:
        raise PlanError(f"Unknown layout '{choice}'. Choose one of: {', '.join(LAYOUT_CHOICES)}")
    if found is None:
        words = len(text.split())
        raise PlanError(
            f"The text of page {number} ({words} words) does not fit a {geometry.trim_name} page even at "
            f"{BODY_MIN:g} pt; split it into two pages in the plan."
        )
    return found, warning


FACING_MAX = 28.0  # text alone on a page may be set larger


def layout_facing_pages(number: int, text: str, font: str, text_page: PageGeometry, picture_page: PageGeometry) -> StoryPageLayout:
    """A story page as a spread: the text centred in the left page's safe area (above the page
    number), the picture filling the right page, bleed included.

    Raises :class:`PlanError` when the text cannot fit a page of its own.
    """
    safe = text_page.safe
    number_space = NUMBER_SPACE_IN * INCH
    area = Rect(safe.x, safe.y + number_space, safe.width, safe.height - number_space)
    block = fit_text(text, font, area.width, area.height, FACING_MAX, BODY_COMFORT) or fit_text(
        text, font, area.width, area.height, BODY_COMFORT, BODY_MIN
    )
    if block is None:
        raise PlanError(
            f"The text of page {number} ({len(text.split())} words) does not fit a {text_page.trim_name} page even at "
            f"{BODY_MIN:g} pt; split it into two pages in the plan."
        )
    return StoryPageLayout(
        "facing_pages", PictureBox(picture_page.media, crop=True), block, area, None,
        number_y=text_page.trim.y + MARGIN_IN * INCH,
    )
