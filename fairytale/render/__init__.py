"""Plan → illustrations → print-ready PDF.

The API the CLI (``fairytale render``/``book``) and the notebooks call:

* :func:`render_book` (plan file → PDF + book folder) with :class:`RenderSettings`, returning a
  :class:`RenderResult`;
* :func:`load_illustrator` to keep a model loaded across several renders;
* :func:`load_manifest` to read what a render made (``fairytale evaluate``);
* drafts (``RenderSettings(draft=True)``, :mod:`fairytale.render.drafts`) and live previews
  (``render_book(..., on_preview=...)``, :class:`Preview`, :mod:`fairytale.render.previews`);
* :func:`register_backend` / :class:`Backend` / :class:`PaintRequest` to add backends. Shipped:
  ``sd14`` and ``sd21`` (text to picture) and ``unclip`` (pages painted from the characters'
  reference portraits, :mod:`fairytale.render.backends.unclip`; portraits by
  :mod:`fairytale.render.references`).
"""

from __future__ import annotations

from fairytale.render.backends import BACKENDS, Backend, PaintRequest, get_backend, register_backend
from fairytale.render.book import RenderResult, book_dir_for, check_outputs, render_book
from fairytale.render.devices import DevicePlan, plan_device, plan_for
from fairytale.render.illustrator import Illustrator
from fairytale.render.manifest import Manifest, ManifestPage, load_manifest
from fairytale.render.previews import Preview
from fairytale.render.settings import RenderSettings, parse_pages


def load_illustrator(settings: RenderSettings | None = None) -> Illustrator:
    """Load the model ``settings`` name, ready to pass to :func:`render_book` again and again."""
    settings = settings or RenderSettings()
    backend = get_backend(settings.backend)(settings)
    return backend.load(plan_for(settings))


__all__ = [
    "BACKENDS",
    "Backend",
    "DevicePlan",
    "Illustrator",
    "Manifest",
    "ManifestPage",
    "PaintRequest",
    "Preview",
    "RenderResult",
    "RenderSettings",
    "book_dir_for",
    "check_outputs",
    "get_backend",
    "load_illustrator",
    "load_manifest",
    "parse_pages",
    "plan_device",
    "register_backend",
    "render_book",
]
