"""The words fAIrytale adds to a book ("The End", "by …", the credit line, the drawing-page
caption, the EPUB's contents labels) are printed in the book's language, right-to-left ones
drawn from the right; a language we lack gets English."""

from __future__ import annotations

import string
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from fairytale.book_words import BOOK_WORDS, FIELDS, book_words, words_language
from fairytale.pdf import BookContents, BookPage, PdfSettings, write_book_pdf
from fairytale.pdf.fonts import book_fonts, printable
from fairytale.pdf.right_to_left import joined_letters
from fairytale.publish import PublishOptions, publish_book
from tests.publish_support import epubcheck, fake_book
from tests.render_support import make_plan, pdf_char_boxes, pdf_page_texts, squash

#: The languages the table must have, and those whose script our font (DejaVu Sans) lacks in
#: part (Urdu's heh goal and yeh barree) or whole: their words print as story text in them
#: does, with the replacement glyph and a warning.
REQUIRED = {
    "en",
    "de",
    "fr",
    "es",
    "it",
    "pt",
    "nl",
    "pl",
    "tr",
    "ar",
    "he",
    "fa",
    "ur",
    "hi",
    "zh",
    "ja",
    "ru",
    "uk",
}
BEYOND_THE_FONT = {"ur", "hi", "zh", "ja"}
PLACEHOLDERS = {
    "by_author": {"author"},
    "pictures_by": {"model"},
    "made_with": {"version"},
    "page": {"number"},
}
XHTML = "{http://www.w3.org/1999/xhtml}"
OPF = "{http://www.idpf.org/2007/opf}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def test_a_region_or_script_subtag_falls_back_to_its_language():
    assert book_words("pt-BR") is BOOK_WORDS["pt"]
    assert book_words("de-AT").the_end == "Ende"
    assert words_language("ZH-Hans-CN") == "zh" and words_language("he_IL") == "he"


@pytest.mark.parametrize("language", ["tlh", "xx-YY", "", None, "english"])
def test_a_language_we_lack_gets_english(language):
    assert book_words(language) is BOOK_WORDS["en"]
    assert book_words(language).by("Sam") == "by Sam"


def test_every_language_has_every_word_with_its_placeholders_only():
    assert REQUIRED <= set(BOOK_WORDS)
    for language, words in BOOK_WORDS.items():
        for name in FIELDS:
            text = getattr(words, name)
            assert text.strip() == text and text, (language, name)
            named = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
            assert named == PLACEHOLDERS.get(name, set()), (language, name, text)
        assert words.credit("m", "1.0").count(" · ") == 1


def test_the_font_draws_every_word_of_the_scripts_it_has():
    fonts = book_fonts()
    for language, words in BOOK_WORDS.items():
        missing = {c for name in FIELDS for c in printable(joined_letters(getattr(words, name)), fonts)[1]}
        assert bool(missing) == (language in BEYOND_THE_FONT), (language, sorted(missing))


def _book(folder: Path, language: str, *, title: str = "Ginger", author: str | None = "Ann") -> Path:
    picture = folder / "p.png"
    Image.new("RGB", (64, 64), (200, 180, 160)).save(picture)
    contents = BookContents(
        title, author, [BookPage(1, "Ginger walks.", picture)], picture, language=language
    )
    # closing pages and a minimum count: "The End", the credits and one page to draw on
    settings = PdfSettings(cover_page=False, closing_pages=True, min_pages=5)
    pdf = folder / f"book-{language}.pdf"
    report = write_book_pdf(contents, pdf, settings, picture_cache=folder / "cache")
    assert report.page_count == 5
    return pdf


@pytest.mark.parametrize(
    ("language", "the_end", "by", "caption"),
    [
        ("de-DE", "Ende", "von Ann", "Male deine Lieblingsstelle der Geschichte"),
        ("pt-BR", "Fim", "de Ann", "Desenhe a sua parte favorita da história"),
        ("uk", "Кінець", "Автор: Ann", "Намалюй свою улюблену частину історії"),
        ("tlh", "The End", "by Ann", "Draw your favourite part of the story"),
    ],
)
def test_the_pdf_prints_its_words_in_the_book_language(tmp_path, language, the_end, by, caption):
    texts = [squash(t) for t in pdf_page_texts(_book(tmp_path, language))]
    # title page, story page, the end, credits, a page to draw on
    assert by in texts[0] and texts[2] == the_end and texts[3] == f"Ginger {by}" and texts[4] == caption
    if language != "tlh":
        assert not any(english in " ".join(texts) for english in ("The End", "by Ann", "Draw your"))
    assert (
        PdfReader(str(tmp_path / f"book-{language}.pdf")).metadata["/Subject"]
        == book_words(language).book_subject
    )


def _drawn_left_to_right(pdf: Path, page_index: int) -> str:
    """The Hebrew letters drawn on a page, in the order they stand from left to right."""
    boxes = [(box, char) for char, box in pdf_char_boxes(pdf, page_index) if "\u05d0" <= char <= "\u05ea"]
    return "".join(char for _, char in sorted(boxes))


def test_hebrew_words_are_drawn_from_the_right(tmp_path):
    pdf = _book(tmp_path, "he", author="דנה")
    # read from the right: סוף; מאת דנה ("by Dana"), its first word rightmost
    assert _drawn_left_to_right(pdf, 2) == "ףוס"
    assert _drawn_left_to_right(pdf, 0) == "הנדתאמ"
    texts = " ".join(pdf_page_texts(pdf))
    assert "The End" not in texts and "by " not in texts and "Draw your" not in texts


def test_arabic_words_are_joined(tmp_path):
    drawn = PdfReader(str(_book(tmp_path, "ar-EG"))).pages[2].extract_text()
    # النهاية in the forms its letters take joined in the word, none left unjoined
    assert set(joined_letters("النهاية")) <= set(drawn) and not set("النهاية") & set(drawn), drawn


def test_words_beyond_the_font_are_replaced_visibly_and_reported(tmp_path):
    picture = tmp_path / "p.png"
    Image.new("RGB", (64, 64), (200, 180, 160)).save(picture)
    contents = BookContents("Ginger", "Ann", [BookPage(1, "Ginger walks.", picture)], picture, language="hi")
    report = write_book_pdf(
        contents, tmp_path / "hi.pdf", PdfSettings(closing_pages=True), picture_cache=tmp_path / "c"
    )
    assert any(w.startswith("the end: the font has no glyph for 'स'") for w in report.warnings), (
        report.warnings
    )
    assert any(w.startswith("author line: the font has no glyph") for w in report.warnings), report.warnings
    texts = pdf_page_texts(tmp_path / "hi.pdf")
    assert "The End" not in " ".join(texts) and "\ufffd" in texts[3]


@pytest.fixture(scope="module")
def german_export(tmp_path_factory):
    """A German book exported as EPUB and for KDP (interior and cover)."""
    folder = tmp_path_factory.mktemp("de")
    book = fake_book(folder, make_plan(3, language="de-CH", back_cover_text="Zoë rettet das Boot."))
    return publish_book(book, PublishOptions(formats=("epub",), preset="kdp", paper="standard-color"))


def test_the_print_interior_and_cover_of_a_german_book_are_in_german(german_export):
    texts = [squash(t) for t in pdf_page_texts(german_export.files["interior"])]
    assert texts[4] == "Ende"
    assert texts[5].startswith("Zoë and the Lighthouse von Ann Example")
    assert "Bilder gemalt mit a test painter · erstellt mit fAIrytale" in texts[5]
    assert all(t == "Male deine Lieblingsstelle der Geschichte" for t in texts[6:])
    assert "Pictures painted" not in " ".join(texts)
    cover = PdfReader(str(german_export.files["cover"]))
    assert cover.metadata["/Title"] == "Zoë and the Lighthouse (Umschlag)"


def test_the_epub_of_a_german_book_labels_its_pages_in_german(german_export):
    path = german_export.files["epub"]
    with zipfile.ZipFile(path) as archive:
        nav = ET.fromstring(archive.read("OEBPS/nav.xhtml"))
        title_page = ET.fromstring(archive.read("OEBPS/title.xhtml"))
        page = ET.fromstring(archive.read("OEBPS/page-01.xhtml"))
        opf = ET.fromstring(archive.read("OEBPS/package.opf"))
    headings = [h.text for h in nav.iter(f"{XHTML}h2")]
    labels = [a.text for a in nav.iter(f"{XHTML}a")]
    assert headings == ["Inhalt", "Seiten", "Orientierungspunkte"]
    assert labels[:5] == ["Umschlag", "Titelseite", "Seite 1", "Seite 2", "Seite 3"]
    assert labels[-1] == "Anfang der Geschichte"
    paragraphs = [p.text for p in title_page.iter(f"{XHTML}p")]
    assert "von Ann Example" in paragraphs
    assert any(p.startswith("Bilder gemalt mit a test painter") for p in paragraphs)
    assert next(page.iter(f"{XHTML}title")).text == "Zoë and the Lighthouse, Seite 1"
    # the accessibility summary is English, and says so
    (summary,) = [m for m in opf.iter(f"{OPF}meta") if m.get("property") == "schema:accessibilitySummary"]
    assert summary.get(XML_LANG) == "en"
    epubcheck(path)


def test_the_epub_of_a_hebrew_book_reads_right_to_left_in_hebrew(tmp_path):
    book = fake_book(tmp_path, make_plan(3, language="he", author="דנה"))
    path = publish_book(book, PublishOptions(formats=("epub",))).files["epub"]
    with zipfile.ZipFile(path) as archive:
        nav = ET.fromstring(archive.read("OEBPS/nav.xhtml"))
        title_page = ET.fromstring(archive.read("OEBPS/title.xhtml"))
    # a browser takes a paragraph's direction from dir, never from the language
    assert nav.get("dir") == "rtl" and title_page.get("dir") == "rtl"
    assert [h.text for h in nav.iter(f"{XHTML}h2")][0] == "תוכן העניינים"
    (by,) = [p for p in title_page.iter(f"{XHTML}p") if p.text == "מאת דנה"]
    assert by.get("dir") == "auto"  # each paragraph by its first letter, as in the PDF
    epubcheck(path)
