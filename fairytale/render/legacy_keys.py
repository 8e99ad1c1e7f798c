"""Adopting cached pictures made under an older cache key, so an upgrade repaints nothing.

Cache keys once named a hub model by ``repo@revision``; they now name its weights by content
hash (see :meth:`~fairytale.render.backends.Backend.model_fingerprint`). On a cache miss the
old key is looked up and, if it holds a finished picture, the picture is filed under the new
key as well (the old entry stays, so going back to an older version also repaints nothing).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from fairytale.files import atomic_path, atomic_write_text, ensure_dir
from fairytale.render.page_store import PageStore, StoredPicture


def adopt_legacy(store: PageStore, key: str, old_keys: Iterable[str]) -> StoredPicture | None:
    """The picture stored under the first of ``old_keys`` that has one, now also stored under
    ``key``; None if none has."""
    for old_key in old_keys:
        old = store.get(old_key)
        if old is None:
            continue
        ensure_dir(store.cache_dir)
        if old.image is not None:
            with atomic_path(store.image_path(key)) as tmp:
                shutil.copyfile(old.image, tmp)
        adopted = StoredPicture(**{**asdict(old), "key": key, "image": None})
        atomic_write_text(store.record_path(key), json.dumps(adopted.record(), indent=2) + "\n")
        return store.get(key)
    return None


def adopt_legacy_file(target: Path, old_paths: Iterable[Path]) -> bool:
    """Copy the first existing file of ``old_paths`` to ``target`` (atomically); whether one was."""
    for old in old_paths:
        if old.is_file() and old != target:
            with atomic_path(target) as tmp:
                shutil.copyfile(old, tmp)
            return True
    return False
