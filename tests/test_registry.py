"""The model registry: roles, local paths vs hub ids, and the one-line offline error."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairytale import registry
from fairytale.cli import app
from fairytale.errors import ModelUnavailableError


def test_every_role_has_a_default_and_licence():
    assert set(registry.BACKENDS) <= set(registry.MODELS)
    for spec in registry.MODELS.values():
        assert spec.default and spec.licence and spec.purpose and spec.option.startswith("--")
    assert registry.MODELS["ner"].default == "flair/ner-english"
    assert registry.MODELS["ner"].default_for("cpu") == "flair/ner-english-fast"
    assert registry.MODELS["ner"].default_for("cuda") == "flair/ner-english"
    assert registry.MODELS["qa"].default == "deepset/roberta-base-squad2"
    assert registry.MODELS["nli"].default == "FacebookAI/roberta-large-mnli"
    assert registry.MODELS["variations"].revision == "v2.0"


def test_resolve_local_path_and_hub_id(tmp_path):
    local = registry.resolve("qa", tmp_path)
    assert local.local and local.ref == str(tmp_path)
    hub = registry.resolve("variations", "lambdalabs/sd-image-variations-diffusers")
    assert not hub.local and hub.revision == "v2.0"
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        registry.resolve("qa", "./no/such/folder")


@pytest.mark.parametrize(
    "loader, role, option",
    [
        (registry.load_qa, "qa", "--qa-model"),
        (registry.load_nli, "nli", "--nli-model"),
        (registry.load_ner, "ner", "--ner-model"),
        (registry.load_clip, "clip", "--clip-model"),
    ],
)
def test_missing_model_offline_is_one_clear_line(loader, role, option):
    with pytest.raises(ModelUnavailableError) as info:
        loader()
    message = str(info.value)
    assert "\n" not in message
    assert registry.MODELS[role].default_for("cpu") in message
    assert f"fairytale models pull {role}" in message and option in message


def test_missing_pipeline_offline_is_one_clear_line():
    with pytest.raises(ModelUnavailableError, match=r"CompVis/stable-diffusion-v1-4 \(sd14\).*models pull sd14"):
        registry.load_pipeline("sd14")


def test_a_missing_model_of_the_users_choice_is_pulled_by_its_id():
    # `models pull qa` would fetch the default, not the model the user asked for.
    with pytest.raises(ModelUnavailableError) as info:
        registry.load_qa("someone/my-qa")
    assert "`fairytale models pull qa=someone/my-qa`" in str(info.value)


def test_local_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelUnavailableError, match="not a usable"):
        registry.load_pipeline("sd14", ref=str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="not a usable"):
        registry.load_ner(str(tmp_path))


def test_loads_tiny_models_through_the_user_path(tiny_qa, tiny_nli, tiny_ner):
    qa = registry.load_qa(str(tiny_qa))
    answer = qa(question="What colour is Ginger?", context="Ginger has orange spots.", handle_impossible_answer=True)
    assert {"answer", "score", "start", "end"} <= set(answer)
    nli = registry.load_nli(str(tiny_nli))
    labels = {row["label"] for row in nli({"text": "A giraffe.", "text_pair": "An animal."}, top_k=None)}
    assert labels == {"ENTAILMENT", "NEUTRAL", "CONTRADICTION"}
    from flair.data import Sentence

    tagger = registry.load_ner(str(tiny_ner))
    sentence = Sentence("Then Ginger laughed and laughed .")
    tagger.predict(sentence)
    assert [(span.text, span.tag) for span in sentence.get_spans("ner")] == [("Ginger", "PER")]


def test_nli_model_without_entailment_label_is_refused(tiny_qa):
    # A QA checkpoint has no MNLI labels: loading it as the NLI model must say so.
    with pytest.raises(ModelUnavailableError, match="entailment|not a usable"):
        registry.load_nli(str(tiny_qa))


def test_models_list_and_pull_cli():
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0
    assert "deepset/roberta-base-squad2" in listed.output
    pulled = runner.invoke(app, ["models", "pull", "nonsense"])
    assert pulled.exit_code != 0
    assert "Unknown model role" in pulled.output
    offline = runner.invoke(app, ["models", "pull", "qa"])
    assert offline.exit_code != 0
    assert "HF_HUB_OFFLINE" in offline.output


def test_a_local_folder_without_its_weights_file_is_one_line(tmp_path):
    source = registry.resolve("lcm_lora_sd15", str(tmp_path))
    with pytest.raises(ModelUnavailableError, match=r"no pytorch_lora_weights\.safetensors in the folder") as info:
        registry.local_weights_file(source, "pytorch_lora_weights.safetensors")
    assert "\n" not in str(info.value)
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(b"")
    assert registry.local_weights_file(source, "pytorch_lora_weights.safetensors") == tmp_path / "pytorch_lora_weights.safetensors"


def _hub_cache_listing() -> list[str]:
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.is_dir() else []


# One role of each kind, a tiny model of that kind, a tiny model of another kind, and what the
# wrong one lacks (tiny_models names: see tests/tiny_models).
KINDS = [
    ("sd14", "sd", "qa", "no model_index.json in the folder; sd14 takes a diffusers pipeline folder"),
    ("qa", "qa", "sd", "no config.json, weights (.safetensors or .bin), vocab.json, merges.txt"),
    ("clip", "clip", "qa", "no preprocessor_config.json in the folder"),
    ("ner", "ner", "qa", "no pytorch_model.bin in the folder; ner takes a flair model"),
    ("lcm_lora_sd15", "lcm_lora", "taesd", "no pytorch_lora_weights.safetensors in the folder"),
    ("taesd", "taesd", "lcm_lora", "no config.json, diffusion_pytorch_model.safetensors in the folder"),
    ("ip_adapter_sd15", "ip_adapter", "sd", "no models/ip-adapter_sd15.safetensors in the folder"),
    ("ip_adapter_image_encoder", "ip_adapter", "lcm_lora", "no models/image_encoder/config.json"),
]


@pytest.mark.parametrize(("role", "right", "wrong", "missing"), KINDS, ids=[kind[0] for kind in KINDS])
def test_pull_role_folder_checks_the_folder_holds_a_model_of_the_roles_kind(
    tiny_models, role, right, wrong, missing
):
    runner = CliRunner()
    before = _hub_cache_listing()
    folder = tiny_models(wrong)
    # Named after another role's model (sd14 first), the wrong folder is said before anything else.
    refused = runner.invoke(app, ["models", "pull", "sd14", f"{role}={folder}"])
    assert refused.exit_code == 1
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1, refused.output
    assert lines[0].startswith(f"Error: Model at {folder} is not a usable")
    assert f"for {role}: {missing}" in lines[0]
    accepted = runner.invoke(app, ["models", "pull", f"{role}={tiny_models(right)}"])
    assert accepted.exit_code == 0, accepted.output
    assert "holds a usable model" in " ".join(accepted.output.split())
    assert _hub_cache_listing() == before  # nothing copied into the cache, nothing recorded


def test_pull_takes_a_lora_file_but_not_a_file_for_a_folder_role(tiny_models):
    lora = tiny_models("lcm_lora") / "pytorch_lora_weights.safetensors"
    assert registry.pull("lcm_lora_sd15", str(lora)).path == str(lora)
    with pytest.raises(ModelUnavailableError, match="it is a file, and qa takes a transformers model folder"):
        registry.pull("qa", str(lora))
