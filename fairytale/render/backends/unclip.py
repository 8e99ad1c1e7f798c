"""The ``unclip`` backend: pages painted from the characters' reference portraits.

Stable Diffusion 2.1 unCLIP (``stabilityai/stable-diffusion-2-1-unclip``) is SD 2.1 whose UNet
also reads a CLIP *image* embedding. With ``--consistency reference`` (its default) every page
that shows a character is painted from that character's reference portrait's embedding plus
the page prompt, so the character keeps its look; ``--noise-level`` (0–1000) noises that
embedding first, trading likeness for freedom (0: closest to the portrait).

**Several characters on a page** (the rule): the embeddings of all the page's characters that
have a reference portrait are *averaged* (each one L2-normalised first, so every character
weighs the same, then the mean is rescaled to the average length), in the plan's character
order. A page showing none of them gets a zero image embedding: the same "no picture" input the
pipeline uses for the unconditional half of classifier-free guidance, so it is painted from its
prompt alone. A character's reference is never used on a page that does not list it.

**Reference portraits** are painted by the same pipeline, from the character's description with
a zero image embedding (text only), so no second model is loaded: one big pipeline on the GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairytale import registry
from fairytale.files import sha256_file
from fairytale.render.backends.common import (
    Backend,
    PaintRequest,
    check_v_prediction,
    page_portraits,
    quiet_loading,
)
from fairytale.render.illustrator import TextToImageIllustrator

if TYPE_CHECKING:  # pragma: no cover

    from fairytale.plan import BookPlan, Page
    from fairytale.render.devices import DevicePlan
    from fairytale.render.illustrator import Illustrator


class StableUnCLIP21(Backend):
    """SD 2.1 unCLIP: image embedding + text, 768 px, v-prediction."""

    name = "unclip"
    role = "unclip"
    family = "sd2"  # its text encoder is SD 2.1's (1024-d OpenCLIP ViT-H)
    default_guidance = 10.0  # the pipeline's (and model card's) default
    description = "Stable Diffusion 2.1 unCLIP, 768 px: reference portrait embedding + page prompt"
    consistency_modes = ("seed", "tokens", "reference")
    default_consistency = "reference"

    def request_for(self, plan: BookPlan, page: Page, plan_file: Path) -> PaintRequest:
        request = super().request_for(plan, page, plan_file)
        if "reference" not in self.modes(plan):
            return request
        return PaintRequest(
            request.page, request.prompt, request.negative_prompt, request.seed, page_portraits(plan, page, plan_file),
            {"noise_level": self.settings.noise_level},
        )

    def load(self, device_plan: DevicePlan) -> Illustrator:
        from diffusers import StableUnCLIPImg2ImgPipeline

        with quiet_loading():
            pipe = registry.load_pipeline(
                self.role,
                StableUnCLIPImg2ImgPipeline,
                ref=self.settings.model,
                torch_dtype=device_plan.torch_dtype,
                use_safetensors=True,
            )
        check_v_prediction(pipe.scheduler, self.source.label)
        return UnCLIPIllustrator(self, pipe, device_plan)


def blend_embeddings(embeddings: Sequence[Any]) -> Any:
    """The rule for several characters: the mean of the L2-normalised embeddings, rescaled to
    their mean length. One embedding comes back unchanged."""
    import torch

    if len(embeddings) == 1:
        return embeddings[0]
    stacked = torch.stack(list(embeddings))
    lengths = stacked.norm(dim=-1, keepdim=True)
    mean = (stacked / lengths).mean(dim=0)
    return mean / mean.norm() * lengths.mean()


def _row_by_row(unet: Any) -> None:
    """Make the small ``Linear`` layers of the UNet's timestep/class-embedding path compute one
    row at a time. In unCLIP each page's row differs (its image embedding is added to the
    timestep embedding), so the base illustrator's "equal rows" shortcut does not apply, and a
    many-row matrix product rounds differently from a one-row one on CPU: without this a page's
    picture would depend on the batch it was painted in."""
    import types

    import torch

    def forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[0] == 1:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        return torch.cat([torch.nn.functional.linear(row, self.weight, self.bias) for row in x.split(1)])

    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and (
            name.startswith(("time_embedding", "class_embedding")) or name.endswith("time_emb_proj")
        ):
            module.forward = types.MethodType(forward, module)


class UnCLIPIllustrator(TextToImageIllustrator):
    """Paints with a :class:`~diffusers.StableUnCLIPImg2ImgPipeline` from precomputed image
    embeddings (one per reference file, computed alone and cached by its content)."""

    def __init__(self, backend: Backend, pipe: Any, device_plan: DevicePlan) -> None:
        super().__init__(backend, pipe, device_plan)
        _row_by_row(pipe.unet)
        self._image_embeds: dict[str, Any] = {}

    def image_embedding(self, path: Path) -> Any:
        """The CLIP image embedding (1-d) of the picture at ``path``, via the pipeline's own
        feature extractor and image encoder."""
        import torch

        from fairytale.images import open_rgb

        digest = sha256_file(path)
        if digest not in self._image_embeds:
            picture = open_rgb(path, what="reference portrait")
            pixels = self.pipe.feature_extractor(images=picture, return_tensors="pt").pixel_values
            encoder = self.pipe.image_encoder
            param = next(encoder.parameters())
            with torch.inference_mode():
                embeds = encoder(pixels.to(param.device, param.dtype)).image_embeds[0]
            self._image_embeds[digest] = embeds
        return self._image_embeds[digest]

    def _let_go(self) -> None:
        super()._let_go()
        self._image_embeds.clear()

    def _conditioning(self, request: PaintRequest) -> Any:
        import torch

        if request.references:
            return blend_embeddings([self.image_embedding(p) for p in request.references])
        width = self.pipe.image_encoder.config.projection_dim
        param = next(self.pipe.image_encoder.parameters())
        return torch.zeros(width, device=param.device, dtype=param.dtype)

    def batches(self, requests: Sequence[PaintRequest]) -> list[Sequence[PaintRequest]]:
        """One noise level per pipeline call (the pipeline takes a single one)."""
        levels = [self._noise_level(r) for r in requests]
        if len(set(levels)) == 1:
            return [requests]
        half = len(requests) // 2
        return [requests[:half], requests[half:]]

    def _noise_level(self, request: PaintRequest) -> int:
        return request.options.get("noise_level", self.backend.settings.noise_level)

    def pipeline_inputs(self, requests: Sequence[PaintRequest]) -> dict[str, Any]:
        """Each page's references' (blended) image embedding, and the batch's noise level."""
        import torch

        # Under model offload (--low-vram) the encoder's embeddings come out on the GPU while its
        # weights (and so a page's zero embedding) rest on the CPU: each goes to the GPU first.
        device = self.pipe._execution_device
        image_embeds = torch.stack([self._conditioning(r).to(device) for r in requests])
        return {"image_embeds": image_embeds, "noise_level": self._noise_level(requests[0])}

    def step_callback(self, after_step: Callable[[int, Any], None]) -> dict[str, Any]:
        """This pipeline still reports steps through the old ``callback``."""

        def step(index: int, timestep: Any, latents: Any) -> None:
            after_step(index + 1, latents)

        return {"callback": step}
