"""Every seed fAIrytale derives from another, from one helper.

A derived seed is a hash of what it is for (``kind``) and what it is derived from, so a render
is reproducible and two purposes never share a seed by accident. The strings hashed here are
part of the pictures' identity: changing one repaints existing books.
"""

from __future__ import annotations

import hashlib

MAX_SEED = 2**63  # seeds are non-negative and fit a signed 64-bit integer (torch.Generator)


def derive_seed(kind: str, *parts: object) -> int:
    """The seed for ``kind`` (``"repaint"``, ``"reference"``, ``"variation"``, ``"candidate"``, ``"new-seed"``)
    derived from ``parts``: the first 8 bytes of SHA-256 of ``fairytale-KIND:PART:PART…``."""
    text = ":".join([f"fairytale-{kind}", *map(str, parts)])
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") % MAX_SEED


def repaint_seed(seed: int, attempt: int) -> int:
    """The seed of repaint number ``attempt`` (1, 2, …) of a picture first painted with ``seed``."""
    return derive_seed("repaint", seed, attempt)


def reference_seed(plan_seed: int, character_id: str) -> int:
    """The seed a character's reference portrait is painted with (recorded in the plan)."""
    return derive_seed("reference", plan_seed, character_id)


def variation_seed(seed: int, index: int) -> int:
    """The seed of variation ``index`` (0, 1, …) of a ``fairytale vary`` run with master ``seed``."""
    return derive_seed("variation", seed, index)


def candidate_seed(seed: int, index: int) -> int:
    """The seed of candidate ``index`` (0, 1, …) the studio paints for a page with ``seed``
    (apart from :func:`next_seed`'s, so a new seed never brings back a rejected candidate)."""
    return derive_seed("candidate", seed, index)


def next_seed(seed: int) -> int:
    """The seed a page gets when it is repainted with ``--pages`` and no ``--seed``."""
    return derive_seed("new-seed", seed)
