"""The ``fairytale`` command line: a thin typed layer over the Python API.

Each command group lives in its own module with a ``register(app)`` function. Heavy libraries
(torch, diffusers, flair, …) are imported inside command bodies only, so ``fairytale --help``
answers at once; a ruff rule (TID253) enforces that for this package.
"""

from __future__ import annotations

from fairytale.cli import characters, export, library, models, plan, render, scrape, studio, train
from fairytale.cli.app import app, main

for _module in (plan, render, export, library, characters, train, scrape, models, studio):
    _module.register(app)

__all__ = ["app", "main"]
