"""The painting loop: pages in batches, each picture safety-checked before it is stored.

A page whose picture is flagged goes back in the queue with its next repaint seed (so a later
batch paints it again) until ``max_repaints`` is used up; then it gets a placeholder. Only
pictures that passed are written, each as soon as its batch is done, so a run that dies loses
at most the batch in progress.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from fairytale.render.backends import PaintRequest
from fairytale.render.illustrator import Illustrator
from fairytale.render.page_store import PageStore, StoredPicture
from fairytale.render.progress import RenderProgress
from fairytale.render.safety import repaint_seed


@dataclass(frozen=True)
class PageJob:
    """A page to paint: its request (with the plan's seed) and its cache key."""

    request: PaintRequest
    key: str


@dataclass
class _Attempt:
    job: PageJob
    number: int  # 0 for the first painting, 1.. for repaints
    seed: int
    seconds: float = 0.0


@dataclass
class PaintReport:
    """What the loop did."""

    stored: dict[int, StoredPicture] = field(default_factory=dict)
    pictures_painted: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def paint_pages(
    illustrator: Illustrator,
    jobs: list[PageJob],
    store: PageStore,
    *,
    batch_size: int,
    max_repaints: int,
    progress: RenderProgress,
) -> PaintReport:
    """Paint every job, repainting flagged pictures, and store the results."""
    report = PaintReport()
    start = time.perf_counter()
    queue = deque(_Attempt(job, 0, job.request.seed) for job in jobs)
    progress.start_pages(len(jobs))
    while queue:
        batch = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
        progress.batch([a.job.request.page for a in batch])
        began = time.perf_counter()
        pictures = illustrator.paint([a.job.request.with_seed(a.seed) for a in batch], on_step=progress.step)
        flags = illustrator.safety.flagged(pictures)
        share = (time.perf_counter() - began) / len(batch)
        report.pictures_painted += len(batch)
        finished = 0
        for attempt, picture, flagged in zip(batch, pictures, flags, strict=True):
            attempt.seconds += share
            request = attempt.job.request
            if not flagged:
                outcome = "passed" if attempt.number == 0 else "repainted"
                stored = StoredPicture(
                    attempt.job.key, request.seed, attempt.seed, attempt.number + 1, outcome,
                    round(attempt.seconds, 3), picture.width, picture.height,
                )
                report.stored[request.page] = store.put(stored, picture)
                finished += 1
                if attempt.number:
                    message = f"page {request.page}: picture flagged by the safety checker; repainted with seed {attempt.seed}"
                    report.warnings.append(message)
                    progress.warn(message)
            elif attempt.number < max_repaints:
                # The flagged picture is dropped here, never written; the page goes round again.
                nxt = attempt.number + 1
                queue.append(_Attempt(attempt.job, nxt, repaint_seed(request.seed, nxt), attempt.seconds))
            else:
                stored = StoredPicture(
                    attempt.job.key, request.seed, None, attempt.number + 1, "placeholder",
                    round(attempt.seconds, 3), picture.width, picture.height,
                )
                report.stored[request.page] = store.put(stored, None)
                finished += 1
                message = (
                    f"page {request.page}: every picture ({attempt.number + 1}) was flagged by the safety checker; "
                    "the page has a plain placeholder. Change its prompt or seed in the plan and render it again."
                )
                report.warnings.append(message)
                progress.warn(message)
        if finished:
            progress.pages_done(finished, share)
    progress.end_pages()
    report.seconds = time.perf_counter() - start
    return report
