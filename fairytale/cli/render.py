"""`fairytale render` (plan → pictures → PDF) and `fairytale book` (story → plan → PDF).

Both leave a book folder beside the PDF (``-o out/ginger.pdf`` → ``out/ginger/``) with the page
pictures, a cache that makes re-runs and resumed runs paint only what is missing, and a
``manifest.json``; ``book`` also writes ``plan.json`` there, to edit and render again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fairytale.cli.app import plain, stderr, user_errors
from fairytale.cli.export import (
    Facing,
    Format,
    Paper,
    Preset,
    SpineWidth,
    check_trim,
    print_publish_summary,
    publish_options,
)
from fairytale.cli.plan import refuse_overwriting_the_story
from fairytale.errors import FairytaleError

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.publish import PublishOptions
    from fairytale.render import RenderResult, RenderSettings

# Options shared by both commands, typed once.
Output = Annotated[Path, typer.Option("--output", "-o", help="The PDF to write; the book folder goes beside it.")]
Model = Annotated[str | None, typer.Option("--model", help="Illustration model: hub id or local folder (default: the backend's).")]
Backend = Annotated[
    str,
    typer.Option("--backend", help="Illustration backend: sd14 (SD v1.4, 512 px), sd21 (SD 2.1, 768 px), unclip (SD 2.1 unCLIP: pages painted from reference portraits)."),
]
Consistency = Annotated[
    str | None,
    typer.Option("--consistency", help="Keep characters alike by: seed, tokens (learned character tokens), adapter (SD 1.x: IP-Adapter from reference portraits), attention (sd14/sd21: each page's attention shares its characters' portraits, no extra weights), reference (unclip: reference portraits), or a combination: tokens+adapter, tokens+attention, adapter+attention, tokens+adapter+attention. Default by backend: adapter (sd14), attention (sd21), reference (unclip); tokens+ that when every main character has a learned token."),
]
NoiseLevel = Annotated[int, typer.Option("--noise-level", help="unclip: noise on the reference embedding, 0 (most alike) to 1000 (freest).")]
AdapterScale = Annotated[float, typer.Option("--adapter-scale", help="--consistency adapter: how strongly the portraits steer, 0 (not at all) to 1 (as trained).")]
AttentionStrength = Annotated[float, typer.Option("--attention-strength", help="--consistency attention: how much a page's attention follows its characters' portraits, 0 (not at all) to 1 (fully).")]
AdapterModel = Annotated[str | None, typer.Option("--adapter-model", help="IP-Adapter weights (hub id, or a local folder/file in the h94/IP-Adapter layout).")]
DriftCheck = Annotated[float | None, typer.Option("--drift-check", help="Repaint a page whose character's likeness to its portrait (CLIP, 0-100) is below this; off by default (see the README on choosing one).")]
MaxDriftRepaints = Annotated[int, typer.Option("--max-drift-repaints", help="--drift-check: repaints per page (apart from safety repaints).")]
ClipModel = Annotated[str | None, typer.Option("--clip-model", help="--drift-check: CLIP model (hub id or local folder).")]
AdapterEncoder = Annotated[str | None, typer.Option("--adapter-encoder", help="IP-Adapter's image encoder (hub id or local folder holding models/image_encoder).")]
Steps = Annotated[int, typer.Option("--steps", help="Denoising steps per picture.")]
Guidance = Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale (default: the backend's: 7.5 for sd14/sd21, 10 for unclip).")]
Scheduler = Annotated[str, typer.Option("--scheduler", help="Sampler: dpm++ (default), unipc, euler, euler-a, ddim, pndm, lms, model.")]
Width = Annotated[int | None, typer.Option("--width", help="Picture width in pixels (default: the model's native size).")]
Height = Annotated[int | None, typer.Option("--height", help="Picture height in pixels (default: the model's native size).")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Pages painted at once (default: by device memory).")]
Device = Annotated[str | None, typer.Option("--device", help="cuda, cuda:N, mps or cpu (default: the best available).")]
LowVram = Annotated[bool, typer.Option("--low-vram", help="For 8-12 GiB cards: model CPU offload, attention slicing, one page at a time.")]
PrintQuality = Annotated[bool, typer.Option("--print", help="Upscale pictures x4 with the SD x4 upscaler for 300 DPI print.")]
UpscalerModel = Annotated[str | None, typer.Option("--upscaler-model", help="x4 upscaler: hub id or local folder.")]
SafetyModel = Annotated[str | None, typer.Option("--safety-model", help="Safety checker for models that ship none: hub id or local folder.")]
MaxRepaints = Annotated[int, typer.Option("--max-repaints", help="Repaints of a picture the safety checker flags before a placeholder is used.")]
Trim = Annotated[str, typer.Option("--trim", help="Page size: 8.5x8.5 (default), 8x10, a4, letter.")]
Bleed = Annotated[bool, typer.Option("--bleed", help="Add 0.125 in bleed around every page (sets TrimBox/BleedBox) for a print shop.")]
Layout = Annotated[str, typer.Option("--layout", help="auto, picture_above_text or full_bleed (pages may set their own in the plan).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")]
Draft = Annotated[
    bool,
    typer.Option("--draft", help="Quick draft pictures: 4 steps with the LCM-LoRA (SD 1.x; fewer steps on other models). Render again without it for the final pictures."),
]
DraftSteps = Annotated[int, typer.Option("--draft-steps", help="LCM steps of a draft picture, 1-50 (the LCM-LoRA is made for 4-8).")]
DraftLora = Annotated[str | None, typer.Option("--draft-lora", help="The LCM-LoRA for drafts: hub id or local folder.")]
Precision = Annotated[
    str,
    typer.Option("--precision", help="auto (float16 on CUDA, float32 elsewhere), fp32, fp16 (CUDA) or bf16 (CPUs with native bfloat16; pictures change slightly)."),
]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the UNet (CUDA): the first batch takes a minute or two longer, the rest are faster.")]


#: Command parameters that set a RenderSettings field of another name.
_FIELD_OF = {"print_quality": "upscale", "compile_unet": "compile"}


def render_settings(parameters: Mapping[str, Any]) -> RenderSettings:
    """The RenderSettings a command's parameters ask for (pass ``locals()`` first thing in the
    command): each parameter named as a settings field, or renamed in ``_FIELD_OF``, sets it;
    the others (output, quiet, the planner's models…) are the command's own."""
    from dataclasses import fields

    from fairytale.render import RenderSettings

    names = {f.name for f in fields(RenderSettings)}
    values = {_FIELD_OF.get(name, name): value for name, value in parameters.items()}
    return RenderSettings(**{name: value for name, value in values.items() if name in names})


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e5 else f"{count / 1e3:.0f} kB"


def print_summary(result: RenderResult) -> None:
    """The end-of-run summary: the book, the pictures, the time, the print quality, warnings."""
    from rich.table import Table

    console = stderr()
    report = result.pdf_report
    story_pages = len(result.pages)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Book", f"{plain(result.pdf)} · {report.page_count} pages (cover, title page, {story_pages} story pages) · {_size(report.bytes)}")
    pictures = f"{len(result.painted)} painted, {len(result.reused)} reused from the cache"
    if result.repainted:
        pictures += f" · repainted after a safety flag: {', '.join(map(str, result.repainted))}"
    if result.placeholders:
        pictures += f" · [yellow]placeholders: {', '.join(map(str, result.placeholders))}[/]"
    table.add_row("Pictures", pictures)
    timing = f"{result.seconds:.1f} s in all"
    if result.painted:
        per_page = result.paint_seconds / len(result.painted)
        timing += f" · painting {result.paint_seconds:.1f} s, {per_page:.1f} s/page on {result.device}"
    table.add_row("Time", timing)
    dpis = [p.effective_dpi for p in result.pages]
    table.add_row("Print", f"{min(dpis):.0f}-{max(dpis):.0f} DPI of real detail, placed at {result.settings.dpi} DPI · font {plain(report.font)} (embedded)")
    table.add_row("Folder", f"{plain(result.book_dir)}{'/'} (pages/, manifest.json)")
    if result.new_seeds:
        seeds = ", ".join(f"page {n}: {s}" for n, s in sorted(result.new_seeds.items()))
        table.add_row("New seeds", f"{seeds} (saved in {plain(result.plan)})")
    if result.drafts:
        table.add_row(
            "Drafts",
            f"pages {', '.join(map(str, result.drafts))} ({result.draft_note}). Render without --draft for the final "
            "pictures: each is a new painting from the same seed, not an enlargement of its draft",
        )
    if result.redrawn_drafts:
        table.add_row("Finals", f"pages {', '.join(map(str, result.redrawn_drafts))} were drafts and are now painted in full")
    console.print(table, highlight=False)
    for warning in result.warnings:
        console.print(f"[yellow]Warning:[/] {plain(warning)}", highlight=False)


@user_errors
def render(
    plan: Annotated[Path, typer.Argument(help="The book plan (JSON) to paint.")],
    output: Output,
    model: Model = None,
    backend: Backend = "sd14",
    consistency: Consistency = None,
    noise_level: NoiseLevel = 0,
    adapter_scale: AdapterScale = 0.6,
    attention_strength: AttentionStrength = 0.5,
    adapter_model: AdapterModel = None,
    adapter_encoder: AdapterEncoder = None,
    drift_check: DriftCheck = None,
    max_drift_repaints: MaxDriftRepaints = 2,
    clip_model: ClipModel = None,
    pages: Annotated[str | None, typer.Option("--pages", help="Repaint only these pages with new seeds, e.g. 3,7 or 2-5.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="With --pages: the seed to repaint them with, the same for each page listed (default: a new one for each).")] = None,
    steps: Steps = 25,
    guidance: Guidance = None,
    scheduler: Scheduler = "dpm++",
    width: Width = None,
    height: Height = None,
    batch_size: BatchSize = None,
    device: Device = None,
    low_vram: LowVram = False,
    print_quality: PrintQuality = False,
    upscaler_model: UpscalerModel = None,
    safety_model: SafetyModel = None,
    max_repaints: MaxRepaints = 3,
    trim: Trim = "8.5x8.5",
    bleed: Bleed = False,
    layout: Layout = "auto",
    formats: Format = "pdf",
    preset: Preset = None,
    paper: Paper = None,
    spine_width: SpineWidth = None,
    facing: Facing = False,
    draft: Draft = False,
    draft_steps: DraftSteps = 4,
    draft_lora: DraftLora = None,
    precision: Precision = "auto",
    compile_unet: Compile = False,
    quiet: Quiet = False,
) -> None:
    """Paint a book plan's pictures and lay out the print-ready PDF.

    Pictures already painted with the same settings are reused, so an interrupted run resumes
    and an edited plan repaints only the pages that changed.

    [bold]fairytale render out/ginger/plan.json -o out/ginger.pdf --pages 3,7[/]

    Several GPUs: [bold]accelerate launch --num_processes 4 -m fairytale render PLAN -o BOOK.pdf[/]
    splits the pages to paint between the processes; process 0 lays out the book.
    """
    settings = render_settings(locals())  # first: before any other name is bound here
    from fairytale.model_check import ensure, render_needs
    from fairytale.plan import load_plan
    from fairytale.render import check_outputs, render_book
    from fairytale.render.distributed import FollowerError

    # Bad options, a bad plan or output are said before missing models.
    publishing = publish_options(formats, preset, paper, spine_width, rendering=True, facing=facing)
    check_trim(publishing, trim)
    from fairytale.render import get_backend

    # an impossible --consistency (adapter on SD 2.x, tokens without tokens) is one line, before models
    planned = load_plan(plan)
    get_backend(settings.backend)(settings).consistency(planned)
    check_outputs(output)
    ensure(
        render_needs(
            backend, model, safety_model, print_quality, upscaler_model, draft, draft_lora,
            consistency=consistency, adapter_model=adapter_model, adapter_encoder=adapter_encoder,
            clip_model=clip_model if drift_check is not None else None, drift_check=drift_check is not None,
            plan=planned,
        ),
        stderr(),
    )
    try:
        result = render_book(plan, output, settings, pages=pages, seed=seed, progress=not quiet)
    except FollowerError:  # under accelerate launch: process 0 has said what went wrong
        raise typer.Exit(code=1) from None
    if result.pdf_report is None:  # the other processes of a team lay out nothing
        return
    if not quiet:
        print_summary(result)
    _publish(result, publishing, quiet)


@user_errors
def book(
    story: Annotated[Path, typer.Argument(help="The story, a text file.")],
    output: Output,
    model: Model = None,
    ner_model: Annotated[str | None, typer.Option("--ner-model", help="NER model (characters): hub id or local folder.")] = None,
    qa_model: Annotated[str | None, typer.Option("--qa-model", help="Question-answering model (looks, scenes): hub id or local folder.")] = None,
    nli_model: Annotated[str | None, typer.Option("--nli-model", help="NLI model (kind, mood, presence): hub id or local folder.")] = None,
    title: Annotated[str | None, typer.Option("--title", help="Book title (default: the story's first line if it is short).")] = None,
    author: Annotated[str | None, typer.Option("--author", help="Author shown on the cover.")] = None,
    words_per_page: Annotated[int | None, typer.Option("--words-per-page", help="About how many words go on a page, 5-120 (default 35).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Master seed the page seeds are drawn from.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Plan again even if the book folder has a plan.json (your edits to it are lost).")] = False,
    backend: Backend = "sd14",
    consistency: Consistency = None,
    noise_level: NoiseLevel = 0,
    adapter_scale: AdapterScale = 0.6,
    attention_strength: AttentionStrength = 0.5,
    adapter_model: AdapterModel = None,
    adapter_encoder: AdapterEncoder = None,
    drift_check: DriftCheck = None,
    max_drift_repaints: MaxDriftRepaints = 2,
    clip_model: ClipModel = None,
    steps: Steps = 25,
    guidance: Guidance = None,
    scheduler: Scheduler = "dpm++",
    width: Width = None,
    height: Height = None,
    batch_size: BatchSize = None,
    device: Device = None,
    low_vram: LowVram = False,
    print_quality: PrintQuality = False,
    upscaler_model: UpscalerModel = None,
    safety_model: SafetyModel = None,
    max_repaints: MaxRepaints = 3,
    trim: Trim = "8.5x8.5",
    bleed: Bleed = False,
    layout: Layout = "auto",
    formats: Format = "pdf",
    preset: Preset = None,
    paper: Paper = None,
    spine_width: SpineWidth = None,
    facing: Facing = False,
    draft: Draft = False,
    draft_steps: DraftSteps = 4,
    draft_lora: DraftLora = None,
    precision: Precision = "auto",
    compile_unet: Compile = False,
    quiet: Quiet = False,
) -> None:
    """Turn a story into a picture book in one go: plan, paint, lay out.

    Leaves [bold]plan.json[/] and the pictures in the book folder beside the PDF: edit the plan
    and run [bold]fairytale render[/] on it to change a page.

    [bold]fairytale book story.txt -o out/ginger.pdf[/]
    """
    settings = render_settings(locals())  # first: before any other name is bound here
    from fairytale.files import ensure_dir, sha256_file
    from fairytale.plan import load_plan, save_plan
    from fairytale.render import check_outputs, get_backend, render_book

    get_backend(backend)  # an unknown backend fails before minutes of planning
    from fairytale.pages import check_words_per_page

    check_words_per_page(words_per_page)  # …and so does an impossible page size
    publishing = publish_options(formats, preset, paper, spine_width, rendering=True, facing=facing)
    check_trim(publishing, trim)
    if not story.is_file():
        raise FairytaleError(f"Story file not found: {story}")
    pdf, book_dir = check_outputs(output)
    plan_file = book_dir / "plan.json"
    refuse_overwriting_the_story(story, pdf, plan_file, book_dir / "manifest.json")
    console = stderr()
    from fairytale.model_check import ensure, plan_needs, render_needs

    planning = force or not plan_file.exists()
    ensure(
        render_needs(
            backend, model, safety_model, print_quality, upscaler_model, draft, draft_lora,
            consistency=consistency, adapter_model=adapter_model, adapter_encoder=adapter_encoder,
            clip_model=clip_model if drift_check is not None else None, drift_check=drift_check is not None,
            plan=None if planning else load_plan(plan_file),  # not planned yet: its pages may show characters
        )
        + (plan_needs(ner_model, qa_model, nli_model, backend, model, device) if planning else []),
        console,
    )
    if plan_file.exists() and not force:
        existing = load_plan(plan_file)
        if existing.source.sha256 != sha256_file(story):
            raise FairytaleError(
                f"{plan_file} exists from an earlier run (perhaps edited): render it with "
                f"`fairytale render {plan_file} -o {pdf}`, or pass --force to plan the story again"
            )
        if not quiet:
            console.print(f"[dim]Using the plan of this story already in {plain(plan_file)} (pass --force to plan again).[/]")
    else:
        try:
            from fairytale.planner import plan_story
        except ImportError as exc:  # the planner ships in the same package; this is a broken install
            raise FairytaleError(f"The story planner is not available in this installation ({exc})") from None
        if not quiet:
            console.print("[dim]Planning the book: pages, characters, scenes, prompts…[/]")
        try:
            plan = plan_story(
                story, title=title, author=author, words_per_page=words_per_page, seed=seed, ner_model=ner_model,
                qa_model=qa_model, nli_model=nli_model, model=model, backend=backend, device=device,
            )
        except KeyboardInterrupt:
            from fairytale.errors import Interrupted

            raise Interrupted("the story was not planned yet, nothing was written") from None
        ensure_dir(book_dir)
        save_plan(plan, plan_file)
    result = render_book(plan_file, pdf, settings, progress=not quiet)
    if not quiet:
        print_summary(result)
    _publish(result, publishing, quiet)


def _publish(result: RenderResult, publishing: PublishOptions, quiet: bool) -> None:
    """--format epub / --preset: made from the book folder the render just filled."""
    if not (publishing.formats or publishing.preset):
        return
    from fairytale.publish import publish_book

    published = publish_book(result.book_dir, publishing, trim=result.settings.trim, layout=result.settings.layout)
    if not quiet:
        print_publish_summary(published)
    if published.preflight and published.preflight.errors:
        raise FairytaleError(f"preflight found {len(published.preflight.errors)} problems the service would reject (see {published.files['preflight']})")


def register(app: typer.Typer) -> None:
    """Add `fairytale render` and `fairytale book` to ``app``."""
    app.command("render")(render)
    app.command("book")(book)
