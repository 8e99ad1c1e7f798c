"""Which device paints, in which precision, how many pages at a time, and how memory is saved.

* CUDA: float16 weights and activations, PyTorch's fused scaled-dot-product attention (SDPA,
  diffusers' default attention on torch ≥ 2), batches sized by the card's memory free now (on
  Colab or a shared card another process, or a pipeline an earlier notebook cell still holds,
  may use much of it), with a hint to use ``--low-vram`` when less is free than one page needs.
* ``--low-vram`` (8–12 GiB cards): model CPU offload (only the model that is working sits on the
  GPU), attention computed in slices, and one page per batch.
* Apple MPS: float32 (float16 gives black pictures on some macOS versions), one page at a time.
* CPU: float32, four pages per batch, one torch thread per physical core (unless
  ``OMP_NUM_THREADS`` says otherwise), freed tensor memory kept for reuse (on glibc; see
  :mod:`fairytale.render.cpu_memory`). ``--precision bf16`` is an opt-in for CPUs with native
  bfloat16 (AVX512-BF16 or AMX): faster, and the pictures change slightly.
* ``--compile`` (CUDA): ``torch.compile`` of the UNet; the first batch pays for the compilation.
  Not offered on CPUs: measured on a full-size SD 1.4 UNet (inductor, weights frozen, 256²,
  batch 8, channels-last, a loaded 2-core machine) it took 9 minutes to compile and saved 8 % per
  call, no faster than the eager UNet in the default layout; and the batch-invariance hooks
  would break the graph.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fairytale.errors import FairytaleError
from fairytale.render.cpu_memory import reuse_freed_memory

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.settings import RenderSettings

GIB = 1024**3
#: GPU memory one 512 px SD 1.x page needs in float16 without ``--low-vram`` (weights and one
#: batch of activations): below this much free memory the plan suggests ``--low-vram``.
ONE_PAGE_GIB = 6.0


@dataclass(frozen=True)
class DevicePlan:
    """The decisions for one run; :meth:`describe` says them in words for the summary."""

    device: str
    dtype: str  # "float16" | "float32" | "bfloat16"
    batch_size: int
    low_vram: bool
    offload: bool  # model CPU offload (CUDA + --low-vram)
    memory_gib: float | None = None  # CUDA: memory this process can use now (free + its own cache)
    total_gib: float | None = None  # CUDA: the card's total memory
    threads: int | None = None  # CPU: torch threads to use (None: leave torch's setting alone)
    compile_unet: bool = False  # --compile

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
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        if self.device == "cpu":
            reuse_freed_memory()
        if self.compile_unet and not getattr(pipe.unet, "_fairytale_compiled", False):
            pipe.unet.compile()  # in place: the module (and its hooks) stay what they are
            pipe.unet._fairytale_compiled = True

    def side_model_placement(self) -> tuple[str, Any]:
        """Device and dtype for a small model beside the pipeline (the safety checker): with
        offload the GPU holds one model at a time, so it works on the CPU, in float32."""
        import torch

        device = "cpu" if self.offload else self.device
        return device, torch.float32 if device == "cpu" else self.torch_dtype

    @property
    def hint(self) -> str | None:
        """A one-line advice when the plan is likely to run out of memory, else ``None``."""
        if self.memory_gib is not None and not self.low_vram and self.memory_gib < ONE_PAGE_GIB:
            return f"under {ONE_PAGE_GIB:.0f} GiB free, one page may not fit: try --low-vram"
        return None

    def describe(self) -> str:
        if self.memory_gib is None:
            memory = ""
        elif self.total_gib is None:
            memory = f", {self.memory_gib:.1f} GiB free"
        else:
            memory = f", {self.memory_gib:.1f} of {self.total_gib:.0f} GiB free"
        extras = []
        if self.offload:
            extras.append("model CPU offload")
        if self.low_vram:
            extras.append("attention slicing")
        if self.threads:
            extras.append(f"{self.threads} thread{'s' if self.threads > 1 else ''}")
        if self.compile_unet:
            extras.append("compiled UNet")
        extra = f", {', '.join(extras)}" if extras else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.device}{memory}, {self.dtype}, batch {self.batch_size}{extra}{hint}"


def cuda_memory_gib(device: str) -> tuple[float, float]:
    """(usable now, total) GiB of the CUDA ``device``. Usable: the card's free memory (what other
    processes and this one's live tensors leave) plus the blocks PyTorch's caching allocator in
    this process holds but no tensor uses (they count as used for the card, yet this process
    paints in them). Tensors this process still holds (a pipeline an earlier notebook cell kept)
    are not counted: the plan is made before its pipeline loads, and those stay where they are."""
    import torch

    where = torch.device(device)
    free, total = torch.cuda.mem_get_info(where)
    cached = torch.cuda.memory_reserved(where) - torch.cuda.memory_allocated(where)
    return (free + max(cached, 0)) / GIB, total / GIB


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


def check_device(device: str) -> str:
    """``device`` (``cuda``, ``cuda:N``, ``mps``, ``cpu``) in lower case, once this machine has it;
    an unknown or absent device is a one-line error."""
    device = device.strip().lower()
    try:
        if device.startswith("cuda") and ":" in device:
            int(device.split(":", 1)[1])
    except ValueError:
        raise FairytaleError(f"Unknown device '{device}'. Use cuda, cuda:N, mps or cpu") from None
    _check_device(device)
    return device


def physical_cores() -> int:
    """Physical CPU cores (hyper-threads share a core's arithmetic units, so they add little)."""
    try:
        import psutil  # installed with accelerate

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:  # pragma: no cover
        return os.cpu_count() or 1


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): otherwise bf16 is slow."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cuda_has_bf16(device: str | None = None) -> bool:
    """Whether the CUDA GPU ``device`` (default: the current one) computes bfloat16 natively
    (compute capability 8.0+: A100, RTX 30xx and later). ``torch.cuda.is_bf16_supported()`` also
    says yes for a card that only emulates it (a T4), many times slower than its float16, and
    asks the current GPU rather than ``device``."""
    import torch

    return torch.cuda.get_device_capability(torch.device(device) if device else None)[0] >= 8


def plan_for(settings: RenderSettings) -> DevicePlan:
    """The device plan ``settings`` ask for."""
    return plan_device(
        settings.device, low_vram=settings.low_vram, batch_size=settings.batch_size,
        precision=settings.precision, compile_unet=settings.compile,
    )


def precision_dtype(precision: str, device: str) -> str:
    """The dtype (``float32``, ``float16``, ``bfloat16``) ``--precision`` asks for on ``device``;
    a precision the device cannot paint in is a one-line error."""
    import torch

    kind = device.split(":", 1)[0]
    if precision == "auto":
        return "float16" if kind == "cuda" else "float32"
    if precision == "fp32":
        return "float32"
    if precision == "fp16":
        if kind != "cuda":
            raise FairytaleError(f"--precision fp16 needs a CUDA GPU (this run paints on {device}); use fp32 or bf16")
        return "float16"
    if precision == "bf16":
        if kind == "cuda" and not cuda_has_bf16(device):
            name = torch.cuda.get_device_name(torch.device(device))
            raise FairytaleError(f"--precision bf16: {device} ({name}) has no native bfloat16; use fp16")
        if kind == "cpu" and not cpu_has_bf16():
            raise FairytaleError("--precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); use fp32")
        if kind == "mps":
            raise FairytaleError("--precision bf16 is for CPUs and CUDA GPUs; Apple MPS paints in fp32")
        return "bfloat16"
    raise FairytaleError(f"Unknown precision '{precision}'. Choose one of: auto, fp32, fp16, bf16")


def plan_device(
    device: str | None = None,
    *,
    low_vram: bool = False,
    batch_size: int | None = None,
    precision: str = "auto",
    compile_unet: bool = False,
) -> DevicePlan:
    """Decide device, precision, batch size and memory savers (see the module docstring)."""

    device = check_device(device or _auto_device())
    dtype = precision_dtype(precision, device)
    if compile_unet and not device.startswith("cuda"):
        raise FairytaleError(f"--compile is for CUDA GPUs (this run paints on {device})")
    if device.startswith("cuda"):
        memory, total = cuda_memory_gib(device)
        if low_vram or memory < 10:
            auto_batch = 1
        elif memory < 20:
            auto_batch = 2  # a T4 (16 GiB) paints two 512 px pages at once in float16
        else:
            auto_batch = 4
        return DevicePlan(
            device, dtype, batch_size or auto_batch, low_vram, offload=low_vram, memory_gib=memory,
            total_gib=total, compile_unet=compile_unet,
        )
    if device.startswith("mps"):
        return DevicePlan(device, dtype, batch_size or 1, low_vram, offload=False)
    # OMP_NUM_THREADS set by the user (or a test harness) wins; otherwise one thread per core.
    threads = None if os.environ.get("OMP_NUM_THREADS") else physical_cores()
    return DevicePlan("cpu", dtype, batch_size or (1 if low_vram else 4), low_vram, offload=False, threads=threads)
