"""The print-ready PDF: layout, fonts, pictures at print resolution (reportlab).

>>> from fairytale.pdf import BookContents, BookPage, PdfSettings, write_book_pdf  # doctest: +SKIP
>>> write_book_pdf(BookContents("Ginger", "Ann", pages, cover), Path("ginger.pdf"), PdfSettings(bleed=True))
"""

from fairytale.pdf.layout import LAYOUT_CHOICES, TRIMS, PageGeometry
from fairytale.pdf.writer import (
    BookContents,
    BookPage,
    PdfReport,
    PdfSettings,
    check_cover_text,
    plan_story_layouts,
    write_book_pdf,
)

__all__ = [
    "LAYOUT_CHOICES",
    "TRIMS",
    "BookContents",
    "BookPage",
    "PageGeometry",
    "PdfReport",
    "PdfSettings",
    "check_cover_text",
    "plan_story_layouts",
    "write_book_pdf",
]
