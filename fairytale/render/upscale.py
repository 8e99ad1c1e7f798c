"""``--print``: pictures upscaled ×4 with the SD x4 upscaler before they go into the PDF.

A 512 px picture across an 8.5 in page carries about 60 DPI of detail; print wants 300. The
Stable Diffusion x4 upscaler (``stabilityai/stable-diffusion-x4-upscaler``, registry role
``upscaler``) paints the missing detail, guided by the page's prompt. Large pictures are
upscaled in overlapping tiles (the upscaler attends over every input pixel, so a whole 512 px
picture at once needs more memory than a T4 has) and the tiles are blended linearly across
their overlap. Upscaled pictures are safety-checked like painted ones; a flagged one is
dropped and the page printed from its (checked) original with a plain resize.

Results are cached in ``BOOK/upscaled/`` under a hash of the picture, the upscaler and its
settings, like painted pictures.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairytale import registry
from fairytale.files import atomic_path, atomic_write_text, ensure_dir, sha256_file
from fairytale.render.legacy_keys import adopt_legacy_file

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from fairytale.render.devices import DevicePlan
    from fairytale.render.progress import RenderProgress
    from fairytale.render.safety import SafetyChecker

NOISE_LEVEL = 20  # the model card's default: how much the upscaler may invent
TILE = 256  # input pixels per tile side
TOKEN = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class UpscaleJob:
    """One picture to upscale, with the words that guide the upscaler and a seed."""

    page: int
    picture: Path
    prompt: str
    negative_prompt: str
    seed: int


def plain_prompt(prompt: str) -> str:
    """``prompt`` without learned tokens (``<ginger>``): the upscaler's text encoder (SD 2
    family) does not know tokens learned for the illustration model."""
    return re.sub(r"\s+", " ", TOKEN.sub("", prompt)).strip(" ,")


def _tiles(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


def _ramp(size: int, overlap: int, at_start: bool, at_end: bool) -> Any:
    import numpy as np

    weights = np.ones(size, dtype=np.float32)
    ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if not at_start:
        weights[:overlap] = ramp
    if not at_end:
        weights[-overlap:] = ramp[::-1]
    return weights


def overlap_for(tile: int) -> int:
    return max(2, tile // 8)


def upscaler_fingerprint(ref: str | None) -> str:
    """Names the upscaler model for cache keys (as :meth:`Backend.model_fingerprint` does)."""
    source = registry.resolve("upscaler", ref)
    if source.local:
        return f"local:{Path(source.ref).resolve()}"
    return registry.weights_fingerprint(source) or f"{source.ref}@{source.revision or 'main'}"


def legacy_upscaler_fingerprints(ref: str | None) -> list[str]:
    """The ``ref@revision`` names upscale keys used before they named weights by their hashes."""
    return registry.legacy_fingerprints(registry.resolve("upscaler", ref))


def upscale_key(job: UpscaleJob, fingerprint: str, steps: int, tile: int = TILE) -> str:
    """Names an upscaled picture: a hash of everything that decides it."""
    parts = [
        "1", sha256_file(job.picture), fingerprint, str(steps), str(NOISE_LEVEL), str(tile), str(overlap_for(tile)),
        plain_prompt(job.prompt), plain_prompt(job.negative_prompt), str(job.seed),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class Upscaler:
    """The x4 upscaler pipeline, loaded once for all pages."""

    scale = 4

    def __init__(self, pipe: Any, device_plan: DevicePlan, steps: int, tile: int = TILE) -> None:
        pipe.set_progress_bar_config(disable=True)
        device_plan.place(pipe)
        self.pipe = pipe
        self.steps = steps
        self.tile = tile

    @property
    def overlap(self) -> int:
        """Input pixels shared by neighbouring tiles, blended linearly."""
        return overlap_for(self.tile)

    @classmethod
    def load(cls, ref: str | None, device_plan: DevicePlan, steps: int) -> Upscaler:
        from diffusers import StableDiffusionUpscalePipeline

        from fairytale.render.backends import quiet_loading

        with quiet_loading():
            pipe = registry.load_pipeline(
                "upscaler", StableDiffusionUpscalePipeline, ref=ref, torch_dtype=device_plan.torch_dtype, use_safetensors=True
            )
        return cls(pipe, device_plan, steps)

    def _upscale_tile(self, tile: Image.Image, job: UpscaleJob, index: int) -> Image.Image:
        import torch

        generator = torch.Generator("cpu").manual_seed((job.seed + 7919 * index) % 2**63)
        with torch.inference_mode():
            return self.pipe(
                prompt=plain_prompt(job.prompt),
                negative_prompt=plain_prompt(job.negative_prompt),
                image=tile,
                num_inference_steps=self.steps,
                noise_level=NOISE_LEVEL,
                generator=generator,
            ).images[0]

    def upscale(self, picture: Image.Image, job: UpscaleJob) -> Image.Image:
        """``picture`` four times larger, in tiles blended across their overlaps."""
        import numpy as np
        from PIL import Image

        picture = picture.convert("RGB")
        width, height = picture.size
        if width <= self.tile and height <= self.tile:
            return self._upscale_tile(picture, job, 0)
        s = self.scale
        total = np.zeros((height * s, width * s, 3), dtype=np.float32)
        weight = np.zeros((height * s, width * s, 1), dtype=np.float32)
        xs, ys = _tiles(width, self.tile, self.overlap), _tiles(height, self.tile, self.overlap)
        index = 0
        for y in ys:
            for x in xs:
                w, h = min(self.tile, width - x), min(self.tile, height - y)
                out = self._upscale_tile(picture.crop((x, y, x + w, y + h)), job, index)
                index += 1
                out = np.asarray(out.convert("RGB").resize((w * s, h * s)), dtype=np.float32)
                wy = _ramp(h * s, self.overlap * s, y == ys[0], y == ys[-1])
                wx = _ramp(w * s, self.overlap * s, x == xs[0], x == xs[-1])
                mask = (wy[:, None] * wx[None, :])[..., None]
                total[y * s:(y + h) * s, x * s:(x + w) * s] += out * mask
                weight[y * s:(y + h) * s, x * s:(x + w) * s] += mask
        return Image.fromarray(np.clip(total / np.maximum(weight, 1e-6) + 0.5, 0, 255).astype(np.uint8))

    def close(self) -> None:
        import gc

        import torch

        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def upscale_pictures(
    jobs: list[UpscaleJob],
    book_dir: Path,
    *,
    ref: str | None,
    steps: int,
    device_plan: DevicePlan,
    safety: Callable[[], SafetyChecker],
    progress: RenderProgress | None = None,
    tile: int = TILE,
) -> tuple[dict[int, Path], list[str]]:
    """Upscale every job's picture, cached in ``book_dir/upscaled``; returns the upscaled file by
    page (pages whose upscaled picture was flagged are left out) and warnings. The upscaler and
    the checker (``safety()``) are loaded only if some picture is not cached yet."""
    from fairytale.images import open_picture
    from fairytale.render.progress import RenderProgress

    folder = Path(book_dir) / "upscaled"
    fingerprint = upscaler_fingerprint(ref)
    targets = {job.page: folder / f"{upscale_key(job, fingerprint, steps, tile)}.png" for job in jobs}
    for job in jobs:  # pictures upscaled before keys named the weights: adopt them
        if not targets[job.page].is_file():
            old_names = [upscale_key(job, old, steps, tile) for old in legacy_upscaler_fingerprints(ref)]
            adopt_legacy_file(targets[job.page], [folder / f"{name}.png" for name in old_names])
    # A damaged upscaled picture (a copy cut short) is made again rather than failing the PDF.
    results = {page: path for page, path in targets.items() if path.is_file() and _decodes(path)}
    # an upscale the checker flagged is remembered: the same picture and settings upscale the same
    flagged = {job.page for job in jobs if job.page not in results and _flag_mark(targets[job.page]).is_file()}
    warnings = [_FLAGGED.format(page=page) for page in sorted(flagged)]
    missing = [job for job in jobs if job.page not in results and job.page not in flagged]
    if not missing:
        return results, warnings
    (progress or RenderProgress()).stage(f"Upscaling {len(missing)} picture{'s' if len(missing) > 1 else ''} x4 for print…")
    upscaler = Upscaler.load(ref, device_plan, steps)
    upscaler.tile = tile
    checker = safety()
    ensure_dir(folder)
    try:
        for job in missing:
            bigger = upscaler.upscale(open_picture(job.picture, what=f"picture of page {job.page}"), job)
            if checker.flagged([bigger])[0]:
                warnings.append(_FLAGGED.format(page=job.page))
                atomic_write_text(_flag_mark(targets[job.page]), "flagged by the safety checker\n")
                continue
            with atomic_path(targets[job.page]) as tmp:
                bigger.save(tmp, "PNG")
            results[job.page] = targets[job.page]
    finally:
        upscaler.close()
    return results, warnings


_FLAGGED = "page {page}: the upscaled picture was flagged; printed from the original instead"


def _flag_mark(target: Path) -> Path:
    """The file that records that the upscale meant for ``target`` was flagged."""
    return target.with_suffix(".flagged")


def _decodes(path: Path) -> bool:
    from fairytale.errors import FairytaleError
    from fairytale.images import open_picture

    try:
        open_picture(path)
    except FairytaleError:
        return False
    return True
