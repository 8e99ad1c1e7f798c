"""How a Stable Diffusion UNet is prepared for painting: pictures that do not depend on the batch
they are painted in (bit for bit on CPU), the memory layout per device, and work done once per
painting rather than once per step.

Each function changes the modules it is given in place. :func:`prepare` applies what a device
needs, once, when a pipeline is loaded; its layer-by-layer part, :func:`prepare_layers`, is called
again after an adapter (LoRA, IP-Adapter) adds or wraps layers, and leaves layers already prepared
alone.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
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
    if device_plan.device == "cpu":
        # Bit-identical pages whatever their batch is a CPU promise: on a GPU the convolution and
        # attention kernels change with the batch anyway, and the equal-rows check of
        # batch_invariant would make the host wait for the device at every timestep layer.
        linears_per_picture(pipe.unet)
        batch_invariant(pipe.unet)
    if not device_plan.compile_unet:
        # A compiled UNet (CUDA only) does without it: the kept inputs would be re-checked at
        # every call.
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
    few ulps off the same page painted in a batch, so it is paired with itself. The prompt is
    paired once per painting (kept as :func:`text_projections_once` keeps its projections, and
    let go by :func:`forget_text_projections`).
    """
    import torch

    state = {"paired": False}
    # The prompts are paired once per painting, not at every step: the same paired tensor at
    # every step is what lets text_projections_once project it once.
    prompts = unet._fairytale_paired_prompts = PromptResults()

    def before(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        sample = args[0] if args else kwargs["sample"]
        state["paired"] = sample.shape[0] == 1
        if not state["paired"]:
            return None

        def pair(value: Any) -> Any:
            return torch.cat([value, value])

        def twice(value: Any, prompt: bool = False) -> Any:
            if not (torch.is_tensor(value) and value.ndim and value.shape[0] == 1):
                return value
            return prompts.output(0, value, pair) if prompt else pair(value)

        args = tuple(twice(a, prompt=i == 2) for i, a in enumerate(args))
        return args, {k: twice(v, prompt=k == "encoder_hidden_states") for k, v in kwargs.items()}

    def after(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        if not state["paired"]:
            return None
        if isinstance(output, tuple):
            return (output[0][:1], *output[1:])
        output.sample = output.sample[:1]
        return output

    unet.register_forward_pre_hook(before, with_kwargs=True)
    unet.register_forward_hook(after, with_kwargs=True)


def linears_per_picture(model: Any) -> None:
    """Compute a UNet's token-wise linear layers (attention projections, feed-forward) one
    picture at a time, with oneDNN's matrix product where torch has it (also used for the
    safety checker's vision transformer on CPU).

    With more than one thread, the CPU's BLAS splits a matrix product of few rows (an 8×8-token
    layer: 64 rows per picture) differently for 2 pictures than for 4 or 8, so a page's result
    depended on its batch by a few ulps (found on the full-size SD 1.4 at 256², two threads).
    One product per picture has the same shape in every batch, so the same numbers in every
    batch.

    The product is oneDNN's (:func:`onednn_linear`), as torch's compiler uses for linear layers
    on CPU, not the BLAS call of :func:`torch.nn.functional.linear` (MKL's ``sgemm`` in torch's
    CPU builds): on a 2-core AMD Zen 5 CPU (float32, full-size SD 1.4 at 256², batch 8) MKL's
    per-picture products ran these layers' shapes at 65–180 GFLOP/s, oneDNN's at 160–390: all
    of them, 3.46 s of a UNet call with MKL, 1.56 s with oneDNN
    (``tests/benchmarks/bench_linears.py``). The numbers differ from MKL's by float rounding
    (about 1e-6 relative). Call this again after loading an
    adapter (its new layers); layers already switched are left alone.
    """
    import torch

    product = onednn_linear()
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or getattr(module, "_fairytale_per_picture", False):
            continue
        module._fairytale_per_picture = True

        def forward(x: torch.Tensor, layer: torch.nn.Linear = module, whole: Callable[..., torch.Tensor] = module.forward) -> torch.Tensor:
            weight, bias = layer.weight, layer.bias
            if x.ndim != 3 or x.shape[0] < 2 or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
                return whole(x)  # not a batch of pictures, or gradients wanted (neither kernel below has them)
            out = x.new_empty(*x.shape[:-1], layer.out_features)
            onednn = product is not None and x.dtype in (torch.float32, torch.bfloat16) and x.dtype == weight.dtype
            for picture, result in zip(x, out, strict=True):
                if onednn:
                    # oneDNN returns a new tensor: copied into its place while it is still in
                    # the cache (one picture's product is a few MB)
                    result.copy_(product(picture, weight, bias))
                elif bias is None:  # straight into its place
                    torch.mm(picture, weight.t(), out=result)
                else:
                    torch.addmm(bias, picture, weight.t(), out=result)
            return out

        module.forward = forward


def onednn_linear() -> Callable[..., Any] | None:
    """``product(x, weight, bias)``: a linear layer's product on 2-D ``x`` through oneDNN
    (``torch.ops.mkldnn._linear_pointwise``, the kernel torch's compiler emits for linear layers
    on CPU; float32 and bfloat16, no autograd), or None where this torch build lacks it."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return None
    try:
        pointwise = torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None

    def product(x: Any, weight: Any, bias: Any) -> Any:
        return pointwise(x, weight, bias, "none", [], "")

    return product


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


#: how many prompt tensors a UNet's cross-attention layers keep keys and values for (see
#: :func:`text_projections_once`): a painting uses one, or two with ``--consistency attention``
#: (the pages' prompts and the portraits'); the rest is headroom, as with too few entries
#: prompts used in turn would evict each other at every step and none would be kept
KEPT_PROMPTS = 4


class _Prompt:
    """One prompt tensor the cross-attention layers were given, and each layer's result for it."""

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor
        # An inference tensor has no version counter, yet can be changed in place inside
        # inference mode (where pipelines run): it is compared with a copy instead.
        self.inference = tensor.is_inference()
        self.version = None if self.inference else tensor._version
        self.copy = tensor.clone() if self.inference else None
        self.outputs: dict[Hashable, Any] = {}  # per layer (its number in the UNet, or another key)
        self.compared_in: int | None = None  # the UNet call in which its values were found unchanged

    def unchanged(self, tensor: Any, call: int | None = None) -> bool:
        """Whether ``tensor`` is this very tensor, holding the same values. Within one UNet call
        (``call``, when calls are counted) an inference tensor's values are compared once: the
        layers of one call see the same prompt, and on a GPU each comparison waits for the
        device."""
        if tensor is not self.tensor:
            return False
        if not self.inference:
            return tensor._version == self.version
        if call is not None and self.compared_in == call:
            return True
        import torch

        same = torch.equal(tensor, self.copy)
        self.compared_in = call if same else None
        return same


class PromptResults:
    """What was computed from prompt tensors in the current painting (per layer: a
    cross-attention layer's keys or values), for the :data:`KEPT_PROMPTS` prompt tensors given
    last (most recent first)."""

    def __init__(self) -> None:
        self.prompts: list[_Prompt] = []
        self.layers = 0  # layers wrapped so far: each has its number (names move when a LoRA wraps one)
        self.call: int | None = None  # the UNet calls so far, once a hook counts them (new_call)

    def new_call(self, *_: Any) -> None:
        """A UNet call begins (a forward pre-hook)."""
        self.call = (self.call or 0) + 1

    def output(self, layer: Hashable, x: Any, compute: Callable[[Any], Any]) -> Any:
        """``compute(x)``, or what it gave for this very tensor, unchanged, earlier in the painting."""
        prompt = next((p for p in self.prompts if p.tensor is x), None)
        if prompt is not None and not prompt.unchanged(x, self.call):
            self.prompts.remove(prompt)  # changed in place: every layer computes it afresh
            prompt = None
        if prompt is None:
            del self.prompts[KEPT_PROMPTS - 1 :]  # the oldest goes before the new outputs are made
            prompt = _Prompt(x)
            prompt.compared_in = self.call  # its copy was made just now
        else:
            self.prompts.remove(prompt)
        self.prompts.insert(0, prompt)
        if layer not in prompt.outputs:
            prompt.outputs[layer] = compute(x)
        return prompt.outputs[layer]

    def clear(self) -> None:
        self.prompts.clear()


def text_projections_once(unet: Any) -> None:
    """Project each prompt into each cross-attention layer's keys and values once per painting
    instead of once per step.

    The pipeline hands the UNet the same prompt-embeddings tensor at every step, and the
    ``attn2.to_k`` / ``attn2.to_v`` layers turn it into the same keys and values each time. The
    layers keep their results for the last :data:`KEPT_PROMPTS` prompt tensors (a
    :class:`PromptResults` per UNet) and answer again for such a tensor (the same object,
    unchanged: same version, or for an inference tensor, same values); anything else is computed
    as before. Several are kept because ``--consistency attention`` alternates two UNet calls in
    every step, the portraits' pass and the pages', each with its own prompts. The numbers are
    those the layer computes, so pictures do not change. Measured on a full-size SD 1.4 at 256²,
    batch 8, CPU: 0.11 s of a 6.3 s UNet call saved on every step but the first. What is kept is
    let go by :func:`forget_text_projections` when the painting ends.
    """
    kept = getattr(unet, "_fairytale_projections", None)
    if kept is None:
        kept = unet._fairytale_projections = PromptResults()
        unet.register_forward_pre_hook(kept.new_call)  # a prompt's values are compared once a call
    for name, module in unet.named_modules():
        if not name.endswith(("attn2.to_k", "attn2.to_v")) or getattr(module, "_fairytale_once", False):
            continue
        module._fairytale_once = True
        kept.layers += 1
        number = kept.layers

        def forward(x: Any, whole: Callable[..., Any] = module.forward, layer: int = number) -> Any:
            return kept.output(layer, x, whole)

        module.forward = forward


def forget_text_projections(unet: Any) -> None:
    """Let go of the prompt keys and values :func:`text_projections_once` keeps, of the prompts
    :func:`pair_lone_pictures` paired, and of the portraits' keys and values IP-Adapter's
    processors keep (:mod:`fairytale.render.portrait_attention`): call it when a painting ends. The next painting's
    prompts are other tensors, so they would only hold memory until then: on a full-size SD 1.4
    in float32, 16 layers × keys and values × 77 tokens, about 7.7 MB per UNet row (a batch of 4
    with guidance is 8 rows: about 60 MB; attention mode adds a row per distinct portrait of the
    batch, two for a lone one on CPU), for at most :data:`KEPT_PROMPTS` prompt tensors, plus a
    copy of each prompt made in inference mode (0.24 MB a row)."""
    for kept in (getattr(unet, "_fairytale_projections", None), getattr(unet, "_fairytale_paired_prompts", None)):
        if kept is not None:
            kept.clear()
    for processor in getattr(unet, "attn_processors", {}).values():  # IP-Adapter's keep their portraits' keys and values
        if hasattr(processor, "forget_prompts"):
            processor.forget_prompts()
