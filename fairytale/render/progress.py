"""Progress of a render: a rich bar over pages with the time per page, and the denoising steps.

:class:`RenderProgress` is what :func:`~fairytale.render.render_book` reports to; the rich
implementation draws on standard error (or in a notebook cell), :class:`QuietProgress` draws
nothing (tests, scripts).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.previews import Preview

from rich.markup import escape


class RenderProgress:
    """Receives progress events; every method may be called from the painting loop."""

    def __enter__(self) -> RenderProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stage(self, text: str) -> None:
        """A step without a count ('Loading the model…', 'Writing the PDF…')."""

    def start_pages(self, total: int) -> None:
        """``total`` pages are about to be painted."""

    def batch(self, pages: Sequence[int]) -> None:
        """These pages are being painted together now."""

    def step(self, step: int, steps: int) -> None:
        """Denoising step ``step`` of ``steps`` of the current batch is done."""

    def preview(self, preview: Preview) -> None:
        """A live preview of the batch in progress was made (only when someone asked for them)."""

    def pages_done(self, count: int, seconds_per_page: float) -> None:
        """``count`` more pages are finished (kept after the safety check)."""

    def end_pages(self) -> None:
        """Painting is over."""

    def warn(self, message: str) -> None:
        """Something the user should know, shown as it happens."""

    def close(self) -> None:
        """Stop drawing."""


class QuietProgress(RenderProgress):
    """Shows nothing."""


class RichProgress(RenderProgress):
    """A rich progress bar: pages done / total, elapsed, seconds per page, time left."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[per_page]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.pages_task = None
        self.steps_task = None
        self.started = False
        self.painted = 0
        self.paint_seconds = 0.0

    def _ensure_started(self) -> None:
        if not self.started:
            self.progress.start()
            self.started = True

    def stage(self, text: str) -> None:
        self.console.print(f"[dim]{escape(text)}[/]", highlight=False)  # names and models are not markup

    def start_pages(self, total: int) -> None:
        self._ensure_started()
        self.pages_task = self.progress.add_task("Painting pages", total=total, per_page="")
        self.steps_task = self.progress.add_task("  steps", total=1, per_page="", visible=False)
        self._batch_start = time.perf_counter()

    def batch(self, pages: Sequence[int]) -> None:
        if self.steps_task is None:
            return
        listed = ", ".join(map(str, pages))
        self.progress.update(self.steps_task, description=f"  page{'s' if len(pages) > 1 else ''} {listed}", completed=0, visible=True)

    def step(self, step: int, steps: int) -> None:
        if self.steps_task is not None:
            self.progress.update(self.steps_task, total=steps, completed=step)

    def preview(self, preview: Preview) -> None:
        # A terminal cannot show the picture: the line says how far the latest preview got.
        if self.steps_task is not None:
            listed = ", ".join(map(str, preview.pages))
            plural = "s" if len(preview.pages) > 1 else ""
            self.progress.update(self.steps_task, description=f"  page{plural} {listed} · preview at step {preview.step}")

    def pages_done(self, count: int, seconds_per_page: float) -> None:
        if self.pages_task is None:
            return
        self.painted += count
        self.paint_seconds += seconds_per_page * count
        average = self.paint_seconds / max(1, self.painted)
        self.progress.update(self.pages_task, advance=count, per_page=f"{average:.1f} s/page")

    def end_pages(self) -> None:
        # The bar stays on screen with the final count and time per page; later messages
        # print below it.
        if self.started:
            if self.steps_task is not None:
                self.progress.update(self.steps_task, visible=False)
            self.progress.stop()
            self.started = False

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]Warning:[/] {escape(message)}", highlight=False)

    def close(self) -> None:
        self.end_pages()
