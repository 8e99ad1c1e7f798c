"""Opening a picture someone handed us, safely: the one loader for every user picture.

Portraits for ``vary``, training pictures, reference portraits, the pages ``evaluate`` scores and
the pictures in the render cache all come from disk, where anything can be: a text file named
``.png``, a truncated download, a 50,000 × 50,000 "decompression bomb" whose few kilobytes
would decode into gigabytes. :func:`open_picture` turns each of these into one
:class:`~fairytale.errors.FairytaleError` line that names the file, before more than the
header is decoded:

* only the formats people hand around are read (PNG, JPEG, WebP, BMP, GIF, TIFF); Pillow's other
  plugins (EPS runs Ghostscript, for one) are never tried;
* at most :data:`MAX_PIXELS` pixels (Pillow's own decompression-bomb threshold, about 89
  megapixels: a 48 MP phone photo passes, a bomb does not), checked from the header;
* the whole picture is decoded before it is returned, so a truncated or corrupt file fails
  here, not halfway through painting or in the PDF writer.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from fairytale.errors import FairytaleError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

#: Formats a user picture may have (Pillow's names; its JPEG reader also reads phones' MPO files).
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")

#: The most pixels a picture may have: Pillow's decompression-bomb warning threshold
#: (``Image.MAX_IMAGE_PIXELS`` as shipped, 1024 × 1024 × 1024 // 4 // 3).
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3

# What a damaged file makes Pillow's decoders raise.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, IndexError, TypeError)


def open_picture(path: Path | str, *, what: str = "picture", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The picture at ``path``, fully decoded (first frame), in the mode the file has.

    Raises :class:`FairytaleError` naming the file (and ``what`` it is for) if it is missing,
    not a picture in one of :data:`FORMATS`, larger than ``max_pixels``, or damaged.
    """
    return _checked(path, what, max_pixels, decode=True)  # type: ignore[return-value]


def picture_size(path: Path | str, *, what: str = "picture", max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` of the picture at ``path``, read from its header only, with the same
    checks as :func:`open_picture` except the full decode (for a size, where decoding a page
    picture only to measure it would cost as much as printing it)."""
    return _checked(path, what, max_pixels, decode=False)  # type: ignore[return-value]


def _checked(path: Path | str, what: str, max_pixels: int, *, decode: bool) -> Image.Image | tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FairytaleError(f"{what.capitalize()} not found: {path}")
    if not path.is_file():
        raise FairytaleError(f"{what.capitalize()} is not a file: {path}")
    Image.init()  # every plugin registered, so that ``formats`` can name them
    with warnings.catch_warnings():
        # Pillow only warns between its threshold and twice it; the size check below refuses it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(path, formats=FORMATS)
        except Image.DecompressionBombError:
            raise _too_big(path, what, None, max_pixels) from None
        except UnidentifiedImageError:
            raise FairytaleError(
                f"Cannot read {path} as a {what}: not a {', '.join(FORMATS)} picture"
            ) from None
        except PermissionError:
            raise FairytaleError(f"Cannot read {path}: permission denied") from None
        except _DECODE_ERRORS as exc:
            raise FairytaleError(f"Cannot read {path} as a {what}: {_reason(exc)}") from None
        with opened:
            width, height = opened.size
            if width < 1 or height < 1:
                raise FairytaleError(f"Cannot read {path} as a {what}: it has no pixels ({width}×{height})")
            if width * height > max_pixels:
                raise _too_big(path, what, (width, height), max_pixels)
            if not decode:
                return width, height
            try:
                opened.load()
            except Image.DecompressionBombError:
                raise _too_big(path, what, (width, height), max_pixels) from None
            except _DECODE_ERRORS as exc:
                raise FairytaleError(f"{path} is damaged or cut short ({_reason(exc)}); use another copy of the {what}") from None
            return opened.copy()  # detached from the file, which closes here


def open_rgb(path: Path | str, *, what: str = "picture", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """:func:`open_picture`, as RGB."""
    picture = eight_bit(open_picture(path, what=what, max_pixels=max_pixels))
    return picture if picture.mode == "RGB" else picture.convert("RGB")


def eight_bit(picture: Image.Image) -> Image.Image:
    """A 16-bit greyscale picture (PNG, TIFF) scaled to 8 bits; others as they are. Pillow's own
    conversion clips it instead, so all but the darkest 1/256 of its range comes out white."""
    if not (picture.mode.startswith("I;16") or picture.mode == "I"):
        return picture
    import numpy as np
    from PIL import Image

    values = np.asarray(picture).astype(np.float64)
    if picture.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values / 257
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def _too_big(path: Path, what: str, size: tuple[int, int] | None, max_pixels: int) -> FairytaleError:
    shown = f" ({size[0]}×{size[1]})" if size else ""
    return FairytaleError(
        f"{path} is too large{shown}: a {what} may have at most {max_pixels / 1e6:.0f} megapixels; shrink it first"
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
