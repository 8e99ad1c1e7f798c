"""The handful of named values a textual-inversion run depends on, with documented defaults.

The defaults follow the known-good recipe of the textual-inversion paper's reference setups
(and of diffusers' example): batch 1, gradient accumulation 4, 3,000 optimizer steps, learning
rate 5e-4 *scaled* by the effective batch (batch × accumulation × processes, so 2e-3 on one
GPU), AdamW, constant schedule. Two deliberate additions:

* a 50-step linear warm-up before the constant rate: Adam's first steps move every coordinate
  by about the full learning rate, which at 2e-3 is a large jump for a freshly initialised
  token; 50 steps of 3,000 cost nothing and keep the start smooth;
* gradient checkpointing on by default: it costs ~25 % speed and keeps SD 1.x at 512 px well
  inside a 16 GiB T4 (and a 6 GiB budget); pass ``--no-gradient-checkpointing`` on big cards.

Augmentation depends on what is learned (see :data:`AUGMENTATION_BY_KIND`): a *style* is the
same in a mirror and in any crop of a page, so both flips and random crops are on; a
*character* is learned from a handful of pictures whose asymmetric marks (a patch over one eye,
a bow on one side) and whole silhouette are the likeness, so mirrored copies and crops that cut
off a head are off by default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from fairytale.errors import FairytaleError

Kind = Literal["style", "character"]
MixedPrecision = Literal["auto", "no", "fp16", "bf16"]

KINDS: tuple[str, ...] = ("style", "character")

#: What the new token starts from when ``--init`` is not given.
DEFAULT_INIT: dict[str, str] = {"style": "illustration", "character": "character"}

#: (flip, random crop) defaults per kind; see the module docstring for why.
AUGMENTATION_BY_KIND: dict[str, tuple[bool, bool]] = {"style": (True, True), "character": (False, False)}

#: A plain folder of pictures for a character should hold about this many.
CHARACTER_IMAGES = (3, 20)

MAX_VECTORS = 32

#: Ranges of the numeric settings, checked before anything is loaded (see TrainingConfig.check).
#: Past these a run only runs out of memory or overflows: 2048 px is four times SD 2.1's own size.
RESOLUTION_RANGE = (64, 2048)
MAX_BATCH_SIZE = 64  # pictures per micro-batch, and never more than the training pictures
MAX_GRAD_ACCUM = 64  # a step's micro-batches are drawn (and on the CPU painted) together
MAX_STEPS = 1_000_000
MAX_LR = 1.0
MAX_SEED = 2**32 - 1


@dataclass
class TrainingConfig:
    """Everything one run of :func:`training.train` needs. Paths are used as given."""

    kind: Kind
    data: Path
    token: str
    output: Path
    init: str | None = None  # None: DEFAULT_INIT[kind]
    backend: str = "sd14"  # registry role of the base model: sd14 or sd21
    model: str | None = None  # hub id or local path; None: the role's default
    vectors: int = 1
    steps: int = 3000  # optimizer steps (each of batch_size × grad_accum pictures per process)
    batch_size: int = 1
    grad_accum: int = 4
    lr: float = 5e-4
    scale_lr: bool = True  # lr × batch_size × grad_accum × processes
    warmup_steps: int = 50
    weight_decay: float = 1e-2
    resolution: int | None = None  # None: the model's native size (512 for SD 1.4, 768 for SD 2.1)
    flip: bool | None = None  # None: AUGMENTATION_BY_KIND
    random_crop: bool | None = None  # None: AUGMENTATION_BY_KIND
    captions: bool = True  # use dataset captions in style prompts when the dataset has them
    mixed_precision: MixedPrecision = "auto"  # auto: bf16/fp16 on CUDA, none on CPU
    gradient_checkpointing: bool = True
    adam_8bit: bool = False
    # One UNet call for all of a step's micro-batches (same loss and gradient, less overhead per
    # picture) instead of one call each. None: on the CPU yes; on a GPU no, where accumulation
    # is there to keep one micro-batch's activations in memory at a time.
    fuse_accumulation: bool | None = None
    compile_unet: bool = False  # torch.compile the UNet (meant for CUDA; the first steps compile)
    seed: int = 0
    checkpoint_every: int = 250
    checkpoint_dir: Path | None = None  # None: beside the output, see checkpoint.checkpoint_dir_for
    resume: bool = False
    force: bool = False
    validation_prompt: str | None = None
    validation_every: int = 0  # 0: no validation pictures
    safety_model: str | None = None  # standalone safety checker for validation of models without one

    @property
    def init_text(self) -> str:
        return self.init or DEFAULT_INIT[self.kind]

    @property
    def use_flip(self) -> bool:
        return AUGMENTATION_BY_KIND[self.kind][0] if self.flip is None else self.flip

    @property
    def use_random_crop(self) -> bool:
        return AUGMENTATION_BY_KIND[self.kind][1] if self.random_crop is None else self.random_crop

    def fuses_accumulation(self, device_type: str) -> bool:
        """Whether a step's micro-batches go through the UNet together on ``device_type``."""
        return device_type == "cpu" if self.fuse_accumulation is None else self.fuse_accumulation

    def learning_rate(self, num_processes: int = 1) -> float:
        """The rate the optimizer uses: ``lr`` scaled by the effective batch when asked."""
        if not self.scale_lr:
            return self.lr
        return self.lr * self.batch_size * self.grad_accum * num_processes

    def check(self) -> None:
        """Refuse settings no run can use, in one line naming the option and its range.

        Cheap (no torch, no model, no pictures): the CLI calls it before anything is loaded.
        The picture count is checked by :meth:`check_pictures` once the pictures are found.
        """
        token = self.token
        if not token or any(char.isspace() for char in token):
            raise FairytaleError(f"--token must be one word without spaces, like <ginger>; got {token!r}")
        low, high = RESOLUTION_RANGE
        checks = [
            (
                1 <= self.vectors <= MAX_VECTORS,
                f"--vectors must be between 1 and {MAX_VECTORS}, got {self.vectors}",
            ),
            (1 <= self.steps <= MAX_STEPS, f"--steps must be between 1 and {MAX_STEPS:,}, got {self.steps}"),
            (
                1 <= self.batch_size <= MAX_BATCH_SIZE,
                f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, got {self.batch_size}",
            ),
            (
                1 <= self.grad_accum <= MAX_GRAD_ACCUM,
                f"--grad-accum must be between 1 and {MAX_GRAD_ACCUM}, got {self.grad_accum}",
            ),
            (
                math.isfinite(self.lr) and 0 < self.lr <= MAX_LR,
                f"--lr must be a number above 0 and at most {MAX_LR:g}, got {self.lr}",
            ),
            (
                math.isfinite(self.weight_decay) and 0 <= self.weight_decay <= 1,
                f"weight decay must be between 0 and 1, got {self.weight_decay}",
            ),
            (
                0 <= self.warmup_steps <= MAX_STEPS,
                f"--warmup-steps must be between 0 and {MAX_STEPS:,}, got {self.warmup_steps}",
            ),
            (
                self.resolution is None or low <= self.resolution <= high,
                f"--resolution must be between {low} and {high} pixels, got {self.resolution}",
            ),
            (0 <= self.seed <= MAX_SEED, f"--seed must be between 0 and {MAX_SEED}, got {self.seed}"),
            (
                self.checkpoint_every >= 1,
                f"--checkpoint-every must be at least 1, got {self.checkpoint_every}",
            ),
            (
                self.validation_every >= 0,
                f"--validation-every must be at least 0, got {self.validation_every}",
            ),
            (
                not self.validation_every or bool(self.validation_prompt),
                "--validation-every needs --validation-prompt",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise FairytaleError(message)
        if str(self.output).endswith(".a1111.safetensors") or Path(self.output).suffix != ".safetensors":
            raise FairytaleError(
                f"Output must be a .safetensors file (the A1111 copy is written beside it): {self.output}"
            )

    def check_pictures(self, count: int) -> None:
        """Refuse a micro-batch larger than the training set: it would only repeat pictures."""
        if self.batch_size > count:
            raise FairytaleError(
                f"--batch-size {self.batch_size} is more than the {count} training picture(s) in "
                f"{self.data}: use at most {count}"
            )

    def as_record(self) -> dict[str, str]:
        """The settings as strings, for the output file's metadata and checkpoint checks."""
        record = {}
        for key, value in asdict(self).items():
            if key in {"force", "resume"}:
                continue
            record[key] = "" if value is None else str(value)
        record["init"] = self.init_text
        record["flip"] = str(self.use_flip)
        record["random_crop"] = str(self.use_random_crop)
        return record


#: Settings that may change between an interrupted run and its ``--resume``: everything else
#: must match, or the resumed run would not be the same training.
#: (Gradient checkpointing only recomputes what it would have kept; fusing the micro-batches and
#: compiling the UNet only group the same sums differently: they may change too.)
RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "checkpoint_every",
        "checkpoint_dir",
        "output",
        "validation_prompt",
        "validation_every",
        "safety_model",
        "data",  # the folder may move; its pictures are checked by data_fingerprint
        "gradient_checkpointing",
        "fuse_accumulation",
        "compile_unet",
    }
)
