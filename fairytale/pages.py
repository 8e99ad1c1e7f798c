"""Cutting a story into pages, sentence-aware and lossless.

Sentences are found with segtok (flair's own splitter) and kept as character spans of the
original text. Two repairs make them fit picture-book prose: a "sentence" that starts in lower
case continues the one before (``“Wake up!” whispered Milo.``), and a sentence that opens a
quotation runs until the quotation closes, so no page ever breaks inside a sentence or a quote.
The one exception is a "sentence" longer than three pages (a run-on with no full stop, a
quotation that never closes): it is broken at its full stops, commas or dashes, else between
words, since kept whole it would be a page no layout can print.

Pages are then chosen by dynamic programming: each page should hold about ``words_per_page``
words (squared deviation), breaking inside a paragraph costs extra, so does ending a page on a
chapter heading ("Chapter 2" belongs above its chapter), and no page of several sentences may
exceed twice the target. Because pages are contiguous slices of the text, joining them gives
back the story exactly (up to whitespace): nothing is lost or duplicated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fairytale.errors import FairytaleError

#: Picture books run 500–1,000 words over 24–32 pages: about 35 words under each picture.
DEFAULT_WORDS_PER_PAGE = 35
#: ``--words-per-page`` bounds: below 5 a page is a few words, and pages run to twice the
#: target, which above 120 is more text than a picture-book page prints (about 330 words of
#: body text fit an 8.5 in page at the smallest size).
MIN_WORDS_PER_PAGE, MAX_WORDS_PER_PAGE = 5, 120
#: Cost of a page break inside a paragraph, relative to a page that is 100 % off target.
MID_PARAGRAPH_COST = 0.35
#: A sentence longer than this many pages' worth of words (a run-on with no full stop, or a
#: quotation that never closes) is broken into clauses: kept whole it would be a page no
#: picture-book layout can print.
LONG_SENTENCE_PAGES = 3

#: Cost of a page that ends on a chapter heading, whose chapter starts overleaf.
HEADING_LAST_COST = 4.0

_HEADING = re.compile(
    r"(?:(?:chapter|part|book|act)\s+(?:\d+|[ivxlc]+|[a-z]+)\b.{0,40}|prologue|epilogue|\d+|[ivxlc]+)[.:]?",
    re.IGNORECASE,
)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_OPENERS = {"“": "”", "‘": "’", "«": "»"}


@dataclass(frozen=True)
class Sentence:
    """A sentence as a span ``[start, end)`` of the story text, and its paragraph number."""

    start: int
    end: int
    paragraph: int
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass(frozen=True)
class PageSpan:
    """One page: a contiguous slice of the story and the sentences on it."""

    start: int
    end: int
    first_sentence: int
    last_sentence: int  # exclusive


def _paragraph_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _PARAGRAPH_BREAK.finditer(text):
        if text[start : match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def _raw_sentences(paragraph: str) -> list[tuple[int, int]]:
    from segtok.segmenter import split_single

    flat = paragraph.replace("\n", " ")  # same length: offsets stay valid
    spans, cursor = [], 0
    for piece in split_single(flat):
        piece = piece.strip()
        if not piece:
            continue
        found = flat.find(piece, cursor)
        if found < 0:  # the splitter changed the text; keep the rest as one sentence
            break
        spans.append((found, found + len(piece)))
        cursor = found + len(piece)
    if flat[cursor:].strip():
        rest = len(flat) - len(flat[cursor:].lstrip())
        spans.append((rest, len(flat.rstrip())))
    return spans


def _open_quotes(text: str) -> bool:
    """Whether ``text`` leaves a quotation open (curly pairs, or an odd number of ``"``)."""
    depth = 0
    for ch in text:
        if ch in _OPENERS:
            depth += 1
        elif ch in _OPENERS.values() and ch != "’":  # ’ is also an apostrophe
            depth = max(0, depth - 1)
    return depth > 0 or text.count('"') % 2 == 1


def _continues(text: str) -> bool:
    """A piece that starts in lower case (after quotes/dashes) continues the previous sentence."""
    stripped = text.lstrip("\"'“”‘’—–-( ")
    return bool(stripped) and stripped[0].islower()


def split_sentences(text: str) -> list[Sentence]:
    """All sentences of ``text`` as spans, repaired for dialogue (see module docstring)."""
    sentences: list[Sentence] = []
    for number, (p_start, p_end) in enumerate(_paragraph_spans(text)):
        merged: list[list[int]] = []
        for start, end in _raw_sentences(text[p_start:p_end]):
            piece = text[p_start + start : p_start + end]
            if merged:
                previous = text[p_start + merged[-1][0] : p_start + merged[-1][1]]
                if _continues(piece) or _open_quotes(previous):
                    merged[-1][1] = end
                    continue
            merged.append([start, end])
        for start, end in merged:
            a, b = p_start + start, p_start + end
            sentences.append(Sentence(a, b, number, text[a:b]))
    return sentences


def check_words_per_page(words_per_page: int | None) -> int:
    """``words_per_page``, or the default when it is None; one clear error when out of range."""
    if words_per_page is None:
        return DEFAULT_WORDS_PER_PAGE
    if not MIN_WORDS_PER_PAGE <= words_per_page <= MAX_WORDS_PER_PAGE:
        raise FairytaleError(
            f"--words-per-page must be between {MIN_WORDS_PER_PAGE} and {MAX_WORDS_PER_PAGE}, got {words_per_page}"
        )
    return words_per_page


_SENTENCE_END = re.compile(r"[.!?…][\"'”’»)\]]*$")
_CLAUSE_END = re.compile(r"[,;:—–][\"'”’»)\]]*$")
_CLAUSE_OPENERS = frozenset({"and", "but", "then", "so", "or", "when", "while", "until", "because"})


def _break_quality(word: str, following: str) -> int:
    """How good a place the space after ``word`` (before ``following``) is to end a piece."""
    if _SENTENCE_END.search(word):
        return 3
    if _CLAUSE_END.search(word) or following in ("—", "–", "-"):
        return 2
    if following.lower().strip("\"'“‘") in _CLAUSE_OPENERS:
        return 1
    return 0


def break_long_sentence(sentence: Sentence, max_words: int) -> list[Sentence]:
    """``sentence`` as pieces of at most ``max_words`` words, each ending at the best place in the
    second half of its window (a full stop, then a comma or dash, then before "and"/"but"…, else
    between words). Pieces are contiguous slices of the text: nothing is lost, and a closing
    quotation mark stays with its word. A sentence that fits is returned as it is."""
    words = list(re.finditer(r"\S+", sentence.text))
    if len(words) <= max_words:
        return [sentence]
    pieces, first = [], 0
    while len(words) - first > max_words:
        candidates = range(first + max(1, max_words // 2) - 1, first + max_words)
        # best quality, then the latest place (fuller pieces)
        last = max(candidates, key=lambda j: (_break_quality(words[j].group(), words[j + 1].group()), j))
        pieces.append((words[first].start(), words[last].end()))
        first = last + 1
    pieces.append((words[first].start(), len(sentence.text)))
    start, paragraph = sentence.start, sentence.paragraph
    return [Sentence(start + a, start + b, paragraph, sentence.text[a:b]) for a, b in pieces]


def _is_heading(sentences: list[Sentence], index: int) -> bool:
    """Whether sentence ``index`` is a chapter heading ("Chapter 2", "Part Three: Home", "IV"):
    a paragraph of its own that reads like one."""
    sentence = sentences[index]
    alone = all(
        not 0 <= other < len(sentences) or sentences[other].paragraph != sentence.paragraph
        for other in (index - 1, index + 1)
    )
    return alone and sentence.words <= 8 and bool(_HEADING.fullmatch(sentence.text.strip()))


def paginate(sentences: list[Sentence], words_per_page: int = DEFAULT_WORDS_PER_PAGE) -> list[tuple[int, int]]:
    """Best split of ``sentences`` into pages, as ``(first, last_exclusive)`` index pairs."""
    if words_per_page < 1:
        raise ValueError("words_per_page must be at least 1")
    count = len(sentences)
    words = [s.words for s in sentences]
    heading = [_is_heading(sentences, index) for index in range(count)]
    best = [0.0] + [float("inf")] * count
    back = [0] * (count + 1)
    for end in range(1, count + 1):
        total = 0
        for start in range(end - 1, -1, -1):
            total += words[start]
            if end - start > 1 and total > 2 * words_per_page:
                break
            cost = ((total - words_per_page) / words_per_page) ** 2
            if end < count and sentences[end].paragraph == sentences[end - 1].paragraph:
                cost += MID_PARAGRAPH_COST
            if end < count and heading[end - 1]:
                cost += HEADING_LAST_COST
            if best[start] + cost < best[end]:
                best[end], back[end] = best[start] + cost, start
    pages, end = [], count
    while end > 0:
        pages.append((back[end], end))
        end = back[end]
    return pages[::-1]


def tidy(text: str) -> str:
    """Page text for print: paragraphs separated by one blank line, other whitespace single spaces."""
    paragraphs = [" ".join(part.split()) for part in _PARAGRAPH_BREAK.split(text.strip())]
    return "\n\n".join(p for p in paragraphs if p)


def split_pages(text: str, words_per_page: int = DEFAULT_WORDS_PER_PAGE) -> tuple[list[Sentence], list[PageSpan]]:
    """Sentences and pages of ``text``. Page ``k`` covers ``text[start:end]``; together they cover it all."""
    if words_per_page < 1:
        raise ValueError("words_per_page must be at least 1")
    sentences = []
    for sentence in split_sentences(text):
        if sentence.words > min(LONG_SENTENCE_PAGES * words_per_page, 2 * MAX_WORDS_PER_PAGE):
            sentences += break_long_sentence(sentence, words_per_page)  # pieces a page long at most
        else:
            sentences.append(sentence)
    ranges = paginate(sentences, words_per_page)
    pages = []
    for index, (first, last) in enumerate(ranges):
        start = 0 if index == 0 else sentences[first].start
        end = sentences[ranges[index + 1][0]].start if index + 1 < len(ranges) else len(text)
        pages.append(PageSpan(start, end, first, last))
    return sentences, pages
