"""Pages: sentence-aware, paragraph-respecting, and never losing or repeating text."""

from __future__ import annotations

import random

import pytest

from fairytale.pages import (
    DEFAULT_WORDS_PER_PAGE,
    MAX_WORDS_PER_PAGE,
    Sentence,
    _is_heading,
    break_long_sentence,
    split_pages,
    split_sentences,
    tidy,
)
from fairytale.story import read_story
from tests.conftest import STORIES


def pages_of(text: str, words_per_page: int = 35) -> list[str]:
    sentences, spans = split_pages(text, words_per_page)
    return [tidy(text[span.start : span.end]) for span in spans]


def generated_story(seed: int, paragraphs: int = 120) -> str:
    """A long story with dialogue, abbreviations and odd spacing, built from a seed."""
    rng = random.Random(seed)
    pieces = [
        "Mr. Brown walked to St. Ives at 5 p.m. with Dr. Owl.",
        "“Wait!” cried Luna. “Where are you going?”",
        "“Home,” whispered Milo, “before it gets dark.”",
        "She laughed... and laughed!",
        "The fox—quick as ever—ran past the hens.",
        "\"Why?\" asked the owl. \"Because,\" said the hare.",
        "It was 3.5 miles to the sea; nobody minded.",
        "They sang: la, la, la.",
    ]
    paragraphs_text = []
    for _ in range(paragraphs):
        count = rng.randint(1, 5)
        paragraphs_text.append((" " * rng.randint(1, 2)).join(rng.choice(pieces) for _ in range(count)))
    return "\n\n".join(paragraphs_text)


@pytest.mark.parametrize("name", sorted(p.name for p in STORIES.glob("*.txt")))
@pytest.mark.parametrize("words_per_page", [12, 35, 80])
def test_pages_join_back_to_the_story(name, words_per_page):
    text = read_story(STORIES / name).text
    pages = pages_of(text, words_per_page)
    assert " ".join(pages).split() == text.split()  # nothing lost, nothing repeated


@pytest.mark.parametrize("seed", range(5))
def test_long_dialogue_heavy_stories_join_back(seed):
    text = generated_story(seed)
    assert len(text.split()) > 1500
    pages = pages_of(text)
    assert " ".join(pages).split() == text.split()


def test_no_page_breaks_inside_a_sentence_or_quote():
    text = read_story(STORIES / "milo_and_luna.txt").text
    sentences = {s.text for s in split_sentences(text)}
    assert "“Luna, wake up!” whispered Milo." in sentences  # the lower-case continuation is joined
    assert "“And the pond is full. Let’s build a boat!”" in sentences  # a quotation is one unit
    for page in pages_of(text, 12):
        assert page.count("“") == page.count("”")


def test_sizes_follow_the_target_and_respect_paragraphs():
    text = read_story(STORIES / "pip_long_journey.txt").text
    pages = pages_of(text, 35)
    sizes = [len(p.split()) for p in pages]
    assert 25 <= sum(sizes) / len(sizes) <= 45
    assert max(sizes) <= 70  # never more than twice the target (single sentences aside)
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    whole = sum(1 for page in pages for par in page.split("\n\n") if " ".join(par.split()) in paragraphs)
    assert whole / sum(len(p.split("\n\n")) for p in pages) > 0.8  # most pages hold whole paragraphs


def test_a_sentence_longer_than_a_page_is_kept_whole():
    long = "The " + "very " * 20 + "long sentence ends here."  # 25 words: 2.5 pages of 10
    pages = pages_of(f"Short one. {long} Another short one.", 10)
    assert any(" ".join(long.split()) in page for page in pages)


def test_a_run_on_sentence_is_broken_into_printable_pages():
    # A story typed without full stops was one 20,000-word page that no layout can print.
    text = "Ginger the giraffe walked to the river and " * 2_500 + "she slept."
    pages = pages_of(text)
    assert len(pages) > 500 and max(len(p.split()) for p in pages) <= 2 * DEFAULT_WORDS_PER_PAGE
    assert " ".join(pages).split() == text.split()  # nothing lost, nothing repeated
    assert all(p.endswith(("river", "slept.")) for p in pages)  # cut before "and", not mid-clause


def test_a_quotation_that_never_closes_is_broken_at_its_full_stops():
    text = "“" + " ".join(f"Ginger the giraffe walked to tree number {i} and ate." for i in range(40))
    pages = pages_of(text)
    assert len(pages) > 5 and all(p.endswith("ate.") for p in pages)
    assert " ".join(pages).split() == text.split()


def test_a_long_sentence_breaks_at_a_comma_rather_than_mid_clause():
    clause = "the little giraffe ran past the tall green trees"  # 9 words
    text = ", ".join([clause] * 6) + "."
    pieces = break_long_sentence(Sentence(100, 100 + len(text), 0, text), 20)
    assert [p.text for p in pieces] == [f"{clause}, {clause},"] * 2 + [f"{clause}, {clause}."]
    assert all(text[p.start - 100 : p.end - 100] == p.text for p in pieces)  # spans of the story text


def test_a_chapter_heading_starts_its_page_not_ends_the_one_before():
    # "Chapter 4" was left at the foot of a page, its chapter overleaf.
    rng = random.Random(0)
    paragraphs = []
    for chapter in range(1, 8):
        paragraphs.append(f"Chapter {chapter}")
        paragraphs += [" ".join(["Ginger walked to the river."] * rng.randint(1, 4)) for _ in range(rng.randint(1, 4))]
    text = "\n\n".join(paragraphs)
    pages = pages_of(text)
    assert " ".join(pages).split() == text.split()
    assert not any(page.endswith(tuple(f"Chapter {n}" for n in range(1, 8))) for page in pages)
    assert sum(page.startswith("Chapter") for page in pages) >= 3


@pytest.mark.parametrize("heading", ["Chapter 2", "CHAPTER TWO", "Chapter 3: The River", "Part IV", "Prologue", "12"])
def test_what_counts_as_a_chapter_heading(heading):
    sentences = split_sentences(f"Ginger was tall.\n\n{heading}\n\nShe ate leaves.")
    assert [_is_heading(sentences, i) for i in range(3)] == [False, True, False]
    # …but not a short line of verse, nor a heading-like phrase inside a paragraph
    assert not any(_is_heading(split_sentences("Twinkle twinkle little star\n\nHow I wonder"), i) for i in range(2))
    assert not _is_heading(split_sentences("Part one. She ran."), 0)


def test_at_the_largest_page_size_a_long_sentence_is_still_broken_to_print():
    # 3 × 120 words would be kept whole: more than a page prints (about 330 words).
    text = "Ginger walked to the river and " * 56 + "slept."  # 337 words, one sentence
    pages = pages_of(text, MAX_WORDS_PER_PAGE)
    assert len(pages) >= 2 and max(len(p.split()) for p in pages) <= 2 * MAX_WORDS_PER_PAGE
