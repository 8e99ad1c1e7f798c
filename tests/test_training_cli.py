"""`fairytale train style|character`: end to end on tiny models, errors, and `accelerate launch`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
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


def subprocess_env() -> dict[str, str]:
    """This process's environment with the repository on the path, for Python subprocesses."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def start_python(code: str, ready: str) -> subprocess.Popen:
    """Run ``code`` in a new Python process; returns once it has printed the line ``ready``."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=subprocess_env(), cwd=ROOT,
    )  # fmt: skip
    line = process.stdout.readline().strip()
    if line != ready:
        process.kill()
        raise AssertionError(f"the helper process said {line!r}, not {ready!r}: {process.communicate()}")
    return process


def hold_training_folder(folder: Path) -> subprocess.Popen:
    """A live process that holds ``folder``'s lock (as a training run does) until a line on stdin."""
    return start_python(
        f"""
        import sys
        from fairytale.book_lock import FolderBusyError, folder_lock
        with folder_lock({str(folder)!r}, refuse=FolderBusyError):
            print("held", flush=True)
            sys.stdin.readline()
        """,
        ready="held",
    )


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


def launch_two_processes(tiny_sd: Path, pictures: Path, output: Path) -> subprocess.CompletedProcess:
    """``accelerate launch`` of a 3-step training in two processes on the CPU."""
    # On a machine without GPUs, accelerate starts several processes only with --multi_gpu;
    # the trainer then joins them over gloo on the CPU.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "fairytale", "train", "character", "--data", str(pictures), "--token", "<creature>",
        "--model", str(tiny_sd), "--steps", "3", "--grad-accum", "2", "--no-gradient-checkpointing",
        "--checkpoint-every", "2", "-o", str(output),
    ]  # fmt: skip
    env = subprocess_env() | {"CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_accelerate_launch_two_processes_on_cpu(tmp_path, tiny_sd, pictures):
    output = tmp_path / "multi.safetensors"
    done = launch_two_processes(tiny_sd, pictures, output)
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


def test_a_second_run_into_the_same_folder_is_refused_and_the_first_is_untouched(tmp_path, tiny_sd, pictures):
    output = tmp_path / "creature.safetensors"
    checkpoints = tmp_path / "creature.checkpoints"
    # The first run trains for real and stops after its first step (checkpoint written) until told to go on.
    first = start_python(
        f"""
        import sys
        from pathlib import Path
        from training import TrainingConfig, train

        def pause(report):
            if report.step == 1:
                print("step 1", flush=True)
                sys.stdin.readline()

        config = TrainingConfig(
            kind="character", data=Path({str(pictures)!r}), token="<creature>", init="cat",
            output=Path({str(output)!r}), model={str(tiny_sd)!r}, steps=2, grad_accum=1,
            gradient_checkpointing=False, checkpoint_every=1,
        )
        train(config, on_step=pause)
        """,
        ready="step 1",
    )  # fmt: skip
    try:
        state = (checkpoints / "step-000001" / "state.pt").read_bytes()
        # --force would remove the first run's checkpoints and overwrite its token: it is refused first.
        second = run("character", "--data", str(pictures), "--token", "<creature>", "--model", str(tiny_sd),
                     *FAST, "--force", "-o", str(output))  # fmt: skip
        assert second.exit_code == 1
        lines = second.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: Another fairytale train run")
        assert f"(PID {first.pid})" in said(second) and str(checkpoints) in said(second)
        assert (checkpoints / "step-000001" / "state.pt").read_bytes() == state
        assert not output.exists()
    finally:
        out, _ = first.communicate("\n", timeout=120)
    assert first.returncode == 0
    assert read_embedding(output).token == "<creature>"  # the first run finished as if alone
    assert (checkpoints / "step-000002" / "complete").is_file()


def test_a_run_that_was_killed_does_not_block_the_next(tmp_path, tiny_sd, pictures):
    checkpoints = tmp_path / "creature.checkpoints"
    holder = hold_training_folder(checkpoints)
    holder.send_signal(signal.SIGKILL)  # no clean-up of any kind
    holder.wait(timeout=30)
    assert (checkpoints / ".fairytale.lock").exists() and (checkpoints / ".fairytale.lock.holder").exists()
    result = run("character", "--data", str(pictures), "--token", "<creature>", "--model", str(tiny_sd),
                 *FAST, "-o", str(tmp_path / "creature.safetensors"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (checkpoints / ".fairytale.lock.holder").exists()  # the killed run's record is gone too


def test_another_checkpoint_dir_does_not_let_two_runs_write_one_token(tmp_path, tiny_sd, pictures):
    holder = hold_training_folder(tmp_path / "creature.checkpoints")
    try:
        result = run("character", "--data", str(pictures), "--token", "<creature>", "--model", str(tiny_sd),
                     *FAST, "--checkpoint-dir", str(tmp_path / "elsewhere"), "-o", str(tmp_path / "creature.safetensors"))  # fmt: skip
    finally:
        holder.communicate("\n", timeout=30)
    assert result.exit_code == 1
    assert f"(PID {holder.pid})" in said(result) and "creature.checkpoints" in said(result)
    assert not (tmp_path / "elsewhere").exists()  # nothing of this run was left behind


def test_accelerate_launch_is_refused_as_one_run(tmp_path, tiny_sd, pictures):
    # The processes of one launch are one run: the main process asks for the lock, and all stop
    # when another run holds it, with the refusal said once.
    holder = hold_training_folder(tmp_path / "multi.checkpoints")
    try:
        done = launch_two_processes(tiny_sd, pictures, tmp_path / "multi.safetensors")
    finally:
        holder.communicate("\n", timeout=30)
    assert done.returncode != 0
    refusals = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(refusals) == 1 and f"(PID {holder.pid})" in refusals[0], done.stderr[-3000:]
    assert not (tmp_path / "multi.safetensors").exists()
    assert not (tmp_path / "multi.checkpoints").exists()  # the launch left nothing behind
