"""Helpers shared by the render and PDF tests: small plans, and reading PDFs back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fairytale.plan import BookPlan, Character, Page, save_plan
from fairytale.render import RenderSettings

STORY_TEXTS = [
    "Zoë lived in a little café by the sea. Her father baked croissants and crème brûlée.",
    "At the end of the rocky beach stood a white lighthouse with a red door.",
    "“The lighthouse lamp is out!” cried Zoë. She put on her blue boots and ran.",
    "The red door creaked open. Zoë climbed the winding stairs, one hundred and twelve of them.",
    "She found the old lamp, wiped away the dust, and turned the brass handle. Click!",
    "The fishing boat turned toward the light and came safely home.",
]


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Run the tiny models on one thread (import this fixture into a test module to use it).

    They gain nothing from a second thread, and on a shared 2-core box a second OpenMP thread
    that waits at every barrier for a busy core makes each of the UNet's ~300 ops wait for a
    scheduler time slice: a 0.02 s call takes 2 s.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_plan(pages: int = 3, **overrides) -> BookPlan:
    """A plan of ``pages`` pages with distinct prompts and seeds (texts cycle through a story)."""
    fields = dict(
        title="Zoë and the Lighthouse",
        author="Ann Example",
        seed=7,
        characters=[
            Character(id="zoe", name="Zoë", kind="girl", main=True),
            Character(id="dad", name="Father", kind="man"),
        ],
        pages=[
            Page(
                number=i + 1,
                text=STORY_TEXTS[i % len(STORY_TEXTS)],
                characters=["zoe"] if i % 2 == 0 else ["dad"],
                prompt=f"a girl and a lighthouse by the sea, picture {i + 1}",
                seed=1000 + i,
            )
            for i in range(pages)
        ],
    )
    fields.update(overrides)
    return BookPlan(**fields)


def two_character_plan(pages: int = 4):
    """Zoë on odd pages, her father on even ones, both on the last page; both are main."""
    plan = make_plan(pages)
    plan.character("dad").main = True
    plan.pages[-1].characters = ["zoe", "dad"]
    return plan


def write_plan(folder: Path, plan: BookPlan | None = None, name: str = "plan.json") -> Path:
    path = Path(folder) / name
    save_plan(plan or make_plan(), path)
    return path


def tiny_settings(model: Path, **changes) -> RenderSettings:
    """Settings for the tiny SD model: few steps, no waiting, and ``seed`` consistency (tests
    about other things neither paint portraits nor need IP-Adapter; pass ``consistency=None``
    for the backend's default)."""
    values = dict(model=str(model), steps=3, batch_size=4, device="cpu", consistency="seed")
    values.update(changes)
    return RenderSettings(**values)


def pdf_page_texts(path: Path) -> list[str]:
    """The text of each page, as a PDF reader extracts it."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(path))
    try:
        return [page.get_textpage().get_text_range() for page in document]
    finally:
        document.close()


def words_of(text: str) -> list[str]:
    return text.split()


def squash(text: str) -> str:
    """Whitespace (line breaks included) collapsed to single spaces."""
    return re.sub(r"\s+", " ", text).strip()


def pdf_fonts(path: Path) -> list[tuple[str, str, bool]]:
    """Every font the PDF uses: (name, subtype, embedded?)."""
    from pypdf import PdfReader

    found = {}
    for page in PdfReader(str(path)).pages:
        resources = page.get("/Resources") or {}
        fonts = resources.get("/Font") or {}
        for font in fonts.values():
            font = font.get_object()
            name = str(font.get("/BaseFont"))
            descriptors = []
            if "/FontDescriptor" in font:
                descriptors.append(font["/FontDescriptor"].get_object())
            for descendant in font.get("/DescendantFonts") or []:
                descendant = descendant.get_object()
                if "/FontDescriptor" in descendant:
                    descriptors.append(descendant["/FontDescriptor"].get_object())
            embedded = any(any(k in d for k in ("/FontFile", "/FontFile2", "/FontFile3")) for d in descriptors)
            found[name] = (name, str(font.get("/Subtype")), embedded)
    return list(found.values())


def pdf_pictures(path: Path) -> list[list[dict]]:
    """Per page, each placed picture: pixel size, placed size in inches, DPI, pixel spread."""
    import numpy as np
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(path))
    pages = []
    try:
        for page in document:
            found = []
            for obj in page.get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE]):
                width, height = obj.get_px_size()
                left, bottom, right, top = obj.get_bounds()
                pixels = np.asarray(obj.get_bitmap().to_pil().convert("L"), dtype=np.float32)
                found.append(
                    {
                        "px": (width, height),
                        "inches": ((right - left) / 72, (top - bottom) / 72),
                        "dpi": (width / ((right - left) / 72), height / ((top - bottom) / 72)),
                        "std": float(pixels.std()),
                    }
                )
            pages.append(found)
    finally:
        document.close()
    return pages


def pdf_char_boxes(path: Path, page_index: int) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Every character drawn on a page with its box (left, bottom, right, top) in points."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(path))
    try:
        textpage = document[page_index].get_textpage()
        boxes = []
        for i in range(textpage.count_chars()):
            char = textpage.get_text_range(i, 1)
            if char.strip():
                boxes.append((char, textpage.get_charbox(i)))
        return boxes
    finally:
        document.close()


def pixels(result, number: int):
    """Page ``number``'s picture in a render result, as an array."""
    import numpy as np
    from PIL import Image

    page = next(p for p in result.pages if p.number == number)
    return np.asarray(Image.open(result.book_dir / page.image))


def check_a_new_portrait_repaints_only_its_pages(
    plan_path: Path, settings: RenderSettings, before, tmp_path: Path
) -> None:
    """In a copy of a book made from ``two_character_plan(4)`` (Zoë on pages 1 and 3, her
    father on 2 and 4), the father's portrait replaced by the user's own picture (no seed, no
    prompt): his pages are painted again and change, Zoë's alone are reused unchanged."""
    import shutil

    import numpy as np
    from PIL import Image

    from fairytale.plan import Reference, load_plan
    from fairytale.render import render_book

    folder = tmp_path / "copy"
    shutil.copytree(plan_path.parent, folder)
    copied = folder / plan_path.name
    plan = load_plan(copied)
    Image.fromarray(np.full((64, 64, 3), (200, 40, 40), dtype=np.uint8)).save(folder / "my-dad.png")
    plan.character("dad").reference = Reference(image="my-dad.png")
    save_plan(plan, copied)
    after = render_book(copied, folder / "book.pdf", settings, progress=False)
    assert after.painted == [2, 4]  # dad's pages; Zoë's alone are reused
    for number in (1, 3):
        assert np.array_equal(pixels(after, number), pixels(before, number))
    for number in (2, 4):
        assert not np.array_equal(pixels(after, number), pixels(before, number))
