"""Collect Monkey Pen's free children's books and turn their pictures into a style dataset.

Two steps, each a function the command line and notebooks call:

>>> report = scrape("https://monkeypen.com", "books/")              # doctest: +SKIP
>>> build_dataset("books/", "dataset/", size=512, dpi=150, seed=0)  # doctest: +SKIP

The books are for the user's own research use; nothing here ships or redistributes them
(see :data:`scraping.site.TERMS`). Attributes load lazily so that importing
:mod:`scraping.site` (for the command line's ``--help``) pulls in no HTTP or PDF library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from scraping.crawl import BookOutcome, ScrapeReport, scrape
    from scraping.dataset import DatasetReport, build_dataset
    from scraping.http import HttpConfig

_EXPORTS = {
    "scrape": "scraping.crawl",
    "ScrapeReport": "scraping.crawl",
    "BookOutcome": "scraping.crawl",
    "build_dataset": "scraping.dataset",
    "DatasetReport": "scraping.dataset",
    "HttpConfig": "scraping.http",
}

__all__ = ["BookOutcome", "DatasetReport", "HttpConfig", "ScrapeReport", "build_dataset", "scrape"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'scraping' has no attribute {name!r}")
