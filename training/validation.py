"""Validation pictures during training: the prompt with the token, painted every N steps.

They go through a regular diffusers ``StableDiffusionPipeline`` built from the training
components, with a safety checker as everywhere in fAIrytale: the base model's own, or the
standalone one for models that ship none (SD 2.x).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairytale.files import atomic_path


def load_checker(role: str, ref: str | None, safety_model: str | None) -> tuple[Any, Any]:
    """The base model's safety checker and image processor, else the standalone checker."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    from fairytale import registry
    from fairytale.errors import ModelUnavailableError

    if safety_model is None:
        try:
            checker = registry.load_component(role, StableDiffusionSafetyChecker, "safety_checker", ref)
            processor = registry.load_component(role, CLIPImageProcessor, "feature_extractor", ref)
            return checker, processor
        except ModelUnavailableError:
            pass  # this model ships none (SD 2.x): use the standalone one below
    return registry.load_safety_checker(safety_model)


def paint_validation_picture(
    *,
    components: dict[str, Any],
    checker: tuple[Any, Any],
    prompt: str,
    seed: int,
    device: Any,
    weight_dtype: Any,
    path: Path,
    steps: int = 25,
) -> bool:
    """Paint ``prompt`` with the current token and save it at ``path`` (atomically).

    ``components`` holds ``vae, text_encoder, tokenizer, unet, scheduler``. Returns whether the
    safety checker blanked the picture.
    """
    import contextlib

    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    safety_checker, processor = checker
    vae = components["vae"]
    vae_device = vae.device
    vae.to(device)
    safety_checker.to(device)
    try:
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=components["text_encoder"],
            tokenizer=components["tokenizer"],
            unet=components["unet"],
            scheduler=DPMSolverMultistepScheduler.from_config(components["scheduler"].config),
            safety_checker=safety_checker,
            feature_extractor=processor,
            requires_safety_checker=True,
        )
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator(device=device).manual_seed(seed)
        # The text encoder is float32 while the UNet may be half: autocast joins them.
        autocast = (
            torch.autocast(device.type, dtype=weight_dtype)
            if weight_dtype != torch.float32
            else contextlib.nullcontext()
        )
        with autocast, torch.no_grad():
            result = pipe(prompt, num_inference_steps=steps, generator=generator)
    finally:
        vae.to(vae_device)
        safety_checker.to("cpu")
    with atomic_path(path) as tmp:
        result.images[0].save(tmp)
    flagged = result.nsfw_content_detected
    return bool(flagged and flagged[0])
