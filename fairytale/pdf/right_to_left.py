"""Right-to-left text (Hebrew, Arabic, Persian, Urdu, …) drawn the way it is read.

reportlab puts down one glyph per character, left to right, in the order it is given: it neither
joins Arabic letters nor reorders right-to-left text. So a Hebrew line printed as stored came out
backwards, and an Arabic word as a row of unjoined letters. Two well-kept libraries do the work:

- ``arabic-reshaper`` turns Arabic-script letters into the joined (initial, medial, final)
  presentation forms they take in a word, and makes the obligatory lam-alef ligatures. It runs on
  the text in reading order, before it is wrapped, so lines are measured as they will be drawn.
  Vowel marks (harakat) are kept: children's books print them.
- ``python-bidi`` (the Unicode Bidirectional Algorithm, UAX #9) turns each wrapped line into the
  order it is drawn in, left to right: right-to-left runs reversed, numbers and Latin words inside
  them kept as they read. A paragraph's base direction is that of its first strong letter
  (rules P2-P3), as browsers do for ``dir="auto"``.

Text without right-to-left characters is returned unchanged, so left-to-right books print
exactly as before.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable
from typing import Literal

Direction = Literal["L", "R"]

#: Bidi classes of strong right-to-left characters (Hebrew R, Arabic letters AL).
_RIGHT_TO_LEFT = ("R", "AL")


def has_right_to_left(text: str) -> bool:
    """Whether ``text`` holds any strong right-to-left character."""
    return any(unicodedata.bidirectional(char) in _RIGHT_TO_LEFT for char in text)


@functools.lru_cache(maxsize=1)
def _reshaper():
    import arabic_reshaper

    return arabic_reshaper.ArabicReshaper(configuration={"delete_harakat": False, "support_ligatures": True})


def joined_letters(text: str) -> str:
    """``text`` with its Arabic-script letters in the forms they take joined in words (reading
    order kept); text with no Arabic letters is returned as is."""
    if not any(unicodedata.bidirectional(char) == "AL" for char in text):
        return text
    return _reshaper().reshape(text)


def paragraph_direction(lines: Iterable[str]) -> Direction:
    """The base direction of a paragraph: that of its first strong letter (left to right when it
    has none)."""
    for line in lines:
        for char in line:
            kind = unicodedata.bidirectional(char)
            if kind == "L":
                return "L"
            if kind in _RIGHT_TO_LEFT:
                return "R"
    return "L"


def drawing_order(line: str, direction: Direction) -> str:
    """One wrapped ``line`` of a paragraph of base ``direction``, in the order its characters are
    drawn from left to right."""
    if direction == "L" and not has_right_to_left(line):
        return line
    from bidi import get_display

    return get_display(line, base_dir=direction)
