"""Textual inversion for fAIrytale: learn a style token or a character token on one GPU.

>>> from training import TrainingConfig, train          # doctest: +SKIP
>>> train(TrainingConfig(kind="character", data=Path("ginger_pics"), token="<ginger>",
...                      init="giraffe", output=Path("ginger.safetensors")))

``fairytale train style|character`` is the command-line front; ``accelerate launch`` runs the
same entry point on several GPUs. Modules: :mod:`training.config` (the settings and their
defaults), :mod:`training.data` (pictures and the latent cache), :mod:`training.templates`
(prompts), :mod:`training.textual_inversion` (the loop), :mod:`training.checkpoint`
(resumable state), :mod:`training.validation`, :mod:`training.progress`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.config import TrainingConfig

if TYPE_CHECKING:  # pragma: no cover
    from training.textual_inversion import TrainingResult

__all__ = ["TrainingConfig", "train"]


def train(config: TrainingConfig, **kwargs: Any) -> TrainingResult:
    """Run textual inversion; see :func:`training.textual_inversion.train`."""
    from training.textual_inversion import train as run

    return run(config, **kwargs)
