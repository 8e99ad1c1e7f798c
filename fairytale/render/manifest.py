"""The book folder's manifest: what a render made, page by page, for people and for tools.

``fairytale render``/``book`` write ``BOOK/manifest.json`` last, after the PDF; ``fairytale
evaluate BOOK`` reads it with :func:`load_manifest`. Paths in it are relative to the book
folder unless absolute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fairytale.errors import FairytaleError
from fairytale.files import atomic_write_text

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ManifestPage(_Strict):
    """One story page: its picture, how it was made, how it was printed."""

    number: int
    image: str = Field(description="Picture file (PNG), relative to the book folder.")
    print_image: str | None = Field(default=None, description="Upscaled picture used in the PDF (--print).")
    key: str | None = Field(description="Cache key: hash of everything that decided the picture.")
    prompt: str
    negative_prompt: str
    requested_seed: int = Field(description="The page's seed in the plan.")
    seed: int | None = Field(description="Seed of the kept picture (differs after a safety repaint); null for a placeholder.")
    characters: list[str] = Field(default_factory=list, description="Ids of the characters on the page.")
    safety: Literal["passed", "repainted", "placeholder"]
    attempts: int
    painted: bool = Field(description="Painted in this run (false: reused from the cache).")
    seconds: float = Field(description="Painting time of the kept picture's batch, per page.")
    width: int
    height: int
    layout: str
    effective_dpi: float
    draft: bool = Field(default=False, description="A draft (--draft): a final render paints this page again.")
    likeness: dict[str, float] = Field(
        default_factory=dict, description="--drift-check: character id → likeness of its region to its portrait (0-100)."
    )
    drift_repaints: int = Field(default=0, description="Pictures painted again because a character drifted from its portrait.")


class Manifest(_Strict):
    """Everything about one rendered book."""

    format: Literal["fairytale-book"] = "fairytale-book"
    version: Literal[1] = MANIFEST_VERSION
    title: str
    author: str | None
    plan: str
    pdf: str
    backend: str
    model: str
    #: how the book's credit line names the model: the hub id, or a local copy's folder name (older manifests: None)
    model_credit: str | None = None
    model_fingerprint: str
    settings: dict[str, Any]
    device: str
    fairytale_version: str
    created: str
    cover_page: int
    pdf_pages: int
    pdf_bytes: int
    pages: list[ManifestPage]
    warnings: list[str] = Field(default_factory=list)

    def page(self, number: int) -> ManifestPage:
        for page in self.pages:
            if page.number == number:
                return page
        raise KeyError(number)


def save_manifest(manifest: Manifest, book_dir: Path) -> Path:
    """Write ``manifest.json`` into ``book_dir`` atomically."""
    path = Path(book_dir) / MANIFEST_NAME
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    return path


def load_manifest(book_dir: Path) -> Manifest:
    """Read a book folder's manifest; a missing or broken one is a one-line error."""
    path = Path(book_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FairytaleError(f"{book_dir} is not a rendered book folder: no {MANIFEST_NAME} in it")
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FairytaleError(f"{path} is not a valid manifest: {where}: {first['msg']}") from None
    except UnicodeDecodeError:
        raise FairytaleError(f"{path} is not a valid manifest: not UTF-8 text") from None
    except OSError as exc:
        raise FairytaleError(f"Cannot read the manifest {path}: {exc.strerror or exc}") from None


def resolve_in_book(book_dir: Path, relative: str) -> Path:
    """A path written in a manifest, resolved against the book folder."""
    path = Path(relative)
    return path if path.is_absolute() else Path(book_dir) / path
