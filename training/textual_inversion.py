"""Textual inversion (Gal et al., 2022): learn the vectors of a new token, nothing else.

The base model (UNet, VAE, text encoder) is frozen. The new token's vectors live in a small
trainable tensor next to the frozen token table (:class:`NewTokenEmbedding`), so the
optimizer only ever sees those vectors: every other row of the table, and every other weight,
stays bit-identical by construction, and the optimizer state is a few kilobytes instead of
the whole 49,408-row table.

:func:`train` reads top to bottom: set up, then the loop — data → forward → loss → backward →
step → log → checkpoint. accelerate does device placement, mixed precision and multi-process
(DDP) only; the loop is ours.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.markup import escape
from torch import nn

from fairytale.embeddings import a1111_path, check_new_token, family_of_text_encoder, save_embedding
from fairytale.errors import FairytaleError, FollowerError
from fairytale.files import check_output_folder, check_output_path, ensure_dir
from training import checkpoint as ckpt
from training.config import CHARACTER_IMAGES, RESUMABLE_CHANGES, TrainingConfig
from training.data import (
    TrainingData,
    data_fingerprint,
    encode_pictures,
    find_training_images,
    tokenize_prompts,
)
from training.progress import TrainingProgress, format_bytes, peak_memory
from training.templates import placeholder_tokens, prompts_for, token_text


class TrainingDiverged(FairytaleError):
    """The loss became NaN or infinite; the run stopped before a bad step was taken."""


class TrainingInterrupted(FairytaleError):
    """Ctrl-C during training; checkpoints already written are kept."""

    exit_code = 130


class StopRequest:
    """Ctrl-C while training: the first asks the run to stop once the step under way is done
    (that step is then kept as a checkpoint, so nothing trained is lost); a second stops at
    once, keeping the checkpoints already written.

    The handler is installed only in the main thread (Python delivers signals there); elsewhere
    Ctrl-C stops at once, as before.
    """

    def __init__(self, say: Callable[..., None]) -> None:
        self.asked = False
        self._say = say

    def _handle(self, signum: int, frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        with contextlib.suppress(Exception):  # a message only
            self._say("[yellow]Stopping after this step, which is kept as a checkpoint (Ctrl-C again: stop now).[/]")

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


class NewTokenEmbedding(nn.Module):
    """The text encoder's token table (frozen) followed by the new tokens' rows (trainable).

    Ids below ``first_new`` read the original table; ids from ``first_new`` on read
    ``new_rows``. Gradients reach ``new_rows`` only.
    """

    def __init__(self, table: nn.Embedding, first_new: int, new_rows: torch.Tensor) -> None:
        super().__init__()
        self.table = table.requires_grad_(False)
        self.first_new = first_new
        self.new_rows = nn.Parameter(new_rows.detach().clone().to(table.weight.dtype))

    @property
    def weight(self) -> torch.Tensor:
        """The whole table as one matrix (a copy), as ``nn.Embedding.weight`` would show it."""
        return torch.cat([self.table.weight[: self.first_new], self.new_rows.detach()])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_new = (input_ids >= self.first_new).unsqueeze(-1)
        known = self.table(input_ids.clamp(max=self.first_new - 1))
        new = F.embedding((input_ids - self.first_new).clamp(min=0), self.new_rows)
        return torch.where(is_new, new, known)


@dataclass
class StepReport:
    """What :func:`train` hands ``on_step`` after each optimizer step (for tests and notebooks)."""

    step: int
    loss: float
    lr: float
    text_encoder: Any
    tokenizer: Any
    unet: Any
    token_ids: list[int]
    new_rows: torch.Tensor


@dataclass
class TrainingResult:
    """The outcome of a run: files written and the figures of the summary."""

    output: Path
    written: list[Path]
    token: str
    steps: int
    start_step: int
    final_loss: float
    losses: list[float]
    seconds: float
    steps_per_second: float
    peak_memory: int
    peak_memory_kind: str
    device: str
    mixed_precision: str
    family: str
    prediction_type: str
    resolution: int
    pictures: int
    checkpoint_dir: Path
    validation_pictures: list[Path] = field(default_factory=list)

    def summary(self) -> list[tuple[str, str]]:
        """Rows of the end-of-run summary."""
        resumed = f" (resumed at {self.start_step})" if self.start_step else ""
        return [
            ("token", f"{self.token} ({self.family}, {self.prediction_type})"),
            ("steps", f"{self.steps}{resumed}"),
            ("final loss", f"{self.final_loss:.4f}"),
            ("time", f"{self.seconds:.1f} s ({self.steps_per_second:.2f} steps/s)"),
            (self.peak_memory_kind, format_bytes(self.peak_memory)),
            ("device", f"{self.device}, mixed precision {self.mixed_precision}"),
            ("pictures", f"{self.pictures} at {self.resolution} px"),
            ("saved", ", ".join(str(path) for path in self.written)),
        ]


def denoising_target(
    scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet is trained to predict: the noise (epsilon models, SD 1.x) or the velocity
    ``√ᾱ·ε − √(1−ᾱ)·x₀`` (v-prediction, SD 2.x), as the model's scheduler config says."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def _resolve_mixed_precision(requested: str) -> str | None:
    """The precision to hand accelerate (``None``: whatever ``accelerate launch`` was told)."""
    if requested == "auto":
        # `accelerate launch` always exports this, "no" when its user did not choose: only a
        # real choice wins over ours, or multi-GPU runs would silently train in float32.
        if os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower() not in ("", "no"):
            return None
        if not torch.cuda.is_available():
            return "no"
        return "bf16" if _native_bf16() else "fp16"
    if requested == "fp16" and not torch.cuda.is_available():
        raise FairytaleError("fp16 mixed precision needs a CUDA GPU; on CPU use --mixed-precision bf16 or no")
    if requested == "bf16" and torch.cuda.is_available() and not _native_bf16():
        name = torch.cuda.get_device_name()
        raise FairytaleError(
            f"{name} has no native bfloat16 (it needs an Ampere or newer GPU): use --mixed-precision fp16"
        )
    return requested


def _native_bf16() -> bool:
    """Whether the GPU computes in bfloat16 natively (see :func:`fairytale.render.devices.cuda_has_bf16`)."""
    from fairytale.render.devices import cuda_has_bf16

    return cuda_has_bf16()


def _load_base_model(config: TrainingConfig, weight_dtype: torch.dtype) -> dict[str, Any]:
    """Tokenizer, text encoder (float32), VAE and UNet (``weight_dtype``), training scheduler."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from fairytale import registry

    role, ref = config.backend, config.model
    return {
        "source": registry.resolve(role, ref),
        "tokenizer": registry.load_component(role, CLIPTokenizer, "tokenizer", ref),
        # The trainable text encoder stays float32 under mixed precision: its gradients are
        # unscaled by the fp16 GradScaler, which refuses half-precision gradients.
        "text_encoder": registry.load_component(role, CLIPTextModel, "text_encoder", ref).float(),
        "vae": registry.load_component(role, AutoencoderKL, "vae", ref, torch_dtype=weight_dtype),
        "unet": registry.load_component(role, UNet2DConditionModel, "unet", ref, torch_dtype=weight_dtype),
        "scheduler": registry.load_component(role, DDPMScheduler, "scheduler", ref),
    }


def _add_token(config: TrainingConfig, tokenizer: Any, text_encoder: Any) -> list[int]:
    """Add the token (and ``_1`` … for more vectors) and swap in a :class:`NewTokenEmbedding`
    whose rows start from the ``--init`` word(s). Returns the new token ids."""
    names = placeholder_tokens(config.token, config.vectors)
    check_new_token(tokenizer, config.token)  # "giraffe" would take over the word in every prompt
    known = [name for name in names if name in tokenizer.get_vocab()]
    if known:
        raise FairytaleError(
            f"The model already knows the token {known[0]!r}; pick a new one, e.g. <{config.token.strip('<>')}-1>"
        )
    init_ids = tokenizer.encode(config.init_text, add_special_tokens=False)
    if not init_ids:
        raise FairytaleError(f"--init {config.init_text!r} has no tokens; give a word such as 'giraffe'")
    tokenizer.add_tokens(names)
    token_ids = tokenizer.convert_tokens_to_ids(names)
    if token_ids != list(range(token_ids[0], token_ids[0] + len(names))):
        raise FairytaleError(f"The tokenizer gave the new token non-consecutive ids {token_ids}")

    table = text_encoder.get_input_embeddings()
    with torch.no_grad():
        init = table.weight[init_ids].float()
        # One init token per vector when the counts match ("tall giraffe" for 2 vectors);
        # otherwise every vector starts from the mean of the init tokens.
        rows = (
            init if len(init_ids) == config.vectors else init.mean(0, keepdim=True).repeat(config.vectors, 1)
        )
    text_encoder.requires_grad_(False)
    text_encoder.set_input_embeddings(NewTokenEmbedding(table, token_ids[0], rows))
    return token_ids


def _native_resolution(unet: Any, vae: Any) -> tuple[int, int, int]:
    """(native size, VAE downscale, size multiple the UNet needs)."""
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    unet_scale = 2 ** (len(unet.config.block_out_channels) - 1)
    return int(unet.config.sample_size) * vae_scale, vae_scale, vae_scale * unet_scale


def train(
    config: TrainingConfig,
    *,
    console: Console | None = None,
    on_step: Callable[[StepReport], None] | None = None,
) -> TrainingResult:
    """Learn ``config.token`` from ``config.data`` and save it at ``config.output``.

    Writes the diffusers layout at ``config.output`` and the A1111/ComfyUI copy beside it
    (``X.a1111.safetensors``), both atomically, plus checkpoints in the run's checkpoint
    folder. ``console`` shows progress and the summary (main process only); ``on_step`` is
    called after every optimizer step. Raises :class:`FairytaleError` for anything the user
    can fix (among them :class:`~fairytale.book_lock.FolderBusyError` while another run trains
    into the same checkpoint folder), :class:`TrainingDiverged` when the loss stops being
    finite, and :class:`TrainingInterrupted` on Ctrl-C.
    """
    started = time.perf_counter()
    config.check()

    # 1. accelerate: device, precision, processes
    accelerator = _accelerator(config)

    # 2. one run per checkpoint folder: a second run into it is refused while this one lasts
    output, checkpoint_dir = _check_outputs(config)
    with _lock_run(output, checkpoint_dir, accelerator):
        return _train(config, accelerator, output, checkpoint_dir, started, console, on_step)


def _train(
    config: TrainingConfig,
    accelerator: Any,
    output: Path,
    checkpoint_dir: Path,
    started: float,
    console: Console | None,
    on_step: Callable[[StepReport], None] | None,
) -> TrainingResult:
    """The run itself, from its checkpoints to the saved token (:func:`train` holds its lock)."""
    from diffusers.optimization import get_scheduler

    device, is_main, rank = accelerator.device, accelerator.is_main_process, accelerator.process_index
    weight_dtype = WEIGHT_DTYPES.get(accelerator.mixed_precision, torch.float32)
    console = console if is_main else None
    say = console.print if console is not None else (lambda *args, **kwargs: None)

    # 2. (continued) earlier checkpoints need --resume (continue) or --force (start over)
    resume_from = _settle_checkpoints(config, checkpoint_dir, accelerator, say)

    # 3. the pictures
    images = find_training_images(Path(config.data))
    config.check_pictures(len(images))
    low, high = CHARACTER_IMAGES
    if config.kind == "character" and not low <= len(images) <= high:
        say(
            f"[yellow]{len(images)} pictures in {escape(str(config.data))}; {low}–{high} pictures of the character work best.[/]"
        )

    # 4. the base model, through the registry (local path or hub id)
    model = _load_base_model(config, weight_dtype)
    tokenizer, text_encoder, vae, unet = (
        model[name] for name in ("tokenizer", "text_encoder", "vae", "unet")
    )
    noise_scheduler = model["scheduler"]
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type not in {"epsilon", "v_prediction"}:
        raise FairytaleError(f"{model['source'].label}: prediction type {prediction_type!r} is not supported")
    family = family_of_text_encoder(text_encoder.config)
    native, vae_scale, multiple = _native_resolution(unet, vae)
    resolution = config.resolution or native
    if resolution % multiple:
        raise FairytaleError(
            f"--resolution must be a multiple of {multiple} for this model, got {resolution}"
        )

    # 5. the new token: added to the tokenizer, its rows trainable, everything else frozen
    token_ids = _add_token(config, tokenizer, text_encoder)
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    text_encoder.train()  # dropout is 0 in CLIP; train mode only switches checkpointing on
    unet.eval()

    # 6. latent cache: each picture (and its mirror image) VAE-encoded once; then the VAE leaves the GPU
    vae.to(device)
    latents, picture_of = encode_pictures(
        images,
        vae,
        resolution=resolution,
        flip=config.use_flip,
        random_crop=config.use_random_crop,
        device=device,
        dtype=weight_dtype,
    )
    token = token_text(config.token, config.vectors)
    prompt_ids = [
        tokenize_prompts(
            tokenizer, prompts_for(config.kind, token, image.caption if config.captions else None)
        )
        for image in images
    ]
    data = TrainingData(latents, picture_of, prompt_ids, latent_size=resolution // vae_scale)
    validating = bool(config.validation_every and config.validation_prompt)
    if validating:
        from training.validation import load_checker

        vae.to("cpu")  # back on the GPU only while painting a validation picture
        checker = load_checker(config.backend, config.model, config.safety_model)
    else:
        vae = model["vae"] = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    unet.to(device)
    # opt-in, meant for CUDA: the first steps pay for compiling, later ones run fused kernels
    denoise = torch.compile(unet) if config.compile_unet else unet

    # 7. optimizer (the new rows only), schedule, random generators; resume if asked
    lr = config.learning_rate(accelerator.num_processes)
    optimizer_cls = _adam_8bit(device) if config.adam_8bit else torch.optim.AdamW
    new_rows = text_encoder.get_input_embeddings().new_rows
    optimizer = optimizer_cls(
        [new_rows], lr=lr, betas=(0.9, 0.999), weight_decay=config.weight_decay, eps=1e-8
    )
    lr_schedule = get_scheduler(
        "constant_with_warmup", optimizer=optimizer, num_warmup_steps=config.warmup_steps
    )
    text_encoder, optimizer = accelerator.prepare(text_encoder, optimizer)
    # Each process draws its own pictures and noise: seeds differ by rank, and are recorded.
    data_generator = torch.Generator().manual_seed(config.seed + rank)
    noise_generator = torch.Generator(device=device).manual_seed(config.seed + rank)
    generators = {"data": data_generator, "noise": noise_generator}
    settings = config.as_record() | {
        "resolution": str(resolution),
        "data_fingerprint": data_fingerprint(images),
        "num_processes": str(accelerator.num_processes),
        "mixed_precision": accelerator.mixed_precision,
        "base_model": model["source"].label,
    }
    start_step, losses = 0, []
    if resume_from is not None:
        state, rng = ckpt.load_checkpoint(resume_from, rank)
        ckpt.check_same_settings(state["settings"], settings, RESUMABLE_CHANGES, resume_from)
        with torch.no_grad():
            new_rows.copy_(state["new_rows"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_scheduler"])
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
        ckpt.restore_rng_state(rng, generators)
        start_step, losses = int(state["step"]), list(state["losses"])
        say(f"Resuming from {escape(str(resume_from))} (step {start_step}).")

    say(
        f"Training {config.kind} token {escape(config.token)} ({config.vectors} vector(s), init {escape(repr(config.init_text))}) on "
        f"{len(images)} picture(s) at {resolution} px: {escape(model['source'].label)}, {family}, {prediction_type}, "
        f"{device.type}, mixed precision {accelerator.mixed_precision}, lr {lr:g}."
    )
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    micro_batches_per_call = config.grad_accum if config.fuses_accumulation(device.type) else 1
    validation_pictures: list[Path] = []
    session_started = time.perf_counter()

    def save_checkpoint(step: int) -> None:
        state = {
            "step": step,
            "new_rows": new_rows.detach().cpu().clone(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_schedule.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "settings": settings,
            "losses": list(losses),
        }
        rng = ckpt.rng_state(generators)
        barrier = accelerator.wait_for_everyone
        ckpt.save_checkpoint(checkpoint_dir, step, state, rng, rank=rank, is_main=is_main, barrier=barrier)

    def stop_asked(stop: StopRequest) -> bool:
        """Whether a Ctrl-C asked to stop, in any process (they must stop at the same step)."""
        if accelerator.num_processes == 1:
            return stop.asked
        asked = torch.tensor(float(stop.asked), device=device)
        return accelerator.reduce(asked, reduction="sum").item() > 0

    # 8. the loop
    try:
        with (
            TrainingProgress(console, total=config.steps, start=start_step) as progress,
            StopRequest(say).installed() as stop,
        ):
            for step in range(start_step + 1, config.steps + 1):
                # data: this step's micro-batches (cached latent distributions, crops, prompts)
                batches = [
                    data.get_batch(config.batch_size, data_generator) for _ in range(config.grad_accum)
                ]

                # forward, text: every micro-batch's prompts through the text encoder at once (float32,
                # trainable rows). The UNet works on a detached copy whose gradients are collected
                # and sent back through the text encoder in one pass at the end of the step.
                conditioning = text_encoder(torch.cat([ids for _, _, ids in batches]).to(device))[0]
                unet_conditioning = conditioning.detach().to(weight_dtype).requires_grad_()

                # noise: every micro-batch's draws first, in the step-by-step order (posterior sample,
                # noise, timestep), so grouping the UNet calls never changes what is drawn
                draws = []
                for mean, std, _ in batches:
                    mean, std = mean.to(device), std.to(device)
                    latents = mean + std * torch.randn(mean.shape, generator=noise_generator, device=device)
                    noise = torch.randn(latents.shape, generator=noise_generator, device=device)
                    timesteps = torch.randint(
                        0, num_train_timesteps, (latents.shape[0],), generator=noise_generator, device=device
                    )
                    draws.append((latents, noise, timesteps))

                step_loss = torch.zeros((), device=device)
                for first in range(0, config.grad_accum, micro_batches_per_call):
                    group = draws[first : first + micro_batches_per_call]
                    latents, noise, timesteps = (torch.cat(parts) for parts in zip(*group, strict=True))
                    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)

                    # forward, UNet (frozen, half precision under mixed precision)
                    rows = slice(first * config.batch_size, (first + len(group)) * config.batch_size)
                    prediction = denoise(
                        noisy_latents.to(weight_dtype), timesteps, unet_conditioning[rows]
                    ).sample

                    # loss: noise for epsilon models, velocity for v-prediction (SD 2.x); each
                    # micro-batch's mean, so the step's loss is their mean however they are grouped
                    target = denoising_target(noise_scheduler, latents, noise, timesteps).float()
                    prediction = prediction.float()
                    loss = sum(
                        F.mse_loss(prediction[part], target[part])
                        for part in _micro_batch_rows(len(group), config.batch_size)
                    )

                    # backward, UNet: the activations of this call are freed here
                    accelerator.backward(loss / config.grad_accum)
                    step_loss += loss.detach()

                # backward, text: one pass; across processes the new rows' gradients are averaged here
                conditioning.backward(unet_conditioning.grad.to(conditioning.dtype))

                # a non-finite loss stops the run before it can spoil the vectors
                loss_value = accelerator.reduce(step_loss / config.grad_accum, reduction="mean").item()
                if not math.isfinite(loss_value):
                    raise _diverged(loss_value, step, checkpoint_dir)

                # without a loss scaler (bf16, fp32) nothing else stops a non-finite gradient
                if accelerator.scaler is None:
                    finite = torch.isfinite(new_rows.grad).all().float()
                    if accelerator.reduce(finite, reduction="mean").item() < 1:
                        raise _diverged(float("nan"), step, checkpoint_dir, what="The gradient")

                # step (a step the fp16 loss scaler skips does not advance the warm-up either)
                optimizer.step()
                if not accelerator.optimizer_step_was_skipped:
                    lr_schedule.step()
                optimizer.zero_grad(set_to_none=True)

                # log
                losses.append(loss_value)
                progress.update(step, loss_value)

                # checkpoint (also the last step, so a finished run can be extended with --resume;
                # and a step a Ctrl-C asked to stop after)
                stopping = step < config.steps and stop_asked(stop)
                if step % config.checkpoint_every == 0 or step == config.steps or stopping:
                    save_checkpoint(step)

                trained = accelerator.unwrap_model(text_encoder)
                if validating and step % config.validation_every == 0:
                    if is_main:
                        components = model | {"text_encoder": trained}
                        path = _validate(
                            config, components, checker, step, checkpoint_dir, device, weight_dtype, say
                        )
                        validation_pictures.append(path)
                    accelerator.wait_for_everyone()
                if on_step is not None:
                    lr_now = lr_schedule.get_last_lr()[0]
                    on_step(
                        StepReport(step, loss_value, lr_now, trained, tokenizer, unet, token_ids, new_rows)
                    )
                if stopping:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        last = ckpt.latest_checkpoint(checkpoint_dir)
        where = f"the last checkpoint ({last}) is kept; add --resume to the same command to continue"
        raise TrainingInterrupted(
            f"Interrupted after {len(losses)} steps: {where if last else 'no checkpoint had been written yet'}"
        ) from None
    session_seconds = time.perf_counter() - session_started

    # 9. save the token: diffusers layout + A1111 copy, both atomic, with what it was trained on
    steps = max(config.steps, start_step)
    written: list[Path] = []
    if is_main:
        written = save_embedding(
            output,
            config.token,
            new_rows.detach().float().cpu(),
            family=family,
            base_model=model["source"].ref,
            extra={
                "trainer": "fairytale textual inversion",
                "kind": config.kind,
                "init": config.init_text,
                "steps": str(steps),
                "seed": str(config.seed),
                "resolution": str(resolution),
                "prediction_type": prediction_type,
                "learning_rate": f"{lr:g}",
            },
        )
    accelerator.wait_for_everyone()
    memory, memory_kind = peak_memory(device)
    accelerator.end_training()
    return TrainingResult(
        output=output,
        written=written,
        token=config.token,
        steps=steps,
        start_step=start_step,
        final_loss=losses[-1] if losses else float("nan"),
        losses=losses,
        seconds=time.perf_counter() - started,
        steps_per_second=(steps - start_step) / session_seconds if session_seconds > 0 else 0.0,
        peak_memory=memory,
        peak_memory_kind=memory_kind,
        device=str(device),
        mixed_precision=accelerator.mixed_precision,
        family=family,
        prediction_type=prediction_type,
        resolution=resolution,
        pictures=len(images),
        checkpoint_dir=checkpoint_dir,
        validation_pictures=validation_pictures,
    )


def _micro_batch_rows(count: int, batch_size: int) -> list[slice]:
    """The rows of each of ``count`` micro-batches of ``batch_size`` in one UNet call."""
    return [slice(index * batch_size, (index + 1) * batch_size) for index in range(count)]


WEIGHT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _accelerator(config: TrainingConfig) -> Any:
    """accelerate's Accelerator for this run (device, precision, processes), with fresh peak memory."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # accelerate keeps its state process-wide; a notebook (or a test) may train again with
    # another precision, so that state starts afresh.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    # Several processes on a machine without CUDA (`accelerate launch --multi_gpu` there, or
    # torchrun) train on the CPU with gloo; accelerate only chooses that when told cpu=True.
    several_on_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(mixed_precision=_resolve_mixed_precision(config.mixed_precision), cpu=several_on_cpu)


def _check_outputs(config: TrainingConfig) -> tuple[Path, Path]:
    """Check the outputs can be written (``--force`` to overwrite); nothing is written yet.

    Returns ``(output, checkpoint folder)``.
    """
    output = check_output_path(Path(config.output), overwrite=config.force)
    check_output_path(a1111_path(output), overwrite=config.force)
    checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else ckpt.checkpoint_dir_for(output)
    check_output_folder(checkpoint_dir, "Checkpoint folder")  # before training, not at the first checkpoint
    return output, checkpoint_dir


@contextlib.contextmanager
def _lock_run(output: Path, checkpoint_dir: Path, accelerator: Any) -> Iterator[None]:
    """Hold the run's checkpoint folder (and, with another ``--checkpoint-dir``, the output's
    own one, so two runs writing one token are refused too) for the whole run.

    Under ``accelerate launch`` the processes are one run: the main process alone takes the
    locks, and every process learns whether it got them. A refused main process raises the
    one-line :class:`~fairytale.book_lock.FolderBusyError` (or the error that stopped it); the others raise
    :class:`~fairytale.errors.FollowerError`, which the CLI does not print again.
    """
    from fairytale.book_lock import FolderBusyError, folder_lock

    def refuse(folder: Path) -> Callable[[str], FolderBusyError]:
        return lambda holder: FolderBusyError(
            f"Another fairytale train run ({holder}) is using the training folder {folder}; "
            "wait for it to finish (or stop it), or give this run another -o"
        )

    folders = dict.fromkeys([checkpoint_dir, ckpt.checkpoint_dir_for(output)])
    with contextlib.ExitStack() as held:
        refused: list[str | None] = [None]
        failure: FairytaleError | None = None
        if accelerator.is_main_process:
            try:
                for folder in folders:
                    held.enter_context(folder_lock(folder, refuse=refuse(folder)))
            except FairytaleError as exc:  # busy, or a folder that cannot be made: said once, by us
                refused, failure = [str(exc)], exc
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(refused, from_process=0)
        if failure is not None:
            raise failure
        if refused[0] is not None:
            raise FollowerError(refused[0])
        yield


def _settle_checkpoints(
    config: TrainingConfig, checkpoint_dir: Path, accelerator: Any, say: Callable[..., None]
) -> Path | None:
    """The checkpoint to resume from (``None``: start at step 0). Checkpoints of an earlier run
    need ``--resume`` (continue) or ``--force`` (removed: start over)."""
    import shutil

    earlier = ckpt.completed_checkpoints(checkpoint_dir)
    if earlier and not config.resume:
        if not config.force:
            raise FairytaleError(
                f"{checkpoint_dir} holds checkpoints of an earlier run (step {earlier[-1][0]}): "
                "pass --resume to continue it, or --force to start over"
            )
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for _, old in earlier:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
    resume_from = ckpt.latest_checkpoint(checkpoint_dir) if config.resume else None
    if config.resume and resume_from is None:
        say(f"[yellow]No checkpoint in {escape(str(checkpoint_dir))}: starting from step 0.[/]")
    if resume_from is not None and int(resume_from.name.split("-")[1]) >= config.steps:
        say(
            f"[yellow]{escape(str(resume_from))} is already at --steps {config.steps} or past it: nothing left to train.[/]"
        )
    return resume_from


def _diverged(loss: float, step: int, checkpoint_dir: Path, what: str = "Loss") -> TrainingDiverged:
    last = ckpt.completed_checkpoints(checkpoint_dir)
    kept = (
        f"the last good checkpoint (step {last[-1][0]}) is kept in {last[-1][1]}; continue from it with --resume"
        if last
        else "no checkpoint had been written yet"
    )
    return TrainingDiverged(
        f"{what} became {loss} at step {step}, so training stopped before that step changed the token; {kept}. "
        "Try a lower --lr, or --mixed-precision bf16/no if fp16 overflowed."
    )


def _adam_8bit(device: torch.device) -> Any:
    if device.type != "cuda":
        raise FairytaleError(
            "--adam-8bit needs a CUDA GPU (bitsandbytes); use the default AdamW on this machine"
        )
    try:
        import bitsandbytes
    except ImportError:
        raise FairytaleError("--adam-8bit needs bitsandbytes: pip install 'fairytale-books[bnb]'") from None
    return bitsandbytes.optim.AdamW8bit


def _validate(
    config: TrainingConfig,
    components: dict[str, Any],
    checker: tuple[Any, Any],
    step: int,
    checkpoint_dir: Path,
    device: torch.device,
    weight_dtype: torch.dtype,
    say: Callable[..., None],
) -> Path:
    from training.validation import paint_validation_picture

    path = ensure_dir(checkpoint_dir) / f"validation-step-{step:06d}.png"
    flagged = paint_validation_picture(
        components=components,
        checker=checker,
        prompt=config.validation_prompt or "",
        seed=config.seed,
        device=device,
        weight_dtype=weight_dtype,
        path=path,
    )
    say(
        f"Validation picture for step {step}: {escape(str(path))}"
        + (" [yellow](blanked by the safety checker)[/]" if flagged else "")
    )
    return path
