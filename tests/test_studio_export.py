"""The studio's Book tab: the EPUB (and print-on-demand files) written from the book folder
through the publish API, without painting again."""

from __future__ import annotations

import pytest

from fairytale.errors import FairytaleError
from fairytale.plan import load_plan, save_plan
from fairytale.studio_actions import export_book, open_book
from tests.publish_support import epubcheck, fake_book


def test_the_epub_is_written_beside_the_book_and_passes_epubcheck(tmp_path, monkeypatch):
    book = open_book(fake_book(tmp_path))
    plan = load_plan(book.plan_file)
    plan.pages[0].text = "Zoë found a lantern by the sea."  # an edit after painting reaches the EPUB
    save_plan(plan, book.plan_file)

    def refuse(*args, **kwargs):
        raise AssertionError("exporting painted again")

    monkeypatch.setattr("fairytale.render.render_book", refuse)
    result = export_book(book)
    epub = tmp_path / "zoe.epub"
    assert result.files == {"epub": epub} and epub.is_file()
    import zipfile

    with zipfile.ZipFile(epub) as archive:
        assert any(
            "Zoë found a lantern" in archive.read(n).decode()
            for n in archive.namelist()
            if n.endswith(".xhtml")
        )
    epubcheck(epub)


def test_the_print_preset_files_come_beside_the_epub(tmp_path):
    book = open_book(fake_book(tmp_path))
    result = export_book(book, preset="kdp")
    assert set(result.files) == {"epub", "interior", "cover", "preflight"}
    assert all(path.is_file() for path in result.files.values())
    assert result.files["cover"] == tmp_path / "zoe-kdp-cover.pdf"


def test_a_book_without_pictures_or_a_bad_preset_is_one_line(tmp_path):
    book = open_book(fake_book(tmp_path))
    with pytest.raises(FairytaleError, match="preset|Unknown|kdp"):
        export_book(book, preset="lulu")
    (book.folder / "manifest.json").unlink()
    with pytest.raises(FairytaleError, match="paint it first"):
        export_book(book)
    assert not (tmp_path / "zoe.epub").exists()
