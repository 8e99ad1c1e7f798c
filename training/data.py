"""Training pictures: where they come from, how they are prepared, and the latent cache.

Two layouts are read:

* the scraper's Hugging Face ``imagefolder`` dataset (``fairytale dataset build``):
  ``DIR/train/metadata.jsonl`` + pictures (and ``DIR/validation/…``, which training leaves
  alone), or the same without split folders (``DIR/metadata.jsonl``); each row is
  ``{"file_name": "...png", "caption": "...", "book": "...", "page": N}``;
* a plain folder of pictures (a character's 3–20 reference pictures).

**Latent caching.** The VAE is frozen, so encoding a picture gives the same latent
distribution every step. Each picture (and its mirror image, when flips are on) is encoded
once up front; a training step draws a fresh sample ``mean + std · ε`` from the cached
distribution, exactly what encoding it again would give, and the VAE leaves the GPU.

**Augmentation.** Flips are two cached encodings per picture. A random crop is taken in
latent space: with random crops on, pictures are encoded 1/8 larger than the training size
(and wide pages keep up to twice their height in width), and each step crops a training-size
window of the latent. The VAE's latents are local (each covers an 8×8 patch), so this stands in
for encoding a cropped picture without encoding every crop. Which kinds use which is in
:mod:`training.config`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairytale.errors import FairytaleError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
#: With random crops on, pictures are encoded this much larger than the training size.
CROP_MARGIN = 1.125
#: …and wide or tall pages keep at most this aspect ratio (the rest is cut off evenly).
MAX_ASPECT = 2.0


@dataclass(frozen=True)
class TrainingImage:
    """One training picture and what the dataset says about it."""

    path: Path
    caption: str | None = None
    book: str | None = None
    page: int | None = None


def find_training_images(folder: Path, split: str = "train") -> list[TrainingImage]:
    """The pictures of a dataset folder (either layout in the module docstring).

    Raises :class:`FairytaleError` when the folder is missing, empty, or its metadata names
    a file that is not there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FairytaleError(f"Training data folder not found: {folder}")
    root = folder / split if (folder / split).is_dir() else folder
    metadata = root / "metadata.jsonl"
    if metadata.is_file():
        images = _read_metadata(root, metadata)
    else:
        images = [
            TrainingImage(path)
            for path in sorted(root.iterdir())
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        ]
    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise FairytaleError(
            f"No training pictures in {root} (looked for metadata.jsonl and {suffixes} files)"
        )
    return images


def _read_metadata(root: Path, metadata: Path) -> list[TrainingImage]:
    images = []
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name = row["file_name"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise FairytaleError(f"{metadata}, line {number}: not a JSON object with a file_name") from None
        path = root / name
        if not path.is_file():
            raise FairytaleError(f"{metadata}, line {number}: picture {name} is not in {root}")
        caption = row.get("caption") or None
        page = row.get("page")
        images.append(
            TrainingImage(
                path,
                caption=str(caption) if caption else None,
                book=row.get("book"),
                page=int(page) if isinstance(page, int | float) else None,
            )
        )
    return images


def data_fingerprint(images: list[TrainingImage]) -> str:
    """A short hash of the pictures (names, sizes) and captions, to check a resumed run."""
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.path.name}\0{image.path.stat().st_size}\0{image.caption or ''}\n".encode())
    return digest.hexdigest()[:16]


def load_picture(path: Path) -> Image.Image:
    """Open a picture as RGB; transparency is laid on white (character cut-outs are often PNGs)."""
    from PIL import Image, ImageOps

    from fairytale.images import eight_bit, open_picture

    image = eight_bit(ImageOps.exif_transpose(open_picture(path, what="training picture")))
    if image.mode in {"RGBA", "LA", "P"}:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def prepare_picture(image: Image.Image, resolution: int, *, crop_margin: bool, multiple: int) -> Image.Image:
    """Resize (short side to ``resolution``, or 1/8 more with ``crop_margin``) and cut.

    Without ``crop_margin`` the result is the centred ``resolution`` square; with it, the
    short side is ``resolution × 1.125`` and the long side keeps up to twice that, both rounded
    to ``multiple`` (the VAE's downscaling), so a latent window of the training size can be cut
    anywhere inside it.
    """
    from PIL import Image

    short = resolution if not crop_margin else multiple * math.ceil(resolution * CROP_MARGIN / multiple)
    width, height = image.size
    scale = short / min(width, height)
    new_size = (max(short, round(width * scale)), max(short, round(height * scale)))
    image = image.resize(new_size, Image.Resampling.LANCZOS)
    if crop_margin:
        longest = multiple * int(min(max(new_size), MAX_ASPECT * short) // multiple)
        target = (longest, short) if new_size[0] >= new_size[1] else (short, longest)
    else:
        target = (resolution, resolution)
    left = (new_size[0] - target[0]) // 2
    top = (new_size[1] - target[1]) // 2
    return image.crop((left, top, left + target[0], top + target[1]))


def picture_tensor(image: Image.Image) -> torch.Tensor:
    """A ``[3, H, W]`` tensor in ``[-1, 1]``, the VAE's input range."""
    import numpy as np
    import torch

    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass
class TrainingData:
    """Cached latent distributions and tokenized prompts, ready to be sampled.

    ``latents[i]`` is ``(mean, std)`` of one encoding, already multiplied by the VAE's scaling
    factor, on the CPU; ``picture_of[i]`` says which picture it came from (a picture and its
    mirror image share prompts); ``prompt_ids[p]`` holds every tokenized prompt of picture
    ``p``.
    """

    latents: list[tuple[torch.Tensor, torch.Tensor]]
    picture_of: list[int]
    prompt_ids: list[torch.Tensor]
    latent_size: int

    def get_batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` encodings, crop windows and prompts with ``generator``.

        Returns ``(mean, std, input_ids)``; sampling is with replacement, so any number of
        steps works with any number of pictures.
        """
        import torch

        size = self.latent_size
        picks = torch.randint(len(self.latents), (batch_size,), generator=generator).tolist()
        means, stds, ids = [], [], []
        for pick in picks:
            mean, std = self.latents[pick]
            height, width = mean.shape[-2:]
            top = int(torch.randint(height - size + 1, (1,), generator=generator))
            left = int(torch.randint(width - size + 1, (1,), generator=generator))
            means.append(mean[:, top : top + size, left : left + size])
            stds.append(std[:, top : top + size, left : left + size])
            prompts = self.prompt_ids[self.picture_of[pick]]
            ids.append(prompts[int(torch.randint(len(prompts), (1,), generator=generator))])
        return torch.stack(means), torch.stack(stds), torch.stack(ids)


def encode_pictures(
    images: list[TrainingImage],
    vae: Any,
    *,
    resolution: int,
    flip: bool,
    random_crop: bool,
    device: Any,
    dtype: Any,
    on_picture: Callable[[int], None] | None = None,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[int]]:
    """Encode every picture (and its mirror image when ``flip``) once with ``vae``.

    Returns the cached ``(mean, std)`` pairs (scaled, float32, CPU) and the picture index of
    each. ``on_picture(i)`` is called after each picture, for a progress bar.
    """
    import torch
    from PIL import Image

    multiple = 2 ** (len(vae.config.block_out_channels) - 1)
    scaling = float(vae.config.scaling_factor)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    latents, picture_of = [], []
    for index, image in enumerate(images):
        prepared = prepare_picture(
            load_picture(image.path), resolution, crop_margin=random_crop, multiple=multiple
        )
        variants = [prepared, prepared.transpose(Image.Transpose.FLIP_LEFT_RIGHT)] if flip else [prepared]
        pixels = torch.stack([picture_tensor(variant) for variant in variants]).to(device=device, dtype=dtype)
        with torch.no_grad():
            distribution = vae.encode(pixels).latent_dist
        mean = ((distribution.mean.float() - shift) * scaling).cpu()
        std = (distribution.std.float() * scaling).cpu()
        for variant in range(len(variants)):
            latents.append((mean[variant].clone(), std[variant].clone()))
            picture_of.append(index)
        if on_picture is not None:
            on_picture(index)
    return latents, picture_of


def tokenize_prompts(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """``[len(prompts), max_length]`` token ids, padded and cut as the pipelines do."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
