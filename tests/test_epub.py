"""The fixed-layout EPUB 3: valid (epubcheck), accessible (alt text, metadata, live text)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile

import pytest
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.errors import FairytaleError
from fairytale.plan import load_plan, save_plan
from fairytale.publish import PublishOptions, publish_book
from fairytale.publish.alt_text import alt_text
from tests.publish_support import epubcheck, fake_book
from tests.render_support import make_plan

XHTML = "{http://www.w3.org/1999/xhtml}"
OPF = "{http://www.idpf.org/2007/opf}"
EDITED_ALT = "Zoë's father waves from the red door of the white lighthouse while gulls circle overhead."


def read_epub(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}, archive.infolist()


def package(files):
    return ET.fromstring(files["OEBPS/package.opf"])


def metas(opf, prop):
    return [m.text for m in opf.iter(f"{OPF}meta") if m.get("property") == prop]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A book exported to EPUB, then its plan edited (alt text of page 2) and exported again."""
    folder = tmp_path_factory.mktemp("epub")
    plan = make_plan(3)
    plan.pages[0].action = "climbs the winding stairs"
    plan.pages[0].setting = "the lighthouse"
    plan.pages[0].time_of_day = "night"
    book = fake_book(folder, plan)
    first = publish_book(book, PublishOptions(formats=("epub",)))
    first.files["epub"].rename(folder / "before-the-edit.epub")
    before, _ = read_epub(folder / "before-the-edit.epub")
    edited = load_plan(book / "plan.json")
    edited.pages[1].alt_text = EDITED_ALT
    save_plan(edited, book / "plan.json")
    second = publish_book(book, PublishOptions(formats=("epub",)))
    after, entries = read_epub(second.files["epub"])
    return book, second, before, after, entries, edited


def test_the_epubs_pass_epubcheck_without_errors_or_warnings(exported):
    book, result, *_ = exported
    for path in (book.parent / "before-the-edit.epub", result.files["epub"]):
        assert "No errors or warnings detected" in epubcheck(path)


def test_fixed_layout_package(exported):
    book, result, _, files, entries, plan = exported
    assert result.files["epub"] == book.parent / "zoe.epub"
    assert entries[0].filename == "mimetype" and entries[0].compress_type == zipfile.ZIP_STORED
    assert files["mimetype"] == b"application/epub+zip"
    opf = package(files)
    assert metas(opf, "rendition:layout") == ["pre-paginated"]
    assert opf.find(f"{OPF}metadata/{{http://purl.org/dc/elements/1.1/}}title").text == plan.title
    assert opf.find(f"{OPF}metadata/{{http://purl.org/dc/elements/1.1/}}creator").text == plan.author
    assert opf.find(f"{OPF}metadata/{{http://purl.org/dc/elements/1.1/}}language").text == "en"
    items = {i.get("id"): i for i in opf.iter(f"{OPF}item")}
    assert items["cover-image"].get("properties") == "cover-image"
    assert items["nav"].get("properties") == "nav"
    spine = [(ref.get("idref"), ref.get("properties")) for ref in opf.iter(f"{OPF}itemref")]
    assert spine == [
        ("cover", "page-spread-right"),
        ("title", "page-spread-left"),
        ("page-01", "page-spread-right"),
        ("page-02", "page-spread-left"),
        ("page-03", "page-spread-right"),
    ]
    # every page has a viewport of the trim's shape (8.5 x 8.5 in at 96 px/in)
    for idref, _ in spine:
        page = files[f"OEBPS/{items[idref].get('href')}"].decode()
        assert '<meta name="viewport" content="width=816, height=816" />' in page
    nav = ET.fromstring(files["OEBPS/nav.xhtml"])
    toc = [
        a.get("href") for n in nav.iter(f"{XHTML}nav") if n.get("id") == "toc" for a in n.iter(f"{XHTML}a")
    ]
    assert toc == ["cover.xhtml", "title.xhtml", "page-01.xhtml", "page-02.xhtml", "page-03.xhtml"]


def test_accessibility_metadata(exported):
    opf = package(exported[3])
    assert set(metas(opf, "schema:accessMode")) == {"textual", "visual"}
    assert "textual" in metas(opf, "schema:accessModeSufficient")
    assert {"alternativeText", "readingOrder", "tableOfContents"} <= set(
        metas(opf, "schema:accessibilityFeature")
    )
    assert metas(opf, "schema:accessibilityHazard") == ["none"]
    assert len(metas(opf, "schema:accessibilitySummary")[0]) > 80
    assert metas(opf, "dcterms:conformsTo") == ["EPUB Accessibility 1.1 - WCAG 2.1 Level AA"]


def story_page(files, number):
    return ET.fromstring(files[f"OEBPS/page-{number:02d}.xhtml"])


def test_story_text_is_live_text_and_the_pictures_carry_none(exported):
    files, plan = exported[3], exported[5]
    for page in plan.pages:
        root = story_page(files, page.number)
        assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
        texts = [
            p.text
            for div in root.iter(f"{XHTML}div")
            if div.get("class") == "text"
            for p in div.iter(f"{XHTML}p")
        ]
        assert " ".join(texts) == " ".join(page.text.split())
        images = list(root.iter(f"{XHTML}img"))
        assert len(images) == 1 and images[0].get("src") == f"images/page-{page.number:02d}.jpg"
    # the pictures are the painted ones: nothing was drawn into them
    from io import BytesIO

    import numpy as np
    from PIL import Image

    book = exported[0]
    painted = np.asarray(Image.open(book / "pages" / "page-02.png").convert("RGB"), dtype=float)
    stored = Image.open(BytesIO(files["OEBPS/images/page-02.jpg"])).convert("RGB")
    crop = np.asarray(stored.resize((painted.shape[1], painted.shape[0])), dtype=float)
    assert np.abs(crop - painted).mean() < 12


def test_every_picture_has_specific_alt_text(exported):
    files, plan = exported[3], exported[5]
    alts = []
    for page in plan.pages:
        (image,) = story_page(files, page.number).iter(f"{XHTML}img")
        alt = image.get("alt")
        assert alt and alt == alt_text(plan, page)
        names = [plan.character(c).name for c in page.characters]
        if page.alt_text is None:
            assert all(name in alt for name in names), (alt, names)
            assert "picture" != alt.lower() and not re.search(r"\.(png|jpe?g)", alt)
        alts.append(alt)
    assert len(set(alts)) == len(alts)  # each picture described on its own
    assert "climbs the winding stairs" in alts[0] and "lighthouse" in alts[0] and "night" in alts[0]
    cover = ET.fromstring(files["OEBPS/cover.xhtml"])
    (cover_image,) = cover.iter(f"{XHTML}img")
    assert cover_image.get("alt") == alts[0]


def test_a_plan_edit_of_the_alt_text_reaches_the_epub(exported):
    _, _, before, after, _, plan = exported
    (old,) = story_page(before, 2).iter(f"{XHTML}img")
    (new,) = story_page(after, 2).iter(f"{XHTML}img")
    assert old.get("alt") != EDITED_ALT and "Father" in old.get("alt")
    assert new.get("alt") == EDITED_ALT


def test_export_command_makes_the_epub_and_refuses_bad_input(tmp_path):
    book = fake_book(tmp_path, make_plan(2))
    bad = CliRunner().invoke(app, ["export", str(book), "--format", "mobi"])
    assert bad.exit_code != 0 and "Unknown format 'mobi'" in bad.stderr and "Traceback" not in bad.output
    assert not (tmp_path / "zoe.epub").exists()
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "Book folder not found" in missing.stderr
    paper = CliRunner().invoke(app, ["export", str(book), "--paper", "premium-color"])
    assert paper.exit_code != 0 and "go with --preset" in paper.stderr
    empty = CliRunner().invoke(app, ["export", str(book), "--format", " "])
    assert empty.exit_code != 0 and "--format is empty" in empty.stderr
    pdf = CliRunner().invoke(app, ["export", str(book), "--format", "pdf"])
    assert pdf.exit_code == 0, pdf.output
    assert f"PDF {tmp_path / 'zoe.pdf'}" in " ".join(pdf.stderr.split()) and (tmp_path / "zoe.pdf").is_file()
    assert not (tmp_path / "zoe.epub").exists()


@pytest.mark.parametrize("options", [["--format", "epub"], ["--preset", "kdp"]])
def test_export_names_paths_with_brackets_exactly(tmp_path, options):
    folder = tmp_path / "odd [/] [bold]books"
    book = fake_book(folder, make_plan(2))
    result = CliRunner().invoke(app, ["export", str(book), *options])
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert str(folder) in " ".join(result.stderr.split())


def test_a_plan_that_no_longer_matches_the_pictures_is_refused(tmp_path):
    book = fake_book(tmp_path, make_plan(2))
    save_plan(make_plan(3), book / "plan.json")
    with pytest.raises(FairytaleError, match="render the plan again"):
        publish_book(book, PublishOptions(formats=("epub",)))
    assert not (tmp_path / "zoe.epub").exists()


@pytest.mark.slow  # a JVM start for epubcheck
def test_a_right_to_left_book_turns_the_other_way(tmp_path):
    from fairytale.publish.epub import EpubBook, EpubPage, write_epub
    from tests.publish_support import fake_picture

    pictures = [fake_picture(tmp_path / f"{n}.png", n) for n in (1, 2)]
    book = EpubBook(
        title="الفانوس",
        author=None,
        language="ar",
        pages=[EpubPage(n, "نص الصفحة", pictures[n - 1], f"صورة {n}") for n in (1, 2)],
        cover_picture=pictures[0],
        cover_alt="صورة 1",
    )
    files, _ = read_epub(write_epub(book, tmp_path / "rtl.epub").path)
    opf = package(files)
    assert opf.find(f"{OPF}spine").get("page-progression-direction") == "rtl"
    spreads = [ref.get("properties") for ref in opf.iter(f"{OPF}itemref")]
    assert spreads == ["page-spread-left", "page-spread-right", "page-spread-left", "page-spread-right"]
    assert story_page(files, 1).get("lang") == "ar"
    epubcheck(tmp_path / "rtl.epub")


def test_characters_xml_forbids_are_left_out_so_the_book_stays_valid(tmp_path):
    """A stray control character from a story or a plan edit (ESC, NUL, U+FFFF) would make every
    reading system reject the page; it is dropped, the rest of the text kept."""
    from fairytale.publish.epub import EpubBook, EpubPage, write_epub
    from tests.publish_support import fake_picture

    picture = fake_picture(tmp_path / "1.png", 1)
    book = EpubBook(
        title="Zoë\x1b and the lighthouse", author="A\x00nn", language="en",
        pages=[EpubPage(1, "Zoe ran\x1bhome.\uffff", picture, "Zoe\x07 runs home")],
        cover_picture=picture, cover_alt="Zoe\x1b at the door",
    )  # fmt: skip
    files, _ = read_epub(write_epub(book, tmp_path / "ctrl.epub").path)
    for name, data in files.items():
        if name.endswith((".xhtml", ".opf")):
            ET.fromstring(data)  # well-formed XML: expat refuses any forbidden character
    page = b"".join(ET.tostring(e) for e in story_page(files, 1).iter(f"{XHTML}p"))
    assert b"Zoe ranhome." in page
    assert [i.get("alt") for i in story_page(files, 1).iter(f"{XHTML}img")] == ["Zoe runs home"]


def test_a_language_that_is_no_language_tag_is_refused(tmp_path):
    book = fake_book(tmp_path, make_plan(2, language="English"))
    with pytest.raises(FairytaleError, match="language 'English' is not a language tag"):
        publish_book(book, PublishOptions(formats=("epub",)))
    assert not (tmp_path / "zoe.epub").exists()


def _identifier(epub) -> str:
    files, _ = read_epub(epub)
    opf = package(files)
    (identifier,) = [e for e in opf.iter("{http://purl.org/dc/elements/1.1/}identifier")]
    assert identifier.get("id") == opf.get("unique-identifier")
    return identifier.text


def test_two_books_of_the_same_title_and_author_have_different_identifiers(tmp_path):
    from fairytale.plan import BookPlan, Page

    # the same title, author and master seed; another story
    first = fake_book(tmp_path / "a", make_plan(3, title="My Book", author="Mum"))
    other = BookPlan(
        title="My Book",
        author="Mum",
        seed=make_plan(3).seed,
        pages=[
            Page(number=n, text=f"Another story, page {n}.", prompt=f"a cat {n}", seed=n) for n in (1, 2, 3)
        ],
    )
    second = fake_book(tmp_path / "b", other)
    ids = [
        _identifier(publish_book(book, PublishOptions(formats=("epub",))).files["epub"])
        for book in (first, second)
    ]
    assert ids[0] != ids[1]
    assert all(re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", i) for i in ids), ids


def test_the_identifier_is_kept_across_edits_and_re_exports(tmp_path):
    book = fake_book(tmp_path, make_plan(3, title="My Book", author="Mum"))
    stored = load_plan(book / "plan.json").book_id
    first = _identifier(publish_book(book, PublishOptions(formats=("epub",))).files["epub"])
    assert first == stored  # the plan's own identifier, written when the plan was made
    edited = load_plan(book / "plan.json")
    edited.pages[0].text = edited.pages[0].text.replace("Zoë", "Zoe")  # a typo fixed
    edited.title = "My Book, Again"
    save_plan(edited, book / "plan.json")
    again = _identifier(publish_book(book, PublishOptions(formats=("epub",))).files["epub"])
    assert again == first
