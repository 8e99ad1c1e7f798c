"""The one paint-and-safety loop: pictures in batches, each safety-checked before it is kept.

Pages, reference portraits and ``fairytale vary`` all paint through :func:`paint_checked`. A
picture that is flagged goes back in the queue with its next repaint seed (so a later batch paints
it again) until ``max_repaints`` is used up; then it is given up (a page gets a placeholder).
:func:`paint_pages` is the loop for book pages: only pictures that passed are written, each as soon
as its batch is done, so a run that dies loses at most the batch in progress.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fairytale.render.backends import PaintRequest
from fairytale.render.page_store import PageStore, StoredPicture
from fairytale.render.progress import RenderProgress
from fairytale.render.seeds import repaint_seed

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from fairytale.render.illustrator import Illustrator

#: paints one picture per request, in one batch: ``paint(requests, on_step)``
PaintFunction = Callable[[Sequence[PaintRequest], Any], "list[Image.Image]"]
#: for each picture, whether the safety checker flags it
FlagFunction = Callable[["list[Image.Image]"], list[bool]]


@dataclass
class Checked:
    """A request whose painting is finished: the picture that passed, or None if every one
    (``attempts`` of them) was flagged."""

    request: PaintRequest  # as asked, with its first seed
    picture: Image.Image | None
    seed: int | None  # the seed that painted the kept picture
    attempts: int
    seconds: float  # its share of the batches it was painted in
    size: tuple[int, int] = (0, 0)  # (width, height) of what was painted
    share: float = 0.0  # seconds per picture of the last batch it was in


@dataclass
class _Attempt:
    request: PaintRequest
    number: int  # 0 for the first painting, 1.. for repaints
    seed: int
    seconds: float = 0.0


def paint_checked(
    paint: PaintFunction,
    flagged: FlagFunction,
    requests: Sequence[PaintRequest],
    *,
    batch_size: int,
    max_repaints: int,
    on_batch: Callable[[list[PaintRequest]], None] | None = None,
    on_step: Any = None,
) -> Iterator[list[Checked]]:
    """Paint every request, repainting flagged pictures with :func:`~fairytale.render.seeds.repaint_seed`
    of the request's seed. After each batch, yields the requests it finished (possibly none).
    ``on_batch`` hears of each batch (its requests with the seeds being painted) before it is painted."""
    queue = deque(_Attempt(r, 0, r.seed) for r in requests)
    while queue:
        batch = [queue.popleft() for _ in range(min(max(1, batch_size), len(queue)))]
        painting = [a.request.with_seed(a.seed) for a in batch]
        if on_batch:
            on_batch(painting)
        began = time.perf_counter()
        pictures = paint(painting, on_step)
        flags = flagged(pictures)
        share = (time.perf_counter() - began) / len(batch)
        finished = []
        for attempt, picture, bad in zip(batch, pictures, flags, strict=True):
            attempt.seconds += share
            if not bad:
                finished.append(
                    Checked(attempt.request, picture, attempt.seed, attempt.number + 1, attempt.seconds, picture.size, share)
                )
            elif attempt.number < max_repaints:
                # The flagged picture is dropped here, never written; the request goes round again.
                nxt = attempt.number + 1
                queue.append(_Attempt(attempt.request, nxt, repaint_seed(attempt.request.seed, nxt), attempt.seconds))
            else:
                finished.append(Checked(attempt.request, None, None, attempt.number + 1, attempt.seconds, picture.size, share))
        yield finished


def illustrator_loop(illustrator: Illustrator, requests: Sequence[PaintRequest], *, batch_size: int, max_repaints: int, **kw: Any) -> Iterator[list[Checked]]:
    """:func:`paint_checked` with ``illustrator``'s painting and safety checker."""
    return paint_checked(
        illustrator.paint, illustrator.safety.flagged, requests, batch_size=batch_size, max_repaints=max_repaints, **kw
    )


@dataclass(frozen=True)
class PageJob:
    """A page to paint: its request (with the plan's seed) and its cache key."""

    request: PaintRequest
    key: str


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
    keys = {id(job.request): job.key for job in jobs}  # by request: several jobs may paint one page (studio candidates)
    progress.start_pages(len(jobs))

    def on_batch(batch: list[PaintRequest]) -> None:
        report.pictures_painted += len(batch)
        progress.batch([r.page for r in batch])

    loop = illustrator_loop(
        illustrator, [job.request for job in jobs], batch_size=batch_size, max_repaints=max_repaints,
        on_batch=on_batch, on_step=progress.step,
    )
    for finished in loop:
        for done in finished:
            request = done.request
            outcome = "placeholder" if done.picture is None else "passed" if done.attempts == 1 else "repainted"
            width, height = done.size
            stored = StoredPicture(
                keys[id(request)], request.seed, done.seed, done.attempts, outcome, round(done.seconds, 3), width, height,
                # a later render may allow more repaints: a placeholder says how many it had
                max_repaints=max_repaints if outcome == "placeholder" else None,
            )
            report.stored[request.page] = store.put(stored, done.picture)
            message = None
            if outcome == "repainted":
                message = f"page {request.page}: picture flagged by the safety checker; repainted with seed {done.seed}"
            elif outcome == "placeholder":
                message = (
                    f"page {request.page}: every picture ({done.attempts}) was flagged by the safety checker; "
                    "the page has a plain placeholder. Change its prompt or seed in the plan and render it again."
                )
            if message:
                report.warnings.append(message)
                progress.warn(message)
        if finished:
            progress.pages_done(len(finished), finished[-1].share)
    progress.end_pages()
    report.seconds = time.perf_counter() - start
    return report
