"""Consistency benchmarks: each backend paints the same book, then ``evaluate`` scores it.

    python tests/benchmarks/bench_consistency.py [--models DIR] [--pages 6] [--steps 4]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="folder with the tiny model roles (default: build them here)")
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

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
