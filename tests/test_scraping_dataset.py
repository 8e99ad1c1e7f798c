"""The style dataset: which pages are kept (a measured rule), crops, captions, the split, the
imagefolder layout — and the whole path from the local site to `datasets.load_dataset`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.errors import FairytaleError
from scraping.dataset import _Picture, _split, build_dataset, caption_for
from scraping.manifest import Manifest, Record, Status
from scraping.pages import Page, PageRule, classify, measure_ink, square_crop
from tests.scraping_site import ILLUSTRATED_PAGES, PAGES_PER_BOOK, Site, book_pdf, serve

TITLES = ("Ginger the Giraffe", "Hide and Seek", "Doing My Chores")


@pytest.fixture(scope="module")
def pdf_dir(tmp_path_factory) -> Path:
    """Three fixture books as a scrape would leave them (with a manifest naming them)."""
    folder = tmp_path_factory.mktemp("books")
    manifest = Manifest(folder / "manifest.jsonl")
    for number, title in enumerate(TITLES, start=1):
        name = f"00{number}-{title.upper().replace(' ', '-')}.pdf"
        (folder / name).write_bytes(book_pdf(title, raster=number == 2))
        manifest.put(Record(title=title, page_url=f"https://x/blogs/news/{number}", file=name, status=Status.COMPLETE))
    return folder


@pytest.fixture(scope="module")
def built(pdf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("datasets") / "dataset"
    return build_dataset(pdf_dir, out, size=512, dpi=72, seed=0), out


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


# -- the page rule --------------------------------------------------------------------------------


def _page_of_text(paper=(255, 255, 255), size=(384, 384)) -> Image.Image:
    image = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(image)
    for row in range(30):
        draw.text((12, 8 + row * 12), "the quick brown fox jumps over the lazy dog again and again", fill=(20, 20, 20))
    return image


def _painting(size=(384, 384)) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, size[0], size[1] // 2), fill=(110, 180, 240))
    draw.ellipse((40, 150, 200, 330), fill=(230, 120, 40))
    return image


def test_blank_page_has_no_ink():
    ink, picture = measure_ink(Image.new("RGB", (300, 300), "white"), [])
    assert ink == 0 and picture == 0
    assert classify(Page(5, None, "", ink, picture), PageRule()) == "blank"


@pytest.mark.parametrize("paper", [(255, 255, 255), (250, 240, 215)])
def test_text_without_a_text_layer_has_ink_but_no_picture_ink(paper):
    ink, picture = measure_ink(_page_of_text(paper), [])
    assert ink > 0.03  # letters are ink (on white or on cream paper) …
    assert picture < 0.01  # … but thin strokes, not painted areas
    assert classify(Page(5, None, "", ink, picture), PageRule()) == "text"


def test_a_painting_is_picture_ink():
    ink, picture = measure_ink(_painting(), [])
    assert picture > 0.4
    assert classify(Page(3, None, "", ink, picture), PageRule()) is None


def test_text_layer_boxes_are_masked_out():
    image = Image.new("RGB", (200, 200), "white")
    ImageDraw.Draw(image).rectangle((20, 20, 120, 60), fill="black")  # bold title lettering, say
    _, picture = measure_ink(image, [])
    assert picture > 0.05
    _, picture = measure_ink(image, [(20, 20, 120, 60)])
    assert picture == 0


def test_thresholds_are_options():
    page = Page(3, None, "", ink=0.2, picture_ink=0.15)
    assert classify(page, PageRule()) is None
    assert classify(page, PageRule(min_picture=0.2)) == "text"


def test_square_crop_takes_the_centre():
    image = Image.new("RGB", (900, 600), "red")
    ImageDraw.Draw(image).rectangle((150, 0, 749, 599), fill="blue")
    crop = square_crop(image, 512)
    assert crop.size == (512, 512)
    assert crop.getpixel((5, 256)) == (0, 0, 255) and crop.getpixel((506, 256)) == (0, 0, 255)


def test_captions():
    assert caption_for("") == "a children's book illustration"
    assert caption_for("“Sam!” Terrance shouted. Then he ran.") == "a children's book illustration, Sam! Terrance shouted"
    long = " ".join(["word"] * 50) + "."
    assert len(caption_for(long).split()) == 4 + 20


def test_split_is_deterministic_stable_and_never_empty():
    def pictures(books):
        return [_Picture(f"b{b}", f"{b:064x}", page, f"{b}-{page}.jpg", "c") for b in books for page in range(20)]

    first, again = pictures(range(5)), pictures(range(5))
    _split(first, seed=0, fraction=0.1)
    _split(again, seed=0, fraction=0.1)
    assert [p.split for p in first] == [p.split for p in again]
    assert 0 < sum(p.split == "validation" for p in first) < 30

    more = pictures(range(6))  # a book added: nobody else moves
    _split(more, seed=0, fraction=0.1)
    assert [p.split for p in more[:100]] == [p.split for p in first]

    other = pictures(range(5))
    _split(other, seed=1, fraction=0.1)
    assert [p.split for p in other] != [p.split for p in first]

    two = pictures([0])[:2]
    _split(two, seed=0, fraction=0.1)
    assert sorted(p.split for p in two) == ["train", "validation"]


# -- building -------------------------------------------------------------------------------------


def test_build_keeps_exactly_the_illustrations(built):
    report, out = built
    kept = [(d.book, d.page) for d in report.pages if d.reason is None]
    assert kept == [(title, page) for title in TITLES for page in ILLUSTRATED_PAGES]
    reasons = {d.page: d.reason for d in report.pages if d.book == "Hide and Seek"}
    assert reasons == {1: "cover", 2: None, 3: None, 4: None, 5: "text", 6: "text", 7: "blank", 8: "cover"}
    assert len(report.pages) == PAGES_PER_BOOK * 3
    assert report.dropped == {"cover": 6, "text": 6, "blank": 3}


def test_build_writes_an_imagefolder(built):
    report, out = built
    assert sorted(os.listdir(out)) == ["README.md", "build.json", "train", "validation"]
    rows = {split: _rows(out / split) for split in ("train", "validation")}
    assert len(rows["train"]) == report.count("train") and len(rows["validation"]) == report.count("validation") >= 1
    for split, split_rows in rows.items():
        assert sorted(os.listdir(out / split)) == sorted([r["file_name"] for r in split_rows] + ["metadata.jsonl"])
        for row in split_rows:
            assert set(row) == {"file_name", "caption", "book", "page"}
            assert row["book"] in TITLES and row["page"] in ILLUSTRATED_PAGES
            assert row["caption"].startswith("a children's book illustration, ")
            assert row["book"] in row["caption"]  # the fixture's story line names the book
            with Image.open(out / split / row["file_name"]) as image:
                assert image.size == (512, 512) and image.mode == "RGB"
    assert report.upscaled == 0  # 8-inch pages at 72 dpi are 576 px
    card = (out / "README.md").read_text()
    assert "seed 0" in card and "research use" in card and "72 dpi" in card


def test_same_inputs_same_dataset(pdf_dir, built, tmp_path):
    report, out = built
    again = build_dataset(pdf_dir, tmp_path / "again", size=512, dpi=72, seed=0)
    for split in ("train", "validation"):
        assert _rows(tmp_path / "again" / split) == _rows(out / split)
    assert [d.split for d in again.pages] == [d.split for d in report.pages]


def test_duplicates_and_broken_pdfs_are_skipped_and_titles_fall_back_to_file_names(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "Bully-Bill.pdf").write_bytes(book_pdf("Bully Bill"))
    (books / "copy-of-bully-bill.PDF").write_bytes(book_pdf("Bully Bill"))
    (books / "broken.pdf").write_bytes(b"%PDF-1.4 nothing else")
    (books / "notes.txt").write_text("not a book")
    report = build_dataset(books, tmp_path / "ds", dpi=72, validation_fraction=0)
    assert report.books == ["Bully Bill"]
    assert set(report.skipped_files) == {"copy-of-bully-bill.PDF", "broken.pdf"}
    assert report.skipped_files["copy-of-bully-bill.PDF"] == "same file as Bully-Bill.pdf"
    assert "unreadable" in report.skipped_files["broken.pdf"]
    assert report.count("validation") == 0 and not _rows(tmp_path / "ds" / "validation")


def _with_a_broken_page(pdf: bytes, number: int) -> bytes:
    """``pdf`` with its page ``number`` pointing at an object that does not exist: the document
    opens and counts its pages, but that page cannot be loaded."""
    import re

    kids = re.search(rb"/Kids \[([^\]]*)\]", pdf)
    references = kids.group(1).split(b" R")
    references[number - 1] = b" 999 0"
    return pdf.replace(kids.group(0), b"/Kids [" + b" R".join(references) + b"]", 1)


def _encrypted_pdf() -> bytes:
    import io

    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, encrypt="a password")
    pdf.drawString(72, 72, "secret")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def test_a_book_with_a_page_that_cannot_be_read_is_skipped_and_the_rest_are_built(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "a-damaged.pdf").write_bytes(_with_a_broken_page(book_pdf("Damaged"), 3))
    (books / "b-locked.pdf").write_bytes(_encrypted_pdf())
    (books / "c-good.pdf").write_bytes(book_pdf("Good"))
    report = build_dataset(books, tmp_path / "ds", dpi=72, validation_fraction=0)
    assert report.books == ["C Good"]
    assert "page 3" in report.skipped_files["a-damaged.pdf"]
    assert "password" in report.skipped_files["b-locked.pdf"].lower()
    assert report.kept == len(ILLUSTRATED_PAGES)
    # Nothing of the damaged book (its page 2 was read before page 3 failed) is in the dataset.
    assert {row["book"] for row in _rows(tmp_path / "ds" / "train")} == {"C Good"}
    assert len(list((tmp_path / "ds" / "train").glob("*.jpg"))) == len(ILLUSTRATED_PAGES)
    assert {d.book for d in report.pages} == {"C Good"}


def test_cli_names_a_damaged_book_and_builds_the_others(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "damaged.pdf").write_bytes(_with_a_broken_page(book_pdf("Damaged"), 3))
    (books / "good.pdf").write_bytes(book_pdf("Good"))
    result = CliRunner().invoke(
        app, ["dataset", "build", str(books), "--out", str(tmp_path / "ds"), "--dpi", "72"]
    )
    assert result.exit_code == 0, result.output
    assert "Skipped damaged.pdf: page 3" in " ".join(result.output.split())

    (books / "good.pdf").unlink()
    result = CliRunner().invoke(
        app, ["dataset", "build", str(books), "--out", str(tmp_path / "ds2"), "--dpi", "72"]
    )
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "No readable PDF files" in line and "damaged.pdf: page 3" in line
    assert not (tmp_path / "ds2").exists()


def test_size_768_and_keeping_covers(pdf_dir, tmp_path):
    report = build_dataset(pdf_dir, tmp_path / "ds", size=768, dpi=96, rule=PageRule(drop_covers=False))
    # Kept for measuring, the fixture's covers (flat colour and a title) are no pictures either.
    assert "cover" not in report.dropped
    assert all(d.reason in ("blank", "text") for d in report.pages if d.page in (1, PAGES_PER_BOOK))
    assert report.kept == 3 * len(ILLUSTRATED_PAGES)
    name = _rows(tmp_path / "ds" / "train")[0]["file_name"]
    with Image.open(tmp_path / "ds" / "train" / name) as image:
        assert image.size == (768, 768)
    assert report.upscaled == 0  # 8 inches at 96 dpi: exactly 768 px


def test_low_dpi_pictures_are_flagged_as_enlarged(pdf_dir, tmp_path):
    result = CliRunner().invoke(app, ["dataset", "build", str(pdf_dir), "--out", str(tmp_path / "ds"), "--dpi", "48"])
    assert result.exit_code == 0, result.output
    assert "9 pages rendered smaller than 512 px" in " ".join(result.output.split())


def test_an_existing_dataset_is_replaced_only_with_overwrite(pdf_dir, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FairytaleError, match="not empty"):
        build_dataset(pdf_dir, out, dpi=72)
    assert os.listdir(out) == ["keep.txt"]
    # --force never deletes what we did not write: a folder holding the user's files is refused.
    with pytest.raises(FairytaleError, match="did not write .*keep.txt"):
        build_dataset(pdf_dir, out, dpi=72, overwrite=True)
    assert os.listdir(out) == ["keep.txt"]
    (out / "keep.txt").unlink()
    build_dataset(pdf_dir, out, dpi=72, seed=1)
    with pytest.raises(FairytaleError, match="not empty"):
        build_dataset(pdf_dir, out, dpi=72, seed=2)
    build_dataset(pdf_dir, out, dpi=72, seed=2, overwrite=True)  # our own dataset is replaced
    assert sorted(os.listdir(out)) == ["README.md", "build.json", "train", "validation"]
    assert "seed 2" in (out / "README.md").read_text()
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no staging or backup folder left


def test_a_dataset_built_from_the_same_books_and_settings_is_reused_while_intact(pdf_dir, tmp_path):
    out = tmp_path / "ds"
    first = build_dataset(pdf_dir, out, dpi=72, validation_fraction=0.2)
    record = json.loads((out / "build.json").read_text())
    assert record["settings"]["dpi"] == 72 and [i["title"] for i in record["inputs"]] == list(TITLES)
    picture = out / "train" / _rows(out / "train")[0]["file_name"]
    stamp = picture.stat().st_mtime_ns

    again = build_dataset(pdf_dir, out, dpi=72, validation_fraction=0.2, reuse=True)
    assert again.reused and not first.reused and picture.stat().st_mtime_ns == stamp  # nothing written
    assert (again.kept, again.books, again.count("validation")) == (first.kept, first.books, first.count("validation"))
    assert again.pages == first.pages

    # other settings, a damaged picture: built again (replacing needs overwrite, as ever)
    with pytest.raises(FairytaleError, match="not empty"):
        build_dataset(pdf_dir, out, dpi=96, validation_fraction=0.2, reuse=True)
    assert not build_dataset(pdf_dir, out, dpi=96, validation_fraction=0.2, reuse=True, overwrite=True).reused
    assert json.loads((out / "build.json").read_text())["settings"]["dpi"] == 96
    assert build_dataset(pdf_dir, out, dpi=96, validation_fraction=0.2, reuse=True).reused
    picture = out / "train" / _rows(out / "train")[0]["file_name"]
    picture.write_bytes(picture.read_bytes()[:100])  # cut short
    assert not build_dataset(pdf_dir, out, dpi=96, validation_fraction=0.2, reuse=True, overwrite=True).reused
    assert build_dataset(pdf_dir, out, dpi=96, validation_fraction=0.2, reuse=True).reused


def test_a_dataset_is_built_again_when_a_book_changes(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "ginger.pdf").write_bytes(book_pdf("Ginger"))
    out = tmp_path / "ds"
    build_dataset(books, out, dpi=72, validation_fraction=0)
    (books / "ginger.pdf").write_bytes(book_pdf("Ginger and Tim"))  # the same file name, a new book
    rebuilt = build_dataset(books, out, dpi=72, validation_fraction=0, reuse=True, overwrite=True)
    assert not rebuilt.reused and rebuilt.books == ["Ginger"]
    assert "Ginger and Tim" in " ".join(r["caption"] for r in _rows(out / "train"))
    (out / "build.json").unlink()  # a dataset without its record (an older one, say) is never reused
    assert not build_dataset(books, out, dpi=72, validation_fraction=0, reuse=True, overwrite=True).reused


def test_a_failed_build_leaves_nothing(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "text-only.pdf").write_bytes(book_pdf("Text Only"))
    with pytest.raises(FairytaleError, match="No illustrated pages"):
        build_dataset(books, tmp_path / "ds", dpi=72, rule=PageRule(min_picture=0.99))
    assert sorted(os.listdir(tmp_path)) == ["books"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 600}, "--size must be 512"),
        ({"dpi": 10}, "--dpi must be between"),
        ({"validation_fraction": 0.9}, "validation fraction"),
    ],
)
def test_bad_options_are_refused_before_any_work(pdf_dir, tmp_path, kwargs, message):
    with pytest.raises(FairytaleError, match=message):
        build_dataset(pdf_dir, tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


def test_cli_build_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (["dataset", "build", str(tmp_path / "missing")], "PDF folder not found"),
        (["dataset", "build", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], "No readable PDF files"),
        (["dataset", "build", str(tmp_path / "empty"), "--size", "1024"], "--size must be 512"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert message in line and "Traceback" not in result.output


# -- done when ------------------------------------------------------------------------------------


def test_scrape_then_build_then_load_with_datasets(tmp_path, monkeypatch):
    """`fairytale scrape --base-url http://127.0.0.1:PORT --out X` then `fairytale dataset build X
    --out Y` gives a dataset that `datasets.load_dataset("imagefolder", data_dir=Y)` loads."""
    import datasets

    books, dataset = tmp_path / "X", tmp_path / "Y"
    runner = CliRunner()
    with serve(Site()) as site:
        result = runner.invoke(app, ["scrape", "--base-url", site.url, "--allow-host", "localhost", "--out", str(books), "--delay", "0"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["dataset", "build", str(books), "--out", str(dataset), "--dpi", "72"])
    assert result.exit_code == 0, result.output
    assert "9 pictures" in result.output

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    loaded = datasets.load_dataset("imagefolder", data_dir=str(dataset), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "validation"}
    assert loaded["train"].num_rows + loaded["validation"].num_rows == 9
    assert loaded["validation"].num_rows >= 1
    row = loaded["train"][0]
    assert set(row) == {"image", "caption", "book", "page"}
    assert row["image"].size == (512, 512)
    assert row["book"] in TITLES and row["caption"].startswith("a children's book illustration")


def test_build_progress_bar_counts_pages(pdf_dir, tmp_path):
    import io

    from rich.console import Console

    screen = io.StringIO()
    build_dataset(pdf_dir, tmp_path / "ds", dpi=36, size=512, show_progress=True,
                  console=Console(file=screen, force_terminal=True, width=120))
    assert "Pages" in screen.getvalue() and f"{3 * PAGES_PER_BOOK}/{3 * PAGES_PER_BOOK}" in screen.getvalue()


def test_a_new_dataset_folder_gets_the_users_normal_permissions(pdf_dir, tmp_path):
    old = os.umask(0o022)
    try:
        build_dataset(pdf_dir, tmp_path / "ds", dpi=72, validation_fraction=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ds").stat().st_mode) == 0o755


@pytest.mark.parametrize(
    ("rule", "message"),
    [(PageRule(min_picture=1.5), "--min-picture is a fraction of the page"), (PageRule(min_ink=-0.1), "min_ink is a fraction")],
)
def test_page_rules_out_of_range_name_the_option_there_is(tmp_path, rule, message):
    books = tmp_path / "books"
    books.mkdir()
    with pytest.raises(FairytaleError, match=message):
        build_dataset(books, tmp_path / "ds", dpi=72, rule=rule)


def test_cli_keeps_a_dataset_built_from_the_same_books_and_settings(pdf_dir, tmp_path):
    """A second `dataset build` with the same books and settings keeps the dataset (one line says so);
    other settings still need --force; --rebuild builds it again; a stranger's folder stays refused."""
    out = tmp_path / "ds"
    build = ["dataset", "build", str(pdf_dir), "--out", str(out), "--dpi", "72"]
    runner = CliRunner()
    assert runner.invoke(app, build).exit_code == 0
    record = (out / "build.json").stat().st_mtime_ns, (out / "build.json").stat().st_ino

    for again in ([], ["--force"]):
        result = runner.invoke(app, [*build, *again])
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert f"Kept the dataset in {out}" in text and "--rebuild builds it again" in text
        assert "9 pictures" in text
        assert ((out / "build.json").stat().st_mtime_ns, (out / "build.json").stat().st_ino) == record

    result = runner.invoke(app, [*build, "--seed", "3"])  # other settings: not replaced unasked
    assert result.exit_code == 1 and "not empty" in result.output
    result = runner.invoke(app, [*build, "--seed", "3", "--force"])
    assert result.exit_code == 0 and "Kept" not in result.output
    assert "seed 3" in (out / "README.md").read_text()

    rebuilt = (out / "build.json").stat().st_ino
    result = runner.invoke(app, [*build, "--seed", "3", "--rebuild"])
    assert result.exit_code == 0 and "Kept" not in result.output
    assert (out / "build.json").stat().st_ino != rebuilt

    (out / "notes.txt").write_text("mine")  # no longer only our dataset: never replaced
    result = runner.invoke(app, [*build, "--seed", "3", "--rebuild"])
    assert result.exit_code == 1 and "did not write" in " ".join(result.output.split())
    assert (out / "notes.txt").read_text() == "mine"
