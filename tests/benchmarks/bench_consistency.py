"""Consistency benchmarks: each backend paints the same book, then ``evaluate`` scores it; and
the cost of ``--consistency adapter`` and ``attention`` over ``seed`` on the full-size model.

    python tests/benchmarks/bench_consistency.py [--models DIR] [--pages 6] [--steps 4]
    python tests/benchmarks/bench_consistency.py --modes [--size 256] [--pages 4] [--steps 6]

``--modes``: SD 1.4 at its real size with random weights (``configs/sd14``), random IP-Adapter
weights of the real shapes and a random ViT-H/14 image encoder (``configs/ip_adapter``), on the
CPU: a book of ``--pages`` pages each showing two characters is painted in ``seed`` mode, then in
each of ``--mode-list`` (default ``adapter,attention``) with one loaded model; the two portraits
are painted first and timed apart. Bars: adapter ≤ 1.25 × seed, attention ≤ 1.5 × seed.

With the tiny random models (built here from ``tests/tiny_models`` unless ``--models`` names a
folder holding ``sd``, ``sd2``, ``unclip``, ``safety_checker`` and ``clip``) the scores say
nothing about likeness; what the figures show is the cost: seconds to paint the book per
backend (unclip includes painting the reference portrait; the first row also pays for warming
torch up), and seconds for ``evaluate`` with CLIP batches of 1 against 16. Run it with
real models on a GPU (``--models`` pointing at local copies) to compare CLIP-I across backends.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROLES = ["sd", "sd2", "unclip", "safety_checker", "clip"]
BACKEND_MODELS = {"sd14": "sd", "sd21": "sd2", "unclip": "unclip"}


def random_ip_adapter(model: Path, folder: Path) -> Path:
    """IP-Adapter weights of the real shapes for ``model``'s UNet and a ViT-H/14 image encoder
    built from its real config, random, in the ``h94/IP-Adapter`` layout."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = UNet2DConditionModel.load_config(model / "unet")
    cross, tokens = config["cross_attention_dim"], 4
    encoder_config = CLIPVisionConfig.from_json_file(ROOT / "tests/benchmarks/configs/ip_adapter/image_encoder.json")
    torch.manual_seed(0)
    tensors = {
        "image_proj.proj.weight": torch.randn(tokens * cross, encoder_config.projection_dim) * 0.02,
        "image_proj.proj.bias": torch.zeros(tokens * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    unet = UNet2DConditionModel.from_config(config)
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            width = unet.get_submodule(name.rsplit(".processor", 1)[0]).to_k.out_features
            tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(width, cross) * 0.02
            tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(width, cross) * 0.02
            key_id += 2
    del unet
    (folder / "models").mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "models" / "ip-adapter_sd15.safetensors"))
    CLIPVisionModelWithProjection(encoder_config).save_pretrained(folder / "models" / "image_encoder", safe_serialization=True)
    return folder


def bench_modes(args) -> None:
    """``adapter`` vs ``seed`` on the full-size random model (see the module docstring)."""
    import torch

    from fairytale.plan import load_plan, save_plan
    from fairytale.render import load_illustrator, render_book
    from fairytale.render.references import paint_references
    from tests.benchmarks.bench_render import full_size_model
    from tests.render_support import make_plan, write_plan

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        model = full_size_model(work / "sd14")
        adapter = random_ip_adapter(model, work / "ip")
        print(f"built the random models in {time.perf_counter() - started:.0f} s")
        plan = make_plan(args.pages)
        plan.character("dad").main = True
        for page in plan.pages:
            page.characters = ["zoe", "dad"]
        plan_path = write_plan(work, plan)
        from fairytale.render import RenderSettings

        base = RenderSettings(
            model=str(model), steps=args.steps, width=args.size, height=args.size, device="cpu",
            batch_size=args.pages, adapter_model=str(adapter), adapter_encoder=str(adapter),
        )
        illustrator = load_illustrator(base)
        started = time.perf_counter()
        plan = load_plan(plan_path)
        paint_references(illustrator, plan, plan_path, work / "portraits", ["zoe", "dad"], batch_size=2)
        save_plan(plan, plan_path)
        print(f"portraits (2, painted apart): {time.perf_counter() - started:.1f} s")
        times = {}
        bars = {"adapter": "≤ 1.25; includes loading the adapter and encoder", "attention": "≤ 1.5"}
        modes = ["seed", *(m for m in args.mode_list.split(",") if m and m != "seed")]
        for mode in modes:
            started = time.perf_counter()
            render_book(plan_path, work / f"{mode}.pdf", base.with_(consistency=mode), illustrator=illustrator, progress=False)
            times[mode] = time.perf_counter() - started
            print(f"{mode:18} {times[mode]:7.1f} s  ({args.pages} pages, {args.size}², {args.steps} steps)")
            shared = illustrator._attention
            if "attention" in mode and shared is not None:
                print(f"{'':18} of which the portraits' UNet passes: {shared.portrait_seconds:.1f} s ({shared.portrait_passes} passes)")
                shared.portrait_seconds, shared.portrait_passes = 0.0, 0
        for mode in modes[1:]:
            print(f"{mode} / seed = {times[mode] / times['seed']:.2f}  (bar {bars.get(mode, 'none')})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="folder with the tiny model roles (default: build them here)")
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--modes", action="store_true", help="adapter and attention vs seed on the full-size random SD 1.4")
    parser.add_argument("--mode-list", default="adapter,attention", help="--modes: the modes timed against seed")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.modes:
        bench_modes(args)
        return

    import torch

    from fairytale.evaluation import evaluate_book
    from fairytale.render import render_book
    from tests.render_support import make_plan, tiny_settings, write_plan

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.models:
            models = Path(args.models)
        else:
            from tests.tiny_models import build

            build(work / "models", ROLES)
            models = work / "models"
        print(f"{'backend':8} {'paint s':>8} {'eval b=1 s':>11} {'eval b=16 s':>12} {'mean CLIP-T':>12} {'CLIP-I':>8}")
        for backend, role in BACKEND_MODELS.items():
            folder = work / backend
            folder.mkdir()
            plan_path = write_plan(folder, make_plan(args.pages))
            settings = tiny_settings(models / role, backend=backend, steps=args.steps, safety_model=str(models / "safety_checker"))
            started = time.perf_counter()
            result = render_book(plan_path, folder / "book.pdf", settings, progress=False)
            paint = time.perf_counter() - started
            timings = {}
            for batch in (1, 16):
                started = time.perf_counter()
                scores = evaluate_book(result.book_dir, clip_model=str(models / "clip"), batch_size=batch)
                timings[batch] = time.perf_counter() - started
            clip_i = ", ".join(f"{c.id} {c.clip_i:.1f}" for c in scores.characters)
            print(f"{backend:8} {paint:8.2f} {timings[1]:11.2f} {timings[16]:12.2f} {scores.mean_clip_t:12.1f} {clip_i:>8}")


if __name__ == "__main__":
    main()
