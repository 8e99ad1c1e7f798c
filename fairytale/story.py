"""Reading a story file: encoding, title, and the text the book will print.

Stories arrive from word processors and old PCs: UTF-8 with or without a byte-order mark,
UTF-16 from Windows Notepad, cp1252 with curly quotes. The bytes are decoded by BOM, then strict
UTF-8, then charset detection (charset-normalizer); binary files and empty files are refused
with one clear line. Curly quotes, dialogue and paragraph breaks are kept as written.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from fairytale.errors import FairytaleError
from fairytale.files import check_text_name

#: Refuse files larger than this before decoding: a picture book is a few kilobytes.
MAX_BYTES = 512 * 1024
#: And stories longer than this many words: even a long chapter book fits well under it.
MAX_WORDS = 20_000
#: A first line is taken as the title when it is this short and followed by a blank line.
TITLE_MAX_WORDS = 12
#: What a sentence (or a line of speech) ends with; a title ends with none of these.
_SENTENCE_ENDS = (".", "!", "?", "…", "”", '"', "’", "»", ")", "。", "！", "？", "؟", "।")

_PREFERRED_LEGACY = ("cp1252", "latin_1", "iso8859_15", "mac_roman")

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]


@dataclass(frozen=True)
class Story:
    """A decoded story: its title and the body text that goes on the pages."""

    title: str
    text: str
    source: Path
    encoding: str
    sha256: str

    @property
    def words(self) -> int:
        return len(self.text.split())


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``path`` (one more than allowed tells the
    caller it is too long without reading a 4 GB file whole). Devices, FIFOs and sockets are
    refused before anything is read: ``/dev/zero`` never ends and a FIFO may never answer."""
    check_text_name(path)
    try:
        # Non-blocking, so that opening a FIFO with no writer returns at once to be refused.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FairytaleError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise FairytaleError(f"{what} path is a folder, not a file: {path}") from None
    except PermissionError:
        raise FairytaleError(f"{what} is not readable (permission denied): {path}") from None
    except OSError as exc:
        raise FairytaleError(f"{what} cannot be read: {path} ({exc.strerror})") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        if stat.S_ISDIR(mode):
            raise FairytaleError(f"{what} path is a folder, not a file: {path}")
        raise FairytaleError(f"{what} is not a regular file (a device, pipe or socket): {path}")
    with os.fdopen(descriptor, "rb") as handle:
        try:
            return handle.read(limit + 1)
        except OSError as exc:
            raise FairytaleError(f"{what} cannot be read: {path} ({exc.strerror})") from None


def _cp1252_for_stray_bytes(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("cp1252", errors="replace"), error.end


codecs.register_error("fairytale-cp1252", _cp1252_for_stray_bytes)


def _utf8_with_stray_cp1252(data: bytes) -> str | None:
    """``data`` as UTF-8 whose few invalid bytes are read as cp1252, when it is mostly UTF-8:
    a UTF-8 story with a curly quote pasted in from an old Windows program. Read whole by a
    detected single-byte code page, every accented letter of it was garbled ("cafÃ©")."""
    readable = data.decode("utf-8", errors="ignore")
    valid = sum(1 for ch in readable if ord(ch) > 0x7F)  # letters UTF-8 spelled right
    stray = data.decode("utf-8", errors="replace").count("\ufffd") - readable.count("\ufffd")
    if valid == 0 or stray > valid:
        return None
    return data.decode("utf-8", errors="fairytale-cp1252")


def _decode(data: bytes, path: Path) -> tuple[str, str]:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                raise FairytaleError(f"{path} starts with a {encoding} byte-order mark but is not {encoding} text") from None
    if b"\x00" not in data:
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
        mixed = _utf8_with_stray_cp1252(data)
        if mixed is not None:
            return mixed, "utf-8"
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise FairytaleError(f"{path} is not a text file (no text encoding fits it)")
    # Several code pages often fit equally well; stories here are mostly English, written on
    # Windows, so among the ones that read as cleanly as the best the Western code page wins.
    # Its language guess ("coherence") is not asked: on English text with one "Zoë" it chose
    # the Baltic cp1257, and the book said "Zoė".
    best = min(matches, key=lambda m: (round(m.chaos, 3), -round(m.coherence, 3)))
    clean = [m for m in matches if round(m.chaos, 3) == round(best.chaos, 3)]
    for preferred in _PREFERRED_LEGACY:
        for match in clean:
            if preferred == match.encoding or preferred in match.could_be_from_charset:
                try:
                    return data.decode(preferred), preferred
                except UnicodeDecodeError:
                    continue
    return str(best), best.encoding


#: Documents saved in a word processor's own format, by their first bytes, and what they are.
_DOCUMENT_MAGIC = (
    (b"PK\x03\x04", "a Word (.docx), OpenDocument (.odt) or other zipped document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Word (.doc) document"),
    (b"%PDF-", "a PDF"),
    (b"{\\rtf", "an RTF document"),
)
_HTML_START = re.compile(r"\s*(?:<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>])", re.IGNORECASE)
_SAVE_AS_TEXT = "save it as plain text (.txt) and try again"


def _refuse_documents(data: bytes, text: str | None, path: Path) -> None:
    """One clear line for a file that is a document or a book plan rather than a story's text:
    its markup would otherwise be printed on the pages, or its bytes refused as "not text"."""
    for magic, what in _DOCUMENT_MAGIC:
        if data.lstrip(codecs.BOM_UTF8).startswith(magic):
            raise FairytaleError(f"{path} is {what}, not plain text: {_SAVE_AS_TEXT}")
    if text is None:
        return
    if _HTML_START.match(text):
        raise FairytaleError(f"{path} is a web page (HTML), not plain text: {_SAVE_AS_TEXT}")
    if text.lstrip().startswith("{") and '"pages"' in text and '"characters"' in text:
        raise FairytaleError(
            f"{path} is a book plan, not a story: paint it with `fairytale render {path} -o book.pdf`"
        )


def _looks_binary(text: str) -> bool:
    # Control characters other than tab, the line breaks and form feed mean binary data.
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v\x85")
    return controls > max(2, len(text) // 200)


# Markdown, as stories pasted from a notes app or a chat assistant arrive: the marks are not
# words of the story and would be printed on the page ("# Ginger", "**tall**").
_MD_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+([^\n]*)$", re.MULTILINE)
_MD_RULE = re.compile(r"^[ \t]{0,3}([-*_=])(?:[ \t]*\1){2,}[ \t]*$", re.MULTILINE)
# Emphasis spans a few words: bounded, so that a line of 100,000 unmatched "_" is read in
# linear time (unbounded, each mark scanned the rest of the line: minutes for 512 KB).
_MD_STRONG = re.compile(r"(\*\*|__)(?=\S)(.{1,300}?)(?<=\S)\1")
_MD_EMPHASIS = re.compile(r"(?<![\w*])([*_])(?=[^\s*_])(.{1,300}?)(?<=[^\s*_])\1(?![\w*])")


def _heading_words(line: str) -> str:
    """A heading line's words without its optional closing hashes ("Chapter 2 ##"). Plain
    string methods: a regular expression for them backtracked over long runs of spaces."""
    words = line.rstrip(" \t")
    unclosed = words.rstrip("#")
    if unclosed != words and (not unclosed or unclosed[-1] in " \t"):
        words = unclosed.rstrip(" \t")
    return words


def strip_markdown(text: str) -> str:
    """``text`` without Markdown marks: a heading is its words as a paragraph of its own,
    a horizontal rule a paragraph break, ``**strong**`` and ``*emphasis*`` their words.

    >>> strip_markdown("# Ginger\\nShe was **very** tall.\\n\\n---\\n\\n*The end*")
    'Ginger\\n\\nShe was very tall.\\n\\n\\n\\nThe end'
    """
    text = _MD_HEADING.sub(lambda m: f"{_heading_words(m.group(1))}\n", text)
    text = _MD_RULE.sub("", text)
    text = _MD_STRONG.sub(r"\2", text)
    return _MD_EMPHASIS.sub(r"\2", text)


def _pretty_stem(path: Path) -> str:
    words = re.split(r"[_\-\s]+", path.stem)
    return " ".join(word.capitalize() for word in words if word) or "My Story"


def split_title(text: str) -> tuple[str | None, str]:
    """Take a short first line followed by a blank line as the title.

    >>> split_title("Ginger the Giraffe\\n\\nGinger was tall.")
    ('Ginger the Giraffe', 'Ginger was tall.')
    >>> split_title("Ginger was tall. She ate leaves.")
    (None, 'Ginger was tall. She ate leaves.')
    """
    first, sep, rest = text.partition("\n")
    candidate = first.strip()
    is_title = (
        bool(sep)
        and rest.partition("\n")[0].strip() == ""  # a blank line follows
        and 0 < len(candidate.split()) <= TITLE_MAX_WORDS
        and not candidate.endswith((".", ",", ";", ":", "!", "?", "”", '"'))
        and rest.strip() != ""
    )
    if is_title:
        # "Title: Ginger the Giraffe", as stories written with a chat assistant begin
        return re.sub(r"^title\s*:\s*", "", candidate, flags=re.IGNORECASE) or candidate, rest.strip()
    return None, text.strip()


#: Line and paragraph breaks other than "\n": old Macs' CR, Unicode's line and paragraph
#: separators (desktop publishing and some phone apps paste them), NEL and the vertical tab
#: (Word's manual line break in exported text).
LINE_BREAKS = {"\r": "\n", "\u2028": "\n", "\x85": "\n", "\v": "\n", "\u2029": "\n\n"}
_LINE_BREAKS = str.maketrans(LINE_BREAKS)


#: Longer than this, a run of characters without a space is no word a page can print (text is
#: wrapped at spaces, never cut): a pasted blob, a URL with its tracking, a keyboard held down.
MAX_WORD_CHARS = 200
_UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN", "IDEOGRAPHIC")
_LONG_RUN = re.compile(rf"\S{{{MAX_WORD_CHARS + 1},}}")


def _shortened(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _refuse_unbroken_runs(body: str, path: Path) -> None:
    """One clear line for a "word" no page can print, named by its start. Scripts written
    without spaces (Chinese, Japanese, Thai…) are not words run together, and are left alone."""
    for run in _LONG_RUN.finditer(body):
        sample = run.group()[: MAX_WORD_CHARS]
        if any(unicodedata.name(ch, "").startswith(_UNSPACED_SCRIPTS) for ch in sample):
            continue
        raise FairytaleError(
            f"{path} has a 'word' of {len(run.group()):,} characters without a space "
            f"('{_shortened(run.group(), 40)}'): no page can print it; break it up or remove it"
        )


def _only_a_title(body: str) -> bool:
    """A single short line that ends no sentence: a file saved before its story was written."""
    line = body.strip()
    return "\n" not in line and len(line.split()) <= TITLE_MAX_WORDS and not line.endswith(_SENTENCE_ENDS)


def read_story(path: Path, title: str | None = None) -> Story:
    """Read and decode a story file.

    The title is ``title`` if given, else a short first line, else the file name. A first line
    that repeats the given title is not printed twice.
    """
    path = Path(path)
    data = read_bounded(path, MAX_BYTES, "Story file")
    if len(data) > MAX_BYTES:
        raise FairytaleError(
            f"{path} is {path.stat().st_size // 1024:,} KB, too long for a picture book "
            f"(the limit is {MAX_BYTES // 1024} KB)"
        )
    if not data.strip():
        raise FairytaleError(f"{path} is empty")
    _refuse_documents(data, None, path)
    text, encoding = _decode(data, path)
    _refuse_documents(data, text, path)
    if _looks_binary(text):
        raise FairytaleError(f"{path} is not a text file (it contains binary data)")
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").translate(_LINE_BREAKS)).replace("\ufeff", "")
    text = strip_markdown(text)
    if not text.strip():
        raise FairytaleError(f"{path} has no text")
    found_title, body = split_title(text)
    if title is not None:
        title = title.strip()
        if not title:
            raise FairytaleError("--title is empty")
        if found_title is None or found_title.casefold() != title.casefold():
            body = text.strip()
    else:
        title = found_title or _pretty_stem(path)
    words = len(body.split())
    if words == 0:
        raise FairytaleError(f"{path} has a title but no story text")
    if _only_a_title(body):
        raise FairytaleError(
            f"{path} holds only a title ('{_shortened(body.strip())}'), no story: write the story below it "
            "(a one-line story ends with a full stop)"
        )
    _refuse_unbroken_runs(body, path)
    if words > MAX_WORDS:
        raise FairytaleError(f"{path} has {words:,} words, too long for a picture book (the limit is {MAX_WORDS:,})")
    return Story(title=title, text=body, source=path, encoding=encoding, sha256=hashlib.sha256(data).hexdigest())
