"""A right-to-left book's interior in reverse page order, for the printers that ask for it.

Lightning Source, which prints IngramSpark's books, makes a right-bound (reverse-bound) book on
the same machines as a left-bound one: the interior PDF it takes starts with the book's last
page and ends with its first (help.lightningsource.com, "File Creation and Setup for Reverse
Bound (Right-to-Left) Books"), with an even page count. Each page keeps the geometry it has in
reading order: the book's last page, printed first, is an even page of a right-bound book (its
gutter on the left), which is just what the first page of a left-bound book is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fairytale.files import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.pdf import PdfReport


def reverse_page_order(report: PdfReport) -> PdfReport:
    """Rewrite the PDF of ``report`` with its pages last to first (page boxes, fonts and
    metadata kept), atomically; the returned report names each text block's new page."""
    from pypdf import PdfReader, PdfWriter

    reader = PdfReader(report.path)
    writer = PdfWriter()
    for page in reversed(reader.pages):
        writer.add_page(page)
    if reader.metadata:
        writer.add_metadata(dict(reader.metadata))
    with atomic_path(report.path) as temporary:
        with temporary.open("wb") as out:
            writer.write(out)
    last = report.page_count - 1
    return replace(
        report,
        bytes=report.path.stat().st_size,
        texts=[replace(text, page_index=last - text.page_index) for text in report.texts],
    )
