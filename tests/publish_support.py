"""A painted book folder made without painting (pictures drawn with Pillow), and epubcheck."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from fairytale.plan import BookPlan, save_plan
from fairytale.render.manifest import Manifest, ManifestPage, save_manifest
from tests.render_support import make_plan


def fake_picture(path: Path, number: int, size: int = 96) -> Path:
    """A picture with shapes and colours (so it is neither blank nor noise)."""
    image = Image.new("RGB", (size, size), (40 * number % 255, 120, 200 - 20 * number % 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, size // 2, size // 2), fill=(240, 200, 40))
    draw.rectangle((size // 2, size // 2, size - 8, size - 8), fill=(30, 90 + number * 10 % 150, 60))
    image.save(path)
    return path


def fake_book(folder: Path, plan: BookPlan | None = None, name: str = "zoe", **settings) -> Path:
    """A book folder as `fairytale render` leaves it: plan.json, pages/, manifest.json."""
    plan = plan or make_plan(3)
    book = folder / name
    (book / "pages").mkdir(parents=True)
    save_plan(plan, book / "plan.json")
    pages = []
    for page in plan.pages:
        image = f"pages/page-{page.number:02d}.png"
        fake_picture(book / image, page.number)
        pages.append(
            ManifestPage(
                number=page.number,
                image=image,
                key=f"key{page.number}",
                prompt=page.prompt,
                negative_prompt="",
                requested_seed=page.seed,
                seed=page.seed,
                characters=list(page.characters),
                safety="passed",
                attempts=1,
                painted=True,
                seconds=0.1,
                width=96,
                height=96,
                layout="full_bleed",
                effective_dpi=11.0,
            )
        )
    manifest = Manifest(
        title=plan.title,
        author=plan.author,
        plan="plan.json",
        pdf=f"../{name}.pdf",
        backend="sd14",
        model="a test painter",
        model_fingerprint="test",
        settings={"trim": "8.5x8.5", "layout": "auto", "dpi": 150} | settings,
        device="cpu",
        fairytale_version="test",
        created="2026-01-01T00:00:00+00:00",
        cover_page=1,
        pdf_pages=len(plan.pages) + 2,
        pdf_bytes=0,
        pages=pages,
    )
    save_manifest(manifest, book)
    return book


def epubcheck_command() -> list[str] | None:
    """How to run epubcheck here: Debian installs it as an executable jar, which needs binfmt
    support to run directly, so the jar is run with java."""
    found = shutil.which("epubcheck")
    if not found:
        return None
    real = os.path.realpath(found)
    if real.endswith(".jar"):
        java = shutil.which("java")
        # C1 JIT only and the serial GC: epubcheck is a short run, and starts 2-3x faster so
        return [java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-jar", real] if java else None
    return [found]


def epubcheck(path: Path) -> str:
    """epubcheck's report on ``path``; fails the test unless it has zero errors and warnings.

    Without epubcheck the test is skipped, except on CI (``CI=true``), where it fails.
    """
    command = epubcheck_command()
    if command is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("epubcheck is not installed; .ci/run must install the Debian package epubcheck")
        pytest.skip("epubcheck is not installed (apt-get install epubcheck)")
    done = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "0 fatals / 0 errors / 0 warnings" in output, output
    return output
