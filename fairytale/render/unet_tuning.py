"""How a Stable Diffusion UNet is prepared for painting: pictures that do not depend on the batch
they are painted in (bit for bit on CPU), the memory layout per device, and work done once per
painting rather than once per step.

Each function changes the modules it is given in place. :func:`prepare` applies what a device
needs, once, when a pipeline is loaded; its layer-by-layer part, :func:`prepare_layers`, is called
again after an adapter (LoRA, IP-Adapter) adds or wraps layers, and leaves layers already prepared
alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.devices import DevicePlan


def prepare(pipe: Any, device_plan: DevicePlan) -> None:
    """Everything below that ``device_plan``'s device needs, on a pipeline just placed there."""
    prepare_layers(pipe, device_plan)
    if device_plan.device == "cpu":
        pair_lone_pictures(pipe.unet)  # hooks on the whole UNet: once


def prepare_layers(pipe: Any, device_plan: DevicePlan) -> None:
    """The layer-by-layer part of :func:`prepare`; call it again after an adapter added or
    wrapped layers (a LoRA wraps the timestep layers and brings convolutions of its own)."""
    channels_last(pipe, device_plan)
    batch_invariant(pipe.unet)
    if device_plan.device == "cpu":
        linears_per_picture(pipe.unet)
    if not device_plan.compile_unet:  # a compiled graph would re-check the kept inputs at every call
        text_projections_once(pipe.unet)


def batch_invariant(unet: Any) -> None:
    """Make the UNet's per-page results independent of the batch they are computed in.

    On CPU, BLAS picks a different matrix kernel for a 2-row product than for an 8-row one, so
    the timestep embedding (the same row for every page in a batch) comes out a few ulps apart
    with different batch sizes, and the difference reaches the picture. Here those small
    layers of the timestep path compute one row and broadcast it when all rows are equal,
    which is also less work. A layer a LoRA adapter wraps (drafts) is hooked as a whole, so
    the adapter's branch computes one row too; call this again after loading one (layers
    already hooked are left alone). (The VAE, the other such place, is checked by the tests
    to decode a batch exactly as it decodes each picture alone.)
    """
    import torch

    def shares_rows(x: torch.Tensor) -> bool:
        return x.ndim == 2 and x.shape[0] > 1 and torch.equal(x, x[:1].expand_as(x))

    for name, module in unet.named_modules():
        in_time_path = (name.startswith("time_embedding.") and name.count(".") == 1) or name.endswith("time_emb_proj")
        linear_like = isinstance(module, torch.nn.Linear) or hasattr(module, "base_layer")  # peft wraps a Linear
        if not (in_time_path and linear_like) or getattr(module, "_fairytale_one_row", False):
            continue
        module._fairytale_one_row = True
        rows: dict[str, int | None] = {"n": None}

        def before(mod, args, rows=rows):
            rows["n"] = args[0].shape[0] if shares_rows(args[0]) else None
            return (args[0][:1], *args[1:]) if rows["n"] else None

        def after(mod, args, output, rows=rows):
            return output.expand(rows["n"], -1) if rows["n"] else None

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


def pair_lone_pictures(unet: Any) -> None:
    """Run a UNet call on one picture as a call on two copies of it, and keep the first.

    On CPU the convolution kernels chosen for a batch of one differ from those for two or more,
    which give the same result for a picture whatever else is in the batch. Classifier-free
    guidance always doubles the batch; a draft (no guidance) of a page painted alone would be a
    few ulps off the same page painted in a batch, so it is paired with itself.
    """
    import torch

    state = {"paired": False}

    def before(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        sample = args[0] if args else kwargs["sample"]
        state["paired"] = sample.shape[0] == 1
        if not state["paired"]:
            return None

        def twice(value: Any) -> Any:
            return torch.cat([value, value]) if torch.is_tensor(value) and value.ndim and value.shape[0] == 1 else value

        return tuple(twice(a) for a in args), {k: twice(v) for k, v in kwargs.items()}

    def after(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        if not state["paired"]:
            return None
        if isinstance(output, tuple):
            return (output[0][:1], *output[1:])
        output.sample = output.sample[:1]
        return output

    unet.register_forward_pre_hook(before, with_kwargs=True)
    unet.register_forward_hook(after, with_kwargs=True)


def linears_per_picture(unet: Any) -> None:
    """Compute the UNet's token-wise linear layers (attention projections, feed-forward) one
    picture at a time.

    With more than one thread, the CPU's BLAS splits a matrix product of few rows (an 8×8-token
    layer: 64 rows per picture) differently for 2 pictures than for 4 or 8, so a page's result
    depended on its batch by a few ulps (found on the full-size SD 1.4 at 256², two threads).
    One product per picture has the same shape in every batch, and gives the same numbers as
    :func:`torch.nn.functional.linear` on that picture alone. The cost, measured on that model
    (batch 8, CPU): about 5 % of a UNet call, the price of pictures that do not depend on their
    batch. Call this again after loading an adapter (its new
    layers); layers already switched are left alone.
    """
    import torch

    for module in unet.modules():
        if not isinstance(module, torch.nn.Linear) or getattr(module, "_fairytale_per_picture", False):
            continue
        module._fairytale_per_picture = True

        def forward(x: torch.Tensor, layer: torch.nn.Linear = module, whole: Callable[..., torch.Tensor] = module.forward) -> torch.Tensor:
            if x.ndim != 3 or x.shape[0] < 2:
                return whole(x)
            # each picture's product straight into its part of one output: no copy to join them
            out = x.new_empty(*x.shape[:-1], layer.out_features)
            weight = layer.weight.t()
            for picture, result in zip(x, out, strict=True):
                if layer.bias is None:
                    torch.mm(picture, weight, out=result)
                else:
                    torch.addmm(layer.bias, picture, weight, out=result)
            return out

        module.forward = forward


def channels_last(pipe: Any, device_plan: DevicePlan) -> None:
    """Keep the VAE's convolution weights, and the UNet's unless it paints in float32 on a CPU,
    in channels-last memory.

    Measured on a full-size SD 1.4 at 256² on an AVX-512/AMX CPU (one thread, CPU seconds per
    batch-8 UNet call, layouts alternated in one process): in float32 channels-last is slower
    (13.4 s vs 11.5 s), in bfloat16 faster (2.7 s vs 3.2 s); the VAE decode is a little faster
    (16.5 s vs 17.6 s for four pictures). On CUDA channels-last feeds the tensor cores. Batch
    invariance does not depend on it: the VAE decodes one picture at a time, and the UNet never
    sees a batch of one on CPU (:func:`pair_lone_pictures`).
    """
    import torch

    unet_too = device_plan.device != "cpu" or device_plan.dtype != "float32"
    for model in (pipe.unet, pipe.vae) if unet_too else (pipe.vae,):
        model.to(memory_format=torch.channels_last)


def text_projections_once(unet: Any) -> None:
    """Project the prompt into each cross-attention layer's keys and values once per painting
    instead of once per step.

    The pipeline hands the UNet the same prompt-embeddings tensor at every step, and the
    ``attn2.to_k`` / ``attn2.to_v`` layers turn it into the same keys and values each time. Each
    such layer keeps its last input and output and answers again for that very tensor (the
    same object, unchanged); anything else is computed as before. The numbers are those the
    layer computes, so pictures do not change. Measured on a full-size SD 1.4 at 256², batch 8,
    CPU: 0.11 s of a 6.3 s UNet call saved on every step but the first. What a layer keeps is let
    go by :func:`forget_text_projections` when the painting ends.
    """
    for name, module in unet.named_modules():
        if not name.endswith(("attn2.to_k", "attn2.to_v")) or getattr(module, "_fairytale_once", False):
            continue
        module._fairytale_once = True
        kept: dict[str, Any] = {}
        module._fairytale_kept = kept

        def forward(x: Any, whole: Callable[..., Any] = module.forward, kept: dict[str, Any] = kept) -> Any:
            version = None if x.is_inference() else x._version  # inference tensors cannot change in place
            if kept.get("input") is x and kept["version"] == version:
                return kept["output"]
            kept.clear()  # the old tensors go before the new output is made
            output = whole(x)
            kept.update(input=x, version=version, output=output)
            return output

        module.forward = forward


def forget_text_projections(unet: Any) -> None:
    """Let go of the prompt keys and values :func:`text_projections_once` keeps: call it when a
    painting ends. The next painting's prompt is another tensor, so they would only hold memory
    until then: on a full-size SD 1.4 in float32, 16 layers × keys and values × 77 tokens, about
    7.7 MB per UNet row (a batch of 4 with guidance is 8 rows: about 60 MB)."""
    for module in unet.modules():
        kept = getattr(module, "_fairytale_kept", None)
        if kept is not None:
            kept.clear()
