"""The preflight report of a print-on-demand book: what the service will check, checked first.

Per page the effective DPI of its picture, the fonts (embedded or not, read back from the PDF),
text inside the safe area, the page count and the spine width. An *error* is what the service
would reject; a *warning* what it would accept reluctantly (or print badly). The report is
printed and saved in the book folder (``preflight-kdp.txt``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fairytale.files import atomic_write_text
from fairytale.pdf.layout import INCH, MARGIN_IN
from fairytale.pdf.writer import PdfReport, PlacedText
from fairytale.publish.cover import CoverReport
from fairytale.publish.presets import PrintPreset
from fairytale.reading_direction import Binding

Level = Literal["ok", "warning", "error"]
LOW_DPI_SHARE = 0.8  # below 80 % of the print DPI a picture looks soft


@dataclass(frozen=True)
class PreflightItem:
    level: Level
    check: str
    detail: str


@dataclass
class PreflightReport:
    """The checks of one book for one service."""

    preset: str
    items: list[PreflightItem] = field(default_factory=list)

    @property
    def errors(self) -> list[PreflightItem]:
        return [item for item in self.items if item.level == "error"]

    @property
    def warnings(self) -> list[PreflightItem]:
        return [item for item in self.items if item.level == "warning"]

    def text(self) -> str:
        """The report as plain text, one check a line."""
        marks = {"ok": "ok     ", "warning": "WARNING", "error": "ERROR  "}
        lines = [f"Preflight for {self.preset}: {len(self.errors)} errors, {len(self.warnings)} warnings"]
        lines += [f"{marks[item.level]} {item.check}: {item.detail}" for item in self.items]
        return "\n".join(lines) + "\n"

    def save(self, path: Path) -> Path:
        atomic_write_text(Path(path), self.text())
        return Path(path)


def embedded_fonts(pdf: Path) -> dict[str, bool]:
    """Every font the PDF's text uses, read back with pdfium: name -> embedded?"""
    import ctypes

    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    found: dict[str, bool] = {}
    document = pdfium.PdfDocument(str(pdf))
    try:
        for page in document:
            for obj in page.get_objects(filter=[raw.FPDF_PAGEOBJ_TEXT]):
                font = raw.FPDFTextObj_GetFont(obj.raw)
                size = raw.FPDFFont_GetBaseFontName(font, None, 0)
                buffer = ctypes.create_string_buffer(size)
                raw.FPDFFont_GetBaseFontName(font, buffer, size)
                name = buffer.value.decode("utf-8", "replace")
                found[name] = bool(raw.FPDFFont_GetIsEmbedded(font))
    finally:
        document.close()
    return found


def _inside(text: PlacedText, tolerance: float = 0.01) -> bool:
    box, safe = text.box, text.safe
    return (
        box.x >= safe.x - tolerance
        and box.y >= safe.y - tolerance
        and box.right <= safe.right + tolerance
        and box.top <= safe.top + tolerance
    )


def run_preflight(
    preset: PrintPreset,
    interior: PdfReport,
    cover: CoverReport,
    *,
    dpi: int,
    upscaled: bool,
    sheet_in: tuple[float, float],
    binding: Binding = "left",
    last_page_first: bool = False,
) -> PreflightReport:
    """Check an interior PDF and its cover against ``preset``'s rules (``binding``: the edge the
    book is bound on, "right" for a right-to-left book; ``last_page_first``: its interior is in
    reverse page order, as the service asks for such books)."""
    report = PreflightReport(preset.label)
    add = report.items.append
    spec = cover.spec

    pages = interior.page_count
    if pages < preset.min_pages:
        add(
            PreflightItem(
                "error", "page count", f"{pages} pages; {preset.label} needs at least {preset.min_pages}"
            )
        )
    elif pages > preset.max_pages:
        add(
            PreflightItem(
                "error", "page count", f"{pages} pages; {preset.label} prints at most {preset.max_pages}"
            )
        )
    elif pages % 2:
        add(PreflightItem("error", "page count", f"{pages} pages; the count must be even"))
    else:
        padding = f", {interior.closing_pages} closing pages" if interior.closing_pages else ""
        add(PreflightItem("ok", "page count", f"{pages} pages (minimum {preset.min_pages}){padding}"))
    width, height = sheet_in
    add(
        PreflightItem(
            "ok",
            "interior size",
            f"{spec.trim_name} trim; sheet {width:.3f} x {height:.3f} in (bleed on top, bottom and outside); "
            f"bound on the {binding}{' (right to left: choose reverse binding when you upload)' if binding == 'right' else ''}"
            f"{'; pages in reverse order, the last page first, as the printer asks for reverse-bound books' if last_page_first else ''}",
        )
    )
    inside = max(MARGIN_IN, preset.gutter_in(pages))
    add(
        PreflightItem(
            "ok",
            "gutter",
            f"{inside:.3f} in inside margin ({preset.label} needs {preset.gutter_in(pages):.3f} in for {pages} pages)",
        )
    )

    fonts = embedded_fonts(interior.path) | embedded_fonts(cover.path)
    missing = sorted(name for name, embedded in fonts.items() if not embedded)
    if missing:
        add(PreflightItem("error", "fonts", f"not embedded: {', '.join(missing)}"))
    else:
        add(PreflightItem("ok", "fonts", f"all embedded: {', '.join(sorted(fonts)) or 'none'}"))

    outside = [t for t in interior.texts + cover.texts if not _inside(t)]
    for text in outside:
        add(
            PreflightItem(
                "error",
                "safe area",
                f"{text.what} (PDF page {text.page_index + 1}) reaches outside the safe area",
            )
        )
    if not outside:
        add(
            PreflightItem(
                "ok",
                "safe area",
                f"{len(interior.texts) + len(cover.texts)} text blocks inside the safe area",
            )
        )

    low = LOW_DPI_SHARE * dpi
    hint = "" if upscaled else "; --print upscales the pictures x4"
    for number, value in sorted(interior.effective_dpi.items()):
        if number == 0:
            continue
        level: Level = "warning" if value < low else "ok"
        add(
            PreflightItem(
                level,
                f"page {number} picture",
                f"{value:.0f} DPI of real detail (placed at {dpi}){hint if level != 'ok' else ''}",
            )
        )
    cover_level: Level = "warning" if cover.effective_dpi < low else "ok"
    add(
        PreflightItem(
            cover_level,
            "cover picture",
            f"{cover.effective_dpi:.0f} DPI of real detail{hint if cover_level != 'ok' else ''}",
        )
    )

    add(PreflightItem("ok", "cover", spec.describe()))
    spine_note = "spine text printed" if spec.spine_text else "spine left plain"
    if preset.spine_text_over_pages is not None and not spec.spine_text:
        spine_note += f" ({preset.label} allows spine text above {preset.spine_text_over_pages} pages)"
    add(PreflightItem("ok", "spine", spine_note))
    barcode = cover.barcode
    add(
        PreflightItem(
            "ok",
            "barcode area",
            f"{barcode.width / INCH:.1f} x {barcode.height / INCH:.1f} in at the back cover's lower "
            f"{'right' if spec.binding == 'left' else 'left'}, beside the spine, left clear",
        )
    )
    for warning in cover.warnings:
        add(PreflightItem("warning", "cover", warning))
    return report
