"""`fairytale models`: which models the product uses, and pre-downloading them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
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
        table.add_row(spec.role, f"{default}\n[dim]{spec.licence}[/]", spec.purpose, cached)
    Console().print(table)


@models_app.command("pull")
@user_errors
def pull_models(
    roles: Annotated[
        list[str] | None,
        typer.Argument(help="Roles to download (see `fairytale models list`); all when omitted."),
    ] = None,
) -> None:
    """Download models into the Hugging Face cache so later runs work offline."""
    from fairytale import registry

    wanted = roles or list(registry.MODELS)
    unknown = [role for role in wanted if role not in registry.MODELS]
    if unknown:
        raise FairytaleError(f"Unknown model role(s) {', '.join(unknown)}; known: {', '.join(registry.MODELS)}")
    console = stderr()
    for role in wanted:
        spec = registry.MODELS[role]
        ids = [spec.default] + ([spec.cpu_default] if spec.cpu_default else [])
        for model_id in ids:
            with console.status(f"Downloading {model_id} ({role})…"):
                where = registry.pull(role, model_id)
            console.print(f"[green]✓[/] {role}: {model_id} → {where}")


def register(app: typer.Typer) -> None:
    """Add `fairytale models` to ``app``."""
    app.add_typer(models_app, name="models")
