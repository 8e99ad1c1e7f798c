"""The wraparound cover PDF: size from the spine arithmetic, boxes, panels, safe text, barcode."""

from __future__ import annotations

import pytest
from pypdf import PdfReader

from fairytale.publish import PublishOptions, cover_spec, get_preset, publish_book
from fairytale.publish.cover import write_cover_pdf
from tests.publish_support import fake_book, fake_picture
from tests.render_support import make_plan, pdf_char_boxes, pdf_page_texts, squash

INCH = 72.0
BACK_TEXT = "Zoë saves the fishing boat. A story of courage by the sea."


@pytest.fixture(scope="module")
def kdp_cover(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cover")
    book = fake_book(folder, make_plan(3, back_cover_text=BACK_TEXT))
    return publish_book(book, PublishOptions(formats=(), preset="kdp"))


def boxes_in_points(page):
    return {name: [float(v) for v in getattr(page, name)] for name in ("mediabox", "trimbox", "bleedbox")}


def test_cover_size_and_boxes(kdp_cover):
    spec = kdp_cover.cover.spec
    assert (spec.pages, spec.paper) == (24, "premium-color")  # the interior's page count, KDP's default paper
    width = 0.125 + 8.5 + 24 * 0.002347 + 8.5 + 0.125
    (page,) = PdfReader(str(kdp_cover.files["cover"])).pages
    boxes = boxes_in_points(page)
    assert boxes["mediabox"] == pytest.approx([0, 0, width * INCH, 8.75 * INCH], abs=1e-3)
    assert boxes["bleedbox"] == pytest.approx(boxes["mediabox"], abs=1e-3)
    assert boxes["trimbox"] == pytest.approx([9, 9, (width - 0.125) * INCH, (8.75 - 0.125) * INCH], abs=1e-3)


def test_cover_text_is_in_its_panels_and_the_barcode_area_is_clear(kdp_cover):
    path, spec = kdp_cover.files["cover"], kdp_cover.cover.spec
    text = squash(pdf_page_texts(path)[0])
    assert "Zoë and the Lighthouse" in text and "Ann Example" in text and BACK_TEXT in text
    margin = get_preset("kdp").cover_margin_in * INCH
    back, front, barcode = spec.back, spec.front, kdp_cover.cover.barcode
    assert barcode.right <= back.right - margin and barcode.y >= back.y + margin  # lower right of the back
    assert (barcode.width, barcode.height) == (2 * INCH, 1.2 * INCH)
    for char, (left, bottom, right, top) in pdf_char_boxes(path, 0):
        in_back = back.x + margin <= left and right <= back.right - margin
        in_front = front.x + margin <= left and right <= front.right - margin
        assert in_back or in_front, char
        assert spec.trim.y + margin <= bottom and top <= spec.trim.top - margin, char
        overlaps_barcode = (
            left < barcode.right and right > barcode.x and bottom < barcode.top and top > barcode.y
        )
        assert not overlaps_barcode, char
    assert not spec.spine_text  # 24 pages: no spine text on KDP


def test_spine_text_on_a_thick_book_stays_inside_the_spine(tmp_path):
    preset = get_preset("kdp")
    spec = cover_spec(preset, "8x10", 120, "premium-color")
    assert spec.spine_text and spec.spine_in == pytest.approx(0.28164)
    report = write_cover_pdf(
        tmp_path / "cover.pdf",
        spec,
        preset,
        title="Zoë and the Lighthouse",
        author="Ann Example",
        back_text=None,
        cover_picture=fake_picture(tmp_path / "c.png", 1),
    )
    spine, fold = spec.spine, preset.spine_fold_margin_in * INCH
    spine_chars = [
        (c, box)
        for c, box in pdf_char_boxes(report.path, 0)
        if spine.x - 1 <= box[0] and box[2] <= spine.right + 1
    ]
    assert "".join(c for c, _ in spine_chars).startswith("Zoë")
    for char, (left, _, right, _) in spine_chars:
        assert spine.x + fold - 0.5 <= left and right <= spine.right - fold + 0.5, char
    assert any("back-cover text" in w for w in report.warnings)


@pytest.mark.parametrize("pages", [24, 32, 48])
@pytest.mark.parametrize(("paper", "per_page"), [("standard-color", 0.002252), ("premium-color", 0.002347)])
def test_cover_pdf_width_follows_the_page_count_and_paper(tmp_path, pages, paper, per_page):
    preset = get_preset("kdp")
    spec = cover_spec(preset, "8x10", pages, paper)
    report = write_cover_pdf(
        tmp_path / "cover.pdf",
        spec,
        preset,
        title="Zoë",
        author=None,
        back_text="Back.",
        cover_picture=fake_picture(tmp_path / "c.png", 2),
    )
    (page,) = PdfReader(str(report.path)).pages
    width_in = 0.125 + 8 + pages * per_page + 8 + 0.125
    assert float(page.mediabox.width) == pytest.approx(width_in * INCH, abs=1e-3)
    assert float(page.mediabox.height) == pytest.approx(10.25 * INCH, abs=1e-3)
    assert float(page.trimbox.width) == pytest.approx((width_in - 0.25) * INCH, abs=1e-3)
    # the front panel starts after the back and the spine
    assert spec.front.x == pytest.approx((0.125 + 8 + pages * per_page) * INCH)


def test_a_right_to_left_book_has_its_front_cover_left_of_the_spine(tmp_path):
    import pypdfium2 as pdfium

    book = fake_book(tmp_path, make_plan(3, back_cover_text=BACK_TEXT, language="he"))
    result = publish_book(book, PublishOptions(formats=(), preset="kdp"))
    path, spec, barcode = result.files["cover"], result.cover.spec, result.cover.barcode
    bleed, margin = 0.125 * INCH, get_preset("kdp").cover_margin_in * INCH
    # bound on the right: front | spine | back, the sheet's size unchanged
    assert spec.front.x == pytest.approx(bleed) and spec.front.right == pytest.approx(spec.spine.x)
    assert spec.back.x == pytest.approx(spec.spine.right) and spec.back.right == pytest.approx(
        spec.trim.right
    )
    (page,) = PdfReader(str(path)).pages
    assert float(page.mediabox.width) == pytest.approx(spec.width_in * INCH, abs=1e-3)
    # the cover picture fills the front and its bleed, on the left
    document = pdfium.PdfDocument(str(path))
    try:
        (picture,) = document[0].get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE])
        left, _, right, _ = picture.get_bounds()
    finally:
        document.close()
    assert (left, right) == pytest.approx((0, spec.front.right), abs=0.01)
    # title and author on the front, the blurb on the back, the barcode area at the back's foot
    text = squash(pdf_page_texts(path)[0])
    assert "Zoë and the Lighthouse" in text and BACK_TEXT in text
    for char, (left, bottom, right, top) in pdf_char_boxes(path, 0):
        in_back = spec.back.x + margin <= left and right <= spec.back.right - margin
        in_front = spec.front.x + margin <= left and right <= spec.front.right - margin
        assert in_back or in_front, char
        assert not (
            left < barcode.right and right > barcode.x and bottom < barcode.top and top > barcode.y
        ), char
    assert spec.back.x + margin <= barcode.x and barcode.right <= spec.back.right - margin
    assert barcode.y == pytest.approx(spec.back.y + margin)
    assert all(t.box.right <= spec.spine.x for t in result.cover.texts if t.what.startswith("front"))
    assert "at the back cover's lower left, beside the spine" in (book / "preflight-kdp.txt").read_text()
    assert result.preflight.errors == []
