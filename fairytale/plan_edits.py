"""Edits to a saved book plan that keep it consistent: new character descriptions, hand-written
prompts, learned tokens. For the notebooks, scripts and ``fairytale edit``.

A changed description or a new token changes how the character is drawn, so the prompts of the
pages it is on are composed again (with the illustration model's own tokenizer, fitted to 77
tokens) — except prompts a person wrote. A composed prompt carries a fingerprint in the plan
(``Page.composed``); one that no longer matches it was written by hand, in the studio, with
``--prompt`` or in a text editor, and is kept. ``reset_prompts`` composes such a page again.
A plan older than version 4 has no fingerprints: a prompt there counts as composed only when it
is exactly what composing it gives before the edit, so a hand-written one is never lost.

>>> edit_plan("out/ginger/plan.json", descriptions={"ginger": "a tall giraffe in a red scarf"})  # doctest: +SKIP
>>> add_learned_token("out/ginger/plan.json", "ginger.safetensors", character="ginger")       # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fairytale.errors import PlanError
from fairytale.plan import BookPlan, Character, Embedding, dump_plan, load_plan, parse_plan, save_plan

TokenCounter = Callable[[str], int]


class HandWrittenPromptsKept(UserWarning):
    """An edit would have composed these pages' prompts again, but a person wrote them."""


@dataclass(frozen=True)
class Recomposed:
    """What composing prompts again did: the pages given a new composed prompt, and the pages
    the edit concerns that kept a prompt written by a person."""

    changed: list[int]
    hand_written: list[int]


def _model_counter(backend: str, model: str | None) -> TokenCounter:
    from fairytale import registry
    from fairytale.prompts import clip_token_counter

    return clip_token_counter(registry.load_prompt_tokenizer(backend, model))


def find_character(plan: BookPlan, key: str) -> Character:
    """A character by id, name or alias (case-insensitive); a clear error naming the choices."""
    wanted = key.strip().casefold()
    for character in plan.characters:
        names = [character.id, character.name, *character.aliases]
        if wanted in (name.casefold() for name in names):
            return character
    choices = ", ".join(c.id for c in plan.characters) or "none"
    raise PlanError(f"No character '{key}' in the plan (characters: {choices})")


def fingerprint_composed_prompts(plan: BookPlan, count_tokens: TokenCounter) -> None:
    """Mark as composed the unmarked prompts (a plan older than version 4, or one a person set)
    that are exactly what composing their page gives now. Call it before changing what prompts
    are composed from, so that afterwards an unmarked prompt is one a person wrote."""
    from fairytale.planner import compose_prompt

    for page in plan.pages:
        if page.composed is None and page.prompt == compose_prompt(plan, page, count_tokens):
            page.set_composed_prompt(page.prompt)


def recompose(
    plan: BookPlan,
    character_ids: Collection[str] | None,
    count_tokens: TokenCounter,
    keep: Collection[int] = frozenset(),
    reset: Collection[int] = frozenset(),
) -> Recomposed:
    """Compose again the prompts of the pages showing any of ``character_ids`` (every page when
    it is None) and of the pages in ``reset``. A prompt a person wrote (see
    :meth:`Page.prompt_is_composed`) is kept unless its page is in ``reset``; pages in ``keep``
    are left alone and not reported. Call :func:`fingerprint_composed_prompts` before the edit."""
    from fairytale.planner import compose_prompt

    changed, hand_written = [], []
    for page in plan.pages:
        shown = character_ids is None or bool(set(character_ids).intersection(page.characters))
        if page.number in keep or not (shown or page.number in reset):
            continue
        if page.number not in reset and not page.prompt_is_composed():
            hand_written.append(page.number)
            continue
        prompt = compose_prompt(plan, page, count_tokens)
        if prompt != page.prompt:
            changed.append(page.number)
        page.set_composed_prompt(prompt)
    return Recomposed(changed, hand_written)


def _warn_kept(result: Recomposed) -> None:
    if result.hand_written:
        pages = ", ".join(map(str, result.hand_written))
        one = len(result.hand_written) == 1
        kept = f"Page {pages} kept its hand-written prompt" if one else f"Pages {pages} kept their hand-written prompts"
        warnings.warn(
            HandWrittenPromptsKept(
                f"{kept}; to compose {'it' if one else 'them'} again from the plan, "
                f"edit the plan with reset_prompts=[{pages}]"
            ),
            stacklevel=3,
        )


def apply_edits(
    plan: BookPlan,
    *,
    descriptions: Mapping[str, str] | None = None,
    prompts: Mapping[int, str] | None = None,
    reset_prompts: Iterable[int] = (),
    backend: str = "sd14",
    model: str | None = None,
    count_tokens: TokenCounter | None = None,
) -> Recomposed:
    """Change ``plan`` in memory: character descriptions (by id, name or alias), hand-written page
    prompts (by page number) and pages whose prompt is composed again (``reset_prompts``). Pages
    showing a re-described character are composed again unless a person wrote their prompt.
    Prompts are measured with ``count_tokens``, else the tokenizer of ``backend``/``model`` (loaded
    only when a prompt is composed).
    Bad input is a :class:`PlanError` before anything changes."""
    descriptions = dict(descriptions or {})
    prompts = {int(number): text for number, text in (prompts or {}).items()}
    reset = {int(number) for number in reset_prompts}

    numbers = {page.number for page in plan.pages}
    for number in sorted(set(prompts) | reset):
        if number not in numbers:
            raise PlanError(f"No page {number} in the plan (pages 1-{max(numbers)})")
    for number, text in prompts.items():
        if not text.strip():
            raise PlanError(f"The prompt of page {number} is empty")
    both = sorted(reset & set(prompts))
    if both:
        raise PlanError(f"Page {both[0]} is given a prompt and asked to compose one: choose one")
    characters = {}
    for key, text in descriptions.items():
        if not text.strip():
            raise PlanError(f"The description of '{key}' is empty")
        characters[key] = find_character(plan, key)

    result = Recomposed([], [])
    if characters or reset:
        counter = count_tokens or _model_counter(backend, model)
        fingerprint_composed_prompts(plan, counter)
        for key, character in characters.items():
            character.description = descriptions[key].strip()
        touched = {character.id for character in characters.values()}
        result = recompose(plan, touched, counter, keep=set(prompts), reset=reset)
    for page in plan.pages:
        if page.number in prompts:
            page.set_hand_written_prompt(prompts[page.number].strip())
    return result


def edit_plan(
    plan_file: Path | str,
    *,
    descriptions: Mapping[str, str] | None = None,
    prompts: Mapping[int, str] | None = None,
    reset_prompts: Iterable[int] = (),
    backend: str = "sd14",
    model: str | None = None,
    count_tokens: TokenCounter | None = None,
) -> BookPlan:
    """Change character descriptions (by id, name or alias) and page prompts (by page number),
    compose again the prompts of the pages in ``reset_prompts``, validate, and save the plan
    atomically (see :func:`apply_edits`). Returns the saved plan; pages that kept a hand-written
    prompt a new description would have replaced are named in a :class:`HandWrittenPromptsKept`
    warning."""
    plan_file = Path(plan_file)
    plan = load_plan(plan_file)
    result = apply_edits(
        plan,
        descriptions=descriptions,
        prompts=prompts,
        reset_prompts=reset_prompts,
        backend=backend,
        model=model,
        count_tokens=count_tokens,
    )
    plan = parse_plan(dump_plan(plan), str(plan_file))  # the edited plan must still be a valid plan
    save_plan(plan, plan_file)
    _warn_kept(result)
    return plan


def add_learned_token(
    plan_file: Path | str,
    embedding_file: Path | str,
    *,
    character: str | None = None,
    backend: str = "sd14",
    model: str | None = None,
    count_tokens: TokenCounter | None = None,
) -> BookPlan:
    """Use a learned token from ``embedding_file`` in the plan: for ``character`` (id, name or
    alias), or as the book's style token when no character is named. The embedding is listed in
    the plan (path relative to the plan when it can be) and the affected prompts are composed
    again, except those a person wrote (named in a :class:`HandWrittenPromptsKept` warning: a
    hand-written prompt that should draw the token must name it). The file is read first, so a broken or missing one is refused before anything changes."""
    from fairytale.embeddings import read_embedding

    plan_file = Path(plan_file)
    embedding_file = Path(embedding_file)
    if not embedding_file.is_file():
        raise PlanError(f"Embedding file not found: {embedding_file}")
    learned = read_embedding(embedding_file)
    plan = load_plan(plan_file)

    try:
        relative = os.path.relpath(embedding_file.resolve(), plan_file.resolve().parent)
    except ValueError:  # another drive on Windows
        relative = str(embedding_file.resolve())
    kept = [e for e in plan.embeddings if e.token != learned.token]
    plan.embeddings = [*kept, Embedding(token=learned.token, path=relative, family=learned.family)]

    target = find_character(plan, character) if character is not None else None
    counter = count_tokens or _model_counter(backend, model)
    fingerprint_composed_prompts(plan, counter)
    if target is not None:
        target.token = learned.token
        result = recompose(plan, {target.id}, counter)
    else:  # the style is on every page, with characters or without
        plan.style.token = learned.token
        result = recompose(plan, None, counter)

    plan = parse_plan(dump_plan(plan), str(plan_file))
    save_plan(plan, plan_file)
    _warn_kept(result)
    return plan
