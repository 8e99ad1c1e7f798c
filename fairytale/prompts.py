"""Illustration prompts: composed from the plan, measured in the model's own tokens.

A Stable Diffusion text encoder reads 77 tokens (start and end markers included) and silently
drops the rest, so a prompt is assembled from ranked parts and the least important parts are
dropped, then trimmed word by word, until the target model's tokenizer says it fits.

Order of importance (kept first → dropped first): style, main characters, setting, action,
other characters, time of day, mood. The style and the main characters are never dropped: a
description too long for the prompt is shortened instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_TOKENS = 77
#: Parts this important (style 100, main characters 90…) are trimmed, never dropped.
ESSENTIAL = 80
#: A trimmed part keeps at least this many words ("a tall giraffe").
MIN_PART_WORDS = 3

MOOD_WORDS = {
    "happy": "joyful, bright",
    "calm": "peaceful, gentle light",
    "sad": "soft muted colors, tender",
    "exciting": "dynamic, adventurous",
    "scary": "mysterious but gentle",  # a children's book: never frightening
    "funny": "playful, whimsical",
}
TIME_WORDS = {
    "morning": "morning light",
    "daytime": "daylight",
    "evening": "evening, golden sunset light",
    "night": "at night, moonlight",
}


@dataclass(frozen=True)
class PromptPart:
    """A piece of a prompt and how much it matters (higher is kept longer)."""

    text: str
    importance: int


def fit_prompt(parts: Sequence[PromptPart], count_tokens: Callable[[str], int], limit: int = MAX_TOKENS) -> str:
    """Join ``parts`` with commas, dropping the least important until ``count_tokens`` ≤ ``limit``.

    Parts of importance :data:`ESSENTIAL` or more (the style, the main characters) are never
    dropped: when only they are left and still too long, the longest of them after the first
    (a long description, not the book's style) loses its last words, so every main character
    keeps its start ("a tall giraffe…"). Only if that is not enough is the prompt cut word by
    word from its end.
    """
    kept = [PromptPart(" ".join(part.text.split()), part.importance) for part in parts if part.text.strip()]

    def render(selection: Sequence[PromptPart]) -> str:
        return ", ".join(part.text for part in selection)

    while len(kept) > 1 and count_tokens(render(kept)) > limit:
        droppable = [i for i in range(len(kept)) if kept[i].importance < ESSENTIAL]
        if not droppable:
            break
        kept.pop(min(droppable, key=lambda i: (kept[i].importance, -i)))
    while len(kept) > 1 and count_tokens(render(kept)) > limit:
        trimmable = [i for i in range(1, len(kept)) if len(kept[i].text.split()) > MIN_PART_WORDS]
        if not trimmable:
            break
        longest = max(trimmable, key=lambda i: (len(kept[i].text.split()), i))
        words = kept[longest].text.split()[:-1]
        kept[longest] = PromptPart(" ".join(words).rstrip(",;:"), kept[longest].importance)
    prompt = render(kept)
    words = prompt.split()
    while len(words) > 1 and count_tokens(" ".join(words)) > limit:
        words.pop()
    return " ".join(words).rstrip(",")


def clip_token_counter(tokenizer) -> Callable[[str], int]:
    """Token count (start/end markers included) with a 🤗 CLIP tokenizer."""

    def count(text: str) -> int:
        return len(tokenizer(text, truncation=False).input_ids)

    return count


def page_parts(
    *,
    style: str,
    main_characters: Sequence[str],
    other_characters: Sequence[str],
    action: str | None,
    setting: str | None,
    time_of_day: str | None,
    mood: str | None,
) -> list[PromptPart]:
    """The ranked parts of one page's prompt, in reading order."""
    parts = [PromptPart(style, 100)]
    parts += [PromptPart(text, 90 - i) for i, text in enumerate(main_characters)]
    if action:
        parts.append(PromptPart(action, 60))
    parts += [PromptPart(text, 50 - i) for i, text in enumerate(other_characters)]
    if setting:
        parts.append(PromptPart(f"in {setting}" if not setting.lower().startswith(("in ", "at ", "on ", "by ", "under ")) else setting, 70))
    if time_of_day:
        parts.append(PromptPart(TIME_WORDS.get(time_of_day, time_of_day), 40))
    if mood:
        parts.append(PromptPart(MOOD_WORDS.get(mood, mood), 30))
    return parts
