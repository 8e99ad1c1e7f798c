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

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

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
