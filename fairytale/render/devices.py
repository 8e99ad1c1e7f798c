"""Which device paints, in which precision, how many pages at a time, and how memory is saved.

* CUDA: float16 weights and activations, PyTorch's fused scaled-dot-product attention (SDPA,
  diffusers' default attention on torch ≥ 2), batches sized by the card's memory.
* ``--low-vram`` (8–12 GiB cards): model CPU offload (only the model that is working sits on the
  GPU), attention computed in slices, and one page per batch.
* Apple MPS: float32 (float16 gives black pictures on some macOS versions), one page at a time.
* CPU: float32, four pages per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fairytale.errors import FairytaleError

GIB = 1024**3


@dataclass(frozen=True)
class DevicePlan:
    """The decisions for one run; :meth:`describe` says them in words for the summary."""

    device: str
    dtype: str  # "float16" | "float32"
    batch_size: int
    low_vram: bool
    offload: bool  # model CPU offload (CUDA + --low-vram)
    memory_gib: float | None = None

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def place(self, pipe: Any) -> None:
        """Put a diffusers pipeline where this plan says: on the device, or under model CPU
        offload (only the working model on the GPU); attention in slices for --low-vram."""
        if self.offload:
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        if self.low_vram:
            pipe.enable_attention_slicing()

    def side_model_placement(self) -> tuple[str, Any]:
        """Device and dtype for a small model beside the pipeline (the safety checker): with
        offload the GPU holds one model at a time, so it works on the CPU, in float32."""
        import torch

        device = "cpu" if self.offload else self.device
        return device, torch.float32 if device == "cpu" else self.torch_dtype

    def describe(self) -> str:
        memory = f", {self.memory_gib:.0f} GiB" if self.memory_gib else ""
        extras = []
        if self.offload:
            extras.append("model CPU offload")
        if self.low_vram:
            extras.append("attention slicing")
        extra = f", {', '.join(extras)}" if extras else ""
        return f"{self.device}{memory}, {self.dtype}, batch {self.batch_size}{extra}"


def _auto_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _check_device(device: str) -> None:
    import torch

    kind = device.split(":", 1)[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise FairytaleError(f"--device {device}: CUDA is not available on this machine (try --device cpu)")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise FairytaleError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise FairytaleError(f"--device {device}: Apple MPS is not available on this machine (try --device cpu)")
    elif kind != "cpu":
        raise FairytaleError(f"Unknown device '{device}'. Use cuda, cuda:N, mps or cpu")


def plan_device(device: str | None = None, *, low_vram: bool = False, batch_size: int | None = None) -> DevicePlan:
    """Decide device, precision, batch size and memory savers (see the module docstring)."""
    import torch

    try:
        device = (device or _auto_device()).strip().lower()
        if device.startswith("cuda") and ":" in device:
            int(device.split(":", 1)[1])
    except ValueError:
        raise FairytaleError(f"Unknown device '{device}'. Use cuda, cuda:N, mps or cpu") from None
    _check_device(device)
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        memory = props.total_memory / GIB
        if low_vram or memory < 10:
            auto_batch = 1
        elif memory < 20:
            auto_batch = 2  # a T4 (16 GiB) paints two 512 px pages at once in float16
        else:
            auto_batch = 4
        return DevicePlan(device, "float16", batch_size or auto_batch, low_vram, offload=low_vram, memory_gib=memory)
    if device.startswith("mps"):
        return DevicePlan(device, "float32", batch_size or 1, low_vram, offload=False)
    return DevicePlan("cpu", "float32", batch_size or (1 if low_vram else 4), low_vram, offload=False)
