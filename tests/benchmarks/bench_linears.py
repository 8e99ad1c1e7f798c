"""The UNet's token-wise linear layers on the CPU: torch's own product
(:func:`torch.nn.functional.linear`, a BLAS call: MKL's ``sgemm`` in torch's CPU builds) against
the per-picture oneDNN product the render uses (:func:`fairytale.render.unet_tuning.linears_per_picture`).

    python tests/benchmarks/bench_linears.py [--size 256] [--batch 8] [--threads N] [--dtype float32]

Every distinct linear layer shape of the full-size SD 1.4 UNet (``configs/sd14/unet``, random
weights) at the given picture size, for a batch of ``--batch`` UNet rows (4 pages with guidance:
8): GFLOP/s of the whole-batch BLAS call, of the per-picture BLAS calls (what the render did
before), and of the per-picture oneDNN calls, best of 3. Also checked: the per-picture oneDNN
result of a picture equals that picture's alone (batch invariance) and stays within float
rounding of torch's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def best_seconds(work, *args, repeats: int = 5) -> float:
    work(*args)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            work(*args)
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    import torch
    from diffusers import UNet2DConditionModel

    from fairytale.render.unet_tuning import linears_per_picture

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    config = UNet2DConditionModel.load_config(ROOT / "tests/benchmarks/configs/sd14/unet")
    unet = UNet2DConditionModel.from_config(config).to(dtype).eval()
    latent = args.size // 8
    shapes: dict[tuple[int, int, int, bool], int] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear) or ".attentions." not in name:
            continue  # the transformer blocks' layers (not the timestep path's: one row per picture)
        if name.endswith(("attn2.to_k", "attn2.to_v")):
            continue  # the prompt's projections: once per painting (text_projections_once)
        level = int(name.split(".")[1]) if not name.startswith("mid_block") else 3
        side = latent >> (level if name.startswith(("down_blocks", "mid_block")) else 3 - level)
        key = (side * side, module.in_features, module.out_features, module.bias is not None)
        shapes[key] = shapes.get(key, 0) + 1

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, batch {args.batch}, {args.size}²")
    print(f"{'tokens':>6} {'in':>5} {'out':>6} {'bias':>5} {'layers':>6}  {'torch whole':>11} {'torch/picture':>13} {'oneDNN/picture':>14}  (GFLOP/s)")
    totals = {"whole": 0.0, "blas": 0.0, "onednn": 0.0}
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for (tokens, inputs, outputs, bias), count in sorted(shapes.items()):
            layer = torch.nn.Linear(inputs, outputs, bias=bias).to(dtype)
            plain_forward = layer.forward
            x = torch.randn(args.batch, tokens, inputs, generator=generator).to(dtype)
            flops = 2 * args.batch * tokens * inputs * outputs
            whole = best_seconds(plain_forward, x)
            per_picture_blas = best_seconds(lambda forward, x: torch.stack([forward(p) for p in x]), plain_forward, x)
            linears_per_picture(torch.nn.ModuleList([layer]))
            ours = best_seconds(layer, x)
            result = layer(x)
            alone = layer(x[:2])[1]  # picture 1 in a batch of 2 (a batch of 1 is not split)
            assert torch.equal(result[1], alone), "a picture's result depends on its batch"
            assert torch.allclose(result, plain_forward(x), rtol=1e-3, atol=1e-4)
            for key, seconds in (("whole", whole), ("blas", per_picture_blas), ("onednn", ours)):
                totals[key] += seconds * count
            print(
                f"{tokens:>6} {inputs:>5} {outputs:>6} {'yes' if bias else 'no':>5} {count:>6}  {flops / whole / 1e9:>11.0f} "
                f"{flops / per_picture_blas / 1e9:>13.0f} {flops / ours / 1e9:>14.0f}"
            )
    print(
        f"all these layers of one UNet call: torch whole {totals['whole']:.2f} s, torch per picture "
        f"{totals['blas']:.2f} s, oneDNN per picture {totals['onednn']:.2f} s"
    )


if __name__ == "__main__":
    main()
