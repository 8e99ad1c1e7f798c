"""`fairytale plan`: story → editable book plan (JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairytale.cli.app import stderr, user_errors

StoryArg = Annotated[Path, typer.Argument(help="Story text file (UTF-8, UTF-16 or cp1252).", show_default=False)]
NerOpt = Annotated[str | None, typer.Option("--ner-model", help="NER model: hub id or local path (default flair/ner-english; -fast on CPU).")]
QaOpt = Annotated[str | None, typer.Option("--qa-model", help="Extractive QA model: hub id or local path (default deepset/roberta-base-squad2).")]
NliOpt = Annotated[str | None, typer.Option("--nli-model", help="NLI model: hub id or local path (default FacebookAI/roberta-large-mnli).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Illustration model whose tokenizer measures the prompts: hub id or local path.")]
TitleOpt = Annotated[str | None, typer.Option("--title", help="Book title (default: a short first line, else the file name).")]
AuthorOpt = Annotated[str | None, typer.Option("--author", help="Author printed on the cover.")]
WordsOpt = Annotated[int | None, typer.Option("--words-per-page", help="Target words under each picture, 5-120 (default 35).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", min=0, help="Master seed for the page seeds (recorded in the plan; random if omitted).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="Device for the language models: cpu, cuda, cuda:1, mps (default: cpu).")]


def plan_command(
    story: StoryArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the plan (JSON).")] = Path("plan.json"),
    title: TitleOpt = None,
    author: AuthorOpt = None,
    words_per_page: WordsOpt = None,
    seed: SeedOpt = None,
    ner_model: NerOpt = None,
    qa_model: QaOpt = None,
    nli_model: NliOpt = None,
    model: ModelOpt = None,
    backend: Annotated[str, typer.Option("--backend", help="Illustration backend the prompts are measured for: sd14, sd21, unclip.")] = "sd14",
    device: DeviceOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing plan (hand edits in it are lost).")] = False,
) -> None:
    """Read a story and write its book plan: pages, characters, scenes and prompts.

    The plan is plain JSON: fix a description, a prompt or a seed by hand, then
    `fairytale render plan.json -o book.pdf`.
    """
    import time

    from fairytale import registry
    from fairytale.errors import FairytaleError
    from fairytale.files import check_output_path
    from fairytale.plan import save_plan
    from fairytale.planner import PlanStats, plan_story
    from fairytale.story import read_story

    if backend not in registry.BACKENDS:
        raise FairytaleError(f"Unknown backend '{backend}'; choose one of {', '.join(registry.BACKENDS)}")
    from fairytale.pages import check_words_per_page

    check_words_per_page(words_per_page)
    refuse_overwriting_the_story(story, output)
    # A missing or unreadable story is said before the models are checked (which may mean
    # minutes of downloads, or a missing-model line that hides the real mistake); the read is
    # bounded, and the planner reads the file again.
    read_story(story, title=title)
    check_output_path(output, overwrite=force)
    console = stderr()
    from fairytale.model_check import ensure, plan_needs

    ensure(plan_needs(ner_model, qa_model, nli_model, backend, model, device), console)
    started, stats = time.perf_counter(), PlanStats()
    plan = plan_story(
        story,
        title=title,
        author=author,
        words_per_page=words_per_page,
        seed=seed,
        ner_model=ner_model,
        qa_model=qa_model,
        nli_model=nli_model,
        model=model,
        backend=backend,
        device=device,
        progress=True,
        stats=stats,
    )
    save_plan(plan, output)
    from rich.markup import escape

    main = escape(", ".join(c.name for c in plan.characters if c.main) or "none")
    console.print(
        f"[green]✓[/] {escape(str(output))}: {len(plan.pages)} pages, {len(plan.characters)} characters "
        f"(main: {main}), seed {plan.seed} — {time.perf_counter() - started:.1f} s, "
        f"{stats.qa_computed} QA and {stats.nli_computed} NLI queries",
        highlight=False,
    )


def refuse_overwriting_the_story(story: Path, *outputs: Path) -> None:
    """An output that is the story itself (the same path, a symlink to it or a hard link) would
    replace the story, even with --force: refuse before anything else."""
    import os

    from fairytale.errors import FairytaleError

    for output in outputs:
        try:
            same = os.path.samefile(story, output)
        except OSError:  # one of them does not exist: they cannot be the same file
            same = False
        if same:
            raise FairytaleError(f"{output} is the story file itself: writing it would overwrite the story")


def _pairs(values: list[str], option: str, what: str) -> list[tuple[str, str]]:
    """``KEY=TEXT`` option values as (key, text); a value without ``=`` is a usage mistake."""
    from fairytale.errors import FairytaleError

    pairs = []
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise FairytaleError(f"{option} takes {what}=TEXT, got {value!r}")
        pairs.append((key.strip(), text))
    return pairs


def edit_command(
    plan_file: Annotated[Path, typer.Argument(help="Book plan (JSON) to edit in place.", show_default=False)],
    describe: Annotated[
        list[str] | None,
        typer.Option(
            "--describe",
            "-d",
            metavar="CHARACTER=TEXT",
            help="New description of a character (id, name or alias); the composed prompts of its pages "
            "follow, prompts you wrote are kept. Repeatable.",
        ),
    ] = None,
    prompt: Annotated[
        list[str] | None,
        typer.Option(
            "--prompt", "-p", metavar="PAGE=TEXT", help="Your own prompt for a page: later edits keep it. Repeatable."
        ),
    ] = None,
    reset_prompt: Annotated[
        list[int] | None,
        typer.Option(
            "--reset-prompt",
            min=1,
            metavar="PAGE",
            help="Compose the page's prompt again from the plan, replacing one you wrote. Repeatable.",
        ),
    ] = None,
    model: ModelOpt = None,
    backend: Annotated[str, typer.Option("--backend", help="Illustration backend the prompts are measured for: sd14, sd21, unclip.")] = "sd14",
) -> None:
    """Edit a book plan: character descriptions and page prompts, saved in place.

    A new description composes again the prompts of the pages showing the character, except
    prompts a person wrote (here, in the studio or in a text editor): those are kept, and named.
    `--reset-prompt PAGE` gives such a page its composed prompt back.
    """
    from rich.markup import escape

    from fairytale import registry
    from fairytale.errors import FairytaleError
    from fairytale.plan import dump_plan, load_plan, parse_plan, save_plan
    from fairytale.plan_edits import apply_edits

    if backend not in registry.BACKENDS:
        raise FairytaleError(f"Unknown backend '{backend}'; choose one of {', '.join(registry.BACKENDS)}")
    describe, prompt, reset_prompt = describe or [], prompt or [], reset_prompt or []
    descriptions = _pairs(describe, "--describe", "CHARACTER")
    prompts = {}
    for number, text in _pairs(prompt, "--prompt", "PAGE"):
        if not number.isdigit():
            raise FairytaleError(f"--prompt takes PAGE=TEXT with a page number, got {number!r}")
        prompts[int(number)] = text
    if not (descriptions or prompts or reset_prompt):
        raise FairytaleError("Nothing to edit: give --describe, --prompt or --reset-prompt")
    plan = load_plan(plan_file)
    console = stderr()
    if descriptions or reset_prompt:  # prompts are composed: the tokenizer must be at hand
        from fairytale.model_check import Need, ensure
        from fairytale.render.backends import get_backend

        ensure([Need(get_backend(backend).role, model, only="tokenizer")], console)
    result = apply_edits(
        plan,
        descriptions=dict(descriptions),
        prompts=prompts,
        reset_prompts=reset_prompt,
        backend=backend,
        model=model,
    )
    save_plan(parse_plan(dump_plan(plan), str(plan_file)), plan_file)

    composed = ", ".join(map(str, result.changed)) or "none"
    console.print(
        f"[green]✓[/] {escape(str(plan_file))}: new composed prompts on pages {composed}",
        highlight=False,
        soft_wrap=True,
    )
    if result.hand_written:
        pages = ", ".join(map(str, result.hand_written))
        again = " ".join(f"--reset-prompt {number}" for number in result.hand_written)
        kept = f"page {pages} keeps the prompt" if len(result.hand_written) == 1 else f"pages {pages} keep the prompts"
        console.print(
            f"[yellow]Kept:[/] {kept} you wrote; to compose {'it' if len(result.hand_written) == 1 else 'them'} again: "
            f"fairytale edit {escape(str(plan_file))} {again}",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add `fairytale plan` and `fairytale edit` to ``app``."""
    app.command("plan")(user_errors(plan_command))
    app.command("edit")(user_errors(edit_command))
