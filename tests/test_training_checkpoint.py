"""Checkpoint files: complete or ignored, plain tensors only, old ones pruned, settings checked."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from fairytale.errors import FairytaleError
from training import checkpoint as ckpt
from training.config import RESUMABLE_CHANGES


def _state(step: int) -> dict:
    rows = torch.nn.Parameter(torch.randn(2, 8))
    optimizer = torch.optim.AdamW([rows], lr=1e-3)
    rows.sum().backward()
    optimizer.step()
    return {
        "step": step,
        "new_rows": rows.detach().clone(),
        "optimizer": optimizer.state_dict(),
        "settings": {"token": "<g>"},
    }


def _save(folder: Path, step: int, generators: dict) -> Path:
    return ckpt.save_checkpoint(
        folder, step, _state(step), ckpt.rng_state(generators), rank=0, is_main=True, barrier=lambda: None
    )


def test_checkpoint_round_trip_restores_random_state(tmp_path):
    generator = torch.Generator().manual_seed(3)
    generators = {"data": generator}
    path = _save(tmp_path, 4, generators)
    expected = torch.rand(5, generator=generator)
    torch.rand(7, generator=generator)  # move on, as a run would

    state, rng = ckpt.load_checkpoint(path, rank=0)
    ckpt.restore_rng_state(rng, generators)
    assert torch.equal(torch.rand(5, generator=generator), expected)
    assert state["step"] == 4 and state["optimizer"]["state"][0]["step"] == 1
    assert ckpt.checkpoint_dir_for(Path("out/ginger.safetensors")) == Path("out/ginger.checkpoints")


def test_only_complete_checkpoints_count_and_old_ones_go(tmp_path):
    generators = {"data": torch.Generator()}
    for step in (2, 4, 6):
        _save(tmp_path, step, generators)
    assert [step for step, _ in ckpt.completed_checkpoints(tmp_path)] == [4, 6]  # KEEP = 2
    torn = ckpt.step_dir(tmp_path, 8)
    torn.mkdir()
    (torn / "state.pt").write_bytes(b"half a file")  # killed while saving: no 'complete' marker
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.step_dir(tmp_path, 6)
    assert ckpt.latest_checkpoint(tmp_path / "nothing-here") is None


def test_checkpoints_with_code_are_refused(tmp_path):
    path = _save(tmp_path, 2, {"data": torch.Generator()})
    torch.save({"step": argparse.Namespace(step=2)}, path / "state.pt")
    with pytest.raises(FairytaleError, match="cannot be read"):
        ckpt.load_checkpoint(path, rank=0)
    with pytest.raises(FairytaleError, match="same number of processes"):
        ckpt.load_checkpoint(path, rank=1)


def test_resume_refuses_other_settings_but_allows_more_steps(tmp_path):
    saved = {"token": "<g>", "lr": "0.002", "steps": "100", "data_fingerprint": "abc"}
    ckpt.check_same_settings(saved, saved | {"steps": "300"}, RESUMABLE_CHANGES, tmp_path)
    with pytest.raises(FairytaleError, match=r"lr '0\.002' → '0\.01'.*--force"):
        ckpt.check_same_settings(saved, saved | {"lr": "0.01"}, RESUMABLE_CHANGES, tmp_path)
    with pytest.raises(FairytaleError, match="data_fingerprint"):
        ckpt.check_same_settings(saved, saved | {"data_fingerprint": "def"}, RESUMABLE_CHANGES, tmp_path)
