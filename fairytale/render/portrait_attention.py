"""Our IP-Adapter attention processor: each page's portraits act on that page alone, and each
portrait only inside its character's region of the picture.

diffusers' IP-Adapter path takes one set of portraits and masks for a whole batch (the
pipeline repeats them for every page; masks are downsampled bicubically) and attends to the
image tokens of the whole batch at once, whose rounding on CPU depends on the batch size. This
processor replaces it in the UNet after ``load_ip_adapter`` (it keeps the loaded
``to_k_ip``/``to_v_ip`` weights), reads each row's portrait tokens from :class:`RegionState`
(projected by :mod:`fairytale.render.portrait_adapter`), and:

* computes the text attention exactly as diffusers' ``AttnProcessor2_0`` does (so at scale 0 a
  picture is bit for bit the plain one);
* computes each page's image attention on its own rows (batch invariance);
* multiplies each portrait's contribution by its region on the latent grid, a box given in
  fractions of the picture and rasterised at the attention layer's own resolution by cell
  centres (nearest sampling, no interpolation): outside the box the contribution is exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fairytale.render.unet_tuning import PromptResults

Box = tuple[float, float, float, float]  # left, top, right, bottom, as fractions of the picture


@dataclass
class RegionState:
    """What the processors of one UNet read during a pipeline call: per page, per portrait,
    its region (None: the whole picture), and the picture's aspect (width / height)."""

    regions: list[list[Box | None]] = field(default_factory=list)
    aspect: float = 1.0
    #: (rows, portraits, tokens, width): each UNet row's projected portrait tokens (the
    #: unconditional half of guidance first), or None: no portraits in this call
    tokens: Any = None


def region_mask(box: Box | None, height: int, width: int) -> Any:
    """A (height·width,) 0/1 mask of ``box`` on a height×width grid: a cell is in when its
    centre is (nearest sampling)."""
    import torch

    if box is None:
        return torch.ones(height * width)
    left, top, right, bottom = box
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    inside_y = (ys >= top) & (ys < bottom)
    inside_x = (xs >= left) & (xs < right)
    return (inside_y[:, None] & inside_x[None, :]).reshape(-1).to(torch.float32)


def grid_of(cells: int, aspect: float) -> tuple[int, int]:
    """(height, width) of a latent grid of ``cells`` cells for a picture of ``aspect`` (w/h)."""
    height = max(1, round(math.sqrt(cells / aspect)))
    while cells % height:
        height -= 1
    return height, cells // height


def plain_attention(attn: Any, hidden_states: Any, encoder_hidden_states: Any, attention_mask: Any, temb: Any):
    """diffusers' ``AttnProcessor2_0`` up to the output projection, keeping what our processors
    add to: (merged heads output, query, key, value, residual, (channel, height, width) of a
    4-d input or None)."""
    import torch.nn.functional as F

    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    shape = None
    if input_ndim == 4:
        batch_size, channel, height, width = hidden_states.shape
        shape = (channel, height, width)
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
    batch_size, sequence_length, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)
    value = attn.to_v(encoder_hidden_states)
    inner_dim = key.shape[-1]
    head_dim = inner_dim // attn.heads
    query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
    out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
    return out, query, key, value, residual, shape


def finish_attention(attn: Any, out: Any, residual: Any, shape: tuple[int, int, int] | None) -> Any:
    """The rest of ``AttnProcessor2_0`` after :func:`plain_attention` (and what was added to
    its output): output projection, shape, residual, rescaling."""
    out = attn.to_out[0](out)
    out = attn.to_out[1](out)
    if shape is not None:
        out = out.transpose(-1, -2).reshape(out.shape[0], *shape)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class PortraitAttnProcessor:
    """Cross-attention with text and, per page, its portraits' IP-Adapter tokens (see module)."""

    def __init__(self, loaded: Any, state: RegionState) -> None:
        self.to_k_ip = loaded.to_k_ip[0]
        self.to_v_ip = loaded.to_v_ip[0]
        self.scale = 1.0
        self.state = state
        # The portraits' tokens stay the same tensor for a whole painting: each portrait's keys
        # and values are projected once per painting, not at every step (full-size SD 1.4, batch
        # of 4 pages with guidance, 2 portraits each: ~6 MB over all layers, let go when the
        # painting ends by unet_tuning.forget_text_projections).
        self._kept = PromptResults()

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any = None,
        attention_mask: Any = None,
        temb: Any = None,
        **kwargs: Any,
    ) -> Any:
        portraits = self.state.tokens
        out, query, _, _, residual, shape = plain_attention(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb
        )
        if portraits is not None and self.scale != 0:
            out = out + self.portrait_attention(query, portraits, attn.heads, query.shape[-1])
        return finish_attention(attn, out, residual, shape)

    def portrait_attention(self, query: Any, portraits: Any, heads: int, head_dim: int) -> Any:
        """The portraits' contribution, page by page and portrait by portrait, each times its
        region and the scale: (batch, cells, heads·head_dim)."""
        import torch
        import torch.nn.functional as F

        batch, _, cells, _ = query.shape
        grid = grid_of(cells, self.state.aspect)
        # Under model offload the UNet comes to the GPU only for its own call: follow the query.
        portraits = portraits.to(query.device, query.dtype)
        for layer in (self.to_k_ip, self.to_v_ip):
            if layer.weight.device != query.device or layer.weight.dtype != query.dtype:
                layer.to(query.device, query.dtype)
        regions = self.state.regions
        # per (row of tokens, portrait): keys and values, kept for this tokens tensor on this device
        # (not in a compiled UNet (--compile): the graph would break on the look-up at every call)
        kept = (
            {}
            if torch.compiler.is_compiling()
            else self._kept.output((query.device, query.dtype, heads), self.state.tokens, lambda tokens: {})
        )
        # rows: the unconditional half of guidance first, then the pages (as the pipeline stacks them)
        pages = len(regions) or batch
        rows = []
        for row in range(batch):
            page = row % pages
            total = torch.zeros(cells, heads * head_dim, dtype=query.dtype, device=query.device)
            for index in range(portraits.shape[1]):
                source = row % portraits.shape[0]  # a lone picture paired with itself (CPU) reuses its row
                if (source, index) not in kept:
                    tokens = portraits[source : source + 1, index]
                    kept[(source, index)] = (
                        self.to_k_ip(tokens).view(1, -1, heads, head_dim).transpose(1, 2),
                        self.to_v_ip(tokens).view(1, -1, heads, head_dim).transpose(1, 2),
                    )
                k, v = kept[(source, index)]
                out = F.scaled_dot_product_attention(query[row : row + 1], k, v, dropout_p=0.0, is_causal=False)
                out = out.transpose(1, 2).reshape(cells, heads * head_dim).to(query.dtype)
                box = regions[page][index] if regions and index < len(regions[page]) else None
                if box is not None:
                    out = out * region_mask(box, *grid).to(out.device, out.dtype)[:, None]
                total = total + out
            rows.append(total)
        return self.scale * torch.stack(rows)

    def forget_prompts(self) -> None:
        """Let go of the portraits' keys and values kept for the painting that ended."""
        self._kept.clear()


def install(unet: Any, state: RegionState) -> list[PortraitAttnProcessor]:
    """Replace diffusers' IP-Adapter processors in ``unet`` by ours (same weights)."""
    processors = {}
    ours = []
    for name, processor in unet.attn_processors.items():
        if hasattr(processor, "to_k_ip"):
            processor = PortraitAttnProcessor(processor, state)
            ours.append(processor)
        processors[name] = processor
    unet.set_attn_processor(processors)
    return ours
