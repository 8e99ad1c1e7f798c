"""The fonts a book is set in: TrueType files that ship with our dependencies, always embedded.

The base-14 PDF fonts (Helvetica, Times, …) are never used: they are not embedded, print shops
reject them, and they only cover Latin-1. We use **DejaVu Sans**, which matplotlib ships
(a dependency of ours, via flair, and declared in ``pyproject.toml``): about 5,900 characters
including Latin Extended, Greek, Cyrillic, curly quotes, dashes and U+FFFD. If it is somehow
missing we fall back to Bitstream Vera, which reportlab itself ships (Latin-1 and punctuation).

A character the font cannot draw is replaced by a visible replacement glyph (U+FFFD, "�"), and
the caller is told which characters were replaced, so nothing disappears silently.
"""

from __future__ import annotations

import functools
import importlib.util
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from fairytale.errors import FairytaleError

REPLACEMENT = "\ufffd"
#: Zero-width non-joiner and joiner, left-to-right, right-to-left and Arabic letter marks.
STEERING_MARKS = frozenset("\u200c\u200d\u200e\u200f\u061c")


@dataclass(frozen=True)
class FontFamily:
    """A regular and a bold face registered with reportlab, and what they can draw."""

    name: str
    regular: str
    bold: str
    files: tuple[Path, Path]
    coverage: frozenset[int]

    @property
    def replacement(self) -> str:
        """The visible stand-in for characters the font lacks."""
        return REPLACEMENT if ord(REPLACEMENT) in self.coverage else "?"


def _package_dir(package: str) -> Path | None:
    # find_spec locates a package without importing it (importing matplotlib costs ~0.3 s).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent


def _candidates() -> list[tuple[str, Path, Path]]:
    found = []
    mpl = _package_dir("matplotlib")
    if mpl:
        folder = mpl / "mpl-data" / "fonts" / "ttf"
        found.append(("DejaVu Sans", folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"))
    rl = _package_dir("reportlab")
    if rl:
        found.append(("Bitstream Vera Sans", rl / "fonts" / "Vera.ttf", rl / "fonts" / "VeraBd.ttf"))
    return found


@functools.lru_cache(maxsize=1)
def book_fonts() -> FontFamily:
    """Register the book's font family with reportlab (once) and return it."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for family, regular, bold in _candidates():
        if regular.is_file() and bold.is_file():
            tag = family.replace(" ", "")
            regular_font = TTFont(tag, str(regular))
            bold_font = TTFont(f"{tag}-Bold", str(bold))
            pdfmetrics.registerFont(regular_font)
            pdfmetrics.registerFont(bold_font)
            coverage = frozenset(regular_font.face.charToGlyph) & frozenset(bold_font.face.charToGlyph)
            return FontFamily(family, tag, f"{tag}-Bold", (regular, bold), coverage)
    raise FairytaleError(
        "No TrueType font found: neither matplotlib's DejaVu Sans nor reportlab's Vera is installed. "
        "Reinstall fairytale-books (`pip install -e .`)."
    )


def printable(text: str, fonts: FontFamily) -> tuple[str, list[str]]:
    """``text`` made drawable with ``fonts``: NFC-normalised, tabs and odd spaces as plain spaces,
    invisible format characters (zero-width joiners, soft hyphens) removed, and every other
    character the font lacks replaced by :attr:`FontFamily.replacement`.

    In text with right-to-left letters, the zero-width joiners and the direction marks
    (:data:`STEERING_MARKS`) are kept where the font has them: they decide how Arabic-script
    letters join (Persian's non-joiner) and which way a run reads, and draw nothing.

    Returns the text and the distinct characters that were replaced (empty when none were).
    """
    from fairytale.pdf.right_to_left import has_right_to_left

    text = unicodedata.normalize("NFC", text)
    keep_marks = has_right_to_left(text)
    out = []
    missing: list[str] = []
    for char in text:
        if char == "\n":
            out.append(char)
            continue
        category = unicodedata.category(char)
        if char.isspace() or category == "Zs":
            out.append(" ")
        elif category == "Cf":
            if keep_marks and char in STEERING_MARKS and ord(char) in fonts.coverage:
                out.append(char)
            continue  # other formatting marks draw nothing by definition
        elif ord(char) in fonts.coverage:
            out.append(char)
        else:
            if char not in missing:
                missing.append(char)
            out.append(fonts.replacement)
    return "".join(out), missing


def describe_missing(chars: list[str]) -> str:
    """``'🦒' (U+1F992), '字' (U+5B57)`` for a warning."""
    return ", ".join(f"'{c}' (U+{ord(c):04X})" for c in chars)
