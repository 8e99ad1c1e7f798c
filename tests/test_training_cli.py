"""`fairytale train style|character`: end to end on tiny models, errors, and `accelerate launch`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.embeddings import a1111_path, read_embedding
from fairytale.errors import FairytaleError
from tests.training_fixtures import character_folder, imagefolder_dataset

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--steps", "2", "--grad-accum", "1", "--no-gradient-checkpointing"]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    return character_folder(tmp_path_factory.mktemp("cli") / "creature", count=4)


def run(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def said(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_help_shows_both_commands_and_the_options():
    result = run("--help")
    assert result.exit_code == 0
    assert "style" in result.output and "character" in result.output
    result = run("character", "--help")
    assert result.exit_code == 0
    for option in (
        "--data",
        "--token",
        "--init",
        "--model",
        "--steps",
        "--vectors",
        "--resume",
        "--force",
        "--output",
    ):
        assert option in result.output


def test_character_end_to_end_on_the_tiny_model(tmp_path, tiny_sd, pictures):
    output = tmp_path / "creature.safetensors"
    result = run("character", "--data", str(pictures), "--token", "<creature>", "--init", "cat",
                 "--model", str(tiny_sd), *FAST, "-o", str(output))  # fmt: skip
    assert result.exit_code == 0, result.output
    for words in ("final loss", "steps/s", "peak process memory (RSS)", "│ steps │ 2"):
        assert words in said(result)
    embedding = read_embedding(output)
    assert embedding.token == "<creature>" and embedding.family == "sd1"
    assert torch.equal(read_embedding(a1111_path(output)).vectors, embedding.vectors)
    assert embedding.metadata["kind"] == "character" and embedding.metadata["init"] == "cat"

    again = run(
        "character",
        "--data",
        str(pictures),
        "--token",
        "<creature>",
        "--model",
        str(tiny_sd),
        *FAST,
        "-o",
        str(output),
    )
    assert again.exit_code == 1
    assert "already exists" in said(again) and "--force" in said(again)
    assert "Traceback" not in again.output


def test_style_from_the_scrapers_dataset_on_sd2(tmp_path, tiny_sd2):
    dataset = imagefolder_dataset(tmp_path / "dataset", splits=True, pages=3)
    output = tmp_path / "style.safetensors"
    result = run("style", "--data", str(dataset), "--token", "<book-a-style>", "--backend", "sd21",
                 "--model", str(tiny_sd2), *FAST, "-o", str(output))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "on 3 picture(s) at 96 px" in said(result)
    embedding = read_embedding(output)
    assert (embedding.family, embedding.width, embedding.metadata["kind"]) == ("sd2", 64, "style")
    assert embedding.metadata["init"] == "illustration"


@pytest.mark.parametrize(
    ("changes", "extra", "message"),
    [
        ({"--data": "/nonexistent/pictures"}, [], "Training data folder not found"),
        ({}, ["--mixed-precision", "fp16"], "fp16 mixed precision needs a CUDA GPU"),
        ({}, ["--adam-8bit"], "needs a CUDA GPU"),
        ({"--token": "<two words>"}, [], "one word"),
    ],
)
def test_user_mistakes_are_one_red_line(tmp_path, tiny_sd, pictures, changes, extra, message):
    options = {"--data": str(pictures), "--token": "<creature>", "--model": str(tiny_sd)} | changes
    argv = [item for pair in options.items() for item in pair] + extra
    result = run("character", *argv, *FAST, "-o", str(tmp_path / "x.safetensors"))
    assert result.exit_code == 1
    assert message in said(result)
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.safetensors").exists()


def test_accelerate_launch_two_processes_on_cpu(tmp_path, tiny_sd, pictures):
    # On a machine without GPUs, accelerate starts several processes only with --multi_gpu;
    # the trainer then joins them over gloo on the CPU.
    output = tmp_path / "multi.safetensors"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        CUDA_VISIBLE_DEVICES="",
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "fairytale", "train", "character", "--data", str(pictures), "--token", "<creature>",
        "--model", str(tiny_sd), "--steps", "3", "--grad-accum", "2", "--no-gradient-checkpointing",
        "--checkpoint-every", "2", "-o", str(output),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_embedding(output).vectors.shape == (1, 32)
    # Both processes took part: each saved its random state, and the rate was scaled for two.
    for step in ("step-000002", "step-000003"):
        parts = {path.name for path in (tmp_path / "multi.checkpoints" / step).iterdir()}
        assert parts == {"complete", "state.pt", "rng-0.pt", "rng-1.pt"}
    state = torch.load(tmp_path / "multi.checkpoints" / "step-000003" / "state.pt", weights_only=True)
    assert state["settings"]["num_processes"] == "2"
    assert "lr 0.002" in done.stderr  # 5e-4 × batch 1 × accumulation 2 × 2 processes
    assert done.stderr.count("Trained <creature>") == 1  # one summary, from the main process


@pytest.mark.parametrize(
    ("flag", "expected"), [([], None), (["--fuse-accumulation"], True), (["--no-fuse-accumulation"], False)]
)
def test_fusing_micro_batches_is_the_users_choice(tmp_path, tiny_sd, pictures, monkeypatch, flag, expected):
    import training

    seen = []

    def fake_train(config, console=None):
        seen.append(config.fuse_accumulation)
        raise FairytaleError("stop here")

    monkeypatch.setattr(training, "train", fake_train)
    run("character", "--data", str(pictures), "--token", "<c>", "--model", str(tiny_sd),
        "-o", str(tmp_path / "c.safetensors"), *flag)  # fmt: skip
    assert seen == [expected]
