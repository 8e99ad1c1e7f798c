"""Finding books, titles and PDF links in Shopify-like HTML (no network)."""

from __future__ import annotations

import pytest

from scraping import discovery
from scraping.discovery import (
    clean_title,
    is_pdf_url,
    listing_url,
    parse_book_page,
    parse_listing,
    same_listing_page,
    title_from_url,
)
from tests.scraping_site import Book, Site, book_pdf

BASE = "https://shop.example"
LISTING = f"{BASE}/pages/free-childrens-books"


def test_listing_url_appends_the_listing_path_to_a_site_root():
    assert listing_url("https://monkeypen.com") == "https://monkeypen.com/pages/free-childrens-books"
    assert listing_url("http://127.0.0.1:8123/") == "http://127.0.0.1:8123/pages/free-childrens-books"
    assert listing_url("http://127.0.0.1:8123/pages/other?x=1") == "http://127.0.0.1:8123/pages/other?x=1"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.shopify.com/s/files/1/2081/8163/files/001-HIDE-AND-SEEK.pdf?v=1589846897", True),
        ("/cdn/shop/files/book.PDF", True),
        ("//cdn.example/files/My%20Book.pdf#page=2", True),
        ("https://example.com/book.pdf.html", False),
        ("https://example.com/download?file=book.pdf", False),
        ("mailto:someone@example.com?subject=book.pdf", False),
        ("https://example.com/blogs/news/pdf", False),
    ],
)
def test_pdf_links_are_recognised_by_their_path(url, expected):
    assert is_pdf_url(url) is expected


def test_clean_title_drops_site_decoration():
    assert clean_title("Ginger the Giraffe | Free Children's Book | Monkey Pen") == "Ginger the Giraffe"
    assert clean_title("  Hide and  Seek - Free Children's Book  ") == "Hide and Seek"
    assert clean_title("Bully Bill – free childrens books from Monkey Pen") == "Bully Bill"
    assert title_from_url("https://x/s/files/002-GINGER-THE-GIRAFFE.pdf?v=1") == "002 Ginger The Giraffe"
    assert title_from_url("https://x/blogs/news/terrance-turtles-new-home") == "Terrance Turtles New Home"


def _site(**kwargs) -> Site:
    site = Site(**kwargs)
    site.port = 8123
    return site


def test_listing_finds_book_pages_in_the_main_content_and_the_next_page():
    site = _site()
    page = parse_listing(site.listing(1), f"{site.url}/pages/free-childrens-books")
    assert [b.page_url for b in page.books] == [f"{site.url}/blogs/news/{b.handle}" for b in site.books[:2]]
    # Titles come from the card heading, not from "Read Now" or the image's generic alt text.
    assert [b.title for b in page.books] == ["Ginger the Giraffe", "Hide and Seek"]
    assert all(b.pdf_url is None for b in page.books)
    # Header and footer links (the blog index, "our story" article, cart) are not books.
    assert not any("our-story" in (b.page_url or "") for b in page.books)
    assert page.next_pages == [f"{site.url}/pages/free-childrens-books?page=2"]


def test_listing_last_page_points_back_but_not_forward():
    site = _site()
    page = parse_listing(site.listing(2), f"{site.url}/pages/free-childrens-books?page=2")
    assert [b.title for b in page.books] == ["Doing My Chores"]
    assert [same_listing_page(u) for u in page.next_pages] == [f"{site.url}/pages/free-childrens-books"]


def test_listing_without_main_element_uses_the_body_and_takes_direct_pdf_links():
    html = """<html><body><div class="books">
      <p><a href="/blogs/news/the-way-of-the-woods/">The Way of the Woods</a></p>
      <p><a href="/en-gb/blogs/news/jimmys-first-day">Read more</a><img alt="Jimmy's First Day"></p>
      <p><a href="https://cdn.shopify.com/s/files/1/2081/8163/files/030-BULLY-BILL.pdf?v=2">Bully Bill</a></p>
      <p><a href="https://www.shop.example/blogs/news/hide-and-seek?_pos=3&_sid=ab12">Hide and Seek</a></p>
      <p><a href="/blogs/news/tagged/animals">Animals</a> <a href="/blogs/news">Blog</a>
         <a href="https://other.example/blogs/news/not-ours">Elsewhere</a></p>
    </div></body></html>"""
    page = parse_listing(html, f"{BASE}/pages/free-childrens-books")
    assert [(b.title, b.page_url, b.pdf_url) for b in page.books] == [
        ("The Way of the Woods", f"{BASE}/blogs/news/the-way-of-the-woods", None),
        ("Jimmys First Day", f"{BASE}/en-gb/blogs/news/jimmys-first-day", None),
        ("Bully Bill", None, "https://cdn.shopify.com/s/files/1/2081/8163/files/030-BULLY-BILL.pdf?v=2"),
        ("Hide and Seek", "https://www.shop.example/blogs/news/hide-and-seek", None),
    ]


@pytest.mark.parametrize("link", ["cdn", "relative", "protocol-relative"])
def test_book_page_gives_title_and_absolute_pdf_url(link):
    site = _site(books=[Book("ginger", "Ginger the Giraffe", "002-GINGER.pdf", b"", link)])
    page = parse_book_page(site.book_page(site.books[0]), f"{site.url}/blogs/news/ginger")
    assert page.title == "Ginger the Giraffe"
    expected = {
        "cdn": "http://localhost:8123/s/files/1/2081/8163/files/002-GINGER.pdf?v=1589846892",
        "relative": "http://127.0.0.1:8123/cdn/shop/files/002-GINGER.pdf?v=1589846897",
        "protocol-relative": "http://localhost:8123/s/files/1/2081/8163/files/002-GINGER.pdf",
    }[link]
    assert page.pdf_urls == [expected]


def test_book_page_prefers_the_article_pdf_and_finds_embedded_ones():
    html = """<html><head><title>Bully Bill | Monkey Pen</title></head><body>
      <header><a href="/files/catalogue.pdf">Catalogue</a></header>
      <article><div class="article__content">
        <iframe src="https://cdn.example/viewer/030-BULLY-BILL.pdf?v=9"></iframe>
      </div></article></body></html>"""
    page = parse_book_page(html, f"{BASE}/blogs/news/bully-bill")
    assert page.title == "Bully Bill"
    assert page.pdf_urls == ["https://cdn.example/viewer/030-BULLY-BILL.pdf?v=9", f"{BASE}/files/catalogue.pdf"]


def test_book_page_without_pdf_link():
    page = parse_book_page("<html><body><h1>Coming soon</h1><a href='/x.jpg'>pic</a></body></html>", f"{BASE}/blogs/news/soon")
    assert page.title == "Coming soon"
    assert page.pdf_urls == []


def test_fixture_pdfs_are_real_pdfs():
    data = book_pdf("Ginger the Giraffe")
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:]


def test_a_heading_shared_by_several_books_is_not_taken_as_a_title():
    html = """<main><section><h2>Bedtime stories</h2>
      <a href="/blogs/news/sleepy-owl">Read</a> <a href="/blogs/news/moon-song">Read</a></section></main>"""
    page = parse_listing(html, f"{BASE}/pages/free-childrens-books")
    assert [b.title for b in page.books] == ["Sleepy Owl", "Moon Song"]


def test_books_outside_the_main_element_are_still_found():
    html = """<body><main><h1>Free books</h1></main>
      <div class="grid"><div class="card"><a href="/blogs/news/sleepy-owl"><h3>The Sleepy Owl</h3></a></div></div></body>"""
    page = parse_listing(html, f"{BASE}/pages/free-childrens-books")
    assert [(b.title, b.page_url) for b in page.books] == [("The Sleepy Owl", f"{BASE}/blogs/news/sleepy-owl")]


def test_book_title_comes_from_the_article_not_the_logo():
    html = """<html><head><meta property="og:title" content="The Sleepy Owl"></head><body>
      <header><h1 class="logo">Monkey Pen</h1></header>
      <main><article><h1 class="article__title">The Sleepy Owl | Free Children's Book</h1></article></main></body></html>"""
    assert parse_book_page(html, f"{BASE}/blogs/news/sleepy-owl").title == "The Sleepy Owl"
    no_heading = "<html><head><title>Moon Song | Monkey Pen</title></head><body><p>text</p></body></html>"
    assert parse_book_page(no_heading, f"{BASE}/blogs/news/moon-song").title == "Moon Song"


def test_an_empty_listing_has_no_books_even_though_header_and_footer_link_articles():
    site = _site(books=[])
    assert parse_listing(site.listing(1), f"{site.url}/pages/free-childrens-books").books == []


# -- pages built to make parsing slow ----------------------------------------------------------


def test_thousands_of_links_in_one_block_are_looked_at_a_bounded_number_of_times(monkeypatch):
    # A "card" is climbed to find a book's heading; a block of thousands of links is no card,
    # and each link must not scan all the others (that took minutes for 4,000 links).
    calls = []
    book_url = discovery._book_url

    def counted(page_url, href):
        calls.append(href)
        assert len(calls) <= 50 * links, "quadratic in the number of links"
        return book_url(page_url, href)

    monkeypatch.setattr(discovery, "_book_url", counted)
    links = 3000
    anchors = '<a href="/blogs/news/the-book">Read</a>' * (links // 2) + "".join(
        f'<a href="/pages/info-{n}">Info {n}</a>' for n in range(links // 2)
    )
    page = parse_listing(f"<html><body><main><div>{anchors}</div></main></body></html>", LISTING)
    assert [book.page_url for book in page.books] == [f"{BASE}/blogs/news/the-book"]


def test_a_book_page_linking_thousands_of_pdfs_gives_the_first_few():
    links = "".join(f'<a href="/files/part-{n}.pdf">part {n}</a>' for n in range(5000))
    page = parse_book_page(f"<html><body><article>{links}</article></body></html>", f"{BASE}/blogs/news/x")
    assert page.pdf_urls == [f"{BASE}/files/part-{n}.pdf" for n in range(discovery.MAX_PDF_LINKS)]


def test_a_listing_linking_thousands_of_pages_gives_the_first_few():
    pager = "".join(f'<a href="?page={n}">{n}</a>' for n in range(2, 5000))
    page = parse_listing(f"<html><body><main>{pager}</main></body></html>", LISTING)
    assert page.next_pages == [f"{LISTING}?page={n}" for n in range(2, 2 + discovery.MAX_NEXT_PAGES)]
