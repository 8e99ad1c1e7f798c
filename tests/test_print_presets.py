"""Print-on-demand presets: spine arithmetic, the interior PDF (bleed on the outside edges
only, gutter, closing pages, even page count, text in the safe area) and the preflight."""

from __future__ import annotations

import pytest
from pypdf import PdfReader

from fairytale.errors import FairytaleError
from fairytale.pdf import PdfSettings
from fairytale.publish import PublishOptions, cover_spec, get_preset, publish_book
from tests.publish_support import fake_book
from tests.render_support import make_plan, pdf_char_boxes, pdf_page_texts, squash

INCH = 72.0


@pytest.mark.parametrize(
    ("pages", "paper", "spine"),
    [
        (24, "standard-color", 0.054048),
        (24, "premium-color", 0.056328),
        (32, "standard-color", 0.072064),
        (32, "premium-color", 0.075104),
        (48, "standard-color", 0.108096),
        (48, "premium-color", 0.112656),
    ],
)
def test_kdp_spine_width_from_page_count_and_paper(pages, paper, spine):
    spec = cover_spec(get_preset("kdp"), "8.5x8.5", pages, paper)
    assert spec.spine_in == pytest.approx(spine, abs=1e-9)
    assert spec.width_in == pytest.approx(0.125 + 8.5 + spine + 8.5 + 0.125, abs=1e-9)
    assert spec.height_in == pytest.approx(8.75)
    assert spec.spine_text is False  # KDP: spine text only above 79 pages
    assert spec.media.width == pytest.approx(spec.width_in * INCH)


def test_spine_text_only_on_thick_enough_kdp_books():
    kdp = get_preset("kdp")
    assert not cover_spec(kdp, "8x10", 78, "premium-color").spine_text
    assert cover_spec(kdp, "8x10", 100, "premium-color").spine_text


def test_ingramspark_takes_its_spine_width_from_the_user():
    preset = get_preset("ingramspark")
    with pytest.raises(FairytaleError, match="--spine-width"):
        cover_spec(preset, "8.5x8.5", 32)
    spec = cover_spec(preset, "8.5x8.5", 32, spine_width=0.0937)
    assert spec.spine_in == 0.0937 and spec.width_in == pytest.approx(17.3437)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: get_preset("lulu"), "Unknown print preset 'lulu'"),
        (lambda: cover_spec(get_preset("kdp"), "8.5x8.5", 24, "cream"), "KDP has no paper 'cream'"),
        (lambda: cover_spec(get_preset("kdp"), "8.5x8.5", 24, spine_width=-1), "--spine-width"),
        (lambda: PublishOptions(formats=(), preset="kdp", paper="white-70"), "KDP has no paper 'white-70'"),
        # checked with the options, before a render paints or an export writes anything
        (
            lambda: PublishOptions(formats=(), preset="kdp", spine_width=-1.0),
            "--spine-width must be between 0 and 4",
        ),
        (
            lambda: PublishOptions(formats=(), preset="kdp", spine_width=float("nan")),
            "--spine-width must be between",
        ),
        (lambda: PublishOptions(formats=(), preset="ingramspark"), "pass it with --spine-width INCHES"),
    ],
)
def test_bad_preset_input_is_one_clear_error(call, message):
    with pytest.raises(FairytaleError, match=message):
        call()


def test_the_gutter_grows_with_the_page_count():
    kdp = get_preset("kdp")
    assert [kdp.gutter_in(n) for n in (24, 150, 151, 300, 301, 600, 800)] == [
        0.375,
        0.375,
        0.5,
        0.5,
        0.625,
        0.75,
        0.875,
    ]
    assert get_preset("ingramspark").gutter_in(24) == 0.5


def test_outside_only_bleed_geometry():
    settings = PdfSettings(bleed=True, bleed_edges="outside", inside_margin_in=0.75, cover_page=False)
    right, left = settings.geometry(0), settings.geometry(1)
    assert (right.media.width, right.media.height) == ((8.5 + 0.125) * INCH, (8.5 + 0.25) * INCH)
    assert right.trim.x == 0 and left.trim.x == 0.125 * INCH  # the bleed is on the outside edge
    assert right.safe.x == right.trim.x + 0.75 * INCH  # right-hand page: bound on its left
    assert left.safe.right == left.trim.right - 0.75 * INCH
    assert right.safe.width == left.safe.width
    # the usual --bleed: all four sides, symmetric margins
    classic = PdfSettings(bleed=True).geometry(1)
    assert classic.media.width == (8.5 + 0.25) * INCH and classic.safe.x == classic.trim.x + 0.5 * INCH


@pytest.fixture(scope="module")
def kdp_book(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kdp")
    plan = make_plan(3, back_cover_text="Zoë saves the fishing boat. A story of courage by the sea.")
    book = fake_book(folder, plan)
    return book, publish_book(book, PublishOptions(formats=(), preset="kdp", paper="standard-color")), plan


def test_kdp_interior_pdf(kdp_book):
    book, result, plan = kdp_book
    interior = result.files["interior"]
    assert interior == book.parent / "zoe-kdp-interior.pdf"
    reader = PdfReader(str(interior))
    assert len(reader.pages) == 24  # title page + 3 story pages + "The End" + credits, padded to KDP's 24
    for index, page in enumerate(reader.pages):
        media = [float(v) for v in page.mediabox]
        assert media == pytest.approx([0, 0, 8.625 * INCH, 8.75 * INCH])
        assert [float(v) for v in page.bleedbox] == pytest.approx(media)
        trim_x = 0.0 if index % 2 == 0 else 0.125 * INCH  # right-hand pages have their bleed on the right
        assert [float(v) for v in page.trimbox] == pytest.approx(
            [trim_x, 9, trim_x + 8.5 * INCH, 9 + 8.5 * INCH]
        )
    texts = [squash(t) for t in pdf_page_texts(interior)]
    assert plan.title in texts[0]  # no cover page: the interior opens on the title page
    for page in plan.pages:
        assert squash(page.text) in texts[page.number]
    assert texts[4] == "The End" and "Pictures painted with a test painter" in texts[5]
    assert all("Draw your favourite part of the story" in t for t in texts[6:])


def test_kdp_interior_text_stays_in_the_safe_area(kdp_book):
    _, result, _ = kdp_book
    interior = result.files["interior"]
    reader = PdfReader(str(interior))
    # page numbers included, every character keeps the 0.5 in safe margin (KDP asks for 0.375 in,
    # IngramSpark recommends 0.5 in)
    margin = 0.5 * INCH
    assert get_preset("kdp").interior_margin_in * INCH <= margin
    for index in range(len(reader.pages)):
        x1, y1, x2, y2 = (float(v) for v in reader.pages[index].trimbox)
        boxes = pdf_char_boxes(interior, index)
        assert boxes or index > 5
        for char, (left, bottom, right, top) in boxes:
            # 0.5 pt: round glyphs (3, 8, o) dip a hair below their baseline
            assert left >= x1 + margin - 0.5 and right <= x2 - margin + 0.5, (index, char)
            assert bottom >= y1 + margin - 0.5 and top <= y2 - margin + 0.5, (index, char)
    # and the layout's own record of every text block agrees
    assert all(t.safe.x <= t.box.x and t.box.right <= t.safe.right for t in result.interior.texts)
    assert {"page number 1", "page number 3", "the end", "credits"} <= {t.what for t in result.interior.texts}


def test_preflight_report_is_saved_and_clean(kdp_book):
    book, result, _ = kdp_book
    saved = (book / "preflight-kdp.txt").read_text()
    assert result.files["preflight"] == book / "preflight-kdp.txt"
    assert saved.startswith("Preflight for KDP: 0 errors")
    assert "24 pages (minimum 24), 20 closing pages" in saved
    assert "spine 0.054048 in (24 pages, standard-color)" in saved
    assert "fonts: all embedded: " in saved and "DejaVu" in saved
    # 96 px pictures on an 8.5 in page: a warning that names --print
    assert "WARNING page 1 picture" in saved and "--print" in saved


def test_an_unknown_trim_is_refused_before_anything_is_written(tmp_path):
    book = fake_book(tmp_path, make_plan(2))
    with pytest.raises(FairytaleError, match="KDP does not print the trim size 6x9"):
        publish_book(book, PublishOptions(formats=(), preset="kdp"), trim="6x9")
    assert not (tmp_path / "zoe-kdp-interior.pdf").exists()


def test_facing_pages_put_the_text_left_and_the_picture_right(tmp_path):
    from tests.render_support import pdf_pictures

    plan = make_plan(3)
    book = fake_book(tmp_path, plan)
    result = publish_book(
        book, PublishOptions(formats=(), preset="ingramspark", spine_width=0.06, facing=True)
    )
    interior = result.files["interior"]
    reader = PdfReader(str(interior))
    assert len(reader.pages) == 18  # title + 3 spreads + "The End" + credits = 10, padded to IngramSpark's 18
    texts = [squash(t) for t in pdf_page_texts(interior)]
    pictures = pdf_pictures(interior)
    for page in plan.pages:
        text_index, picture_index = 2 * page.number - 1, 2 * page.number  # odd indexes are left-hand pages
        assert squash(page.text) in texts[text_index] and not pictures[text_index]
        assert len(pictures[picture_index]) == 1 and texts[picture_index] == ""
        # the picture fills the right-hand page, bleed on its outside (right) edge included
        assert pictures[picture_index][0]["inches"] == pytest.approx((8.625, 8.75), abs=0.01)
    assert set(result.interior.layouts.values()) == {"facing_pages"}
    assert result.preflight.errors == []
    assert result.cover.spec.spine_in == 0.06


def test_a_right_to_left_book_is_bound_on_the_right():
    # A right-to-left book opens on a left-hand page bound on its right edge: the gutter is on
    # the right of page 1 (index 0) and on the left of page 2, the bleed on the other edge.
    settings = PdfSettings(
        bleed=True, bleed_edges="outside", inside_margin_in=0.75, cover_page=False, binding="right"
    )
    first, second = settings.geometry(0), settings.geometry(1)
    assert first.side == "left" and second.side == "right"
    assert first.trim.x == 0.125 * INCH and second.trim.x == 0  # the bleed on the outside edge
    assert first.safe.right == first.trim.right - 0.75 * INCH  # the gutter on the bound edge
    assert first.safe.x == first.trim.x + 0.5 * INCH
    assert second.safe.x == second.trim.x + 0.75 * INCH


def _picture_extents(pdf, index: int) -> list[tuple[float, float]]:
    """The left and right x of every picture placed on a PDF page."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf))
    try:
        bounds = [
            obj.get_bounds() for obj in document[index].get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE])
        ]
    finally:
        document.close()
    return [(left, right) for left, _, right, _ in bounds]


@pytest.mark.parametrize("facing", [False, True], ids=["pages", "facing"])
def test_a_right_to_left_interior_is_the_mirror_of_a_left_to_right_one(tmp_path, facing):
    ltr_book = fake_book(tmp_path, make_plan(3), name="ltr")
    rtl_plan = make_plan(3, language="he")
    rtl_book = fake_book(tmp_path, rtl_plan, name="rtl")
    options = PublishOptions(formats=(), preset="kdp", facing=facing)
    ltr = publish_book(ltr_book, options)
    rtl = publish_book(rtl_book, options)
    ltr_pdf, rtl_pdf = ltr.files["interior"], rtl.files["interior"]
    reader = PdfReader(str(rtl_pdf))
    assert len(reader.pages) == len(PdfReader(str(ltr_pdf)).pages) == 24
    sheet = 8.625 * INCH
    margin = 0.5 * INCH

    def mirrored(left: float, right: float) -> tuple[float, float]:
        return (sheet - right, sheet - left)

    for index, page in enumerate(reader.pages):
        # page 1 is still the first page, now a left-hand page: bleed on its left (outside) edge
        trim_x = 0.125 * INCH if index % 2 == 0 else 0.0
        assert [float(v) for v in page.trimbox] == pytest.approx(
            [trim_x, 9, trim_x + 8.5 * INCH, 9 + 8.5 * INCH]
        )
        # pictures sit where the left-to-right book has them, mirrored
        expected = sorted(x for extent in _picture_extents(ltr_pdf, index) for x in mirrored(*extent))
        found = sorted(x for extent in _picture_extents(rtl_pdf, index) for x in extent)
        assert found == pytest.approx(expected, abs=0.01), index
        # every glyph keeps the margins of its own page's trim
        for char, (left, _, right, _) in pdf_char_boxes(rtl_pdf, index):
            assert left >= trim_x + margin - 0.5 and right <= trim_x + 8.5 * INCH - margin + 0.5, (
                index,
                char,
            )
    # and so do the text blocks, and the safe areas they were fitted to
    assert len(rtl.interior.texts) == len(ltr.interior.texts)
    for ltr_text, rtl_text in zip(ltr.interior.texts, rtl.interior.texts, strict=True):
        assert (rtl_text.page_index, rtl_text.what) == (ltr_text.page_index, ltr_text.what)
        assert (rtl_text.box.x, rtl_text.box.right) == pytest.approx(
            mirrored(ltr_text.box.x, ltr_text.box.right)
        )
        assert (rtl_text.safe.x, rtl_text.safe.right) == pytest.approx(
            mirrored(ltr_text.safe.x, ltr_text.safe.right)
        )
    texts = [squash(t) for t in pdf_page_texts(rtl_pdf)]
    assert rtl_plan.title in texts[0]  # the order of the pages is the reading order
    assert squash(rtl_plan.pages[0].text) in texts[1]
    assert "bound on the right" in (rtl_book / "preflight-kdp.txt").read_text()
    assert "bound on the left" in (ltr_book / "preflight-kdp.txt").read_text()
    assert rtl.preflight.errors == []


def test_a_right_to_left_interior_keeps_the_wider_gutter_on_its_bound_edge(tmp_path):
    from PIL import Image

    from fairytale.pdf import BookContents, BookPage, write_book_pdf

    # a wide picture above its text fills the safe area's width: its margins are the page's
    wide = tmp_path / "wide.png"
    Image.new("RGB", (300, 100), (200, 120, 40)).save(wide)
    pages = [BookPage(n, "A line.", wide, "picture_above_text") for n in (1, 2)]
    contents = BookContents("A book", None, pages, wide)
    gutter, outside = 1.5 * INCH, 0.5 * INCH
    for binding in ("left", "right"):
        settings = PdfSettings(
            bleed=True, bleed_edges="outside", inside_margin_in=1.5, cover_page=False, binding=binding
        )
        pdf = write_book_pdf(contents, tmp_path / f"{binding}.pdf", settings).path
        reader = PdfReader(str(pdf))
        for index in (1, 2):  # story pages 1 and 2: a verso and a recto
            x1, _, x2, _ = (float(v) for v in reader.pages[index].trimbox)
            ((left, right),) = _picture_extents(pdf, index)
            recto = index % 2 == 0
            bound_on_left = recto if binding == "left" else not recto
            expected = (gutter, outside) if bound_on_left else (outside, gutter)
            assert (left - x1, x2 - right) == pytest.approx(expected, abs=0.01), (binding, index)


def _folder_files(folder) -> dict[str, bytes]:
    """Every output of an export (the book folder's caches aside), by path, with its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not {"print", "print-kdp", "pages"} & set(path.relative_to(folder).parts[1:2])
    }


def test_a_failed_export_leaves_the_previous_exports_files_as_they_were(tmp_path):
    from typer.testing import CliRunner

    from fairytale.cli import app
    from fairytale.plan import load_plan, save_plan

    book = fake_book(tmp_path, make_plan(3, back_cover_text="A story of courage by the sea."))
    command = ["export", str(book), "--format", "epub,pdf", "--preset", "kdp"]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    before = _folder_files(tmp_path)
    assert {
        "zoe.epub",
        "zoe.pdf",
        "zoe-kdp-interior.pdf",
        "zoe-kdp-cover.pdf",
        "zoe/preflight-kdp.txt",
    } <= set(before)
    # an edit that changes every file, and a back-cover text too long for the cover, which is
    # made after the EPUB, the PDF and the interior
    plan = load_plan(book / "plan.json")
    plan.pages[0].text = "A new first page."
    plan.back_cover_text = "A very long blurb. " * 400
    save_plan(plan, book / "plan.json")
    before["zoe/plan.json"] = (book / "plan.json").read_bytes()
    second = CliRunner().invoke(app, command)
    assert second.exit_code != 0 and "back-cover text is too long" in second.stderr, second.output
    assert "Traceback" not in second.output
    after = _folder_files(tmp_path)
    assert sorted(after) == sorted(before)  # no new file, no temporary left behind
    assert all(after[name] == before[name] for name in before), [n for n in before if after[n] != before[n]]


def test_an_export_that_fails_at_its_last_step_writes_nothing(tmp_path, monkeypatch):
    import fairytale.publish.book_export as book_export

    book = fake_book(tmp_path, make_plan(3))

    def broken_preflight(*args, **kwargs):
        raise FairytaleError("preflight broke")

    monkeypatch.setattr(book_export, "run_preflight", broken_preflight)
    before = _folder_files(tmp_path)
    with pytest.raises(FairytaleError, match="preflight broke"):
        publish_book(book, PublishOptions(formats=("epub", "pdf"), preset="kdp"))
    assert _folder_files(tmp_path) == before


def test_an_ingramspark_right_to_left_interior_is_in_reverse_page_order(tmp_path, monkeypatch):
    # Lightning Source prints a reverse-bound book from an interior whose first PDF page is the
    # book's last page; each page keeps the geometry it has in reading order.
    from fairytale.publish import book_export

    plan = make_plan(3, language="he")
    options = PublishOptions(formats=(), preset="ingramspark", spine_width=0.1)
    ingram = publish_book(fake_book(tmp_path, plan, name="rtl"), options)
    with monkeypatch.context() as patch:  # the same export left in reading order, to compare
        patch.setattr(book_export, "reverse_page_order", lambda report: report)
        in_reading_order = publish_book(fake_book(tmp_path, plan, name="reading"), options)
    reader, reading = (PdfReader(str(r.files["interior"])) for r in (ingram, in_reading_order))
    count = len(reader.pages)
    assert count == len(reading.pages) and count % 2 == 0
    texts = [squash(t) for t in pdf_page_texts(ingram.files["interior"])]
    assert texts == [squash(t) for t in reversed(pdf_page_texts(in_reading_order.files["interior"]))]
    assert plan.title in texts[-1] and squash(plan.pages[0].text) in texts[-2]  # the first pages come last
    for index, page in enumerate(reader.pages):
        twin = reading.pages[count - 1 - index]
        for box in ("mediabox", "bleedbox", "trimbox"):
            assert [float(v) for v in getattr(page, box)] == pytest.approx(
                [float(v) for v in getattr(twin, box)]
            )
    assert reader.metadata["/Title"] == plan.title
    # the preflight's page numbers follow the file, and it says the order
    assert sorted((t.page_index, t.what) for t in ingram.interior.texts) == sorted(
        (count - 1 - t.page_index, t.what) for t in in_reading_order.interior.texts
    )
    assert "the last page first" in (tmp_path / "rtl" / "preflight-ingramspark.txt").read_text()
    assert ingram.preflight.errors == []
    # KDP, and left-to-right books, keep the reading order
    kdp = publish_book(fake_book(tmp_path, plan, name="kdp"), PublishOptions(formats=(), preset="kdp"))
    assert plan.title in squash(pdf_page_texts(kdp.files["interior"])[0])
    ltr_plan = make_plan(3)
    ltr = publish_book(fake_book(tmp_path, ltr_plan, name="ltr"), options)
    assert ltr_plan.title in squash(pdf_page_texts(ltr.files["interior"])[0])
    assert "the last page first" not in (tmp_path / "ltr" / "preflight-ingramspark.txt").read_text()


def _drawn_objects(pdf, index: int) -> int:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf))
    try:
        return len(list(document[index].get_objects()))
    finally:
        document.close()


@pytest.mark.parametrize("story_pages", [3, 15], ids=["padded", "ends-on-credits"])
def test_an_ingramspark_interior_ends_on_an_empty_page_for_the_printers_barcode(tmp_path, story_pages):
    # Lightning Source prints its production barcode on the last page; when that page is not
    # empty it adds one, and the book no longer has the page count its cover was made for.
    plan = make_plan(story_pages)
    ingram = publish_book(
        fake_book(tmp_path, plan, name="ingram"), PublishOptions(formats=(), preset="ingramspark", spine_width=0.1)
    )
    pdf = ingram.files["interior"]
    count = len(PdfReader(str(pdf)).pages)
    assert count % 2 == 0 and count >= 18 and count == ingram.interior.page_count
    assert _drawn_objects(pdf, count - 1) == 0  # nothing at all: no caption, frame or number
    texts = [squash(t) for t in pdf_page_texts(pdf)]
    assert "The End" in texts and any("Pictures painted with" in t for t in texts)  # nothing lost
    assert ingram.preflight.errors == []
    kdp = publish_book(fake_book(tmp_path, plan, name="kdp"), PublishOptions(formats=(), preset="kdp"))
    last = len(PdfReader(str(kdp.files["interior"])).pages) - 1
    assert _drawn_objects(kdp.files["interior"], last) > 0  # KDP keeps its page to draw on
