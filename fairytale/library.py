"""Every story in a folder made into a book: the API behind ``fairytale library``.

>>> report = make_library(Path("stories"), Path("books"), RenderSettings())      # doctest: +SKIP
>>> [book.name for book in report.failed]

Each story ``stories/NAME.txt`` becomes ``books/NAME.pdf`` and the book folder ``books/NAME/``,
exactly as ``fairytale book stories/NAME.txt -o books/NAME.pdf`` would make them. A book goes
through three stages: **plan** (the story read by the language models, ``plan.json`` written),
**paint** (the pictures, into the book's cache) and **lay out** (page files, PDF, manifest).

* **Resumable.** A finished book (its PDF and manifest newer than its plan, made with the same
  picture and print settings) is skipped; a half-done one continues where it stopped (its
  ``plan.json`` is kept, edits included, and cached pictures are reused).
* **One bad story never stops the others.** Every failure is caught per book and reported.
* **Where it runs.** By default on this machine, in ``workers`` processes (one, in this
  process, unless told otherwise), each keeping its models loaded from book to book; or on a
  Ray cluster (:mod:`fairytale.library_ray`): planning and layout as CPU tasks, painting on
  actors that each hold a GPU and keep the pipeline loaded across books (without GPUs, actors
  on one CPU each make whole books).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fairytale.book_lock import book_lock
from fairytale.errors import FairytaleError, Interrupted
from fairytale.files import can_create_files_in, ensure_dir, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.nlp import PlannerModels
    from fairytale.render import Illustrator, RenderResult, RenderSettings

STORY_SUFFIX = ".txt"
#: Settings that only decide how fast pictures come, not what they or the PDF are.
_SPEED_ONLY = frozenset({"device", "batch_size", "low_vram"})
#: Settings the manifest records resolved (None in the settings means "the model's default").
_RESOLVED = frozenset({"width", "height", "guidance", "consistency"})

Status = Literal["made", "finished", "failed"]
#: A write failed for want of space: every book after it would fail the same way.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
NOT_STARTED_DISK_FULL = "not started: the disk is full (free some space, then run the same command again)"


@dataclass(frozen=True)
class PlanOptions:
    """What ``fairytale book`` is told about planning, the same for every story."""

    author: str | None = None
    words_per_page: int | None = None
    seed: int | None = None
    ner_model: str | None = None
    qa_model: str | None = None
    nli_model: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class LibraryBook:
    """One story of the library and where its book goes."""

    story: Path
    pdf: Path

    @property
    def name(self) -> str:
        return self.story.stem

    @property
    def book_dir(self) -> Path:
        return self.pdf.with_suffix("")

    @property
    def plan_file(self) -> Path:
        return self.book_dir / "plan.json"


@dataclass
class BookOutcome:
    """How one book went."""

    name: str
    pdf: Path
    status: Status
    pages: int = 0
    painted: int = 0
    reused: int = 0
    seconds: float = 0.0
    planned: bool = False  # planned in this run (False: its plan.json was kept)
    error: str | None = None
    disk_full: bool = False  # it failed for want of disk space: the library stops starting books


@dataclass
class LibraryReport:
    """Every book of a run, in story order."""

    books: list[BookOutcome]
    seconds: float
    where: str

    @property
    def failed(self) -> list[BookOutcome]:
        return [b for b in self.books if b.status == "failed"]

    @property
    def made(self) -> list[BookOutcome]:
        return [b for b in self.books if b.status == "made"]

    @property
    def painted(self) -> int:
        return sum(b.painted for b in self.books)


# --------------------------------------------------------------------------- the books


def find_books(stories_dir: Path, out: Path) -> list[LibraryBook]:
    """The stories of ``stories_dir`` (``*.txt``, in name order) and their books in ``out``."""
    stories_dir, out = Path(stories_dir), Path(out)
    if not stories_dir.is_dir():
        raise FairytaleError(f"Stories folder not found: {stories_dir}")
    stories = sorted(p for p in stories_dir.iterdir() if p.suffix.lower() == STORY_SUFFIX and p.is_file())
    if not stories:
        raise FairytaleError(f"No stories in {stories_dir}: put one .txt file per story there")
    stems = [story.stem for story in stories]
    clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashes:
        raise FairytaleError(
            f"Two stories would make the same book: {', '.join(clashes)} (rename one of them)"
        )
    if out.exists() and not out.is_dir():
        raise FairytaleError(f"--out must be a folder, but {out} is a file")
    ensure_dir(out)
    if not can_create_files_in(out):
        raise FairytaleError(f"Output folder is not writable: {out}")
    return [LibraryBook(story, out / f"{story.stem}.pdf") for story in stories]


def is_finished(book: LibraryBook, settings: RenderSettings) -> bool:
    """Whether ``book`` was laid out after its plan last changed, with these picture and print
    settings (speed-only ones, like the device, do not matter)."""
    from fairytale.render.manifest import MANIFEST_NAME, load_manifest

    manifest_file = book.book_dir / MANIFEST_NAME
    if not (book.pdf.is_file() and book.plan_file.is_file() and manifest_file.is_file()):
        return False
    if manifest_file.stat().st_mtime_ns < book.plan_file.stat().st_mtime_ns:
        return False  # the plan was edited after the book was made
    try:
        manifest = load_manifest(book.book_dir)
    except FairytaleError:
        return False
    if Path(manifest.pdf).resolve() != book.pdf.resolve():
        return False
    for key, value in settings.as_dict().items():
        if key in _SPEED_ONLY or (key in _RESOLVED and value is None):
            continue
        if manifest.settings.get(key) != value:
            return False
    return True


def finished_outcome(book: LibraryBook) -> BookOutcome:
    from fairytale.render.manifest import load_manifest

    manifest = load_manifest(book.book_dir)
    return BookOutcome(book.name, book.pdf, "finished", pages=len(manifest.pages), reused=len(manifest.pages))


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a write refused for want of space
    (a full disk, an exhausted quota)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def describe_error(exc: BaseException) -> str:
    """One line for the summary: a user error as it is, anything else with its type and where."""
    if isinstance(exc, FairytaleError):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"


# --------------------------------------------------------------------------- one worker


class Workshop:
    """What one worker keeps loaded from book to book: the planner's models, the prompt
    tokenizer and the painting pipeline. Each stage is safe to call again after a failure."""

    def __init__(self, settings: RenderSettings, plan_options: PlanOptions) -> None:
        self.settings = settings
        self.plan_options = plan_options
        self._planner: PlannerModels | None = None
        self._count_tokens: Callable[[str], int] | None = None
        self._illustrator: Illustrator | None = None

    def _planner_models(self) -> PlannerModels:
        from fairytale.nlp import Judge, NameFinder, PlannerModels, Reader, load_planner_models

        o = self.plan_options
        if self._planner is None:
            self._planner = load_planner_models(o.ner_model, o.qa_model, o.nli_model, o.device)
        loaded = self._planner
        # Fresh answer caches for every story (the loaded pipelines are shared): a story's
        # questions are batched exactly as `fairytale book` batches them, so its plan is the same.
        return PlannerModels(
            names=NameFinder(loaded.names.tagger),
            reader=Reader(loaded.reader.pipe),
            judge=Judge(loaded.judge.pipe),
            ids=dict(loaded.ids),
        )

    def _tokens(self) -> Callable[[str], int]:
        if self._count_tokens is None:
            from fairytale import registry
            from fairytale.prompts import clip_token_counter

            tokenizer = registry.load_prompt_tokenizer(self.settings.backend, self.settings.model)
            self._count_tokens = clip_token_counter(tokenizer)
        return self._count_tokens

    def illustrator(self) -> Illustrator:
        if self._illustrator is None:
            from fairytale.render import load_illustrator

            self._illustrator = load_illustrator(self.settings)
        return self._illustrator

    def plan(self, book: LibraryBook) -> bool:
        """Write the book's ``plan.json`` unless it has one (kept, with any edits); returns
        whether it planned. A plan made from another version of the story is refused."""
        from fairytale.plan import load_plan, save_plan

        with book_lock(book.book_dir):
            if book.plan_file.exists():
                existing = load_plan(book.plan_file)
                if existing.source.sha256 and existing.source.sha256 != sha256_file(book.story):
                    raise FairytaleError(
                        f"{book.plan_file} was planned from another version of {book.story.name}; "
                        "delete it to plan the story again"
                    )
                return False
            from fairytale.planner import plan_story
            from fairytale.story import read_story

            o = self.plan_options
            read_story(book.story)  # a story that cannot be read fails before any model loads
            plan = plan_story(
                book.story, author=o.author, words_per_page=o.words_per_page, seed=o.seed,
                ner_model=o.ner_model, qa_model=o.qa_model, nli_model=o.nli_model, model=self.settings.model,
                backend=self.settings.backend, device=o.device, models=self._planner_models(),
                count_tokens=self._tokens(),
            )  # fmt: skip
            save_plan(plan, book.plan_file)
            return True

    def paint(self, book: LibraryBook) -> RenderResult:
        """Paint the book's missing pictures (portraits included) into its cache."""
        from fairytale.render import render_book

        return render_book(
            book.plan_file,
            book.pdf,
            self.settings,
            illustrator=self.illustrator(),
            progress=False,
            lay_out=False,
        )

    def lay_out(self, book: LibraryBook) -> RenderResult:
        """Page files, PDF and manifest, from the cached pictures (no model is loaded)."""
        from fairytale.render import render_book

        return render_book(book.plan_file, book.pdf, self.settings, progress=False)

    def make(self, book: LibraryBook, on_pages: PagesCallback | None = None) -> BookOutcome:
        """The whole book on this worker: plan, paint and lay out, as ``fairytale book`` does.
        ``on_pages(painted, to_paint)`` hears how its painting goes (see :func:`page_counter`)."""
        from fairytale.render import render_book

        started = time.perf_counter()
        try:
            planned = self.plan(book)
            result = render_book(
                book.plan_file, book.pdf, self.settings, illustrator=self.illustrator(),
                progress=page_counter(on_pages) if on_pages else False,
            )  # fmt: skip
        except Exception as exc:  # one bad story never stops the others
            return BookOutcome(
                book.name,
                book.pdf,
                "failed",
                seconds=time.perf_counter() - started,
                error=describe_error(exc),
                disk_full=is_disk_full(exc),
            )
        return BookOutcome(
            book.name, book.pdf, "made", pages=len(result.pages), painted=len(result.painted), reused=len(result.reused),
            seconds=time.perf_counter() - started, planned=planned,
        )  # fmt: skip

    def close(self) -> None:
        if self._illustrator is not None:
            self._illustrator.close()
            self._illustrator = None
        self._planner = None


# --------------------------------------------------------------------------- progress

#: ``(painted, to_paint)``: a worker's painting of its book so far (``to_paint`` 0: not painting).
PagesCallback = Callable[[int, int], None]


def page_counter(on_pages: PagesCallback) -> Any:
    """A :class:`~fairytale.render.progress.RenderProgress` that only counts the pages painted
    (portraits, then pages, each start from 0) and tells ``on_pages``."""
    from fairytale.render.progress import RenderProgress

    class PageCounter(RenderProgress):
        def start_pages(self, total: int) -> None:
            self.painted, self.to_paint = 0, total
            on_pages(0, total)

        def pages_done(self, count: int, seconds_per_page: float) -> None:
            self.painted += count
            on_pages(self.painted, self.to_paint)

    return PageCounter()


def in_hand_text(book: str, painted: int, to_paint: int) -> str:
    """What a worker's line says about its book: its name, and the pages painted when painting."""
    return f"{book}: painting {painted}/{to_paint}" if to_paint else book


class LibraryProgress:
    """One view across books: a bar of books done, the stage counts, a line per book done, and
    a live line per worker naming the book it is making (gone when that book is done)."""

    def __init__(self, total: int, show: bool = True, console: Any = None) -> None:
        self.total = total
        self.show = show
        self.console = console  # None: rich's own (standard output)
        self.counts = {"planned": 0, "painted": 0}
        self._progress: Any = None
        #: worker number -> what its line says (see :func:`in_hand_text`), while it makes a book
        self.in_hand: dict[int, str] = {}
        self._books_in_hand: dict[int, str] = {}
        self._worker_tasks: dict[int, Any] = {}

    def __enter__(self) -> LibraryProgress:
        if self.show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            from rich.text import Text

            class CountColumn(MofNCompleteColumn):
                """k/n, or nothing for a worker's line that has no count yet."""

                def render(self, task: Any) -> Any:
                    return Text("") if task.total is None else super().render(task)

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), CountColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[stages]}"), transient=False, console=self.console,
            )  # fmt: skip
            self._progress.start()
            self._task = self._progress.add_task("Books", total=self.total, stages="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            for task in self._worker_tasks.values():  # (stopped half-way: no worker goes on)
                self._progress.remove_task(task)
            self._progress.stop()

    def _stages(self) -> str:
        return " · ".join(f"{n} {stage}" for stage, n in self.counts.items() if n)

    def stage(self, stage: str) -> None:
        """A book got through ``stage`` (planned, painted)."""
        self.counts[stage] = self.counts.get(stage, 0) + 1
        if self._progress is not None:
            self._progress.update(self._task, stages=self._stages())

    def working(self, worker: int, book: str, painted: int = 0, to_paint: int = 0) -> None:
        """Worker ``worker`` (1, 2, ...) is making ``book``, ``painted`` of its ``to_paint``
        pages painted so far (``to_paint`` 0: not painting yet)."""
        text = in_hand_text(book, painted, to_paint)
        same_book = self._books_in_hand.get(worker) == book
        if same_book and self.in_hand.get(worker) == text:
            return
        self._books_in_hand[worker], self.in_hand[worker] = book, text
        if self._progress is None:
            return
        task = self._worker_tasks.get(worker)
        if task is not None and same_book and to_paint:
            self._progress.update(task, total=to_paint, completed=painted, stages="painting pages")
            return
        # A new book (or no count any more: rich cannot take a task's total away): a fresh line,
        # its clock from 0.
        if task is not None:
            self._progress.remove_task(task)
        from rich.markup import escape

        self._worker_tasks[worker] = self._progress.add_task(
            f"  worker {worker} · {escape(book)}", total=to_paint or None, completed=painted,
            stages="painting pages" if to_paint else "",
        )  # fmt: skip

    def _free(self, book: str) -> None:
        """The worker whose line shows ``book`` has it no more: its line goes."""
        for worker in [w for w, name in self._books_in_hand.items() if name == book]:
            del self._books_in_hand[worker], self.in_hand[worker]
            task = self._worker_tasks.pop(worker, None)
            if task is not None and self._progress is not None:
                self._progress.remove_task(task)

    def done(self, outcome: BookOutcome) -> None:
        self._free(outcome.name)
        if self._progress is None:
            return
        mark = {"made": "[green]✓[/]", "finished": "[dim]=[/]", "failed": "[red]✗[/]"}[outcome.status]
        detail = {
            "made": f"{outcome.painted} pictures painted, {outcome.reused} reused",
            "finished": "already finished",
            "failed": outcome.error or "failed",
        }[outcome.status]
        from rich.markup import escape  # names and errors are the user's text: no markup in them

        self._progress.console.print(
            f"{mark} {escape(outcome.name)}: {escape(detail)}", highlight=False, markup=True
        )
        self._progress.update(self._task, advance=1)


# --------------------------------------------------------------------------- running it


def make_library(
    stories_dir: Path,
    out: Path,
    settings: RenderSettings,
    plan_options: PlanOptions | None = None,
    *,
    workers: int = 1,
    threads: int | None = None,
    ray_address: str | None = None,
    painters: int | None = None,
    stage_timeout: float | None = None,
    split_stages: bool | None = None,
    progress: bool = True,
) -> LibraryReport:
    """Plan, paint and lay out every story of ``stories_dir`` into ``out`` (see the module
    docstring). ``workers`` processes on this machine (each on ``threads`` CPU threads), or
    the Ray cluster at ``ray_address`` ("auto": the one this machine belongs to) with
    ``painters`` actors (default: one painter per GPU; on a cluster without GPUs, one actor per
    CPU making whole books; ``split_stages`` chooses, see :mod:`fairytale.library_ray`).
    Never raises for one book: failures are in the report."""
    from fairytale.render import get_backend

    started = time.perf_counter()
    plan_options = plan_options or PlanOptions()
    get_backend(settings.backend)(settings)  # a bad backend or model fails before any book
    if workers < 1:
        raise FairytaleError(f"--workers must be at least 1, not {workers}")
    if threads is not None and threads < 1:
        raise FairytaleError(f"--threads must be at least 1, not {threads}")
    if painters is not None and painters < 1:  # (none would make the books, each would fail)
        raise FairytaleError(f"--painters must be at least 1, not {painters}")
    books = find_books(stories_dir, out)
    outcomes: dict[str, BookOutcome] = {}
    todo = []
    for book in books:
        if is_finished(book, settings):
            outcomes[book.name] = finished_outcome(book)
        else:
            todo.append(book)
    try:
        where = _make(todo, books, settings, plan_options, workers, threads, ray_address, painters, stage_timeout,
                      split_stages, progress, outcomes)  # fmt: skip
    except KeyboardInterrupt:  # Ctrl-C: what is finished stays finished; the same command goes on
        finished = sum(is_finished(book, settings) for book in books)
        raise Interrupted(
            f"{finished} of {len(books)} books finished (the others keep the pictures they had painted)"
        ) from None
    return LibraryReport([outcomes[b.name] for b in books], time.perf_counter() - started, where)


def _make(
    todo: list[LibraryBook],
    books: list[LibraryBook],
    settings: RenderSettings,
    plan_options: PlanOptions,
    workers: int,
    threads: int | None,
    ray_address: str | None,
    painters: int | None,
    stage_timeout: float | None,
    split_stages: bool | None,
    progress: bool,
    outcomes: dict[str, BookOutcome],
) -> str:
    """Make the books of ``todo`` where :func:`make_library` was told to; returns where."""
    with LibraryProgress(len(books), show=progress) as view:
        for outcome in outcomes.values():
            view.done(outcome)
        if ray_address is not None:
            from fairytale.library_ray import make_on_ray

            where = make_on_ray(
                todo,
                settings,
                plan_options,
                ray_address,
                painters,
                stage_timeout,
                view,
                outcomes,
                split_stages,
            )
        elif workers == 1 or len(todo) <= 1:
            where = "this process"
            _make_here(todo, settings, plan_options, threads, view, outcomes)
        else:
            where = f"{workers} worker processes"
            _make_in_pool(todo, settings, plan_options, workers, threads, view, outcomes)
    return where


def use_threads(threads: int | None) -> None:
    """Keep this process's work on ``threads`` CPU threads (None: as it is): torch's kernels
    and the scaling and encoding of the PDF's pictures."""
    if threads:
        import torch

        from fairytale.pdf import writer

        torch.set_num_threads(threads)
        writer.PICTURE_THREADS = threads


def _make_here(
    books: Iterable[LibraryBook],
    settings: RenderSettings,
    plan_options: PlanOptions,
    threads: int | None,
    view: LibraryProgress,
    outcomes: dict[str, BookOutcome],
) -> None:
    use_threads(threads)
    workshop = Workshop(settings, plan_options)
    books = list(books)
    try:
        for index, book in enumerate(books):
            view.working(1, book.name)
            outcome = workshop.make(book, on_pages=functools.partial(view.working, 1, book.name))
            outcomes[book.name] = outcome
            view.done(outcome)
            if outcome.disk_full:  # the books after it would fail the same way, one by one
                _fail(books[index + 1 :], NOT_STARTED_DISK_FULL, view, outcomes)
                break
    finally:
        workshop.close()


# One Workshop per worker process of the local pool, made by its initializer.
_WORKSHOP: Workshop | None = None
# What the pool's workers say of its books, three ints a book (each written by its worker only):
# the number of the worker that took it in hand (0: none yet), its pages painted, and to paint.
_STARTED: Any = None
_IN_HAND = 3
# This pool worker's number (1, 2, ...; counted across the pools of one library).
_WORKER = 0
# Set while a pool worker has no book in hand (for its watchdog, see _watch_library).
_IDLE = threading.Event()
_IDLE.set()
#: How often a pool worker checks that the library's process is still there.
PARENT_CHECK_SECONDS = 1.0
#: How long a worker whose library's process is gone gives its book to stop cleanly.
ORPHAN_STOP_SECONDS = 60.0


def _watch_library(library_pid: int) -> None:
    """A pool worker's watchdog thread. The library's process ends its workers itself, unless
    it is killed (``kill -9``, the out-of-memory killer): then nothing would ever end them, and
    each would wait for books forever, its models (and its GPU's memory) held. So once that
    process is gone, the book in hand stops as Ctrl-C stops it (finished pictures kept, its
    lock freed) and the worker ends."""
    while os.getppid() == library_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    if not _IDLE.is_set():
        os.kill(os.getpid(), signal.SIGINT)  # heard while a book is made (_make_in_worker)
        _IDLE.wait(timeout=ORPHAN_STOP_SECONDS)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _end_without_teardown() -> None:
    """The last exit handler of a pool worker: its books are made and its files closed, so the
    process ends here instead of tearing its modules down one by one (seconds with torch,
    flair and diffusers loaded, which the library would wait for)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _start_worker(
    settings: RenderSettings, plan_options: PlanOptions, threads: int, counter: Any, started: Any = None
) -> None:
    global _WORKSHOP, _STARTED, _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until it makes a book (see _make_in_worker)
    atexit.register(_end_without_teardown)  # registered first, so it runs after every other handler
    use_threads(threads)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    _WORKER = index + 1
    if settings.device in (None, "cuda"):
        import torch

        # One GPU per worker, in turn (counted here: the coordinator never loads torch for it).
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus:
            settings = settings.with_(device=f"cuda:{index % gpus}")
    _WORKSHOP = Workshop(settings, plan_options)
    _STARTED = started
    threading.Thread(
        target=_watch_library, args=(os.getppid(),), name="library-watchdog", daemon=True
    ).start()


def _stop_this_book(signum: int, frame: Any) -> None:
    """A worker's SIGINT handler while it makes a book: the book stops as `fairytale book`
    stops on Ctrl-C (finished pictures kept, its lock freed). Further SIGINTs are ignored, so
    that clean-up runs undisturbed (a terminal's Ctrl-C reaches the worker, and the library
    passes it on too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _make_in_worker(book: LibraryBook, index: int) -> BookOutcome:
    assert _WORKSHOP is not None, "worker not started"
    on_pages: PagesCallback | None = None
    if _STARTED is not None:
        flags, at = _STARTED, index * _IN_HAND
        flags[at] = _WORKER

        def on_pages(painted: int, to_paint: int) -> None:  # read by the library's process
            flags[at + 1], flags[at + 2] = painted, to_paint

    _IDLE.clear()
    signal.signal(signal.SIGINT, _stop_this_book)
    try:
        return _WORKSHOP.make(book, on_pages=on_pages)
    finally:
        # Between books a worker only waits for the next one: a Ctrl-C then ends nothing half
        # done, and the pool's shutdown ends the worker (without a traceback on the terminal).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _IDLE.set()


def _make_in_pool(
    books: list[LibraryBook],
    settings: RenderSettings,
    plan_options: PlanOptions,
    workers: int,
    threads: int | None,
    view: LibraryProgress,
    outcomes: dict[str, BookOutcome],
) -> None:
    """Make ``books`` in ``workers`` processes.

    A worker process that dies (killed, out of memory, a crash in native code) breaks the
    whole pool, and every book in hand with it. The books no worker had started go on in a
    fresh pool; those in hand are made again one at a time, so that the book that kills its
    worker is found and reported failed while the others are made.
    """
    import multiprocessing

    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    counter = context.Value("i", 0)
    pending: list[LibraryBook] = list(books)
    suspects: list[LibraryBook] = []  # in hand when a worker died: each made alone
    while pending or suspects:
        if any(outcome.disk_full for outcome in outcomes.values()):
            _fail(suspects + pending, NOT_STARTED_DISK_FULL, view, outcomes)
            return
        alone = bool(suspects)
        batch = suspects if alone else pending
        made_before = len(outcomes)
        in_hand, unstarted = _pool_round(
            batch, 1 if alone else workers, context, counter, settings, plan_options, threads, view, outcomes
        )
        if not in_hand and unstarted and len(outcomes) == made_before:
            # No book was in hand and none was made: the workers die before they take one.
            _fail(unstarted, "its worker process could not start", view, outcomes)
            return
        if alone:
            _fail(in_hand, "its worker process was killed or crashed while making it", view, outcomes)
            suspects = unstarted
        else:
            suspects, pending = in_hand, unstarted


def _fail(
    books: list[LibraryBook], error: str, view: LibraryProgress, outcomes: dict[str, BookOutcome]
) -> None:
    for book in books:
        outcome = BookOutcome(book.name, book.pdf, "failed", error=error)
        outcomes[book.name] = outcome
        view.done(outcome)


def _pool_round(
    books: list[LibraryBook],
    workers: int,
    context: Any,
    counter: Any,
    settings: RenderSettings,
    plan_options: PlanOptions,
    threads: int,
    view: LibraryProgress,
    outcomes: dict[str, BookOutcome],
) -> tuple[list[LibraryBook], list[LibraryBook]]:
    """Make ``books`` in one pool of ``workers`` processes, recording each outcome. If a worker
    died, returns the books it broke off: ``(in hand, not started)``, each in story order."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    started = context.Array("i", len(books) * _IN_HAND, lock=False)  # each worker writes its own books' ints
    broken: list[int] = []
    with (
        ProcessPoolExecutor(
            max_workers=min(workers, len(books)),
            mp_context=context,
            initializer=_start_worker,
            initargs=(settings, plan_options, threads, counter, started),
        ) as pool,
        _stopped_with(pool),
    ):
        with _ctrl_c_ignored_by_new_processes():  # the workers start here
            futures = {pool.submit(_make_in_worker, book, index): index for index, book in enumerate(books)}
        running = set(futures)
        while running:
            # Woken now and then, to show which book each worker is on (see show_in_hand).
            finished, running = wait(running, timeout=IN_HAND_SECONDS, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=futures.__getitem__):
                if _record(future, books[futures[future]], outcomes, view, broken, futures[future]):
                    for waiting in futures:  # the disk is full: the books no worker has taken would fail too
                        waiting.cancel()  # (those already running, or queued to a worker, go on)
            show_in_hand(started, [(futures[f], books[futures[f]]) for f in running], view)
    broken.sort()
    return [books[i] for i in broken if started[i * _IN_HAND]], [
        books[i] for i in broken if not started[i * _IN_HAND]
    ]


#: How often the library's process looks at what its pool's workers have in hand.
IN_HAND_SECONDS = 0.5


def show_in_hand(flags: Any, books: list[tuple[int, LibraryBook]], view: LibraryProgress) -> None:
    """Show on ``view`` the worker and pages of each of ``books`` (``(index, book)``, not done)
    that a worker has in hand, as the pool's shared ``flags`` say (see ``_STARTED``)."""
    for index, book in books:
        worker, painted, to_paint = flags[index * _IN_HAND : (index + 1) * _IN_HAND]
        if worker:
            view.working(worker, book.name, painted, to_paint)


def _record(
    future: Any,
    book: LibraryBook,
    outcomes: dict[str, BookOutcome],
    view: LibraryProgress,
    broken: list[int],
    index: int,
) -> bool:
    """Record how the pool's ``future`` made ``book``; returns whether the disk is full."""
    from concurrent.futures import CancelledError
    from concurrent.futures.process import BrokenProcessPool

    try:
        outcome = future.result()
    except BrokenProcessPool:
        broken.append(index)
        return False
    except CancelledError:  # not started: the disk is full
        outcome = BookOutcome(book.name, book.pdf, "failed", error=NOT_STARTED_DISK_FULL)
    except Exception as exc:  # the outcome could not come back from the worker
        outcome = BookOutcome(book.name, book.pdf, "failed", error=describe_error(exc))
    outcomes[book.name] = outcome
    view.done(outcome)
    return outcome.disk_full


@contextlib.contextmanager
def _ctrl_c_ignored_by_new_processes() -> Iterator[None]:
    """Processes started in the block begin with SIGINT ignored (a process inherits that), so
    a Ctrl-C while a worker is still starting up prints no traceback from it; the worker
    listens again while it makes a book (:func:`_make_in_worker`). This process ignores a
    Ctrl-C only for the moment the block takes (it only starts processes)."""
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _stopped_with(pool: Any) -> Iterator[None]:
    """On Ctrl-C in the block: start no other book, stop the workers' books as Ctrl-C stops
    `fairytale book`, and return once every worker has ended (no process is left running).

    A terminal's Ctrl-C reaches the workers as well; a notebook's interrupt or ``kill -INT``
    reaches this process only, so it is passed on to them. A second Ctrl-C while they stop
    kills them: every file is written atomically, so that loses nothing finished.
    """
    try:
        yield
    except KeyboardInterrupt:
        # The executor has no public list of its processes; they are alive until shut down.
        workers = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        try:
            for worker in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGINT)
            for worker in workers:
                worker.join()
        except KeyboardInterrupt:
            for worker in workers:
                worker.kill()
                worker.join()
        raise
