"""The studio's web page (Gradio): a thin layer over :mod:`fairytale.studio_actions`.

Every button calls one action on the open book folder; the page keeps nothing the folder does
not, so a closed tab or a crash loses nothing. The app listens on 127.0.0.1 only (``share``
makes a public gradio link, only when asked), sends nothing anywhere (analytics off, fonts
served by gradio itself), keeps gradio's file copies in ``SESSION/.studio/`` and serves no
other file.

>>> studio = launch_studio(book_dir="out/ginger", block=False)   # doctest: +SKIP
>>> studio.url
'http://127.0.0.1:50123/'
"""

import functools
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairytale.errors import FairytaleError
from fairytale.files import ensure_dir
from fairytale.publish.presets import PRESETS
from fairytale.studio_actions import (
    DRAFT_NOTE,
    Book,
    IllustratorPool,
    StudioOptions,
    StudioProgress,
    book_pdf,
    choose_candidate,
    compose_page_prompt,
    create_book,
    earlier_pictures,
    export_book,
    lock_page,
    open_book,
    page_views,
    paint_book,
    paint_candidates,
    preview_pages,
    recomposed_note,
    repaint_page,
    repaint_reference,
    save_character,
    save_page,
    use_earlier_picture,
    use_my_picture,
)

HOST = "127.0.0.1"
SESSION_DIR = ".studio"
INSTALL_HINT = 'The studio needs gradio: pip install -e ".[studio]" (in a checkout) or pip install "fairytale-books[studio]"'
#: Where the browser remembers the open book (see ``restore`` in :func:`build_app`).
REMEMBERED_KEY = "fairytale-studio-book"
#: Where the browser keeps its id in this studio: a story it is planning is found by it after a
#: reload, or from a second tab, before there is a book to remember.
BROWSER_KEY = "fairytale-studio-browser"
#: gradio shows its pictures without alt text (a gallery's caption is a separate label, or the
#: picture's ``title``): give each one a name a screen reader says, its caption, or what it is for.
ALT_TEXT_JS = """
() => {
  const named = {
    "reference": "Reference portrait of the character",
    "fix-picture": "The page's picture now",
    "live-preview": "Live preview of the page being painted",
  };
  const name = () => {
    for (const img of document.querySelectorAll("img")) {
      const holder = Object.keys(named).find((id) => img.closest("#" + id));
      const caption = img.closest("button")?.querySelector(".caption-label")?.textContent?.trim();
      const label = img.title || caption || named[holder];
      if (label && img.alt !== label) img.alt = label;  // again when a picture is replaced in place
    }
  };
  new MutationObserver(name).observe(document.documentElement, {
    subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["src", "title"],
  });
  name();
}
"""
#: launch(js=...) is not run by this gradio's page; a script in the page's head is.
ALT_TEXT_HEAD = f"<script>({ALT_TEXT_JS.strip()})();</script>"
#: Largest story or picture upload gradio accepts (the actions check them again).
MAX_UPLOAD = "20mb"


def _import_gradio(session_dir: Path) -> Any:
    """gradio, imported with analytics off and its file copies inside ``session_dir``."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported
    os.environ["GRADIO_TEMP_DIR"] = str(ensure_dir(session_dir / "gradio"))
    try:
        import gradio
    except ImportError:
        raise FairytaleError(INSTALL_HINT) from None
    return gradio


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class Painting:
    """One long action running in its own thread (painting a book or a portrait, planning a
    story), as every tab sees it: its progress (which Stop stops), what it is (``what``:
    'Page 2'; empty for painting the book), the newest live preview when it makes them, and,
    once its thread has ended, ``outcome``: its ``result`` or ``error``."""

    what: str = ""
    progress: StudioProgress = field(default_factory=StudioProgress)
    preview: Any = None
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None
    outcome: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """'Page 2: Painting page 1 of 1 · step 3 of 25 · 4 s' ('Painting page 3 of 8 · …' for the book)."""
        doing = self.progress.describe() or "Loading the model…"
        if self.progress.stopping:
            doing += " · stopping after this step…"
        if not self.what:
            return doing
        return f"{self.what}: {doing} · {time.monotonic() - self.started:.0f} s"


@dataclass
class StudioSession:
    """What the app shares between requests: options, the loaded model, running paint jobs."""

    options: StudioOptions
    books_dir: Path
    pool: IllustratorPool = field(default_factory=IllustratorPool)
    jobs: dict[Path, Painting] = field(default_factory=dict)
    #: stories being planned, by the browser planning them (its id in ``BROWSER_KEY``; else the
    #: tab's gradio session hash): its reloaded or second tabs follow the planning and stop it
    plannings: dict[str, Painting] = field(default_factory=dict)
    _jobs_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def planning(self, tab: str) -> Painting:
        """Register a planning for browser ``tab`` (its Stop stops it); the caller removes it
        when it ends. A second one in the browser meanwhile is refused at once."""
        with self._jobs_lock:
            if tab in self.plannings:
                raise FairytaleError("A story is being planned already: wait for it, or press Stop")
            planning = self.plannings[tab] = Painting(
                "Planning the story", StudioProgress(stopped="Planning stopped; no book was made")
            )
            return planning

    @contextmanager
    def painting(self, book: Book, what: str = "") -> Iterator[Painting]:
        """Claim ``book`` for one painting action (any tab) and yield it (its progress is what
        the Stop button stops); a second action on the book meanwhile is refused at once, in
        one line, instead of waiting unseen behind the first."""
        with self._jobs_lock:
            if book.folder in self.jobs:
                raise FairytaleError(
                    "This book is being painted already (here or in another tab): "
                    "wait for it to finish, or press Stop on the Paint tab"
                )
            job = self.jobs[book.folder] = Painting(what)
        try:
            yield job
        finally:
            with self._jobs_lock:
                self.jobs.pop(book.folder, None)


@dataclass
class Studio:
    """A running studio: its address and how to stop it."""

    url: str
    app: Any
    session: StudioSession
    session_dir: Path
    share_url: str | None = None

    def wait(self) -> None:
        """Serve until Ctrl-C, then stop."""
        try:
            self.app.block_thread()
        finally:
            self.close()

    def close(self) -> None:
        self.app.close()
        self.session.pool.release()


# -- how the page shows a book ----------------------------------------------------------------


def _book(path: str | None) -> Book:
    if not path:
        raise FairytaleError("Start a book first (paste a story, or open a book folder)")
    return open_book(path)


def _views(book: Book, session: StudioSession) -> list[Any] | None:
    """The pages with their pictures, or None when the model's files cannot be named (a missing
    model: its cache keys cannot be made; the action that needs the model says so, in one line)."""
    try:
        return page_views(book, session.options.settings)
    except FairytaleError:
        return None


def _pictures(book: Book, session: StudioSession) -> list[tuple[str, str]]:
    return [
        (
            str(v.picture),
            f"page {v.number}{' · locked' if v.locked else ''}{' · draft' if v.status == 'draft' else ''}",
        )
        for v in _views(book, session) or []
        if v.picture
    ]


#: A page's status in the table when the model is missing (nothing can be looked up in the cache).
UNKNOWN = "? (model missing)"


def _table(book: Book, session: StudioSession) -> list[list[Any]]:
    views = _views(book, session)
    if views is None:  # the plan can still be read and edited
        return [[p.number, UNKNOWN, ", ".join(p.characters), p.prompt] for p in book.plan().pages]
    return [[v.number, v.status, ", ".join(v.characters), v.prompt] for v in views]


def _preview_picture(preview: Any) -> Any:
    """The pages of a live preview side by side, as one picture."""
    from PIL import Image

    width = sum(image.width for image in preview.images)
    height = max(image.height for image in preview.images)
    strip = Image.new("RGB", (width, height), "white")
    x = 0
    for image in preview.images:
        strip.paste(image, (x, 0))
        x += image.width
    return strip


def _pages(numbers: list[int], one: str, many: str) -> str:
    """'Page 2 is' / 'Pages 2, 3 are'."""
    listed = ", ".join(map(str, numbers))
    return f"Page {listed} {one}" if len(numbers) == 1 else f"Pages {listed} {many}"


def _painted_message(result: Any) -> str:
    """What a paint did, drafts and finals included."""
    text = f"Done: {len(result.painted)} painted, {len(result.reused)} kept · {result.seconds:.1f} s · PDF written"
    if result.redrawn_drafts:
        text += "\n\n" + _pages(result.redrawn_drafts, "was a draft and is", "were drafts and are")
        text += " now painted in full (new paintings from the same seeds)."
    if result.drafts:
        text += "\n\n" + _pages(result.drafts, "is a draft", "are drafts")
        text += f" ({result.draft_note}). Paint the book without Draft for the finals. {DRAFT_NOTE}"
    return text


def _start(
    painting: Painting, work: Callable[[Painting], Any], name: str, release: Callable[[], Any]
) -> Painting:
    """Start ``work(painting)`` in a thread, not in the page's stream (a reload or a closed tab
    does not end it), which leaves its ``result`` or ``error`` in ``painting.outcome`` and then
    calls ``release``. Returns ``painting``."""
    outcome = painting.outcome

    def target() -> None:
        try:
            outcome["result"] = work(painting)
        except BaseException as exc:  # shown (or raised) in the page's stream
            outcome["error"] = exc
        finally:
            release()

    painting.thread = threading.Thread(target=target, daemon=True, name=name)
    try:
        painting.thread.start()
    except BaseException:
        release()
        raise
    return painting


def _claimed_thread(
    session: StudioSession, book: Book, work: Callable[[Painting], Any], name: str, what: str = ""
) -> Painting:
    """Claim ``book`` (:meth:`StudioSession.painting`: refused at once when it is busy) and start
    ``work(painting)`` in a thread (:func:`_start`) that holds the claim until it ends: after a
    reload, or from another tab, the painting is followed (:func:`_watch`), Stop still stops it
    and a second painting is still refused. Returns the painting, whose ``outcome`` gets the
    ``result`` or ``error`` of ``work`` before the claim ends."""
    claim = session.painting(book, what)
    painting = claim.__enter__()
    return _start(painting, work, name, lambda: claim.__exit__(None, None, None))


def _told(painting: Painting, tell: Callable[[str], Any]) -> Any:
    """Yield ``tell(painting.line())`` about once a second until ``painting``'s thread ends;
    return what its work returned (``result = yield from _told(...)``) or raise its error."""
    thread = painting.thread
    while thread is not None and thread.is_alive():
        thread.join(timeout=1.0)  # wake up once a second to show progress
        if thread.is_alive():
            yield tell(painting.line())
    if "error" in painting.outcome:
        raise painting.outcome["error"]
    return painting.outcome["result"]


def _finished_line(painting: Painting) -> str:
    """What a painting did, for a page that followed it (the one that started it says more)."""
    result = painting.outcome.get("result")
    if hasattr(result, "painted"):  # a RenderResult: the book, or a page of it, was painted
        return _painted_message(result)
    return f"{painting.what or 'Painting'}: done"


def _watch(gr: Any, session: StudioSession, book: Book, painting: Painting) -> Iterator[tuple[Any, ...]]:
    """Follow ``painting`` of ``book`` to its end, about once a second: the progress line, the
    pictures, the page table (at the end) and the newest live preview (each shown once, and
    hidden again at the end, when the real pictures are in the gallery). The last line says
    how it ended (one line for an error). The tab that started the painting and any page
    opened on the book meanwhile (a reload, a second tab) show the same."""
    shown = None
    while painting.thread is not None and painting.thread.is_alive():
        painting.thread.join(timeout=1.0)  # wake up once a second to show progress
        newest = painting.preview
        picture = gr.update()
        if newest is not None and newest is not shown:
            shown = newest
            listed = ", ".join(map(str, newest.pages))
            picture = gr.update(
                value=_preview_picture(newest),
                label=f"Live preview · page {listed} · step {newest.step} of {newest.steps}",
                visible=True,
            )
        yield painting.line(), _pictures(book, session), gr.update(), picture
    done_preview = gr.update(value=None, visible=False)
    error = painting.outcome.get("error")
    if error is not None:
        if not isinstance(error, Exception):
            raise error  # KeyboardInterrupt, SystemExit: the studio itself is stopping
        yield user_message(error), _pictures(book, session), _table(book, session), done_preview
        return
    yield _finished_line(painting), _pictures(book, session), _table(book, session), done_preview


def stream_painting(
    gr: Any,
    session: StudioSession,
    path: str,
    work: Callable[[Book, StudioProgress, Any], Any],
    previews: bool,
) -> Any:
    """Run ``work(book, progress, on_preview)`` in a thread and stream it to the page
    (:func:`_watch`): the progress line, the pictures, the page table (at the end) and the
    live preview.

    With ``previews`` the newest preview the painting made is shown (``on_preview`` is None
    otherwise, so nothing is decoded); the preview is hidden again when the painting ends.

    The book stays claimed until the painting thread ends (:func:`_claimed_thread`).
    """
    book = _book(path)

    def paint(painting: Painting) -> Any:
        def keep(preview: Any) -> None:  # the newest preview, for every page that follows
            painting.preview = preview

        return work(book, painting.progress, keep if previews else None)

    yield from _watch(gr, session, book, _claimed_thread(session, book, paint, "fairytale-studio-paint"))


def painting_steps(
    session: StudioSession,
    book: Book,
    work: Callable[[StudioProgress], Any],
    tell: Callable[[str], Any],
    what: str,
) -> Any:
    """Run ``work(progress)`` in a thread with ``book`` claimed (:meth:`StudioSession.painting`),
    yielding ``tell(line)`` about once a second: ``what``, the progress and the seconds so far.
    Returns what ``work`` returned (``result = yield from painting_steps(...)``) or raises its
    error. As in :func:`stream_painting`, the book stays claimed, and Stop stops the work, until
    the thread ends, even when the page's stream is gone; a page opened meanwhile follows it."""
    painting = _claimed_thread(
        session, book, lambda painting: work(painting.progress), "fairytale-studio-fix", what
    )
    return (yield from _told(painting, tell))


#: What the page says when something unforeseen breaks (the details go to the terminal).
UNEXPECTED = (
    "Something went wrong inside the studio ({name}). Finished pictures are kept in the book folder; "
    "the details are in the window where the studio runs."
)
#: What the page says when painting runs out of memory.
OUT_OF_MEMORY = (
    "The computer ran out of memory while painting. Close other programs and try again, "
    "or start the studio with --low-vram."
)


def _out_of_memory(exc: BaseException) -> bool:
    # torch.OutOfMemoryError (CUDA), MemoryError (RAM), "out of memory" RuntimeErrors (MPS, HIP)
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
    )


def user_message(exc: BaseException) -> str:
    """One line for the page, never a traceback: a :class:`FairytaleError`'s own message; for
    anything else a plain sentence (running out of memory says what to do), its traceback
    written to the terminal where the studio runs."""
    if isinstance(exc, FairytaleError):
        return str(exc)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if _out_of_memory(exc):
        return OUT_OF_MEMORY
    return UNEXPECTED.format(name=type(exc).__name__)


def _errors(gr: Any, handler: Callable, outputs: Sequence[Any] = (), say: Sequence[Any] = ()) -> Callable:
    """``handler``, whose errors are told, not thrown at the page: the one line of
    :func:`user_message` in a warning box and in each of its ``outputs`` that is one of ``say``
    (the status and progress lines), every other output left as it was. (An error raised to
    gradio would mark every output "Error" and hide what it showed: the prompt, the pictures.)"""
    import html
    import inspect

    def told(exc: Exception) -> Any:
        message = user_message(exc)
        gr.Warning(html.escape(message), title="Not done")  # the box renders HTML: a file name is not markup
        updates = [message if any(o is s for s in say) else gr.update() for o in outputs]
        return updates[0] if len(updates) == 1 else updates

    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def generator(*args: Any) -> Any:
            try:
                yield from handler(*args)
            except Exception as exc:
                yield told(exc)

        return generator

    @functools.wraps(handler)
    def wrapper(*args: Any) -> Any:
        try:
            return handler(*args)
        except Exception as exc:
            return told(exc)

    return wrapper


def build_app(session: StudioSession, book_dir: Path | None = None) -> Any:
    """The studio's gradio Blocks for ``session`` (``book_dir``: the book open at start)."""
    gr = sys.modules["gradio"]
    settings = session.options.settings
    first = str(open_book(book_dir).folder) if book_dir else None

    # gradio's copies of shown files (in SESSION/.studio/gradio) older than a day are deleted hourly
    with gr.Blocks(title="fAIrytale Studio", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        book_state = gr.State(first)
        # The open book, remembered by the browser (encrypted with a secret made at each launch), so
        # a reload or a second tab of this studio opens it again instead of an empty page.
        remembered = gr.BrowserState(None, storage_key=REMEMBERED_KEY)
        browser = gr.BrowserState(None, storage_key=BROWSER_KEY)  # made by restore (page load)
        gr.Markdown("# fAIrytale Studio\nStory → plan → pictures → your book.")
        status = gr.Markdown(
            f"Open: {first}" if first else "Start a book: paste a story below.", elem_id="status"
        )

        with gr.Tabs() as tabs:
            # 1. start
            with gr.Tab("1 · Start", id="start"):
                with gr.Row():
                    with gr.Column(scale=3):
                        story_text = gr.Textbox(label="Paste the story", lines=12, elem_id="story-text")
                        story_file = gr.File(
                            label="…or upload a .txt file", file_types=[".txt"], type="filepath"
                        )
                    with gr.Column(scale=2):
                        title = gr.Textbox(
                            label="Title (empty: the story's first line)", elem_id="story-title"
                        )
                        author = gr.Textbox(label="Author", elem_id="story-author")
                        style = gr.Textbox(label="Style of the pictures (empty: soft watercolour)", lines=2)
                        with gr.Row():
                            make_plan = gr.Button("Make the plan", variant="primary", elem_id="make-plan")
                            plan_stop = gr.Button("Stop", elem_id="plan-stop")
                        gr.Markdown(f"New books go to `{session.books_dir}`.")
                        open_path = gr.Textbox(
                            label="…or open a book folder", value=first or "", elem_id="open-path"
                        )
                        open_button = gr.Button("Open", elem_id="open-book")

            # 2. the plan
            with gr.Tab("2 · Plan", id="plan"):
                gr.Markdown("### Characters")
                with gr.Row():
                    with gr.Column(scale=2):
                        character_pick = gr.Dropdown(label="Character", choices=[], elem_id="character-pick")
                        name = gr.Textbox(label="Name")
                        kind = gr.Textbox(label="Kind (girl, giraffe, owl…)")
                        description = gr.Textbox(label="Description used in the prompts", lines=2)
                        main = gr.Checkbox(label="Main character")
                        save_character_button = gr.Button("Save character")
                    with gr.Column(scale=1):
                        reference = gr.Image(
                            label="Reference portrait",
                            type="filepath",
                            interactive=False,
                            height=300,
                            elem_id="reference",
                        )
                        with gr.Row():
                            reference_again = gr.Button("Paint again", elem_id="reference-again")
                            reference_stop = gr.Button("Stop", elem_id="reference-stop")
                        my_picture = gr.File(label="Use my picture", file_types=["image"], type="filepath")
                gr.Markdown("### Pages")
                pages_table = gr.Dataframe(
                    headers=["page", "status", "who", "prompt"],
                    interactive=False,
                    wrap=True,
                    elem_id="pages-table",
                )
                with gr.Row():
                    page_pick = gr.Dropdown(label="Page", choices=[], elem_id="page-pick")
                    page_who = gr.CheckboxGroup(label="Who is on the page", choices=[])
                page_text = gr.Textbox(label="Text", lines=3)
                page_prompt = gr.Textbox(label="Prompt", lines=3)
                with gr.Row():
                    save_page_button = gr.Button("Save page")
                    compose_button = gr.Button("Compose the prompt again", elem_id="compose-prompt")

            # 3. painting
            with gr.Tab("3 · Paint", id="paint"):
                with gr.Row():
                    paint = gr.Button("Paint the book", variant="primary", elem_id="paint")
                    stop = gr.Button("Stop", elem_id="stop")
                with gr.Row():
                    paint_draft = gr.Checkbox(
                        label="Draft: quick pictures to look at first", elem_id="paint-draft"
                    )
                    show_previews = gr.Checkbox(
                        label="Show previews while a page is painted", elem_id="show-previews"
                    )
                gr.Markdown(DRAFT_NOTE + " Painting without Draft later repaints only the drafted pages.")
                progress = gr.Markdown("", elem_id="progress")
                live_preview = gr.Image(
                    label="Live preview",
                    type="pil",
                    interactive=False,
                    height=300,
                    visible=False,
                    elem_id="live-preview",
                )
                pictures = gr.Gallery(label="Pictures", columns=4, elem_id="pictures")

            # 4. fixing a page
            with gr.Tab("4 · Fix a page", id="fix"):
                fix_page = gr.Radio(label="Page", choices=[], elem_id="fix-page")
                with gr.Row():
                    with gr.Column():
                        fix_picture = gr.Image(
                            label="Picture now",
                            type="filepath",
                            interactive=False,
                            height=360,
                            elem_id="fix-picture",
                        )
                        fix_locked = gr.Checkbox(label="Locked (nothing repaints it)", elem_id="fix-lock")
                        fix_draft = gr.Checkbox(
                            label="Draft: paint quick drafts (a final is a new painting, not an enlargement)",
                            elem_id="fix-draft",
                        )
                    with gr.Column():
                        fix_prompt = gr.Textbox(label="Prompt", lines=4, elem_id="fix-prompt")
                        fix_repaint = gr.Button(
                            "Save prompt and paint again", variant="primary", elem_id="fix-repaint"
                        )
                        fix_seed = gr.Button("Paint again with a new seed", elem_id="fix-seed")
                        fix_candidates = gr.Button("Paint four candidates", elem_id="fix-candidates")
                        fix_stop = gr.Button("Stop", elem_id="fix-stop")
                candidates = gr.Gallery(
                    label="Candidates: click one to use it", columns=4, height=300, elem_id="candidates"
                )
                earlier = gr.Gallery(
                    label="Earlier pictures: click one to go back to it",
                    columns=6,
                    height=260,
                    elem_id="earlier",
                )

            # 5. the book
            with gr.Tab("5 · Book", id="book"):
                with gr.Row():
                    make_pdf = gr.Button("Lay out the book", variant="primary", elem_id="make-pdf")
                    book_stop = gr.Button("Stop", elem_id="book-stop")
                pdf_file = gr.File(label="The PDF", elem_id="pdf-file")
                with gr.Row():
                    export_preset = gr.Dropdown(
                        label="Print on demand (adds an interior, a wraparound cover and a preflight report)",
                        choices=[("none", ""), *[(p.label, p.name) for p in PRESETS.values()]],
                        value="",
                        elem_id="export-preset",
                    )
                    make_epub = gr.Button("Make the EPUB", elem_id="make-epub")
                export_files = gr.File(
                    label="EPUB and print files", file_count="multiple", elem_id="export-files"
                )
                preview = gr.Gallery(label="Pages as they will print", columns=2, elem_id="preview")

        # -- handlers ----------------------------------------------------------------------

        def guarded(handler: Callable, outputs: Sequence[Any]) -> Callable:
            return _errors(gr, handler, outputs, say=(status, progress))

        def telling(outputs: Sequence[Any]) -> Callable[[str], list[Any]]:
            """A progress line for the status line among ``outputs``, the others left as they are."""
            return lambda line: [line if output is status else gr.update() for output in outputs]

        def plan_values(path: str | None) -> list[Any]:
            if not path:
                return [gr.update()] * 6
            book = _book(path)
            plan = book.plan()
            ids = [(f"{c.name} ({c.id})", c.id) for c in plan.characters]
            numbers = [str(p.number) for p in plan.pages]
            return [
                gr.update(choices=ids, value=ids[0][1] if ids else None),
                _table(book, session),
                gr.update(choices=numbers, value=numbers[0]),
                gr.update(choices=[c.id for c in plan.characters]),
                gr.update(choices=numbers, value=None),
                _pictures(book, session),
            ]

        plan_outputs = [character_pick, pages_table, page_pick, page_who, fix_page, pictures]

        start_outputs = [book_state, status, open_path, tabs, remembered, *plan_outputs]

        def planned(book: Book) -> list[Any]:
            """The page with the planned ``book`` open, on the Plan tab."""
            folder = str(book.folder)
            pages = len(book.plan().pages)
            return [
                folder,
                f"Planned **{book.plan().title}**: {pages} pages, in `{book.folder}`",
                folder,
                gr.Tabs(selected="plan"),  # on to the review
                folder,
            ] + plan_values(folder)

        def start(
            text: str,
            upload: str | None,
            title_: str,
            author_: str,
            style_: str,
            browser_id: str | None,
            request: gr.Request,
        ) -> Any:
            """Plan the story in a thread (its models can take minutes to load and read), the
            status line showing the step, and the Stop of this tab (or of this browser's other
            tabs, :func:`follow_planning`) stopping it."""
            story = {"story_file": upload} if upload else {"story_text": text}
            # No id yet (clicked before the page finished loading): kept by the tab, which a
            # reload does not find again.
            key = browser_id or request.session_hash
            planning = session.planning(key)

            def plan(planning: Painting) -> Book:
                return create_book(
                    session.books_dir,
                    **story,
                    title=title_,
                    author=author_,
                    style=style_,
                    options=session.options,
                    progress=planning.progress,
                )

            running = _start(
                planning,
                plan,
                "fairytale-studio-plan",
                lambda: session.plannings.pop(key, None),
            )
            book = yield from _told(running, telling(start_outputs))
            yield planned(book)

        make_plan.click(
            guarded(start, start_outputs),
            [story_text, story_file, title, author, style, browser],
            start_outputs,
        )

        def stop_planning(browser_id: str | None, request: gr.Request) -> Any:
            planning = session.plannings.get(browser_id or request.session_hash)
            if planning is None:
                return "Nothing is being planned."
            planning.progress.stop()
            # The status line is this tab's stream of the planning (started here, or followed):
            # it says "stopping" within a second, then how the planning ended. A line written
            # here could arrive after that last one and stay.
            return gr.update()

        plan_stop.click(guarded(stop_planning, [status]), [browser], [status])

        def follow_planning(browser_id: str | None) -> Any:
            """A page opened while this browser plans a story (a reload, a second tab) shows that
            planning as the tab that started it does: its step in the status line, Stop on the
            Start tab, then the new book on the Plan tab (or how the planning ended)."""
            planning = session.plannings.get(browser_id) if browser_id else None
            if planning is None:
                yield [gr.update()] * len(start_outputs)
                return
            book = yield from _told(planning, telling(start_outputs))
            yield planned(book)

        def open_(path: str) -> list[Any]:
            if not (path or "").strip():
                raise FairytaleError("Type the path of a book folder first")
            book = open_book(path.strip())
            return [
                str(book.folder),
                f"Opened **{book.plan().title}** in `{book.folder}`",
                str(book.folder),
            ] + plan_values(str(book.folder))

        open_button.click(
            guarded(open_, [book_state, status, remembered, *plan_outputs]),
            [open_path],
            [book_state, status, remembered, *plan_outputs],
        )

        def restore(path: str | None, kept: str | None, browser_id: str | None = None) -> list[Any]:
            """The page (re)loaded: open the book this browser had open in this studio, else the
            one the studio was started with; give the browser its id when it has none. A story
            the browser is planning is shown on the Start tab (:func:`follow_planning`)."""
            browser_id = browser_id or uuid.uuid4().hex
            *shown, tab = reopened(path, kept)
            planning = session.plannings.get(browser_id)
            if planning is not None:  # follow_planning shows it on the Start tab, with Stop
                shown[1] = f"Planning a story now ({planning.line()}); Stop is on the Start tab"
                tab = gr.Tabs(selected="start")
            return [*shown, browser_id, tab]

        def reopened(path: str | None, kept: str | None) -> list[Any]:
            for candidate in (kept, path):
                if not candidate:
                    continue
                try:
                    book = open_book(candidate)
                except FairytaleError:
                    continue  # moved or deleted meanwhile: fall back
                message = f"Open: **{book.plan().title}** in `{book.folder}`"
                painting = session.jobs.get(book.folder)
                tab = gr.update()
                if painting is not None:  # follow_painting shows it on the Paint tab, with Stop
                    message += f" · being painted now ({painting.line()}); Stop is on the Paint tab"
                    tab = gr.Tabs(selected="paint")
                folder = str(book.folder)
                return [folder, message, folder, *plan_values(folder), tab]
            return [None, "Start a book: paste a story below.", gr.update(), *plan_values(None), gr.update()]

        restore_outputs = [book_state, status, open_path, *plan_outputs, browser, tabs]
        follow_outputs = [status, progress, pictures, pages_table, live_preview, character_pick, reference]

        def follow_painting(path: str | None) -> Any:
            """A page opened on a book while it is being painted (a reload, a second tab)
            shows that painting as the tab that started it does: its progress and newest
            preview on the Paint tab, where Stop stops it, then how it ended and the pictures
            (a new reference portrait: that character, with its new portrait, on the Plan tab)."""
            painting = session.jobs.get(_book(path).folder) if path else None
            if painting is None:
                yield [gr.update()] * len(follow_outputs)
                return
            book = _book(path)
            ended = None
            for ended in _watch(gr, session, book, painting):
                yield [gr.update(), *ended, gr.update(), gr.update()]
            if ended is not None:  # the status line said "being painted now": no longer
                yield [ended[0], *[gr.update()] * 4, *_new_portrait(book, painting)]

        def _new_portrait(book: Book, painting: Painting) -> list[Any]:
            """The character pick and portrait showing the portrait ``painting`` painted, if it
            painted one (the page showed the old one until the character was picked again)."""
            result = painting.outcome.get("result")
            if isinstance(result, Path):
                for character in book.plan().characters:
                    shown = book.folder / character.reference.image if character.reference else None
                    if shown is not None and shown.resolve() == result.resolve():
                        return [gr.update(value=character.id), str(result)]
            return [gr.update(), gr.update()]

        # a follower only waits and reads: it never holds up a painting, however many tabs follow
        loaded = app.load(
            guarded(restore, restore_outputs), [book_state, remembered, browser], restore_outputs
        )
        loaded.then(
            guarded(follow_painting, follow_outputs), [book_state], follow_outputs, concurrency_limit=None
        )
        loaded.then(guarded(follow_planning, start_outputs), [browser], start_outputs, concurrency_limit=None)

        def show_character(path: str | None, character_id: str | None) -> list[Any]:
            if not path or not character_id:
                return [gr.update()] * 5
            book = _book(path)
            character = book.plan().character(character_id)
            picture = book.folder / character.reference.image if character.reference else None
            return [
                character.name,
                character.kind or "",
                character.description,
                character.main,
                str(picture) if picture and picture.is_file() else None,
            ]

        character_pick.change(
            guarded(show_character, [name, kind, description, main, reference]),
            [book_state, character_pick],
            [name, kind, description, main, reference],
        )

        def store_character(
            path: str, character_id: str, name_: str, kind_: str, description_: str, main_: bool
        ) -> list[Any]:
            book = _book(path)
            result = save_character(
                book,
                character_id,
                settings=settings,
                name=name_,
                kind=kind_,
                description=description_,
                main=main_,
            )
            return [f"Saved {name_}{recomposed_note(result)}", _table(book, session)]

        save_character_button.click(
            guarded(store_character, [status, pages_table]),
            [book_state, character_pick, name, kind, description, main],
            [status, pages_table],
        )

        reference_outputs = [reference, status, pages_table]

        def paint_reference(path: str, character_id: str) -> Any:
            book = _book(path)
            if not character_id:
                raise FairytaleError("Choose a character first")
            character = {c.id: c for c in book.plan().characters}.get(character_id)
            name_ = character.name if character else character_id
            picture = yield from painting_steps(
                session,
                book,
                lambda job: repaint_reference(
                    book, character_id, session.options, session.pool, progress=job
                ),
                telling(reference_outputs),
                f"A new portrait of {name_}",
            )
            yield [str(picture), f"Painted a new portrait of {name_}", _table(book, session)]

        reference_again.click(
            guarded(paint_reference, reference_outputs), [book_state, character_pick], reference_outputs
        )

        def my_reference(path: str, character_id: str, upload: str | None) -> list[Any]:
            if not upload:
                return [gr.update(), gr.update(), gr.update()]
            book = _book(path)
            picture = use_my_picture(book, character_id, upload)
            return [
                str(picture),
                f"Your picture is now {character_id}'s reference portrait",
                _table(book, session),
            ]

        my_picture.upload(
            guarded(my_reference, [reference, status, pages_table]),
            [book_state, character_pick, my_picture],
            [reference, status, pages_table],
        )

        def show_page(path: str | None, number: str | None) -> list[Any]:
            if not path or not number:
                return [gr.update()] * 3
            page = _book(path).plan().pages[int(number) - 1]
            return [page.text, page.prompt, page.characters]

        page_pick.change(
            guarded(show_page, [page_text, page_prompt, page_who]),
            [book_state, page_pick],
            [page_text, page_prompt, page_who],
        )

        def store_page(path: str, number: str, text: str, prompt: str, who: list[str]) -> list[Any]:
            book = _book(path)
            save_page(book, int(number), text=text, prompt=prompt, characters=who)
            return [f"Saved page {number}", _table(book, session)]

        save_page_button.click(
            guarded(store_page, [status, pages_table]),
            [book_state, page_pick, page_text, page_prompt, page_who],
            [status, pages_table],
        )

        def compose_page(path: str, number: str) -> list[Any]:
            if not number:
                raise FairytaleError("Choose a page first")
            book = _book(path)
            prompt = compose_page_prompt(book, int(number), settings=settings)
            return [prompt, f"Page {number} has the composed prompt again", _table(book, session)]

        compose_button.click(
            guarded(compose_page, [page_prompt, status, pages_table]),
            [book_state, page_pick],
            [page_prompt, status, pages_table],
        )

        run_painting = functools.partial(stream_painting, gr, session)

        def paint_all(path: str, draft: bool, previews: bool) -> Any:
            yield from run_painting(
                path,
                lambda book, job, on_preview: paint_book(
                    book, session.options, session.pool, progress=job, draft=draft, on_preview=on_preview
                ),
                previews,
            )

        paint.click(
            guarded(paint_all, [progress, pictures, pages_table, live_preview]),
            [book_state, paint_draft, show_previews],
            [progress, pictures, pages_table, live_preview],
        )

        def stop_painting(path: str | None) -> Any:
            painting = session.jobs.get(_book(path).folder) if path else None
            if painting is None:
                return "Nothing is being painted."
            painting.progress.stop()
            # As for the planning: the painting's stream (in the tab that started it, and in
            # every tab following it) says "stopping", then how it ended; a line written here
            # could arrive after that last one and stay.
            return gr.update()

        stop.click(guarded(stop_painting, [progress]), [book_state], [progress])
        # the Plan, Fix and Book tabs paint too (a portrait, a page, candidates, the missing pages of the PDF)
        reference_stop.click(guarded(stop_painting, [status]), [book_state], [status])
        fix_stop.click(guarded(stop_painting, [status]), [book_state], [status])
        book_stop.click(guarded(stop_painting, [status]), [book_state], [status])

        def show_fix(path: str | None, number: str | None) -> list[Any]:
            if not path or not number:
                return [gr.update()] * 5
            book = _book(path)
            view = page_views(book, settings)[int(number) - 1]
            history = [(str(e.image), f"seed {e.seed}") for e in earlier_pictures(book, int(number))]
            return [str(view.picture) if view.picture else None, view.prompt, view.locked, [], history]

        fix_outputs = [fix_picture, fix_prompt, fix_locked, candidates, earlier]
        fix_page.change(guarded(show_fix, fix_outputs), [book_state, fix_page], fix_outputs)

        def after_fix(book: Book, number: str, message: str) -> list[Any]:
            return [
                message,
                *show_fix(str(book.folder), number),
                _pictures(book, session),
                _table(book, session),
            ]

        fixed_outputs = [status, *fix_outputs, pictures, pages_table]

        def as_draft(draft: bool) -> str:
            return " as a draft" if draft else ""

        def repaint_with_prompt(path: str, number: str, prompt: str, draft: bool) -> Any:
            book = _book(path)
            if not number:
                raise FairytaleError("Choose a page first")
            yield from painting_steps(
                session,
                book,
                lambda job: repaint_page(
                    book, int(number), session.options, session.pool, prompt=prompt, draft=draft, progress=job
                ),
                telling(fixed_outputs),
                f"Page {number}",
            )
            yield after_fix(book, number, f"Page {number} painted again from its prompt{as_draft(draft)}")

        fix_repaint.click(
            guarded(repaint_with_prompt, fixed_outputs),
            [book_state, fix_page, fix_prompt, fix_draft],
            fixed_outputs,
        )

        def repaint_new_seed(path: str, number: str, draft: bool) -> Any:
            book = _book(path)
            if not number:
                raise FairytaleError("Choose a page first")
            result = yield from painting_steps(
                session,
                book,
                lambda job: repaint_page(
                    book, int(number), session.options, session.pool, new_seed=True, draft=draft, progress=job
                ),
                telling(fixed_outputs),
                f"Page {number}",
            )
            yield after_fix(
                book,
                number,
                f"Page {number} painted again with seed {result.new_seeds.get(int(number))}{as_draft(draft)}",
            )

        fix_seed.click(
            guarded(repaint_new_seed, fixed_outputs), [book_state, fix_page, fix_draft], fixed_outputs
        )

        candidate_seeds = gr.State([])

        four_outputs = [candidates, candidate_seeds, status]

        def four(path: str, number: str, draft: bool) -> Any:
            book = _book(path)
            if not number:
                raise FairytaleError("Choose a page first")
            painted = yield from painting_steps(
                session,
                book,
                lambda job: paint_candidates(
                    book, int(number), session.options, session.pool, draft=draft, progress=job
                ),
                telling(four_outputs),
                f"Candidates of page {number}",
            )
            found = [c for c in painted if c.image]
            if not found:
                raise FairytaleError(
                    f"The safety checker turned down all {len(painted)} candidates of page {number}: "
                    "change the prompt, then paint candidates again"
                )
            flagged = len(painted) - len(found)
            said = f" ({flagged} turned down by the safety checker)" if flagged else ""
            yield [
                [(str(c.image), f"seed {c.seed}") for c in found],
                [c.seed for c in found],
                f"Click the candidate to use{said}" + (f" (drafts: {DRAFT_NOTE})" if draft else ""),
            ]

        fix_candidates.click(guarded(four, four_outputs), [book_state, fix_page, fix_draft], four_outputs)

        def pick(path: str, number: str, seeds: list[int], evt: gr.SelectData) -> list[Any]:
            book = _book(path)
            choose_candidate(book, int(number), seeds[evt.index])
            return after_fix(
                book,
                number,
                f"Page {number} uses the candidate with seed {seeds[evt.index]} (lay out the book to update the PDF)",
            )

        candidates.select(
            guarded(pick, fixed_outputs), [book_state, fix_page, candidate_seeds], fixed_outputs
        )

        def go_back(path: str, number: str, evt: gr.SelectData) -> list[Any]:
            book = _book(path)
            entry = earlier_pictures(book, int(number))[evt.index]
            use_earlier_picture(book, int(number), entry.key)
            return after_fix(
                book, number, f"Page {number} is back to its earlier picture (seed {entry.seed}) and locked"
            )

        earlier.select(guarded(go_back, fixed_outputs), [book_state, fix_page], fixed_outputs)

        def set_lock(path: str, number: str, locked: bool) -> list[Any]:
            """Lock or unlock the page; a refusal is said, and the box shows the page as it is
            (it stayed ticked on a page that was not locked)."""
            if not path or not number:
                refused = (
                    "Choose a page first"
                    if path
                    else "Start a book first (paste a story, or open a book folder)"
                )
                gr.Warning(refused)
                unchanged = [gr.update()] * len(fixed_outputs)
                unchanged[0], unchanged[fixed_outputs.index(fix_locked)] = refused, False
                return unchanged
            book = _book(path)
            try:
                lock_page(book, int(number), settings, locked=locked)
            except FairytaleError as exc:
                gr.Warning(str(exc))
                return after_fix(book, number, str(exc))
            return after_fix(book, number, f"Page {number} {'locked' if locked else 'unlocked'}")

        fix_locked.input(guarded(set_lock, fixed_outputs), [book_state, fix_page, fix_locked], fixed_outputs)

        layout_outputs = [pdf_file, preview, status]

        def lay_out(path: str) -> Any:
            book = _book(path)
            pdf = yield from painting_steps(
                session,
                book,
                lambda job: book_pdf(book, session.options, session.pool, progress=job),
                telling(layout_outputs),
                "Laying out the book",
            )
            shown = [(image, f"printed page {i + 1}") for i, image in enumerate(preview_pages(book))]
            yield [str(pdf), shown, f"The book is laid out: {pdf.name}"]

        make_pdf.click(guarded(lay_out, layout_outputs), [book_state], layout_outputs)

        def publish(path: str, preset: str | None) -> list[Any]:
            book = _book(path)
            result = export_book(book, preset=preset or None)
            files = [str(p) for p in result.files.values()]
            message = "Written from the painted pictures: " + ", ".join(Path(f).name for f in files)
            if result.preflight and result.preflight.errors:
                message += f" · preflight found {len(result.preflight.errors)} problems (see the report)"
            return [files, message]

        make_epub.click(
            guarded(publish, [export_files, status]), [book_state, export_preset], [export_files, status]
        )
    return app


def launch_studio(
    book_dir: Path | str | None = None,
    *,
    books_dir: Path | str | None = None,
    options: StudioOptions | None = None,
    port: int | None = None,
    share: bool = False,
    block: bool = False,
    inline: bool | None = None,
    idle_seconds: float = 600.0,
) -> Studio:
    """Start the studio on 127.0.0.1 (a free port unless ``port``) and return its address.

    ``book_dir`` opens a book folder; new books go to ``books_dir`` (default: beside the
    opened book, else ``./fairytale-books``). gradio's copies of the files it shows go to
    ``SESSION/.studio/`` inside that folder. ``share`` makes a public gradio link (only when
    asked). ``block`` serves until Ctrl-C; otherwise the studio runs in the background
    (notebooks, tests) until :meth:`Studio.close`. Inside Colab the page is shown through
    Colab's own port proxy, never a public link.
    """
    from fairytale.notebook import in_colab

    book = open_book(book_dir) if book_dir else None
    books = (
        Path(books_dir).expanduser().resolve()
        if books_dir
        else (book.folder.parent if book else Path.cwd() / "fairytale-books")
    )
    ensure_dir(books)
    session_dir = ensure_dir((book.folder if book and not books_dir else books) / SESSION_DIR)
    gr = _import_gradio(session_dir)
    session = StudioSession(options or StudioOptions(), books, IllustratorPool(idle_seconds))
    app = build_app(session, book.folder if book else None)
    app.queue(default_concurrency_limit=2)
    colab = in_colab()
    # Only what the studio asks for, whatever GRADIO_* variables the environment sets: no code
    # editor asking a hosted model (GRADIO_VIBE_MODE), no Node renderer (GRADIO_SSR_MODE), no MCP
    # tools (GRADIO_MCP_SERVER), no monitoring page; share only with --share (GRADIO_SHARE).
    app.vibe_mode = False
    app.launch(
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
        server_name=HOST,
        server_port=port or free_port(),
        share=share,
        inline=inline if inline is not None else colab,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        max_file_size=MAX_UPLOAD,
        head=ALT_TEXT_HEAD,
        footer_links=[],
        theme=gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]),
    )
    studio = Studio(app.local_url, app, session, session_dir, app.share_url if share else None)
    if block:
        studio.wait()
    return studio
