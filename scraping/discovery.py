"""Finding the books: the listing page(s), each book's page, and the PDF it links.

Parsing goes through BeautifulSoup, and links are recognised by what they are rather than by a
theme's CSS classes, which change whenever the shop changes its theme:

- a **book page** is a link on the listing, on the same site, to a Shopify blog article
  (``/blogs/<blog>/<handle>``) or product (``/products/<handle>``); links in the header, footer
  and navigation are ignored when the page marks its main content;
- a **PDF** is any link whose path ends in ``.pdf`` (any case; a query string such as
  ``?v=1589846892`` is fine), relative, protocol-relative or absolute on a CDN;
- **pagination** is ``rel="next"`` or a link to the same page with a ``page`` query parameter.

A listing page yields at most :data:`MAX_BOOKS_PER_PAGE` books (Monkey Pen lists about 50); a
page that links more says so (``ListingPage.more``) instead of growing the crawl without bound.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urljoin, urlsplit, urlunsplit

from bs4 import BeautifulSoup, Tag

from scraping.site import LISTING_PATH

MAX_BOOKS_PER_PAGE = 200
"""Book links taken from one listing page; the rest are ignored with a warning."""
MAX_NEXT_PAGES = 50
"""Further listing pages taken from one listing page (a crawl reads at most 50 in all)."""
MAX_PDF_LINKS = 20
"""PDF links taken from one book page (the crawl downloads the first)."""
CARD_MAX_NODES = 200
"""A block with more nodes than this is a page section, not a book's card (see ``_title_candidates``)."""

# Link texts and image alts that name an action or the site, not the book.
_GENERIC = re.compile(
    r"^(read( it)?( more| now| online)?|download( now| here| pdf| free| the book| book)?|free download|"
    r"click here|view( book)?|more|open|pdf|free children'?s books?|next|previous|prev)$",
    re.IGNORECASE,
)
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6", "strong")
_SHOP_LINK = re.compile(r"^/(?:[a-z]{2}(?:-[a-z]{2})?/)?(?:blogs/[^/]+/(?!tagged$)[^/]+|products/[^/]+)/?$", re.I)
_TITLE_SUFFIX = re.compile(
    r"\s*[-–—:]\s*(a\s+)?free\s+(illustrated\s+)?children'?s\s+(picture\s+)?(e-?)?books?(\s+from\s+monkey\s*pen)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BookLink:
    """One book found on the listing: its own page, or (rarely) a PDF linked directly."""

    title: str
    page_url: str | None
    pdf_url: str | None = None

    @property
    def key(self) -> str:
        """What identifies the book across runs: its page URL, else its PDF URL."""
        return self.page_url or self.pdf_url or ""


@dataclass
class ListingPage:
    """What one listing page holds: book links (in page order) and further listing pages."""

    books: list[BookLink] = field(default_factory=list)
    next_pages: list[str] = field(default_factory=list)
    more: bool = False
    """The page links more books than were taken (see :data:`MAX_BOOKS_PER_PAGE`)."""


@dataclass
class BookPage:
    """A book's own page: its title and the PDF links on it, best first."""

    title: str
    pdf_urls: list[str] = field(default_factory=list)


def listing_url(base_url: str) -> str:
    """The listing page for ``base_url``: the site root gets :data:`LISTING_PATH` appended.

    >>> listing_url("https://monkeypen.com")
    'https://monkeypen.com/pages/free-childrens-books'
    >>> listing_url("http://127.0.0.1:8000/pages/other-books")
    'http://127.0.0.1:8000/pages/other-books'
    """
    parts = urlsplit(base_url.strip())
    if parts.path in ("", "/"):
        return urlunsplit((parts.scheme, parts.netloc, LISTING_PATH, parts.query, ""))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))


def same_listing_page(url: str) -> str:
    """``url`` with ``page=1`` dropped from its query, so the first page is visited once.

    >>> same_listing_page("https://monkeypen.com/pages/free-childrens-books?page=1")
    'https://monkeypen.com/pages/free-childrens-books'
    """
    parts = urlsplit(url)
    query = "&".join(p for p in parts.query.split("&") if p and p != "page=1")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def is_pdf_url(url: str) -> bool:
    """Whether ``url`` points at a PDF by its path (query string and fragment ignored).

    >>> is_pdf_url("https://cdn.shopify.com/s/files/1/2081/8163/files/001-HIDE-AND-SEEK.pdf?v=1589846897")
    True
    >>> is_pdf_url("/books/guide.pdf.html")
    False
    """
    parts = urlsplit(url)
    if parts.scheme not in ("", "http", "https"):
        return False
    return unquote(parts.path).lower().rstrip().endswith(".pdf")


def clean_title(text: str) -> str:
    """A book title without site decoration: ``"Ginger | Free Children's Book"`` → ``"Ginger"``."""
    text = " ".join(text.split())
    text = text.split(" | ")[0]
    text = _TITLE_SUFFIX.sub("", text)
    return text.strip(" -–—|:")


def title_from_url(url: str) -> str:
    """A readable title from the last part of a URL's path (a Shopify handle or file name)."""
    stem = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    stem = re.sub(r"\.pdf$", "", stem, flags=re.I)
    words = re.sub(r"[-_]+", " ", stem).split()
    return " ".join(w.capitalize() if w.isupper() or w.islower() else w for w in words) or "Untitled"


def parse_listing(html: str, page_url: str, *, max_books: int = MAX_BOOKS_PER_PAGE) -> ListingPage:
    """Find the book links (at most ``max_books``) and the further listing pages on one listing page."""
    soup = BeautifulSoup(html, "html.parser")
    next_pages = _next_pages(soup, page_url)
    books, more = _books_in(_main_content(soup), page_url, max_books)
    if not books and soup.body is not None:
        # A theme that puts the grid outside <main>: look at the whole page, minus the parts
        # that link other articles on every page.
        for chrome in soup.body.select("header, footer, nav, aside, [role=banner], [role=navigation], [role=contentinfo]"):
            chrome.decompose()
        books, more = _books_in(soup.body, page_url, max_books)
    return ListingPage(books=books, next_pages=next_pages, more=more)


def parse_book_page(html: str, page_url: str) -> BookPage:
    """Find a book's title and its PDF link(s); links in the article body come first."""
    soup = BeautifulSoup(html, "html.parser")
    title = _page_title(soup) or title_from_url(page_url)
    body = _first(soup, "article .article__content", ".article__content", "[itemprop=articleBody]", "article .rte", "article")
    urls: dict[str, None] = {}  # an ordered set: a page may link thousands of PDFs
    for scope in (body or _main_content(soup), soup):
        for url in _pdf_links(scope, page_url):
            if len(urls) >= MAX_PDF_LINKS:
                break
            urls[url] = None
    return BookPage(title=title, pdf_urls=list(urls))


# -- helpers ---------------------------------------------------------------------------------


def _main_content(soup: BeautifulSoup) -> Tag:
    # Shopify themes mark the page body with <main> / role=main / #MainContent; header, footer
    # and menus (which link other blog articles) sit outside it.
    return soup.select_one("main, [role=main], #MainContent") or soup.body or soup


def _absolute(base: str, href: str) -> str | None:
    href = href.strip()
    if not href or href.startswith(("#", "javascript:", "mailto:", "tel:", "data:")):
        return None
    try:
        url = urljoin(base, href)
        parts = urlsplit(url)
    except ValueError:  # "http://[oops/": urllib.parse refuses it; a broken link is no link
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))


def _first(soup: BeautifulSoup, *selectors: str) -> Tag | None:
    # One selector at a time, in order of preference (a selector group would return
    # whichever match comes first in the document).
    for selector in selectors:
        found = soup.select_one(selector)
        if found is not None:
            return found
    return None


def _same_site(host: str, other: str) -> bool:
    # monkeypen.com and www.monkeypen.com are one shop.
    return host.lower().removeprefix("www.") == other.lower().removeprefix("www.")


def _book_url(page_url: str, href: str) -> tuple[str, bool] | None:
    """``(url, is_pdf)`` when ``href`` is a book: a PDF, or a same-site article or product."""
    url = _absolute(page_url, href)
    if url is None:
        return None
    if is_pdf_url(url):
        return url, True
    parts = urlsplit(url)
    if _same_site(parts.netloc, urlsplit(page_url).netloc) and _SHOP_LINK.match(parts.path):
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")), False
    return None


def _books_in(content: Tag | BeautifulSoup, page_url: str, max_books: int) -> tuple[list[BookLink], bool]:
    titles: dict[str, list[str]] = {}
    kinds: dict[str, bool] = {}
    more = False
    # Each href is judged once per page, however many cards look at it.
    judged: dict[str, tuple[str, bool] | None] = {}

    def book_url(href: str) -> tuple[str, bool] | None:
        if href not in judged:
            judged[href] = _book_url(page_url, href)
        return judged[href]

    for anchor in content.find_all("a", href=True):
        found = book_url(str(anchor["href"]))
        if found is None:
            continue
        url, is_pdf = found
        if url not in kinds and len(kinds) >= max_books:
            more = True
            break
        kinds.setdefault(url, is_pdf)
        if not titles.get(url):  # the first title found is the one used
            titles.setdefault(url, []).extend(_title_candidates(anchor, url, book_url))
    books = []
    for url, is_pdf in kinds.items():
        title = next(iter(titles[url]), "") or title_from_url(url)
        books.append(BookLink(title=title, page_url=None if is_pdf else url, pdf_url=url if is_pdf else None))
    return books, more


def _pdf_links(scope: Tag | BeautifulSoup, page_url: str) -> Iterable[str]:
    for tag in scope.find_all(["a", "iframe", "embed", "object", "source"]):
        for attribute in ("href", "src", "data"):
            value = tag.get(attribute)
            if isinstance(value, str):
                url = _absolute(page_url, value)
                if url and is_pdf_url(url):
                    yield url


def _title_candidates(
    anchor: Tag, url: str, book_url: Callable[[str], tuple[str, bool] | None]
) -> list[str]:
    candidates = [anchor.get_text(" ", strip=True), anchor.get("title") or ""]
    candidates += [img.get("alt") or "" for img in anchor.find_all("img")]
    # A card often holds the picture link, a heading with the title and a "Read" button. Climb
    # to the card, but never into a block that links another book (its heading is not ours),
    # nor into one too large to be a card (scanning it for every link would take minutes).
    card = anchor.parent
    for _ in range(3):
        if not isinstance(card, Tag) or card.name in ("body", "main", "html"):
            break
        window = list(itertools.islice(card.descendants, CARD_MAX_NODES + 1))
        if len(window) > CARD_MAX_NODES:
            break
        nodes = [node for node in window if isinstance(node, Tag)]
        links = (book_url(str(node["href"])) for node in nodes if node.name == "a" and node.get("href"))
        if any(found is not None and found[0] != url for found in links):
            break
        heading = next((node for node in nodes if node.name in _HEADINGS), None)
        if heading is not None:
            candidates.append(heading.get_text(" ", strip=True))
            break
        card = card.parent
    cleaned = [clean_title(text) for text in candidates if isinstance(text, str)]
    return [text for text in cleaned if text and not _GENERIC.match(text)]


def _page_title(soup: BeautifulSoup) -> str:
    candidates = []
    heading = _first(soup, "article h1", ".article__title", "main h1", "[role=main] h1", "h1")
    if heading is not None:
        candidates.append(heading.get_text(" ", strip=True))
    meta = soup.find("meta", attrs={"property": "og:title"})
    if meta is not None and meta.get("content"):
        candidates.append(str(meta["content"]))
    if soup.title is not None:
        candidates.append(soup.title.get_text(" ", strip=True))
    for text in candidates:
        title = clean_title(text)
        if title and not _GENERIC.match(title):
            return title
    return ""


def _next_pages(soup: BeautifulSoup, page_url: str) -> list[str]:
    here = urlsplit(page_url)
    found: dict[str, None] = {}  # an ordered set
    for tag in soup.find_all(["a", "link"], href=True):
        if len(found) >= MAX_NEXT_PAGES:
            break
        rel = [r.lower() for r in (tag.get("rel") or [])]
        url = _absolute(page_url, tag["href"])
        if url is None:
            continue
        parts = urlsplit(url)
        if not _same_site(parts.netloc, here.netloc):
            continue
        paged = parts.path == here.path and "page" in parse_qs(parts.query)
        if ("next" in rel or paged) and url != page_url:
            found[url] = None
    return list(found)
