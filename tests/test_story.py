"""Reading stories: encodings, titles, and one-line refusals of bad files."""

from __future__ import annotations

import re

import pytest

from fairytale.errors import FairytaleError
from fairytale.story import MAX_BYTES, read_story, split_title, strip_markdown

TEXT = "Zoë’s Café\n\n“Hello,” said Zoë. She served crème brûlée to the giraffe.\n\nIt was a sunny day."


@pytest.mark.parametrize(
    "encoding, prefix",
    [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16", b""), ("utf-16-be", b"\xfe\xff"), ("cp1252", b"")],
)
def test_encodings_decode_to_the_same_text(tmp_path, encoding, prefix):
    path = tmp_path / "story.txt"
    path.write_bytes(prefix + TEXT.replace("\n", "\r\n").encode(encoding))
    story = read_story(path)
    assert story.title == "Zoë’s Café"
    assert story.text == TEXT.split("\n\n", 1)[1]  # curly quotes, accents and paragraphs kept


def test_long_cp1252_story_is_detected(tmp_path):
    body = "“Look!” cried Ginger. The café’s crème brûlée was ready. " * 30
    path = tmp_path / "story.txt"
    path.write_bytes(body.encode("cp1252"))
    assert read_story(path).text == body.strip()


def test_title_rules(tmp_path):
    assert split_title("Once upon a time there was a fox.\n\nIt ran.")[0] is None  # a sentence, not a title
    assert split_title("The Fox\nIt ran.")[0] is None  # no blank line after it
    path = tmp_path / "ginger_the_giraffe.txt"
    path.write_text("Ginger was tall. She ate leaves.")
    assert read_story(path).title == "Ginger The Giraffe"  # from the file name
    assert read_story(path, title="Tall Ginger").title == "Tall Ginger"
    path.write_text("Ginger\n\nGinger was tall.")
    story = read_story(path, title="ginger")
    assert story.text == "Ginger was tall."  # the title line is not printed twice
    story = read_story(path, title="Another Title")
    assert story.text == "Ginger\n\nGinger was tall."  # nothing is dropped when the title differs


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"   \n\n  ", "is empty"),
        (bytes(range(256)) * 8, "not a text file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "not a text file"),
        (b"x" * (MAX_BYTES + 1), "too long"),
        (("word " * 21_000).encode(), "too long for a picture book"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "story.txt"
    path.write_bytes(content)
    with pytest.raises(FairytaleError, match=re.escape(message)) as info:
        read_story(path)
    assert "\n" not in str(info.value)


def test_unreadable_paths(tmp_path, read_only_folder):
    with pytest.raises(FairytaleError, match="not found"):
        read_story(tmp_path / "missing.txt")
    with pytest.raises(FairytaleError, match="folder"):
        read_story(tmp_path)


def test_markdown_marks_are_not_printed(tmp_path):
    # A story pasted from a notes app or a chat assistant: "# Ginger" was the title, and
    # "**very**", "## Chapter 1" and "---" were printed on the pages.
    path = tmp_path / "story.md.txt"
    path.write_text(
        "# Ginger the Giraffe\n\n## Chapter 1\n**Ginger** the giraffe was *very* tall.\n\n---\n\n"
        "## Chapter 2 ##\n\nShe ate 5 * 3 = 15 leaves from the snake_case tree and __smiled__.\n\n* * *\n\n_The end_",
        encoding="utf-8",
    )
    story = read_story(path)
    assert story.title == "Ginger the Giraffe"
    paragraphs = [" ".join(p.split()) for p in story.text.split("\n\n") if p.strip()]
    assert paragraphs == [
        "Chapter 1",
        "Ginger the giraffe was very tall.",
        "Chapter 2",
        "She ate 5 * 3 = 15 leaves from the snake_case tree and smiled.",  # a lone * and a _ in a word stay
        "The end",
    ]


def test_a_setext_heading_is_the_title(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("Ginger the Giraffe\n==================\nGinger was tall.", encoding="utf-8")
    story = read_story(path)
    assert (story.title, story.text) == ("Ginger the Giraffe", "Ginger was tall.")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 4, "is a Word (.docx), OpenDocument (.odt)"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512), "is an old Word (.doc) document"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "is a PDF"),
        (rb"{\rtf1\ansi\ansicpg1252{\fonttbl\f0\fswiss Helvetica;}\f0\fs24 Ginger the giraffe was tall.\par}", "is an RTF document"),
        (b"<!DOCTYPE html>\n<html><body><h1>Ginger</h1><p>Ginger was tall.</p></body></html>", "is a web page (HTML)"),
        (b'{\n  "version": 3,\n  "title": "Ginger",\n  "characters": [],\n  "pages": []\n}', "is a book plan, not a story"),
    ],
    ids=["docx", "doc", "pdf", "rtf", "html", "plan"],
)
def test_documents_renamed_txt_are_named_with_the_fix(tmp_path, content, message):
    # An RTF or HTML story had its markup printed on the pages ("{\rtf1\ansi…"); a .docx was
    # "not a text file" without saying what to do; a plan passed as the story became a book of JSON.
    path = tmp_path / "story.txt"
    path.write_bytes(content)
    with pytest.raises(FairytaleError, match=re.escape(message)) as info:
        read_story(path)
    assert "\n" not in str(info.value)
    assert "plain text" in str(info.value) or "fairytale render" in str(info.value)


def test_a_story_that_mentions_html_or_braces_is_still_a_story(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("Ginger wrote <html> on the board. {She laughed.} \"pages\" and \"characters\" fell.", encoding="utf-8")
    assert read_story(path).text.startswith("Ginger wrote <html>")


@pytest.mark.parametrize("content", ["Ginger the Giraffe\n", "# Ginger the Giraffe\n\n", "  Ginger the Giraffe  "])
def test_a_file_with_only_a_title_is_refused(tmp_path, content):
    # It became a one-page book whose only page said "Ginger the Giraffe".
    path = tmp_path / "story.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FairytaleError, match=r"holds only a title \('Ginger the Giraffe'\), no story"):
        read_story(path)
    with pytest.raises(FairytaleError, match="holds only a title"):
        read_story(path, title="Ginger the Giraffe")


@pytest.mark.parametrize("content", ["Ginger ate a leaf.", "“Hello!”", "Ginger ate a leaf and then she ate another leaf and then she slept"])
def test_a_one_line_story_is_a_story(tmp_path, content):
    path = tmp_path / "story.txt"
    path.write_text(content, encoding="utf-8")
    assert read_story(path).text == content


def test_a_utf8_story_with_a_stray_windows_byte_keeps_its_accents(tmp_path):
    # One cp1252 curly quote pasted into a UTF-8 story made the whole file read as a single-byte
    # code page: every "café" in the book was printed "cafÃ©".
    body = "Zoë walked to the café. " * 20 + "“Hello,” said the waiter.\n\n"
    path = tmp_path / "story.txt"
    path.write_bytes(body.encode("utf-8") + b"\x93Good night,\x94 said Zo\xc3\xab.")
    story = read_story(path)
    assert story.text == (body + "“Good night,” said Zoë.").strip()
    assert story.encoding == "utf-8"


def test_a_cp1252_story_is_still_read_as_cp1252(tmp_path):
    path = tmp_path / "story.txt"
    path.write_bytes(("Zoe walked to the cafe. " * 20 + "“Good night,” said Zoë.").encode("cp1252"))
    assert read_story(path).text.endswith("“Good night,” said Zoë.")


@pytest.mark.parametrize(
    "text, encoding",
    [
        ("Ginger walked. Zażółć gęślą jaźń. Ginger walked to the river and slept.", "cp1250"),
        ("Привет, сказал медведь. Он был большой и добрый.", "cp1251"),
        ("Καλημέρα, είπε η αρκούδα. Ήταν μεγάλη.", "cp1253"),
        ("Ginger dijo: ¿Qué? Mañana iré al río con Zoë.", "cp1252"),
    ],
    ids=["polish", "russian", "greek", "spanish"],
)
def test_other_code_pages_are_not_taken_for_cp1252(tmp_path, text, encoding):
    path = tmp_path / "story.txt"
    path.write_bytes(text.encode(encoding))
    assert read_story(path).text == text


def test_a_title_label_is_not_part_of_the_title(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("**Title: Ginger the Giraffe**\n\nGinger was tall.", encoding="utf-8")
    assert read_story(path).title == "Ginger the Giraffe"
    path.write_text("Title:\n\nGinger was tall.", encoding="utf-8")
    assert read_story(path).text.startswith("Title:")  # a bare label is no title


def test_unicode_line_and_paragraph_separators_are_breaks(tmp_path):
    # Pasted from a layout program: the paragraphs ran together and the title was not found.
    path = tmp_path / "story.txt"
    path.write_text("Ginger the Giraffe\u2029Ginger was tall.\u2028She ate leaves.\u2029Milo came\vby.", encoding="utf-8")
    story = read_story(path)
    assert story.title == "Ginger the Giraffe"
    assert story.text == "Ginger was tall.\nShe ate leaves.\n\nMilo came\nby."


def test_a_poem_with_word_line_breaks_is_not_binary(tmp_path):
    # Word exports a manual line break as a vertical tab: a poem has one on every line.
    path = tmp_path / "story.txt"
    path.write_text("Twinkle, twinkle, little star,\vHow I wonder what you are.\v" * 10, encoding="utf-8")
    assert read_story(path).text.count("\n") == 19


@pytest.mark.parametrize(
    "mark", ["_a ", "**a ", "*a ", pytest.param("# a" + " " * 64_000 + "b", id="heading-of-spaces")]
)
def test_unmatched_emphasis_marks_are_read_in_linear_time(mark):
    # Each unmatched mark scanned the rest of its line: 64 KB of "_a " took about 20 s (quadratic;
    # a 512 KB story, minutes). Bounded spans take a fraction of a second; 5 s leaves room for a
    # loaded machine.
    import time

    text = mark * max(1, 64_000 // len(mark))
    started = time.perf_counter()
    assert strip_markdown(text) == (text if not text.startswith("#") else "a" + " " * 64_000 + "b\n")
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("run", ["x" * 500_000, "“" * 150_000, "https://example.com/?" + "utm=a&" * 60])
def test_a_word_no_page_can_print_is_refused_by_its_start(tmp_path, run):
    # It became a page of 500,000 characters, which the layout refused later as "does not fit:
    # split it into two pages"; and a file of only such a "word" was quoted whole in the error.
    path = tmp_path / "story.txt"
    path.write_text(f"Ginger ran. {run} She slept.", encoding="utf-8")
    with pytest.raises(FairytaleError, match=f"has a 'word' of {len(run):,} characters without a space") as info:
        read_story(path)
    assert len(str(info.value)) < 300
    path.write_text(run, encoding="utf-8")
    with pytest.raises(FairytaleError) as info:
        read_story(path)
    assert len(str(info.value)) < 300


def test_scripts_written_without_spaces_are_not_long_words(tmp_path):
    path = tmp_path / "story.txt"
    text = "长颈鹿金杰很高。她每天早上都吃树叶，然后去河边喝水。" * 20
    path.write_text(text, encoding="utf-8")
    assert read_story(path).text == text
