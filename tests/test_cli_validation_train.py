"""`fairytale train`: impossible numbers are one line and a non-zero exit, before any model is
checked or loaded (no model is needed here: loading one fails the test)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairytale.cli import app
from tests.training_fixtures import character_folder


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    return character_folder(tmp_path_factory.mktemp("pics") / "creature", count=4)


@pytest.fixture(autouse=True)
def _nothing_loaded(monkeypatch):
    import training
    from fairytale import model_check

    def refuse(*args, **kwargs):
        raise AssertionError("a model was checked or loaded for a refused setting")

    monkeypatch.setattr(model_check, "ensure", refuse)
    monkeypatch.setattr(training, "train", refuse)


def said(result) -> str:
    return " ".join(result.output.split())


@pytest.mark.parametrize("kind", ["character", "style"])
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--resolution", "-64", "--resolution must be between 64 and 2048"),
        ("--resolution", "0", "--resolution must be between 64 and 2048"),
        ("--resolution", "100000", "--resolution must be between 64 and 2048"),
        ("--lr", "1e300", "--lr must be a number above 0 and at most 1"),
        ("--lr", "nan", "--lr must be a number above 0 and at most 1"),
        ("--lr", "inf", "--lr must be a number above 0 and at most 1"),
        ("--lr", "-0.001", "--lr must be a number above 0 and at most 1"),
        ("--lr", "0", "--lr must be a number above 0 and at most 1"),
        ("--batch-size", "100000", "--batch-size must be between 1 and 64"),
        ("--batch-size", "5", "--batch-size 5 is more than the 4 training picture(s)"),
        ("--grad-accum", "100000", "--grad-accum must be between 1 and 64"),
        ("--steps", "10000000000", "--steps must be between 1 and 1,000,000"),
        ("--warmup-steps", "10000000000", "--warmup-steps must be between 0 and 1,000,000"),
        ("--seed", "-1", "--seed must be between 0 and 4294967295"),
        ("--seed", "100000000000000000000000", "--seed must be between 0 and 4294967295"),
    ],
)
def test_out_of_range_settings_are_one_line(tmp_path, pictures, kind, option, value, message):
    result = CliRunner().invoke(
        app,
        ["train", kind, "--data", str(pictures), "--model", str(tmp_path / "no-model")]
        + ["--steps", "2", "--token", "<g>", "-o", str(tmp_path / "out.safetensors"), option, value],
    )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in said(result)
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.safetensors").exists()


def test_the_checks_also_guard_the_python_api(tmp_path, pictures):
    from fairytale.errors import FairytaleError
    from training.config import TrainingConfig

    config = TrainingConfig(kind="character", data=pictures, token="<g>", output=tmp_path / "g.safetensors")
    config.check()  # the defaults pass
    config.check_pictures(4)
    for changes in (
        {"lr": float("nan")},
        {"resolution": -64},
        {"batch_size": 0},
        {"weight_decay": float("inf")},
    ):
        with pytest.raises(FairytaleError):
            replace(config, **changes).check()
    with pytest.raises(FairytaleError, match="at most 3"):
        replace(config, batch_size=4).check_pictures(3)
