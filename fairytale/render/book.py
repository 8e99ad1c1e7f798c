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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fairytale import __version__
from fairytale.book_lock import book_lock
from fairytale.book_words import book_words
from fairytale.embeddings import LearnedEmbedding
from fairytale.errors import FairytaleError, Interrupted
from fairytale.files import can_create_files_in, check_output_path, ensure_dir, remove_stale_temporaries_in
from fairytale.pdf import (
    BookContents,
    BookPage,
    PdfReport,
    PdfSettings,
    check_cover_text,
    plan_story_layouts,
    write_book_pdf,
)
from fairytale.plan import BookPlan, load_plan, save_plan
from fairytale.render import drafts
from fairytale.render.backends import Backend, get_backend
from fairytale.render.distributed import current_team
from fairytale.render.manifest import Manifest, ManifestPage, load_manifest, save_manifest
from fairytale.render.page_keys import PageKeys, learned_tokens
from fairytale.render.page_store import PageStore, StoredPicture
from fairytale.render.painting import PageJob, paint_pages
from fairytale.render.previews import EVERY, Preview, PreviewCallback, PreviewDecoder
from fairytale.render.progress import QuietProgress, RenderProgress, RichProgress
from fairytale.render.references import paint_references, record_references
from fairytale.render.safety import SafetyChecker, placeholder_picture
from fairytale.render.seeds import next_seed
from fairytale.render.session import IllustratorSession
from fairytale.render.settings import RenderSettings, parse_pages
from fairytale.render.upscale import UpscaleJob, upscale_pictures

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.devices import DevicePlan
    from fairytale.render.distributed import Team
    from fairytale.render.illustrator import Illustrator


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


@dataclass
class _Job:
    """What a render works on, once its inputs are checked (step 1 of :func:`render_book`)."""

    plan_path: Path
    pdf_path: Path
    book_dir: Path
    settings: RenderSettings
    plan: BookPlan
    backend: Backend
    painter: Backend  # what paints this run's pages: the backend, or its draft settings
    draft_mark: str | None
    selected: list[int] | None
    embeddings: list[LearnedEmbedding]
    embedding_hashes: dict[str, str]
    consistency: str
    width: int
    height: int
    pdf_settings: PdfSettings
    warnings: list[str] = field(default_factory=list)
    locked_asked: list[int] = field(default_factory=list)
    draft_pages: set[int] = field(default_factory=set)
    draft_note: str | None = None
    redrawn: list[int] = field(default_factory=list)
    likeness: dict[int, tuple[dict[str, float], int]] = field(default_factory=dict)  # --drift-check


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
    only if some page must be painted, and released when the render ends, however it ends. Bad
    input raises :class:`FairytaleError` before anything is written. ``lay_out=False`` paints
    and stops there (no page files, PDF or manifest).

    With ``settings.draft`` the pages that have no picture yet are painted as drafts (see
    :mod:`fairytale.render.drafts`); a later render without it paints those pages again at full
    quality and reuses every other picture. ``on_preview`` receives a
    :class:`~fairytale.render.previews.Preview` of the batch in progress every
    ``preview_every`` steps.

    Under ``accelerate launch`` every process calls this: the pages to paint are split between
    them and process 0 lays out the book (see :mod:`fairytale.render.distributed`); the others
    return once their share is painted.
    """
    started = time.perf_counter()
    team = current_team()
    settings = team.place(settings or RenderSettings())
    reporter = _progress(progress if team.is_main else False)
    # What is known so far, to say what an interrupted render kept.
    job: _Job | None = None
    store: PageStore | None = None
    stored: dict[int, StoredPicture] = {}
    jobs: list[PageJob] = []
    try:
        with reporter, contextlib.ExitStack() as held:
            # 1. check everything that can be checked before painting; nothing is written yet
            job = _check_inputs(Path(plan_path), Path(pdf_path), settings, pages, seed, illustrator, on_preview, preview_every)
            team.lead(lambda: held.enter_context(book_lock(job.book_dir)))  # one job per book (a team's: process 0)
            session = held.enter_context(
                IllustratorSession(job.backend, reporter, given=illustrator, embeddings=job.embeddings)
            )
            # 2. new seeds for the pages to repaint (written to the plan once they are painted)
            new_seeds = _choose_new_seeds(job, seed)
            # 3. reference portraits the pages are painted from: painted once, recorded in the plan
            _paint_missing_references(job, session, reporter, team)
            # 4. what is cached and what must be painted (drafts where a draft run has no picture)
            store = PageStore(job.book_dir)
            store.remove_leftovers()  # of killed runs (live writers of a team keep theirs)
            remove_stale_temporaries_in(job.book_dir / "print")  # print pictures are named by hash too
            stored, jobs = _look_up_cache(job, store)
            # 5. paint what is missing (in a team, this process's share), the model loaded only now
            report = _paint_missing(job, session, jobs, store, reporter, team, on_preview, preview_every)
            stored.update(report.stored)
            # 6. the plan records the seeds of repainted pages (process 0); the others stop here
            if not team.is_main:
                return _painted_only(job, report.mine, started, report, session.device_plan, settings)
            if new_seeds:
                _record_new_seeds(job, new_seeds)
            if not lay_out:
                return _painted_only(job, jobs, started, report, session.device_plan, settings, new_seeds)
            # 7. page files (placeholders drawn for pages that have one)
            page_files = _page_files(job, store, stored)
            # 8. --print: upscale (the painting model is freed first: one big model on the GPU)
            print_files = _upscale(job, session, page_files, stored, reporter)
            session.release()
            # 9. the PDF
            reporter.stage("Writing the PDF…")
            pdf_report, cover = _write_pdf(job, page_files, print_files)
            # 10. the manifest, last
            painted_now = {j.request.page for j in jobs}
            manifest_pages, manifest_path = _write_manifest(
                job, stored, page_files, print_files, painted_now, pdf_report, cover, session.device_plan
            )

    except Interrupted:
        raise
    except KeyboardInterrupt:  # the lock and the model are released by now; finished pictures are in place
        raise Interrupted(_kept_after_interrupt(job, store, stored, jobs)) from None

    device_plan = session.device_plan
    return RenderResult(
        pdf=job.pdf_path,
        book_dir=job.book_dir,
        manifest=manifest_path,
        plan=job.plan_path,
        pages=manifest_pages,
        painted=sorted(painted_now),
        reused=sorted(set(page_files) - painted_now),
        pictures_painted=report.pictures_painted,
        seconds=time.perf_counter() - started,
        paint_seconds=report.seconds,
        pdf_report=pdf_report,
        device=device_plan.describe() if device_plan else None,
        settings=settings,
        unet_calls=report.unet_calls,
        new_seeds=new_seeds,
        warnings=job.warnings,
        drafts=sorted(job.draft_pages),
        redrawn_drafts=job.redrawn,
        draft_note=job.draft_note,
    )


def _check_inputs(
    plan_path: Path,
    pdf_path: Path,
    settings: RenderSettings,
    pages: str | list[int] | None,
    seed: int | None,
    illustrator: Illustrator | None,
    on_preview: PreviewCallback | None,
    preview_every: int,
) -> _Job:
    """Step 1: read the plan, choose the backend and check every input a one-line error can
    name, before anything is loaded or written."""
    plan = load_plan(plan_path)
    backend = get_backend(settings.backend)(settings)
    painter = get_backend(settings.backend)(drafts.draft_settings(settings, backend.family)) if settings.draft else backend
    draft_mark = drafts.lora_fingerprint(drafts.lora_source(settings, backend.family)) if settings.draft else None
    selected = parse_pages(",".join(map(str, pages)) if isinstance(pages, list) else pages, len(plan.pages))
    if seed is not None and selected is None:
        raise FairytaleError("--seed goes with --pages: it sets the seed of the pages you repaint")
    if seed is not None and not (isinstance(seed, int) and 0 <= seed < 2**63):
        raise FairytaleError(f"--seed must be between 0 and 2^63-1, not {seed}")
    pdf_path, book_dir = check_outputs(pdf_path)
    if selected and not (can_create_files_in(plan_path.parent) and _writable(plan_path)):
        raise FairytaleError(f"Cannot record the new seeds: the plan file {plan_path} is not writable")
    embeddings, embedding_hashes = learned_tokens(plan, plan_path, backend)
    consistency = backend.consistency(plan)  # an impossible --consistency fails here, before painting
    width, height = backend.picture_size()
    pdf_settings = PdfSettings(settings.trim, settings.bleed, settings.dpi, settings.jpeg_quality, settings.layout)
    _, layout_warnings = plan_story_layouts([(p.number, p.text, p.layout) for p in plan.pages], pdf_settings, width / height)
    check_cover_text(plan.title, plan.author, pdf_settings)  # as the PDF will, but before any painting
    warnings = list(layout_warnings)
    if settings.draft and drafts.same_as_final(settings, backend.family):
        warnings.append(
            f"--draft: this model has no LCM-LoRA and {settings.steps} steps are no more than a draft takes "
            f"({drafts.FALLBACK_STEPS}): the pictures are painted as final ones"
        )
    if illustrator is not None:
        _check_illustrator(illustrator, backend, settings)
    if on_preview is not None and preview_every < 1:
        raise FairytaleError(f"preview_every must be at least 1, not {preview_every}")
    return _Job(
        plan_path, pdf_path, book_dir, settings, plan, backend, painter, draft_mark, selected, embeddings,
        embedding_hashes, consistency, width, height, pdf_settings, warnings,
    )


def _choose_new_seeds(job: _Job, seed: int | None) -> dict[int, int]:
    """Step 2: the new seed of each page named by ``--pages`` (set in the plan in memory); a
    locked page keeps its picture, and so its seed."""
    job.locked_asked = [n for n in job.selected or [] if job.plan.pages[n - 1].locked]
    new_seeds: dict[int, int] = {}
    for number in sorted(set(job.selected or []) - set(job.locked_asked)):
        page = job.plan.pages[number - 1]
        new_seeds[number] = seed if seed is not None else next_seed(page.seed)
        page.seed = new_seeds[number]
    return new_seeds


def _record_new_seeds(job: _Job, new_seeds: dict[int, int]) -> None:
    """Step 6: the repainted pages' new seeds into the plan file, read again first so that edits
    saved while the pages were painted (the studio saves pages meanwhile) are kept."""
    recorded = load_plan(job.plan_path)
    for number, seed in new_seeds.items():
        if number <= len(recorded.pages):
            recorded.pages[number - 1].seed = seed
    save_plan(recorded, job.plan_path)


def _paint_missing_references(job: _Job, session: IllustratorSession, reporter: RenderProgress, team: Team) -> None:
    """Step 3: paint the reference portraits the mode in force needs and has not got, and
    record them (only them: new page seeds wait until their pages are painted) in the plan
    file. In a team, process 0 paints them and the others read them from the plan."""
    missing = job.backend.missing_references(job.plan)
    if missing and team.is_main:
        if not (can_create_files_in(job.plan_path.parent) and _writable(job.plan_path)):
            raise FairytaleError(f"Cannot record the reference portraits: the plan file {job.plan_path} is not writable")
        illustrator = session.illustrator()
        reporter.stage(f"Painting reference portraits of {', '.join(job.plan.character(i).name for i in missing)}…")
        job.warnings.extend(
            paint_references(
                illustrator, job.plan, job.plan_path, job.book_dir, missing,
                max_repaints=job.settings.max_repaints, batch_size=session.batch_size(),
            )
        )
        record_references(job.plan_path, job.plan, missing)
    if missing and team.size > 1:
        team.wait()  # process 0 has painted the portraits and recorded them in the plan
        recorded = load_plan(job.plan_path)
        for character_id in missing:
            job.plan.character(character_id).reference = recorded.character(character_id).reference


def _look_up_cache(job: _Job, store: PageStore) -> tuple[dict[int, StoredPicture], list[PageJob]]:
    """Step 4: each page's cache key; the pictures found, and the pages to paint. A locked
    page keeps the picture it names; a draft run takes a page's final picture when there is
    one, else its draft, and paints drafts of the rest."""
    keys = PageKeys(job.plan, job.plan_path, job.backend, job.embedding_hashes, job.painter, job.draft_mark)
    stored: dict[int, StoredPicture] = {}
    jobs: list[PageJob] = []
    for page in job.plan.pages:
        drafts_too = job.draft_mark is not None
        cached = keys.look_up(page, store, drafts=drafts_too, max_repaints=job.settings.max_repaints)
        if cached.draft:
            job.draft_pages.add(page.number)
        if cached.found:
            stored[page.number] = cached.found
        elif cached.request is not None:
            jobs.append(PageJob(cached.request, cached.key))
    job.warnings += [f"page {n} is locked: it keeps its picture (unlock it to repaint it)" for n in job.locked_asked]
    unchecked = sorted(n for n in stored if not job.plan.pages[n - 1].locked)
    if job.settings.drift_check is not None and unchecked:
        job.warnings.append(
            f"--drift-check checks the pages it paints: pages {', '.join(map(str, unchecked))} were reused from the "
            "cache unchecked (repaint them with --pages to check them)"
        )
    job.draft_note = drafts.describe(job.settings, job.backend.family) if job.draft_pages else None
    job.redrawn = sorted(({j.request.page for j in jobs} - job.draft_pages) & _draft_pages_before(job.book_dir))
    return stored, jobs


@dataclass
class _Painted:
    stored: dict[int, StoredPicture] = field(default_factory=dict)
    pictures_painted: int = 0
    seconds: float = 0.0
    unet_calls: int = 0
    mine: list[PageJob] = field(default_factory=list)  # the jobs this process painted


def _paint_missing(
    job: _Job,
    session: IllustratorSession,
    jobs: list[PageJob],
    store: PageStore,
    reporter: RenderProgress,
    team: Team,
    on_preview: PreviewCallback | None,
    preview_every: int,
) -> _Painted:
    """Step 5: paint the pages not in the cache through the paint-and-safety loop; in a team,
    each process paints its share, once all have listed the same jobs."""
    team.wait()
    mine = team.share(jobs)
    if team.size > 1 and jobs:
        reporter.stage(f"{len(jobs)} pages to paint, shared by {team.size} processes ({len(mine)} in this one)")
    result, warned_before = _Painted(mine=mine), len(job.warnings)
    if mine:
        illustrator = session.illustrator()
        illustrator.configure(job.painter)
        if job.draft_note:
            reporter.stage(f"Painting {job.draft_note}…")
        if job.redrawn:
            reporter.stage(
                f"Pages {', '.join(map(str, job.redrawn))} were drafts: painting them at full quality, as new "
                "pictures from the same seeds (not enlargements of the drafts)…"
            )
        illustrator.previews = (
            PreviewDecoder.load(
                job.settings.preview_model, illustrator.device_plan, preview_every, _both(reporter.preview, on_preview)
            )
            if on_preview is not None
            else None  # nobody looks: nothing loaded, nothing decoded
        )
        for page_job in mine:
            if illustrator.prompt_too_long(page_job.request.prompt):
                job.warnings.append(
                    f"page {page_job.request.page}: the prompt is longer than the text encoder reads (77 tokens); the end is ignored"
                )
        unet_before = illustrator.unet_calls
        report = paint_pages(
            illustrator, mine, store, batch_size=session.batch_size(), max_repaints=job.settings.max_repaints,
            progress=reporter,
        )
        job.warnings.extend(report.warnings)
        result.stored, result.pictures_painted, result.seconds = report.stored, report.pictures_painted, report.seconds
        if job.settings.drift_check is not None:
            _check_drift(job, illustrator, mine, store, result, reporter)
        result.unet_calls = illustrator.unet_calls - unet_before
    if team.size > 1:
        # Each process scored (--drift-check) and counted only its own pages: process 0, which
        # writes the manifest, gathers every page's likeness scores and drift repaints.
        mine_only = (result.seconds, result.pictures_painted, result.unet_calls, job.warnings[warned_before:], job.likeness)
        shares = team.gather(mine_only)
        result.seconds = max(share[0] for share in shares)
        result.pictures_painted = sum(share[1] for share in shares)
        result.unet_calls = sum(share[2] for share in shares)
        job.warnings[warned_before:] = [w for share in shares for w in share[3]]
        job.likeness = {page: scored for share in shares for page, scored in share[4].items()}
        result.stored.update({j.request.page: store.get(j.key) for j in jobs if j.request.page not in result.stored})
    return result


def _check_drift(
    job: _Job, illustrator: Illustrator, jobs: list[PageJob], store: PageStore, painted: _Painted, reporter: RenderProgress
) -> None:
    """Step 5, ``--drift-check``: score each painted page's characters against their portraits
    and repaint a page below the threshold with its next drift seeds, keeping the most alike
    picture (see :mod:`fairytale.render.drift`)."""
    from dataclasses import replace

    from fairytale.images import open_rgb
    from fairytale.render.drift import DriftScorer
    from fairytale.render.painting import illustrator_loop
    from fairytale.render.seeds import derive_seed

    reporter.stage("Checking each character against its portrait…")
    # beside the pipeline, as the safety checker: under model offload (--low-vram) on the CPU
    scorer = DriftScorer(job.settings.clip_model, illustrator.device_plan.side_model_placement()[0])
    threshold, budget = job.settings.drift_check, job.settings.max_drift_repaints
    for page_job in jobs:
        request, kept = page_job.request, painted.stored.get(page_job.request.page)
        if kept is None or kept.image is None:
            continue
        page = job.plan.pages[request.page - 1]
        picture = open_rgb(kept.image, what=f"picture of page {request.page}")
        best = scorer.scores(picture, job.plan, page, job.plan_path)
        repaints, attempts, better = 0, kept.attempts, None
        while best and min(best.values()) < threshold and repaints < budget:
            repaints += 1
            again = request.with_seed(derive_seed("drift", request.seed, repaints))
            loop = illustrator_loop(illustrator, [again], batch_size=1, max_repaints=job.settings.max_repaints)
            [done] = [checked for finished in loop for checked in finished]
            painted.pictures_painted += done.attempts
            attempts += done.attempts
            if done.picture is None:
                continue
            scores = scorer.scores(done.picture, job.plan, page, job.plan_path)
            if min(scores.values()) > min(best.values()):
                best, better = scores, done
        if better is not None:
            painted.stored[request.page] = store.put(replace(kept, seed=better.seed, attempts=attempts), better.picture)
        if best:
            job.likeness[request.page] = (best, repaints)
        if repaints:
            job.warnings.append(
                f"page {request.page}: a character drifted from its portrait (below {threshold:g}); painted again "
                f"{repaints} time{'s' if repaints > 1 else ''}, kept the most alike (lowest likeness {min(best.values()):.1f})"
            )


def _page_files(job: _Job, store: PageStore, stored: dict[int, StoredPicture]) -> dict[int, Path]:
    """Step 7: ``pages/page-NN.png`` for every page."""
    page_files: dict[int, Path] = {}
    for page in job.plan.pages:
        picture = stored[page.number]
        source = picture.image or _placeholder_file(store, picture.width, picture.height)
        page_files[page.number] = store.page_file(page.number, source)
    store.remove_stale_pages(len(job.plan.pages))
    return page_files


def _upscale(
    job: _Job,
    session: IllustratorSession,
    page_files: dict[int, Path],
    stored: dict[int, StoredPicture],
    reporter: RenderProgress,
) -> dict[int, Path]:
    """Step 8 (``--print``): upscale every picture x4, after freeing the painting model."""
    settings, backend = job.settings, job.backend
    if not settings.upscale:
        return {}
    loaded = session.loaded
    checker = loaded.safety if loaded else None
    session.release()
    device_plan = session.planned_device()
    upscale_jobs = [
        UpscaleJob(p.number, page_files[p.number], p.prompt, job.plan.negative_prompt(p), p.seed)
        for p in job.plan.pages
        if stored[p.number].image is not None
    ]
    print_files, upscale_warnings = upscale_pictures(
        upscale_jobs,
        job.book_dir,
        ref=settings.upscaler_model,
        steps=settings.upscale_steps,
        device_plan=device_plan,
        safety=lambda: checker or SafetyChecker.for_model(backend.role, settings.model, device_plan, settings.safety_model),
        progress=reporter,
    )
    job.warnings.extend(upscale_warnings)
    return print_files


def _write_pdf(job: _Job, page_files: dict[int, Path], print_files: dict[int, Path]) -> tuple[PdfReport, int]:
    """Step 9: the PDF (print pictures where there are some), and the page on its cover."""
    settings, plan = job.settings, job.plan
    cover = _cover_page(plan)
    placed = {n: print_files.get(n, f) for n, f in page_files.items()}
    contents = BookContents(
        title=plan.title,
        author=plan.author,
        pages=[BookPage(p.number, p.text, placed[p.number], p.layout) for p in plan.pages],
        cover_picture=placed[cover],
        credit=book_words(plan.language).credit(job.backend.credit_model(), __version__),
        language=plan.language,
    )
    pdf_report = write_book_pdf(contents, job.pdf_path, job.pdf_settings, picture_cache=ensure_dir(job.book_dir / "print"))
    job.warnings.extend(w for w in pdf_report.warnings if w not in job.warnings)
    low = [n for n, dpi in pdf_report.effective_dpi.items() if n and dpi < settings.dpi * 0.8]
    if low and not settings.upscale:
        lowest = min(pdf_report.effective_dpi[n] for n in low)
        job.warnings.append(
            f"{len(low)} picture{'s' if len(low) > 1 else ''} print below {settings.dpi} DPI of real detail "
            f"(lowest {lowest:.0f} DPI); --print upscales them x4 with the SD upscaler"
        )
    return pdf_report, cover


def _write_manifest(
    job: _Job,
    stored: dict[int, StoredPicture],
    page_files: dict[int, Path],
    print_files: dict[int, Path],
    painted_now: set[int],
    pdf_report: PdfReport,
    cover: int,
    device_plan: DevicePlan | None,
) -> tuple[list[ManifestPage], Path]:
    """Step 10: ``manifest.json``, what the render made and how (written last)."""
    plan, book_dir, backend = job.plan, job.book_dir, job.backend
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
                draft=page.number in job.draft_pages,
                likeness=job.likeness.get(page.number, ({}, 0))[0],
                drift_repaints=job.likeness.get(page.number, ({}, 0))[1],
            )
        )
    manifest = Manifest(
        title=plan.title,
        author=plan.author,
        plan=_relative(job.plan_path, book_dir),
        pdf=_relative(job.pdf_path, book_dir),
        backend=backend.name,
        model=backend.describe_model(),
        model_credit=backend.credit_model(),
        model_fingerprint=backend.model_fingerprint(),
        settings=job.settings.as_dict()
        | {"width": job.width, "height": job.height, "guidance": backend.guidance, "consistency": job.consistency},
        device=device_plan.describe() if device_plan else "none (every picture was cached)",
        fairytale_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        cover_page=cover,
        pdf_pages=pdf_report.page_count,
        pdf_bytes=pdf_report.bytes,
        pages=manifest_pages,
        warnings=job.warnings,
    )
    return manifest_pages, save_manifest(manifest, ensure_dir(book_dir))


def _kept_after_interrupt(
    job: _Job | None, store: PageStore | None, stored: dict[int, StoredPicture], jobs: list[PageJob]
) -> str:
    """What a render stopped by Ctrl-C leaves for the next run, in a few words: how many pages
    have a finished picture in the cache (its record written, the mark of a finished page)."""
    if job is None or store is None:
        return "no page was painted; pictures of earlier runs are kept"
    total = len(job.plan.pages)
    done = set(stored) | {j.request.page for j in jobs if store.record_path(j.key).is_file()}
    if len(done) >= total:
        return f"all {total} pages are painted and kept, the book is not laid out yet"
    return f"{len(done)} of {total} pages painted and kept"


def _both(first: PreviewCallback, second: PreviewCallback) -> PreviewCallback:
    def call(preview: Preview) -> None:
        first(preview)
        second(preview)

    return call


def _draft_pages_before(book_dir: Path) -> set[int]:
    """Pages whose picture was a draft after the last render of this book folder."""
    try:
        return {p.number for p in load_manifest(book_dir).pages if p.draft}
    except FairytaleError:
        return set()


def _painted_only(
    job: _Job,
    jobs: list[PageJob],
    started: float,
    report: _Painted,
    device_plan: DevicePlan | None,
    settings: RenderSettings,
    new_seeds: dict[int, int] | None = None,
) -> RenderResult:
    """What a render that stopped after painting made (no pages laid out, no PDF)."""
    return RenderResult(
        pdf=job.pdf_path,
        book_dir=job.book_dir,
        manifest=job.book_dir / "manifest.json",
        plan=job.plan_path,
        pages=[],
        painted=sorted(j.request.page for j in jobs),
        reused=[],
        pictures_painted=report.pictures_painted,
        seconds=time.perf_counter() - started,
        paint_seconds=report.seconds,
        pdf_report=None,
        device=device_plan.describe() if device_plan else None,
        settings=settings,
        unet_calls=report.unet_calls,
        new_seeds=dict(new_seeds or {}),
        warnings=job.warnings,
    )


def _writable(path: Path) -> bool:
    import os

    return not path.exists() or os.access(path, os.W_OK)


def _check_illustrator(illustrator: Illustrator, backend: Backend, settings: RenderSettings) -> None:
    """An illustrator passed in must be the one ``settings`` would load: model, precision and
    compilation (its device and batch size are its own)."""
    from fairytale.render.devices import precision_dtype

    loaded = illustrator.backend
    if loaded.name != backend.name or loaded.model_fingerprint() != backend.model_fingerprint():
        raise FairytaleError(
            f"The illustrator passed in paints with {loaded.describe_model()}, not {backend.describe_model()}"
        )
    plan = illustrator.device_plan
    wanted = precision_dtype(settings.precision, plan.device)
    if wanted != plan.dtype or settings.compile != plan.compile_unet:
        compiled = {True: ", compiled", False: ""}
        raise FairytaleError(
            f"The illustrator passed in paints in {plan.dtype}{compiled[plan.compile_unet]}, not in "
            f"{wanted}{compiled[settings.compile]}: load one with these settings"
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

