"""What the Colab notebooks need beyond the public API: which GPU there is and what to do about
it, the first pages of a PDF as pictures, a download link, and a quick preview of a learned token.

Everything here is plain Python with tests; the notebooks only call it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairytale.errors import FairytaleError

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


def advise(device: str, name: str | None = None, memory_bytes: int | None = None) -> GpuAdvice:
    """The advice for a given accelerator (pure: :func:`check_gpu` asks torch what there is)."""
    if device == "cpu":
        return GpuAdvice("cpu", None, None, False, NO_GPU_ADVICE)
    if device == "mps":
        return GpuAdvice("mps", name or "Apple GPU", None, False, "Apple GPU (MPS): pictures are painted in float32, one at a time.")
    gib = None if memory_bytes is None else memory_bytes / GIB
    label = f"{name or 'CUDA GPU'} with {gib:.1f} GiB" if gib is not None else (name or "CUDA GPU")
    if gib is not None and gib < TOO_SMALL_GIB:
        return GpuAdvice(
            "cpu", name, gib, False,
            f"{label} is too small for Stable Diffusion; using the CPU. In Colab, pick a T4 runtime.",
        )
    if gib is not None and gib < LOW_VRAM_BELOW_GIB:
        return GpuAdvice(
            "cuda", name, gib, True,
            f"{label}: float16 with --low-vram (model CPU offload, attention slicing, one page at a time).",
        )
    return GpuAdvice("cuda", name, gib, False, f"{label}: float16, several pages at a time.")


def check_gpu() -> GpuAdvice:
    """Look at this machine's accelerator and advise."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return advise("cuda", props.name, props.total_memory)
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
        embeddings=[Embedding(token=learned.token, path=str(Path(embedding_file).resolve()), family=learned.family)],
        pages=[
            Page(number=i + 1, text=prompt, prompt=prompt, seed=seed + i)
            for i, prompt in enumerate(prompts)
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
                    character.id, character.name, character.kind or "", "yes" if character.main else "",
                    ", ".join(on), character.token or character.description or "",
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
                    str(page.number), ", ".join(page.characters), page.setting or "", page.time_of_day or "",
                    page.mood or "", page.prompt, str(page.seed),
                ),
            )
        )
    return characters, pages
