"""What keeping the prompts' cross-attention keys and values saves in ``--consistency
attention`` (:func:`fairytale.render.unet_tuning.text_projections_once`), on the full-size SD 1.4
UNet with random weights (``configs/sd14/unet``), on the CPU, in CPU seconds.

    python tests/benchmarks/bench_text_projections.py [--pages 4] [--portraits 2] [--size 256] [--threads 1]

Each step of attention mode calls the UNet twice: the portraits' pass (one row per portrait,
its prompt) and the pages' call (two rows per page with guidance, their prompts). Timed here,
per step: the 16 cross-attention layers' key and value projections of both prompts (what was
computed at every step, when the portraits' pass evicted the pages' prompt and back); the same
calls answered from what the layers keep (what a step costs now: the look-up, and a comparison
with a copy for an inference tensor); and, for scale, one pages' UNet call. With ``--consistency
adapter``, each IP-Adapter layer projects each row's portrait tokens (4 per portrait) into keys
and values: timed on layers of the real shapes (random), per step, for the same batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def cpu_seconds(work, repeats: int) -> float:
    started = time.process_time()
    for _ in range(repeats):
        work()
    return (time.process_time() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--portraits", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    import torch
    from diffusers import UNet2DConditionModel

    from fairytale.render import unet_tuning
    from fairytale.render.portrait_adapter import _one_row_at_a_time

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(ROOT / "tests/benchmarks/configs/sd14/unet"))
    unet.eval()
    unet_tuning.linears_per_picture(unet)  # as on CPU
    unet_tuning.text_projections_once(unet)
    layers = [m for n, m in unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))]
    width = unet.config.cross_attention_dim
    with torch.inference_mode():  # where pipelines run: the prompts are inference tensors
        pages = torch.randn(2 * args.pages, 77, width)
        portraits = torch.randn(args.portraits, 77, width)

        def project() -> None:
            for prompt in (portraits, pages):
                for layer in layers:
                    layer(prompt)

        def computed() -> None:  # the memory cleared first: every projection computed
            unet_tuning.forget_text_projections(unet)
            project()

        computed()  # warm up
        before = cpu_seconds(computed, args.repeats)
        project()
        after = cpu_seconds(project, args.repeats)
        latent = args.size // 8
        sample = torch.randn(2 * args.pages, 4, latent, latent)
        unet(sample, 500, encoder_hidden_states=pages)  # warm up
        call = cpu_seconds(lambda: unet(sample, 500, encoder_hidden_states=pages), 1)
        ip_layers = [
            (torch.nn.Linear(width, layer.out_features, bias=False), torch.nn.Linear(width, layer.out_features, bias=False))
            for layer in layers[::2]
        ]
        for pair in ip_layers:  # token by token, as the adapter's layers compute (batch invariance)
            for layer in pair:
                _one_row_at_a_time(layer)
        tokens = torch.randn(2 * args.pages, args.portraits, 4, width)

        def adapter() -> None:  # as PortraitAttnProcessor did at every step: one row, one portrait at a time
            for to_k, to_v in ip_layers:
                for row in range(tokens.shape[0]):
                    for index in range(tokens.shape[1]):
                        to_k(tokens[row : row + 1, index]), to_v(tokens[row : row + 1, index])

        adapter()
        portraits_kv = cpu_seconds(adapter, args.repeats)
    print(f"{len(layers)} projection layers, prompts of {args.portraits} + {2 * args.pages} rows, {args.threads} thread(s)")
    print(f"per step, projections computed:     {before * 1000:8.1f} ms CPU")
    print(f"per step, answered from what is kept: {after * 1000:6.1f} ms CPU")
    print(f"one pages' UNet call ({2 * args.pages} rows, {args.size}²): {call:.2f} s CPU")
    print(f"saved per step from the second on: {(before - after) * 1000:.1f} ms ({(before - after) / call:.1%} of a pages' call)")
    print(f"adapter mode, portraits' keys and values per step: {portraits_kv * 1000:.1f} ms CPU "
          f"({portraits_kv / call:.1%} of a pages' call), now once per painting")


if __name__ == "__main__":
    main()
