"""What we know about the site we collect from, kept free of heavy imports.

Monkey Pen (monkeypen.com) is a Shopify store. Its free books are listed on one page,
``/pages/free-childrens-books``; each book has its own blog article under
``/blogs/news/<handle>`` whose body links the PDF on Shopify's CDN, for example
``https://cdn.shopify.com/s/files/1/2081/8163/files/002-GINGER-THE-GIRAFFE-Free-Childrens-Book-By-Monkey-Pen.pdf?v=1589846892``.
Those facts come from public references to the site (it cannot be reached from where this code
was written), so the parser does not rely on them: it finds book pages and PDFs by what they
are (see :mod:`scraping.discovery`), and ``--base-url`` points the whole crawl elsewhere.

This module is imported by the command line to show defaults in ``--help``; it must stay light.
"""

from __future__ import annotations

DEFAULT_BASE_URL = "https://monkeypen.com"
"""The site root. A URL with a path (e.g. the listing page itself) is used as the listing."""

LISTING_PATH = "/pages/free-childrens-books"
"""Where the free books are listed, relative to the site root."""

PDF_HOSTS: dict[str, tuple[str, ...]] = {"monkeypen.com": ("cdn.shopify.com",)}
"""Hosts a book site is known to serve its PDFs from, besides its own (see :mod:`scraping.scope`).

Monkey Pen is a Shopify store: its article bodies link PDFs on Shopify's file CDN
(``cdn.shopify.com/s/files/…``), and a store's own ``/cdn/shop/files/…`` paths redirect there.
Keys are site hosts without ``www.``; a site not listed has none, and ``--allow-host`` adds more.
"""

TERMS = (
    "Monkey Pen offers these books free to read and download; its book pages say it is illegal to use "
    "them commercially without giving credit by linking to monkeypen.com, and ask teachers and "
    "educational institutions to read its T&C before any use. fAIrytale collects them only for your "
    "own research use: keep the PDFs and the dataset to yourself, never redistribute them."
)
"""The site's terms as we understand them, printed by ``fairytale scrape`` and written in dataset cards."""
