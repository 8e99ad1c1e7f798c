"""The precision `--mixed-precision auto` picks, and the ones it refuses, per machine."""

from __future__ import annotations

import pytest
import torch

from fairytale.errors import FairytaleError
from training import textual_inversion as ti


@pytest.fixture()
def gpu(monkeypatch):
    """Pretend to have a CUDA GPU of a given compute capability."""

    def make(major: int, name: str = "GPU"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (major, 0))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
        # emulated bf16 counts as "supported" for torch: it must not sway the choice
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    return make


def test_auto_on_cpu_is_full_precision(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ti._resolve_mixed_precision("auto") == "no"
    with pytest.raises(FairytaleError, match="fp16 mixed precision needs a CUDA GPU"):
        ti._resolve_mixed_precision("fp16")


def test_auto_is_fp16_on_a_t4_and_bf16_on_ampere(gpu):
    gpu(7, "Tesla T4")
    assert ti._resolve_mixed_precision("auto") == "fp16"
    with pytest.raises(FairytaleError, match="Tesla T4 has no native bfloat16"):
        ti._resolve_mixed_precision("bf16")
    gpu(8, "NVIDIA A100")
    assert ti._resolve_mixed_precision("auto") == "bf16"
    assert ti._resolve_mixed_precision("bf16") == "bf16"


@pytest.mark.parametrize(("launched_with", "expected"), [("no", "fp16"), ("", "fp16"), ("fp16", None), ("bf16", None)])
def test_accelerate_launch_choice_wins_only_when_it_is_one(gpu, monkeypatch, launched_with, expected):
    gpu(7)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launched_with)
    assert ti._resolve_mixed_precision("auto") == expected
