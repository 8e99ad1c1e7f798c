"""The drift check (``--drift-check THRESHOLD``): is each character still like its portrait?

After a page is painted, each character it shows that has a reference portrait is scored:
``100 · cos`` of the CLIP image embeddings of the character's region of the page (the whole
picture when it is the page's only such character; else its box from
:func:`~fairytale.render.backends.common.page_regions`) and of its portrait. A page whose lowest
score is below the threshold is painted again with its next drift seed (``derive_seed("drift",
seed, n)``), up to ``--max-drift-repaints`` times (a budget of its own, apart from safety
repaints), and the best-scoring picture is kept. Every score goes into the manifest.

No threshold can be calibrated without real weights: the check is off by default, and the
README says how to choose one (render once, run ``fairytale evaluate``, look at the scores of
the pages you find unlike).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairytale import registry
from fairytale.files import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from fairytale.plan import BookPlan, Page


class DriftScorer:
    """CLIP (registry role ``clip``) scoring characters' regions against their portraits."""

    def __init__(self, clip_model: str | None, device: str) -> None:
        self.model, self.processor = registry.load_clip(clip_model, device)
        self.device = next(self.model.parameters()).device
        self._portraits: dict[str, Any] = {}

    def _features(self, pictures: list[Image.Image]) -> Any:
        import torch

        with torch.inference_mode():
            inputs = self.processor(images=pictures, return_tensors="pt").to(self.device)
            return torch.nn.functional.normalize(self.model.get_image_features(**inputs).float(), dim=-1)

    def _portrait(self, path: Path) -> Any:
        from fairytale.images import open_rgb

        digest = sha256_file(path)
        if digest not in self._portraits:
            self._portraits[digest] = self._features([open_rgb(path, what="reference portrait")])[0]
        return self._portraits[digest]

    def scores(self, picture: Image.Image, plan: BookPlan, page: Page, plan_file: Path) -> dict[str, float]:
        """Character id → likeness (0-100) of its region of ``picture`` to its portrait."""
        from fairytale.plan import resolve_plan_path
        from fairytale.render.backends.common import page_regions

        ids = [c.id for c in plan.characters if c.reference is not None and c.id in page.characters]
        if not ids:
            return {}
        width, height = picture.size
        crops = []
        for left, top, right, bottom in page_regions(plan, page):
            crops.append(picture.crop((round(left * width), round(top * height), round(right * width), round(bottom * height))))
        regions = self._features(crops)
        found = {}
        for character_id, region in zip(ids, regions, strict=True):
            character = plan.character(character_id)
            path = resolve_plan_path(plan_file, character.reference.image)
            found[character_id] = round(100 * float(region @ self._portrait(path)), 3)
        return found
