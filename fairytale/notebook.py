"""What the Colab notebooks need beyond the public API: which GPU there is and what to do about
it, the first pages of a PDF as pictures, a download link, and a quick preview of a learned token;
mistakes shown as one line (:func:`use_plain_messages`); and what makes running a notebook again
safe, after a change, a restart or an error: the edited plan kept (:func:`plan_or_keep`), a
trained token kept (:func:`trained_already`), the upload box not shown again (:func:`pictures_in`),
and where the work is saved, here or on Google Drive (:func:`output_folder`, :func:`copy_to_drive`);
and the live preview of a render, which does not outlive the painting (:func:`live_preview`).

Everything here is plain Python with tests; the notebooks only call it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairytale.errors import FairytaleError, Interrupted

GIB = 1024**3
#: Below this much GPU memory the renders use --low-vram (model CPU offload, attention slicing).
LOW_VRAM_BELOW_GIB = 12.0
#: Below this, Stable Diffusion does not fit even with offload.
TOO_SMALL_GIB = 3.5
#: Set to 1 to skip the notebooks' install cells (the tests do; see tests/test_notebooks.py).
SKIP_INSTALL_ENV = "FAIRYTALE_SKIP_INSTALL"

NO_GPU_ADVICE = (
    "No GPU found. In Colab: Runtime → Change runtime type → T4 GPU, then Runtime → Run all. "
    "On a CPU everything still works, but a picture takes minutes instead of seconds."
)


@dataclass(frozen=True)
class GpuAdvice:
    """The machine's accelerator and the options that suit it, said in words."""

    device: str  # "cuda", "mps" or "cpu"
    name: str | None
    memory_gib: float | None
    low_vram: bool
    message: str

    def render_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`fairytale.render.RenderSettings`."""
        return {"device": self.device, "low_vram": self.low_vram}


def advise(device: str, name: str | None = None, memory_bytes: int | None = None, free_bytes: int | None = None) -> GpuAdvice:
    """The advice for a given accelerator (pure: :func:`check_gpu` asks torch what there is).
    For CUDA it goes by the memory free now (``free_bytes``) where known, else by the card's
    total: an earlier cell's pipeline, or another program on a shared card, holds the rest."""
    if device == "cpu":
        return GpuAdvice("cpu", None, None, False, NO_GPU_ADVICE)
    if device == "mps":
        return GpuAdvice(
            "mps",
            name or "Apple GPU",
            None,
            False,
            "Apple GPU (MPS): pictures are painted in float32, one at a time.",
        )
    total = None if memory_bytes is None else memory_bytes / GIB
    free = None if free_bytes is None else free_bytes / GIB
    gib = free if free is not None else total
    label = name or "CUDA GPU"
    if total is not None:
        label += f" with {total:.1f} GiB"
    if free is not None and (total is None or total - free >= 1.0):
        label += f" ({free:.1f} GiB free; something else holds the rest: an earlier cell's models, or another program)"
    if gib is not None and gib < TOO_SMALL_GIB:
        return GpuAdvice(
            "cpu",
            name,
            gib,
            False,
            f"{label} is too small for Stable Diffusion; using the CPU. In Colab, pick a T4 runtime"
            + (", or Runtime → Restart session to free its memory." if free is not None and total is not None and total >= TOO_SMALL_GIB else "."),
        )
    if gib is not None and gib < LOW_VRAM_BELOW_GIB:
        return GpuAdvice(
            "cuda",
            name,
            gib,
            True,
            f"{label}: float16 with --low-vram (model CPU offload, attention slicing, one page at a time).",
        )
    return GpuAdvice("cuda", name, gib, False, f"{label}: float16, several pages at a time.")


def check_gpu() -> GpuAdvice:
    """Look at this machine's accelerator and advise."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        try:
            free, _ = torch.cuda.mem_get_info(0)
        except RuntimeError:  # a driver that cannot say: the card's total
            free = None
        return advise("cuda", props.name, props.total_memory, free)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return advise("mps")
    return advise("cpu")


def in_colab() -> bool:
    """Whether this runs inside Google Colab."""
    return "google.colab" in sys.modules


def install_skipped() -> bool:
    """Whether the notebooks' install cells should do nothing (``FAIRYTALE_SKIP_INSTALL=1``)."""
    return os.environ.get(SKIP_INSTALL_ENV, "").strip() not in ("", "0", "false", "no")


def pdf_page_images(pdf: Path | str, pages: int = 4, width: int = 480) -> list[Any]:
    """The first ``pages`` pages of a PDF as PIL images ``width`` pixels wide, to show inline."""
    import pypdfium2 as pdfium

    pdf = Path(pdf)
    if not pdf.is_file():
        raise FairytaleError(f"PDF not found: {pdf}")
    document = pdfium.PdfDocument(str(pdf))
    try:
        images = []
        for index in range(min(pages, len(document))):
            page = document[index]
            scale = width / page.get_width()
            images.append(page.render(scale=scale).to_pil().convert("RGB"))
        return images
    finally:
        document.close()


def offer_download(path: Path | str) -> Any:
    """In Colab, start the browser download of ``path``; elsewhere return a link to it."""
    path = Path(path)
    if not path.is_file():
        raise FairytaleError(f"Nothing to download: {path} does not exist")
    if in_colab():  # pragma: no cover - only inside Colab
        from google.colab import files

        files.download(str(path))
        return None
    from IPython.display import FileLink

    return FileLink(os.path.relpath(path))


def preview_token(
    embedding_file: Path | str,
    prompts: list[str],
    out_dir: Path | str,
    *,
    backend: str = "sd14",
    model: str | None = None,
    steps: int = 25,
    seed: int = 0,
    device: str | None = None,
    low_vram: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Paint ``prompts`` (which use the learned token) with the token loaded, through the same
    render path as a book — safety checker, recorded seeds, cache — and return the pictures.

    ``out_dir`` receives ``preview.pdf``, its book folder ``preview/`` and ``plan.json``.
    """
    from fairytale.embeddings import read_embedding
    from fairytale.plan import BookPlan, Embedding, Page, save_plan
    from fairytale.render import RenderSettings, render_book

    if not prompts:
        raise FairytaleError("Give at least one prompt to preview the token with")
    learned = read_embedding(Path(embedding_file))
    missing = [p for p in prompts if learned.token not in p]
    if missing:
        raise FairytaleError(f"Preview prompts must use the token {learned.token}: {missing[0]!r} does not")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = BookPlan(
        title=f"Preview of {learned.token}",
        seed=seed,
        embeddings=[
            Embedding(token=learned.token, path=str(Path(embedding_file).resolve()), family=learned.family)
        ],
        pages=[
            Page(number=i + 1, text=prompt, prompt=prompt, seed=seed + i) for i, prompt in enumerate(prompts)
        ],
    )
    plan_file = out_dir / "plan.json"
    save_plan(plan, plan_file)
    settings = RenderSettings(backend=backend, model=model, steps=steps, device=device, low_vram=low_vram)
    result = render_book(plan_file, out_dir / "preview.pdf", settings, progress=progress)
    return [result.book_dir / page.image for page in result.pages]


def plan_tables(plan: Any) -> tuple[Any, Any]:
    """Two rich tables to review a plan before painting: its characters, and its pages."""
    from rich.table import Table
    from rich.text import Text

    characters = Table(title="Characters", show_lines=True)
    for column in ("id", "name", "kind", "main", "pages", "description (what the prompts draw)"):
        characters.add_column(column)
    for character in plan.characters:
        on = [str(p.number) for p in plan.pages if character.id in p.characters]
        # Every cell is the user's text (names, prompts may hold "[red scarf]"): Text, never markup.
        characters.add_row(
            *map(
                Text,
                (
                    character.id,
                    character.name,
                    character.kind or "",
                    "yes" if character.main else "",
                    ", ".join(on),
                    character.token or character.description or "",
                ),
            )
        )
    pages = Table(title="Pages", show_lines=True)
    for column in ("page", "characters", "setting", "time", "mood", "prompt", "seed"):
        pages.add_column(column)
    for page in plan.pages:
        pages.add_row(
            *map(
                Text,
                (
                    str(page.number),
                    ", ".join(page.characters),
                    page.setting or "",
                    page.time_of_day or "",
                    page.mood or "",
                    page.prompt,
                    str(page.seed),
                ),
            )
        )
    return characters, pages


def one_line(error: BaseException) -> str:
    """How a notebook shows a user's mistake or a stopped job: one line, as the CLI prints it."""
    if isinstance(error, Interrupted):
        return f"Stopped: {error.kept}; run this cell again to go on."
    return f"Error: {error}"


def _raised_in_a_cell(tb: Any) -> bool:
    """Whether the innermost frame of ``tb`` is a notebook cell's code (IPython names cells
    ``<ipython-input-…>``, ipykernel ``…/ipykernel_<pid>/<hash>.py``), not a module's."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return name.startswith("<ipython-input-") or "ipykernel_" in name


def use_plain_messages(shell: Any = None) -> None:
    """In the notebook (the IPython ``shell``, default the running one): show a
    :class:`FairytaleError` or an interrupted job as :func:`one_line` instead of a traceback, a
    cell run before the cells it needs (a name not set yet) as a line saying so, and
    fAIrytale's notes (a hand-written prompt an edit kept) as a plain line instead of a
    Python warning. The cell still fails, so "Run all" stops there. Nothing happens outside
    IPython; calling it again changes nothing, so every cell that needs an earlier one calls it
    first: after a restart, that cell may be the first one run."""
    import warnings

    from fairytale.plan_edits import HandWrittenPromptsKept

    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return

    def show_one_line(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> None:
        if isinstance(value, NameError) and not _raised_in_a_cell(tb):  # a bug: its traceback helps
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        elif isinstance(value, NameError):
            print(
                f"Error: {value.name or value} is not set yet: run the cells above this one first "
                "(in Colab: Runtime → Run before)",
                file=sys.stderr,
            )
        else:
            print(one_line(value), file=sys.stderr)

    shell.set_custom_exc((FairytaleError, Interrupted, NameError), show_one_line)
    shown = warnings.showwarning
    if getattr(shown, "fairytale_plain", False):
        return

    def show_warning(
        message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if issubclass(category, HandWrittenPromptsKept):
            print(f"Note: {message}")
        else:
            shown(message, category, filename, lineno, file, line)

    show_warning.fairytale_plain = True  # type: ignore[attr-defined]
    warnings.showwarning = show_warning
    # a warning is shown once per place by default: a note must show every time the cell runs
    warnings.simplefilter("always", HandWrittenPromptsKept)


#: Where :func:`plan_or_keep` puts the plan it replaces, beside the new one.
PREVIOUS_PLAN = "plan.previous.json"


@dataclass(frozen=True)
class PlannedBook:
    """The plan a notebook works on, and what was done to get it, said in words."""

    plan: Any  # BookPlan
    kept: bool  # the saved plan was kept (with the edits made to it)
    message: str


def plan_or_keep(
    story_path: Path | str,
    plan_file: Path | str,
    *,
    words_per_page: int,
    seed: int,
    title: str | None = None,
    author: str | None = None,
    new_plan: bool = False,
    **planning: Any,
) -> PlannedBook:
    """The book plan at ``plan_file``, kept when it was planned from this very story with the
    same words per page and seed (so the edits made to it since, in a cell, the file browser or
    the studio, survive running the notebook again), else planned from the story with
    :func:`fairytale.planner.plan_story` (``planning``: its other keyword arguments) and saved.
    A plan that is replaced is saved first as :data:`PREVIOUS_PLAN` beside it. ``new_plan``
    plans again whatever is saved. A ``title`` or ``author`` given is set on a kept plan."""
    import hashlib
    import shutil

    from fairytale.errors import PlanError
    from fairytale.plan import load_plan, save_plan
    from fairytale.planner import plan_story

    story_path, plan_file = Path(story_path), Path(plan_file)
    if not story_path.is_file():
        raise FairytaleError(f"Story file not found: {story_path}")
    why = "planned from the story"
    if plan_file.is_file() and not new_plan:
        try:
            saved = load_plan(plan_file)
        except PlanError as exc:  # a hand edit that broke it: say how to go on
            raise PlanError(f"{exc} (fix the file, or tick NEW_PLAN to plan the story again)") from None
        same = (
            saved.source.sha256 == hashlib.sha256(story_path.read_bytes()).hexdigest()
            and saved.source.words_per_page == words_per_page
            and saved.seed == seed
        )
        if same:
            changed = {
                k: v for k, v in (("title", title), ("author", author)) if v and getattr(saved, k) != v
            }
            if changed:
                saved = saved.model_copy(update=changed)
                save_plan(saved, plan_file)
            return PlannedBook(
                saved,
                True,
                f"Kept {plan_file}, planned earlier from this story, with the edits made to it since "
                "(tick NEW_PLAN to plan the story again).",
            )
        why = "the story, WORDS_PER_PAGE or SEED changed: planned again"
    elif plan_file.is_file():
        why = "NEW_PLAN: planned again"
    plan = plan_story(
        story_path, title=title, author=author, words_per_page=words_per_page, seed=seed, **planning
    )
    replaced = plan_file.is_file()
    if replaced:
        shutil.copy2(plan_file, plan_file.with_name(PREVIOUS_PLAN))
    save_plan(plan, plan_file)
    note = f" (the plan it replaces is in {plan_file.with_name(PREVIOUS_PLAN)})" if replaced else ""
    return PlannedBook(plan, False, f"{plan_file}: {why}{note}.")


#: Where Colab mounts Google Drive, and the folder of "My Drive" in it.
DRIVE_MOUNT = Path("/content/drive")
MY_DRIVE = "MyDrive"


def output_folder(name: str, *, drive: bool = False, drive_folder: str = "fairytale") -> tuple[Path, str]:
    """The folder a notebook saves its work in, made if missing, and a line saying where it is.

    With ``drive`` in Colab, Google Drive is mounted (Colab asks for permission) and the folder
    is ``My Drive/<drive_folder>/<name>``, which outlives the runtime; otherwise it is ``name``
    here, which in Colab is deleted when the runtime ends, and the line says so."""
    if not name.strip():
        raise FairytaleError("The output folder name is empty")
    if drive and in_colab():
        from google.colab import drive as google_drive

        google_drive.mount(str(DRIVE_MOUNT))
        folder = DRIVE_MOUNT / MY_DRIVE / drive_folder / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder, f"Saving to Google Drive: {folder} (kept when the runtime ends)."
    folder = Path(name)
    folder.mkdir(parents=True, exist_ok=True)
    if in_colab():
        return folder, (
            f"Saving to {folder.resolve()}: Colab deletes it when the runtime ends. Download what you want "
            "to keep, or tick SAVE_TO_DRIVE to save to Google Drive."
        )
    if drive:
        return folder, f"Google Drive is there only in Colab: saving to {folder.resolve()}."
    return folder, f"Saving to {folder.resolve()}."


def trained_already(output: Path | str, *, overwrite: bool = False, resume: bool = False) -> str | None:
    """A line saying the token at ``output`` is trained already, so a notebook run again (after
    a restart, say) goes on to the next cells instead of stopping; ``None`` when it should
    train: nothing is there yet, or OVERWRITE (start over) or RESUME (go on from the last
    checkpoint) was ticked."""
    output = Path(output)
    if overwrite or resume or not output.is_file():
        return None
    return f"{output} is trained already: kept. Tick OVERWRITE to train it again from the start."


def copy_to_drive(paths: list[Path], drive_folder: str) -> Path | None:
    """In Colab, copy ``paths`` to ``My Drive/<drive_folder>`` (mounting Google Drive, which
    asks for permission) and return that folder; elsewhere do nothing and return ``None``."""
    import shutil

    if not in_colab():
        return None
    from google.colab import drive as google_drive

    google_drive.mount(str(DRIVE_MOUNT))
    target = DRIVE_MOUNT / MY_DRIVE / drive_folder
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy2(path, target / Path(path).name)
    return target


def story_file(story: str, story_file: str, out_dir: Path | str) -> tuple[Path, str]:
    """The story to plan: the file ``story_file`` if one is named, else the text ``story``
    saved as ``out_dir/story.txt``; and a line saying which, with its length in words."""
    if story_file.strip():
        path = Path(story_file.strip())
        if not path.is_file():
            raise FairytaleError(
                f"Story file not found: {path} (in Colab, upload it with the folder icon on the left first)"
            )
    elif story.strip():
        path = Path(out_dir) / "story.txt"
        path.write_text(story.strip() + "\n", encoding="utf-8")
    else:
        raise FairytaleError("No story: paste it into STORY, or name a file in STORY_FILE")
    words = len(path.read_text(encoding="utf-8", errors="replace").split())
    return path, f"{path}: {words} words"


#: The picture files a notebook takes (what fairytale.images opens).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def pictures_in(folder: Path | str, *, upload: bool = False) -> tuple[list[Path], str]:
    """The pictures in ``folder`` (made if missing), and a line saying how many. In Colab with
    ``upload`` and no picture there yet, Colab's upload box asks for them first; once there are
    pictures it is not shown again, so running the notebook again does not wait on it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def found() -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES)

    pictures = found()
    if upload and in_colab() and not pictures:
        from google.colab import files

        for name, data in files.upload().items():
            (folder / Path(name).name).write_bytes(data)
        pictures = found()
    elif upload and in_colab():
        return pictures, (
            f"{len(pictures)} pictures in {folder} already (no upload box: add more with the file browser on "
            "the left, or empty the folder to upload again)"
        )
    return pictures, f"{len(pictures)} pictures in {folder}"


class LivePreview:
    """The picture being painted, shown in one display area and updated in place
    (:meth:`show` is a ``render_book`` ``on_preview`` callback); :meth:`end` replaces the last
    half-painted picture when painting ends."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle  # an IPython DisplayHandle, or None: no preview
        self.page: int | None = None  # the page the area shows half-painted

    @property
    def callback(self) -> Any:
        """What to pass as ``on_preview``: :meth:`show`, or ``None`` when there is no preview."""
        return self.show if self.handle is not None else None

    def show(self, preview: Any) -> None:
        """Show the first picture of a :class:`fairytale.render.Preview`."""
        self.page = preview.pages[0]
        self.handle.update(preview.images[0])

    def end(self, result: Any = None) -> None:
        """Show the finished picture of the page last previewed, from the ``RenderResult``
        ``result``; without one (painting stopped or failed) or without that picture, clear the area."""
        if self.handle is None or self.page is None:
            return
        finished = None
        if result is not None:
            finished = next((result.book_dir / p.image for p in result.pages if p.number == self.page), None)
        self.page = None
        if finished is not None and finished.is_file():
            from PIL import Image

            with Image.open(finished) as picture:
                self.handle.update(picture.convert("RGB"))
        else:
            self.handle.update({"text/plain": ""}, raw=True)


@contextlib.contextmanager
def live_preview(enabled: bool, handle: Any = None) -> Iterator[LivePreview]:
    """A :class:`LivePreview` in a new display area below the cell (``handle``: a given one)
    when ``enabled`` and in IPython. Call its ``end(result)`` when the render returns; if the
    block ends with an error (a failure, or a stop), the area is cleared, so a half-painted
    picture never stays on screen."""
    if enabled and handle is None:
        from IPython.display import display

        handle = display(display_id=True)  # None outside IPython
    live = LivePreview(handle if enabled else None)
    try:
        yield live
    finally:
        live.end(None)  # after end(result), nothing is left to clear
