"""What the studio does, as plain functions over a book folder (the CLI or a script can call them too).

The book folder is the only state: ``plan.json`` (pages, characters, seeds, page locks),
``cache/`` (every picture ever painted, by key, and ``cache/history.json``, which pictures each
page has had), ``references/``, ``pages/`` and ``manifest.json``, with the PDF beside the folder
(``books/ginger/`` → ``books/ginger.pdf``), as ``fairytale book`` leaves them. So a closed tab or
a crash loses nothing, and the CLI and the studio work on the same book.

Every action that paints holds the book's lock (:mod:`fairytale.book_lock`; ``render_book``
takes it itself), so one painting job runs per book across processes. A loaded model is kept in
an :class:`IllustratorPool` between actions and released when it has been idle a while.

>>> book = create_book("books", story_text, title="Ginger", options=options)   # doctest: +SKIP
>>> paint_book(book, options, pool)                                           # doctest: +SKIP
>>> repaint_page(book, 2, options, pool, prompt="Ginger on a hill at sunset")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fairytale.book_lock import book_lock
from fairytale.errors import FairytaleError, PlanError
from fairytale.files import atomic_path, atomic_write_text, ensure_dir
from fairytale.plan import BookPlan, Page, Reference, load_plan, save_plan
from fairytale.render.progress import RenderProgress
from fairytale.render.settings import RenderSettings
from fairytale.story import LINE_BREAKS

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from fairytale.plan_edits import Recomposed
    from fairytale.publish import PublishResult
    from fairytale.render import RenderResult
    from fairytale.render.illustrator import Illustrator
    from fairytale.render.page_keys import PageKeys
    from fairytale.render.page_store import PageStore, StoredPicture
    from fairytale.render.previews import PreviewCallback

PLAN_NAME = "plan.json"
STORY_NAME = "story.txt"
HISTORY_NAME = "history.json"
#: Largest picture a person may upload as a reference portrait.
MAX_PICTURE_BYTES = 20 * 1024 * 1024
PICTURE_FORMATS = {"PNG", "JPEG", "WEBP"}
#: Most pixels an uploaded picture may have (a 48-megapixel phone photo passes; a decompression
#: bomb, a few KB that decode to gigabytes, does not).
MAX_PICTURE_PIXELS = 64 * 10**6
#: An uploaded picture is kept at most this many pixels a side (a portrait needs no more).
MAX_PICTURE_SIDE = 2048
#: How many pictures "four candidates" paints.
CANDIDATES = 4
#: A live preview every this many denoising steps (when previews are shown).
PREVIEW_EVERY = 5
#: What the studio tells a person about drafts and finals.
DRAFT_NOTE = (
    "A draft is a quick picture to look at first. Its final is a new painting from the same seed, "
    "not an enlargement of the draft, so details can change."
)

#: "draft": the page has a quick draft picture and no final one yet (see :mod:`fairytale.render.drafts`)
PageStatus = Literal["painted", "draft", "to paint", "locked"]


class PaintingStopped(FairytaleError):
    """The person pressed stop; the pictures finished so far are kept in the cache."""


class PageLockedError(FairytaleError):
    """The page is locked: it keeps its picture until it is unlocked."""


@dataclass(frozen=True)
class StudioOptions:
    """The models and settings the studio plans and paints with (the CLI's options)."""

    settings: RenderSettings = field(default_factory=RenderSettings)
    ner_model: str | None = None
    qa_model: str | None = None
    nli_model: str | None = None
    words_per_page: int | None = None


@dataclass(frozen=True)
class Book:
    """A book folder: ``plan.json`` and the pictures; the PDF is written beside it."""

    folder: Path

    @property
    def plan_file(self) -> Path:
        return self.folder / PLAN_NAME

    @property
    def pdf(self) -> Path:
        return self.folder.parent / f"{self.folder.name}.pdf"

    def plan(self) -> BookPlan:
        return load_plan(self.plan_file)

    def page(self, plan: BookPlan, number: int) -> Page:
        if not 1 <= number <= len(plan.pages):
            raise PlanError(f"No page {number} in the book (pages 1-{len(plan.pages)})")
        return plan.pages[number - 1]


# -- start: a new book from a story, or an existing book folder ------------------------------


def open_book(folder: Path | str) -> Book:
    """The book in ``folder`` (one made by ``fairytale book`` or the studio); its plan is checked."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise FairytaleError(f"Book folder not found: {folder}")
    book = Book(folder)
    if not book.plan_file.is_file():
        raise FairytaleError(
            f"{folder} is not a book folder: it has no {PLAN_NAME} (make one with `fairytale book` or the studio)"
        )
    book.plan()  # a broken plan is one line now, not an error later
    return book


def _slug(title: str) -> str:
    """A folder name from a title: 'Zoë and the Lighthouse' → 'zoe-and-the-lighthouse'."""
    plain = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", plain.casefold()).strip("-")[:40].strip("-")
    return slug or "book"


def _new_folder(books_dir: Path, title: str) -> Path:
    base = _slug(title)
    for n in range(1, 1000):
        folder = books_dir / (base if n == 1 else f"{base}-{n}")
        if not folder.exists() and not folder.with_suffix(".pdf").exists():
            return folder
    raise FairytaleError(f"Too many books called '{base}' in {books_dir}")


def create_book(
    books_dir: Path | str,
    story_text: str | None = None,
    *,
    story_file: Path | str | None = None,
    title: str | None = None,
    author: str | None = None,
    style: str | None = None,
    seed: int | None = None,
    options: StudioOptions | None = None,
    count_tokens: Callable[[str], int] | None = None,
    progress: StudioProgress | None = None,
) -> Book:
    """Plan a new book from pasted ``story_text`` or an uploaded ``story_file`` into a new
    folder under ``books_dir`` (named after the title). The story is checked like the CLI's
    input (size, encoding, not binary) before any model loads; nothing is left behind when
    planning fails. ``progress`` hears each planning step (Stop ends planning between steps
    with :class:`PaintingStopped`, nothing left behind)."""
    from fairytale.planner import compose_prompt, plan_story
    from fairytale.story import MAX_BYTES, read_story, split_title

    options = options or StudioOptions()
    if (story_text is None) == (story_file is None):
        raise FairytaleError("Paste a story or upload a story file (one of them)")
    if story_text is not None:
        story_text = pasted_text(story_text)
    if story_file is not None:
        story_file = Path(story_file)
        if story_file.is_file() and story_file.stat().st_size > MAX_BYTES:
            raise FairytaleError(
                f"The story file is {story_file.stat().st_size // 1024} KB, too long for a picture book (the limit is {MAX_BYTES // 1024} KB)"
            )
        data = story_file.read_bytes() if story_file.is_file() else None
        if data is None:
            raise FairytaleError(f"Story file not found: {story_file}")
    else:
        data = story_text.encode("utf-8")
        if not story_text.strip():
            raise FairytaleError("The story is empty: paste the story's text first")
        if len(data) > MAX_BYTES:
            raise FairytaleError(
                f"The story is {len(data) // 1024} KB, too long for a picture book (the limit is {MAX_BYTES // 1024} KB)"
            )
    title = pasted_text(title or "").strip() or None
    author = pasted_text(author or "").strip() or None
    style = pasted_text(style) if style else style
    books_dir = ensure_dir(Path(books_dir).expanduser().resolve())

    # Read it once from a scratch file to learn the title (and refuse bad input) before a folder is
    # made. The scratch file has the upload's name, which is the title when the story has none, as
    # in `fairytale plan`; the story's problems name what the person gave, not the scratch file.
    scratch_dir = books_dir / f".story-{threading.get_ident()}-{time.monotonic_ns()}"
    scratch = scratch_dir / (Path(story_file).name if story_file is not None else STORY_NAME)
    given = Path(story_file).name if story_file is not None else "The pasted story"
    try:
        ensure_dir(scratch_dir)
        scratch.write_bytes(data)
        try:
            story = read_story(scratch, title=title)
        except FairytaleError as exc:
            raise FairytaleError(str(exc).replace(str(scratch), given)) from None
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    if story_text is not None and title is None and split_title(story_text.strip())[0] is None:
        raise FairytaleError(
            "Give the book a title: the story does not start with a short title line (and a blank line)"
        )
    folder = _new_folder(books_dir, story.title)
    ensure_dir(folder)
    try:
        story_path = folder / STORY_NAME
        with atomic_path(story_path) as tmp:
            tmp.write_bytes(data)
        settings = options.settings
        if count_tokens is None:
            count_tokens = _token_counter(settings)
        plan = plan_story(
            story_path,
            title=story.title,  # as read above: the upload's name, not "story.txt", when it has none
            author=author,
            words_per_page=options.words_per_page,
            seed=seed,
            ner_model=options.ner_model,
            qa_model=options.qa_model,
            nli_model=options.nli_model,
            model=settings.model,
            backend=settings.backend,
            device=settings.device,
            count_tokens=count_tokens,
            progress=progress.stage if progress is not None else False,
        )
        if style and style.strip():
            plan.style.description = style.strip()
            for page in plan.pages:
                page.set_composed_prompt(compose_prompt(plan, page, count_tokens))
        save_plan(plan, folder / PLAN_NAME)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # we made it just now: nothing of the person's is in it
        raise
    return Book(folder)


#: Characters a paste from a word processor carries that a page cannot print: line and page breaks
#: (those a story file may hold, and the page break) become new lines, other control characters go.
_BREAKS = str.maketrans(LINE_BREAKS | {"\f": "\n\n"})
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def pasted_text(text: str) -> str:
    """``text`` typed or pasted into the page, made printable: a lone surrogate (a broken emoji
    from the clipboard, which cannot be saved as UTF-8) becomes U+FFFD, line and page breaks
    become new lines, and other control characters are dropped."""
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _CONTROLS.sub("", text.translate(_BREAKS))


def _token_counter(settings: RenderSettings) -> Callable[[str], int]:
    from fairytale import registry
    from fairytale.prompts import clip_token_counter

    return clip_token_counter(registry.load_prompt_tokenizer(settings.backend, settings.model))


# -- the plan: pages, characters, and which pages an edit affects ------------------------------


@dataclass(frozen=True)
class PageView:
    """A page as the studio shows it: its plan, its current picture (if painted) and status."""

    number: int
    text: str
    prompt: str
    characters: list[str]
    seed: int
    locked: bool
    key: str
    picture: Path | None
    status: PageStatus


def _page_keys(book: Book, settings: RenderSettings) -> PageKeys:
    """The book's cache keys, made as ``render_book`` makes them; drafts are keyed too wherever
    the LCM-LoRA is at hand, since a page without a final picture may have a draft."""
    from fairytale.render import drafts, get_backend
    from fairytale.render.page_keys import PageKeys, embedding_hashes

    plan = book.plan()
    backend = get_backend(settings.backend)(settings.with_(draft=False))
    painter = get_backend(settings.backend)(drafts.draft_settings(settings.with_(draft=True), backend.family))
    try:
        draft_mark: str | None = drafts.lora_fingerprint(drafts.lora_source(settings, backend.family))
    except FairytaleError:
        if settings.draft:
            raise  # painting drafts needs the LoRA: say so now, in one line
        draft_mark = None  # no LoRA here: no draft can be in the cache either
    return PageKeys(
        plan, book.plan_file, backend, embedding_hashes(plan, book.plan_file), painter, draft_mark
    )


def _store(book: Book) -> PageStore:
    from fairytale.render.page_store import PageStore

    return PageStore(book.folder)


def _view(keys: PageKeys, store: PageStore, page: Page, max_repaints: int) -> PageView:
    """``page`` as the studio shows it; a placeholder a render with ``max_repaints`` would try
    again shows as still to paint."""
    cached = keys.look_up(page, store, drafts=keys.draft_mark is not None, max_repaints=max_repaints)
    found = cached.found
    status: PageStatus = (
        "locked"
        if page.locked and found
        else ("draft" if cached.draft and found else "painted" if found else "to paint")
    )
    return PageView(
        page.number,
        page.text,
        page.prompt,
        list(page.characters),
        page.seed,
        page.locked,
        cached.key,
        found.image if found else None,
        status,
    )


def page_views(book: Book, settings: RenderSettings) -> list[PageView]:
    """Every page with its current picture from the cache and whether it must be painted."""
    keys, store = _page_keys(book, settings), _store(book)
    return [_view(keys, store, page, settings.max_repaints) for page in keys.plan.pages]


def pages_to_paint(book: Book, settings: RenderSettings) -> list[int]:
    """Numbers of the pages that painting would paint now: those with no picture in the cache,
    and, painting finals, those with only a draft."""
    due: tuple[str, ...] = ("to paint",) if settings.draft else ("to paint", "draft")
    return [view.number for view in page_views(book, settings) if view.status in due]


def save_page(
    book: Book,
    number: int,
    *,
    text: str | None = None,
    prompt: str | None = None,
    characters: Sequence[str] | None = None,
) -> BookPlan:
    """Change a page's text, prompt or characters and save the plan (validated). A new prompt
    marks the page to paint (its cache key changes); a locked page refuses a new prompt."""
    text = pasted_text(text) if text is not None else None
    prompt = pasted_text(prompt) if prompt is not None else None
    plan = book.plan()
    page = book.page(plan, number)
    if prompt is not None and prompt.strip() != page.prompt:
        if page.locked:
            raise PageLockedError(f"Page {number} is locked: unlock it to change its prompt")
        if not prompt.strip():
            raise PlanError(f"The prompt of page {number} is empty")
        page.set_hand_written_prompt(prompt.strip())  # a later new description keeps it
    if text is not None:
        if not text.strip():
            raise PlanError(f"The text of page {number} is empty")
        page.text = text.strip()
    if characters is not None:
        known = {c.id for c in plan.characters}
        unknown = [c for c in characters if c not in known]
        if unknown:
            raise PlanError(f"Page {number}: no character {', '.join(unknown)} in the plan")
        from fairytale.scenes import refit_regions

        page.characters = list(characters)
        groups = {c.id: c.members for c in plan.characters if c.members}
        page.regions = refit_regions(page.regions, page.characters, groups)
    _save(book, plan)
    return plan


def save_character(
    book: Book,
    character_id: str,
    *,
    settings: RenderSettings,
    name: str | None = None,
    kind: str | None = None,
    description: str | None = None,
    main: bool | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> Recomposed:
    """Change a character card and save the plan. A new description composes the prompts of the
    pages showing the character again, except locked pages and prompts a person wrote; returns
    the pages composed again and those that kept a hand-written prompt (:func:`compose_page_prompt`
    composes one of them again)."""
    from fairytale.plan_edits import Recomposed, fingerprint_composed_prompts, recompose

    name, kind, description = (pasted_text(v) if v is not None else None for v in (name, kind, description))
    plan = book.plan()
    try:
        character = plan.character(character_id)
    except KeyError:
        raise PlanError(f"No character '{character_id}' in the plan") from None
    if name is not None:
        if not name.strip():
            raise PlanError("A character needs a name")
        character.name = name.strip()
    if kind is not None:
        character.kind = kind.strip() or None
    if main is not None:
        character.main = bool(main)
    result = Recomposed([], [])
    if description is not None and description.strip() != character.description:
        count_tokens = count_tokens or _token_counter(settings)
        fingerprint_composed_prompts(plan, count_tokens)  # before the change: see its docstring
        character.description = description.strip()
        locked = {p.number for p in plan.pages if p.locked}
        result = recompose(plan, {character.id}, count_tokens, keep=locked)
    _save(book, plan)
    return result


def recomposed_note(result: Recomposed) -> str:
    """What a new description did to the prompts, said for the studio's status line ("" for nothing)."""
    note = ""
    if result.changed:
        note += f"; pages to paint again: {', '.join(map(str, result.changed))}"
    if result.hand_written:
        pages = ", ".join(map(str, result.hand_written))
        note += (
            f"; page{'s' if len(result.hand_written) > 1 else ''} {pages} kept the prompt you wrote "
            "('Compose the prompt again' on a page replaces it)"
        )
    return note


def compose_page_prompt(
    book: Book, number: int, *, settings: RenderSettings, count_tokens: Callable[[str], int] | None = None
) -> str:
    """Replace page ``number``'s prompt, hand-written or not, with the one composed from the plan
    (its characters' descriptions, the scene, the style) and save the plan; returns the prompt.
    A locked page refuses."""
    from fairytale.planner import compose_prompt

    plan = book.plan()
    page = book.page(plan, number)
    if page.locked:
        raise PageLockedError(f"Page {number} is locked: unlock it to change its prompt")
    page.set_composed_prompt(compose_prompt(plan, page, count_tokens or _token_counter(settings)))
    _save(book, plan)
    return page.prompt


def _save(book: Book, plan: BookPlan) -> None:
    from fairytale.plan import dump_plan, parse_plan

    save_plan(parse_plan(dump_plan(plan), str(book.plan_file)), book.plan_file)


# -- the loaded model, kept between actions ---------------------------------------------------


class IllustratorPool:
    """Keeps one loaded illustrator between actions and frees it after ``idle_seconds`` unused.

    Settings that name another model (or device, precision, compile) load that one instead;
    settings that only change steps, guidance or size reuse the loaded one (``render_book``
    reconfigures it).
    """

    def __init__(self, idle_seconds: float = 600.0) -> None:
        self.idle_seconds = idle_seconds
        self._lock = threading.RLock()
        self._loaded: tuple[tuple, Illustrator] | None = None
        self._timer: threading.Timer | None = None
        self._users = 0
        # One pipeline paints one batch at a time: a second painting action (another book, another
        # tab) waits for the first to finish.
        self._painting = threading.Lock()

    @staticmethod
    def _identity(settings: RenderSettings) -> tuple:
        # Precision and compile are fixed when the model loads (render_book's check of a passed-in
        # illustrator compares the model files only). The studio's page paints with the settings it
        # was started with, but the actions take any options: another precision or --compile loads
        # the model again rather than painting in the loaded one's.
        return (
            settings.backend,
            settings.model,
            settings.device,
            settings.low_vram,
            settings.batch_size,
            settings.safety_model,
            settings.precision,
            settings.compile,
        )

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def borrow(self, settings: RenderSettings) -> _Borrowed:
        """``with pool.borrow(settings) as illustrator:`` — loads on first use."""
        return _Borrowed(self, settings)

    def _take(self, settings: RenderSettings) -> Illustrator:
        from fairytale.render import load_illustrator

        with self._lock:
            if self._timer:
                self._timer.cancel()
                self._timer = None
            identity = self._identity(settings)
            if self._loaded and self._loaded[0] != identity:
                self.release()
            if self._loaded is None:
                self._loaded = (identity, load_illustrator(settings))
            self._users += 1
            illustrator = self._loaded[1]
            # a preview decoder left by an earlier action would call that action's callback
            illustrator.previews = None
            return illustrator

    def _give_back(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._loaded is not None:
                self._timer = threading.Timer(self.idle_seconds, self._release_if_idle)
                self._timer.daemon = True
                self._timer.start()

    def _release_if_idle(self) -> None:
        with self._lock:
            if self._users == 0:
                self.release()

    def release(self) -> None:
        """Free the model now (GPU memory included)."""
        with self._lock:
            if self._loaded is not None:
                self._loaded[1].close()
                self._loaded = None


class _Borrowed:
    def __init__(self, pool: IllustratorPool, settings: RenderSettings) -> None:
        self.pool, self.settings = pool, settings

    def __enter__(self) -> Illustrator:
        self.pool._painting.acquire()
        try:
            return self.pool._take(self.settings)
        except BaseException:
            self.pool._painting.release()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            self.pool._give_back()
        finally:
            self.pool._painting.release()


# -- painting with live progress, stop and resume ---------------------------------------------


#: What a stopped painting says.
STOPPED = "Painting stopped; the finished pictures are kept — paint again to go on"


class StudioProgress(RenderProgress):
    """Progress the studio shows (page k of n, time left) and the stop button.

    ``stop()`` makes the painting loop end at its next denoising step with
    :class:`PaintingStopped`; pictures finished before that are in the cache, so painting
    again resumes where it stopped.
    """

    def __init__(self, stopped: str = STOPPED) -> None:
        self._stop = threading.Event()
        self.stopped = stopped  # what the stopped action says
        self.stage_text = ""
        self.total = 0
        self.done = 0
        self.current: list[int] = []
        self.step_done, self.steps = 0, 0  # denoising steps of the batch being painted
        self.seconds_per_page = 0.0
        self.warnings: list[str] = []

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _check(self) -> None:
        if self._stop.is_set():
            raise PaintingStopped(self.stopped)

    def stage(self, text: str) -> None:
        self.stage_text = text
        self.step_done = self.steps = 0
        self._check()

    def start_pages(self, total: int) -> None:
        self.total, self.done = total, 0
        self.stage_text = ""  # what came before the pages (portraits, loading) is over
        self._check()

    def batch(self, pages: Sequence[int]) -> None:
        self.current = list(pages)
        self.step_done = self.steps = 0
        self._check()

    def step(self, step: int, steps: int) -> None:
        self.step_done, self.steps = step, steps
        self._check()

    def pages_done(self, count: int, seconds_per_page: float) -> None:
        done = self.done + count
        self.seconds_per_page = (self.seconds_per_page * self.done + seconds_per_page * count) / max(1, done)
        self.done = done

    def end_pages(self) -> None:
        self.current = []
        self.step_done = self.steps = 0

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    @property
    def seconds_left(self) -> float | None:
        if not self.done:
            return None
        return self.seconds_per_page * (self.total - self.done)

    def describe(self) -> str:
        """'Painting page 3 of 8 · step 12 of 25 · about 40 s left', or the current stage
        ('Painting a new portrait of Zoe · step 3 of 25')."""
        steps = f" · step {self.step_done} of {self.steps}" if self.steps else ""
        if self.total and self.done < self.total:
            left = self.seconds_left
            text = f"Painting page {min(self.done + 1, self.total)} of {self.total}{steps}"
            return text + (f" · about {left:.0f} s left" if left is not None else "")
        if self.total:
            return f"Painted {self.done} of {self.total} pages · {self.stage_text}".rstrip(" ·")
        return self.stage_text + steps if self.stage_text else ""


def _settings(options: StudioOptions, draft: bool) -> RenderSettings:
    return options.settings.with_(draft=True) if draft else options.settings


def paint_book(
    book: Book,
    options: StudioOptions,
    pool: IllustratorPool,
    *,
    pages: list[int] | None = None,
    seed: int | None = None,
    progress: RenderProgress | None = None,
    draft: bool = False,
    on_preview: PreviewCallback | None = None,
    preview_every: int = PREVIEW_EVERY,
) -> RenderResult:
    """Paint every page not in the cache (or, with ``pages``, those pages with new seeds),
    skipping locked pages, and write the PDF beside the book folder. Raises
    :class:`~fairytale.book_lock.BookBusyError` when another job paints the book and
    :class:`PaintingStopped` when stopped.

    ``draft`` paints the missing pages as quick drafts; painting later without it paints the
    drafted pages again at full quality (new paintings from the same seeds) and keeps every
    other picture. ``on_preview`` receives a live preview of the pages being painted every
    ``preview_every`` steps (None: no previews, nothing extra loaded).
    """
    from fairytale.render import render_book

    settings = _settings(options, draft)
    if pages is None and not pool.loaded and not pages_to_paint(book, settings):
        # every picture is cached: lay out the book without loading a model
        result = render_book(book.plan_file, book.pdf, settings, progress=progress or False)
    else:
        with pool.borrow(settings) as illustrator:
            result = render_book(
                book.plan_file,
                book.pdf,
                settings,
                pages=pages,
                seed=seed,
                illustrator=illustrator,
                progress=progress or False,
                on_preview=on_preview,
                preview_every=preview_every,
            )
    remember_book(book)
    return result


def repaint_page(
    book: Book,
    number: int,
    options: StudioOptions,
    pool: IllustratorPool,
    *,
    prompt: str | None = None,
    new_seed: bool = False,
    progress: RenderProgress | None = None,
    draft: bool = False,
    on_preview: PreviewCallback | None = None,
    preview_every: int = PREVIEW_EVERY,
) -> RenderResult:
    """Fix one page: with ``prompt``, save it and paint the page from it; with ``new_seed``,
    paint it with a new seed (``draft``: as a draft). A locked page is refused. The PDF is
    written again."""
    plan = book.plan()
    if book.page(plan, number).locked:
        raise PageLockedError(f"Page {number} is locked: unlock it to paint it again")
    if prompt is not None:
        save_page(book, number, prompt=prompt)
    return paint_book(
        book,
        options,
        pool,
        pages=[number] if new_seed else None,
        progress=progress,
        draft=draft,
        on_preview=on_preview,
        preview_every=preview_every,
    )


# -- candidates, locks and earlier pictures ---------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One of several pictures painted for a page with different seeds."""

    seed: int
    key: str
    image: Path | None  # None: flagged every time by the safety checker


def candidate_seeds(seed: int, count: int = CANDIDATES) -> list[int]:
    """The seeds the candidates of a page with ``seed`` are painted with (the same each time,
    so asking again shows the same candidates from the cache, and none of the seeds that
    "paint again with a new seed" goes through)."""
    from fairytale.render.seeds import candidate_seed

    return [candidate_seed(seed, index) for index in range(count)]


def paint_candidates(
    book: Book,
    number: int,
    options: StudioOptions,
    pool: IllustratorPool,
    *,
    count: int = CANDIDATES,
    draft: bool = False,
    progress: RenderProgress | None = None,
) -> list[Candidate]:
    """Paint ``count`` pictures of page ``number`` with new seeds (each safety-checked and kept
    in the cache); :func:`choose_candidate` makes one the page's picture. ``draft``: quick
    draft candidates (a final candidate already in the cache is shown instead of its draft)."""
    from fairytale.render.painting import PageJob, paint_pages
    from fairytale.render.progress import QuietProgress

    settings = _settings(options, draft)
    if book.page(book.plan(), number).locked:
        raise PageLockedError(f"Page {number} is locked: unlock it to paint candidates")
    progress = progress or QuietProgress()
    _paint_missing_portraits(book, settings.with_(draft=False), pool, progress)  # the pages' keys name them
    keys, store = _page_keys(book, settings), _store(book)
    page = book.page(keys.plan, number)
    jobs = []
    for seed in candidate_seeds(page.seed, count):
        request = keys.request(page, seed)
        key = keys.key(request)
        if draft and store.get(key) is None:
            request, key = keys.draft(request)
        jobs.append(PageJob(request, key))
    missing = [job for job in jobs if _to_paint(store.get(job.key), settings.max_repaints)]
    if missing:
        with book_lock(book.folder), pool.borrow(settings) as illustrator:
            illustrator.configure(keys.painter if draft else keys.backend)
            _teach_learned_tokens(illustrator, book, keys.plan, keys.backend)
            batch = settings.batch_size or illustrator.device_plan.batch_size
            paint_pages(
                illustrator,
                missing,
                store,
                batch_size=batch,
                max_repaints=settings.max_repaints,
                progress=progress,  # a StudioProgress: Stop ends it
            )
    candidates = []
    for job in jobs:
        found = store.get(job.key)
        candidates.append(Candidate(job.request.seed, job.key, found.image if found else None))
        _remember(book, number, job.key, job.request.prompt, job.request.negative_prompt, job.request.seed)
    return candidates


def _to_paint(found: StoredPicture | None, max_repaints: int) -> bool:
    """Whether a candidate must be painted: not in the cache, or a placeholder given up under
    fewer repaints than are allowed now."""
    return found is None or found.worth_retrying(max_repaints)


def _paint_missing_portraits(
    book: Book, settings: RenderSettings, pool: IllustratorPool, progress: RenderProgress
) -> None:
    """Paint and record the reference portraits the consistency mode needs and the plan lacks,
    as a render does before its pages: a page's key names its characters' portraits, so a
    candidate painted without them would be repainted by the next render. ``progress`` hears
    of it (and a stopped :class:`StudioProgress` stops it before it starts)."""
    from fairytale.render import get_backend
    from fairytale.render.references import paint_references, record_references

    backend = get_backend(settings.backend)(settings)
    plan = book.plan()
    missing = backend.missing_references(plan)
    if not missing:
        return
    with book_lock(book.folder), pool.borrow(settings) as illustrator:
        illustrator.configure(backend)
        _teach_learned_tokens(illustrator, book, plan, backend)
        batch = settings.batch_size or illustrator.device_plan.batch_size
        progress.stage(
            f"Painting reference portraits of {', '.join(plan.character(i).name for i in missing)}…"
        )
        paint_references(
            illustrator,
            plan,
            book.plan_file,
            book.folder,
            missing,
            max_repaints=settings.max_repaints,
            batch_size=batch,
        )
        record_references(book.plan_file, plan, missing)


def _teach_learned_tokens(illustrator: Illustrator, book: Book, plan: BookPlan, backend: Any) -> None:
    """The plan's learned tokens into a borrowed illustrator, as a render's session teaches them
    (else a token would be read as plain text while the cache key names its file)."""
    from fairytale.render.page_keys import learned_tokens

    illustrator.use_embeddings(learned_tokens(plan, book.plan_file, backend)[0])


def choose_candidate(book: Book, number: int, seed: int) -> BookPlan:
    """Make the candidate painted with ``seed`` page ``number``'s picture: the seed goes into the
    plan, so every render (CLI too) finds that picture in the cache."""
    from fairytale.render.seeds import MAX_SEED

    if not (isinstance(seed, int) and 0 <= seed < MAX_SEED):
        raise FairytaleError(f"A seed is a whole number from 0 to 2^63-1, not {seed}")
    plan = book.plan()
    page = book.page(plan, number)
    if page.locked:
        raise PageLockedError(f"Page {number} is locked: unlock it to choose another picture")
    page.seed = seed
    _save(book, plan)
    return plan


def lock_page(book: Book, number: int, settings: RenderSettings, locked: bool = True) -> BookPlan:
    """Lock page ``number`` (no render repaints it: it keeps its current picture, recorded in
    the plan) or unlock it (it is painted from its prompt and seed again)."""
    plan = book.plan()
    page = book.page(plan, number)
    if locked:
        view = _view(_page_keys(book, settings), _store(book), page, settings.max_repaints)
        if view.status == "draft":
            raise FairytaleError(f"Page {number} shows a draft: paint it in full first, then lock it")
        if view.picture is None:
            raise FairytaleError(f"Page {number} has no picture yet: paint it first, then lock it")
        page.picture, page.locked = view.key, True
    else:
        page.locked, page.picture = False, None
    _save(book, plan)
    return plan


@dataclass(frozen=True)
class EarlierPicture:
    """A picture a page had before, still in the cache, and what made it."""

    key: str
    prompt: str
    negative_prompt: str
    seed: int
    image: Path


def _history_file(book: Book) -> Path:
    return book.folder / "cache" / HISTORY_NAME


def _read_history(book: Book) -> dict[str, list[dict[str, Any]]]:
    try:
        data = json.loads(_history_file(book).read_text(encoding="utf-8"))
        return data["pages"] if isinstance(data.get("pages"), dict) else {}
    except (OSError, ValueError, AttributeError, KeyError):
        return {}  # no history yet (or a damaged one): it only lists earlier pictures


def _remember(book: Book, number: int, key: str, prompt: str, negative_prompt: str, seed: int) -> None:
    with _HISTORY_LOCK:
        history = _read_history(book)
        entries = history.setdefault(str(number), [])
        if any(e.get("key") == key for e in entries):
            return
        entries.append({"key": key, "prompt": prompt, "negative_prompt": negative_prompt, "seed": seed})
        ensure_dir(_history_file(book).parent)
        atomic_write_text(
            _history_file(book), json.dumps({"pages": history}, indent=1, ensure_ascii=False) + "\n"
        )


_HISTORY_LOCK = threading.Lock()


def remember_book(book: Book) -> None:
    """Add the pictures of the last render (its manifest) to each page's history."""
    from fairytale.render import load_manifest

    try:
        manifest = load_manifest(book.folder)
    except FairytaleError:
        return
    for page in manifest.pages:
        if page.key and page.seed is not None:
            _remember(book, page.number, page.key, page.prompt, page.negative_prompt, page.requested_seed)


def earlier_pictures(book: Book, number: int) -> list[EarlierPicture]:
    """The pictures page ``number`` has had that are still in the cache, oldest first."""
    from fairytale.render.page_store import PageStore

    store = PageStore(book.folder)
    found = []
    for entry in _read_history(book).get(str(number), []):
        try:
            stored = store.get(str(entry["key"]))
            if stored and stored.image:
                found.append(
                    EarlierPicture(
                        str(entry["key"]),
                        str(entry["prompt"]),
                        str(entry["negative_prompt"]),
                        int(entry["seed"]),
                        stored.image,
                    )
                )
        except (KeyError, TypeError, ValueError):
            continue
    return found


def use_earlier_picture(book: Book, number: int, key: str) -> BookPlan:
    """Go back to an earlier picture of page ``number``: its prompt and seed return to the plan,
    and the page is locked to that picture (so a change of settings does not repaint it)."""
    entry = next((e for e in earlier_pictures(book, number) if e.key == key), None)
    if entry is None:
        raise FairytaleError(f"Page {number} has no earlier picture {key} in the cache")
    plan = book.plan()
    page = book.page(plan, number)
    page.prompt, page.seed = entry.prompt, entry.seed
    page.negative_prompt = (
        None if entry.negative_prompt == plan.style.negative_prompt else entry.negative_prompt
    )
    page.locked, page.picture = True, key
    _save(book, plan)
    return plan


# -- reference portraits --------------------------------------------------------------------


def repaint_reference(
    book: Book,
    character_id: str,
    options: StudioOptions,
    pool: IllustratorPool,
    progress: RenderProgress | None = None,
) -> Path:
    """Paint the character's reference portrait again with a new seed (recorded in the plan).
    ``progress`` hears of each denoising step; a :class:`StudioProgress` that is stopped ends
    it with :class:`PaintingStopped` at the next step, the portrait and the plan as they were."""
    from fairytale.render.backends import PaintRequest
    from fairytale.render.painting import illustrator_loop
    from fairytale.render.progress import QuietProgress
    from fairytale.render.references import portrait_prompt
    from fairytale.render.seeds import next_seed, reference_seed

    progress = progress or QuietProgress()

    plan = book.plan()
    character = _character(plan, character_id)
    old = character.reference.seed if character.reference and character.reference.seed is not None else None
    first = next_seed(old if old is not None else reference_seed(plan.seed, character.id))
    prompt = portrait_prompt(plan, character)
    with book_lock(book.folder), pool.borrow(options.settings) as illustrator:
        from fairytale.render import get_backend

        backend = get_backend(options.settings.backend)(options.settings)
        illustrator.configure(backend)
        _teach_learned_tokens(illustrator, book, plan, backend)
        # the paint-and-safety loop of pages (repaints with repaint_seed(first, attempt))
        request = PaintRequest(0, prompt, plan.style.negative_prompt, first)
        loop = illustrator_loop(
            illustrator,
            [request],
            batch_size=1,
            max_repaints=options.settings.max_repaints,
            # each try (a flagged portrait is painted again) starts its steps again
            on_batch=lambda _batch: progress.stage(f"Painting a new portrait of {character.name}"),
            on_step=progress.step,
        )
        [done] = [checked for finished in loop for checked in finished]
        if done.picture is None:
            raise FairytaleError(
                f"Every portrait of {character.name} was flagged by the safety checker; change the description"
            )
        picture, seed = done.picture, done.seed
        path = _reference_path(book, character.id)
        with atomic_path(path) as tmp:
            picture.save(tmp, "PNG")
        model = illustrator.backend.credit_model()  # plan.json is shared: no local path
    plan = book.plan()  # the plan as it is now: only the reference changes
    _character(plan, character_id).reference = Reference(
        image=_relative(path, book), seed=seed, prompt=prompt, model=model
    )
    _save(book, plan)
    return path


def check_picture_upload(path: Path | str) -> Image.Image:
    """An uploaded picture, checked like CLI input: a file, at most :data:`MAX_PICTURE_BYTES`,
    really a PNG, JPEG or WebP, at most :data:`MAX_PICTURE_PIXELS` (else one line saying its
    size, before it is decoded). Returns it as RGB, upright (a phone photo's orientation tag
    applied), transparency on white, and at most :data:`MAX_PICTURE_SIDE` pixels a side."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FairytaleError(f"Picture not found: {path.name}")
    size = path.stat().st_size
    if size > MAX_PICTURE_BYTES:
        raise FairytaleError(
            f"{path.name} is {size // 2**20} MB; the limit for a picture is {MAX_PICTURE_BYTES // 2**20} MB"
        )
    try:
        with Image.open(path) as opened:
            if opened.format not in PICTURE_FORMATS:
                raise FairytaleError(
                    f"{path.name} is a {opened.format} file; use a PNG, JPEG or WebP picture"
                )
            width, height = opened.size
            if width * height > MAX_PICTURE_PIXELS:
                raise FairytaleError(
                    f"{path.name} is {width}×{height} pixels; the largest picture the studio takes is "
                    f"{MAX_PICTURE_PIXELS // 10**6} megapixels: make it smaller first"
                )
            opened.draft("RGB", (MAX_PICTURE_SIDE, MAX_PICTURE_SIDE))  # a big JPEG decodes smaller
            opened.load()
            picture = ImageOps.exif_transpose(opened)
            if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
                rgba = picture.convert("RGBA")
                picture = Image.new("RGB", rgba.size, "white")
                picture.paste(rgba, mask=rgba.getchannel("A"))
            picture = picture.convert("RGB")
            picture.thumbnail((MAX_PICTURE_SIDE, MAX_PICTURE_SIDE), Image.Resampling.LANCZOS)
            return picture
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise FairytaleError(
            f"{path.name} is not a picture this studio can read ({type(exc).__name__})"
        ) from None


def use_my_picture(book: Book, character_id: str, upload: Path | str) -> Path:
    """Make an uploaded picture the character's reference portrait (copied into the book folder)."""
    picture = check_picture_upload(upload)
    plan = book.plan()
    character = _character(plan, character_id)
    path = _reference_path(book, character.id)
    with atomic_path(path) as tmp:
        picture.save(tmp, "PNG")
    character.reference = Reference(image=_relative(path, book), seed=None, prompt=None, model=None)
    _save(book, plan)
    return path


def _character(plan: BookPlan, character_id: str) -> Any:
    try:
        return plan.character(character_id)
    except KeyError:
        raise PlanError(f"No character '{character_id}' in the plan") from None


def _reference_path(book: Book, character_id: str) -> Path:
    return ensure_dir(book.folder / "references") / f"{character_id}.png"


def _relative(path: Path, book: Book) -> str:
    return str(Path(path).resolve().relative_to(book.folder.resolve()))


# -- the laid-out book ------------------------------------------------------------------------


def preview_pages(book: Book, width: int = 480) -> list[Image.Image]:
    """Every page of the book's PDF as it will print, ``width`` pixels wide."""
    from fairytale.notebook import pdf_page_images

    if not book.pdf.is_file():
        raise FairytaleError("The book has no PDF yet: paint it first")
    return pdf_page_images(book.pdf, pages=10_000, width=width)


def book_pdf(
    book: Book, options: StudioOptions, pool: IllustratorPool, progress: RenderProgress | None = None
) -> Path:
    """The PDF of the book as the plan stands now (painting what is missing first, with
    ``progress``: a :class:`StudioProgress` stops it)."""
    if pages_to_paint(book, options.settings) or not book.pdf.is_file() or _stale(book):
        paint_book(book, options, pool, progress=progress)
    return book.pdf


def _stale(book: Book) -> bool:
    """Whether the plan changed after the PDF was written (text or layout edits need a new PDF)."""
    return book.plan_file.stat().st_mtime_ns > book.pdf.stat().st_mtime_ns


def export_book(
    book: Book,
    formats: Sequence[str] = ("epub",),
    *,
    preset: str | None = None,
    paper: str | None = None,
    spine_width: float | None = None,
) -> PublishResult:
    """Write the book's EPUB (and, with ``preset``, the print-on-demand interior, cover and
    preflight report) beside the book folder through :func:`fairytale.publish.publish_book`,
    from the pictures of the last paint: nothing is painted again. The plan's text as it is
    now is used, so an edited text reaches the EPUB without painting."""
    from fairytale.publish import PublishOptions, publish_book

    if not (book.folder / "manifest.json").is_file():
        raise FairytaleError("The book has no pictures yet: paint it first")
    options = PublishOptions(
        formats=tuple(formats), preset=preset or None, paper=paper, spine_width=spine_width
    )
    return publish_book(book.folder, options)
