"""Print-on-demand services' rules as data: trim sizes, bleed, margins, page counts, spine width.

A preset turns the book's settings into an interior PDF the service accepts and gives the
arithmetic of its wraparound cover. The figures come from the services' published guides:

KDP (Kindle Direct Publishing, paperback)
    Colour interiors print on white paper only: standard colour 0.002252 in per page, premium
    colour 0.002347 in per page. Interior bleed 0.125 in on the top, bottom and outside edges
    only (sheet = trim width + 0.125 in, trim height + 0.25 in); at least 0.375 in outside
    margin with bleed; the inside (gutter) margin grows with the page count (table below).
    At least 24 pages. Spine text only on books of more than 79 pages, 0.0625 in clear of each
    spine fold. The barcode goes on the back cover's lower right, 2 x 1.2 in.
IngramSpark (paperback)
    The same 0.125 in bleed on top, bottom and outside; 0.5 in from the trim is recommended for
    interior text, 0.25 in for cover text; at least 18 pages; page counts are even. Its spine
    width depends on the paper and is given by its cover template generator: pass it with
    ``--spine-width`` (fAIrytale does not guess a figure it cannot cite). A right-to-left
    (reverse-bound) book's interior goes in reverse page order, last page first, as its printer,
    Lightning Source, asks (:mod:`fairytale.publish.page_order`). The last page, facing the
    inside back cover, is left empty: the printer prints its production barcode there and adds
    a page (changing the count the cover was made for) when it is not empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fairytale.errors import FairytaleError
from fairytale.pdf.layout import BLEED_IN, INCH, TRIMS, Rect
from fairytale.reading_direction import Binding

#: KDP's minimum inside margin by page count: (up to this many pages, margin in inches).
KDP_GUTTER: tuple[tuple[int, float], ...] = (
    (150, 0.375),
    (300, 0.5),
    (500, 0.625),
    (700, 0.75),
    (828, 0.875),
)


@dataclass(frozen=True)
class PrintPreset:
    """One service's rules for a full-colour picture-book paperback."""

    name: str
    label: str
    min_pages: int
    max_pages: int
    papers: dict[str, float | None]  # paper name -> inches per page (None: pass --spine-width)
    default_paper: str
    interior_margin_in: float  # least distance from the trim to text inside the book
    cover_margin_in: float  # least distance from the trim (and spine folds) to cover text
    spine_text_over_pages: int | None  # spine text only above this many pages
    spine_fold_margin_in: float = 0.0625
    barcode_in: tuple[float, float] = (2.0, 1.2)
    trims: tuple[str, ...] = field(default_factory=lambda: tuple(TRIMS))
    right_bound_last_page_first: bool = False  # a right-to-left interior in reverse page order
    last_page_blank: bool = False  # the printer puts its production barcode on the last page

    def gutter_in(self, pages: int) -> float:
        """The inside margin a book of ``pages`` pages needs (at least the interior margin)."""
        for limit, margin in KDP_GUTTER:
            if pages <= limit:
                return max(margin, self.interior_margin_in)
        return max(KDP_GUTTER[-1][1], self.interior_margin_in)

    def paper_per_page(self, paper: str | None) -> tuple[str, float | None]:
        """The paper's name and thickness per page; an unknown paper is a one-line error."""
        paper = paper or self.default_paper
        if paper not in self.papers:
            raise FairytaleError(
                f"{self.label} has no paper '{paper}'. Choose one of: {', '.join(self.papers)}"
            )
        return paper, self.papers[paper]

    def check_spine(
        self, paper: str | None, spine_width: float | None, pages: int | None = None
    ) -> tuple[str, float | None]:
        """:meth:`paper_per_page`, once the spine width can be had: ``spine_width`` (inches) in
        range, or a paper whose thickness gives it. Checked with the options, before any work,
        and again for the cover (``pages`` named in the message)."""
        paper, per_page = self.paper_per_page(paper)
        if spine_width is not None and not 0 < spine_width < 4:
            raise FairytaleError(f"--spine-width must be between 0 and 4 inches, not {spine_width}")
        if spine_width is None and per_page is None:
            raise FairytaleError(
                f"{self.label}'s spine width for {paper} paper comes from its cover template generator: "
                f"pass it with --spine-width INCHES{f' (for {pages} pages)' if pages else ''}"
            )
        return paper, per_page


PRESETS: dict[str, PrintPreset] = {
    "kdp": PrintPreset(
        name="kdp",
        label="KDP",
        min_pages=24,
        max_pages=828,
        papers={"standard-color": 0.002252, "premium-color": 0.002347},
        default_paper="premium-color",
        interior_margin_in=0.375,
        cover_margin_in=0.125,
        spine_text_over_pages=79,
    ),
    "ingramspark": PrintPreset(
        name="ingramspark",
        label="IngramSpark",
        min_pages=18,
        max_pages=900,
        papers={"white-70": None, "white-50": None},
        default_paper="white-70",
        interior_margin_in=0.5,
        cover_margin_in=0.25,
        spine_text_over_pages=None,
        right_bound_last_page_first=True,
        last_page_blank=True,
    ),
}


def get_preset(name: str) -> PrintPreset:
    """The preset called ``name`` (kdp, ingramspark); anything else is a one-line error."""
    key = name.lower()
    if key not in PRESETS:
        raise FairytaleError(f"Unknown print preset '{name}'. Choose one of: {', '.join(PRESETS)}")
    return PRESETS[key]


@dataclass(frozen=True)
class CoverSpec:
    """The wraparound cover's arithmetic, in inches: back, spine and front side by side, with
    bleed on the four outer edges. A book bound on the right (a right-to-left book) has its
    front on the left of the spine and its back on the right."""

    preset: str
    trim_name: str
    trim_width_in: float
    trim_height_in: float
    pages: int
    paper: str
    spine_in: float
    spine_text: bool
    bleed_in: float = BLEED_IN
    binding: Binding = "left"

    @property
    def width_in(self) -> float:
        return 2 * self.bleed_in + 2 * self.trim_width_in + self.spine_in

    @property
    def height_in(self) -> float:
        return 2 * self.bleed_in + self.trim_height_in

    # Panels in points, origin at the bottom left of the sheet (bleed included).
    @property
    def media(self) -> Rect:
        return Rect(0, 0, self.width_in * INCH, self.height_in * INCH)

    @property
    def trim(self) -> Rect:
        b = self.bleed_in * INCH
        return Rect(b, b, (self.width_in - 2 * self.bleed_in) * INCH, self.trim_height_in * INCH)

    def _panel(self, leftmost: bool) -> Rect:
        b = self.bleed_in * INCH
        x = b if leftmost else b + (self.trim_width_in + self.spine_in) * INCH
        return Rect(x, b, self.trim_width_in * INCH, self.trim_height_in * INCH)

    @property
    def back(self) -> Rect:
        return self._panel(leftmost=self.binding == "left")

    @property
    def spine(self) -> Rect:
        b = self.bleed_in * INCH
        return Rect(b + self.trim_width_in * INCH, b, self.spine_in * INCH, self.trim_height_in * INCH)

    @property
    def front(self) -> Rect:
        return self._panel(leftmost=self.binding == "right")

    def describe(self) -> str:
        """One line of arithmetic, for the preflight report."""
        return (
            f"spine {self.spine_in:.6f} in ({self.pages} pages, {self.paper}); cover "
            f"{self.width_in:.6f} x {self.height_in:.4f} in = {self.bleed_in} + {self.trim_width_in:g} + "
            f"{self.spine_in:.6f} + {self.trim_width_in:g} + {self.bleed_in} wide, "
            f"{self.bleed_in} + {self.trim_height_in:g} + {self.bleed_in} high"
        )


def cover_spec(
    preset: PrintPreset,
    trim: str,
    pages: int,
    paper: str | None = None,
    spine_width: float | None = None,
    binding: Binding = "left",
) -> CoverSpec:
    """The cover of a ``pages``-page book on ``paper``: spine = pages x the paper's thickness per
    page, or ``spine_width`` (inches) when given (IngramSpark's cover template states it);
    ``binding`` "right" puts the front left of the spine (a right-to-left book)."""
    key = trim.lower()
    if key not in TRIMS:
        raise FairytaleError(f"Unknown trim size '{trim}'. Choose one of: {', '.join(TRIMS)}")
    if key not in preset.trims:
        raise FairytaleError(
            f"{preset.label} does not print the trim size {trim}. Choose one of: {', '.join(preset.trims)}"
        )
    paper, per_page = preset.check_spine(paper, spine_width, pages)
    spine = spine_width if spine_width is not None else pages * per_page  # type: ignore[operator]
    over = preset.spine_text_over_pages
    spine_text = (
        over is None or pages > over
    ) and spine - 2 * preset.spine_fold_margin_in >= 0.1  # room for a 6 pt line
    width, height = TRIMS[key]
    return CoverSpec(
        preset.name, key, width, height, pages, paper, round(spine, 6), spine_text, binding=binding
    )
