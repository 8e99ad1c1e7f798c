"""The book folder's picture cache: every finished picture, named by a hash of what made it.

``BOOK/cache/<key>.png`` is a picture and ``BOOK/cache/<key>.json`` its record (the seed that
painted it, how the safety check went, how long it took). Both are written atomically, the
record last: a picture counts as done only once its record exists, so a run killed at any
moment leaves nothing that a later run would mistake for a finished page. A run that is started
again paints exactly the pages whose keys are missing.

A placeholder's record holds the ``max_repaints`` it was given up under: a render allowed more
repaints paints the page again (as it does a placeholder whose record does not say).

The record holds the picture's SHA-256, and a picture that no longer matches it (a disk that
filled up, a copy cut short, a hand edit) is painted again rather than failing the PDF. Records
of older versions have no hash: their picture is accepted if it decodes completely.

``BOOK/pages/page-NN.png`` are plain copies of the current picture of each page, for people
(and ``fairytale evaluate``) to look at; the cache is what runs rely on.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fairytale.files import (
    atomic_path,
    atomic_write_text,
    ensure_dir,
    remove_stale_temporaries_in,
    sha256_file,
)

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

SafetyOutcome = Literal["passed", "repainted", "placeholder"]


@dataclass(frozen=True)
class StoredPicture:
    """A finished page picture in the cache (``image`` is None for a placeholder)."""

    key: str
    requested_seed: int
    seed: int | None  # the seed that painted the kept picture; None for a placeholder
    attempts: int  # pictures painted for this page, flagged ones included
    safety: SafetyOutcome
    seconds: float
    width: int
    height: int
    image: Path | None = None
    sha256: str | None = None  # of the picture file; None for a placeholder and in older records
    #: for a placeholder: the ``max_repaints`` it was given up under (None in older records)
    max_repaints: int | None = None

    def record(self) -> dict:
        data = asdict(self)
        data.pop("image")
        if data["max_repaints"] is None:  # only placeholders say: other records read as before
            data.pop("max_repaints")
        return data

    def worth_retrying(self, max_repaints: int) -> bool:
        """Whether a render allowed ``max_repaints`` repaints should paint this page again: it
        is a placeholder given up under fewer (or under a number older versions did not record).
        A picture that passed is never worth retrying."""
        given_up_under = self.max_repaints
        return self.safety == "placeholder" and (given_up_under is None or given_up_under < max_repaints)


class PageStore:
    """Reads and writes the cache of one book folder."""

    def __init__(self, book_dir: Path) -> None:
        self.book_dir = Path(book_dir)
        self.cache_dir = self.book_dir / "cache"
        self.pages_dir = self.book_dir / "pages"

    def image_path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.png"

    def record_path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.json"

    def get(self, key: str) -> StoredPicture | None:
        """The stored picture for ``key``, or None if it was never finished."""
        record_path = self.record_path(key)
        if not record_path.is_file():
            return None
        try:
            data = json.loads(record_path.read_text(encoding="utf-8"))
            stored = StoredPicture(**data)
        except (ValueError, TypeError):
            return None  # a damaged record: paint the page again
        if stored.safety == "placeholder":
            return stored
        image = self.image_path(key)
        return StoredPicture(**{**data, "image": image}) if self._intact(image, stored.sha256) else None

    @staticmethod
    def _intact(image: Path, sha256: str | None) -> bool:
        """Whether the cached picture is the one its record describes (or, for a record
        without a hash, a picture that decodes completely)."""
        from fairytale.errors import FairytaleError
        from fairytale.images import open_picture

        if not image.is_file():
            return False
        if sha256 is not None:
            return sha256_file(image) == sha256
        try:
            open_picture(image)
        except FairytaleError:
            return False
        return True

    def put(self, stored: StoredPicture, picture: Image.Image | None) -> StoredPicture:
        """Store a finished picture (None for a placeholder) and its record, atomically."""
        ensure_dir(self.cache_dir)
        image, digest = None, None
        if picture is not None:
            image = self.image_path(stored.key)
            with atomic_path(image) as tmp:
                picture.save(tmp, "PNG")
                digest = sha256_file(tmp)
        record = {**stored.record(), "sha256": digest}
        atomic_write_text(self.record_path(stored.key), json.dumps(record, indent=2) + "\n")
        return StoredPicture(**{**record, "image": image})

    def remove_leftovers(self) -> None:
        """Remove what writers killed mid-write left in the cache and page folders: a picture
        whose key no run asks for again (its plan was edited since) would keep its leftover."""
        for folder in (self.cache_dir, self.pages_dir):
            remove_stale_temporaries_in(folder)

    def page_file(self, number: int, source: Path) -> Path:
        """Make ``pages/page-NN.png`` a copy of ``source`` (unchanged files are left alone)."""
        ensure_dir(self.pages_dir)
        target = self.pages_dir / f"page-{number:02d}.png"
        if target.is_file() and sha256_file(target) == sha256_file(source):
            return target
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        return target

    def remove_stale_pages(self, count: int) -> None:
        """Drop ``pages/page-NN.png`` files beyond a plan's last page (it got shorter)."""
        if not self.pages_dir.is_dir():
            return
        for path in self.pages_dir.glob("page-*.png"):
            try:
                number = int(path.stem.split("-", 1)[1])
            except ValueError:
                continue
            if number > count:
                path.unlink(missing_ok=True)
