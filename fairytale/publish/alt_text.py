"""Alt text for a page's picture: the plan's own words when a person wrote them, otherwise a
sentence built from what the plan knows about the page (who is on it, what they do, where).

A picture book's pictures carry the story, so "illustration" or a file name is not alt text:
every description names the characters and the scene, and falls back to the page's own words
only when the plan knows nothing else about the picture. Edit ``alt_text`` in the plan to
replace the generated sentence; the EPUB uses the edit.
"""

from __future__ import annotations

import re

from fairytale.plan import BookPlan, Page

_LOCATIVE = ("in ", "at ", "on ", "by ", "under ", "inside ", "near ", "beside ", "outside ", "through ")
_TIMES = {"morning": "in the morning", "daytime": "by day", "evening": "in the evening", "night": "at night"}


def _article(kind: str) -> str:
    return ("an " if kind[:1].lower() in "aeiou" else "a ") + kind


def _who(plan: BookPlan, page: Page) -> str:
    people = []
    for character_id in page.characters:
        character = plan.character(character_id)
        kind = (character.kind or "").strip()
        named_by_kind = kind and kind.lower() in character.name.lower()
        people.append(
            f"{character.name} ({_article(kind)})" if kind and not named_by_kind else character.name
        )
    if len(people) <= 1:
        return "".join(people)
    return f"{', '.join(people[:-1])} and {people[-1]}"


def _first_sentence(text: str, limit: int = 160) -> str:
    sentence = re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rsplit(" ", 1)[0] + "…"


def alt_text(plan: BookPlan, page: Page) -> str:
    """The description of ``page``'s picture: ``page.alt_text`` if set, else one built from the
    plan. Never empty."""
    if page.alt_text and page.alt_text.strip():
        return " ".join(page.alt_text.split())
    who = _who(plan, page)
    action = (page.action or "").strip().rstrip(".")
    setting = (page.setting or "").strip().rstrip(".")
    if setting and not setting.lower().startswith(_LOCATIVE):
        setting = f"in {setting}"
    when = _TIMES.get(page.time_of_day or "", "")
    scene = " ".join(part for part in (setting, when) if part)
    words = _first_sentence(page.text)
    if who and action:
        sentence = f"{who} {action}" + (f" {scene}" if scene else "")
    elif who and scene:
        sentence = f"{who} {scene}"
    elif who:
        sentence = f"{who}, in the scene of the words “{words}”"
    elif action or scene:
        sentence = " ".join(part for part in (action, scene) if part) + f", for the words “{words}”"
    else:
        return f"Picture for the words: “{words}”"
    sentence = sentence[0].upper() + sentence[1:]
    if page.mood:
        sentence += f"; the mood is {page.mood.strip().rstrip('.')}"
    return sentence if sentence.endswith(("”", ".", "!", "?")) else sentence + "."
