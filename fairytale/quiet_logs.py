"""Errors only from a Hugging Face library's logger for the duration of a block, for the notes
it logs that nobody can act on (each caller says which)."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator


@contextlib.contextmanager
def errors_only(library: str) -> Iterator[None]:
    """``with errors_only("diffusers"):`` (or ``"transformers"``: both keep their verbosity in
    ``LIBRARY.utils.logging``); the verbosity before the block comes back after it."""
    logging = importlib.import_module(f"{library}.utils.logging")
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
