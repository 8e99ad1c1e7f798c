"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder ``step-000500/`` in the run's checkpoint folder (beside the output:
``ginger.safetensors`` → ``ginger.checkpoints/``) holding

* ``state.pt``: the step, the learned vectors, the optimizer, the learning-rate schedule and
  the fp16 gradient scaler, and the run's settings;
* ``rng-<rank>.pt``: every random-number generator of each process (data order, noise, torch's
  global and CUDA generators);
* ``complete``: written last, once every process has written its part. A folder without it
  (a run killed while saving) is ignored.

Files are plain tensors and numbers, saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``: no pickled code. The last :data:`KEEP` checkpoints are
kept; they are small (a few vectors and their Adam moments).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairytale.errors import FairytaleError
from fairytale.files import atomic_path, atomic_write_text, ensure_dir

KEEP = 2
COMPLETE = "complete"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dir_for(output: Path) -> Path:
    """Where the checkpoints of the run writing ``output`` go: ``X.safetensors`` → ``X.checkpoints``."""
    output = Path(output)
    return output.with_name(f"{output.name.removesuffix('.safetensors')}.checkpoints")


def step_dir(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:06d}"


def completed_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / COMPLETE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder``, or ``None``."""
    found = completed_checkpoints(folder)
    return found[-1][1] if found else None


def _save(obj: Any, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load(path: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise FairytaleError(f"Checkpoint file {path} cannot be read: {exc}") from None


def rng_state(generators: dict[str, Any]) -> dict[str, Any]:
    """The states of ``generators`` (name → ``torch.Generator``) and of torch's global ones."""
    import torch

    state = {name: generator.get_state() for name, generator in generators.items()}
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():  # this process's GPU only: a resume may see fewer GPUs
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` recorded."""
    import torch

    for name, generator in generators.items():
        generator.set_state(state[name])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(
    folder: Path,
    step: int,
    state: dict[str, Any],
    rng: dict[str, Any],
    *,
    rank: int,
    is_main: bool,
    barrier: Callable[[], None],
) -> Path:
    """Write the checkpoint of ``step``; every process calls this with its own ``rng``.

    ``state`` (identical on every process) is written by the main process only; ``barrier``
    waits for all processes, so ``complete`` appears only when every part is on disk.
    Older checkpoints beyond :data:`KEEP` are then removed.
    """
    target = step_dir(folder, step)
    if is_main:
        ensure_dir(target)
        (target / COMPLETE).unlink(missing_ok=True)
    barrier()
    _save(rng, target / f"rng-{rank}.pt")
    if is_main:
        _save(state, target / "state.pt")
    barrier()
    if is_main:
        # atomic too: a full disk is then one line, and a torn mark never counts
        atomic_write_text(target / COMPLETE, f"{step}\n")
        for _, old in completed_checkpoints(folder)[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return target


def load_checkpoint(path: Path, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, rng)`` of the checkpoint folder ``path`` for process ``rank``."""
    path = Path(path)
    rng_file = path / f"rng-{rank}.pt"
    if not rng_file.is_file():
        raise FairytaleError(
            f"Checkpoint {path} has no random state for process {rank}: it was written by a run "
            "with fewer processes; resume with the same number of processes"
        )
    return _load(path / "state.pt"), _load(rng_file)


def check_same_settings(
    saved: dict[str, str], current: dict[str, str], may_change: frozenset[str], where: Path
) -> None:
    """Refuse to resume when a setting that shapes the training differs from the saved run."""
    differences = [
        f"{key} {saved.get(key)!r} → {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if key not in may_change and saved.get(key) != current.get(key)
    ]
    if differences:
        raise FairytaleError(
            f"Cannot resume from {where}: the run was started with other settings ({'; '.join(differences)}). "
            "Use the same options, or pass --force without --resume to start over."
        )
