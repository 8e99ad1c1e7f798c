"""Edits to a saved book plan that keep it consistent: new character descriptions, hand-written
prompts, learned tokens. For the notebooks and for scripts; the CLI user edits the JSON itself.

A changed description or a new token changes how the character is drawn, so the prompts of the
pages it is on are composed again (with the illustration model's own tokenizer, fitted to 77
tokens) — except pages whose prompt is given by hand in the same edit.

>>> edit_plan("out/ginger/plan.json", descriptions={"ginger": "a tall giraffe in a red scarf"})  # doctest: +SKIP
>>> add_learned_token("out/ginger/plan.json", "ginger.safetensors", character="ginger")       # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from fairytale.errors import PlanError
from fairytale.plan import BookPlan, Character, Embedding, dump_plan, load_plan, parse_plan, save_plan

TokenCounter = Callable[[str], int]


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


def recompose(plan: BookPlan, character_ids: set[str], count_tokens: TokenCounter, keep: set[int] = frozenset()) -> list[int]:
    """Compose again the prompts of the pages showing any of ``character_ids`` (pages in
    ``keep`` excepted); returns the page numbers changed."""
    from fairytale.planner import compose_prompt

    changed = []
    for page in plan.pages:
        if page.number in keep or not character_ids.intersection(page.characters):
            continue
        prompt = compose_prompt(plan, page, count_tokens)
        if prompt != page.prompt:
            page.prompt = prompt
            changed.append(page.number)
    return changed


def edit_plan(
    plan_file: Path | str,
    *,
    descriptions: Mapping[str, str] | None = None,
    prompts: Mapping[int, str] | None = None,
    backend: str = "sd14",
    model: str | None = None,
    count_tokens: TokenCounter | None = None,
) -> BookPlan:
    """Change character descriptions (by id, name or alias) and page prompts (by page number),
    validate, and save the plan atomically. Returns the saved plan."""
    plan_file = Path(plan_file)
    plan = load_plan(plan_file)
    descriptions = dict(descriptions or {})
    prompts = {int(number): text for number, text in (prompts or {}).items()}

    numbers = {page.number for page in plan.pages}
    for number, text in prompts.items():
        if number not in numbers:
            raise PlanError(f"No page {number} in the plan (pages 1-{max(numbers)})")
        if not text.strip():
            raise PlanError(f"The prompt of page {number} is empty")

    touched = set()
    for key, text in descriptions.items():
        if not text.strip():
            raise PlanError(f"The description of '{key}' is empty")
        character = find_character(plan, key)
        character.description = text.strip()
        touched.add(character.id)

    if touched:
        recompose(plan, touched, count_tokens or _model_counter(backend, model), keep=set(prompts))
    for page in plan.pages:
        if page.number in prompts:
            page.prompt = prompts[page.number].strip()

    plan = parse_plan(dump_plan(plan), str(plan_file))  # the edited plan must still be a valid plan
    save_plan(plan, plan_file)
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
    again. The file is read first, so a broken or missing one is refused before anything changes."""
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

    counter = count_tokens or _model_counter(backend, model)
    if character is not None:
        target = find_character(plan, character)
        target.token = learned.token
        recompose(plan, {target.id}, counter)
    else:
        plan.style.token = learned.token
        recompose(plan, {c.id for c in plan.characters}, counter)
        from fairytale.planner import compose_prompt

        for page in plan.pages:  # pages with no character carry the style too
            if not page.characters:
                page.prompt = compose_prompt(plan, page, counter)

    plan = parse_plan(dump_plan(plan), str(plan_file))
    save_plan(plan, plan_file)
    return plan
