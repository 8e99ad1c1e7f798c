"""Hebrew and Arabic pages print as they are read: right-to-left lines drawn from the right,
numbers inside them kept in order, Arabic letters joined with their vowel marks kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairytale.pdf import BookContents, BookPage, PdfSettings, write_book_pdf
from fairytale.pdf.right_to_left import drawing_order, joined_letters, paragraph_direction
from fairytale.pdf.text import TextBlock
from tests.render_support import pdf_char_boxes

HEBREW = "שלום עולם יש לי 12 כלבים"
ARABIC = "مَرْحَبًا بِالعَالَم"


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("rtl")
    picture = folder / "p.png"
    Image.new("RGB", (64, 64), (200, 180, 160)).save(picture)
    pages = [BookPage(1, HEBREW, picture), BookPage(2, ARABIC, picture), BookPage(3, "Hello world 12", picture)]
    pdf = folder / "book.pdf"
    write_book_pdf(BookContents("ספר", "אמא", pages, picture), pdf, PdfSettings(), picture_cache=folder / "cache")
    return pdf


def _left_to_right(pdf: Path, page_index: int, keep) -> str:
    """The characters of a page's (one-line) text that ``keep`` accepts, in the order they stand
    from left to right (the page number, on a line of its own below, left out)."""
    import statistics

    boxes = [(box, char) for char, box in pdf_char_boxes(pdf, page_index) if keep(char)]
    line = statistics.median(box[1] for box, char in boxes if char.isalpha())
    return "".join(char for box, char in sorted(boxes) if abs(box[1] - line) < 6)


def test_a_hebrew_line_is_drawn_from_the_right_with_its_number_in_order(book):
    drawn = _left_to_right(book, 2, lambda c: c.isalnum())  # page 1 of the story (after cover and title page)
    # read from the right: שלום עולם יש לי 12 כלבים; the number still reads 1, 2
    assert drawn == "םיבלכ12ילשיםלועםולש", drawn


def test_an_arabic_line_is_joined_keeps_its_vowels_and_is_drawn_from_the_right(book):
    from pypdf import PdfReader

    # the characters as drawn (pypdf reads the font's own mapping: presentation forms)
    drawn = PdfReader(str(book)).pages[3].extract_text()
    assert "\ufee3" in drawn and "\u0645" not in drawn  # meem joined (initial form), none left unjoined
    assert {"\u064e", "\u0652", "\u064b", "\u0650"} <= set(drawn)  # fatha, sukun, tanwin, kasra kept
    # where they stand (pdfium reads joined forms back as letters): مرحبا's meem is rightmost
    letters = _left_to_right(book, 3, str.isalpha)
    assert letters[-2:] == "\u0631\u0645", letters  # read from the right: meem, then reh


def test_left_to_right_text_is_drawn_as_before(book):
    assert _left_to_right(book, 4, lambda c: c.isalnum()) == "Helloworld12"


def test_each_paragraph_takes_the_direction_of_its_first_letter():
    block = TextBlock(("Zoe said:", "", "שלום Zoe", "12 כלבים"), "Helvetica", 10)
    assert [line for line, _ in block.drawn()] == ["Zoe said:", "Zoe םולש", "םיבלכ 12"]
    assert paragraph_direction(["12", "שלום"]) == "R" and paragraph_direction(["12 !"]) == "L"
    assert drawing_order("Hi שלום", "L") == "Hi םולש"


def test_joining_leaves_text_without_arabic_letters_alone():
    for text in ("Zoë’s café", "שלום", "12 + 3"):
        assert joined_letters(text) is text
    # Persian: a zero-width non-joiner keeps می apart from خواهم
    joined = joined_letters("می\u200cخواهم")
    assert joined.split("\u200c")[0][-1] == "\ufbfd"  # final-form yeh: the join stops there


def test_a_right_to_left_mark_sets_the_direction_of_a_paragraph_that_starts_in_latin():
    from fairytale.pdf.fonts import book_fonts, printable

    fonts = book_fonts()
    kept, missing = printable("\u200fZoe אמרה שלום", fonts)
    assert kept.startswith("\u200f") and not missing
    line = TextBlock((kept,), fonts.regular, 10).drawn()[0][0]
    assert line.replace("\u200f", "") == "םולש הרמא Zoe", line  # read from the right: Zoe first
    assert printable("a\u200db\u200ec", fonts)[0] == "abc"  # without right-to-left letters: dropped
