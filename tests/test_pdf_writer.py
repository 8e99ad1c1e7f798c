"""The PDF itself, read back with pypdf and pypdfium2: pages, fonts, pictures, text, boxes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairytale.pdf import BookContents, BookPage, PdfSettings, write_book_pdf
from fairytale.pdf.layout import INCH, PageGeometry
from tests.render_support import STORY_TEXTS, pdf_char_boxes, pdf_fonts, pdf_page_texts, pdf_pictures, squash

LONG_TEXT = " ".join(["Ginger looked left and right, but there was no water anywhere on the savanna."] * 5)


def _picture(path: Path, seed: int, size: int = 256) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = (rng.random((8, 8, 3)) * 255).astype("uint8")
    Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(path)
    return path


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pdf")
    texts = STORY_TEXTS[:3] + [LONG_TEXT, "Zoë’s “café” 🦒 had a 字 sign."]
    pages = [BookPage(i + 1, text, _picture(folder / f"p{i}.png", i)) for i, text in enumerate(texts)]
    contents = BookContents("Zoë and the “Lighthouse”", "Ann Ëxample", pages, pages[1].picture, credit="Made in a test")
    settings = PdfSettings(bleed=True)
    pdf = folder / "book.pdf"
    report = write_book_pdf(contents, pdf, settings, picture_cache=folder / "print")
    return pdf, report, contents, settings, folder


def test_pages_metadata_and_boxes(book):
    from pypdf import PdfReader

    pdf, report, contents, settings, _ = book
    reader = PdfReader(str(pdf))
    assert len(reader.pages) == report.page_count == len(contents.pages) + 2  # cover, title page, story
    meta = reader.metadata
    assert meta.title == "Zoë and the “Lighthouse”" and meta.author == "Ann Ëxample"
    assert meta.creator.startswith("fAIrytale")
    geometry = PageGeometry.for_trim("8.5x8.5", bleed=True)
    for page in reader.pages:
        assert float(page.mediabox.width) == pytest.approx(8.75 * INCH)
        assert [float(v) for v in page.trimbox] == pytest.approx(list(geometry.trim.as_box()))
        assert [float(v) for v in page.bleedbox] == pytest.approx(list(geometry.media.as_box()))


def test_without_bleed_the_page_is_the_trim(tmp_path):
    from pypdf import PdfReader

    pages = [BookPage(1, "Hello.", _picture(tmp_path / "p.png", 1, 64))]
    pdf = tmp_path / "a4.pdf"
    write_book_pdf(BookContents("T", None, pages, pages[0].picture), pdf, PdfSettings(trim="a4"))
    page = PdfReader(str(pdf)).pages[0]
    assert float(page.mediabox.width) == pytest.approx(210 / 25.4 * INCH)
    assert [float(v) for v in page.trimbox] == [float(v) for v in page.mediabox]


def test_every_font_is_an_embedded_truetype_never_base14(book):
    fonts = pdf_fonts(book[0])
    assert fonts, "no fonts found"
    for name, _subtype, embedded in fonts:
        assert embedded, f"{name} is not embedded"
        assert "DejaVuSans" in name
        assert not any(base in name for base in ("Helvetica", "Times", "Courier", "Symbol"))


def test_every_word_is_in_the_text_with_accents_and_curly_quotes(book):
    pdf, report, contents, _, _ = book
    texts = pdf_page_texts(pdf)
    everything = squash(" ".join(texts))
    for page in contents.pages[:4]:
        for word in page.text.split():
            assert word in everything, word
    for word in ("Zoë", "“Lighthouse”", "Ëxample", "crème", "brûlée", "“The", "out!”"):
        assert word in everything
    # the title page and the cover carry title and author
    assert "Lighthouse" in texts[0] and "Ëxample" in texts[0] and "Lighthouse" in texts[1]
    # page numbers, on story pages only
    assert squash(texts[2]).endswith("1") and squash(texts[6]).endswith("5")


def test_characters_the_font_lacks_are_replaced_visibly_and_reported(book):
    pdf, report, _, _, _ = book
    last = squash(pdf_page_texts(pdf)[-1])
    assert "Zoë’s “café” \ufffd had a \ufffd sign." in last
    assert any("U+1F992" in w and "U+5B57" in w for w in report.warnings)


def test_pictures_are_placed_at_300_dpi_as_jpegs_and_are_not_blank(book):
    from pypdf import PdfReader

    pdf, report, contents, settings, _ = book
    pictures = pdf_pictures(pdf)
    assert len(pictures[0]) == 1 and pictures[1] == []  # a cover picture; a title page without
    for page in [pictures[0], *pictures[2:]]:
        (picture,) = page
        assert picture["dpi"][0] == pytest.approx(settings.dpi, abs=0.5)
        assert picture["dpi"][1] == pytest.approx(settings.dpi, abs=0.5)
        assert picture["std"] > 5  # not a flat colour
    # full-bleed pictures cover the sheet, bleed included
    assert pictures[0][0]["inches"] == pytest.approx((8.75, 8.75), abs=0.01)
    for page in PdfReader(str(pdf)).pages:
        for xobject in (page["/Resources"].get("/XObject") or {}).values():
            assert xobject.get_object()["/Filter"] in ("/DCTDecode", ["/DCTDecode"])
    # 256 painted pixels over 8.75 inches carry 29 DPI of detail
    assert report.effective_dpi[0] == pytest.approx(256 / 8.75, abs=0.1)


def test_both_layouts_are_used_and_text_never_leaves_the_safe_area(book):
    pdf, report, contents, _, _ = book
    assert set(report.layouts.values()) == {"full_bleed", "picture_above_text"}
    assert report.layouts[4] == "picture_above_text"
    geometry = PageGeometry.for_trim("8.5x8.5", bleed=True)
    safe = geometry.safe
    for index in range(2, 2 + len(contents.pages)):
        boxes = pdf_char_boxes(pdf, index)
        assert boxes
        for char, (left, bottom, right, top) in boxes:
            assert safe.x - 1 <= left and right <= safe.right + 1, (index, char)
            assert geometry.trim.y <= bottom and top <= safe.top + 1, (index, char)


def test_prepared_pictures_are_cached_and_pruned(book, tmp_path):
    pdf, report, contents, settings, folder = book
    cache = folder / "print"
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.jpg")}
    # the cover shows page 2's picture full-bleed, as page 2 does: prepared once
    assert report.layouts[2] == "full_bleed"
    assert len(before) == len(contents.pages)
    again = tmp_path / "again.pdf"
    write_book_pdf(contents, again, settings, picture_cache=cache)
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.jpg")} == before  # reused, not redone
    fewer = BookContents(contents.title, contents.author, contents.pages[:2], contents.cover_picture)
    write_book_pdf(fewer, tmp_path / "fewer.pdf", settings, picture_cache=cache)
    assert len(list(cache.glob("*.jpg"))) == 2


def test_a_failed_build_leaves_the_old_pdf_untouched(tmp_path):
    from fairytale.errors import PlanError

    pdf = tmp_path / "book.pdf"
    pdf.write_bytes(b"old")
    pages = [BookPage(1, "word " * 3000, _picture(tmp_path / "p.png", 1, 64))]
    with pytest.raises(PlanError, match="does not fit"):
        write_book_pdf(BookContents("T", None, pages, pages[0].picture), pdf)
    assert pdf.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".pdf"] == ["book.pdf"]
