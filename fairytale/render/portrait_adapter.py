"""``--consistency adapter``: pages conditioned on their characters' portraits through IP-Adapter.

IP-Adapter (Ye et al. 2023; hub repo ``h94/IP-Adapter``) adds, beside every cross-attention
layer of an SD 1.x UNet, keys and values for 4 tokens projected from a CLIP image embedding, so
a picture can steer the painting as a prompt does. It is loaded with diffusers' own
``load_ip_adapter`` (registry role ``ip_adapter_sd15``: ``models/ip-adapter_sd15.safetensors``);
its image encoder (OpenCLIP ViT-H/14, role ``ip_adapter_image_encoder``) is loaded by us through
the registry and handed to the pipeline, so both come from the model cache like every model.

* Each portrait's image embedding is computed once (cached by the file's content) and reused
  for every page that shows its character.
* A page showing several characters gets one image per character (all of them act on the whole
  picture until regions confine them); a page showing none is painted with the adapter at scale
  0, which diffusers skips: exactly the plain picture.
* The strength is ``--adapter-scale`` (0: the adapter does nothing; 1: as trained).
* A page's picture does not depend on its batch: the image projection and the adapter's key
  and value layers compute one row at a time (a many-row matrix product rounds differently on
  CPU), and pages are batched with others of the same scale and number of portraits only.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairytale import registry
from fairytale.errors import ModelUnavailableError
from fairytale.files import sha256_file
from fairytale.render.portrait_attention import RegionState, install

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.backends import PaintRequest
    from fairytale.render.devices import DevicePlan
    from fairytale.render.settings import RenderSettings

ADAPTER_ROLE = "ip_adapter_sd15"
ENCODER_ROLE = "ip_adapter_image_encoder"
WEIGHTS = "models/ip-adapter_sd15.safetensors"
ENCODER_FOLDER = "models/image_encoder"
#: the request option that carries a page's adapter scale (present only in adapter mode)
SCALE_OPTION = "adapter_scale"
#: the request option that carries each portrait's region of the picture (None: all of it)
REGIONS_OPTION = "regions"


def adapter_fingerprint(settings: RenderSettings) -> str:
    """Names the IP-Adapter weights and image encoder in a page's cache key."""
    parts = []
    for role, ref, name in ((ADAPTER_ROLE, settings.adapter_model, WEIGHTS), (ENCODER_ROLE, settings.adapter_encoder, ENCODER_FOLDER)):
        source = registry.resolve(role, ref)
        if not source.local:
            parts.append(f"{source.ref}@{source.revision or 'main'}:{name}")
            continue
        path = registry.local_weights_file(source, WEIGHTS) if role == ADAPTER_ROLE else Path(source.ref)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        parts.append("local:" + ",".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files))
    return "|".join(parts)


def _one_row_at_a_time(module: Any) -> None:
    """Make every ``Linear`` inside ``module`` compute its rows one by one (batch invariance)."""
    import torch

    def forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] == 1:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        out = torch.cat([torch.nn.functional.linear(row, self.weight, self.bias) for row in rows.split(1)])
        return out.reshape(*x.shape[:-1], out.shape[-1])

    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear):
            sub.forward = types.MethodType(forward, sub)


class PortraitAdapter:
    """IP-Adapter in one pipeline: loaded on first use; image embeddings once per portrait."""

    def __init__(self, pipe: Any, settings: RenderSettings, device_plan: DevicePlan) -> None:
        self.pipe = pipe
        self.settings = settings
        self.device_plan = device_plan
        self._embeddings: dict[str, Any] = {}
        self._load()

    def _load(self) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        device, dtype = self.device_plan.side_model_placement()
        encoder = registry.load_component(
            ENCODER_ROLE, CLIPVisionModelWithProjection, ENCODER_FOLDER, self.settings.adapter_encoder, torch_dtype=dtype
        )
        self.encoder = encoder.to(device).eval()
        size = int(self.encoder.config.image_size)
        self.processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        self.pipe.register_modules(image_encoder=self.encoder)  # so the loader does not load another
        source = registry.resolve(ADAPTER_ROLE, self.settings.adapter_model)
        if source.local:
            path = registry.local_weights_file(source, WEIGHTS)
            ref, kwargs = str(path.parent), {"subfolder": "", "weight_name": path.name}
        else:
            folder, name = WEIGHTS.rsplit("/", 1)
            ref, kwargs = source.ref, {"subfolder": folder, "weight_name": name}
            if source.revision:
                kwargs["revision"] = source.revision
        # The loader re-creates every other layer's processor from its class with no arguments,
        # which fails for sliced attention (--low-vram): it loads over plain processors, and
        # the other layers get their own back once ours are in (below).
        before = dict(self.pipe.unet.attn_processors)
        self.pipe.unet.set_attn_processor(AttnProcessor2_0())
        try:
            self.pipe.load_ip_adapter(ref, image_encoder_folder=None, **kwargs)
        except (OSError, ValueError, KeyError) as exc:  # missing file, no network, or weights for another UNet
            self.pipe.unet.set_attn_processor(before)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelUnavailableError(registry.unavailable_message(source, reason)) from exc
        # The portraits' tokens are projected here, page by page, and handed to our processors
        # (portrait_attention) directly: the pipeline's own path repeats one set of portraits
        # for every page of a batch. The UNet then runs as a plain text-to-picture UNet.
        unet = self.pipe.unet
        self.projection = unet.encoder_hid_proj.image_projection_layers[0]
        _one_row_at_a_time(self.projection)
        unet.encoder_hid_proj = None
        unet.register_to_config(encoder_hid_dim_type=None)
        self.regions = RegionState()
        self.processors = install(unet, self.regions)
        unet.set_attn_processor(
            {name: p if hasattr(p, "to_k_ip") else before[name] for name, p in unet.attn_processors.items()}
        )
        for processor in self.processors:
            _one_row_at_a_time(processor.to_k_ip)
            _one_row_at_a_time(processor.to_v_ip)
        if self.device_plan.offload:
            self.device_plan.place(self.pipe)  # the loader re-adds offload hooks for the CPU

    def embedding(self, path: Path) -> Any:
        """The CLIP image embedding (1, D) of the portrait at ``path``, computed once per content."""
        import torch

        from fairytale.images import open_rgb

        digest = sha256_file(path)
        if digest not in self._embeddings:
            pixels = self.processor(images=open_rgb(path, what="reference portrait"), return_tensors="pt").pixel_values
            param = next(self.encoder.parameters())
            with torch.inference_mode():
                self._embeddings[digest] = self.encoder(pixels.to(param.device, param.dtype)).image_embeds
        return self._embeddings[digest]

    def inputs(self, requests: Sequence[PaintRequest], guided: bool, aspect: float = 1.0) -> dict[str, Any]:
        """Prepare our processors for a batch whose requests share scale and number of portraits
        (:func:`batch_signature`): the scale, each page's projected portrait tokens (a portrait's
        "no picture" counterpart, the projection of a zero embedding, for the unconditional
        half of guidance) and their regions. Adds no pipeline inputs."""
        import torch

        scale, count = batch_signature(requests[0])
        for processor in self.processors:
            processor.scale = scale
        self.regions.aspect = aspect
        if not count:
            self.regions.tokens, self.regions.regions = None, []
            return {}
        param = next(self.projection.parameters())
        with torch.inference_mode():
            positive = []
            for request in requests:
                embeds = torch.cat([self.embedding(p) for p in request.references]).to(param.device, param.dtype)
                positive.append(self.projection(embeds))  # (portraits, tokens, width)
            positive_t = torch.stack(positive)
            rows = [positive_t]
            if guided:
                blank = self.projection(torch.zeros_like(embeds[:1]))  # (1, tokens, width)
                rows.insert(0, blank.expand_as(positive_t[0])[None].expand_as(positive_t))
            self.regions.tokens = torch.cat(rows)
        self.regions.regions = [list(request.options.get(REGIONS_OPTION) or [None] * count) for request in requests]
        return {}

def batch_signature(request: PaintRequest) -> tuple[float, int]:
    """(scale, number of portraits) of a request: pages are batched only with their equals. A
    request without portraits is painted at scale 0 (the adapter skipped)."""
    scale = float(request.options.get(SCALE_OPTION, 0.0))
    count = len(request.references) if scale else 0
    return (scale if count else 0.0), count
