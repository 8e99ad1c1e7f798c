"""Pictures at print resolution: cropped to their box, resized to the print DPI, JPEG-encoded.

Every picture in the PDF has exactly ``dpi`` pixels per inch at the size it is printed, which is
what print shops check. Resizing a small picture up adds no detail, so each picture also gets an
*effective* DPI: the detail it really carries (the painted pixels per printed inch, at most
``dpi``). A 512 px picture across an 8.75 in page has an effective 59 DPI; ``--print`` upscales
it with the SD x4 upscaler first.

Prepared JPEGs are files named by a hash of everything that makes them (source picture bytes,
box in pixels, crop, quality), kept in a cache folder: reportlab embeds a JPEG file as it is
(no decoding, no re-encoding), and a rebuilt book only prepares the pictures that changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fairytale.files import atomic_path, sha256_file
from fairytale.pdf.layout import INCH, Rect

FORMAT = "1"  # bump to invalidate cached JPEGs when the preparation changes


@dataclass(frozen=True)
class PictureJob:
    """One picture to place: its file and the box (points) it goes in."""

    source: Path
    box: Rect
    crop: bool


@dataclass(frozen=True)
class PreparedPicture:
    """A JPEG file ready to embed, its pixel size, and the detail it carries."""

    path: Path
    width: int
    height: int
    effective_dpi: float


def _crop_box(width: int, height: int, aspect: float) -> tuple[int, int, int, int]:
    if width / height > aspect:  # too wide: trim the sides
        new_width = round(height * aspect)
        left = (width - new_width) // 2
        return (left, 0, left + new_width, height)
    new_height = round(width / aspect)
    top = (height - new_height) // 2
    return (0, top, width, top + new_height)


def target_pixels(box: Rect, dpi: int) -> tuple[int, int]:
    """Pixel size of ``box`` (points) at ``dpi``."""
    return max(1, round(box.width / INCH * dpi)), max(1, round(box.height / INCH * dpi))


def effective_dpi(picture_size: tuple[int, int], job: PictureJob, dpi: int) -> float:
    """Painted pixels per printed inch of ``job``'s picture, at most ``dpi``."""
    width, height = picture_size
    if job.crop:
        left, top, right, bottom = _crop_box(width, height, job.box.width / job.box.height)
        width, height = right - left, bottom - top
    detail = min(width / (job.box.width / INCH), height / (job.box.height / INCH))
    return round(min(detail, dpi), 1)


def prepare_picture(job: PictureJob, cache: Path, *, dpi: int = 300, quality: int = 90) -> PreparedPicture:
    """Crop (if asked), resize to ``dpi`` at print size, and save as JPEG in ``cache``.

    A JPEG already in ``cache`` for the same inputs is reused.
    """
    from PIL import Image

    from fairytale.images import open_rgb, picture_size

    target = target_pixels(job.box, dpi)
    recipe = f"{FORMAT}:{sha256_file(job.source)}:{target}:{job.crop}:{quality}"
    path = Path(cache) / f"{hashlib.sha256(recipe.encode()).hexdigest()[:24]}.jpg"
    # The picture may be anything the user put in the book folder: the checked loader refuses a
    # bomb or a damaged file in one line (the header alone when the JPEG is already made).
    if path.is_file():
        size = picture_size(job.source, what="page picture")
    else:
        picture = open_rgb(job.source, what="page picture")
        size = picture.size
        if job.crop:
            picture = picture.crop(_crop_box(*picture.size, job.box.width / job.box.height))
        if picture.size != target:
            # Shrinking (an upscaled picture into a smaller box) keeps detail with Lanczos.
            # Enlarging adds no detail whatever the filter; bilinear leaves no halos around
            # edges and is 1.5x faster than bicubic, which matters at 20 Mpx a page.
            shrinking = picture.width > target[0]
            resample = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BILINEAR
            picture = picture.resize(target, resample)
        with atomic_path(path) as tmp:
            picture.save(tmp, "JPEG", quality=quality, dpi=(dpi, dpi))
    return PreparedPicture(path, target[0], target[1], effective_dpi(size, job, dpi))
