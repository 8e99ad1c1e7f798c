"""Samplers by the names users pass to ``--scheduler``, built from the model's own config.

Each is made with ``from_config(model scheduler config)``, so the model's noise schedule and
prediction type (epsilon for SD 1.x, v-prediction for SD 2.1) carry over unchanged.
"""

from __future__ import annotations

from typing import Any

from fairytale.errors import FairytaleError

#: name → (diffusers class, overrides, description)
SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "dpm++": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM-Solver++ 2M with Karras sigmas: good pictures in 20-30 steps (default)",
    ),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC: also good in 20-30 steps"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler: 30-50 steps"),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}, "Euler ancestral: livelier, changes with the step count"),
    "ddim": ("DDIMScheduler", {}, "DDIM: 50 steps"),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PNDM, SD v1.4's own: 50 steps"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS: 50 steps"),
    "lcm": ("LCMScheduler", {}, "LCM: 4-8 steps, only with the LCM-LoRA (what --draft paints with)"),
    "model": ("", {}, "whatever scheduler the model ships with"),
}


def check_scheduler(name: str) -> str:
    """``name`` if it is known, else a one-line error listing the choices."""
    if name not in SCHEDULERS:
        raise FairytaleError(f"Unknown scheduler '{name}'. Choose one of: {', '.join(SCHEDULERS)}")
    return name


def make_scheduler(name: str, model_scheduler: Any) -> Any:
    """The scheduler called ``name``, configured from ``model_scheduler`` (the pipeline's own)."""
    import diffusers

    check_scheduler(name)
    class_name, overrides, _ = SCHEDULERS[name]
    if not class_name:
        return model_scheduler
    cls = getattr(diffusers, class_name)
    return cls.from_config(model_scheduler.config, **overrides)
