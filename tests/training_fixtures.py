"""Fixture pictures and datasets for the trainer's tests, drawn with PIL (nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

# A made-up character: a round orange creature with one dark eye patch, on a cream page.
BACKGROUND = (250, 248, 235)
BODY = (235, 140, 40)


def draw_character(path: Path, index: int, size: tuple[int, int] = (80, 72), mode: str = "RGB") -> Path:
    """One picture of the creature, shifted a little per ``index``; RGBA pictures get a clear background."""
    from PIL import Image, ImageDraw

    background = (0, 0, 0, 0) if mode == "RGBA" else BACKGROUND
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    width, height = size
    left = width * (0.1 + 0.06 * (index % 5))
    draw.ellipse((left, height * 0.2, left + width * 0.5, height * 0.85), fill=BODY, outline=(60, 30, 10))
    draw.ellipse((left + width * 0.28, height * 0.3, left + width * 0.38, height * 0.42), fill=(20, 20, 20))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def character_folder(folder: Path, count: int = 4) -> Path:
    """A plain folder of ``count`` pictures of the creature (plus a stray non-picture file)."""
    for index in range(count):
        draw_character(folder / f"creature_{index}.png", index)
    (folder / "notes.txt").write_text("not a picture\n")
    return folder


def imagefolder_dataset(folder: Path, splits: bool = True, pages: int = 4) -> Path:
    """The scraper's ``imagefolder`` layout: ``train/`` and ``validation/`` with ``metadata.jsonl``."""
    from PIL import Image, ImageDraw

    roots = {"train": folder / "train", "validation": folder / "validation"} if splits else {"train": folder}
    for split, root in roots.items():
        root.mkdir(parents=True, exist_ok=True)
        rows = []
        count = pages if split == "train" else 1
        for page in range(1, count + 1):
            name = f"book_a_p{page:02d}.png"
            image = Image.new("RGB", (120, 84), (240, 236, 220))  # a landscape page
            draw = ImageDraw.Draw(image)
            draw.rectangle((10 + page * 4, 40, 60 + page * 4, 78), fill=(90, 160, 80))
            draw.ellipse((70, 8, 100, 38), fill=(250, 210, 60))
            image.save(root / name)
            rows.append(
                {
                    "file_name": name,
                    "caption": f"a green hill under the sun, page {page}",
                    "book": "Book A",
                    "page": page,
                }
            )
        (root / "metadata.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8"
        )
    return folder
