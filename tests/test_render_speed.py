"""The faster final paint: the memory layout chosen per device (channels-last VAE; the UNet
channels-last on GPUs only, where it is faster) keeps today's pictures (within a stated
tolerance) and keeps them independent of the batch; precision, --compile and threads are
planned per device; drafts through the CLI tell the user what a final render does."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.errors import FairytaleError
from fairytale.render import load_illustrator
from fairytale.render.backends import PaintRequest
from fairytale.render.devices import DevicePlan, plan_device
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    tiny_settings,
    write_plan,
)

#: Largest change of a pixel (0-255) against a plain diffusers pipeline in the default memory
#: layout: channels-last convolutions round differently, by a few ulps.
PIXEL_TOLERANCE = 2


def test_pictures_stay_within_a_pixel_or_two_of_a_plain_pipeline_in_the_default_layout(tiny_sd):
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from fairytale.render.schedulers import SCHEDULERS

    illustrator = load_illustrator(tiny_settings(tiny_sd, steps=3))
    # on CPU the UNet stays in the default layout (faster there), the VAE goes channels-last
    assert illustrator.pipe.unet.conv_in.weight.is_contiguous()
    assert illustrator.pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    requests = [PaintRequest(1, "a lighthouse by the sea", "blurry", 11), PaintRequest(2, "a red kite", "dark", 12)]
    ours = illustrator.paint(requests)

    plain = StableDiffusionPipeline.from_pretrained(tiny_sd)  # a fresh load, default memory layout
    plain.scheduler = DPMSolverMultistepScheduler.from_config(plain.scheduler.config, **SCHEDULERS["dpm++"][1])
    plain.set_progress_bar_config(disable=True)
    for request, picture in zip(requests, ours, strict=True):
        with torch.inference_mode():
            today = plain(
                request.prompt, negative_prompt=request.negative_prompt, num_inference_steps=3, guidance_scale=7.5,
                width=64, height=64, generator=torch.Generator("cpu").manual_seed(request.seed),
            ).images[0]
        difference = np.abs(np.asarray(picture, dtype=np.int16) - np.asarray(today, dtype=np.int16)).max()
        assert difference <= PIXEL_TOLERANCE, (request.page, difference)


def test_a_lone_picture_is_painted_as_in_a_batch(tiny_sd):
    """Without guidance (drafts) a batch of one would take other CPU kernels than a batch of two."""
    illustrator = load_illustrator(tiny_settings(tiny_sd, steps=2, guidance=1.0))
    requests = [PaintRequest(1, "a lighthouse", "", 5), PaintRequest(2, "a kite", "", 6), PaintRequest(3, "a boat", "", 7)]
    together = illustrator.paint(requests)
    calls = illustrator.unet_calls
    alone = [illustrator.paint([r])[0] for r in requests]
    assert illustrator.unet_calls - calls == 3 * 2  # one UNet call per step, however it runs inside
    for a, b in zip(together, alone, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_precision_threads_and_compile_are_planned_per_device(monkeypatch):
    import torch

    import fairytale.render.devices as devices

    assert plan_device("cpu").threads is None  # OMP_NUM_THREADS is set for the tests: left alone
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(devices, "physical_cores", lambda: 6)
    assert plan_device("cpu").threads == 6 and "6 threads" in plan_device("cpu").describe()
    with pytest.raises(FairytaleError, match="fp16 needs a CUDA GPU"):
        plan_device("cpu", precision="fp16")
    with pytest.raises(FairytaleError, match="--compile is for CUDA"):
        plan_device("cpu", compile_unet=True)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    with pytest.raises(FairytaleError, match="no native bfloat16"):
        plan_device("cpu", precision="bf16")
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert plan_device("cpu", precision="bf16").torch_dtype == torch.bfloat16
    assert plan_device("cpu", precision="fp32").dtype == "float32"
    with pytest.raises(FairytaleError, match="Unknown precision"):
        tiny_settings("x", precision="fp8")


def test_compile_and_threads_are_applied_when_the_pipeline_is_placed(monkeypatch):
    import torch

    class Unet:
        compiled = 0

        def compile(self):
            self.compiled += 1

    class Pipe:
        unet = Unet()

        def to(self, device):
            pass

    monkeypatch.setattr(torch, "set_num_threads", lambda n: setattr(Pipe, "threads", n))
    plan = DevicePlan("cuda", "float16", 4, low_vram=False, offload=False, compile_unet=True)
    pipe = Pipe()
    plan.place(pipe)
    plan.place(pipe)  # placed again (after loading tokens): compiled once
    assert pipe.unet.compiled == 1 and "compiled UNet" in plan.describe()
    DevicePlan("cpu", "float32", 4, low_vram=False, offload=False, threads=3).place(Pipe())
    assert Pipe.threads == 3


def test_drafts_through_the_cli(tiny_sd, tiny_models, tmp_path):
    plan_file = write_plan(tmp_path, make_plan(2))
    common = ["render", plan_file, "-o", tmp_path / "b.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 2, "--device", "cpu"]
    draft = CliRunner().invoke(app, [str(a) for a in [*common, "--draft", "--draft-lora", tiny_models("lcm_lora")]])
    assert draft.exit_code == 0, draft.output
    text = " ".join(draft.stderr.split())
    assert "4 LCM steps" in text and "not an enlargement of its draft" in text
    final = CliRunner().invoke(app, [str(a) for a in common])
    assert final.exit_code == 0, final.output
    assert "were drafts and are now painted in full" in " ".join(final.stderr.split())
    refused = CliRunner().invoke(app, [str(a) for a in [*common, "--draft", "--draft-steps", 0]])
    assert refused.exit_code != 0 and "--draft-steps must be between 1 and 50" in refused.stderr


def test_token_linears_compute_each_picture_alone_so_two_threads_keep_pictures_batch_invariant():
    """With two threads, MKL splits a 128-row product (2 pictures × 64 tokens, the 8×8 layers
    of SD 1.4 at 256²) differently from a 256-row one: found on the full-size UNet, where a
    page came out a few ulps apart in a batch of 1 and of 2 pages. Each picture's product is
    oneDNN's (faster than MKL on the CPUs measured: tests/benchmarks/bench_linears.py)."""
    import copy

    import torch

    from fairytale.render import unet_tuning

    product = unet_tuning.onednn_linear()
    assert product is not None, "this torch build has no oneDNN linear product: the CPU render would be slower"
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(1280, 1280), torch.nn.GELU(), torch.nn.Linear(1280, 1280, bias=False))
    plain = copy.deepcopy(block)
    unet_tuning.linears_per_picture(block)
    unet_tuning.linears_per_picture(block)  # again (after an adapter is loaded): each layer switched once
    products = []

    def recorder(name, function):
        def record(*args, **kwargs):
            products.append((name, tuple(args[0].shape)))
            return function(*args, **kwargs)

        return record

    tokens = torch.randn(4, 64, 1280)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            four = block(tokens)
            two = torch.cat([block(tokens[:2]), block(tokens[2:])])
            alone = torch.cat([plain(picture) for picture in tokens.split(1)])
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(unet_tuning, "onednn_linear", lambda: recorder("oneDNN", product))
                patch.setattr(torch.nn.functional, "linear", recorder("linear", torch.nn.functional.linear))
                recorded = torch.nn.Sequential(torch.nn.Linear(1280, 1280), torch.nn.Linear(1280, 1280, bias=False))
                unet_tuning.linears_per_picture(recorded)
                recorded(tokens)
                recorded(tokens[0, :5])  # not a batch of token rows: one product as before
        with torch.no_grad():
            assert torch.equal(block(tokens), four)  # under no_grad as under inference mode
        trained = block(tokens.requires_grad_())  # gradients wanted: torch's own layer, which has them
        trained.sum().backward()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(four, two)
    assert torch.allclose(four, alone, rtol=1e-4, atol=1e-5)  # torch's numbers, to float rounding
    assert products == [("oneDNN", (64, 1280))] * 8 + [("linear", (5, 1280))] * 2
    assert tokens.grad is not None and torch.allclose(trained, four, rtol=1e-4, atol=1e-5)


def test_the_unet_goes_channels_last_except_in_float32_on_a_cpu():
    """Measured: channels-last makes a float32 UNet slower on CPU, a bfloat16 one faster."""
    import types

    import torch

    from fairytale.render.unet_tuning import channels_last

    def layouts(device: str, dtype: str) -> tuple[bool, bool]:
        pipe = types.SimpleNamespace(unet=torch.nn.Conv2d(4, 8, 3), vae=torch.nn.Conv2d(4, 8, 3))
        channels_last(pipe, DevicePlan(device, dtype, 4, low_vram=False, offload=False))
        last = torch.channels_last
        return pipe.unet.weight.is_contiguous(memory_format=last), pipe.vae.weight.is_contiguous(memory_format=last)

    assert layouts("cpu", "float32") == (False, True)
    assert layouts("cpu", "bfloat16") == (True, True)
    assert layouts("cuda", "float16") == (True, True)


_FAULTS_OF_A_REALLOCATION = """
import resource, sys
import torch
from fairytale.render.devices import DevicePlan
if sys.argv[1] == "placed":
    DevicePlan("cpu", "float32", 1, low_vram=False, offload=False).place(torch.nn.Linear(1, 1))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):  # the first round warms up; the second is measured
    before = faults()
    for _ in range(4):
        block = torch.empty(64 * 2**20 // 4)  # 64 MiB, as large as a UNet activation
        block.fill_(1.0)
        del block
    measured = faults() - before
print(measured)
"""


@pytest.mark.skipif(not __import__("platform").libc_ver()[0] == "glibc", reason="the setting is glibc's")
def test_painting_on_a_cpu_reuses_freed_memory_instead_of_faulting_in_fresh_pages():
    """Without the setting every 64 MiB block is mapped afresh (16384 page faults each); a
    pipeline placed on the CPU keeps freed blocks for the next allocation."""
    import subprocess
    import sys

    def faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", _FAULTS_OF_A_REALLOCATION, mode], capture_output=True, text=True, check=True)
        return int(run.stdout.split()[-1])

    assert faults("plain") >= 4 * 16384 * 0.9
    assert faults("placed") < 16384 * 0.1


def test_a_prompts_cross_attention_keys_and_values_are_computed_once_per_painting():
    """The same prompt-embeddings tensor at every step: its keys and values are computed at the
    first step and reused; another tensor (even with equal values) or one changed in place is
    computed afresh, and the numbers are the layer's own."""
    import torch

    from fairytale.render.unet_tuning import text_projections_once

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.to_k, self.to_v, self.to_q = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)

    unet = torch.nn.Module()
    unet.attn1, unet.attn2 = Attention(), Attention()
    computed = []
    for name, layer in unet.named_modules():
        if isinstance(layer, torch.nn.Linear):
            layer.forward = lambda x, name=name, whole=layer.forward: computed.append(name) or whole(x)
    text_projections_once(unet)
    text_projections_once(unet)  # again (after an adapter is loaded): each layer wrapped once

    prompt = torch.randn(2, 77, 8)
    first = unet.attn2.to_k(prompt)
    assert torch.equal(unet.attn2.to_k(prompt), first) and computed == ["attn2.to_k"]
    unet.attn2.to_k(prompt.clone())  # equal values, another tensor
    unet.attn2.to_v(prompt)
    unet.attn1.to_k(prompt), unet.attn1.to_k(prompt)  # self-attention keys change every step: not kept
    assert computed == ["attn2.to_k", "attn2.to_k", "attn2.to_v", "attn1.to_k", "attn1.to_k"]
    with torch.no_grad():
        prompt.mul_(2)  # changed in place: computed afresh
        assert torch.equal(unet.attn2.to_v(prompt), torch.nn.functional.linear(prompt, unet.attn2.to_v.weight, unet.attn2.to_v.bias))
    with torch.inference_mode():
        frozen = torch.randn(2, 77, 8)
        unet.attn2.to_k(frozen), unet.attn2.to_k(frozen)
        assert computed[5:] == ["attn2.to_v", "attn2.to_k"]
        frozen.add_(1)  # an inference tensor has no version, yet changes in place in inference mode
        expected = torch.nn.functional.linear(frozen, unet.attn2.to_k.weight, unet.attn2.to_k.bias)
        assert torch.equal(unet.attn2.to_k(frozen), expected) and computed[7:] == ["attn2.to_k"]


def test_cross_attention_keys_and_values_are_kept_for_prompts_that_alternate():
    """Attention mode alternates two UNet calls per step (portraits, then pages), each with its
    prompts: both are projected once. At most KEPT_PROMPTS prompts are kept, the least recently
    used going first."""
    import torch

    from fairytale.render.unet_tuning import KEPT_PROMPTS, forget_text_projections, text_projections_once

    unet = torch.nn.Module()
    unet.attn2 = torch.nn.Module()
    unet.attn2.to_k = torch.nn.Linear(8, 4)
    computed = []
    unet.attn2.to_k.forward = lambda x, whole=unet.attn2.to_k.forward: computed.append(x) or whole(x)
    text_projections_once(unet)

    portraits, pages = torch.randn(2, 77, 8), torch.randn(8, 77, 8)
    for _ in range(5):  # steps
        unet.attn2.to_k(portraits), unet.attn2.to_k(pages)
    assert len(computed) == 2

    others = [torch.randn(1, 77, 8) for _ in range(KEPT_PROMPTS - 1)]
    for other in others:
        unet.attn2.to_k(other)
    unet.attn2.to_k(pages)  # kept (used more recently than the portraits)
    assert len(computed) == 2 + len(others)
    unet.attn2.to_k(portraits)  # the least recently used one was let go
    assert len(computed) == 3 + len(others) and computed[-1] is portraits
    forget_text_projections(unet)
    unet.attn2.to_k(pages)
    assert len(computed) == 4 + len(others)


def test_a_paintings_cross_attention_keys_and_values_are_released_when_it_ends(tiny_sd):
    """Within a painting each cross-attention layer answers every step with the keys and values
    it made at the first; once the painting ends they are let go (on a full-size model ~60 MB
    that would otherwise stay until the next painting), and pictures are as before."""
    import gc
    import weakref

    illustrator = load_illustrator(tiny_settings(tiny_sd, steps=3))
    made: dict[str, list] = {}

    def remember(name):
        def hook(module, args, output):
            made.setdefault(name, []).append((id(output), weakref.ref(output)))

        return hook

    unet = illustrator.pipe.unet
    layers = {n: m for n, m in unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))}
    assert layers
    handles = [layer.register_forward_hook(remember(name)) for name, layer in layers.items()]
    request = PaintRequest(1, "a lighthouse by the sea", "blurry", 11)
    first = np.asarray(illustrator.paint([request])[0])
    for handle in handles:
        handle.remove()
    gc.collect()
    assert set(made) == set(layers)
    for name, outputs in made.items():
        assert len(outputs) == 3 and len({made_id for made_id, _ in outputs}) == 1, name  # made once, used 3 times
        assert outputs[0][1]() is None, name  # released when the painting ended
    assert np.array_equal(np.asarray(illustrator.paint([request])[0]), first)


def test_a_compiled_unet_is_one_graph(tiny_sd):
    """``--compile`` (CUDA): none of our hooks may split the UNet's graph (batch invariance's
    equal-rows check, a data-dependent branch, did so at every timestep layer: 28 graph breaks
    on the tiny UNet). Dynamo traces on the CPU just as it would for CUDA."""
    import torch
    from diffusers import UNet2DConditionModel

    from fairytale.render import unet_tuning

    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").eval()

    class Pipe:
        vae = torch.nn.Conv2d(1, 1, 1)

    pipe = Pipe()
    pipe.unet = unet
    unet_tuning.prepare(pipe, DevicePlan("cuda", "float16", 4, low_vram=False, offload=False, compile_unet=True))
    sample = torch.randn(2, unet.config.in_channels, 8, 8).to(memory_format=torch.channels_last)
    prompts = torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        explained = torch._dynamo.explain(unet)(sample, torch.tensor([10, 10]), encoder_hidden_states=prompts)
    assert explained.graph_break_count == 0, [str(r.reason)[:120] for r in explained.break_reasons[:3]]


def test_bf16_on_a_card_that_only_emulates_it_is_refused(monkeypatch):
    """torch says a T4 "supports" bfloat16 (emulated, many times slower than its float16): the
    plan asks for native bfloat16 (compute capability 8+) of the card it paints on."""
    import torch

    capability = {0: (7, 5), 1: (8, 0)}  # cuda:0 a T4, cuda:1 an A100
    names = {0: "Tesla T4", 1: "NVIDIA A100"}

    def index(device=None):
        return 0 if device is None else torch.device(device).index or 0

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[index(device)])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: names[index(device)])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (16 * 1024**3, 16 * 1024**3))
    with pytest.raises(FairytaleError, match=r"cuda:0 \(Tesla T4\) has no native bfloat16; use fp16"):
        plan_device("cuda:0", precision="bf16")
    assert plan_device("cuda:0").dtype == "float16"
    assert plan_device("cuda:1", precision="bf16").dtype == "bfloat16"


def test_an_inference_prompt_is_compared_once_per_unet_call_not_once_per_layer(monkeypatch):
    """Pipelines run in inference mode, where a prompt tensor has no version counter: whether it
    changed is a comparison of values, which on a GPU makes the host wait for the device. The
    layers of one UNet call see the same prompt: one comparison per call, and a change between
    calls is still seen."""
    import torch

    from fairytale.render.unet_tuning import text_projections_once

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn2 = torch.nn.Module()
            self.attn2.to_k, self.attn2.to_v = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)

        def forward(self, prompt):
            return self.attn2.to_k(prompt) + self.attn2.to_v(prompt)

    class Unet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(Block() for _ in range(3))

        def forward(self, prompt):
            return sum(block(prompt) for block in self.blocks)

    unet = Unet()
    text_projections_once(unet)
    compared = []
    equal = torch.equal
    monkeypatch.setattr(torch, "equal", lambda a, b: compared.append(1) or equal(a, b))
    with torch.inference_mode():
        prompt = torch.randn(2, 77, 8)
        first = unet(prompt)  # projected, copied: nothing to compare
        assert compared == []
        for _ in range(3):
            assert torch.equal(unet(prompt), first)
        assert len(compared) == 3 + 3  # one per call (the assert's own torch.equal aside)
        prompt.mul_(2)  # changed in place between calls: projected afresh
        expected = sum(
            torch.nn.functional.linear(prompt, b.attn2.to_k.weight, b.attn2.to_k.bias)
            + torch.nn.functional.linear(prompt, b.attn2.to_v.weight, b.attn2.to_v.bias)
            for b in unet.blocks
        )
        assert torch.allclose(unet(prompt), expected)


def test_batch_invariance_hooks_are_for_the_cpu_only(tiny_sd):
    """On a GPU the kernels change with the batch anyway; the equal-rows check would only make
    the host wait for the device at every timestep layer."""
    import torch
    from diffusers import UNet2DConditionModel

    from fairytale.render import unet_tuning

    def hooked(device: str) -> list[str]:
        class Pipe:
            vae = torch.nn.Conv2d(1, 1, 1)

        pipe = Pipe()
        pipe.unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").eval()
        dtype = "float32" if device == "cpu" else "float16"
        unet_tuning.prepare(pipe, DevicePlan(device, dtype, 4, low_vram=False, offload=False))
        return [n for n, m in pipe.unet.named_modules() if getattr(m, "_fairytale_one_row", False)]

    assert hooked("cpu") and hooked("cuda") == []
