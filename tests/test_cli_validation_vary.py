"""`fairytale vary`: impossible numbers and devices are one line and a non-zero exit before any
model is checked or painted with (doing either fails the test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairytale import model_check, variations
from fairytale.cli import app
from fairytale.errors import FairytaleError
from fairytale.variations import make_variations as real_make_variations  # bound before the patch below


@pytest.fixture
def portrait(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "ginger.png"
    Image.new("RGB", (32, 32), (235, 140, 40)).save(path)
    return path


@pytest.fixture(autouse=True)
def _nothing_painted(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was checked or painted with for a refused option")

    monkeypatch.setattr(model_check, "ensure", refuse)
    monkeypatch.setattr(variations, "make_variations", refuse)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--guidance", "1e308"], "--guidance must be between 0 and 50, not 1e+308"),
        (["--guidance", "nan"], "--guidance must be between 0 and 50, not nan"),
        (["--guidance", "inf"], "--guidance must be between 0 and 50, not inf"),
        (["--guidance", "-4"], "--guidance must be between 0 and 50, not -4.0"),
        (["--steps", "0"], "--steps must be between 1 and 500"),
        (["--steps", "100000"], "--steps must be between 1 and 500"),
        (["-n", "0"], "-n must be between 1 and 100"),
        (["-n", "100000"], "-n must be between 1 and 100"),
        (["--seed", "-1"], "--seed must be between 0 and 2^63-1"),
        (["--seed", "100000000000000000000000"], "--seed must be between 0 and 2^63-1"),
        (["--device", "bogus"], "Unknown device 'bogus'"),
    ],
)
def test_bad_options_are_one_line(tmp_path, portrait, args, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["vary", str(portrait), "-o", str(out), "--model", str(tmp_path / "m"), *args]
    )
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not out.exists()


def test_the_python_api_refuses_them_too(tmp_path, portrait):
    variations.check_options(4, 0, 25, 3.0)
    variations.check_options(1, 0, 1, 0.0)
    variations.check_options(100, 2**63 - 1, 500, 50.0)
    for guidance in (float("nan"), float("inf"), 1e308, -4.0, 50.5):
        with pytest.raises(FairytaleError, match="--guidance must be between 0 and 50"):
            variations.check_options(4, 0, 25, guidance)
    with pytest.raises(FairytaleError, match="--guidance must be between 0 and 50, not nan"):
        real_make_variations(portrait, tmp_path / "o", 1, model=str(tmp_path / "m"), guidance=float("nan"))
    assert not (tmp_path / "o").exists()
