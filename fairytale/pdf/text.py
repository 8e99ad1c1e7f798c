"""Fitting a page's text into a box: wrapped at spaces, shrunk within bounds, never cut.

:func:`fit_text` tries font sizes from the largest down to the smallest allowed and returns the
first at which every line fits the box's width and all lines fit its height. If none does it
returns ``None``, and the layout gives the text more room or refuses the page with a clear
message; text is never clipped or allowed to run off the page.

A book's text is laid out more than once per build: a render checks that every page fits before
it paints (so a page that cannot is refused at once, not after an hour), and the PDF and the
EPUB then lay the same pages out to draw them. :func:`fit_text` remembers its answers (a pure
function of its arguments, returning a frozen :class:`TextBlock`), so each box is fitted once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

LEADING = 1.3  # line height as a multiple of the font size
PARAGRAPH_GAP = 0.5  # extra space between paragraphs, in lines
# Glyph extents as a share of the font size, generous enough for accented capitals (É) and
# descenders (g, y) of DejaVu and Vera, so a block's height bounds all the ink it puts down.
ASCENT = 0.95
DESCENT = 0.25


@dataclass(frozen=True)
class TextBlock:
    """Lines ready to draw ('' marks a paragraph break), at one font size."""

    lines: tuple[str, ...]
    font: str
    size: float

    @property
    def leading(self) -> float:
        return self.size * LEADING

    @property
    def height(self) -> float:
        """Height of the ink in points: from the first line's ascent to the last line's descent."""
        placed = self.baselines()
        if not placed:
            return 0.0
        return -placed[-1][1] + (ASCENT + DESCENT) * self.size

    def baselines(self) -> list[tuple[str, float]]:
        """Each text line with its baseline's offset *below the first baseline* (≤ 0)."""
        placed, offset, previous = [], 0.0, None
        for line in self.lines:
            if not line:
                offset -= PARAGRAPH_GAP * self.leading
                continue
            if previous is not None:
                offset -= self.leading
            placed.append((line, offset))
            previous = line
        return placed

    def drawn(self) -> list[tuple[str, float]]:
        """:meth:`baselines` with each line in the order it is drawn, left to right: lines of
        right-to-left text reordered (see :mod:`fairytale.pdf.right_to_left`), each by the
        direction of its paragraph."""
        from fairytale.pdf.right_to_left import drawing_order, paragraph_direction

        directions, paragraph = [], []
        for line in (*self.lines, ""):
            if line:
                paragraph.append(line)
                continue
            directions += [paragraph_direction(paragraph)] * len(paragraph)
            paragraph = []
        return [
            (drawing_order(line, direction), offset)
            for (line, offset), direction in zip(self.baselines(), directions, strict=True)
        ]


def _width(text: str, font: str, size: float) -> float:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    return stringWidth(text, font, size)


def _split_long_word(word: str, font: str, size: float, width: float) -> list[str]:
    # A word wider than the box (a URL, a made-up word of 40 letters) is broken between
    # characters rather than allowed to overflow.
    pieces, current = [], ""
    for char in word:
        if current and _width(current + char, font, size) > width:
            pieces.append(current)
            current = char
        else:
            current += char
    return pieces + ([current] if current else [])


def wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Greedy word wrap of ``text`` at ``size`` into lines no wider than ``width`` points.

    Paragraphs (separated by blank lines or single newlines) stay separate; an empty string
    between them marks the break.
    """
    lines: list[str] = []
    paragraphs = [" ".join(p.split()) for p in text.split("\n")]
    paragraphs = [p for p in paragraphs if p]
    space = _width(" ", font, size)
    for index, paragraph in enumerate(paragraphs):
        if index:
            lines.append("")
        current, current_width = "", 0.0
        for word in paragraph.split(" "):
            word_width = _width(word, font, size)
            if word_width > width:
                pieces = _split_long_word(word, font, size, width)
                if current:
                    lines.append(current)
                lines.extend(pieces[:-1])
                current, current_width = pieces[-1], _width(pieces[-1], font, size)
                continue
            if not current:
                current, current_width = word, word_width
            elif current_width + space + word_width <= width:
                current, current_width = f"{current} {word}", current_width + space + word_width
            else:
                lines.append(current)
                current, current_width = word, word_width
        if current:
            lines.append(current)
    return lines


#: How many fitted boxes are remembered: every box tried for a 100-page book, and then some.
FIT_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=FIT_CACHE_SIZE)
def fit_text(
    text: str,
    font: str,
    width: float,
    height: float,
    max_size: float,
    min_size: float,
    step: float = 0.5,
) -> TextBlock | None:
    """The largest size in ``[min_size, max_size]`` (in ``step``s) at which ``text`` fits the
    ``width`` × ``height`` box, wrapped; ``None`` if it does not fit even at ``min_size``.
    Remembered: the same text, font and box give the same block without fitting it again."""

    def fitting(size: float) -> TextBlock | None:
        block = TextBlock(tuple(wrap(text, font, size, width)), font, size)
        return block if block.height <= height else None

    # Cheap lower bound first: the text laid end to end needs at least this many lines.
    lines_needed = _width(" ".join(text.split()), font, min_size) / max(width, 1e-6)
    if (lines_needed - 1) * min_size * LEADING > height:
        return None
    sizes = [round(max_size - i * step, 3) for i in range(int((max_size - min_size) / step + 1e-9) + 1)]
    best = fitting(sizes[-1])
    if best is None:
        return None
    # Larger type needs more room, so the sizes that fit form a run at the small end: find
    # where it starts by bisection.
    low, high = 0, len(sizes) - 1  # sizes[high] fits
    while low < high:
        middle = (low + high) // 2
        found = fitting(sizes[middle])
        if found is None:
            low = middle + 1
        else:
            high, best = middle, found
    return best if best.size == sizes[high] else fitting(sizes[high])
