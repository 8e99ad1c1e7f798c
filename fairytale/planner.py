"""Story → book plan: the first stage of the book, and the API behind ``fairytale plan``.

>>> plan = plan_story(Path("ginger.txt"))          # doctest: +SKIP
>>> save_plan(plan, Path("plan.json"))             # doctest: +SKIP

The steps, in order: read the story, cut it into pages, find the characters, read their looks,
build each page's scene, compose the prompts, draw the seeds. Models are loaded once per call
(or passed in, as the tests do with fakes).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fairytale.characters import CastMember, find_characters
from fairytale.errors import FairytaleError
from fairytale.nlp import PlannerModels, load_planner_models
from fairytale.pages import check_words_per_page, split_pages, tidy
from fairytale.plan import BookPlan, Character, Page, Source, Style
from fairytale.prompts import clip_token_counter, fit_prompt, page_parts
from fairytale.scenes import describe, drawn_alone, find_looks, find_scenes, side_by_side
from fairytale.story import read_story

#: At most this many characters count as main characters.
MAX_MAIN = 3
#: A character is main when mentioned at least this share as often as the most mentioned one.
MAIN_SHARE = 0.25


@dataclass
class PlanStats:
    """What a planning run asked of its models (for the benchmark and the summary)."""

    qa_asked: int = 0
    qa_computed: int = 0
    nli_asked: int = 0
    nli_computed: int = 0


def _latin_share(text: str) -> float:
    """The share of the letters of ``text`` that are Latin (1.0 for a text without letters)."""
    import unicodedata

    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    return sum(1 for ch in letters if unicodedata.name(ch, "").startswith("LATIN")) / len(letters)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "character"


def _to_characters(members: Sequence[CastMember], looks: Sequence[dict[str, str]]) -> list[Character]:
    """Plan characters of the cast. Groups are never main: a named group's members are drawn
    (and may be main), and a group without members is drawn from its phrase."""
    # Main characters are ranked among individuals only: a much-mentioned group ("the bears")
    # must not push Goldilocks out of the main cast.
    individuals = [member for member in members if not member.is_group]
    top = len(individuals[0].mentions) if individuals else 0
    rank_of = {member.key: rank for rank, member in enumerate(individuals)}
    characters, used, id_of = [], set(), {}
    for member, found in zip(members, looks, strict=True):
        base = _slug(member.name.removeprefix("the "))
        key, n = base, 2
        while key in used:
            key, n = f"{base}-{n}", n + 1
        used.add(key)
        id_of[member.key] = key
        aliases = sorted((member.names | member.phrases) - {member.name}, key=lambda a: (len(a), a))
        if member.is_group:
            description = "" if member.members else member.name.removeprefix("the ")
        else:
            description = describe(member, found)
        characters.append(
            Character(
                id=key,
                name=member.name if member.named else member.name.capitalize(),
                aliases=aliases,
                kind=member.kind,
                gender=member.gender,
                appearance=found,
                description=description,
                mentions=len(member.mentions),
                main=rank_of.get(member.key, MAX_MAIN) < MAX_MAIN and len(member.mentions) >= max(2, MAIN_SHARE * top),
            )
        )
    for member, character in zip(members, characters, strict=True):
        character.members = [id_of[key] for key in member.members if key in id_of]
    return characters


def _character_text(character: Character) -> str:
    """How a prompt draws a character: its learned token, else its description."""
    if character.token:
        return f"{character.token} {character.kind}" if character.kind else character.token
    if character.description:
        return character.description
    if character.kind:
        return f"{'an' if character.kind[0] in 'aeiou' else 'a'} {character.kind}"
    return character.name


def compose_prompt(plan: BookPlan, page: Page, count_tokens: Callable[[str], int]) -> str:
    """The prompt of ``page``: style, characters, action, setting, time, mood, fitted to 77 tokens."""
    style = ", ".join(part for part in (plan.style.token, plan.style.description) if part)
    on_page = [plan.character(key) for key in page.characters]
    # A group whose members are on the page is drawn as those members, not a second time.
    on_page = [c for c in on_page if not (c.members and set(c.members) <= set(page.characters))]
    return fit_prompt(
        page_parts(
            style=style,
            main_characters=[_character_text(c) for c in on_page if c.main],
            other_characters=[_character_text(c) for c in on_page if not c.main],
            action=page.action,
            setting=page.setting,
            time_of_day=page.time_of_day,
            mood=page.mood,
        ),
        count_tokens,
    )


@contextmanager
def _steps(show: bool | Callable[[str], None], total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar over the planning steps (silent when ``show`` is false). A function
    ``show`` hears each step's label instead (the studio shows it; raising stops planning)."""
    if callable(show):
        yield show
        return
    if not show:
        yield lambda _label: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=True) as progress:
        task = progress.add_task("Planning", total=total)

        def advance(label: str) -> None:
            progress.update(task, advance=1, description=label)

        yield advance


def plan_story(
    story_path: Path,
    *,
    title: str | None = None,
    author: str | None = None,
    words_per_page: int | None = None,
    seed: int | None = None,
    ner_model: str | None = None,
    qa_model: str | None = None,
    nli_model: str | None = None,
    model: str | None = None,
    backend: str = "sd14",
    device: str | None = None,
    models: PlannerModels | None = None,
    count_tokens: Callable[[str], int] | None = None,
    progress: bool | Callable[[str], None] = False,
    stats: PlanStats | None = None,
) -> BookPlan:
    """Read ``story_path`` and plan its book.

    ``model``/``backend`` name the illustration model whose tokenizer measures the prompts.
    ``models`` and ``count_tokens`` replace the loaded models (tests pass fakes). ``seed``
    makes the page seeds reproducible; without one a seed is drawn and recorded in the plan.
    ``progress``: a progress bar, or a function that hears the label of each step as it starts
    (an error it raises stops planning there).
    """
    words_per_page = check_words_per_page(words_per_page)
    with _steps(progress, 6) as step:
        # 1. read and paginate (cheap, and fails fast on bad input before any model loads)
        story = read_story(story_path, title=title)
        sentences, spans = split_pages(story.text, words_per_page)
        step("Loading models")

        # 2. models
        if models is None:
            models = load_planner_models(ner_model, qa_model, nli_model, device)
        if count_tokens is None:
            from fairytale import registry

            count_tokens = clip_token_counter(registry.load_prompt_tokenizer(backend, model))
        step("Finding characters")

        # 3. characters
        members = find_characters(story.text, sentences, models)
        if not members:
            if _latin_share(story.text) < 0.5:
                raise FairytaleError(
                    f"No characters found in {story_path}: the planner's language models read English, and this "
                    "story is mostly in another script; write the book plan by hand (see README, 'The book plan')"
                )
            raise FairytaleError(
                f"No characters found in {story_path}: a picture book needs someone to draw "
                "(a name like 'Ginger' or a phrase like 'the little giraffe')"
            )
        step("Reading looks")

        # 4. looks
        looks = find_looks(members, sentences, models)
        characters = _to_characters(members, looks)
        key_of = {member.key: character.id for member, character in zip(members, characters, strict=True)}
        step("Setting the scenes")

        # 5. scenes
        main_keys = {m.key for m, c in zip(members, characters, strict=True) if c.main}
        scenes = find_scenes(spans, sentences, story.text, members, main_keys, models)
        step("Composing prompts")

        # 6. pages, prompts and seeds
        seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        rng = random.Random(seed)
        groups = {character.id: character.members for character in characters if character.members}
        pages = [
            Page(
                number=number,
                text=tidy(story.text[span.start : span.end]),
                characters=[key_of[key] for key in scene.characters],
                setting=scene.setting,
                action=scene.action,
                time_of_day=scene.time_of_day,
                mood=scene.mood,
                regions=side_by_side(drawn_alone([key_of[key] for key in scene.named], groups)),
                prompt="-",
                seed=rng.randrange(2**31),
            )
            for number, (span, scene) in enumerate(zip(spans, scenes, strict=True), start=1)
        ]
        plan = BookPlan(
            title=story.title,
            author=author,
            seed=seed,
            style=Style(),
            characters=characters,
            pages=pages,
            source=Source(
                story=story.source.name,
                sha256=story.sha256,
                words_per_page=words_per_page,
                models={**models.ids, backend: model or backend},
            ),
        )
        for page in plan.pages:
            page.set_composed_prompt(compose_prompt(plan, page, count_tokens))
        step("Done")
    if stats is not None:
        stats.qa_asked, stats.qa_computed = models.reader.counters.asked, models.reader.counters.computed
        stats.nli_asked, stats.nli_computed = models.judge.counters.asked, models.judge.counters.computed
    return plan
