"""Publishing a painted book: accessible fixed-layout EPUB 3, print-on-demand presets (KDP,
IngramSpark) with a wraparound cover, and a preflight report.

>>> from fairytale.publish import PublishOptions, publish_book                  # doctest: +SKIP
>>> publish_book("out/ginger", PublishOptions(formats=("epub",), preset="kdp"))
"""

from fairytale.publish.book_export import FORMATS, PublishOptions, PublishResult, parse_formats, publish_book
from fairytale.publish.presets import PRESETS, CoverSpec, PrintPreset, cover_spec, get_preset

__all__ = [
    "FORMATS",
    "PRESETS",
    "CoverSpec",
    "PrintPreset",
    "PublishOptions",
    "PublishResult",
    "cover_spec",
    "get_preset",
    "parse_formats",
    "publish_book",
]
