"""Everything a render can be told, in one validated object, and the ``--pages`` parser."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fairytale.errors import FairytaleError
from fairytale.pdf.layout import LAYOUT_CHOICES, TRIMS

#: How a character is kept alike from page to page, weakest first (see fairytale.render.backends).
#: ``tokens``, ``adapter`` and ``attention`` combine: ``tokens+adapter``, ``adapter+attention``, …
CONSISTENCY_MODES = ("seed", "tokens", "reference", "adapter", "attention")
#: the combinations the SD 1.x backend offers (any modes but ``seed`` combine, each at most once;
#: the backend says which it offers)
CONSISTENCY_COMBOS = ("tokens+adapter", "tokens+attention", "adapter+attention", "tokens+adapter+attention")


def consistency_parts(mode: str) -> list[str]:
    """The modes a ``--consistency`` value combines (``"tokens+adapter"`` → tokens, adapter)."""
    return [part.strip() for part in mode.split("+")]


def _valid_consistency(mode: str | None) -> bool:
    if mode is None:
        return True
    parts = consistency_parts(mode)
    if len(parts) > 1 and ("seed" in parts or len(set(parts)) != len(parts)):
        return False
    return all(part in CONSISTENCY_MODES for part in parts)

#: ``--precision``: what the UNet, VAE and text encoder compute in. ``auto`` is float16 on CUDA and
#: float32 elsewhere; ``bf16`` is an opt-in for CPUs with native bfloat16 (pictures change slightly).
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class RenderSettings:
    """How to paint and print a book. Defaults are the fast, safe choices.

    Picture settings (``steps``, ``guidance``, ``scheduler``, ``width``/``height``) decide the
    pictures and are part of each picture's cache key; device settings (``device``,
    ``low_vram``, ``batch_size``) only decide how fast they come; print settings (``trim``,
    ``bleed``, ``layout``, ``dpi``, ``jpeg_quality``) only affect the PDF.
    """

    backend: str = "sd14"
    model: str | None = None
    steps: int = 25
    guidance: float | None = None  # None: the backend's default (7.5 for SD 1.x)
    scheduler: str = "dpm++"
    width: int | None = None  # None: the model's native size (512 for SD v1.4)
    height: int | None = None
    batch_size: int | None = None  # None: chosen from the device and its memory
    device: str | None = None  # None: cuda, then mps, then cpu
    low_vram: bool = False
    max_repaints: int = 3
    safety_model: str | None = None  # for backends whose repo ships no checker
    upscale: bool = False  # --print: SD x4 upscaler before the PDF
    upscaler_model: str | None = None
    upscale_steps: int = 25
    trim: str = "8.5x8.5"
    bleed: bool = False
    layout: str = "auto"
    dpi: int = 300
    jpeg_quality: int = 90
    consistency: str | None = None  # a CONSISTENCY_MODES value or a CONSISTENCY_COMBOS one; None: the backend's default
    noise_level: int = 0  # unclip: noise added to the reference embedding (0 = most alike, up to 1000)
    adapter_scale: float = 0.6  # --consistency adapter: how strongly portraits steer (0: not at all, 1: as trained)
    adapter_model: str | None = None  # IP-Adapter weights (registry role ip_adapter_sd15)
    adapter_encoder: str | None = None  # its image encoder (registry role ip_adapter_image_encoder)
    attention_strength: float = 0.5  # --consistency attention: how much a page's attention follows its portraits (0: not at all, 1: fully)
    drift_check: float | None = None  # repaint a page whose character is less like its portrait than this (0-100); None: off
    max_drift_repaints: int = 2  # drift repaints per page (apart from safety repaints)
    clip_model: str | None = None  # CLIP for the drift check (registry role clip)
    draft: bool = False  # --draft: quick pictures (LCM-LoRA for SD 1.x, fewer steps otherwise); see render.drafts
    draft_steps: int = 4  # LCM steps of a draft (4-8 is the LCM-LoRA's range)
    draft_lora: str | None = None  # the LCM-LoRA: hub id or local folder (default: the registry's)
    preview_model: str | None = None  # tiny autoencoder for live previews: hub id or local folder
    precision: str = "auto"  # auto | fp32 | fp16 | bf16 (see PRECISIONS)
    compile: bool = False  # --compile: torch.compile the UNet (CUDA; the first batch pays for it)
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific options

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.steps <= 500, f"--steps must be between 1 and 500, not {self.steps}"),
            (self.guidance is None or 0 <= self.guidance <= 50, f"--guidance must be between 0 and 50, not {self.guidance}"),
            (self.batch_size is None or self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}"),
            (0 <= self.max_repaints <= 20, f"--max-repaints must be between 0 and 20, not {self.max_repaints}"),
            (1 <= self.upscale_steps <= 500, f"upscale steps must be between 1 and 500, not {self.upscale_steps}"),
            (self.trim.lower() in TRIMS, f"Unknown trim size '{self.trim}'. Choose one of: {', '.join(TRIMS)}"),
            (self.layout in LAYOUT_CHOICES, f"Unknown layout '{self.layout}'. Choose one of: {', '.join(LAYOUT_CHOICES)}"),
            (72 <= self.dpi <= 1200, f"--dpi must be between 72 and 1200, not {self.dpi}"),
            (_valid_consistency(self.consistency), f"Unknown consistency '{self.consistency}'. Choose one of: {', '.join(CONSISTENCY_MODES + CONSISTENCY_COMBOS)}"),
            (0 <= self.adapter_scale <= 2, f"--adapter-scale must be between 0 and 2, not {self.adapter_scale}"),
            (0 <= self.attention_strength <= 1, f"--attention-strength must be between 0 and 1, not {self.attention_strength}"),
            (self.drift_check is None or 0 <= self.drift_check <= 100, f"--drift-check must be between 0 and 100, not {self.drift_check}"),
            (0 <= self.max_drift_repaints <= 20, f"--max-drift-repaints must be between 0 and 20, not {self.max_drift_repaints}"),
            (0 <= self.noise_level <= 1000, f"--noise-level must be between 0 and 1000, not {self.noise_level}"),
            (1 <= self.draft_steps <= 50, f"--draft-steps must be between 1 and 50, not {self.draft_steps}"),
            (self.scheduler != "lcm" or self.draft, "--scheduler lcm only works with the LCM-LoRA: use --draft"),
            (self.precision in PRECISIONS, f"Unknown precision '{self.precision}'. Choose one of: {', '.join(PRECISIONS)}"),
            (30 <= self.jpeg_quality <= 100, f"JPEG quality must be between 30 and 100, not {self.jpeg_quality}"),
        ]
        for size in (self.width, self.height):
            checks.append(
                (size is None or (64 <= size <= 4096 and size % 8 == 0), f"--width/--height must be a multiple of 8 between 64 and 4096, not {size}")
            )
        for ok, message in checks:
            if not ok:
                raise FairytaleError(message)

    def with_(self, **changes: Any) -> RenderSettings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_pages(spec: str | None, page_count: int) -> list[int] | None:
    """Parse ``--pages``: ``"3,7"``, ``"2-5"``, ``"1,4-6"``. ``None`` means every page.

    Numbers must lie in ``1..page_count``; anything else is a one-line error. Ranges are
    checked by their ends before any is expanded, so ``1-1000000000`` costs nothing.

    >>> parse_pages("1,4-6,4", 8)
    [1, 4, 5, 6]
    """
    if spec is None:
        return None
    ranges: list[tuple[int, int]] = []
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                if first > last:
                    raise FairytaleError(f"Page range '{part}' runs backwards; write {last}-{first}")
            else:
                first = last = int(part)
        except ValueError:
            shown = spec if len(spec) <= 40 else f"{spec[:40]}…"
            raise FairytaleError(f"Cannot read page list '{shown}': use numbers like 3,7 or ranges like 2-5") from None
        ranges.append((first, last))
    if not ranges:
        raise FairytaleError(f"Page list '{spec}' names no pages")
    outside = sorted({n for first, last in ranges for n in (first, last) if not 1 <= n <= page_count})
    if outside:
        listed = ", ".join(map(str, outside[:5]))
        noun = "Pages" if len(outside) > 1 else "Page"
        raise FairytaleError(f"{noun} {listed} out of range: the plan has pages 1 to {page_count}")
    numbers: set[int] = set()
    for first, last in ranges:  # every range now lies inside the plan
        numbers.update(range(first, last + 1))
    return sorted(numbers)
