"""``fairytale vary``: variations of one picture, and a character training set made from them.

The model is Lambda Labs' image-variations fine-tune of SD 1.4
(``lambdalabs/sd-image-variations-diffusers``, revision ``v2.0``): its UNet reads a CLIP image
embedding instead of text, so it has no text encoder (and no learned tokens). Its model card asks
for a preprocessing that differs from ``CLIPImageProcessor``: a plain bicubic resize to the CLIP
input size *without anti-aliasing* (what the model was trained with), no centre crop, then CLIP's
normalisation; and guidance scale 3. :func:`clip_preprocess` does exactly that with torch.

With ``training_set=True`` the output folder is a character training set in the layout the
textual-inversion trainer reads (a plain folder of pictures, :func:`training.data.find_training_images`):
the source picture plus its variations, so one portrait becomes a learned token with
``fairytale train character --data DIR --token "<name>"``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairytale import registry
from fairytale.errors import FairytaleError
from fairytale.files import atomic_path, atomic_write_text, check_output_folder, ensure_dir
from fairytale.render.seeds import variation_seed

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

    from fairytale.render.backends import PaintRequest

DEFAULT_GUIDANCE = 3.0  # the model card's


def check_options(count: int, seed: int, steps: int, guidance: float, max_repaints: int = 3) -> None:
    """Refuse numbers no painting can use, in one line naming the option and its range, as
    ``fairytale render`` does (cheap: the CLI calls it before any model is looked at). A
    guidance of nan or inf would paint black pictures (and nan is no JSON for variations.json)."""
    checks = [
        (1 <= count <= 100, f"-n must be between 1 and 100, not {count}"),
        (0 <= seed < 2**63, f"--seed must be between 0 and 2^63-1, not {seed}"),
        (1 <= steps <= 500, f"--steps must be between 1 and 500, not {steps}"),
        (0 <= guidance <= 50, f"--guidance must be between 0 and 50, not {guidance}"),  # False for nan
        (0 <= max_repaints <= 20, f"max_repaints must be between 0 and 20, not {max_repaints}"),
    ]
    for ok, message in checks:
        if not ok:
            raise FairytaleError(message)


@dataclass
class VariationResult:
    """What :func:`make_variations` wrote."""

    folder: Path
    pictures: list[Path]
    seeds: list[int]
    source_copy: Path | None = None
    warnings: list[str] = field(default_factory=list)


def clip_preprocess(image: Image.Image, size: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """The model card's preprocessing: to a [0, 1] tensor, bicubic resize to ``size``×``size``
    with ``antialias=False``, CLIP normalisation. Returns a (1, 3, size, size) float tensor."""
    import numpy as np
    import torch

    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (resized - mean_t) / std_t


def _read_picture(path: Path) -> Image.Image:
    from fairytale.images import open_rgb

    return open_rgb(path)


def make_variations(
    image_path: Path | str,
    output_dir: Path | str,
    count: int = 4,
    *,
    model: str | None = None,
    seed: int = 0,
    steps: int = 25,
    guidance: float = DEFAULT_GUIDANCE,
    device: str | None = None,
    low_vram: bool = False,
    safety_model: str | None = None,
    max_repaints: int = 3,
    training_set: bool = False,
    progress: bool = False,
) -> VariationResult:
    """Paint ``count`` variations of the picture at ``image_path`` into ``output_dir`` as
    ``variation-01.png`` …, each safety-checked (a flagged one is painted again with a new
    seed), with ``variations.json`` recording the seeds. ``training_set`` also copies the source
    picture in, making the folder a character training set. Bad input raises
    :class:`FairytaleError` before anything is loaded or written."""
    import torch

    from fairytale.render.backends import PaintRequest
    from fairytale.render.devices import plan_device
    from fairytale.render.painting import paint_checked
    from fairytale.render.safety import SafetyChecker

    # 1. check inputs
    image_path, output_dir = Path(image_path), Path(output_dir)
    check_options(count, seed, steps, guidance, max_repaints)
    picture = _read_picture(image_path)
    if output_dir.exists() and not output_dir.is_dir():
        raise FairytaleError(f"Output must be a folder, but {output_dir} is a file")
    check_output_folder(output_dir)  # a folder that cannot be made fails now, not after painting
    existing = sorted(output_dir.glob("variation-*.png")) if output_dir.is_dir() else []
    if existing:
        raise FairytaleError(f"{output_dir} already holds variations ({existing[0].name}…); choose an empty folder")

    # 2. load the pipeline (the repo ships its safety checker; we run it ourselves)
    from diffusers import StableDiffusionImageVariationPipeline

    from fairytale.render.backends import quiet_loading

    device_plan = plan_device(device, low_vram=low_vram, batch_size=None)
    with quiet_loading():
        pipe = registry.load_pipeline(
            "variations", StableDiffusionImageVariationPipeline, ref=model, torch_dtype=device_plan.torch_dtype, use_safetensors=True
        )
    safety = SafetyChecker.for_pipeline(pipe, device_plan, safety_model)
    pipe.set_progress_bar_config(disable=not progress)
    device_plan.place(pipe)
    if device_plan.low_vram:
        pipe.vae.enable_slicing()

    # 3. the card's preprocessing, once
    processor = pipe.feature_extractor
    size = processor.crop_size["height"] if isinstance(processor.crop_size, dict) else int(processor.crop_size)
    pixels = clip_preprocess(picture, size, processor.image_mean, processor.image_std)

    # 4. paint in batches (of the device's size) through the paint-and-safety loop of pages
    def paint(requests: Sequence[PaintRequest], on_step: Any = None) -> list[Image.Image]:
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
        with torch.inference_mode():
            return pipe(
                image=pixels.repeat(len(requests), 1, 1, 1).to(device_plan.device, device_plan.torch_dtype),
                guidance_scale=guidance,
                num_inference_steps=steps,
                generator=generators,
                output_type="pil",
            ).images

    requests = [PaintRequest(i, "", "", variation_seed(seed, i)) for i in range(count)]
    batch = 1 if low_vram else max(1, device_plan.batch_size)
    done: dict[int, Any] = {}
    seeds: dict[int, int] = {}
    warnings: list[str] = []
    for finished in paint_checked(paint, safety.flagged, requests, batch_size=batch, max_repaints=max_repaints):
        for result in finished:
            index = result.request.page
            if result.picture is None:
                warnings.append(f"variation {index + 1} was flagged by the safety checker every time; left out")
            else:
                done[index], seeds[index] = result.picture, result.seed

    # 5. write (each file atomically), the seeds last
    ensure_dir(output_dir)
    written, kept_seeds = [], []
    for number, index in enumerate(sorted(done), start=1):
        path = output_dir / f"variation-{number:02d}.png"
        with atomic_path(path) as tmp:
            done[index].save(tmp, "PNG")
        written.append(path)
        kept_seeds.append(seeds[index])
    source_copy = None
    if training_set:
        source_copy = output_dir / f"source{image_path.suffix.lower() or '.png'}"
        with atomic_path(source_copy) as tmp:
            shutil.copyfile(image_path, tmp)
    record = {
        "source": str(image_path.resolve()),
        "model": registry.resolve("variations", model).label,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "variations": [{"image": p.name, "seed": s} for p, s in zip(written, kept_seeds, strict=True)],
        "training_set": training_set,
    }
    atomic_write_text(output_dir / "variations.json", json.dumps(record, indent=2) + "\n")
    return VariationResult(output_dir, written, kept_seeds, source_copy, warnings)
