"""Prompts fit the text encoder: measured with the real CLIP tokenizer, trimmed least-important-first."""

from __future__ import annotations

import pytest

from fairytale.prompts import MAX_TOKENS, PromptPart, clip_token_counter, fit_prompt, page_parts
from tests.fakes import word_count


@pytest.fixture(scope="module")
def clip_count(tiny_sd):
    from transformers import CLIPTokenizer

    return clip_token_counter(CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer"))


def test_real_clip_token_counts(clip_count):
    assert clip_count("a photo of a cat") == 7  # 5 words + start/end, as with the real SD tokenizer
    assert clip_count("watercolor, giraffe") == 5


def test_least_important_parts_go_first():
    parts = [PromptPart("style words here", 100), PromptPart("mood words", 10), PromptPart("setting words", 50)]
    assert fit_prompt(parts, word_count, limit=9) == "style words here, mood words, setting words"
    assert fit_prompt(parts, word_count, limit=8) == "style words here, setting words"
    assert fit_prompt(parts, word_count, limit=6) == "style words here"
    assert fit_prompt(parts, word_count, limit=4) == "style words"  # the last part is cut word by word  # the last part is cut word by word


def test_long_page_prompt_fits_77_clip_tokens(clip_count):
    parts = page_parts(
        style="children's picture book illustration, soft watercolor, warm gentle colors",
        main_characters=["a tall giraffe with orange spots and a very long neck, wearing a red woollen scarf"] * 2,
        other_characters=["a wise old owl with grey feathers and round yellow eyes"] * 3,
        action="bent her long neck and drank and drank from the sparkling water",
        setting="a sparkling blue river under tall acacia trees on the golden savanna",
        time_of_day="night",
        mood="happy",
    )
    prompt = fit_prompt(parts, clip_count)
    assert clip_count(prompt) <= MAX_TOKENS
    assert prompt.startswith("children's picture book illustration")
    assert "joyful" not in prompt  # the mood went before the main character did
    assert "tall giraffe" in prompt


def test_a_long_description_is_trimmed_never_dropped(clip_count):
    # Three long QA answers made a description longer than the prompt: the main character was
    # dropped whole, and the page was painted without her.
    style = "children's picture book illustration, soft watercolor, warm gentle colors"
    long_looks = ", ".join(["a very tall and very friendly young giraffe with big orange spots"] * 8)
    assert clip_count(style) + clip_count(long_looks) > MAX_TOKENS
    parts = page_parts(
        style=style,
        main_characters=[long_looks, "a small brown monkey"],
        other_characters=[],
        action="drank",
        setting="the river",
        time_of_day=None,
        mood=None,
    )
    prompt = fit_prompt(parts, clip_count)
    assert clip_count(prompt) <= MAX_TOKENS
    assert prompt.startswith(style + ", a very tall and very friendly young giraffe")  # style whole, then her
    assert "a small brown monkey" in prompt  # the other main character keeps his place


def test_parts_are_trimmed_longest_first_once_only_the_essential_remain():
    parts = [PromptPart("style words", 100), PromptPart("one two three four five six", 90), PromptPart("mood", 10)]
    assert fit_prompt(parts, word_count, limit=8) == "style words, one two three four"
    assert fit_prompt(parts, word_count, limit=3) == "style"  # the style alone left: cut as before
