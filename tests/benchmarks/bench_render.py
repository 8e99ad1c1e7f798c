"""Render benchmarks: our painting loop vs. the plain per-page pipeline loop, drafts, previews,
and the PDF build.

    python tests/benchmarks/bench_render.py [--model DIR] [--pages 12] [--steps 25] [--rounds 2]
    python tests/benchmarks/bench_render.py --full-size --size 256 --pages 4 --steps 6 \
        --draft --previews --skip-pdf [--models-dir DIR] [--threads N] [--precision bf16]
    python tests/benchmarks/bench_render.py --device cuda --full-size --size 512 --pages 8 \
        --steps 25 --skip-pdf [--compile]        # GPU: fp16 both sides (tests/benchmarks/gpu_checks.sh)

1. **Final paint, ours vs plain.** A plan painted on the CPU, first with the loop a user would
   write (one ``StableDiffusionPipeline`` call per page, the same DPM-Solver++ scheduler, steps,
   guidance, size and seeds, the pipeline's own safety checker, one PNG per page), then with
   :func:`fairytale.render.render_book` (batches, prompt embeddings encoded once, its memory layout,
   the safety check, the page cache). The plain loop runs in a process of its own, as a user's
   script would (our render tunes its own process: fairytale.render.cpu_memory). Models are
   loaded before the clock starts, for both; the runs alternate for ``--rounds`` rounds and the
   best and median of each, and each round's ratio, are printed. With
   ``--full-size`` the model is SD 1.4 at its real size with random weights (built from
   ``tests/benchmarks/configs/sd14``, plus a random ViT-L/14 safety checker), else the tiny test
   model (which measures per-call overhead only). Bar (full size, 256², 4 pages, 6 steps):
   ours / plain ≤ 0.70. Each round also gives the CPU seconds of the process that did the work,
   and, on CUDA (``--device cuda``: both sides in fp16, ``--compile`` for ours), pages per minute
   and the peak GPU memory of each side.
2. **Drafts** (``--draft``): ``render_book`` with ``draft=True`` (4 LCM steps, a random LoRA of
   the LCM-LoRA's shape) against the plain loop at ``--draft-reference-steps`` (25). Bar ≤ 0.20.
3. **Previews** (``--previews``): ``render_book`` with and without ``on_preview`` every 5 steps
   (a random TAESD-size tiny autoencoder), ``--preview-steps`` steps. Bar: overhead ≤ 5 %.
4. **PDF.** A 32-page book of 1024 × 1024 pictures (drawn here: sky, sun, hills, watercolour
   texture) laid out at 300 DPI with bleed, with an empty picture cache (cold) and again with a
   full one (warm). Bar: cold build ≤ 3 s, file ≤ 40 MB. ``--noisy`` also times pictures of pure
   noise, the worst case for JPEG size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_model(folder: Path) -> Path:
    from tests.tiny_models import build

    return build(folder, ["sd"])["sd"]


def full_size_model(folder: Path) -> Path:
    """SD 1.4-size pipeline with random weights (configs in tests/benchmarks/configs/sd14), in
    float32, with a random safety checker of the real size (CLIP ViT-L/14 vision tower), so both
    loops check every picture as the real pipeline does."""
    import json

    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    from tests.benchmarks.bench_training import build_sd14_random

    model = build_sd14_random(folder, "float32")
    torch.manual_seed(0)
    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=224, patch_size=14, projection_dim=768)
    config = CLIPConfig(vision_config=vision, projection_dim=768)
    StableDiffusionSafetyChecker(config).save_pretrained(model / "safety_checker", safe_serialization=True)
    CLIPImageProcessor(crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224}).save_pretrained(
        model / "feature_extractor"
    )
    index = json.loads((model / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    index["requires_safety_checker"] = True
    (model / "model_index.json").write_text(json.dumps(index))
    return model


def random_lcm_lora(model: Path, folder: Path, rank: int = 64) -> Path:
    """A LoRA of the LCM-LoRA's shape (rank 64 on the same layers) with random weights, for the
    UNet at ``model``: drafts cost what real ones do."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from tests.tiny_models.diffusion import LORA_TARGETS

    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 1e-3)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True)
    return folder


def random_taesd(folder: Path) -> Path:
    """The tiny autoencoder at its real size (diffusers' AutoencoderTiny defaults are TAESD's)."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(folder, safe_serialization=True)
    return folder


def make_plan(pages: int):
    from fairytale.plan import BookPlan, Page
    from tests.render_support import STORY_TEXTS

    return BookPlan(
        title="The Lighthouse",
        seed=1,
        pages=[
            Page(number=i + 1, text=STORY_TEXTS[i % len(STORY_TEXTS)], prompt=f"a lighthouse by the sea, scene {i + 1}", seed=100 + i)
            for i in range(pages)
        ],
    )


def plain_loop(pipe, plan, folder: Path, steps: int, size: int) -> tuple[float, float, int | None]:
    """What a user writes: one pipeline call per page. Returns (wall seconds, CPU seconds, peak
    GPU bytes or None on the CPU)."""
    import torch

    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    for page in plan.pages:
        image = pipe(
            page.prompt,
            negative_prompt=plan.negative_prompt(page),
            num_inference_steps=steps,
            guidance_scale=7.5,
            height=size,
            width=size,
            generator=torch.Generator("cpu").manual_seed(page.seed),
        ).images[0]
        image.save(folder / f"page-{page.number:02d}.png")
    return time.perf_counter() - start, time.process_time() - cpu_start, torch.cuda.max_memory_allocated() if cuda else None


class PlainLoop:
    """The plain loop in a process of its own, with its pipeline loaded before the clock: a user's
    script, untouched by what our render sets for its own process (glibc's allocator thresholds,
    :mod:`fairytale.render.cpu_memory`)."""

    def __init__(self, model: Path, size: int, device: str = "cpu") -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_plain_worker, args=(child, str(model), size, device), daemon=True)
        self._process.start()
        self._connection.recv()  # loaded and warmed up

    def run(self, pages: int, steps: int, folder: Path) -> tuple[float, float, int | None]:
        self._connection.send((pages, steps, str(folder)))
        return self._connection.recv()

    def close(self) -> None:
        self._connection.send(None)
        self._process.join(60)


def _plain_worker(connection, model: str, size: int, device: str) -> None:
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from fairytale.render.schedulers import SCHEDULERS

    if device == "cpu":
        pipe = StableDiffusionPipeline.from_pretrained(model)
    else:  # what a user writes on a GPU: half precision
        pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float16).to(device)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, **SCHEDULERS["dpm++"][1])
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as warm:  # first calls pay for kernel selection: not timed
        plain_loop(pipe, make_plan(1), Path(warm), 1, size)
    connection.send("ready")
    while (request := connection.recv()) is not None:
        pages, steps, folder = request
        connection.send(plain_loop(pipe, make_plan(pages), Path(folder), steps, size))


@dataclass
class Timings:
    """One side of an alternated comparison, round by round: wall seconds, the 1-minute load
    average at the end of the round (the machine may be shared: a timing is only as good as the
    load it ran under), and the CPU seconds of the process that did the work (all its threads),
    which a busy neighbour stretches far less than the wall time."""

    seconds: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_bytes: list[int] = field(default_factory=list)  # on CUDA: the peak GPU memory of each round
    pages: int = 0  # pages painted per round

    def add(self, run) -> None:
        """Time ``run()``, which returns (wall seconds, CPU seconds, peak GPU bytes or None)."""
        seconds, cpu, peak = run()
        self.seconds.append(seconds)
        self.cpu.append(cpu)
        self.loads.append(os.getloadavg()[0])
        if peak is not None:
            self.peak_bytes.append(peak)

    def gpu(self, pages: int) -> str:
        """Pages per minute (best round) and peak GPU memory, on CUDA; empty on the CPU."""
        if not self.peak_bytes:
            return ""
        return f"; {pages / min(self.seconds) * 60:.1f} pages/min, peak GPU memory {max(self.peak_bytes) / 2**30:.2f} GiB"


def _summary(timings: Timings) -> str:
    import statistics

    times = timings.seconds
    rounds = ", ".join(f"{t:.2f} (load {load:.1f}, CPU {cpu:.1f})" for t, load, cpu in zip(times, timings.loads, timings.cpu, strict=True))
    return f"best {min(times):7.2f} s, median {statistics.median(times):7.2f} s (rounds: {rounds}){timings.gpu(timings.pages)}"


def _ratios(ours: Timings, plain: Timings) -> str:
    """Best-of wall ratio, each round's wall ratio, and the CPU-seconds ratios."""
    per_round = ", ".join(f"{o / p:.2f}" for o, p in zip(ours.seconds, plain.seconds, strict=True))
    per_round_cpu = ", ".join(f"{o / p:.2f}" for o, p in zip(ours.cpu, plain.cpu, strict=True))
    return (f"best {min(ours.seconds) / min(plain.seconds):.2f}, per round {per_round}; CPU seconds: best "
            f"{min(ours.cpu) / min(plain.cpu):.2f}, per round {per_round_cpu}")


def _alternate(rounds: int, first, second, pages: int) -> tuple[Timings, Timings]:
    """``first(round_)`` and ``second(round_)``, each painting ``pages`` pages and returning
    (wall seconds, CPU seconds, peak GPU bytes or None), timed in turn for ``rounds`` rounds, so
    both see the same machine."""
    first_timings, second_timings = Timings(pages=pages), Timings(pages=pages)
    for round_ in range(rounds):
        first_timings.add(lambda round_=round_: first(round_))
        second_timings.add(lambda round_=round_: second(round_))
    return first_timings, second_timings


def plain_run(plain: PlainLoop, pages: int, steps: int, folder: Path) -> tuple[float, float, int | None]:
    """The plain loop into a fresh ``folder``."""
    folder.mkdir()
    return plain.run(pages, steps, folder)


def bench_painting(args) -> None:
    """Final paint ours vs plain at equal settings; then (--draft) drafts vs the plain final at
    --draft-reference-steps; then (--previews) the cost of previews every 5 steps."""
    import numpy as np
    import torch
    from PIL import Image

    from fairytale.plan import save_plan
    from fairytale.render import RenderSettings, load_illustrator, render_book
    from fairytale.render.previews import PreviewDecoder

    work = Path(tempfile.mkdtemp(prefix="bench-render-"))
    try:
        models = Path(args.models_dir) if args.models_dir else work / "models"
        if args.model:
            model = Path(args.model)
        elif args.full_size:
            model = models / "sd14" if (models / "sd14" / "model_index.json").is_file() else full_size_model(models / "sd14")
        else:
            model = tiny_model(models)
        plan = make_plan(args.pages)
        settings = RenderSettings(
            model=str(model), steps=args.steps, device=args.device, batch_size=args.batch_size, width=args.size,
            height=args.size, precision=args.precision, compile=args.compile,
        )

        illustrator = load_illustrator(settings)
        size = args.size or illustrator.pipe.unet.config.sample_size * illustrator.pipe.vae_scale_factor
        plain = PlainLoop(model, size, args.device)
        where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
        print(f"model: {'full-size random-weight SD 1.4' if args.full_size else model}, {size}x{size}, {args.pages} pages, "
              f"{where}, torch threads {torch.get_num_threads()}, {illustrator.device_plan.describe()}, "
              f"load average {os.getloadavg()[0]:.1f} at start (shared machine)", flush=True)

        # warm-up (first calls pay for kernel selection, for the batch size the runs use), not timed
        warm = make_plan(args.pages)
        (work / "warm").mkdir()
        save_plan(warm, work / "warm" / "plan.json")
        render_book(work / "warm" / "plan.json", work / "warm" / "w.pdf", settings.with_(steps=1), illustrator=illustrator, progress=False)

        cuda = args.device.startswith("cuda")

        def ours(name: str, run_settings, **kwargs) -> tuple[float, float, int | None]:
            """One render: its painting's wall seconds, the CPU seconds of the whole
            ``render_book`` call (which also writes the PDF: the plain loop only saves PNGs), and
            its peak GPU memory on CUDA."""
            folder = work / name
            folder.mkdir(parents=True)
            save_plan(plan, folder / "plan.json")
            illustrator._forget_prompts()  # every round encodes its prompts, as the plain loop does
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            cpu_start = time.process_time()
            result = render_book(folder / "plan.json", folder / "ours.pdf", run_settings, illustrator=illustrator, progress=False, **kwargs)
            assert result.painted == list(range(1, args.pages + 1))
            ours.last = result
            return result.paint_seconds, time.process_time() - cpu_start, torch.cuda.max_memory_allocated() if cuda else None

        # 1. final paint at equal settings
        if not args.skip_final:
            plain_timings, ours_timings = _alternate(
                args.rounds,
                lambda round_: plain_run(plain, args.pages, args.steps, work / f"plain{round_}"),
                lambda round_: ours(f"ours{round_}", settings),
                args.pages,
            )
            result = ours.last
            diffs = [
                np.abs(
                    np.asarray(Image.open(work / "plain0" / f"page-{p.number:02d}.png"), dtype=np.int16)
                    - np.asarray(Image.open(result.book_dir / p.image), dtype=np.int16)
                ).max()
                for p in result.pages
            ]
            print(f"final paint, {args.steps} steps, DPM-Solver++:")
            print(f"  plain loop (1 pipeline call per page): {_summary(plain_timings)}")
            print(f"  fairytale (batch {illustrator.device_plan.batch_size}):              {_summary(ours_timings)}")
            print(f"  ratio ours/plain: {_ratios(ours_timings, plain_timings)}   (bar: <= 0.70)")
            print(f"  largest pixel difference ours vs plain over all pages: {max(diffs)} / 255", flush=True)

        # 2. drafts vs the plain final at the usual step count
        if args.draft:
            lora = random_lcm_lora(model, models / "lcm_lora") if not (models / "lcm_lora").is_dir() else models / "lcm_lora"
            draft = settings.with_(draft=True, draft_lora=str(lora), draft_steps=4)
            ours("draft-warm", draft.with_(draft_steps=1))
            plain_ref, drafts = _alternate(
                args.draft_rounds,
                lambda round_: plain_run(plain, args.pages, args.draft_reference_steps, work / f"plain-ref{round_}"),
                lambda round_: ours(f"draft{round_}", draft),
                args.pages,
            )
            print(f"draft, 4 LCM steps (random LoRA of the LCM-LoRA's shape) vs plain final at {args.draft_reference_steps} steps:")
            print(f"  plain final: {_summary(plain_ref)}")
            print(f"  draft:       {_summary(drafts)}")
            print(f"  ratio draft/plain final: {min(drafts.seconds) / min(plain_ref.seconds):.3f}   (bar: <= 0.20)", flush=True)

        # 3. previews every 5 steps vs none
        if args.previews:
            taesd = random_taesd(models / "taesd") if not (models / "taesd").is_dir() else models / "taesd"
            with_previews = settings.with_(steps=args.preview_steps, preview_model=str(taesd))
            shown = []
            making = []  # seconds inside the previews' own work (decode + pictures), with previews on

            original_show = PreviewDecoder.show

            def timed_show(decoder, *args):
                start = time.perf_counter()
                original_show(decoder, *args)
                making.append(time.perf_counter() - start)

            PreviewDecoder.show = timed_show
            try:
                off, on = _alternate(
                    args.rounds,
                    lambda round_: ours(f"previews-off{round_}", with_previews),
                    lambda round_: ours(f"previews-on{round_}", with_previews, on_preview=shown.append, preview_every=5),
                    args.pages,
                )
            finally:
                PreviewDecoder.show = original_show
            print(f"previews every 5 steps, {args.preview_steps} steps ({len(shown) // args.rounds} previews per render):")
            print(f"  without: {_summary(off)}")
            print(f"  with:    {_summary(on)}")
            print(f"  overhead: {min(on.seconds) / min(off.seconds) - 1:+.1%} (best vs best; bar: <= 5 %)")
            print(f"  the previews' own time within the renders with them: {sum(making):.2f} s of {sum(on.seconds):.2f} s "
                  f"({sum(making) / sum(on.seconds):.1%}; the same runs, so the machine's noise cancels)", flush=True)
        plain.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def illustration(seed: int, size: int, noisy: bool = False):
    """A picture-book-like picture: sky, sun, rolling hills, soft watercolour texture."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    if noisy:
        return Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8"))
    y, x = np.mgrid[0:size, 0:size] / size
    sky = np.stack([0.55 + 0.3 * y, 0.75 + 0.15 * y, 0.95 - 0.1 * y], -1)
    picture = sky.copy()
    cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3), rng.uniform(0.06, 0.12)
    sun = ((x - cx) ** 2 + (y - cy) ** 2) < r**2
    picture[sun] = [1.0, 0.85, 0.35]
    for layer in range(3):
        base = 0.55 + 0.12 * layer
        hill = base + 0.06 * np.sin(2 * np.pi * (x * rng.uniform(0.8, 2.5) + rng.uniform(0, 1)))
        colour = np.array([0.35 + 0.1 * layer, 0.6 - 0.08 * layer, 0.3]) * rng.uniform(0.8, 1.1)
        picture[y > hill] = colour
    for _ in range(6):  # a few creatures / trees as soft blobs
        bx, by, br = rng.uniform(0.1, 0.9), rng.uniform(0.55, 0.9), rng.uniform(0.03, 0.08)
        blob = ((x - bx) ** 2 + ((y - by) * 1.3) ** 2) < br**2
        picture[blob] = rng.uniform(0.1, 0.9, 3)
    texture = Image.fromarray((rng.random((size // 4, size // 4)) * 255).astype("uint8"))
    texture = np.asarray(texture.resize((size, size), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)
    picture = np.clip(picture * 255 + (texture[..., None] - 128) * 0.12, 0, 255).astype("uint8")
    return Image.fromarray(picture).filter(ImageFilter.GaussianBlur(0.8))


def bench_pdf(args, noisy: bool = False) -> None:
    from fairytale.pdf import BookContents, BookPage, PdfSettings, write_book_pdf
    from tests.render_support import STORY_TEXTS

    work = Path(tempfile.mkdtemp(prefix="bench-pdf-"))
    try:
        pages = []
        for i in range(32):
            path = work / f"picture-{i:02d}.png"
            illustration(i, 1024, noisy).save(path)
            pages.append(BookPage(i + 1, STORY_TEXTS[i % len(STORY_TEXTS)], path))
        contents = BookContents("The Lighthouse", "A. Benchmark", pages, pages[0].picture)
        settings = PdfSettings(bleed=True)
        cache = work / "print"
        start = time.perf_counter()
        report = write_book_pdf(contents, work / "book.pdf", settings, picture_cache=cache)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        write_book_pdf(contents, work / "again.pdf", settings, picture_cache=cache)
        warm = time.perf_counter() - start
        kind = "pure-noise pictures (worst case)" if noisy else "illustration-like pictures"
        print(f"PDF: 32 story pages + cover + title page, 1024x1024 {kind}, 8.5x8.5 in + bleed, 300 DPI, JPEG q{settings.jpeg_quality}")
        print(f"  cold build (no cached JPEGs): {cold:.2f} s   (bar: <= 3 s)")
        print(f"  warm build (JPEGs cached):    {warm:.2f} s")
        print(f"  size: {report.bytes / 1e6:.1f} MB   (bar: <= 40 MB)   pages: {report.page_count}   layouts: "
              f"{sorted(set(report.layouts.values()))}   CPU cores: {os.cpu_count()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SD 1.x model folder (default: build the tiny test model)")
    parser.add_argument("--full-size", action="store_true", help="full-size random-weight SD 1.4 (built from tests/benchmarks/configs/sd14)")
    parser.add_argument("--models-dir", help="where to build (and reuse) the benchmark's models (default: a temp folder)")
    parser.add_argument("--size", type=int, default=None, help="picture size (default: the model's)")
    parser.add_argument("--precision", default="auto", help="auto (fp32 on the CPU, fp16 on CUDA), fp32, fp16 (CUDA) or bf16")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the plain loop then runs in fp16, as users run it)")
    parser.add_argument("--compile", action="store_true", help="CUDA: torch.compile our UNet (the warm-up pays for compiling)")
    parser.add_argument("--draft", action="store_true", help="also time drafts (4 LCM steps) against the plain final")
    parser.add_argument("--draft-reference-steps", type=int, default=25)
    parser.add_argument("--draft-rounds", type=int, default=2)
    parser.add_argument("--previews", action="store_true", help="also time previews every 5 steps")
    parser.add_argument("--preview-steps", type=int, default=25)
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the CPU default (4)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating plain/ours rounds; the best of each counts")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-painting", action="store_true")
    parser.add_argument("--skip-final", action="store_true", help="skip the final paint ours vs plain (time --draft/--previews alone)")
    parser.add_argument("--skip-pdf", action="store_true")
    parser.add_argument("--noisy", action="store_true", help="also time the PDF with pure-noise pictures")
    args = parser.parse_args()
    if args.threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # our device plan leaves torch's threads alone then
        torch.set_num_threads(args.threads)
    if not args.skip_painting:
        bench_painting(args)
    if not args.skip_pdf:
        bench_pdf(args)
        if args.noisy:
            bench_pdf(args, noisy=True)


if __name__ == "__main__":
    main()
