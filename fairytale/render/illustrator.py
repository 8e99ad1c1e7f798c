"""The illustrator: a loaded diffusers pipeline that paints pages in batches.

Painting a batch reads like a diffusers pipeline, in numbered steps (see
:meth:`TextToImageIllustrator.paint`). What it adds to the plain "one pipeline call per page":

* **prompt embeddings are encoded once** per distinct text (the negative prompt is shared by
  every page) and handed to the pipeline as ``prompt_embeds``;
* **pages are denoised together**, one UNet call per step for the whole batch;
* **each page's picture depends only on its own prompt, seed and settings**: every page has its
  own generator, so its starting noise is the same whatever batch it is in, and the places
  where the *batch size* leaks into floating-point results are closed (see
  :mod:`fairytale.render.unet_tuning`). Same plan → same pictures, bit for bit on CPU, with any
  batch size.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from fairytale.embeddings import LearnedEmbedding, load_into_pipeline, unload_from_pipeline
from fairytale.render import drafts, unet_tuning
from fairytale.render.safety import SafetyChecker
from fairytale.render.schedulers import make_scheduler

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from fairytale.render.backends import Backend, PaintRequest
    from fairytale.render.devices import DevicePlan
    from fairytale.render.previews import PreviewDecoder

StepCallback = Callable[[int, int], None]


class Illustrator:
    """A loaded backend: paints pictures (unchecked; the caller runs :attr:`safety`)."""

    def __init__(self, backend: Backend, pipe: Any, device_plan: DevicePlan) -> None:
        self.backend = backend
        self.pipe = pipe
        self.device_plan = device_plan
        self.safety = SafetyChecker.for_pipeline(pipe, device_plan, backend.settings.safety_model)
        self.width, self.height = backend.picture_size()
        self.unet_calls = 0
        #: live previews of the batch in progress (None: nobody looks; see render.previews)
        self.previews: PreviewDecoder | None = None
        self._learned: dict[str, int] = {}  # learned tokens in the pipeline → their vector counts

    def configure(self, backend: Backend) -> None:
        """Paint with ``backend``'s settings from now on (the same model, but steps, guidance,
        scheduler or size may have changed): for reusing a loaded illustrator."""
        self.backend = backend
        self.width, self.height = backend.picture_size()

    def use_embeddings(self, embeddings: list[LearnedEmbedding]) -> list[str]:
        """Teach the pipeline the learned tokens (diffusers' own loader) and only them: tokens an
        earlier book taught are taken out again, so a reused model (studio, notebook) reads them
        as plain text, as a fresh load does. Returns the tokens added, changed or taken out."""
        wanted = {e.token: e.num_vectors for e in embeddings}
        stale = {t: n for t, n in self._learned.items() if wanted.get(t) != n}
        if stale:
            unload_from_pipeline(self.pipe, stale)
        added = list(dict.fromkeys([*stale, *load_into_pipeline(self.pipe, embeddings)]))  # a token once
        self._learned = wanted
        if added:
            if self.device_plan.offload:
                # diffusers' loader puts the offload hooks back for the text encoder's device,
                # which under offload is the CPU: put them back for the GPU instead.
                self.device_plan.place(self.pipe)
            self._forget_prompts()
        return added

    def prompt_too_long(self, text: str) -> bool:
        """Whether ``text`` has more tokens than the text encoder reads (the rest is cut)."""
        tokenizer = getattr(self.pipe, "tokenizer", None)
        if tokenizer is None:
            return False
        return len(tokenizer(text).input_ids) > tokenizer.model_max_length

    def paint(self, requests: Sequence[PaintRequest], on_step: StepCallback | None = None) -> list[Image.Image]:
        raise NotImplementedError

    def __enter__(self) -> Illustrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """``with load_illustrator(...) as illustrator:`` frees the model however the block ends."""
        self.close()

    def _forget_prompts(self) -> None:
        pass

    def _let_go(self) -> None:
        """Drop the references to models that a subclass keeps besides ``pipe`` (on close)."""

    def close(self) -> None:
        """Free the pipeline (and GPU memory) now rather than at garbage collection. Closing
        twice is harmless."""
        import torch

        # Whatever holds a model goes, or the caller's reference to a closed illustrator (the
        # ``with`` block's name, a notebook variable) would keep every model on the GPU.
        self.pipe = self.safety = self.previews = None
        self._let_go()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class TextToImageIllustrator(Illustrator):
    """Stable Diffusion text-to-picture (SD 1.x and, with its own scheduler config, SD 2.x)."""

    _attention: Any = None  # shared attention (--consistency attention), set up by the first page that needs it

    def __init__(self, backend: Backend, pipe: Any, device_plan: DevicePlan) -> None:
        super().__init__(backend, pipe, device_plan)
        self._model_scheduler = pipe.scheduler
        pipe.scheduler = make_scheduler(backend.settings.scheduler, self._model_scheduler)
        pipe.set_progress_bar_config(disable=True)  # ours shows pages; see fairytale.render.progress
        # One picture at a time through the VAE: less memory, and batch-invariant. One decode call
        # for a batch of 4 was measured (full-size VAE, 256², CPU) no faster (18.6 vs 17.6 CPU
        # seconds) and, with two threads, a few ulps off the pictures decoded alone.
        pipe.vae.enable_slicing()
        device_plan.place(pipe)
        # Attention otherwise runs through torch's scaled_dot_product_attention (diffusers'
        # default processor on torch >= 2): flash / memory-efficient kernels on CUDA.
        pipe.unet.register_forward_pre_hook(self._count_unet_call)
        unet_tuning.prepare(pipe, device_plan)
        self._prompt_embeds: dict[str, Any] = {}
        self._adapter: Any = None  # IP-Adapter (--consistency adapter), loaded on the first page that needs it
        self._drafts = drafts.DraftSwitch(pipe)

    def configure(self, backend: Backend) -> None:
        super().configure(backend)
        self.pipe.scheduler = make_scheduler(backend.settings.scheduler, self._model_scheduler)

    def _use_draft_weights(self, draft: bool) -> None:
        """The LCM-LoRA on for a draft (loaded the first time), off for everything else."""
        source = drafts.lora_source(self.backend.settings, self.backend.family) if draft else None
        if source is None:
            self._drafts.off()
            return
        if self._drafts.on(source):
            if self.device_plan.offload:
                self.device_plan.place(self.pipe)  # the loader re-adds offload hooks for the CPU
            unet_tuning.prepare_layers(self.pipe, self.device_plan)

    def _count_unet_call(self, module: Any, args: Any) -> None:
        self.unet_calls += 1

    def _forget_prompts(self) -> None:
        self._prompt_embeds.clear()

    def _let_go(self) -> None:
        self._prompt_embeds.clear()
        self._model_scheduler = self._adapter = self._attention = self._drafts = None

    def _embed(self, text: str) -> Any:
        # Each distinct text is encoded once, alone (batch 1), so its embedding never depends on
        # what else is being painted. Negative prompts are encoded exactly like prompts: that is
        # what the pipeline does with them too (same tokenizer padding, same text encoder).
        if text not in self._prompt_embeds:
            embeds, _ = self.pipe.encode_prompt(text, self.pipe._execution_device, 1, False)
            self._prompt_embeds[text] = embeds
        return self._prompt_embeds[text]

    def paint(self, requests: Sequence[PaintRequest], on_step: StepCallback | None = None) -> list[Image.Image]:
        """Paint one picture per request, in as few batches as :meth:`batches` allows; returns
        them in order. Subclasses add their own pipeline inputs through :meth:`pipeline_inputs`
        (and :meth:`step_callback`), not by painting differently."""
        import torch

        if not requests:
            return []
        groups = self.batches(requests)
        if len(groups) > 1:
            painted = {}
            for group in groups:
                painted.update(zip(map(id, group), self.paint(group, on_step), strict=True))
            return [painted[id(r)] for r in requests]
        settings = self.backend.settings
        self._use_draft_weights(settings.draft)

        # 1. encode prompts (cached across batches and repaints)
        prompt_embeds = torch.cat([self._embed(r.prompt) for r in requests])
        negative_embeds = torch.cat([self._embed(r.negative_prompt) for r in requests])

        # 2. one generator per page, on the CPU: a page's noise depends on its seed alone, and is
        #    the same on every device
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]

        # 3. the backend's own inputs (reference embeddings, …)
        extra = self.pipeline_inputs(requests)

        # 4. denoise the batch (with a preview every few steps if someone looks)
        pages = tuple(r.page for r in requests)

        def after_step(step: int, latents: Any) -> None:
            if on_step:
                on_step(step, settings.steps)
            if self.previews and self.previews.due(step, settings.steps):
                self.previews.show(pages, step, settings.steps, latents)

        try:
            with torch.inference_mode():
                result = self.pipe(
                    prompt_embeds=prompt_embeds,
                    negative_prompt_embeds=negative_embeds,
                    num_inference_steps=settings.steps,
                    guidance_scale=self.backend.guidance,
                    width=self.width,
                    height=self.height,
                    generator=generators,
                    output_type="np",
                    **extra,
                    **self.step_callback(after_step),
                )
        finally:
            # the prompts' cross-attention keys and values served every step of this painting only
            unet_tuning.forget_text_projections(self.pipe.unet)

        # 5. to pictures (8-bit, as they will be stored and checked)
        return self.pipe.numpy_to_pil(result.images)

    # -- hooks for backends whose pipeline takes more than text --------------------------------

    def batches(self, requests: Sequence[PaintRequest]) -> list[Sequence[PaintRequest]]:
        """The requests split into groups the pipeline can paint in one call: all of them,
        unless portraits steer some (one adapter scale and number of portraits per call)."""
        from fairytale.render.portrait_adapter import SCALE_OPTION, batch_signature

        if self._adapter is None and not any(SCALE_OPTION in r.options for r in requests):
            return [requests]
        groups: dict[tuple[float, int], list[PaintRequest]] = {}
        for request in requests:
            groups.setdefault(batch_signature(request), []).append(request)
        return list(groups.values())

    def pipeline_inputs(self, requests: Sequence[PaintRequest]) -> dict[str, Any]:
        """Extra keyword arguments for the pipeline call painting ``requests``: the portraits'
        image embeddings once IP-Adapter is in use, and the portraits of shared attention
        (each loaded by the first request that needs it). The adapter comes first: loading it
        replaces every attention processor, and shared attention puts its own back."""
        from fairytale.render.portrait_adapter import SCALE_OPTION, PortraitAdapter
        from fairytale.render.shared_attention import STRENGTH_OPTION, SharedAttention

        extra: dict[str, Any] = {}
        if self._adapter is None and any(SCALE_OPTION in r.options for r in requests):
            self._adapter = PortraitAdapter(self.pipe, self.backend.settings, self.device_plan)
        if self._adapter is not None:
            extra |= self._adapter.inputs(requests, guided=self.backend.guidance > 1, aspect=self.width / self.height)
        if self._attention is None and any(STRENGTH_OPTION in r.options for r in requests):
            self._attention = SharedAttention(self.pipe, self._embed, self._portrait_pass)
        if self._attention is not None:
            extra |= self._attention.inputs(requests, self.width, self.height, guided=self.backend.guidance > 1)
        return extra

    @contextlib.contextmanager
    def _portrait_pass(self) -> Iterator[None]:
        """Shared attention's portrait pass runs with IP-Adapter muted: a portrait's keys and
        values do not depend on the portraits of the pages being painted."""
        regions = self._adapter.regions if self._adapter is not None else None
        saved = regions.tokens if regions is not None else None
        if regions is not None:
            regions.tokens = None
        try:
            yield
        finally:
            if regions is not None:
                regions.tokens = saved

    def step_callback(self, after_step: Callable[[int, Any], None]) -> dict[str, Any]:
        """The pipeline's per-step callback argument calling ``after_step(steps_done, latents)``."""

        def step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            after_step(step + 1, tensors.get("latents"))
            return {}

        return {"callback_on_step_end": step_end}
