"""What is in the local Hugging Face cache: a model's snapshot, whether it is complete, and the
content hashes of its weights.

The hub's cache moves a file into a snapshot folder only once it is fully downloaded, so a file
that is there is whole; what a download cut in the middle leaves behind is a snapshot with some
files *missing*. :func:`missing_files` therefore checks every file the load path of a model
needs, not one marker file.

Blob names in the cache are content hashes (SHA-256 for LFS files such as weights, the git blob
hash for small files), so :func:`weight_digests` names a model's weights without reading them:
the same weights in a mirror repo get the same names.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

from fairytale.files import sha256_file

Library = Literal["flair", "transformers", "diffusers"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
#: Files each extra part of a transformers repo needs (beyond config and weights). Not
#: tokenizer_config.json: some repos gained it only lately (FacebookAI/roberta-large-mnli in
#: 2024), and copies cached before then load fine without it.
_PARTS = {
    "processor": ("preprocessor_config.json",),
}


def repo_folder(repo_id: str) -> Path:
    """The cache folder of a model repo (it may not exist)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def snapshot_dir(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of ``repo_id`` at ``revision`` (a branch, tag or commit), or None."""
    folder = repo_folder(repo_id)
    revision = revision or "main"
    commit = revision if _COMMIT.match(revision) else None
    if commit is None:
        ref = folder / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text(encoding="utf-8").strip()
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _variant(name: str) -> bool:
    # diffusion_pytorch_model.fp16.safetensors: a variant the default load path never reads
    return len(name.split(".")) > 2 and not name.endswith(".index.json")


def _weights_missing(folder: Path, rel: str) -> list[str]:
    """What is missing for the weights in ``folder``: nothing if a whole (possibly sharded)
    safetensors or .bin file is there."""
    if not folder.is_dir():
        return [f"{rel}weights"]
    for suffix in _WEIGHT_SUFFIXES:
        for index in folder.glob(f"*{suffix}.index.json"):
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, AttributeError):
                return [f"{rel}{index.name}"]
            absent = sorted(s for s in shards if not (folder / s).is_file())
            return [f"{rel}{s}" for s in absent]
        if any(p.is_file() and not _variant(p.name) for p in folder.glob(f"*{suffix}")):
            return []
    return [f"{rel}weights"]


def _tokenizer_missing(folder: Path, rel: str) -> list[str]:
    if (folder / "tokenizer.json").is_file() or any(folder.glob("*.model")) or (folder / "vocab.txt").is_file():
        return []
    return [f"{rel}{name}" for name in ("vocab.json", "merges.txt") if not (folder / name).is_file()]


def _component_missing(folder: Path, cls: str, rel: str) -> list[str]:
    if cls.endswith(("Tokenizer", "TokenizerFast")):
        return _tokenizer_missing(folder, rel)
    if "Scheduler" in cls:
        return [] if (folder / "scheduler_config.json").is_file() else [f"{rel}scheduler_config.json"]
    if cls.endswith(("FeatureExtractor", "ImageProcessor", "Processor")):
        return [] if (folder / "preprocessor_config.json").is_file() else [f"{rel}preprocessor_config.json"]
    missing = [] if (folder / "config.json").is_file() else [f"{rel}config.json"]
    return missing + _weights_missing(folder, rel)


def missing_files(
    snapshot: Path | None,
    library: Library,
    parts: tuple[str, ...] = (),
    only: str | None = None,
) -> list[str]:
    """Files the load path of a model needs that ``snapshot`` lacks (empty: complete).

    ``parts`` names what a transformers model needs beside config and weights (``tokenizer``,
    ``processor``); ``only`` limits a diffusers model to one component (``tokenizer`` for the
    prompt tokenizer the planner measures prompts with).
    """
    if snapshot is None:
        return ["everything"]
    if library == "flair":
        return [] if (snapshot / "pytorch_model.bin").is_file() else ["pytorch_model.bin"]
    if library == "transformers":
        missing = [] if (snapshot / "config.json").is_file() else ["config.json"]
        missing += _weights_missing(snapshot, "")
        for part in parts:
            if part == "tokenizer":
                missing += _tokenizer_missing(snapshot, "")
            missing += [name for name in _PARTS.get(part, ()) if not (snapshot / name).is_file()]
        return missing
    if only is not None:
        return _component_missing(snapshot / only, "CLIPTokenizer" if only == "tokenizer" else "", f"{only}/")
    index_file = snapshot / "model_index.json"
    if not index_file.is_file():
        return ["model_index.json"]
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["model_index.json"]
    missing: list[str] = []
    for name, value in sorted(index.items()):
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or not value[1]:
            continue
        missing += _component_missing(snapshot / name, str(value[1]), f"{name}/")
    return missing


def weight_digests(snapshot: Path) -> dict[str, str]:
    """Content hash of every weight file the default load path reads, by path in the repo.

    Taken from the blob a snapshot file links to (SHA-256 for LFS files); where the cache holds
    plain copies (no symlinks, e.g. on Windows) the file is hashed. Where a folder has
    safetensors weights its .bin files are left out (the loaders never read them), so a copy
    that also fetched old .bin files names the same weights as one that did not.
    """
    digests: dict[str, str] = {}
    files = sorted(p for p in snapshot.rglob("*") if p.name.endswith(_WEIGHT_SUFFIXES) and not _variant(p.name))
    with_safetensors = {p.parent for p in files if p.name.endswith(".safetensors")}
    for path in files:
        if path.name.endswith(".bin") and path.parent in with_safetensors:
            continue
        rel = path.relative_to(snapshot).as_posix()
        digests[rel] = Path(os.readlink(path)).name if path.is_symlink() else sha256_file(path)
    return digests
