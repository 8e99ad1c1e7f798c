"""Text fitting in one render build of a 32-page book, and how much of it is done twice.

    python tests/benchmarks/bench_text_fitting.py [--repeat 4]

A render lays every page out before it paints (``plan_story_layouts`` and ``check_cover_text``,
step 1 of ``fairytale.render.book``), and ``write_book_pdf`` lays them out again to draw them.
Prints, for each of the two, the calls to ``fit_text``, the time spent in it, and how many boxes
were really fitted (not answered from its cache). Each page has its own text (the benchmark
story's texts, ``--repeat`` times over, and the page number), as a real book's pages do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="each page's text this many times over (longer pages)"
    )
    parser.add_argument("--pages", type=int, default=32)
    args = parser.parse_args()

    from PIL import Image

    import fairytale.pdf.layout as layout
    import fairytale.pdf.text as text
    import fairytale.pdf.writer as writer
    from fairytale.pdf import (
        BookContents,
        BookPage,
        PdfSettings,
        check_cover_text,
        plan_story_layouts,
        write_book_pdf,
    )
    from fairytale.pdf.fonts import book_fonts
    from tests.render_support import STORY_TEXTS

    fit_text = text.fit_text
    spent = {"seconds": 0.0, "calls": 0}

    def timed(*call, **options):
        spent["calls"] += 1
        start = time.perf_counter()
        try:
            return fit_text(*call, **options)
        finally:
            spent["seconds"] += time.perf_counter() - start

    for module in (layout, writer):
        module.fit_text = timed

    def fitted() -> int | None:
        return fit_text.cache_info().misses if hasattr(fit_text, "cache_info") else None

    book_fonts()  # registering the font is not text fitting
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        picture = work / "p.png"
        Image.new("RGB", (512, 512), (200, 180, 160)).save(picture)
        pages = [
            BookPage(
                n, " ".join([STORY_TEXTS[(n - 1) % len(STORY_TEXTS)]] * args.repeat) + f" ({n})", picture
            )
            for n in range(1, args.pages + 1)
        ]
        contents = BookContents("The Lighthouse", "A. Benchmark", pages, picture)
        settings = PdfSettings(bleed=True)

        def report(what: str, before: int | None) -> None:
            after = fitted()
            really = "" if before is None else f", {after - before} boxes fitted"
            print(f"  {what}: fit_text {spent['calls']} calls, {spent['seconds'] * 1000:.1f} ms{really}")
            spent.update(seconds=0.0, calls=0)

        print(f"{args.pages} pages of about {len(pages[0].text.split())} words")
        before = fitted()
        plan_story_layouts([(p.number, p.text, p.layout) for p in pages], settings, 1.0)
        check_cover_text(contents.title, contents.author, settings)
        report("render's check before painting", before)
        before = fitted()
        write_book_pdf(contents, work / "book.pdf", settings, picture_cache=work / "print")
        report("write_book_pdf                ", before)


if __name__ == "__main__":
    main()
