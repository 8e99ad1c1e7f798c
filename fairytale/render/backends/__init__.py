"""Illustration backends, one module each, listed here by ``--backend`` name.

:mod:`~fairytale.render.backends.common` holds what every backend shares (:class:`Backend`,
:class:`PaintRequest`); ``sd14``, ``sd21`` and ``unclip`` are the shipped ones. The list below is
the only place a backend becomes available: nothing registers itself by being imported.
:func:`register_backend` adds another one explicitly (a plug-in, or a test's fake).
"""

from __future__ import annotations

from fairytale.errors import FairytaleError
from fairytale.render.backends.common import (
    KEY_FORMAT,
    Backend,
    PaintRequest,
    check_v_prediction,
    quiet_loading,
)
from fairytale.render.backends.sd14 import StableDiffusion14
from fairytale.render.backends.sd21 import StableDiffusion21
from fairytale.render.backends.unclip import StableUnCLIP21

#: ``--backend`` name → backend class
BACKENDS: dict[str, type[Backend]] = {
    StableDiffusion14.name: StableDiffusion14,
    StableDiffusion21.name: StableDiffusion21,
    StableUnCLIP21.name: StableUnCLIP21,
}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Make ``cls`` available as ``--backend cls.name`` (an explicit call, also usable as a
    class decorator by plug-ins and tests)."""
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str) -> type[Backend]:
    """The backend class called ``name``; an unknown name is a one-line error."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise FairytaleError(f"Unknown backend '{name}'. Available: {', '.join(sorted(BACKENDS))}") from None


__all__ = [
    "BACKENDS",
    "KEY_FORMAT",
    "Backend",
    "PaintRequest",
    "StableDiffusion14",
    "StableDiffusion21",
    "StableUnCLIP21",
    "check_v_prediction",
    "get_backend",
    "quiet_loading",
    "register_backend",
]
