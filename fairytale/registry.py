"""Every model fAIrytale uses, by role, and the one place that loads them.

Nothing else in the code base knows a hub id. Each role takes either a hub id (downloaded
through the normal Hugging Face cache on first use) or a local path in the same on-disk layout.
When a model is neither local nor cached and the hub cannot be reached, loading fails with a
:class:`~fairytale.errors.ModelUnavailableError` that names the model and the fix.

>>> MODELS["qa"].default
'deepset/roberta-base-squad2'
"""

from __future__ import annotations

import contextlib
import os
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

    def default_for(self, device: str | None = None) -> str:
        """The default id, taking the lighter CPU model where one is named."""
        if self.cpu_default and (device or "cpu").startswith("cpu"):
            return self.cpu_default
        return self.default


MODELS: dict[str, ModelSpec] = {
    spec.role: spec
    for spec in [
        ModelSpec(
            role="ner",
            default="flair/ner-english",
            cpu_default="flair/ner-english-fast",
            library="flair",
            purpose="named characters (FLAIR NER, PER tags)",
            licence="MIT (flair); trained on CoNLL-2003",
            option="--ner-model",
        ),
        ModelSpec(
            role="qa",
            default="deepset/roberta-base-squad2",
            library="transformers",
            purpose="looks, setting and action (extractive QA, SQuAD2 no-answer aware)",
            licence="CC-BY-4.0",
            option="--qa-model",
        ),
        ModelSpec(
            role="nli",
            default="FacebookAI/roberta-large-mnli",
            library="transformers",
            purpose="kind, gender, presence, time of day, mood (zero-shot NLI)",
            licence="MIT",
            option="--nli-model",
        ),
        ModelSpec(
            role="sd14",
            default="CompVis/stable-diffusion-v1-4",
            library="diffusers",
            purpose="illustrations, default backend (512 px)",
            licence="CreativeML OpenRAIL-M",
            option="--model",
        ),
        ModelSpec(
            role="sd21",
            default="stabilityai/stable-diffusion-2-1",
            library="diffusers",
            purpose="illustrations, SD 2.1 backend (768 px, v-prediction)",
            licence="CreativeML OpenRAIL++-M",
            option="--model",
        ),
        ModelSpec(
            role="variations",
            default="lambdalabs/sd-image-variations-diffusers",
            revision="v2.0",
            library="diffusers",
            purpose="variations of a picture (fairytale vary)",
            licence="CreativeML OpenRAIL-M",
            option="--model",
        ),
        ModelSpec(
            role="unclip",
            default="stabilityai/stable-diffusion-2-1-unclip",
            library="diffusers",
            purpose="illustrations from a character's reference picture + text",
            licence="CreativeML OpenRAIL++-M",
            option="--model",
        ),
        ModelSpec(
            role="upscaler",
            default="stabilityai/stable-diffusion-x4-upscaler",
            library="diffusers",
            purpose="x4 upscaling of pictures for print (--print)",
            licence="CreativeML OpenRAIL++-M",
            option="--upscaler-model",
        ),
        ModelSpec(
            role="safety_checker",
            default="CompVis/stable-diffusion-safety-checker",
            library="transformers",
            purpose="safety checker for backends that ship none (always on)",
            licence="see the model card (CompVis)",
            option="--safety-model",
        ),
        ModelSpec(
            role="clip",
            default="openai/clip-vit-large-patch14",
            library="transformers",
            purpose="evaluation: prompt alignment (CLIP-T) and likeness (CLIP-I)",
            licence="MIT",
            option="--clip-model",
        ),
        ModelSpec(
            role="lcm_lora_sd15",
            default="latent-consistency/lcm-lora-sdv1-5",
            library="diffusers",
            purpose="draft pictures in 4-8 steps for SD 1.x (LCM-LoRA, --draft)",
            licence="OpenRAIL++",
            option="--draft-lora",
        ),
        ModelSpec(
            role="taesd",
            default="madebyollin/taesd",
            library="diffusers",
            purpose="live previews while a page is painted (tiny autoencoder, SD 1.x/2.x latents)",
            licence="MIT",
            option="--preview-model",
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

    @property
    def label(self) -> str:
        """Human-readable name for messages, e.g. ``deepset/roberta-base-squad2 (qa)``."""
        rev = f"@{self.revision}" if self.revision and not self.local else ""
        return f"{self.ref}{rev} ({self.spec.role})"


def spec(role: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``role``; an unknown role is a user error."""
    try:
        return MODELS[role]
    except KeyError:
        known = ", ".join(MODELS)
        raise ModelUnavailableError(f"Unknown model role '{role}'. Known roles: {known}") from None


def resolve(role: str, ref: str | os.PathLike[str] | None = None, device: str | None = None) -> ModelSource:
    """Decide where the model for ``role`` comes from.

    ``ref`` may be ``None`` (the role's default), a hub id, or a local path. A path that looks
    like a path (``./x``, ``/x``, ``~/x``) but does not exist is an error rather than a hub
    lookup, so a typo does not turn into a confusing download attempt.
    """
    model = spec(role)
    if ref is None:
        return ModelSource(model, model.default_for(device), model.revision, local=False)
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists():
        return ModelSource(model, str(path), None, local=True)
    looks_like_path = text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1
    if looks_like_path:
        raise ModelUnavailableError(f"Model path for {role} does not exist: {text}")
    # A hub id given explicitly uses the role's revision only if it is the default repo.
    revision = model.revision if text == model.default else None
    return ModelSource(model, text, revision, local=False)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def unavailable_message(source: ModelSource, reason: str | None = None) -> str:
    """The one line shown when ``source`` cannot be loaded."""
    model = source.spec
    if source.local:
        detail = f": {reason}" if reason else ""
        return f"Model at {source.ref} is not a usable {model.library} model for {model.role}{detail}"
    where = "HF_HUB_OFFLINE is set" if _offline() else "the Hugging Face hub cannot be reached"
    return (
        f"Model {source.label} is not in the local cache and {where}. "
        f"Run `fairytale models pull {model.role}` where the internet is reachable, "
        f"or pass {model.option} PATH to a local copy."
    )


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


# --------------------------------------------------------------------------- NLP models


def load_ner(ref: str | None = None, device: str | None = None) -> SequenceTagger:
    """Load the FLAIR NER tagger.

    A flair model is a single ``pytorch_model.bin`` (a pickle: flair has no other format), so
    it is only ever loaded from the repo the user names or from their own file.
    """
    source = resolve("ner", ref, device)
    if source.local:
        path = Path(source.ref)
        model_file = path / "pytorch_model.bin" if path.is_dir() else path
        if not model_file.is_file():
            raise ModelUnavailableError(unavailable_message(source, "no pytorch_model.bin in the folder"))
    else:
        from huggingface_hub import hf_hub_download

        with _loading(source):
            model_file = Path(hf_hub_download(source.ref, "pytorch_model.bin", revision=source.revision))
    import logging

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

    source = resolve(role, ref, device)
    auto = {
        "question-answering": "AutoModelForQuestionAnswering",
        "text-classification": "AutoModelForSequenceClassification",
    }[task]
    import transformers

    model_cls = getattr(transformers, auto)
    kwargs: dict[str, Any] = {"revision": source.revision} if source.revision else {}
    with _loading(source):
        tokenizer = AutoTokenizer.from_pretrained(source.ref, **kwargs)
        model = model_cls.from_pretrained(source.ref, **kwargs)
    from transformers.utils import logging as hf_logging

    # pipeline() warns "Device set to use cpu" unconditionally; the user chose the device.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return pipeline(task, model=model, tokenizer=tokenizer, device=device or "cpu")
    finally:
        hf_logging.set_verbosity(verbosity)


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
    source = resolve(role, ref)
    if pipeline_cls is None:
        from diffusers import DiffusionPipeline

        pipeline_cls = DiffusionPipeline
    if source.revision and "revision" not in kwargs:
        kwargs["revision"] = source.revision
    if source.local and not (Path(source.ref) / "model_index.json").is_file():
        raise ModelUnavailableError(unavailable_message(source, "no model_index.json in the folder"))
    with _loading(source):
        return pipeline_cls.from_pretrained(source.ref, **kwargs)


def load_component(role: str, component_cls: type, subfolder: str | None, ref: str | None = None, **kwargs: Any) -> Any:
    """Load one component (a tokenizer, a text encoder, …) of a model of ``role``."""
    source = resolve(role, ref)
    if source.revision and "revision" not in kwargs:
        kwargs["revision"] = source.revision
    if subfolder:
        kwargs["subfolder"] = subfolder
    with _loading(source):
        return component_cls.from_pretrained(source.ref, **kwargs)


def load_config(role: str, config_cls: type, subfolder: str | None = None, ref: str | None = None) -> dict[str, Any]:
    """The config of one component of a model of ``role``, read without loading any weights
    (e.g. ``load_config("sd14", UNet2DConditionModel, "unet")`` for the picture size)."""
    source = resolve(role, ref)
    kwargs: dict[str, Any] = {"revision": source.revision} if source.revision else {}
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

    source = resolve("safety_checker", ref)
    with _loading(source):
        checker = StableDiffusionSafetyChecker.from_pretrained(source.ref, **kwargs)
        processor = CLIPImageProcessor.from_pretrained(source.ref)
    return checker, processor


def load_clip(ref: str | None = None, device: str | None = None) -> tuple[Any, Any]:
    """CLIP model and processor for evaluation."""
    from transformers import CLIPModel, CLIPProcessor

    source = resolve("clip", ref)
    with _loading(source):
        model = CLIPModel.from_pretrained(source.ref)
        processor = CLIPProcessor.from_pretrained(source.ref)
    return model.to(device or "cpu").eval(), processor


# --------------------------------------------------------------------------- cache and pull


def is_cached(role: str, ref: str | None = None) -> bool:
    """Whether the model of ``role`` is available without the network."""
    source = resolve(role, ref)
    if source.local:
        return True
    from huggingface_hub import try_to_load_from_cache

    marker = {
        "flair": "pytorch_model.bin",
        "transformers": "config.json",
        "diffusers": "model_index.json",
    }[source.spec.library]
    found = try_to_load_from_cache(source.ref, marker, revision=source.revision)
    return isinstance(found, str)


def pull(role: str, ref: str | None = None) -> str:
    """Download the model of ``role`` into the Hugging Face cache; returns where it is.

    Loads through the same code path as normal use, so exactly the files a run needs are
    fetched (safetensors where the repo has them, never TF/Flax/ONNX copies).
    """
    source = resolve(role, ref)
    if source.local:
        return source.ref
    library = source.spec.library
    with _loading(source):
        if library == "flair":
            from huggingface_hub import hf_hub_download

            return hf_hub_download(source.ref, "pytorch_model.bin", revision=source.revision)
        if library == "diffusers":
            from diffusers import DiffusionPipeline

            return str(DiffusionPipeline.download(source.ref, revision=source.revision))
    if role == "qa":
        load_qa(ref)
    elif role == "nli":
        load_nli(ref)
    elif role == "clip":
        load_clip(ref)
    elif role == "safety_checker":
        load_safety_checker(ref)
    return source.ref
