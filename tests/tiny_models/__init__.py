"""Tiny versions of every model role, built on this machine and saved in the real layouts.

``python -m tests.tiny_models OUTDIR [ROLE ...]`` writes one subfolder per role:

==============  =====================================================================
``ner``         flair SequenceTagger trained on ``tests/data/ner`` (``pytorch_model.bin``)
``qa``          RoBERTa QA head + locally trained byte-level BPE tokenizer
``nli``         RoBERTa MNLI-style classifier (contradiction / neutral / entailment)
``sd``          Stable Diffusion 1.x pipeline with safety checker
``sd2``         SD 2.1-style pipeline (v-prediction, no bundled safety checker)
``variations``  image-variations pipeline (CLIP image encoder)
``unclip``      SD 2.1 unCLIP img2img pipeline
``upscaler``    SD x4 upscaler pipeline
``safety_checker``  standalone safety checker
``clip``        CLIP model + processor
``ip_adapter``  IP-Adapter for the ``sd`` UNet + its image encoder (layout of h94/IP-Adapter)
``lcm_lora``    LoRA for the ``sd`` UNet in the LCM-LoRA hub layout (drafts)
``taesd``       tiny AutoencoderTiny (live previews)
==============  =====================================================================

Nothing is downloaded. The test fixtures in ``tests/conftest.py`` build each role once per run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from tests.tiny_models import diffusion, nlp

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "ner": nlp.build_ner,
    "qa": nlp.build_qa,
    "nli": nlp.build_nli,
    "sd": diffusion.build_sd,
    "sd2": diffusion.build_sd2,
    "variations": diffusion.build_variations,
    "unclip": diffusion.build_unclip,
    "upscaler": diffusion.build_upscaler,
    "safety_checker": diffusion.build_safety_checker,
    "clip": diffusion.build_clip,
    "ip_adapter": diffusion.build_ip_adapter,
    "lcm_lora": diffusion.build_lcm_lora,
    "taesd": diffusion.build_taesd,
}


def build(outdir: Path, roles: Iterable[str] | None = None) -> dict[str, Path]:
    """Build the tiny model of each role (all when ``roles`` is None) under ``outdir``."""
    outdir = Path(outdir)
    built = {}
    for role in roles or BUILDERS:
        if role not in BUILDERS:
            raise KeyError(f"unknown tiny model role {role!r}; known: {', '.join(BUILDERS)}")
        built[role] = BUILDERS[role](outdir / role)
    return built
