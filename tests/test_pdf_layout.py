"""Page geometry and text fitting: wrapped, shrunk within bounds, never overflowing."""

from __future__ import annotations

import pytest

from fairytale.errors import PlanError
from fairytale.pdf.fonts import book_fonts, printable
from fairytale.pdf.layout import BODY_MAX, BODY_MIN, INCH, PageGeometry, layout_story_page
from fairytale.pdf.text import ASCENT, DESCENT, fit_text, wrap


@pytest.fixture(scope="module")
def fonts():
    return book_fonts()


def _width(text, font, size):
    from reportlab.pdfbase.pdfmetrics import stringWidth

    return stringWidth(text, font, size)


def test_the_book_font_is_dejavu_with_wide_coverage(fonts):
    # DejaVu Sans ships with matplotlib (a declared dependency): Latin Extended, Greek, Cyrillic.
    assert fonts.name == "DejaVu Sans"
    for char in "éëèçœßøåñüÆ“”‘’—–…ŁőжΩ\ufffd":
        assert ord(char) in fonts.coverage, char
    assert all(path.is_file() for path in fonts.files)


def test_printable_keeps_accents_and_quotes_and_replaces_what_the_font_lacks(fonts):
    text, missing = printable("Zoë’s “crème brûlée”\tby the sea 🦒 and 字", fonts)
    assert "Zoë’s “crème brûlée” by the sea" in text
    assert missing == ["🦒", "字"]
    assert text.count(fonts.replacement) == 2  # visible, not dropped
    # combining accents are composed first, so they are not "missing"
    composed, missing = printable("Zoe\u0308", fonts)
    assert composed == "Zoë" and missing == []
    # invisible format characters (zero-width joiner, soft hyphen) draw nothing by definition
    assert printable("a\u200db\u00adc", fonts) == ("abc", [])


def test_wrap_never_exceeds_the_width_and_keeps_every_word(fonts):
    text = "Once upon a time a very tall giraffe called Ginger wore a long red scarf every single morning."
    lines = wrap(text, fonts.regular, 18, 200)
    assert len(lines) > 2
    assert all(_width(line, fonts.regular, 18) <= 200 for line in lines)
    assert " ".join(lines).split() == text.split()


def test_wrap_keeps_paragraphs_and_breaks_words_wider_than_the_box(fonts):
    lines = wrap("First paragraph.\n\nSecond one.", fonts.regular, 14, 300)
    assert lines == ["First paragraph.", "", "Second one."]
    long_word = "Supercalifragilisticexpialidocious" * 3
    pieces = wrap(long_word, fonts.regular, 14, 120)
    assert "".join(pieces) == long_word
    assert all(_width(piece, fonts.regular, 14) <= 120 for piece in pieces)


def test_fit_text_shrinks_within_bounds(fonts):
    short = fit_text("Hello!", fonts.regular, 300, 100, 22, 11)
    assert short.size == 22
    long = " ".join(["The owl hooted softly in the dark green acacia tree."] * 6)
    block = fit_text(long, fonts.regular, 300, 200, 22, 11)
    assert block is not None and 11 <= block.size < 22
    assert block.height <= 200
    assert all(_width(line, fonts.regular, block.size) <= 300 for line in block.lines)
    # the next size up would not have fitted
    bigger = fit_text(long, fonts.regular, 300, 200, block.size + 0.5, block.size + 0.5)
    assert bigger is None
    assert fit_text(long * 20, fonts.regular, 300, 200, 22, 11) is None


def test_block_height_bounds_the_ink(fonts):
    block = fit_text("Éclair\n\ngiraffe", fonts.regular, 300, 400, 20, 20)
    placed = block.baselines()
    assert [line for line, _ in placed] == ["Éclair", "giraffe"]
    assert block.height == pytest.approx(-placed[-1][1] + (ASCENT + DESCENT) * 20)


@pytest.mark.parametrize("trim, size", [("8.5x8.5", (8.5, 8.5)), ("8x10", (8, 10)), ("a4", (8.27, 11.69)), ("letter", (8.5, 11))])
def test_trim_sizes_and_bleed(trim, size):
    plain = PageGeometry.for_trim(trim)
    assert plain.media.width / INCH == pytest.approx(size[0], abs=0.01)
    assert plain.media.height / INCH == pytest.approx(size[1], abs=0.01)
    bled = PageGeometry.for_trim(trim, bleed=True)
    assert bled.media.width == pytest.approx(plain.media.width + 0.25 * INCH)
    assert bled.trim.x == pytest.approx(0.125 * INCH) and bled.trim.width == pytest.approx(plain.trim.width)
    with pytest.raises(PlanError, match="Unknown trim size"):
        PageGeometry.for_trim("b5")


def test_auto_layout_gives_short_text_a_full_bleed_page_and_long_text_a_text_area(fonts):
    geometry = PageGeometry.for_trim("8.5x8.5")
    short, _ = layout_story_page(1, "Click!", fonts.regular, geometry)
    assert short.layout == "full_bleed" and short.picture.crop and short.band is not None
    assert short.picture.rect == geometry.media
    long_text = " ".join(["Zoë climbed the winding stairs, one hundred and twelve of them."] * 7)
    long, _ = layout_story_page(2, long_text, fonts.regular, geometry)
    assert long.layout == "picture_above_text" and not long.picture.crop
    # the picture keeps its shape, sits in the safe area above the text
    assert long.picture.rect.width == pytest.approx(long.picture.rect.height)
    assert long.picture.rect.y >= long.text_box.top
    safe = geometry.safe
    assert safe.x <= long.text_box.x and long.text_box.right <= safe.right + 1e-6


def test_a_forced_full_bleed_page_falls_back_when_its_text_needs_more_room(fonts):
    geometry = PageGeometry.for_trim("8.5x8.5")
    text = " ".join(["The waves were high and the sky turned dark purple."] * 22)  # 220 words
    layout, warning = layout_story_page(3, text, fonts.regular, geometry, "full_bleed")
    assert layout.layout == "picture_above_text"
    assert "page 3" in warning


def test_text_that_can_never_fit_is_a_clear_plan_error(fonts):
    geometry = PageGeometry.for_trim("8.5x8.5")
    with pytest.raises(PlanError, match=r"page 4 \(\d+ words\) does not fit .* split it into two pages"):
        layout_story_page(4, "word " * 2000, fonts.regular, geometry)


def test_fitted_text_stays_in_the_safe_area_at_every_trim(fonts):
    text = " ".join(["Ginger looked left and right, but there was no water anywhere."] * 3)
    for trim in ("8.5x8.5", "8x10", "a4", "letter"):
        geometry = PageGeometry.for_trim(trim, bleed=True)
        for choice in ("picture_above_text", "full_bleed"):
            layout, _ = layout_story_page(1, text, fonts.regular, geometry, choice)
            box = layout.text_box
            assert geometry.safe.x - 1e-6 <= box.x and box.right <= geometry.safe.right + 1e-6
            assert box.y >= geometry.trim.y and box.top <= geometry.safe.top + 1e-6
            assert layout.text.height <= box.height + 1e-6
            assert BODY_MIN <= layout.text.size <= BODY_MAX


def test_pages_checked_before_painting_are_not_fitted_again_when_the_pdf_is_drawn(tmp_path, monkeypatch):
    """A render lays every page out before it paints (to refuse a page that cannot fit at once);
    the PDF then draws those layouts without fitting the same text into the same boxes again."""
    from PIL import Image

    from fairytale.pdf import BookContents, BookPage, PdfSettings, plan_story_layouts, write_book_pdf
    from fairytale.pdf import text as text_module

    picture = tmp_path / "p.png"
    Image.new("RGB", (64, 64), (200, 180, 160)).save(picture)
    texts = [f"Page {n} of a book checked once: the fox {'runs ' * n * 7}home." for n in range(1, 5)]
    pages = [BookPage(n, text, picture) for n, text in enumerate(texts, 1)]
    settings = PdfSettings(bleed=True)
    checked, _ = plan_story_layouts([(p.number, p.text, p.layout) for p in pages], settings, 1.0)
    wrapped: list[str] = []
    real_wrap = text_module.wrap
    monkeypatch.setattr(text_module, "wrap", lambda text, *rest: (wrapped.append(text), real_wrap(text, *rest))[1])
    report = write_book_pdf(BookContents("Fox", None, pages, picture), tmp_path / "b.pdf", settings)
    assert report.layouts == {n: layout.layout for n, layout in checked.items()}
    assert not set(texts) & set(wrapped), "a story page's text was fitted again"
    assert wrapped, "the title page is still fitted (its box is not checked before painting)"
