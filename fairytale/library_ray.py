"""``fairytale library --ray``: the books of a library made on a Ray cluster.

On a cluster with GPUs the stages are split, so that the GPUs only paint:

* **Planning** and **layout** are Ray tasks on one CPU each; each worker process keeps the
  planner's models loaded for the next story it gets.
* **Painting** runs on actors, one per GPU (``num_gpus=1``), each holding its loaded pipeline
  for its whole life, book after book. A book is given to the next free painter.
* Books move through the stages independently: while one is painted, the next is planned and
  the previous laid out. A book that fails at any stage is reported; the others go on.

On a cluster without GPUs, splitting buys nothing (every stage wants the same CPUs) and costs
models loaded in more processes: each actor holds one CPU and makes whole books (plan, paint,
lay out) with every model loaded once, like a local worker; one actor per CPU by default.

Every node must have fAIrytale installed (``pip install "fairytale-books[ray]"``), the models
in its Hugging Face cache (``fairytale models pull``) and the stories and output folders at
the same paths (a shared file system), because tasks read and write the book folders directly.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from fairytale.errors import FairytaleError
from fairytale.library import (
    NOT_STARTED_DISK_FULL,
    BookOutcome,
    LibraryBook,
    LibraryProgress,
    PlanOptions,
    Workshop,
    describe_error,
    is_disk_full,
    use_threads,
)

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render import RenderSettings

#: How often the driver looks at its tasks (every wait has a timeout, so progress and Ctrl-C
#: are never stuck behind a slow task).
POLL_SECONDS = 0.5

# The Workshop of a Ray worker process running planning and layout tasks (kept between tasks).
_TASK_WORKSHOP: Workshop | None = None


def _task_workshop(settings: RenderSettings, plan_options: PlanOptions) -> Workshop:
    global _TASK_WORKSHOP
    if _TASK_WORKSHOP is None or (_TASK_WORKSHOP.settings, _TASK_WORKSHOP.plan_options) != (
        settings,
        plan_options,
    ):
        _TASK_WORKSHOP = Workshop(settings, plan_options)
    return _TASK_WORKSHOP


def plan_task(book: LibraryBook, settings: RenderSettings, plan_options: PlanOptions) -> bool:
    """Ray task: plan the book (or keep its plan); returns whether it planned."""
    return _task_workshop(settings, plan_options).plan(book)


def lay_out_task(book: LibraryBook, settings: RenderSettings, plan_options: PlanOptions) -> dict[str, Any]:
    """Ray task: lay out a painted book."""
    result = _task_workshop(settings, plan_options).lay_out(book)
    if result.painted:  # the painter should have left nothing to paint
        raise FairytaleError(
            f"pages {result.painted} were missing after painting and were painted during layout"
        )
    return {"pages": len(result.pages)}


class Painter:
    """Ray actor: paints books with one pipeline, loaded on first use and kept."""

    def __init__(self, settings: RenderSettings, threads: int | None = None) -> None:
        use_threads(threads)
        self.workshop = Workshop(settings, PlanOptions())

    def paint(self, book: LibraryBook) -> dict[str, Any]:
        result = self.workshop.paint(book)
        return {"painted": len(result.painted)}


class BookMaker:
    """Ray actor: makes whole books (plan, paint, lay out), its models loaded once and kept."""

    def __init__(
        self, settings: RenderSettings, plan_options: PlanOptions, threads: int | None = None
    ) -> None:
        use_threads(threads)
        self.workshop = Workshop(settings, plan_options)

    def make(self, book: LibraryBook) -> BookOutcome:
        return self.workshop.make(book)  # never raises for the book: a failure is in the outcome


def _no_cluster(address: str, reason: object) -> FairytaleError:
    return FairytaleError(
        f"No Ray cluster at '{address}' ({reason}). Start one (`ray start --head`, `ray up cluster.yaml`, "
        "KubeRay) or pass its address, e.g. --ray 10.0.0.5:6379"
    )


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT address must answer within ``timeout`` seconds: Ray itself retries an
    unreachable one for many minutes before it gives up."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray reads itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise _no_cluster(address, f"nothing answers there: {exc.strerror or exc}") from None


def _connect(address: str) -> None:
    import ray

    if ray.is_initialized():
        return
    _check_reachable(address)
    try:
        # Workers' output stays in the cluster's logs: the driver shows one view of the books.
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except ConnectionError as exc:
        raise _no_cluster(address, exc) from None


def make_on_ray(
    books: list[LibraryBook],
    settings: RenderSettings,
    plan_options: PlanOptions,
    address: str,
    painters: int | None,
    stage_timeout: float | None,
    view: LibraryProgress,
    outcomes: dict[str, BookOutcome],
    split_stages: bool | None = None,
) -> str:
    """Make ``books`` on the Ray cluster at ``address``; fills ``outcomes``. Returns where it ran.

    ``split_stages``: planning and layout as tasks, painting on actors (None: when the cluster
    has GPUs); otherwise each actor makes whole books (see the module docstring)."""
    try:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
    except ImportError:
        raise FairytaleError('--ray needs Ray: pip install "fairytale-books[ray]"') from None

    _connect(address)
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    split = bool(gpus) if split_stages is None else split_stages
    # By default: one painter per GPU; without GPUs, one painter (split) or one book maker per CPU.
    count = painters or max(1, gpus if gpus else 1 if split else cpus)
    threads: int | None = None
    if gpus:
        if count > gpus:
            raise FairytaleError(f"--painters {count}: the cluster has {gpus} GPU(s), one per painter")
        actor_options: dict[str, Any] = {"num_gpus": 1}
    else:
        # No GPU anywhere: each actor works on one CPU, on one thread.
        if split and count >= cpus:
            raise FairytaleError(
                f"--painters {count}: the cluster has {cpus} CPU(s) and no GPU; leave at least one CPU for planning and layout"
            )
        if count > cpus:
            raise FairytaleError(
                f"--painters {count}: the cluster has {cpus} CPU(s) and no GPU, one per book maker"
            )
        actor_options = {"num_cpus": 1}
        threads = 1
    kind = "painter" if split else "book maker"
    where = f"Ray ({cpus} CPUs, {gpus} GPUs, {count} {kind}{'s' if count > 1 else ''})"
    if not books:
        return where

    planning = ray.remote(num_cpus=1)(plan_task)
    laying_out = ray.remote(num_cpus=1)(lay_out_task)
    started = {book.name: time.perf_counter() for book in books}
    planned: dict[str, bool] = {}
    painted: dict[str, int] = {}
    if split:
        actor_class = ray.remote(**actor_options)(Painter)
        actor_args: tuple[Any, ...] = (settings, threads)
    else:
        actor_class = ray.remote(**actor_options)(BookMaker)
        actor_args = (settings, plan_options, threads)
    actors = [actor_class.remote(*actor_args) for _ in range(count)]
    free = list(actors)
    # Books waiting for a free actor: planned ones to paint, or (whole books) all of them.
    waiting_for_painter: deque[LibraryBook] = deque() if split else deque(books)
    running: dict[Any, tuple[LibraryBook, str, Any, float]] = {}  # ref -> (book, stage, actor, since)

    def submit(book: LibraryBook, stage: str, actor: Any = None) -> None:
        if stage == "plan":
            ref = planning.remote(book, settings, plan_options)
        elif stage == "paint":
            ref = actor.paint.remote(book)
        elif stage == "make":
            ref = actor.make.remote(book)
        else:
            ref = laying_out.remote(book, settings, plan_options)
        running[ref] = (book, stage, actor, time.perf_counter())

    def fail(book: LibraryBook, error: str) -> None:
        outcome = BookOutcome(
            book.name, book.pdf, "failed", seconds=time.perf_counter() - started[book.name], error=error
        )
        outcomes[book.name] = outcome
        view.done(outcome)

    disk_full = False

    def stop_starting_books() -> None:
        """The disk is full: the books not started yet would fail the same way, one by one."""
        nonlocal disk_full
        disk_full = True
        while waiting_for_painter:
            fail(waiting_for_painter.popleft(), NOT_STARTED_DISK_FULL)

    def replace(actor: Any) -> None:
        """A fresh actor in the place of ``actor`` (dead, or killed for taking too long)."""
        actors.remove(actor)
        actors.append(actor_class.remote(*actor_args))
        free.append(actors[-1])

    if split:
        for book in books:
            submit(book, "plan")
    try:
        while running or waiting_for_painter:
            while free and waiting_for_painter:
                submit(waiting_for_painter.popleft(), "paint" if split else "make", free.pop())
            # A book waits only while every actor has one in hand (a dead or stopped actor is
            # replaced), so something is always running here.
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            now = time.perf_counter()
            for ref in ready:
                book, stage, actor, _since = running.pop(ref)
                try:
                    value = ray.get(ref, timeout=60)
                except RayActorError as exc:  # the actor died with the book (out of memory, a crash)
                    fail(book, f"its {kind} died while working on it ({exc.__class__.__name__})")
                    if actor is not None:
                        replace(actor)  # the books still waiting need it
                    continue
                except RayTaskError as exc:
                    if actor is not None:
                        free.append(actor)
                    cause = exc.cause if exc.cause is not None else exc
                    fail(book, describe_error(cause))
                    if is_disk_full(cause):
                        stop_starting_books()
                    continue
                except GetTimeoutError:
                    if actor is not None:
                        free.append(actor)
                    fail(book, f"the {stage} result could not be fetched in time")
                    continue
                if stage == "plan":
                    planned[book.name] = bool(value)
                    view.stage("planned")
                    if disk_full:
                        fail(book, NOT_STARTED_DISK_FULL)
                    else:
                        waiting_for_painter.append(book)
                elif stage == "make":  # a whole book, made or failed
                    free.append(actor)
                    outcomes[book.name] = value
                    view.done(value)
                    if value.disk_full:
                        stop_starting_books()
                elif stage == "paint":
                    free.append(actor)
                    painted[book.name] = value["painted"]
                    view.stage("painted")
                    submit(book, "lay out")
                else:
                    outcome = BookOutcome(
                        book.name, book.pdf, "made", pages=value["pages"], painted=painted[book.name],
                        reused=value["pages"] - painted[book.name], seconds=now - started[book.name],
                        planned=planned[book.name],
                    )  # fmt: skip
                    outcomes[book.name] = outcome
                    view.done(outcome)
            if stage_timeout is not None:
                for ref, (book, stage, actor, since) in list(running.items()):
                    if now - since > stage_timeout:
                        running.pop(ref)
                        if actor is not None:
                            ray.kill(actor)  # it may be stuck; a fresh one takes its place
                            replace(actor)
                        else:
                            ray.cancel(ref, force=True)
                        what = "making the book" if stage == "make" else stage
                        fail(book, f"{what} took longer than {stage_timeout:.0f} s and was stopped")
    finally:
        # Ctrl-C (or an error of the driver): nothing goes on. A task's worker process ends; an
        # actor is killed, as Ray cannot interrupt the task it runs (it only flags it cancelled).
        # Every file is written atomically, so that loses nothing finished, and the temporary
        # file a killed writer leaves is removed when the book is made again.
        for ref, (_book, _stage, actor, _since) in running.items():
            if actor is None:
                ray.cancel(ref, force=True)
        for actor in actors:
            ray.kill(actor)
    return where
