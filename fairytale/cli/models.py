"""`fairytale models`: which models the product uses, and pre-downloading them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fairytale.cli.app import stderr, user_errors
from fairytale.errors import FairytaleError

models_app = typer.Typer(help="List and pre-download the models fAIrytale uses.", no_args_is_help=True)


@models_app.command("list")
@user_errors
def list_models() -> None:
    """Show every model role, its default, its licence and whether it is cached."""
    from fairytale import registry

    table = Table(title="fAIrytale models")
    # Ids never wrap (they are copied into commands); the licence sits under the id.
    table.add_column("role", no_wrap=True)
    table.add_column("default model · licence", no_wrap=True)
    table.add_column("used for", min_width=16)
    table.add_column("cached", no_wrap=True)
    for spec in registry.MODELS.values():
        default = spec.default + (f"@{spec.revision}" if spec.revision else "")
        if spec.cpu_default:
            default += f"\n{spec.cpu_default} (on CPU)"
        cached = "yes" if registry.is_cached(spec.role) else "no"
        if spec.fallbacks:
            default += "".join(f"\nor {fallback}" for fallback in spec.fallbacks)
        table.add_row(spec.role, f"{default}\n[dim]{spec.licence}[/]", spec.purpose, cached)
    Console().print(table)


@models_app.command("pull")
@user_errors
def pull_models(
    roles: Annotated[
        list[str] | None,
        typer.Argument(
            help="Roles to download (see `fairytale models list`), or ROLE=HUB_ID; all when omitted. "
            "ROLE=FOLDER checks that a local copy holds what the role loads."
        ),
    ] = None,
) -> None:
    """Download models into the Hugging Face cache so later runs work offline."""
    from fairytale import registry

    # ROLE, or ROLE=HUB_ID for a model other than the role's default (as the up-front check
    # of every command prints it).
    wanted = [tuple(arg.split("=", 1)) if "=" in arg else (arg, None) for arg in roles or registry.MODELS]
    unknown = [role for role, _ in wanted if role not in registry.MODELS]
    if unknown:
        raise FairytaleError(f"Unknown model role(s) {', '.join(unknown)}; known: {', '.join(registry.MODELS)}")
    # `qa=` would otherwise be read as the current folder, a "local copy" that is no model.
    empty = [role for role, ref in wanted if ref is not None and not ref.strip()]
    if empty:
        raise FairytaleError(
            f"No model id after {', '.join(f'{role}=' for role in empty)}: give ROLE=HUB_ID or ROLE=FOLDER, or just ROLE"
        )
    # A local folder that holds no model of its role's kind is said now, before any download.
    local = {(role, ref): registry.resolve(role, ref) for role, ref in wanted if ref is not None}
    for source in local.values():
        registry.check_local(source)
    console = stderr()
    for role, ref in wanted:
        spec = registry.MODELS[role]
        if (role, ref) in local and local[role, ref].local:
            console.print(
                f"[green]✓[/] {role}: {escape(local[role, ref].ref)} holds a usable model; nothing to "
                f"download or copy: pass it with {spec.option}",
                highlight=False,
            )
            continue
        # A role with a lighter CPU model needs both: the full one for GPUs, the CPU one.
        for device in ("cuda", "cpu") if spec.cpu_default and ref is None else (None,):
            with console.status(f"Downloading the {role} model ({escape(ref or spec.default_for(device))})…"):
                pulled = registry.pull(role, ref, device=device)
            for note in pulled.notes:
                console.print(f"[yellow]![/] {escape(note)}", highlight=False)
            console.print(f"[green]✓[/] {role}: {escape(pulled.source.ref)} → {escape(pulled.path)}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `fairytale models` to ``app``."""
    app.add_typer(models_app, name="models")
