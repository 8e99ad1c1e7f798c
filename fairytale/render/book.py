"""Plan → pictures → PDF: the whole render as one function, for the CLI and the notebooks.

>>> from fairytale.render import RenderSettings, render_book          # doctest: +SKIP
>>> result = render_book("out/ginger/plan.json", "out/ginger.pdf", RenderSettings(bleed=True))
>>> result.pdf, result.painted, result.reused

The book folder sits beside the PDF, named after it (``out/ginger.pdf`` → ``out/ginger/``)::

    out/ginger/
      cache/<key>.png, <key>.json   every finished picture, by a hash of what made it
      pages/page-01.png …           the current picture of each page
      upscaled/<key>.png            --print: pictures upscaled x4
      print/<hash>.jpg              the pictures at print resolution, as placed in the PDF
      manifest.json                 settings, model, and per page: picture, seed, prompt,
                                    characters, safety outcome, effective DPI
      plan.json                     (fairytale book) the plan, to edit and render again
      references/<character>.png    (unclip) reference portraits, recorded in the plan
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from fairytale import __version__
from fairytale.book_lock import book_lock
from fairytale.embeddings import LearnedEmbedding, describe_family, read_embedding
from fairytale.errors import FairytaleError, PlanError
from fairytale.files import can_create_files_in, check_output_path, ensure_dir, sha256_file
from fairytale.pdf import BookContents, BookPage, PdfReport, PdfSettings, plan_story_layouts, write_book_pdf
from fairytale.plan import BookPlan, load_plan, resolve_plan_path, save_plan
from fairytale.render import drafts
from fairytale.render.backends import Backend, PaintRequest, get_backend
from fairytale.render.devices import plan_for
from fairytale.render.distributed import current_team
from fairytale.render.illustrator import Illustrator
from fairytale.render.legacy_keys import adopt_legacy
from fairytale.render.manifest import Manifest, ManifestPage, load_manifest, save_manifest
from fairytale.render.page_store import PageStore, StoredPicture
from fairytale.render.painting import PageJob, paint_pages
from fairytale.render.previews import EVERY, Preview, PreviewCallback, PreviewDecoder
from fairytale.render.progress import QuietProgress, RenderProgress, RichProgress
from fairytale.render.references import paint_references
from fairytale.render.safety import SafetyChecker, placeholder_picture
from fairytale.render.settings import RenderSettings, parse_pages
from fairytale.render.upscale import UpscaleJob, upscale_pictures


@dataclass
class RenderResult:
    """What a render made and how it went."""

    pdf: Path
    book_dir: Path
    manifest: Path
    plan: Path
    pages: list[ManifestPage]
    painted: list[int]  # pages painted in this run
    reused: list[int]  # pages taken from the cache
    pictures_painted: int  # pictures painted, flagged ones included
    seconds: float
    paint_seconds: float
    pdf_report: PdfReport | None  # None: painted, not laid out (lay_out=False, or a helper process)
    device: str | None
    settings: RenderSettings
    unet_calls: int = 0
    new_seeds: dict[int, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    drafts: list[int] = field(default_factory=list)  # pages whose picture is a draft
    redrawn_drafts: list[int] = field(default_factory=list)  # draft pages painted again at full quality
    draft_note: str | None = None  # how the drafts of this run were painted

    @property
    def repainted(self) -> list[int]:
        """Pages whose first picture was flagged and that were painted again."""
        return [p.number for p in self.pages if p.painted and p.safety == "repainted"]

    @property
    def placeholders(self) -> list[int]:
        return [p.number for p in self.pages if p.safety == "placeholder"]


def book_dir_for(pdf_path: Path) -> Path:
    """The book folder that goes with ``pdf_path``: beside it, named after it."""
    return Path(pdf_path).with_suffix("")


def check_outputs(pdf_path: Path) -> tuple[Path, Path]:
    """Check that the PDF and its book folder can be written; returns both paths."""
    pdf_path = Path(pdf_path)
    if pdf_path.suffix.lower() != ".pdf":
        raise FairytaleError(f"The output must be a .pdf file, not {pdf_path}")
    check_output_path(pdf_path)
    book_dir = book_dir_for(pdf_path)
    if book_dir.exists() and not book_dir.is_dir():
        raise FairytaleError(f"Cannot make the book folder {book_dir}: a file of that name exists")
    if book_dir.is_dir() and not can_create_files_in(book_dir):
        raise FairytaleError(f"Book folder is not writable: {book_dir}")
    return pdf_path, book_dir


def next_seed(seed: int) -> int:
    """The new seed ``render --pages`` gives a page (derived from its old one, so a repeated
    command repaints the same way and a repaint killed half-way resumes)."""
    digest = hashlib.sha256(f"fairytale-new-seed:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**63


def _uses(token: str, *texts: str) -> bool:
    return any(token in text for text in texts)


def _embeddings(plan: BookPlan, plan_path: Path, backend: Backend) -> tuple[list[LearnedEmbedding], dict[str, str]]:
    """The learned tokens some page uses: read (to check them now, before any painting) and
    hashed (for the cache keys)."""
    texts = [t for page in plan.pages for t in (page.prompt, plan.negative_prompt(page))]
    loaded, hashes = [], {}
    for entry in plan.embeddings:
        if not _uses(entry.token, *texts):
            continue
        path = resolve_plan_path(plan_path, entry.path)
        if not path.is_file():
            raise PlanError(f"Embedding file for {entry.token} not found: {path} (listed in {plan_path})")
        if entry.family and backend.family and entry.family != backend.family:
            raise PlanError(
                f"Embedding {entry.token} ({path}) is for {describe_family(entry.family, 0)}, but backend "
                f"'{backend.name}' uses {describe_family(backend.family, 0)}. Render with the backend it was trained for."
            )
        loaded.append(read_embedding(path, token=entry.token))
        hashes[entry.token] = sha256_file(path)
    return loaded, hashes


def _cover_page(plan: BookPlan) -> int:
    """The page whose picture goes on the cover: the one showing most main characters."""
    main = {c.id for c in plan.characters if c.main}
    best = max(plan.pages, key=lambda p: (len(main.intersection(p.characters)), len(p.characters), -p.number))
    return best.number


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(folder).resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _progress(progress: RenderProgress | bool | None) -> RenderProgress:
    if isinstance(progress, RenderProgress):
        return progress
    return RichProgress() if progress else QuietProgress()


def render_book(
    plan_path: Path | str,
    pdf_path: Path | str,
    settings: RenderSettings | None = None,
    *,
    pages: str | list[int] | None = None,
    seed: int | None = None,
    illustrator: Illustrator | None = None,
    progress: RenderProgress | bool | None = True,
    on_preview: PreviewCallback | None = None,
    preview_every: int = EVERY,
    lay_out: bool = True,
) -> RenderResult:
    """Paint every page of the plan at ``plan_path`` that is not cached yet and write the PDF.

    ``pages`` (``"3,7"``, ``"2-5"`` or a list) repaints just those pages with new seeds
    (``seed`` to choose one) and records the seeds in the plan file; the other pages are reused.
    ``illustrator`` reuses a loaded model across calls (notebooks); otherwise one is loaded
    only if some page must be painted. Bad input raises :class:`FairytaleError` before anything
    is written.

    With ``settings.draft`` the pages that have no picture yet are painted as drafts (see
    :mod:`fairytale.render.drafts`); a later render without it paints those pages again at full
    quality and reuses every other picture. ``on_preview`` receives a
    :class:`~fairytale.render.previews.Preview` of the batch in progress every
    ``preview_every`` steps.
    is written. ``lay_out=False`` paints and stops there (no page files, PDF or manifest).

    Under ``accelerate launch`` every process calls this: the pages to paint are split between
    them and process 0 lays out the book (see :mod:`fairytale.render.distributed`); the others
    return once their share is painted.
    """
    started = time.perf_counter()
    team = current_team()
    settings = team.place(settings or RenderSettings())
    plan_path, pdf_path = Path(plan_path), Path(pdf_path)
    reporter = _progress(progress if team.is_main else False)
    with reporter, contextlib.ExitStack() as held:
        # 1. check everything that can be checked before painting; nothing is written yet
        plan = load_plan(plan_path)
        backend = get_backend(settings.backend)(settings)
        # what this run paints with: the backend itself, or its draft settings
        painter = get_backend(settings.backend)(drafts.draft_settings(settings, backend.family)) if settings.draft else backend
        draft_mark = drafts.lora_fingerprint(drafts.lora_source(settings, backend.family)) if settings.draft else None
        selected = parse_pages(",".join(map(str, pages)) if isinstance(pages, list) else pages, len(plan.pages))
        if seed is not None and selected is None:
            raise FairytaleError("--seed goes with --pages: it sets the seed of the pages you repaint")
        if seed is not None and not 0 <= seed < 2**63:
            raise FairytaleError(f"--seed must be between 0 and 2^63-1, not {seed}")
        pdf_path, book_dir = check_outputs(pdf_path)
        if selected and not (can_create_files_in(plan_path.parent) and _writable(plan_path)):
            raise FairytaleError(f"Cannot record the new seeds: the plan file {plan_path} is not writable")
        embeddings, embedding_hashes = _embeddings(plan, plan_path, backend)
        consistency = backend.consistency(plan)  # an impossible --consistency fails here, before painting
        width, height = backend.picture_size()
        pdf_settings = PdfSettings(settings.trim, settings.bleed, settings.dpi, settings.jpeg_quality, settings.layout)
        _, layout_warnings = plan_story_layouts(
            [(p.number, p.text, p.layout) for p in plan.pages], pdf_settings, width / height
        )
        if illustrator is not None:
            _check_illustrator(illustrator, backend)
        if on_preview is not None and preview_every < 1:
            raise FairytaleError(f"preview_every must be at least 1, not {preview_every}")
        device_plan = illustrator.device_plan if illustrator else None
        # one painting job per book, across processes: a team's lock is held by its process 0
        team.lead(lambda: held.enter_context(book_lock(book_dir)))

        # 2. new seeds for the pages to repaint (written to the plan once they are painted)
        new_seeds: dict[int, int] = {}
        locked_asked = [n for n in selected or [] if plan.pages[n - 1].locked]  # a locked page keeps its picture
        for number in sorted(set(selected or []) - set(locked_asked)):
            page = plan.pages[number - 1]
            new_seeds[number] = seed if seed is not None else next_seed(page.seed)
            page.seed = new_seeds[number]

        # 2b. reference portraits the backend paints from: painted once, recorded in the plan
        owned = None
        reference_warnings: list[str] = []
        missing = backend.missing_references(plan)
        if missing and team.is_main:
            if not (can_create_files_in(plan_path.parent) and _writable(plan_path)):
                raise FairytaleError(f"Cannot record the reference portraits: the plan file {plan_path} is not writable")
            if illustrator is None:
                device_plan = plan_for(settings)
                reporter.stage(f"Loading {backend.describe_model()} on {device_plan.describe()}…")
                illustrator = owned = backend.load(device_plan)
            illustrator.use_embeddings(embeddings)
            reporter.stage(f"Painting reference portraits of {', '.join(plan.character(i).name for i in missing)}…")
            reference_warnings = paint_references(
                illustrator, plan, plan_path, book_dir, missing, max_repaints=settings.max_repaints
            )
            # Only the references go into the file now; new page seeds wait until painted (step 5).
            recorded = load_plan(plan_path)
            for character_id in missing:
                recorded.character(character_id).reference = plan.character(character_id).reference
            save_plan(recorded, plan_path)
        if missing and team.size > 1:
            team.wait()  # process 0 has painted the portraits and recorded them in the plan
            recorded = load_plan(plan_path)
            for character_id in missing:
                plan.character(character_id).reference = recorded.character(character_id).reference

        # 3. what is cached and what must be painted (a draft run takes a page's final picture
        #    when there is one, else its draft, and paints drafts of the rest)
        store = PageStore(book_dir)
        jobs: list[PageJob] = []
        stored: dict[int, StoredPicture] = {}
        draft_pages: set[int] = set()
        for page in plan.pages:
            kept = store.get(page.picture) if page.locked and page.picture else None
            if kept:  # a locked page keeps the picture it names, whatever its prompt or the settings
                stored[page.number] = kept
                continue
            request = backend.request_for(plan, page, plan_path)
            used = {t: h for t, h in embedding_hashes.items() if _uses(t, request.prompt, request.negative_prompt)}
            key = backend.picture_key(request, used)
            found = store.get(key) or adopt_legacy(store, key, backend.legacy_picture_keys(request, used))
            if draft_mark is not None and not found:
                request = _as_draft(request, draft_mark)
                key = painter.picture_key(request, used)
                found = store.get(key)
                draft_pages.add(page.number)
            if found:
                stored[page.number] = found
            else:
                jobs.append(PageJob(request, key))
        warnings = list(layout_warnings) + reference_warnings
        warnings += [f"page {n} is locked: it keeps its picture (unlock it to repaint it)" for n in locked_asked]
        draft_note = drafts.describe(settings, backend.family) if draft_pages else None
        redrawn = sorted(({job.request.page for job in jobs} - draft_pages) & _draft_pages_before(book_dir))

        # 4. paint what is missing (the model is loaded only now, and only if needed); in a
        #    team, each process paints its share, once all have listed the same jobs
        team.wait()
        mine = team.share(jobs)
        if team.size > 1 and jobs:
            reporter.stage(f"{len(jobs)} pages to paint, shared by {team.size} processes ({len(mine)} in this one)")
        paint_seconds, pictures_painted, unet_before, warned_before = 0.0, 0, 0, len(warnings)
        if mine:
            if illustrator is None:
                device_plan = plan_for(settings)
                reporter.stage(f"Loading {backend.describe_model()} on {device_plan.describe()}…")
                illustrator = owned = backend.load(device_plan)
            illustrator.configure(painter)
            if draft_note:
                reporter.stage(f"Painting {draft_note}…")
            if redrawn:
                reporter.stage(
                    f"Pages {', '.join(map(str, redrawn))} were drafts: painting them at full quality, as new "
                    "pictures from the same seeds (not enlargements of the drafts)…"
                )
            illustrator.previews = (
                PreviewDecoder.load(
                    settings.preview_model, illustrator.device_plan, preview_every, _both(reporter.preview, on_preview)
                )
                if on_preview is not None
                else None  # nobody looks: nothing loaded, nothing decoded
            )
            illustrator.use_embeddings(embeddings)
            for job in mine:
                if illustrator.prompt_too_long(job.request.prompt):
                    warnings.append(f"page {job.request.page}: the prompt is longer than the text encoder reads (77 tokens); the end is ignored")
            unet_before = illustrator.unet_calls
            batch = settings.batch_size or illustrator.device_plan.batch_size
            report = paint_pages(
                illustrator, mine, store, batch_size=batch, max_repaints=settings.max_repaints, progress=reporter
            )
            stored.update(report.stored)
            paint_seconds, pictures_painted = report.seconds, report.pictures_painted
            warnings.extend(report.warnings)
        unet_calls = (illustrator.unet_calls - unet_before) if mine and illustrator else 0
        if team.size > 1:
            shares = team.gather((paint_seconds, pictures_painted, unet_calls, warnings[warned_before:]))
            paint_seconds = max(share[0] for share in shares)
            pictures_painted, unet_calls = sum(share[1] for share in shares), sum(share[2] for share in shares)
            warnings = warnings[:warned_before] + [w for share in shares for w in share[3]]
            stored.update({job.request.page: store.get(job.key) for job in jobs if job.request.page not in stored})
        if not team.is_main:  # process 0 records the seeds and lays out the book
            if owned is not None:
                owned.close()
            return _painted_only(plan_path, pdf_path, book_dir, mine, started, paint_seconds, pictures_painted, device_plan, settings, unet_calls, warnings)

        # 5. the plan records the seeds of repainted pages
        if new_seeds:
            save_plan(plan, plan_path)
        if not lay_out:
            if owned is not None:
                owned.close()
            return _painted_only(plan_path, pdf_path, book_dir, jobs, started, paint_seconds, pictures_painted, device_plan, settings, unet_calls, warnings, new_seeds)

        # 6. page files (placeholders drawn for pages that have one)
        page_files: dict[int, Path] = {}
        for page in plan.pages:
            picture = stored[page.number]
            source = picture.image or _placeholder_file(store, picture.width, picture.height)
            page_files[page.number] = store.page_file(page.number, source)
        store.remove_stale_pages(len(plan.pages))

        # 7. --print: upscale (the painting model is freed first: one big model on the GPU)
        print_files: dict[int, Path] = {}
        if settings.upscale:
            if owned is not None:
                checker = owned.safety
                owned.close()
                owned = illustrator = None
            else:
                checker = illustrator.safety if illustrator else None
            device_plan = device_plan or plan_for(settings)
            upscale_jobs = [
                UpscaleJob(p.number, page_files[p.number], p.prompt, plan.negative_prompt(p), p.seed)
                for p in plan.pages
                if stored[p.number].image is not None
            ]
            print_files, upscale_warnings = upscale_pictures(
                upscale_jobs,
                book_dir,
                ref=settings.upscaler_model,
                steps=settings.upscale_steps,
                device_plan=device_plan,
                safety=lambda: checker or SafetyChecker.for_model(backend.role, settings.model, device_plan, settings.safety_model),
                progress=reporter,
            )
            warnings.extend(upscale_warnings)
        if owned is not None:
            owned.close()

        # 8. the PDF
        reporter.stage("Writing the PDF…")
        cover = _cover_page(plan)
        placed = {n: print_files.get(n, f) for n, f in page_files.items()}
        contents = BookContents(
            title=plan.title,
            author=plan.author,
            pages=[BookPage(p.number, p.text, placed[p.number], p.layout) for p in plan.pages],
            cover_picture=placed[cover],
            credit=f"Pictures painted with {backend.describe_model()} · made with fAIrytale {__version__}",
        )
        pdf_report = write_book_pdf(contents, pdf_path, pdf_settings, picture_cache=ensure_dir(book_dir / "print"))
        warnings.extend(w for w in pdf_report.warnings if w not in warnings)
        low = [n for n, dpi in pdf_report.effective_dpi.items() if n and dpi < settings.dpi * 0.8]
        if low and not settings.upscale:
            lowest = min(pdf_report.effective_dpi[n] for n in low)
            warnings.append(
                f"{len(low)} picture{'s' if len(low) > 1 else ''} print below {settings.dpi} DPI of real detail "
                f"(lowest {lowest:.0f} DPI); --print upscales them x4 with the SD upscaler"
            )

        # 9. the manifest, last
        painted_now = {job.request.page for job in jobs}
        manifest_pages = []
        for page in plan.pages:
            picture = stored[page.number]
            manifest_pages.append(
                ManifestPage(
                    number=page.number,
                    image=_relative(page_files[page.number], book_dir),
                    print_image=_relative(print_files[page.number], book_dir) if page.number in print_files else None,
                    key=picture.key,
                    prompt=page.prompt,
                    negative_prompt=plan.negative_prompt(page),
                    requested_seed=picture.requested_seed,
                    seed=picture.seed,
                    characters=list(page.characters),
                    safety=picture.safety,
                    attempts=picture.attempts,
                    painted=page.number in painted_now,
                    seconds=picture.seconds,
                    width=picture.width,
                    height=picture.height,
                    layout=pdf_report.layouts[page.number],
                    effective_dpi=pdf_report.effective_dpi[page.number],
                    draft=page.number in draft_pages,
                )
            )
        manifest = Manifest(
            title=plan.title,
            author=plan.author,
            plan=_relative(plan_path, book_dir),
            pdf=_relative(pdf_path, book_dir),
            backend=backend.name,
            model=backend.describe_model(),
            model_fingerprint=backend.model_fingerprint(),
            settings=settings.as_dict()
            | {"width": width, "height": height, "guidance": backend.guidance, "consistency": consistency},
            device=device_plan.describe() if device_plan else "none (every picture was cached)",
            fairytale_version=__version__,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            cover_page=cover,
            pdf_pages=pdf_report.page_count,
            pdf_bytes=pdf_report.bytes,
            pages=manifest_pages,
            warnings=warnings,
        )
        manifest_path = save_manifest(manifest, ensure_dir(book_dir))

    return RenderResult(
        pdf=pdf_path,
        book_dir=book_dir,
        manifest=manifest_path,
        plan=plan_path,
        pages=manifest_pages,
        painted=sorted(painted_now),
        reused=sorted(set(page_files) - painted_now),
        pictures_painted=pictures_painted,
        seconds=time.perf_counter() - started,
        paint_seconds=paint_seconds,
        pdf_report=pdf_report,
        device=device_plan.describe() if device_plan else None,
        settings=settings,
        unet_calls=unet_calls,
        new_seeds=new_seeds,
        warnings=warnings,
        drafts=sorted(draft_pages),
        redrawn_drafts=redrawn,
        draft_note=draft_note,
    )


def _both(first: PreviewCallback, second: PreviewCallback) -> PreviewCallback:
    def call(preview: Preview) -> None:
        first(preview)
        second(preview)

    return call


def _as_draft(request: PaintRequest, mark: str) -> PaintRequest:
    """The draft of ``request``: the same page and seed, keyed apart by what paints drafts."""
    return PaintRequest(
        request.page, request.prompt, request.negative_prompt, request.seed, request.references,
        {**request.options, "draft": mark},
    )


def _draft_pages_before(book_dir: Path) -> set[int]:
    """Pages whose picture was a draft after the last render of this book folder."""
    try:
        return {p.number for p in load_manifest(book_dir).pages if p.draft}
    except FairytaleError:
        return set()


def _painted_only(
    plan_path: Path,
    pdf_path: Path,
    book_dir: Path,
    jobs: list[PageJob],
    started: float,
    paint_seconds: float,
    pictures_painted: int,
    device_plan: object,
    settings: RenderSettings,
    unet_calls: int,
    warnings: list[str],
    new_seeds: dict[int, int] | None = None,
) -> RenderResult:
    """What a render that stopped after painting made (no pages laid out, no PDF)."""
    return RenderResult(
        pdf=pdf_path,
        book_dir=book_dir,
        manifest=book_dir / "manifest.json",
        plan=plan_path,
        pages=[],
        painted=sorted(job.request.page for job in jobs),
        reused=[],
        pictures_painted=pictures_painted,
        seconds=time.perf_counter() - started,
        paint_seconds=paint_seconds,
        pdf_report=None,
        device=device_plan.describe() if device_plan else None,  # type: ignore[attr-defined]
        settings=settings,
        unet_calls=unet_calls,
        new_seeds=dict(new_seeds or {}),
        warnings=warnings,
    )


def _writable(path: Path) -> bool:
    import os

    return not path.exists() or os.access(path, os.W_OK)


def _check_illustrator(illustrator: Illustrator, backend: Backend) -> None:
    loaded = illustrator.backend
    if loaded.name != backend.name or loaded.model_fingerprint() != backend.model_fingerprint():
        raise FairytaleError(
            f"The illustrator passed in paints with {loaded.describe_model()}, not {backend.describe_model()}"
        )
    illustrator.configure(backend)


def _placeholder_file(store: PageStore, width: int, height: int) -> Path:
    from fairytale.files import atomic_path

    path = store.cache_dir / f"placeholder-{width}x{height}.png"
    if not path.is_file():
        ensure_dir(store.cache_dir)
        with atomic_path(path) as tmp:
            placeholder_picture(width, height).save(tmp, "PNG")
    return path

