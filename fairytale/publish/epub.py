"""The fixed-layout EPUB 3 of a picture book, accessible, written with the standard library.

Every page of the printed book is one XHTML document with its own viewport (``rendition:layout``
pre-paginated), laid out by the same engine as the PDF (:mod:`fairytale.pdf.layout`), so an
e-reader shows the pages as they print. The story text is live text in the book's embedded font
over or under the picture, never baked into it: it can be read aloud, searched and enlarged.
Every picture has alt text (:mod:`fairytale.publish.alt_text`); the package carries the
accessibility metadata of EPUB Accessibility 1.1 (access modes, features, hazards, summary).

Pages pair into spreads: the cover stands alone on the right, then the title page on the
left faces story page 1 on the right, and so on.

The file is a ZIP written with :mod:`zipfile` (``mimetype`` first and stored, as the format
requires) and the XML with :mod:`xml.etree.ElementTree`. No EPUB library is used: the one in
wide use (ebooklib) is AGPL-licensed, which this MIT project cannot take.
"""

from __future__ import annotations

import datetime as _dt
import io
import re
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fairytale import __version__
from fairytale.book_words import BookWords, book_words, words_language
from fairytale.errors import FairytaleError
from fairytale.files import atomic_path
from fairytale.pdf.fonts import book_fonts, printable
from fairytale.pdf.images import _crop_box
from fairytale.pdf.layout import LayoutChoice, PageGeometry, Rect
from fairytale.pdf.text import LEADING, PARAGRAPH_GAP, fit_text
from fairytale.pdf.writer import BAND_ALPHA, INK, PdfSettings, cover_layout, plan_story_layouts
from fairytale.reading_direction import is_right_to_left

XHTML = "http://www.w3.org/1999/xhtml"
EPUB_NS = "http://www.idpf.org/2007/ops"
OPF = "http://www.idpf.org/2007/opf"
DC = "http://purl.org/dc/elements/1.1/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
PX_PER_PT = 96 / 72  # CSS pixels are 1/96 in, PDF points 1/72 in
MAX_PICTURE_PX = 2048  # longest side of a picture in the EPUB (readers gain nothing from more)
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
CONFORMS_TO = "EPUB Accessibility 1.1 - WCAG 2.1 Level AA"
ACCESSIBILITY_SUMMARY = (
    "A fixed-layout picture book. The story text is real text, not part of the pictures, so it can "
    "be read aloud and searched; every picture has a text description; the pages follow the "
    "reading order and are listed in the table of contents. The pictures flash or move in no way."
)

ET.register_namespace("", XHTML)
ET.register_namespace("epub", EPUB_NS)


@dataclass(frozen=True)
class EpubPage:
    """One story page: its text, its picture and the picture's description."""

    number: int
    text: str
    picture: Path
    alt: str
    layout: LayoutChoice | None = None


@dataclass(frozen=True)
class EpubBook:
    """What goes into the EPUB."""

    title: str
    author: str | None
    language: str
    pages: Sequence[EpubPage]
    cover_picture: Path
    cover_alt: str
    credit: str | None = None
    trim: str = "8.5x8.5"
    layout: LayoutChoice = "auto"
    identifier: str | None = None  # the plan's book_id; None: derived from title, author and text


@dataclass
class EpubReport:
    """What was written."""

    path: Path
    documents: int  # XHTML pages (cover, title page, story pages)
    bytes: int
    alt_texts: dict[int, str] = field(default_factory=dict)  # by story page; 0 is the cover
    warnings: list[str] = field(default_factory=list)


def _px(value: float) -> str:
    return f"{value * PX_PER_PT:.1f}px"


def _place(rect: Rect, sheet: Rect) -> str:
    """CSS for a rectangle in PDF coordinates (origin bottom left) on a page of ``sheet``."""
    top = sheet.top - rect.top
    return f"left:{_px(rect.x)};top:{_px(top)};width:{_px(rect.width)};height:{_px(rect.height)}"


def _language_attributes(language: str) -> dict[str, str]:
    """The root element's language, and its direction when the language reads right to left
    (a browser takes its base direction from ``dir``, never from the language)."""
    attrs = {XML_LANG: language, "lang": language}
    return attrs | {"dir": "rtl"} if is_right_to_left(language) else attrs


def _document(title: str, language: str, size: tuple[int, int], page_type: str | None = None):
    html = ET.Element(f"{{{XHTML}}}html", _language_attributes(language))
    head = ET.SubElement(html, f"{{{XHTML}}}head")
    ET.SubElement(head, f"{{{XHTML}}}meta", {"charset": "utf-8"})
    ET.SubElement(head, f"{{{XHTML}}}title").text = title
    ET.SubElement(
        head, f"{{{XHTML}}}meta", {"name": "viewport", "content": f"width={size[0]}, height={size[1]}"}
    )
    ET.SubElement(head, f"{{{XHTML}}}link", {"rel": "stylesheet", "type": "text/css", "href": "css/book.css"})
    body_attrs = {f"{{{EPUB_NS}}}type": page_type} if page_type else {}
    body = ET.SubElement(html, f"{{{XHTML}}}body", body_attrs)
    return html, body


#: Characters XML 1.0 forbids anywhere (C0 controls but tab, newline and return; lone surrogates;
#: U+FFFE/FFFF): a story or a plan edit may hold one, and epubcheck rejects the book for it.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _serialise(html: ET.Element) -> bytes:
    text = _NOT_XML.sub("", ET.tostring(html, encoding="unicode"))
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n{text}\n'.encode()


def _paragraphs(parent: ET.Element, text: str, tag: str = "p", cls: str | None = None) -> None:
    # dir="auto": each paragraph takes the direction of its first letter, as the PDF's do
    for paragraph in [p.strip() for p in text.splitlines() if p.strip()] or [text.strip()]:
        attrs = {"dir": "auto"} | ({"class": cls} if cls else {})
        element = ET.SubElement(parent, f"{{{XHTML}}}{tag}", attrs)
        element.text = " ".join(paragraph.split())


def _text_box(body: ET.Element, rect: Rect, sheet: Rect, size: float, cls: str = "text") -> ET.Element:
    style = f"{_place(rect, sheet)};font-size:{_px(size)}"
    return ET.SubElement(body, f"{{{XHTML}}}div", {"class": cls, "style": style})


def _picture_file(source: Path, aspect: float | None, quality: int = 88) -> bytes:
    """The picture as JPEG, cropped to ``aspect`` (width/height) when given, at most
    :data:`MAX_PICTURE_PX` on its longest side."""
    from PIL import Image

    from fairytale.images import open_rgb

    # The book folder is the user's: a page picture may be anything (a bomb, a text file).
    picture = open_rgb(source, what="page picture")
    if aspect:
        picture = picture.crop(_crop_box(picture.width, picture.height, aspect))
    if max(picture.size) > MAX_PICTURE_PX:
        picture.thumbnail((MAX_PICTURE_PX, MAX_PICTURE_PX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _css(size: tuple[int, int], font_files: list[tuple[str, str]]) -> bytes:
    faces = "".join(
        f'@font-face {{ font-family: "Book"; font-weight: {weight}; src: url("../fonts/{name}"); }}\n'
        for name, weight in font_files
    )
    ink = "#" + "".join(f"{round(c * 255):02x}" for c in INK)
    return (
        f"{faces}"
        "html, body { margin: 0; padding: 0; }\n"
        f"body {{ position: relative; width: {size[0]}px; height: {size[1]}px; overflow: hidden; "
        f'background: #ffffff; color: {ink}; font-family: "Book", sans-serif; }}\n'
        ".picture { position: absolute; display: block; margin: 0; }\n"
        f".band {{ position: absolute; background: rgba(255, 255, 255, {BAND_ALPHA}); }}\n"
        f".text, .heading {{ position: absolute; margin: 0; text-align: center; line-height: {LEADING}; "
        "display: flex; flex-direction: column; justify-content: center; }\n"
        ".heading { justify-content: flex-start; }\n"
        ".text p, .heading p, h1 { margin: 0; font-size: 1em; }\n"
        f".text p + p {{ margin-top: {PARAGRAPH_GAP * LEADING}em; }}\n"
        "h1, .bold { font-weight: bold; }\n"
    ).encode()


def _identifier(book: EpubBook) -> str:
    """The book's ``dc:identifier``, which e-readers tell books apart by. Without the plan's
    identifier, one derived from the title, the author and the text, so that another story of
    the same title and author is another book (but then a corrected typo makes a new one)."""
    if book.identifier:
        return book.identifier
    name = "\x00".join(["fairytale-epub", book.title, book.author or "", *(page.text for page in book.pages)])
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def write_epub(book: EpubBook, path: Path, *, modified: _dt.datetime | None = None) -> EpubReport:
    """Write ``book`` as a fixed-layout EPUB 3 to ``path`` (atomically) and report it.

    Raises :class:`FairytaleError` (or :class:`~fairytale.errors.PlanError`) for a page whose
    text cannot fit or a picture that cannot be read; nothing is written then.
    """
    if not book.pages:
        raise FairytaleError("A book needs at least one page")
    fonts = book_fonts()
    warnings: list[str] = []
    settings = PdfSettings(trim=book.trim, bleed=False, layout=book.layout)
    geometry: PageGeometry = settings.geometry()
    sheet = geometry.media
    size = (round(sheet.width * PX_PER_PT), round(sheet.height * PX_PER_PT))
    language = book.language or "en"
    if not LANGUAGE_TAG.match(language):
        raise FairytaleError(
            f"The plan's language '{language}' is not a language tag (BCP 47) such as 'en', 'de' or 'pt-BR'; fix it in the plan"
        )
    words = book_words(language)  # the words the book adds ("by …", the contents' labels)

    def drawable(text: str) -> str:
        return printable(text, fonts)[0]

    files: dict[str, bytes] = {}  # path inside OEBPS -> content
    manifest: list[tuple[str, str, str, str | None]] = []  # id, href, media type, properties
    spine: list[tuple[str, str | None]] = []  # idref, properties

    font_files = []
    for file, weight in zip(fonts.files, ("normal", "bold"), strict=True):
        font_files.append((file.name, weight))
        files[f"fonts/{file.name}"] = Path(file).read_bytes()
        manifest.append((f"font-{weight}", f"fonts/{file.name}", "font/ttf", None))
    files["css/book.css"] = _css(size, font_files)
    manifest.append(("css", "css/book.css", "text/css", None))

    # cover: the picture over the whole page, the title and author as live text on a band
    title, author = drawable(book.title), drawable(book.author) if book.author else None
    band, (title_block, title_box), (author_block, author_box) = cover_layout(title, author, fonts, geometry)
    files["images/cover.jpg"] = _picture_file(Path(book.cover_picture), sheet.width / sheet.height)
    manifest.append(("cover-image", "images/cover.jpg", "image/jpeg", "cover-image"))
    html, body = _document(book.title, language, size, "cover")
    ET.SubElement(
        body,
        f"{{{XHTML}}}img",
        {"class": "picture", "src": "images/cover.jpg", "alt": book.cover_alt, "style": _place(sheet, sheet)},
    )
    ET.SubElement(body, f"{{{XHTML}}}div", {"class": "band", "style": _place(band, sheet)})
    heading = _text_box(body, title_box, sheet, title_block.size, "heading")
    ET.SubElement(heading, f"{{{XHTML}}}h1", {"dir": "auto"}).text = book.title
    if author_block and author_box and book.author:
        _paragraphs(_text_box(body, author_box, sheet, author_block.size, "heading"), book.author)
    files["cover.xhtml"] = _serialise(html)
    manifest.append(("cover", "cover.xhtml", "application/xhtml+xml", None))
    # The first page of a book is a recto: on the right in a left-to-right book, on the left
    # in a right-to-left one.
    recto, verso = (
        ("page-spread-left", "page-spread-right")
        if is_right_to_left(language)
        else ("page-spread-right", "page-spread-left")
    )
    spine.append(("cover", recto))

    # title page: the same boxes and font sizes as the PDF's
    safe = geometry.safe

    def fitted(text: str, font: str, box: Rect, largest: float, smallest: float) -> float:
        block = fit_text(drawable(text), font, box.width, box.height, largest, smallest)
        return block.size if block else smallest

    html, body = _document(book.title, language, size, "titlepage")
    box = Rect(safe.x, safe.y + safe.height * 0.45, safe.width, safe.height * 0.45)
    heading = _text_box(body, box, sheet, fitted(book.title, fonts.bold, box, 36.0, 6.0))
    ET.SubElement(heading, f"{{{XHTML}}}h1", {"dir": "auto"}).text = book.title
    if book.author:
        box = Rect(safe.x, safe.y + safe.height * 0.25, safe.width, safe.height * 0.18)
        by = words.by(book.author)
        _paragraphs(_text_box(body, box, sheet, fitted(by, fonts.regular, box, 18.0, 10.0)), by)
    if book.credit:
        box = Rect(safe.x, safe.y, safe.width, safe.height * 0.12)
        _paragraphs(
            _text_box(body, box, sheet, fitted(book.credit, fonts.regular, box, 9.0, 6.0)), book.credit
        )
    files["title.xhtml"] = _serialise(html)
    manifest.append(("title", "title.xhtml", "application/xhtml+xml", None))
    spine.append(("title", verso))

    # story pages, laid out as the PDF lays them out
    alt_texts = {0: book.cover_alt}
    for page in book.pages:
        if not page.alt.strip():
            raise FairytaleError(f"page {page.number} has no alt text for its picture")
        aspect = _picture_aspect(page.picture)
        layouts, page_warnings = plan_story_layouts([(page.number, page.text, page.layout)], settings, aspect)
        warnings.extend(page_warnings)
        layout = layouts[page.number]
        box = layout.picture.rect
        name = f"page-{page.number:02d}"
        files[f"images/{name}.jpg"] = _picture_file(
            page.picture, box.width / box.height if layout.picture.crop else None
        )
        manifest.append((f"img-{name}", f"images/{name}.jpg", "image/jpeg", None))
        html, body = _document(
            f"{book.title}, {words.page_label(page.number)}", language, size, "bodymatter" if page.number == 1 else None
        )
        ET.SubElement(
            body,
            f"{{{XHTML}}}span",
            {
                "id": f"p{page.number}",
                f"{{{EPUB_NS}}}type": "pagebreak",
                "role": "doc-pagebreak",
                "aria-label": str(page.number),
            },
        )
        ET.SubElement(
            body,
            f"{{{XHTML}}}img",
            {"class": "picture", "src": f"images/{name}.jpg", "alt": page.alt, "style": _place(box, sheet)},
        )
        if layout.band:
            ET.SubElement(body, f"{{{XHTML}}}div", {"class": "band", "style": _place(layout.band, sheet)})
        _paragraphs(_text_box(body, layout.text_box, sheet, layout.text.size), page.text)
        files[f"{name}.xhtml"] = _serialise(html)
        manifest.append((name, f"{name}.xhtml", "application/xhtml+xml", None))
        spine.append((name, recto if page.number % 2 else verso))
        alt_texts[page.number] = page.alt

    files["nav.xhtml"] = _nav(book, language, words)
    manifest.append(("nav", "nav.xhtml", "application/xhtml+xml", "nav"))
    files["package.opf"] = _package(book, language, manifest, spine, modified)

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with zipfile.ZipFile(tmp, "w") as archive:
                # the mimetype entry first and uncompressed, so the file is recognised by its bytes
                archive.writestr(_entry("mimetype"), "application/epub+zip", compress_type=zipfile.ZIP_STORED)
                archive.writestr(
                    _entry("META-INF/container.xml"), _CONTAINER, compress_type=zipfile.ZIP_DEFLATED
                )
                for name, data in files.items():
                    archive.writestr(_entry(f"OEBPS/{name}"), data, compress_type=zipfile.ZIP_DEFLATED)
        except OSError as exc:
            raise FairytaleError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    return EpubReport(path, len(spine), path.stat().st_size, alt_texts, warnings)


def _entry(name: str) -> zipfile.ZipInfo:
    # A fixed timestamp: the same book makes the same archive entries.
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def _picture_aspect(path: Path) -> float:
    from fairytale.images import picture_size

    width, height = picture_size(path, what="page picture")
    return width / height


_CONTAINER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">\n'
    "  <rootfiles>\n"
    '    <rootfile full-path="OEBPS/package.opf" media-type="application/oebps-package+xml"/>\n'
    "  </rootfiles>\n"
    "</container>\n"
)


def _nav(book: EpubBook, language: str, words: BookWords) -> bytes:
    html = ET.Element(f"{{{XHTML}}}html", _language_attributes(language))
    head = ET.SubElement(html, f"{{{XHTML}}}head")
    ET.SubElement(head, f"{{{XHTML}}}meta", {"charset": "utf-8"})
    ET.SubElement(head, f"{{{XHTML}}}title").text = book.title
    body = ET.SubElement(html, f"{{{XHTML}}}body")

    def nav_list(kind: str, heading: str, entries: list[tuple[str, str, str | None]], hidden: bool = False):
        attrs = {f"{{{EPUB_NS}}}type": kind, "id": kind}
        if hidden:
            attrs["hidden"] = "hidden"
        nav = ET.SubElement(body, f"{{{XHTML}}}nav", attrs)
        ET.SubElement(nav, f"{{{XHTML}}}h2").text = heading
        ol = ET.SubElement(nav, f"{{{XHTML}}}ol")
        for href, label, entry_type in entries:
            link_attrs = {"href": href} | ({f"{{{EPUB_NS}}}type": entry_type} if entry_type else {})
            ET.SubElement(ET.SubElement(ol, f"{{{XHTML}}}li"), f"{{{XHTML}}}a", link_attrs).text = label

    story = [(f"page-{p.number:02d}.xhtml", words.page_label(p.number), None) for p in book.pages]
    nav_list(
        "toc",
        words.contents,
        [("cover.xhtml", words.cover, None), ("title.xhtml", words.title_page, None), *story],
    )
    nav_list(
        "page-list",
        words.pages,
        [(f"page-{p.number:02d}.xhtml#p{p.number}", str(p.number), None) for p in book.pages],
        hidden=True,
    )
    nav_list(
        "landmarks",
        words.landmarks,
        [
            ("cover.xhtml", words.cover, "cover"),
            ("title.xhtml", words.title_page, "titlepage"),
            ("page-01.xhtml", words.story_start, "bodymatter"),
        ],
        hidden=True,
    )
    return _serialise(html)


def _package(
    book: EpubBook,
    language: str,
    manifest: list[tuple[str, str, str, str | None]],
    spine: list[tuple[str, str | None]],
    modified: _dt.datetime | None,
) -> bytes:
    ET.register_namespace("", OPF)
    ET.register_namespace("dc", DC)
    package = ET.Element(
        f"{{{OPF}}}package", {"version": "3.0", "unique-identifier": "book-id", XML_LANG: language}
    )
    metadata = ET.SubElement(package, f"{{{OPF}}}metadata")

    def dc(name: str, text: str, **attrs: str) -> None:
        ET.SubElement(metadata, f"{{{DC}}}{name}", attrs).text = text

    def meta(prop: str, text: str, **attrs: str) -> None:
        ET.SubElement(metadata, f"{{{OPF}}}meta", {"property": prop, **attrs}).text = text

    dc("identifier", _identifier(book), id="book-id")
    dc("title", book.title)
    if book.author:
        dc("creator", book.author)
    dc("language", language)
    stamp = (modified or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    meta("dcterms:modified", stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))
    for prop, value in (
        ("rendition:layout", "pre-paginated"),
        ("rendition:orientation", "auto"),
        ("rendition:spread", "landscape"),
        ("schema:accessMode", "textual"),
        ("schema:accessMode", "visual"),
        ("schema:accessModeSufficient", "textual,visual"),
        ("schema:accessModeSufficient", "textual"),
        ("schema:accessibilityFeature", "alternativeText"),
        ("schema:accessibilityFeature", "readingOrder"),
        ("schema:accessibilityFeature", "tableOfContents"),
        ("schema:accessibilityFeature", "pageNavigation"),
        ("schema:accessibilityHazard", "none"),
        ("dcterms:conformsTo", CONFORMS_TO),
        ("a11y:certifiedBy", f"fAIrytale {__version__} (self-declared)"),
    ):
        meta(prop, value)
    # The summary is written in English only: said so, for a book in another language, so a
    # reading system reads it out with an English voice.
    summary_lang = {} if words_language(language) == "en" else {XML_LANG: "en"}
    meta("schema:accessibilitySummary", ACCESSIBILITY_SUMMARY, **summary_lang)
    items = ET.SubElement(package, f"{{{OPF}}}manifest")
    for item_id, href, media_type, properties in manifest:
        attrs = {"id": item_id, "href": href, "media-type": media_type}
        if properties:
            attrs["properties"] = properties
        ET.SubElement(items, f"{{{OPF}}}item", attrs)
    direction = "rtl" if is_right_to_left(language) else "ltr"
    order = ET.SubElement(package, f"{{{OPF}}}spine", {"page-progression-direction": direction})
    for idref, properties in spine:
        attrs = {"idref": idref}
        if properties:
            attrs["properties"] = properties
        ET.SubElement(order, f"{{{OPF}}}itemref", attrs)
    text = _NOT_XML.sub("", ET.tostring(package, encoding="unicode"))
    ET.register_namespace("", XHTML)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{text}\n'.encode()
