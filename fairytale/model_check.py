"""The up-front model check: every model a command will load, checked before any work starts.

Each command declares what it will load as a list of :class:`Need` (``plan_needs``,
``render_needs``, …) and calls :func:`ensure` first. Models already complete in the local cache
(or given as local paths) pass; missing ones are downloaded when the hub answers one short
probe; otherwise the command stops with ONE line naming every missing model and the one
``fairytale models pull …`` command that fixes it. After the check every load reads the cache
only, so no command retries an unreachable hub for minutes.

Roles added later (an IP-Adapter and its image encoder, an LCM-LoRA, a tiny autoencoder) slot
in by declaration: add the role to :mod:`fairytale.registry` and a :class:`Need` for it to the
``*_needs`` function of each command that loads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fairytale.errors import ModelUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from fairytale.plan import BookPlan


@dataclass(frozen=True)
class Need:
    """One model a command will load: its role, the user's choice for it (None: the role's
    sources), the device (some roles take a lighter model on CPU) and, for a diffusers model
    of which only one component is read, that component (``tokenizer``)."""

    role: str
    ref: str | None = None
    device: str | None = None
    only: str | None = None

    def pull_argument(self) -> str:
        """How ``fairytale models pull`` names it: ``ROLE``, or ``ROLE=HUB_ID`` for a hub id the user chose."""
        return self.role if self.ref is None else f"{self.role}={self.ref}"


#: Whether a backend's default model ships its own safety checker (else the standalone one is
#: loaded). Read from the model's own ``model_index.json`` when it is at hand.
_SHIPS_SAFETY_CHECKER = {"sd14": True, "sd21": False, "unclip": False, "variations": True, "upscaler": False}


def ships_safety_checker(role: str, ref: str | None = None) -> bool:
    """Whether the model of ``role`` brings its own safety checker."""
    from fairytale import hub_cache, registry

    source = registry.resolve(role, ref)
    folder = Path(source.ref) if source.local else hub_cache.snapshot_dir(source.ref, source.revision)
    index_file = folder / "model_index.json" if folder else None
    if index_file is not None and index_file.is_file():
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            index = {}
        return bool((index.get("safety_checker") or [None, None])[1]) and bool(
            (index.get("feature_extractor") or [None, None])[1]
        )
    return _SHIPS_SAFETY_CHECKER.get(role, False)


# --------------------------------------------------------------------------- what each command loads


def plan_needs(
    ner: str | None, qa: str | None, nli: str | None, backend: str, model: str | None, device: str | None
) -> list[Need]:
    """`fairytale plan`: the three language models, and the prompt tokenizer of the backend's model."""
    from fairytale.render.backends import get_backend

    role = get_backend(backend).role
    return [
        Need("ner", ner, device),
        Need("qa", qa, device),
        Need("nli", nli, device),
        Need(role, model, only="tokenizer"),
    ]


def render_needs(
    backend: str,
    model: str | None,
    safety_model: str | None = None,
    upscale: bool = False,
    upscaler_model: str | None = None,
    draft: bool = False,
    draft_lora: str | None = None,
    *,
    consistency: str | None = None,
    adapter_model: str | None = None,
    adapter_encoder: str | None = None,
    drift_check: bool = False,
    clip_model: str | None = None,
    plan: BookPlan | None = None,
) -> list[Need]:
    """`fairytale render`: the backend's model, the standalone safety checker when that model
    ships none, the x4 upscaler with ``--print``, the LCM-LoRA with ``--draft`` (for the
    families that have one), and IP-Adapter with its image encoder when the mode in force uses
    ``adapter``: ``consistency``, or without it the backend's default (``adapter`` for
    ``sd14``). Given the ``plan``, IP-Adapter is left out when no page shows a character with a
    portrait (nothing would load it); without one (``book`` before planning) it is counted."""
    from fairytale.render import drafts
    from fairytale.render.backends import get_backend
    from fairytale.render.backends.common import shows_portraits
    from fairytale.render.settings import consistency_parts

    painter = get_backend(backend)
    needs = [Need(painter.role, model)]
    if not ships_safety_checker(painter.role, model):
        needs.append(Need("safety_checker", safety_model))
    if upscale:
        needs.append(Need("upscaler", upscaler_model))
    lora_role = drafts.LCM_LORAS.get(painter.family or "")
    if draft and lora_role:
        needs.append(Need(lora_role, draft_lora))
    modes = consistency_parts(consistency or painter.default_mode(plan))
    shown = plan is None or shows_portraits(plan)
    if "adapter" in modes and "adapter" in painter.consistency_modes and shown:
        needs += [Need("ip_adapter_sd15", adapter_model), Need("ip_adapter_image_encoder", adapter_encoder)]
    if drift_check:
        needs.append(Need("clip", clip_model))
    return needs


def vary_needs(model: str | None, safety_model: str | None = None) -> list[Need]:
    """`fairytale vary`: the image-variations model (and a safety checker if it ships none)."""
    needs = [Need("variations", model)]
    if not ships_safety_checker("variations", model):
        needs.append(Need("safety_checker", safety_model))
    return needs


def evaluate_needs(clip_model: str | None) -> list[Need]:
    """`fairytale evaluate`: CLIP."""
    return [Need("clip", clip_model)]


def train_needs(backend: str, model: str | None, safety_model: str | None, validates: bool) -> list[Need]:
    """`fairytale train`: the backend's model (and a safety checker for validation pictures)."""
    from fairytale.render.backends import get_backend

    role = get_backend(backend).role
    needs = [Need(role, model)]
    if validates and not ships_safety_checker(role, model):
        needs.append(Need("safety_checker", safety_model))
    return needs


# --------------------------------------------------------------------------- the check


def _label(need: Need) -> str:
    from fairytale import registry

    source = registry.resolve(need.role, need.ref, need.device, need.only)
    part = f" (its {need.only})" if need.only else ""
    return f"{need.role}: {source.ref}{'@' + source.revision if source.revision else ''}{part}"


def ensure(needs: Iterable[Need], console: Console | None = None) -> None:
    """Make sure every model in ``needs`` can be loaded, before any work starts.

    Missing models are downloaded (each role's sources in order; a gone repo makes the next one
    be used, and ``console`` is told) when the hub answers; otherwise one
    :class:`~fairytale.errors.ModelUnavailableError` names them all with the command that
    fixes it. A local folder (or file) the user named that is not a model of its role's kind is
    one such error too, before anything is downloaded. Afterwards every load in this process
    reads the local cache only.
    """
    from fairytale import registry

    unique = list(dict.fromkeys(needs))
    # A component (`plan`'s tokenizer) of a model that is needed whole anyway (`book` renders
    # with it) is checked, and named, with the whole model.
    whole = {(need.role, need.ref, need.device) for need in unique if need.only is None}
    unique = [need for need in unique if need.only is None or (need.role, need.ref, need.device) not in whole]
    sources = {need: registry.resolve(need.role, need.ref, need.device, need.only) for need in unique}
    for need, source in sources.items():  # a folder the user named that holds no model of its role's kind: say so now
        registry.check_local(source, need.only)
    missing = [need for need, source in sources.items() if registry.missing_in_cache(source, need.only)]
    if missing and registry.hub_reachable():
        for need in missing:
            if console is not None:
                from rich.markup import escape

                # The id may be the user's own (ROLE=HUB_ID, a folder): never markup.
                label = escape(_label(need).split(": ", 1)[1])
                status = console.status(f"Downloading the {need.role} model ({label})…")
            else:
                import contextlib

                status = contextlib.nullcontext()
            with status:
                pulled = registry.pull(need.role, need.ref, need.device, need.only)
            if console is not None:
                from rich.markup import escape

                for note in pulled.notes:
                    console.print(f"[yellow]![/] {escape(note)}", highlight=False)
        missing = []
    if missing:
        from huggingface_hub import constants

        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hugging Face hub cannot be reached"
        roles = " ".join(dict.fromkeys(need.pull_argument() for need in missing))
        raise ModelUnavailableError(
            f"Missing model{'s' if len(missing) > 1 else ''} ({'; '.join(_label(n) for n in missing)}): "
            f"not in the local cache and {why}. Run `fairytale models pull {roles}` where the internet "
            "is reachable, or pass a local copy with the model's option (see `fairytale models list`)."
        )
    registry.use_cache_only()
