"""The safety checker, always on: no flagged picture reaches the book folder or the PDF.

Every picture a backend paints is checked *before* it is written anywhere. A flagged picture
is thrown away and its page painted again with a new seed (derived from the page's seed and
the attempt number, so a run is reproducible, and recorded in the manifest), up to
``max_repaints`` times; a page still flagged then gets a neutral placeholder and a warning.

The checker is the Stable Diffusion safety checker: the one a model repo ships (SD v1.4 does),
or else the standalone one from the registry (role ``safety_checker``). We run it ourselves
rather than inside the pipeline, so every backend is checked the same way and a flagged
picture is never even turned into a black square on disk.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from fairytale.quiet_logs import errors_only
from fairytale.render.seeds import repaint_seed  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from fairytale.render.devices import DevicePlan


def quiet_diffusers() -> contextlib.AbstractContextManager[None]:
    """Errors only from diffusers for the duration of the block: the safety checker logs its own
    warning for every flagged picture (we report ours instead), and side models (a LoRA, the
    tiny autoencoder) log notes about prefixes and config keys nobody can act on."""
    return errors_only("diffusers")


class SafetyChecker:
    """Decides, picture by picture, whether it may be kept."""

    def __init__(self, checker: Any, processor: Any, *, device: str = "cpu", dtype: Any = None, source: str = "") -> None:
        import torch

        self.dtype = dtype or torch.float32
        self.device = device
        self.checker = checker.to(device=device, dtype=self.dtype).eval()
        if device == "cpu":
            # its CLIP vision tower's layers through oneDNN, a picture at a time: faster than
            # torch's BLAS call on CPU, and a picture's verdict never depends on its batch
            from fairytale.render.unet_tuning import linears_per_picture

            linears_per_picture(self.checker)
        self.processor = processor
        self.source = source

    @classmethod
    def for_pipeline(cls, pipe: Any, device_plan: DevicePlan, standalone_ref: str | None = None) -> SafetyChecker:
        """Take the checker out of ``pipe`` (we run it ourselves), or load the standalone one."""

        checker = getattr(pipe, "safety_checker", None)
        processor = getattr(pipe, "feature_extractor", None)
        source = "the model's own safety checker"
        if checker is not None and processor is not None:
            pipe.safety_checker = None  # run below, on our terms, never inside the pipeline
        else:
            from fairytale import registry

            checker, processor = registry.load_safety_checker(standalone_ref, use_safetensors=True)
            source = f"safety checker {registry.resolve('safety_checker', standalone_ref).ref}"
        device, dtype = device_plan.side_model_placement()
        return cls(checker, processor, device=device, dtype=dtype, source=source)

    @classmethod
    def for_model(cls, role: str, ref: str | None, device_plan: DevicePlan, standalone_ref: str | None = None) -> SafetyChecker:
        """The checker a model of ``role`` ships, loaded on its own (no UNet, no VAE), or the
        standalone one when its repo has none. Used when pictures must be checked without
        painting (upscaling cached pictures)."""
        from diffusers import DiffusionPipeline
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        from fairytale import registry

        index = registry.load_config(role, DiffusionPipeline, None, ref)
        if (index.get("safety_checker") or [None])[0] and (index.get("feature_extractor") or [None])[0]:
            checker = registry.load_component(role, StableDiffusionSafetyChecker, "safety_checker", ref, use_safetensors=True)
            processor = registry.load_component(role, CLIPImageProcessor, "feature_extractor", ref)
            source = "the model's own safety checker"
        else:
            checker, processor = registry.load_safety_checker(standalone_ref, use_safetensors=True)
            source = f"safety checker {registry.resolve('safety_checker', standalone_ref).ref}"
        device, dtype = device_plan.side_model_placement()
        return cls(checker, processor, device=device, dtype=dtype, source=source)

    def flagged(self, images: list[Image.Image]) -> list[bool]:
        """For each picture, whether the checker flags it."""
        import numpy as np
        import torch

        if not images:
            return []
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        placeholder = np.zeros((len(images), 1, 1, 3), dtype=np.float32)  # the checker blanks these, not ours
        with torch.inference_mode(), quiet_diffusers():
            _, flags = self.checker(images=placeholder, clip_input=pixels.to(self.device, self.dtype))
        return [bool(flag) for flag in flags]


def placeholder_picture(width: int, height: int) -> Image.Image:
    """A calm, empty picture for a page whose painting was flagged every time: a soft
    cream-to-sky gradient in a thin frame. Nothing in it can be unsuitable."""
    from PIL import Image, ImageDraw

    top, bottom = (250, 244, 230), (214, 230, 242)
    gradient = Image.new("RGB", (1, height))
    for y in range(height):
        t = y / max(1, height - 1)
        gradient.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    picture = gradient.resize((width, height))
    inset = max(2, min(width, height) // 24)
    ImageDraw.Draw(picture).rectangle(
        (inset, inset, width - 1 - inset, height - 1 - inset), outline=(200, 190, 170), width=max(1, inset // 4)
    )
    return picture
