"""The ``sd21`` backend: Stable Diffusion 2.1 (768 px, v-prediction), text to picture."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairytale.render.backends.common import check_v_prediction
from fairytale.render.backends.sd14 import StableDiffusion14

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.devices import DevicePlan
    from fairytale.render.illustrator import Illustrator


class StableDiffusion21(StableDiffusion14):
    """Stable Diffusion 2.1 (``stabilityai/stable-diffusion-2-1``): text to picture, 768 px,
    v-prediction. Every ``--scheduler`` is built from the model's own scheduler config, so it
    inherits ``prediction_type="v_prediction"`` (see :mod:`fairytale.render.schedulers`). The
    repo ships no safety checker: the standalone one is used (``--safety-model``)."""

    name = "sd21"
    role = "sd21"
    family = "sd2"
    default_guidance = 7.5
    description = "Stable Diffusion 2.1, 768 px, v-prediction, text to picture"
    consistency_modes = ("seed", "tokens", "attention")  # IP-Adapter has no SD 2.x weights
    default_consistency = "attention"  # shared attention with the portraits: no extra weights

    def load(self, device_plan: DevicePlan) -> Illustrator:
        from fairytale.render.illustrator import TextToImageIllustrator

        pipe = self._pipeline(device_plan)
        check_v_prediction(pipe.scheduler, self.source.label)
        return TextToImageIllustrator(self, pipe, device_plan)
