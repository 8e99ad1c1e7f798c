"""``fairytale evaluate``: how well a rendered book's pictures follow their prompts, and how
alike each character looks from page to page, measured with CLIP.

* **CLIP-T** (per page): ``100 · max(cos(image, prompt), 0)`` between the CLIP embeddings of the
  page's picture and its prompt, the usual CLIPScore scale (higher: the picture shows more of
  what the prompt says).
* **CLIP-I** (per character on two or more pages): the mean over all pairs of those pages'
  pictures of ``100 · cos(image_a, image_b)`` (higher: more alike). It measures the whole
  picture, so shared backgrounds count too; compare books of the same story, not across stories.
* **Portrait similarity** (per page and character that has a reference portrait):
  ``100 · cos(region, portrait)`` between the CLIP embeddings of the character's region of the
  page (the whole picture when it is the page's only character with a portrait; else its box from
  the plan, side by side by default, as ``--consistency adapter`` placed it) and its portrait.

Pictures and prompts go through CLIP in batches; pages whose picture is a safety placeholder
are left out. The CLIP model comes from the registry (role ``clip``,
``openai/clip-vit-large-patch14`` by default).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fairytale import registry
from fairytale.errors import FairytaleError
from fairytale.files import atomic_write_text, check_output_path

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.manifest import Manifest

EVALUATION_FILE = "evaluation.json"


@dataclass
class PageScore:
    number: int
    prompt: str
    characters: list[str]
    clip_t: float
    portrait: dict[str, float] = field(default_factory=dict)  # character id → similarity to its portrait


@dataclass
class CharacterScore:
    id: str
    name: str
    pages: list[int]
    clip_i: float  # mean over page pairs
    lowest_pair: tuple[int, int, float]  # the two pages least alike


@dataclass
class Evaluation:
    book_dir: str
    clip_model: str
    backend: str
    model: str
    pages: list[PageScore]
    characters: list[CharacterScore]
    mean_clip_t: float | None
    skipped_pages: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_book(book_dir: Path | str, batch_size: int = 16, device: str | None = None) -> Manifest:
    """The manifest of the book a render wrote into ``book_dir``, after the cheap checks
    :func:`evaluate_book` makes before CLIP runs (the folder, ``batch_size``, ``device`` when one
    is given, a writable ``evaluation.json``, every page's picture present); a
    :class:`FairytaleError` otherwise. The CLI calls it before the up-front model check, so a
    mistyped folder or device is said first."""
    from fairytale.render.devices import check_device
    from fairytale.render.manifest import load_manifest

    book_dir = Path(book_dir)
    if not book_dir.is_dir():
        raise FairytaleError(f"Book folder not found: {book_dir} (the folder a render wrote beside its PDF)")
    if batch_size < 1:
        raise FairytaleError(f"--batch-size must be at least 1, not {batch_size}")
    if device is not None:
        check_device(device)  # torch would say a mistyped or absent device in a traceback
    check_output_path(book_dir / EVALUATION_FILE)  # the scores are saved there: fail before CLIP runs
    manifest = load_manifest(book_dir)
    for page in manifest.pages:
        if page.safety != "placeholder" and not (book_dir / page.image).is_file():
            raise FairytaleError(f"Picture of page {page.number} is missing: {book_dir / page.image}; render the book again")
    return manifest


def evaluate_book(
    book_dir: Path | str, *, clip_model: str | None = None, device: str | None = None, batch_size: int = 16
) -> Evaluation:
    """Score the book a render wrote into ``book_dir`` and save ``book_dir/evaluation.json``."""
    import torch

    from fairytale.images import open_rgb
    from fairytale.plan import load_plan

    # 1. what the render made
    book_dir = Path(book_dir)
    manifest = check_book(book_dir, batch_size, device)
    pages = [p for p in manifest.pages if p.safety != "placeholder"]
    skipped = [p.number for p in manifest.pages if p.safety == "placeholder"]
    names: dict[str, str] = {}
    if (book_dir / "plan.json").is_file():
        names = {c.id: c.name for c in load_plan(book_dir / "plan.json").characters}

    # 2. CLIP embeddings, in batches
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        from fairytale.render.devices import check_device

        device = check_device(device)  # "CUDA:1" as torch spells it
    model, processor = registry.load_clip(clip_model, device)
    device = next(model.parameters()).device
    image_features, text_features = [], []
    with torch.inference_mode():
        for chunk in _batches(pages, batch_size):
            pictures = []
            for page in chunk:
                pictures.append(open_rgb(book_dir / page.image, what=f"picture of page {page.number}"))
            inputs = processor(images=pictures, return_tensors="pt").to(device)
            image_features.append(model.get_image_features(**inputs))
            tokens = processor(text=[p.prompt for p in chunk], return_tensors="pt", padding=True, truncation=True).to(device)
            text_features.append(model.get_text_features(**tokens))
    if pages:
        images = torch.nn.functional.normalize(torch.cat(image_features).float(), dim=-1)
        texts = torch.nn.functional.normalize(torch.cat(text_features).float(), dim=-1)
    row = {p.number: i for i, p in enumerate(pages)}

    # 3. CLIP-T per page
    page_scores = [
        PageScore(p.number, p.prompt, list(p.characters), round(100 * max(float(images[i] @ texts[i]), 0.0), 3))
        for i, p in enumerate(pages)
    ]

    # 4. CLIP-I per character shown on two or more pages
    shown: dict[str, list[int]] = {}
    for page in pages:
        for character in page.characters:
            shown.setdefault(character, []).append(page.number)
    character_scores = []
    for character, numbers in shown.items():
        if len(numbers) < 2:
            continue
        pairs = [(a, b, 100 * float(images[row[a]] @ images[row[b]])) for a, b in itertools.combinations(numbers, 2)]
        low = min(pairs, key=lambda pair: pair[2])
        character_scores.append(
            CharacterScore(
                character, names.get(character, character), numbers,
                round(sum(s for _, _, s in pairs) / len(pairs), 3), (low[0], low[1], round(low[2], 3)),
            )
        )

    # 5. similarity of each character's region to its reference portrait
    _score_portraits(book_dir, manifest, pages, page_scores, model, processor, device, batch_size)

    # 6. save
    evaluation = Evaluation(
        book_dir=str(book_dir),
        clip_model=registry.resolve("clip", clip_model).label,
        backend=manifest.backend,
        model=manifest.model,
        pages=page_scores,
        characters=character_scores,
        mean_clip_t=round(sum(p.clip_t for p in page_scores) / len(page_scores), 3) if page_scores else None,
        skipped_pages=skipped,
    )
    atomic_write_text(book_dir / EVALUATION_FILE, evaluation.to_json())
    return evaluation


def _score_portraits(book_dir, manifest, pages, page_scores, model, processor, device, batch_size) -> None:  # noqa: ANN001
    """Fill ``PageScore.portrait``: each shown character's region against its portrait."""
    import torch

    from fairytale.images import open_rgb
    from fairytale.plan import load_plan, resolve_plan_path
    from fairytale.render.backends.common import page_regions

    plan_file = (book_dir / manifest.plan).resolve()
    if not plan_file.is_file():
        return
    plan = load_plan(plan_file)
    portraits = {
        c.id: resolve_plan_path(plan_file, c.reference.image)
        for c in plan.characters
        if c.reference is not None and resolve_plan_path(plan_file, c.reference.image).is_file()
    }
    crops, portrait_ids = [], sorted(portraits)
    for score, page in zip(page_scores, pages, strict=True):
        if page.number > len(plan.pages):
            continue
        plan_page = plan.pages[page.number - 1]
        ids = [c.id for c in plan.characters if c.reference is not None and c.id in plan_page.characters]
        boxes = dict(zip(ids, page_regions(plan, plan_page), strict=True))
        picture = open_rgb(book_dir / page.image, what=f"picture of page {page.number}")
        for character in ids:
            if character in portraits:
                left, top, right, bottom = boxes[character]
                w, h = picture.size
                region = picture.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
                crops.append((score, character, region))
    if not crops:
        return

    def features(pictures: list) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for chunk in _batches(pictures, batch_size):
                inputs = processor(images=chunk, return_tensors="pt").to(device)
                out.append(model.get_image_features(**inputs))
        return torch.nn.functional.normalize(torch.cat(out).float(), dim=-1)

    reference = features([open_rgb(portraits[c], what=f"reference portrait of {c}") for c in portrait_ids])
    regions = features([crop for _, _, crop in crops])
    for (score, character, _), region in zip(crops, regions, strict=True):
        score.portrait[character] = round(100 * float(region @ reference[portrait_ids.index(character)]), 3)
