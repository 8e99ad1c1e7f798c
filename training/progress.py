"""What a run shows while it works: a progress bar with loss and steps/s, then a summary."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """A rich progress bar over optimizer steps; silent when ``console`` is ``None``.

    Steps/s counts the steps of this session only (a resumed run starts its clock at the
    step it resumed from).
    """

    def __init__(
        self, console: Console | None, total: int, start: int, description: str = "training"
    ) -> None:
        self.console = console
        self.start = start
        self.started = time.perf_counter()
        self.progress: Progress | None = None
        if console is not None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} steps/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self.task = self.progress.add_task(description, total=total, completed=start, loss="-", rate="-")

    def __enter__(self) -> TrainingProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, step: int, loss: float) -> None:
        """Record that ``step`` optimizer steps are done, the last with ``loss``."""
        if self.progress is None:
            return
        self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", rate=f"{self.rate(step):.2f}")

    def rate(self, step: int) -> float:
        elapsed = time.perf_counter() - self.started
        return (step - self.start) / elapsed if elapsed > 0 else 0.0


def peak_memory(device: Any) -> tuple[int, str]:
    """``(bytes, what)``: peak CUDA memory allocated by tensors on a GPU, else the process's peak RSS."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(device)), "peak GPU memory (allocated)"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(rss if sys.platform == "darwin" else rss * 1024), "peak process memory (RSS)"


def format_bytes(count: int) -> str:
    """``1536`` → ``'1.5 KiB'``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"
