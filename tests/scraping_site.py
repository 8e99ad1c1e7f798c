"""A small Shopify-like book site on 127.0.0.1 for the scraper tests, with faults on demand.

It imitates what is known of Monkey Pen: a listing page at ``/pages/free-childrens-books``
(cards in the theme's main content, paginated with ``?page=2`` and ``rel="next"``), one blog
article per book under ``/blogs/news/<handle>`` whose body links the PDF, and PDFs on a "CDN"
(the same server reached as ``localhost``, so the CDN is another host with its own robots.txt
check) with ``?v=`` query strings. Header, footer and sidebar link other articles, as a real
theme does. PDFs are made with reportlab: a cover, illustrated pages (vector shapes, or a
raster picture), a typed text page, a scanned-looking text page, a near-blank page and a back
cover.

Faults are queued per path and consumed one per request::

    site.faults["/s/files/ginger.pdf"] = [Fault.status(429, {"Retry-After": "7"})]

Every request is logged in ``site.log`` (path with query, User-Agent), its headers in
``site.headers``. PDFs are served with an ``ETag`` (from their bytes) and a ``Last-Modified``
and answer a matching ``If-None-Match`` / ``If-Modified-Since`` with 304, unless
``site.validators`` is set to False.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import io
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LISTING = "/pages/free-childrens-books"
CDN_DIR = "/s/files/1/2081/8163/files"
PAGE = 576  # points: 8 inches, so 72 dpi renders 576 px (enough for a 512 crop)

ROBOTS = """# we use Shopify as our ecommerce platform
User-agent: *
Disallow: /admin
Disallow: /cart
Disallow: /orders
Disallow: /checkouts/
Disallow: /checkout
Disallow: /search
Disallow: /blogs/*+*
Disallow: /blogs/news/members-only
Sitemap: /sitemap.xml

User-agent: Nutch
Disallow: /
"""


# -- PDFs -------------------------------------------------------------------------------------


@functools.cache
def book_pdf(title: str, *, seed: int = 0, raster: bool = False) -> bytes:
    """A small picture book: cover, 3 illustrations, typed text, scanned text, blank, back cover.

    With ``raster=True`` one illustration is an embedded bitmap (as in scanned books).
    Pages 2–4 are illustrations; the dataset builder should keep exactly those.
    """
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    rng = random.Random(f"{title}:{seed}")
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=(PAGE, PAGE), invariant=1)
    pdf.setTitle(title)

    # 1. Front cover: colour, big title.
    _fill(pdf, (0.95, 0.75, 0.3))
    pdf.setFillColorRGB(0.2, 0.1, 0.4)
    pdf.setFont("Helvetica-Bold", 34)
    pdf.drawCentredString(PAGE / 2, PAGE * 0.6, title)
    pdf.showPage()

    # 2–4. Illustrations with a line of story on each.
    for number in range(3):
        if raster and number == 1:
            pdf.drawImage(ImageReader(_raster_picture(rng)), 0, 0, PAGE, PAGE)
        else:
            _scene(pdf, rng)
        pdf.setFillColorRGB(1, 1, 1)
        pdf.rect(40, 30, PAGE - 80, 44, stroke=0, fill=1)
        pdf.setFillColorRGB(0, 0, 0)
        pdf.setFont("Helvetica", 15)
        pdf.drawString(52, 46, f"{title} went out to play on day {number + 1}. It was sunny.")
        pdf.showPage()

    # 5. A page of typed text.
    pdf.setFont("Times-Roman", 14)
    y = PAGE - 60
    while y > 60:
        pdf.drawString(50, y, "Once upon a time the friends talked about what they should do next.")
        y -= 20
    pdf.showPage()

    # 6. A scanned page of text: a bitmap, no text layer.
    pdf.drawImage(ImageReader(_scanned_text()), 0, 0, PAGE, PAGE)
    pdf.showPage()

    # 7. Near blank: a page number only.
    pdf.setFont("Helvetica", 9)
    pdf.drawCentredString(PAGE / 2, 20, "7")
    pdf.showPage()

    # 8. Back cover.
    _fill(pdf, (0.3, 0.55, 0.8))
    pdf.setFillColorRGB(1, 1, 1)
    pdf.setFont("Helvetica", 16)
    pdf.drawCentredString(PAGE / 2, PAGE / 2, "More free books at monkeypen.com")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


ILLUSTRATED_PAGES = (2, 3, 4)
PAGES_PER_BOOK = 8


def _fill(pdf, rgb) -> None:
    pdf.setFillColorRGB(*rgb)
    pdf.rect(0, 0, PAGE, PAGE, stroke=0, fill=1)


def _scene(pdf, rng: random.Random) -> None:
    _fill(pdf, (0.55 + 0.2 * rng.random(), 0.8, 0.95))  # sky
    pdf.setFillColorRGB(0.3, 0.65 + 0.2 * rng.random(), 0.3)
    pdf.rect(0, 0, PAGE, PAGE * 0.35, stroke=0, fill=1)  # grass
    pdf.setFillColorRGB(1, 0.85, 0.1)
    pdf.circle(PAGE * rng.uniform(0.6, 0.85), PAGE * 0.8, 40, stroke=0, fill=1)  # sun
    for _ in range(6):
        pdf.setFillColorRGB(rng.random(), rng.random(), rng.random())
        pdf.ellipse(*_box(rng), stroke=0, fill=1)


def _box(rng: random.Random):
    x, y = rng.uniform(40, PAGE - 200), rng.uniform(80, PAGE - 200)
    return x, y, x + rng.uniform(60, 160), y + rng.uniform(60, 160)


def _raster_picture(rng: random.Random):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (288, 288), (120, 190, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 190, 288, 288), fill=(70, 160, 70))
    for _ in range(5):
        x, y = rng.randint(10, 200), rng.randint(40, 200)
        draw.ellipse((x, y, x + rng.randint(30, 80), y + rng.randint(30, 80)), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    return image


def _scanned_text():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (576, 576), (250, 246, 235))  # cream paper
    draw = ImageDraw.Draw(image)
    for row in range(24):
        draw.text((40, 40 + row * 21), "and so they walked along the river until the sun went down", fill=(30, 30, 30))
    return image


# -- the site ---------------------------------------------------------------------------------


@dataclass
class Fault:
    """One misbehaviour, served instead of the normal answer to one request."""

    kind: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    keep: int = 0
    body: bytes = b""

    @classmethod
    def error(cls, status: int, headers: dict[str, str] | None = None) -> Fault:
        """Answer ``status`` with a small HTML body (and ``headers``, e.g. Retry-After)."""
        return cls("status", status=status, headers=headers or {})

    @classmethod
    def hang(cls) -> Fault:
        """Accept the request and say nothing until the test ends."""
        return cls("hang")

    @classmethod
    def truncate(cls, keep: int) -> Fault:
        """Announce the full Content-Length, send ``keep`` bytes, close the connection."""
        return cls("truncate", keep=keep)

    @classmethod
    def content(cls, body: bytes, content_type: str = "application/pdf", *, length: bool = True) -> Fault:
        """A 200 with ``body``; without ``length`` the body ends when the connection closes."""
        return cls("body", body=body, headers={"Content-Type": content_type}, keep=int(length))

    @classmethod
    def html_page(cls) -> Fault:
        """A 200 HTML page where the PDF should be (a login or error page)."""
        return cls("html")

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Fault:
        """A redirect to ``location`` (absolute or relative)."""
        return cls("status", status=status, headers={"Location": location})

    @classmethod
    def gzip_bomb(cls, megabytes: int, content_type: str = "text/html") -> Fault:
        """A small gzip body that inflates to ``megabytes`` MB of zeros."""
        return cls("body", body=_gzip_zeros(megabytes), headers={"Content-Type": content_type, "Content-Encoding": "gzip"}, keep=1)

    @classmethod
    def huge(cls, prefix: bytes, filler: bytes, total: int, content_type: str = "text/plain") -> Fault:
        """``prefix`` then ``filler`` repeated up to ``total`` bytes, streamed (Content-Length set);
        what was really sent is counted in ``Site.sent``."""
        return cls("huge", body=prefix, headers={"Content-Type": content_type, "X-Filler": filler.decode()}, keep=total)

    @classmethod
    def trickle(cls, total: int, interval: float = 0.02) -> Fault:
        """A PDF that announces ``total`` bytes and sends one every ``interval`` seconds (a slow loris)."""
        return cls("trickle", keep=total, headers={"interval": str(interval)})


@dataclass
class Book:
    """A book on the site; ``link`` is how its page links the PDF (href template)."""

    handle: str
    title: str
    file: str
    pdf: bytes
    link: str = "cdn"  # cdn | relative | protocol-relative | listing (PDF linked on the listing) | an absolute URL

    def pdf_path(self) -> str:
        return f"{CDN_DIR}/{self.file}" if self.link != "relative" else f"/cdn/shop/files/{self.file}"


def default_books() -> list[Book]:
    """Three books linked three different ways (CDN URL with ?v=, relative, protocol-relative .PDF)."""
    return [
        Book("ginger-the-giraffe-free-children-book", "Ginger the Giraffe",
             "002-GINGER-THE-GIRAFFE-Free-Childrens-Book-By-Monkey-Pen.pdf", book_pdf("Ginger the Giraffe"), "cdn"),
        Book("hide-and-seek-free-childrens-book-from-monkey-pen", "Hide and Seek",
             "001-HIDE-AND-SEEK-Free-Childrens-Book-By-Monkey-Pen.pdf", book_pdf("Hide and Seek", raster=True), "relative"),
        Book("doing-my-chores", "Doing My Chores",
             "003-DOING_MY_CHORES-Free-Childrens-Book-By-Monkey-Pen.PDF", book_pdf("Doing My Chores"), "protocol-relative"),
    ]


class Site:
    """The site's content and state; :func:`serve` puts it on 127.0.0.1."""

    def __init__(self, books: list[Book] | None = None, per_page: int = 2) -> None:
        self.books = default_books() if books is None else books
        self.per_page = per_page
        self.faults: dict[str, list[Fault]] = {}
        self.log: list[tuple[str, str]] = []
        self.headers: list[tuple[str, dict[str, str]]] = []
        self.validators = True
        self.last_modified = "Wed, 20 May 2020 10:00:00 GMT"
        self.robots = ROBOTS
        self.release = threading.Event()
        self.sent: dict[str, int] = {}
        """Bytes really sent for streamed (``huge``) answers, by path."""
        self.port = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> str:
        return f"http://localhost:{self.port}"

    def conditions_for(self, path: str) -> list[tuple[str | None, str | None]]:
        """``(If-None-Match, If-Modified-Since)`` of each request for ``path`` (query string ignored)."""
        return [
            (headers.get("If-None-Match"), headers.get("If-Modified-Since"))
            for logged, headers in self.headers
            if urlsplit(logged).path == path
        ]

    def requests_for(self, path: str) -> int:
        """How many requests asked for ``path`` (query string ignored)."""
        return sum(1 for logged, _ in self.log if urlsplit(logged).path == path)

    # -- pages --------------------------------------------------------------------------------

    def listing(self, page: int) -> str:
        shown = self.books[(page - 1) * self.per_page : page * self.per_page]
        pages = max(1, -(-len(self.books) // self.per_page))
        cards = "\n".join(self._card(book) for book in shown)
        head_next = f'<link rel="next" href="{LISTING}?page={page + 1}">' if page < pages else ""
        pager = " ".join(
            f'<a href="?page={n}" class="pagination__item">{n}</a>' if n != page else f"<span>{n}</span>"
            for n in range(1, pages + 1)
        )
        return _layout(
            "Free Children's Books | Monkey Pen",
            f"""<div class="page-width"><h1 class="main-page-title">Free Children's Books</h1>
<div class="rte"><p>Download our free children's books. Read them with your kids!</p>
<div class="grid">{cards}</div></div>
<nav class="pagination" role="navigation">{pager}</nav></div>""",
            head=head_next,
        )

    def _card(self, book: Book) -> str:
        if book.link == "listing":
            return f"""<div class="grid__item" id="prod"><a href="{self.cdn}{book.pdf_path()}?v=1">
<img src="//localhost:{self.port}{CDN_DIR}/{book.handle}-th.jpg" alt="Free Children's Book"></a>
<h4><strong>{html.escape(book.title)}</strong></h4></div>"""
        return f"""<div class="grid__item" id="prod">
<a href="/blogs/news/{book.handle}"><img src="//localhost:{self.port}{CDN_DIR}/{book.handle}-th.jpg?v=1613041069" alt="Free Children's Book"></a>
<h4 class="h4"><strong>{html.escape(book.title)}</strong></h4>
<div class="btn-wrap"><span><a class="btn" href="/blogs/news/{book.handle}">Read Now</a></span></div></div>"""

    def book_page(self, book: Book) -> str:
        href = {
            "cdn": f"{self.cdn}{book.pdf_path()}?v=1589846892",
            "relative": f"{book.pdf_path()}?v=1589846897",
            "protocol-relative": f"//localhost:{self.port}{book.pdf_path()}",
        }.get(book.link, book.link if book.link.startswith("http") else f"{self.cdn}{book.pdf_path()}")
        others = "".join(f'<li><a href="/blogs/news/{b.handle}">{html.escape(b.title)}</a></li>' for b in self.books if b is not book)
        return _layout(
            f"{book.title} | Free Children's Book | Monkey Pen",
            f"""<article class="article" itemscope>
<h1 class="article__title">{html.escape(book.title)} | Free Children's Book</h1>
<div class="article__content rte" itemprop="articleBody">
<p>A lovely story, free to download.</p>
<p>It is illegal to use this free children's book for commercial without giving us credit by linking to our
website Teachers and Educational Institutions, please read our <a href="/pages/terms">T&amp;C</a> before making any use of monkeypen books.</p>
<p><a href="{html.escape(href)}" target="_blank" rel="noopener"><img src="//localhost:{self.port}{CDN_DIR}/download-button.png" alt="Download"></a></p>
<p><a href="{LISTING}">Click here to read more Free Children's books</a></p>
<p><img src="//localhost:{self.port}{CDN_DIR}/{book.handle}-01.jpg" alt="Free Children's Book"></p>
</div></article>
<aside class="sidebar"><h3>Recent articles</h3><ul>{others}</ul></aside>""",
        )

    # -- serving ------------------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        with self._lock:
            self.log.append((request.path, request.headers.get("User-Agent", "")))
            self.headers.append((request.path, dict(request.headers.items())))
            queue = self.faults.get(parts.path)
            fault = queue.pop(0) if queue else None
        if fault is not None and fault.kind == "hang":
            self.release.wait(timeout=10)
            request.close_connection = True
            return
        if fault is not None and fault.kind == "status":
            return _send(request, fault.status, b"<html><body>Something went wrong</body></html>", "text/html", fault.headers)
        if fault is not None and fault.kind == "huge":
            return self._stream(request, parts.path, fault)
        if fault is not None and fault.kind == "trickle":
            request.send_response(200)
            request.send_header("Content-Type", "application/pdf")
            request.send_header("Content-Length", str(fault.keep))
            request.end_headers()
            request.wfile.write(b"%PDF-1.4\n")
            for _ in range(fault.keep):
                if self.release.wait(timeout=float(fault.headers["interval"])):
                    break
                request.wfile.write(b" ")
                request.wfile.flush()
            request.close_connection = True
            return
        if fault is not None and fault.kind == "body":
            request.send_response(200)
            for name, value in fault.headers.items():
                if name != "Content-Type":
                    request.send_header(name, value)
            request.send_header("Content-Type", fault.headers["Content-Type"])
            if fault.keep:
                request.send_header("Content-Length", str(len(fault.body)))
            request.end_headers()
            request.wfile.write(fault.body)
            request.close_connection = True
            return
        if fault is not None and fault.kind == "html":
            return _send(request, 200, b"<!DOCTYPE html><html><body><h1>Please log in</h1></body></html>", "text/html")

        if parts.path == "/robots.txt":
            return _send(request, 200, self.robots.encode(), "text/plain")
        if parts.path == LISTING:
            page = int(parse_qs(parts.query).get("page", ["1"])[0])
            return _send(request, 200, self.listing(page).encode(), "text/html; charset=utf-8")
        for book in self.books:
            if parts.path == f"/blogs/news/{book.handle}":
                return _send(request, 200, self.book_page(book).encode(), "text/html; charset=utf-8")
            if parts.path == book.pdf_path():
                body = book.pdf
                if fault is not None and fault.kind == "truncate":
                    request.send_response(200)
                    request.send_header("Content-Type", "application/pdf")
                    request.send_header("Content-Length", str(len(body)))
                    request.end_headers()
                    request.wfile.write(body[: fault.keep])
                    request.wfile.flush()
                    request.close_connection = True
                    return
                if not self.validators:
                    return _send(request, 200, body, "application/pdf")
                etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
                match = request.headers.get("If-None-Match")
                since = request.headers.get("If-Modified-Since")
                # RFC 9110 13.2.2: If-None-Match, when sent, decides; If-Modified-Since otherwise.
                if (match == etag) if match is not None else (since == self.last_modified):
                    return _send(request, 304, b"", "application/pdf", {"ETag": etag})
                return _send(request, 200, body, "application/pdf", {"ETag": etag, "Last-Modified": self.last_modified})
        return _send(request, 404, b"<html><body>404 Not Found</body></html>", "text/html")


    def _stream(self, request: BaseHTTPRequestHandler, path: str, fault: Fault) -> None:
        request.send_response(200)
        request.send_header("Content-Type", fault.headers["Content-Type"])
        request.send_header("Content-Length", str(fault.keep))
        request.end_headers()
        filler = fault.headers["X-Filler"].encode()
        block = filler * max(1, (64 * 1024) // len(filler))
        sent = 0
        try:
            request.wfile.write(fault.body)
            sent = len(fault.body)
            while sent < fault.keep:
                piece = block[: fault.keep - sent]
                request.wfile.write(piece)
                sent += len(piece)
        finally:
            with self._lock:
                self.sent[path] = self.sent.get(path, 0) + sent
            request.close_connection = True


@functools.cache
def _gzip_zeros(megabytes: int) -> bytes:
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    zeros = bytes(1024 * 1024)
    return b"".join(packer.compress(zeros) for _ in range(megabytes)) + packer.flush()


def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(body)


def _layout(title: str, body: str, head: str = "") -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta property="og:title" content="{html.escape(title)}">{head}</head>
<body class="template-page"><a class="skip-to-content-link" href="#MainContent">Skip to content</a>
<header class="header"><a href="/" class="header__heading-link">Monkey Pen</a>
<nav><ul class="list-menu"><li><a href="/collections/all">Shop</a></li><li><a href="/blogs/news">Blog</a></li>
<li><a href="{LISTING}">Free Books</a></li><li><a href="/cart">Cart</a></li><li><a href="/account/login">Log in</a></li></ul></nav></header>
<main id="MainContent" class="content-for-layout" role="main" tabindex="-1">{body}</main>
<footer class="footer"><a href="/blogs/news/our-story-so-far">Our story</a> <a href="/pages/terms">Terms</a>
<a href="/policies/privacy-policy">Privacy</a></footer></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    site: Site

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        try:
            self.site.handle(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing to answer

    def log_message(self, format, *args) -> None:  # noqa: A002 - http.server's signature
        pass


@contextlib.contextmanager
def serve(site: Site) -> Iterator[Site]:
    """Run ``site`` on 127.0.0.1 (a free port) in a background thread for the block's duration."""
    handler = type("Handler", (_Handler,), {"site": site})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class FakeClock:
    """A clock that only moves when :meth:`sleep` is called; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def quick_http(clock: FakeClock, **overrides):
    """An ``HttpConfig`` for tests: no real waiting, a 0.2 s read timeout, 2 retries, and the
    site's "CDN" (``localhost``, another host than the site's ``127.0.0.1``) allowed for PDFs."""
    from scraping.http import HttpConfig

    settings = dict(
        delay=0.0, connect_timeout=2.0, read_timeout=0.2, retries=2, backoff_factor=0.5,
        sleep=clock.sleep, clock=clock, allow_hosts=("localhost",),
    )
    settings.update(overrides)
    return HttpConfig(**settings)


def read_manifest(folder) -> list[dict]:
    """The manifest rows of a download folder, in order."""
    import json
    from pathlib import Path

    path = Path(folder) / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def files_in(folder) -> list[str]:
    """Every file name in ``folder`` (the manifest excluded), sorted."""
    from pathlib import Path

    return sorted(p.name for p in Path(folder).iterdir() if p.name != "manifest.jsonl")
