"""Which way a book reads: left to right, or right to left (Arabic, Hebrew, Persian, …).

The plan records only the story's language (BCP 47); the direction follows from it. A
right-to-left book turns the other way: its EPUB pages progress right to left, and a printed
copy is bound on the right, so its first page is a left-hand page.
"""

from __future__ import annotations

from typing import Literal

#: Primary language subtags of languages written right to left.
RTL_LANGUAGES = ("ar", "he", "fa", "ur", "yi", "ps", "sd", "ug", "dv")

Binding = Literal["left", "right"]


def is_right_to_left(language: str) -> bool:
    """Whether ``language`` (``"he"``, ``"ar-EG"``, ``"en"``) is written right to left."""
    return language.split("-")[0].lower() in RTL_LANGUAGES


def binding_edge(language: str) -> Binding:
    """The edge a printed book in ``language`` is bound on, seen from its front cover."""
    return "right" if is_right_to_left(language) else "left"
