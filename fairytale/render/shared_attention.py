"""``--consistency attention``: a page's self-attention also looks at its characters' portraits.

No extra weights: while a page is painted, every self-attention layer (``attn1``) of the UNet
attends, besides the page's own keys and values, to those of each of its characters' reference
portraits at the same denoising step, and only inside that character's region of the picture.

* **Portrait pass.** Before each UNet call of a batch, the batch's distinct portraits go through
  the UNet once (in a canonical order, so a portrait's pass never depends on the batch): each
  portrait's latent (its picture at the page's size through the VAE encoder, once per file
  content) is noised to the call's timestep with diffusers' own forward process
  (``DDPMScheduler.add_noise``: the variance-preserving form every SD scheduler hands the UNet),
  with noise from the portrait's recorded seed, and conditioned on the portrait's recorded
  prompt. The self-attention layers record the portraits' keys and values.
* **Page pass.** Each ``attn1`` computes the plain attention exactly as diffusers'
  ``AttnProcessor2_0`` does; then, page row by page row (batch invariance), for each of the
  page's characters, the attention of the region's queries over ``[page K; portrait K]`` /
  ``[page V; portrait V]``, and adds ``strength × (shared − plain)`` there. Outside every region
  nothing is added, and at strength 0 (or for a page without portraits) the picture is bit for
  bit the plain one. Everything a page adds is computed on its own rows, so pages with other
  portraits, strengths or none share a batch freely (no batch signature, unlike IP-Adapter).
  With guidance, only the conditional half shares, and the layers at the full latent resolution
  stay plain (why: :meth:`SharedAttention.inputs`).

Regions are those of the adapter (:func:`fairytale.render.backends.common.page_regions`; one
portrait acts on the whole picture), rasterised the same way
(:func:`fairytale.render.portrait_attention.region_mask`). IP-Adapter's processors sit on the
cross-attention layers (``attn2``), these on ``attn1``: both modes combine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairytale.files import sha256_file
from fairytale.render.portrait_attention import Box, finish_attention, grid_of, plain_attention, region_mask

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.backends import PaintRequest

#: the request option that carries a page's attention strength (present only in attention mode)
STRENGTH_OPTION = "attention_strength"
#: the request option that carries, per portrait of the page, the [seed, prompt] of its pass
PORTRAITS_OPTION = "attention_portraits"
#: the request option with each portrait's region (shared with the adapter)
REGIONS_OPTION = "regions"

PortraitKey = tuple[str, int, str]  # content digest, seed, prompt


@dataclass
class SharedState:
    """What the ``attn1`` processors of one UNet read during a pipeline call."""

    #: "off" (plain attention), "record" (the portrait pass) or "share" (the pages' pass)
    mode: str = "off"
    aspect: float = 1.0  # the picture's width / height
    #: per page of the call: its strength and, per portrait, (index in the portrait pass, region)
    pages: list[tuple[float, list[tuple[int, Box | None]]]] = field(default_factory=list)
    #: whether the call's first half of rows is guidance's unconditional half (left plain)
    guided: bool = False
    #: cells of the picture's full latent grid, whose layers are left plain (0: share at every layer)
    full_cells: int = 0


class SharedAttnProcessor:
    """Self-attention that records the portraits' keys and values, then lets each page's
    regions attend to them too (see the module docstring)."""

    def __init__(self, state: SharedState | None = None) -> None:
        # diffusers' load_ip_adapter rebuilds every self-attention processor by calling its class
        # with no arguments: such a one has a state of its own, always "off" (plain attention),
        # until SharedAttention.install puts ours back.
        self.state = state if state is not None else SharedState()
        self.keys: Any = None  # (portraits, heads, cells, head_dim) of the last portrait pass
        self.values: Any = None
        self._regions: dict[tuple[Box | None, tuple[int, int]], tuple[int, int, int, int]] = {}

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any = None,
        attention_mask: Any = None,
        temb: Any = None,
        **kwargs: Any,
    ) -> Any:
        out, query, key, value, residual, shape = plain_attention(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb
        )
        if self.state.mode == "record":
            full = self.state.full_cells and key.shape[2] == self.state.full_cells
            self.keys, self.values = (None, None) if full else (key, value)
        elif self.state.mode == "share" and self.keys is not None:
            out = self.share(out, query, key, value)
        return finish_attention(attn, out, residual, shape)

    def share(self, plain: Any, query: Any, key: Any, value: Any) -> Any:
        """``plain`` (batch, cells, heads·head_dim) with, row by row, each portrait's shared
        attention mixed in by the page's strength inside its region; other cells untouched.

        A region rasterised by cell centres is a rectangle of the latent grid, so its queries
        and its output are plain slices (no gather or scatter), and each portrait's keys and
        values sit once per call in a buffer behind which each row's own are copied."""
        import torch
        import torch.nn.functional as F

        batch, heads, cells, head_dim = query.shape
        if self.state.full_cells and cells == self.state.full_cells:
            return plain  # full-resolution layers stay plain (see SharedAttention.inputs)
        height, width = grid_of(cells, self.state.aspect)
        pages = self.state.pages
        out = plain.clone()
        grid_out = out.view(batch, height, width, heads * head_dim)
        grid_plain = plain.view(batch, height, width, heads * head_dim)
        grid_query = query.reshape(batch, heads, height, width, head_dim)
        keys: dict[int, tuple[Any, Any]] = {}
        for row in range(batch):
            # rows: the unconditional half of guidance first, then the pages (as the pipeline
            # stacks them); a lone picture paired with itself (CPU) is row 0 twice
            strength, portraits = pages[row % len(pages)]
            if not strength or not portraits or (self.state.guided and row < batch // 2):
                continue
            for index, box in portraits:
                top, bottom, left, right = self._rectangle(box, (height, width))
                if top >= bottom or left >= right:
                    continue
                if index not in keys:
                    keys[index] = tuple(
                        torch.cat([mine[:1], theirs[index : index + 1].to(mine.device, mine.dtype)], dim=2)
                        for mine, theirs in ((key, self.keys), (value, self.values))
                    )
                k, v = keys[index]
                k[:, :, :cells].copy_(key[row : row + 1])
                v[:, :, :cells].copy_(value[row : row + 1])
                q = grid_query[row : row + 1, :, top:bottom, left:right].reshape(1, heads, -1, head_dim)
                shared = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
                shared = shared.transpose(1, 2).reshape(bottom - top, right - left, heads * head_dim).to(plain.dtype)
                # in place on the fresh result: out += strength × (shared − plain), no temporaries
                grid_out[row, top:bottom, left:right] += shared.sub_(grid_plain[row, top:bottom, left:right]).mul_(strength)
        return out

    def _rectangle(self, box: Box | None, grid: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) cell bounds of ``box`` on ``grid``, rasterised as
        :func:`region_mask` does (the whole grid for None)."""
        key = (box, grid)
        if key not in self._regions:
            if box is None:
                self._regions[key] = (0, grid[0], 0, grid[1])
            else:
                mask = region_mask(box, *grid).view(grid).bool()
                rows, columns = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
                if not len(rows) or not len(columns):
                    self._regions[key] = (0, 0, 0, 0)
                else:
                    self._regions[key] = (int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1)
        return self._regions[key]


class _PortraitPassDone(Exception):
    """Raised at the full-resolution up block during the portrait pass: every layer that shares
    has recorded its keys and values, so the rest of the UNet is not computed."""


class SharedAttention:
    """Shared attention in one pipeline: installs the processors and the UNet hook once, keeps
    each portrait's latent and noise, and prepares every batch (:meth:`inputs`).

    ``embed`` encodes a prompt (the illustrator's cache); ``portrait_pass`` is a context in which
    the portrait pass runs (the illustrator mutes IP-Adapter there: a portrait is not steered by
    the pages' portraits)."""

    def __init__(
        self,
        pipe: Any,
        embed: Callable[[str], Any],
        portrait_pass: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self.pipe = pipe
        self.embed = embed
        self.portrait_pass = portrait_pass
        self.state = SharedState()
        self.processors: list[SharedAttnProcessor] = []
        self._portraits: list[tuple[PortraitKey, Path]] = []
        self._latents: dict[tuple[str, int, int], Any] = {}
        self._noise: dict[tuple[int, int, int], Any] = {}
        self._noiser: Any = None
        self._embeds: Any = None  # the portraits' prompts, one row each, in the pass's order
        self._latent_size = (0, 0)
        self._recording = False
        #: UNet passes of portraits so far, and the seconds they took (for the benchmark)
        self.portrait_passes = 0
        self.portrait_seconds = 0.0
        self.install()
        # First of the UNet's pre-hooks: the portrait pass must be done before the hooks that
        # reshape the page call (pairing a lone picture on CPU) look at it.
        pipe.unet.register_forward_pre_hook(self._before_unet, with_kwargs=True, prepend=True)
        # Full-resolution layers do not share, so the portrait pass ends where the last up
        # block (back at the full latent resolution) begins.
        if getattr(pipe.unet, "up_blocks", None):
            pipe.unet.up_blocks[-1].register_forward_pre_hook(self._stop_portrait_pass)

    def _stop_portrait_pass(self, module: Any, args: Any) -> None:
        if self._recording:
            raise _PortraitPassDone

    def install(self) -> None:
        """Put our processors on every ``attn1`` layer, keeping every other processor (the
        adapter's on ``attn2``). Called for every batch: loading IP-Adapter, or attention
        slicing, replaces all processors, and ours come back here."""
        unet = self.pipe.unet
        current = unet.attn_processors
        mine = [p for name, p in current.items() if name.endswith("attn1.processor")]
        if self.processors and all(isinstance(p, SharedAttnProcessor) and p.state is self.state for p in mine):
            return
        self.processors = []
        processors = {}
        for name, processor in current.items():
            if name.endswith("attn1.processor"):
                processor = SharedAttnProcessor(self.state)
                self.processors.append(processor)
            processors[name] = processor
        unet.set_attn_processor(processors)

    def inputs(self, requests: Sequence[PaintRequest], width: int, height: int, guided: bool = False) -> dict[str, Any]:
        """Prepare the processors for a batch of width×height pictures: each page's strength and
        portraits (with their regions), and the batch's distinct portraits in a canonical order,
        with their latents and prompts. Adds no pipeline inputs.

        Where pages share (both choices measured on the full-size SD 1.4, CPU, 256², 4 pages × 2
        characters, 6 steps: sharing everywhere cost 2.65 × seed mode):

        * ``guided`` (classifier-free guidance on): only the conditional half of the rows shares;
          the unconditional half stays plain, so guidance itself pushes towards the portrait (the
          "style fidelity 1" choice of reference-only attention) at half the cost;
        * the self-attention layers at the picture's full latent resolution stay plain: their
          attention costs grow with the square of the cells (at 512², 4,096 queries over 8,192
          keys per page and portrait) and carry texture more than who is drawn, which the
          coarser layers (and the portrait pass through them) decide."""
        import torch
        from diffusers import DDPMScheduler

        self.install()
        distinct: dict[PortraitKey, Path] = {}
        pages: list[tuple[float, list[tuple[PortraitKey, Box | None]]]] = []
        for request in requests:
            strength = float(request.options.get(STRENGTH_OPTION, 0.0))
            described = request.options.get(PORTRAITS_OPTION) or []
            regions = request.options.get(REGIONS_OPTION) or [None] * len(request.references)
            entries: list[tuple[PortraitKey, Box | None]] = []
            if strength:
                for path, (seed, prompt), box in zip(request.references, described, regions, strict=True):
                    key = (sha256_file(path), int(seed), str(prompt))
                    distinct.setdefault(key, path)
                    entries.append((key, tuple(box) if box is not None else None))
            pages.append((strength, entries))
        order = sorted(distinct)
        index = {key: i for i, key in enumerate(order)}
        self._portraits = [(key, distinct[key]) for key in order]
        # Latents and prompts now (each once), not between two UNet calls, where under model
        # offload the VAE or the text encoder would be brought back to the GPU.
        scale = self.pipe.vae_scale_factor
        self._latent_size = (height // scale, width // scale)
        for (digest, _, _), path in self._portraits:
            self._latent(digest, path, *self._latent_size)
        # Joined once per batch: the same tensor at every step lets the cross-attention layers
        # project it once per painting (unet_tuning.text_projections_once), as the pages' prompts.
        embeds = [self.embed(prompt) for (_, _, prompt), _ in self._portraits]
        self._embeds = torch.cat(embeds) if embeds else None
        self.state.pages = [(strength, [(index[k], box) for k, box in entries]) for strength, entries in pages]
        self.state.aspect = width / height
        self.state.guided = guided
        self.state.full_cells = self._latent_size[0] * self._latent_size[1]
        self.state.mode = "share" if order else "off"
        self._noiser = DDPMScheduler.from_config(self.pipe.scheduler.config)
        return {}

    # -- the portrait pass ----------------------------------------------------------------

    def _before_unet(self, unet: Any, args: tuple, kwargs: dict) -> None:
        """Before a page call: run the batch's portraits through the UNet at its timestep, the
        processors recording their keys and values."""
        if self._recording or self.state.mode == "off" or not self._portraits:
            return
        import torch

        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        if torch.is_tensor(timestep) and timestep.ndim:
            timestep = timestep[:1]
        height, width = self._latent_size
        latents = torch.cat([self._noised(key, path, height, width, timestep) for key, path in self._portraits])
        latents = latents.to(sample.device, sample.dtype)
        embeds = self._embeds.to(sample.device)
        extra = {}
        if kwargs.get("timestep_cond") is not None:  # LCM's guidance embedding: one row, as for the pages
            extra["timestep_cond"] = kwargs["timestep_cond"][:1].expand(len(self._portraits), -1)
        for processor in self.processors:  # a layer the pass does not reach shares nothing
            processor.keys = processor.values = None
        self._recording = True
        self.state.mode = "record"
        started = time.perf_counter()
        try:
            with self.portrait_pass(), contextlib.suppress(_PortraitPassDone):
                unet(latents, timestep, encoder_hidden_states=embeds, return_dict=False, **extra)
        finally:
            self._recording = False
            self.state.mode = "share"
        self.portrait_passes += 1
        self.portrait_seconds += time.perf_counter() - started

    def _noised(self, key: PortraitKey, path: Path, height: int, width: int, timestep: Any) -> Any:
        """The portrait's latent noised to ``timestep`` (float32, on the latent's device)."""
        import torch

        digest, seed, _ = key
        latent = self._latent(digest, path, height, width)
        if (seed, height, width) not in self._noise:
            generator = torch.Generator("cpu").manual_seed(seed)
            self._noise[(seed, height, width)] = torch.randn(latent.shape, generator=generator, dtype=torch.float32)
        noise = self._noise[(seed, height, width)].to(latent.device)
        steps = self._noiser.config.num_train_timesteps
        t = torch.as_tensor(timestep).reshape(-1)[:1].float().round().long().clamp(0, steps - 1).to(latent.device)
        return self._noiser.add_noise(latent, noise, t)

    def _latent(self, digest: str, path: Path, height: int, width: int) -> Any:
        """The portrait's VAE latent (mean × scaling factor, float32) for a latent grid of
        height×width, computed once per content and size."""
        if (digest, height, width) not in self._latents:
            import torch

            from fairytale.images import open_rgb

            vae = self.pipe.vae
            scale = self.pipe.vae_scale_factor
            picture = open_rgb(path, what="reference portrait")
            pixels = self.pipe.image_processor.preprocess(picture, height=height * scale, width=width * scale)
            device = self.pipe._execution_device
            with torch.inference_mode():
                encoded = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mean * vae.config.scaling_factor
            self._latents[(digest, height, width)] = encoded.float()
        return self._latents[(digest, height, width)]
