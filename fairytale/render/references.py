"""Reference portraits: one picture per main character, painted once, kept in the book folder.

A portrait is painted from the character's description (and learned token, if it has one) with
a seed derived from the plan's seed and the character's id, safety-checked like every page, and
stored as ``BOOK_DIR/references/<id>.png``. The plan then records it (``characters[].reference``:
image path relative to the plan, seed, prompt, model), so later renders reuse it, and a user
may point ``reference.image`` at their own picture instead (``seed`` null).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from fairytale.files import atomic_path, ensure_dir
from fairytale.plan import Character, Reference, load_plan, save_plan
from fairytale.render.backends import PaintRequest
from fairytale.render.painting import illustrator_loop
from fairytale.render.seeds import reference_seed

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.plan import BookPlan
    from fairytale.render.illustrator import Illustrator


def portrait_prompt(plan: BookPlan, character: Character) -> str:
    """What a reference portrait shows: the character alone, whole, on a plain background."""
    who = " ".join(part for part in (character.token, character.description or character.kind or character.name) if part)
    style = " ".join(part for part in (plan.style.token, plan.style.description) if part)
    return f"portrait of {who}, full figure, facing the viewer, plain light background, {style}".strip(", ")


def paint_references(
    illustrator: Illustrator,
    plan: BookPlan,
    plan_file: Path,
    book_dir: Path,
    ids: list[str],
    *,
    max_repaints: int = 3,
    batch_size: int = 1,
) -> list[str]:
    """Paint the portraits of characters ``ids`` into ``book_dir/references`` and record them in
    ``plan`` (the caller saves it), through the same paint-and-safety loop as pages. Returns
    warnings (a portrait flagged every time is left out: its character's pages are then painted
    from their prompt alone)."""
    warnings: dict[int, str] = {}
    folder = ensure_dir(Path(book_dir) / "references")
    characters = [plan.character(character_id) for character_id in ids]
    requests = [
        PaintRequest(index, portrait_prompt(plan, c), plan.style.negative_prompt, reference_seed(plan.seed, c.id))
        for index, c in enumerate(characters)
    ]
    for finished in illustrator_loop(illustrator, requests, batch_size=batch_size, max_repaints=max_repaints):
        for done in finished:
            character = characters[done.request.page]
            if done.picture is None:
                warnings[done.request.page] = (
                    f"the reference portrait of {character.name} was flagged every time; its pages use the prompt alone"
                )
                continue
            path = folder / f"{character.id}.png"
            with atomic_path(path) as tmp:
                done.picture.save(tmp, "PNG")
            relative = os.path.relpath(path.resolve(), Path(plan_file).resolve().parent)
            character.reference = Reference(
                image=relative, seed=done.seed, prompt=done.request.prompt, model=illustrator.backend.credit_model()
            )
    return [warnings[index] for index in sorted(warnings)]


def record_references(plan_file: Path, painted: BookPlan, ids: list[str]) -> None:
    """Write the portraits of characters ``ids`` that :func:`paint_references` put in ``painted``
    into the plan file as it is now (read again: edits saved while they were painted are kept)."""
    recorded = load_plan(plan_file)
    for character_id in ids:
        recorded.character(character_id).reference = painted.character(character_id).reference
    save_plan(recorded, plan_file)
