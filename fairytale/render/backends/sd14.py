"""The ``sd14`` backend: Stable Diffusion v1.4, text to picture."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fairytale import registry
from fairytale.render.backends.common import Backend, quiet_loading

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.devices import DevicePlan
    from fairytale.render.illustrator import Illustrator


class StableDiffusion14(Backend):
    """Stable Diffusion v1.4 (``CompVis/stable-diffusion-v1-4``): text to picture, 512 px."""

    name = "sd14"
    role = "sd14"
    family = "sd1"
    default_guidance = 7.5
    description = "Stable Diffusion v1.4, 512 px, text to picture"
    consistency_modes = ("seed", "tokens", "attention", "adapter")
    default_consistency = "adapter"  # IP-Adapter from the characters' portraits

    def load(self, device_plan: DevicePlan) -> Illustrator:
        from fairytale.render.illustrator import TextToImageIllustrator

        return TextToImageIllustrator(self, self._pipeline(device_plan), device_plan)

    def _pipeline(self, device_plan: DevicePlan) -> Any:
        from diffusers import StableDiffusionPipeline

        with quiet_loading():
            return registry.load_pipeline(
                self.role,
                StableDiffusionPipeline,
                ref=self.settings.model,
                torch_dtype=device_plan.torch_dtype,
                use_safetensors=True,
            )
