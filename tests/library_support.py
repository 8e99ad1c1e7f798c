"""Helpers for the tests of many processes and many books: running the CLI in a subprocess
(as `accelerate launch` or a Ray driver would), and comparing books."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fairytale.files import sha256_file

ROOT = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this tree importable, no GPU, one thread per
    process (pictures are compared bit for bit, and the float results of a CPU kernel may
    depend on its thread count), and reportlab's invariant mode (no creation date or random
    document id in the PDF, so two PDFs of the same book are the same bytes)."""
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        RL_invariant="1",
        **extra,
    )


def run_cli(*args: object, launcher: list[str] | None = None, timeout: float = 600, **env: str):
    """``python -m fairytale ARGS`` (or under ``launcher``, e.g. accelerate launch), captured."""
    command = [*(launcher or [sys.executable]), "-m", "fairytale", *map(str, args)]
    return subprocess.run(command, env=cli_env(**env), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def accelerate_launch(processes: int) -> list[str]:
    """`accelerate launch` with ``processes`` processes on the CPU: the flags the trainer's
    multi-process test uses (accelerate starts several processes without GPUs only with
    --multi_gpu; they then meet over gloo)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
    ]  # fmt: skip


def page_pictures(book_dir: Path) -> dict[str, str]:
    """Each page picture of a book folder by name, as a hash of its bytes."""
    return {path.name: sha256_file(path) for path in sorted((Path(book_dir) / "pages").glob("page-*.png"))}


def cache_times(book_dir: Path) -> dict[str, int]:
    """When each cached picture was written (a repaint rewrites it)."""
    return {path.name: path.stat().st_mtime_ns for path in sorted((Path(book_dir) / "cache").glob("*.png"))}
