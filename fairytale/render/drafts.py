"""Draft pictures (``--draft``): a whole book in a few steps, to look at before the real paint.

* **SD 1.x** paints drafts with the LCM-LoRA for SD 1.5 (registry role ``lcm_lora_sd15``):
  ``LCMScheduler``, ``draft_steps`` (4 by default; 4-8 is its range) and guidance 1, so each
  step is one UNet call per page instead of two.
* **Other families** (SD 2.x, unCLIP) have no LCM-LoRA: their drafts are the final settings
  with fewer steps (:data:`FALLBACK_STEPS`), and the render says so.

A draft keeps its page's seed and is cached under its own key (its settings and the LoRA are in
it), so a final render never takes a draft for a final picture: it paints those pages again at
full quality. That is a new painting from the same seed, not an enlargement of the draft.

The LoRA is loaded once into a pipeline as a peft adapter (diffusers' ``load_lora_weights``)
and switched on for drafts and off for finals, never fused: fusing and unfusing leaves the
weights a few ulps off, and a final painted after a draft must equal one from a fresh load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fairytale import registry
from fairytale.errors import ModelUnavailableError
from fairytale.render.safety import quiet_diffusers

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.settings import RenderSettings

#: text-encoder family → registry role of its LCM-LoRA
LCM_LORAS = {"sd1": "lcm_lora_sd15"}
#: the file diffusers' LoRA loader reads from a LoRA repo or folder
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
#: draft steps for a family without an LCM-LoRA (its own scheduler; fewer steps than a final)
FALLBACK_STEPS = 10
#: the adapter's name inside the pipeline
ADAPTER = "fairytale_draft"
#: guidance of an LCM draft: 1 turns classifier-free guidance off (LCM-LoRA works at 1-2)
LCM_GUIDANCE = 1.0


def has_lcm_lora(family: str | None) -> bool:
    return family in LCM_LORAS


def draft_settings(settings: RenderSettings, family: str | None) -> RenderSettings:
    """The picture settings a draft is painted with (``settings`` has ``draft=True``)."""
    if has_lcm_lora(family):
        return settings.with_(scheduler="lcm", steps=settings.draft_steps, guidance=LCM_GUIDANCE)
    return settings.with_(steps=min(settings.steps, FALLBACK_STEPS))


def same_as_final(settings: RenderSettings, family: str | None) -> bool:
    """Whether a draft would be the final picture itself: no LCM-LoRA, and no more steps than a
    draft takes. Such a page is painted (and keyed) as a final."""
    return not has_lcm_lora(family) and settings.steps <= FALLBACK_STEPS


def describe(settings: RenderSettings, family: str | None) -> str:
    """How drafts are painted, in words for the user."""
    if has_lcm_lora(family):
        return f"drafts: {settings.draft_steps} LCM steps with the LCM-LoRA"
    return (
        f"drafts: this model has no LCM-LoRA, so drafts are the final settings with fewer steps "
        f"({min(settings.steps, FALLBACK_STEPS)} instead of {settings.steps})"
    )


def lora_source(settings: RenderSettings, family: str | None) -> registry.ModelSource | None:
    """Where the LCM-LoRA of ``family`` comes from (None: the family has none)."""
    role = LCM_LORAS.get(family or "")
    return registry.resolve(role, settings.draft_lora) if role else None


def lora_fingerprint(source: registry.ModelSource | None) -> str:
    """Names the LoRA in a draft's cache key: hub id and revision, or the local file's size and
    modification time (as the model fingerprint does)."""
    if source is None:
        return "fewer-steps"
    if not source.local:
        return f"{source.ref}@{source.revision or 'main'}"
    path = registry.local_weights_file(source, LORA_WEIGHTS)
    stat = path.stat()
    return f"local:{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


class DraftSwitch:
    """The LCM-LoRA in one pipeline: loaded on the first draft, then switched on and off."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.loaded: str | None = None  # fingerprint of the adapter in the pipeline
        self.active = False

    def on(self, source: registry.ModelSource) -> bool:
        """Paint with the LoRA from now on; returns whether it had to be loaded."""
        fingerprint = lora_fingerprint(source)
        loaded_now = False
        if self.loaded != fingerprint:
            if self.loaded is not None:
                self.pipe.delete_adapters(ADAPTER)
            self._load(source)
            self.loaded, loaded_now = fingerprint, True
        self.pipe.enable_lora()
        self.pipe.set_adapters([ADAPTER], adapter_weights=[1.0])
        self.active = True
        return loaded_now

    def off(self) -> None:
        """Paint with the model's own weights: the adapter is skipped, the base layers compute
        exactly what they compute without it."""
        if self.loaded is not None and self.active:
            self.pipe.disable_lora()
        self.active = False

    def _load(self, source: registry.ModelSource) -> None:
        kwargs: dict[str, Any] = {"adapter_name": ADAPTER}
        if source.local:
            path = registry.local_weights_file(source, LORA_WEIGHTS)
            ref, kwargs["weight_name"] = str(path.parent), path.name
        else:
            ref, kwargs["weight_name"] = source.ref, LORA_WEIGHTS
            if source.revision:
                kwargs["revision"] = source.revision
        try:
            with quiet_diffusers():
                self.pipe.load_lora_weights(ref, **kwargs)
        except (OSError, ValueError) as exc:  # missing file, no network, or not a LoRA for this UNet
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelUnavailableError(registry.unavailable_message(source, reason)) from exc
