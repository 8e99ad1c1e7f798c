"""Helpers for the studio tests: what they need installed, and reading PDF pictures back."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(what: str, present: bool, install: str) -> None:
    """Skip when ``what`` is missing on a developer's machine; fail under CI, which must have it."""
    if present:
        return
    message = f"{what} is not installed ({install})"
    if on_ci():
        pytest.fail(f"CI must run the studio tests: {message}", pytrace=False)
    pytest.skip(message)


def require_gradio() -> None:
    require("gradio", importlib.util.find_spec("gradio") is not None, 'pip install -e ".[studio]"')


def require_browser() -> str:
    """Path of Debian's chromium, for Playwright (which downloads no browser of its own here)."""
    require_gradio()
    require("playwright", importlib.util.find_spec("playwright") is not None, 'pip install -e ".[test]"')
    path = os.environ.get("FAIRYTALE_CHROMIUM") or (
        CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    )
    require("chromium", bool(path), "apt-get install -y --no-install-recommends chromium")
    return str(path)


def pdf_picture_pixels(path: Path) -> list[bytes | None]:
    """Per PDF page, the pixels of its first picture (None for a page without one)."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(path))
    try:
        found = []
        for page in document:
            images = list(page.get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE]))
            found.append(images[0].get_bitmap().to_pil().convert("RGB").tobytes() if images else None)
        return found
    finally:
        document.close()
