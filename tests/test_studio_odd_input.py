"""What people paste and upload into the studio: stories with no title line, odd characters
from a word processor or a broken clipboard, phone photos, transparent and huge pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fairytale import studio_actions
from fairytale.errors import FairytaleError
from fairytale.plan import load_plan
from fairytale.studio_actions import (
    StudioOptions,
    check_picture_upload,
    create_book,
    open_book,
    save_page,
    use_my_picture,
)
from tests.render_support import make_plan, tiny_settings, write_plan

LONG_FIRST_LINE = (
    "Once upon a time a little fox lived in the woods near a river, and every morning he sang to the birds.\n\n"
    "One day he met an owl who could not sing at all. The fox taught her a song.\n"
)


def count_words(text: str) -> int:
    return len(text.split())


@pytest.fixture()
def no_models(tmp_path):
    """Options naming models that are not there: a test that gets as far as planning fails."""
    missing = str(tmp_path / "no-such-model")
    return StudioOptions(
        tiny_settings(tmp_path / "no-sd"), ner_model=missing, qa_model=missing, nli_model=missing
    )


@pytest.fixture()
def tiny_options(tiny_sd, tiny_ner, tiny_qa, tiny_nli):
    return StudioOptions(
        settings=tiny_settings(tiny_sd),
        ner_model=str(tiny_ner),
        qa_model=str(tiny_qa),
        nli_model=str(tiny_nli),
    )


@pytest.fixture()
def book(tmp_path):
    folder = tmp_path / "zoe"
    folder.mkdir()
    write_plan(folder, make_plan(2))
    return open_book(folder)


def test_a_pasted_story_without_a_title_line_asks_for_a_title(tmp_path, no_models):
    # before, the book was titled after the studio's scratch file (".story 1403 98765"), cover included
    books = tmp_path / "books"
    with pytest.raises(FairytaleError, match="Give the book a title"):
        create_book(books, LONG_FIRST_LINE, options=no_models, count_tokens=count_words)
    assert not any(books.iterdir())  # no scratch file, no folder


def test_a_pasted_storys_problem_names_the_pasted_story_not_a_scratch_file(tmp_path, no_models):
    with pytest.raises(FairytaleError) as raised:
        create_book(tmp_path, "\ufeff\n", options=no_models, count_tokens=count_words)
    assert str(raised.value) == "The pasted story has no text"
    upload = tmp_path / "zoe.txt"
    upload.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(FairytaleError, match=r"^zoe\.txt is not a text file"):
        create_book(tmp_path / "books", story_file=upload, options=no_models, count_tokens=count_words)


def test_an_uploaded_story_without_a_title_line_is_named_after_the_file(tmp_path, tiny_options):
    upload = tmp_path / "ginger_the_giraffe.txt"
    upload.write_text(LONG_FIRST_LINE, encoding="utf-8")
    book = create_book(tmp_path / "books", story_file=upload, options=tiny_options, count_tokens=count_words)
    assert book.plan().title == "Ginger The Giraffe" and book.folder.name == "ginger-the-giraffe"


def test_a_story_pasted_with_odd_characters_makes_a_clean_book(tmp_path, tiny_options):
    story = (
        "Zoë and the Sea\r\n\r\n"
        "Zoë saw a dog \U0001f436 on the beach.\x0bIt barked.\x00 A broken emoji \ud83d stayed.\r\n\r\n"
        "\u202eThe waves came in.\u202c The dog swam.\x0c The end."
    )
    book = create_book(
        tmp_path / "books", story, title="Zoë \ud800", options=tiny_options, count_tokens=count_words
    )
    plan = load_plan(book.plan_file)
    text = " ".join(page.text for page in plan.pages)
    assert "\U0001f436" in text and "\ufffd" in text and "\u202e" in text
    assert not any(ch in text for ch in "\x00\x0b\x0c\r") and plan.title == "Zoë \ufffd"


def test_a_page_saved_with_a_broken_emoji_is_saved(book):
    save_page(book, 1, text="Zoë laughed \ud83d.\x0bThe end.")
    assert load_plan(book.plan_file).pages[0].text == "Zoë laughed \ufffd.\nThe end."


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_phone_photo_is_used_upright(book, tmp_path):
    photo = tmp_path / "photo.jpg"
    picture = Image.new("RGB", (60, 30), "red")
    picture.paste((0, 0, 255), (0, 0, 30, 30))  # blue left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to show": how phones store portrait photos
    picture.save(photo, exif=exif, quality=95)
    path = use_my_picture(book, "zoe", photo)
    shown = pixels(path)
    assert shown.shape == (60, 30, 3)  # upright: taller than wide
    assert shown[5, 15, 2] > 200 and shown[55, 15, 0] > 200  # blue on top, red below


def test_a_transparent_picture_is_put_on_white(book, tmp_path):
    cut_out = tmp_path / "cut-out.png"
    picture = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # transparent black all round
    picture.paste((200, 30, 30, 255), (5, 5, 15, 15))
    picture.save(cut_out)
    shown = pixels(use_my_picture(book, "zoe", cut_out))
    assert shown[0, 0].tolist() == [255, 255, 255] and shown[10, 10].tolist() == [200, 30, 30]


def test_a_huge_picture_is_refused_by_its_size_and_a_big_one_made_smaller(tmp_path, monkeypatch):
    monkeypatch.setattr(studio_actions, "MAX_PICTURE_PIXELS", 100 * 100)
    monkeypatch.setattr(studio_actions, "MAX_PICTURE_SIDE", 40)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (200, 120), "green").save(huge)
    with pytest.raises(FairytaleError, match=r"huge\.png is 200×120 pixels; .*megapixels"):
        check_picture_upload(huge)
    big = tmp_path / "big.png"
    Image.new("RGB", (90, 60), "green").save(big)
    assert check_picture_upload(big).size == (40, 27)
