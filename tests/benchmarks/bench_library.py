"""Benchmark: books per minute of `fairytale library` with 1 and 2 workers, here and on Ray.

    python -m tests.benchmarks.bench_library [--books 12] [--models DIR] [--skip-ray]

The tiny test models (built here, or ``--models DIR`` from ``python -m tests.tiny_models DIR``)
plan and paint every book: the figures measure the library's own overhead and how well it
spreads books over workers, not the speed of real models. Each worker runs on one CPU thread:

* **here**: ``--workers 1`` vs ``--workers 2`` (processes, each keeping its models loaded);
* **Ray** (a private instance on this machine, loopback only): one painting actor and one CPU
  for planning and layout tasks, vs two painters and two CPUs for tasks.

Every run starts from an empty output folder (nothing cached). Bar (issue 15): 2 workers ≥ 1.6×
the books per minute of one. On a machine shared with other jobs, the figures move with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

STORIES = Path(__file__).parent.parent / "data" / "stories"
SHORT = ("ginger_giraffe", "milo_and_luna", "zoe_lighthouse")


def make_stories(folder: Path, count: int) -> Path:
    """``count`` short stories (the test stories, repeated under new names)."""
    folder.mkdir(parents=True)
    for i in range(count):
        name = SHORT[i % len(SHORT)]
        shutil.copy(STORIES / f"{name}.txt", folder / f"{i:02d}_{name}.txt")
    return folder


def run(stories: Path, out: Path, models: Path, **where) -> tuple[float, float, int]:
    """Make the library; returns (books/min over the whole run, books/min between the first
    and the last finished book (start-up excluded: imports, model loading), books made)."""
    from fairytale.library import PlanOptions, make_library
    from fairytale.render import RenderSettings

    settings = RenderSettings(model=str(models / "sd"), steps=2, device="cpu")
    plan_options = PlanOptions(
        seed=11,
        words_per_page=60,
        ner_model=str(models / "ner"),
        qa_model=str(models / "qa"),
        nli_model=str(models / "nli"),
    )
    started = time.perf_counter()
    report = make_library(stories, out, settings, plan_options, progress=False, **where)
    seconds = time.perf_counter() - started
    assert not report.failed, [(b.name, b.error) for b in report.failed]
    finished = sorted(book.pdf.stat().st_mtime for book in report.made)
    steady = (len(finished) - 1) / (finished[-1] - finished[0]) * 60 if len(finished) > 1 else float("nan")
    return len(report.made) / seconds * 60, steady, len(report.made)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--books", type=int, default=12)
    parser.add_argument(
        "--models", type=Path, help="tiny models written by `python -m tests.tiny_models DIR`"
    )
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()

    os.environ.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
        }
    )
    work = Path(tempfile.mkdtemp(prefix="bench-library-"))
    try:
        models = args.models
        if models is None:
            from tests.tiny_models import build

            models = work / "models"
            build(models, ["sd", "ner", "qa", "nli"])
        stories = make_stories(work / "stories", args.books)

        runs = [("here", 1, {"workers": 1, "threads": 1}), ("here", 2, {"workers": 2, "threads": 1})]
        results: dict[tuple[str, int], tuple[float, float]] = {}
        for where, workers, options in runs:
            whole, steady, made = run(stories, work / f"out-here-{workers}", models, **options)
            results[(where, workers)] = (whole, steady)
            print(
                f"here, {workers} worker(s), {made} books: {whole:.2f} books/min, {steady:.2f} after start-up",
                flush=True,
            )

        if not args.skip_ray:
            import ray

            from tests.library_support import local_ray

            for painters in (1, 2):
                # each painter has a CPU, and as many CPUs again run planning and layout tasks
                with local_ray(num_cpus=2 * painters) as address:
                    whole, steady, made = run(
                        stories, work / f"out-ray-{painters}", models, ray_address=address, painters=painters
                    )
                results[("ray", painters)] = (whole, steady)
                print(
                    f"ray, {painters} painter(s) + {painters} task CPU(s), {made} books: {whole:.2f} books/min, {steady:.2f} after start-up",
                    flush=True,
                )
                assert not ray.is_initialized()

        for where in ("here", "ray"):
            if (where, 2) in results:
                (w1, s1), (w2, s2) = results[(where, 1)], results[(where, 2)]
                print(
                    f"{where}: 2 workers / 1 worker = {w2 / w1:.2f}x whole run, {s2 / s1:.2f}x after start-up (bar 1.6x)"
                )
        print(f"CPUs: {os.cpu_count()}, load average before the last run ended: {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
