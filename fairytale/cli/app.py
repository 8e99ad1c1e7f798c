"""The root Typer application and the error convention every command follows."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from fairytale import __version__
from fairytale.errors import FairytaleError, Interrupted


@contextlib.contextmanager
def _usage_mistakes() -> Iterator[None]:
    """Say a usage mistake (unknown option, missing argument, bad value) as the other user
    mistakes are said: one line, plus where the help is, instead of typer's boxed panel. The
    exit code stays click's 2. A group called without a command still shows its help."""
    try:
        yield
    except typer.TyperException as exc:  # click's ClickException and UsageError, as typer ships them
        if type(exc).__name__ == "NoArgsIsHelpError":  # typer shows the help for this one
            raise
        console = stderr()
        console.print(f"[bold red]Error:[/] {escape(exc.format_message())}", highlight=False, soft_wrap=True)
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and ctx.command.get_help_option(ctx) is not None:
            hint = f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help."
            console.print(escape(hint), highlight=False, soft_wrap=True)
        raise typer.Exit(code=exc.exit_code) from None


class _Root(TyperGroup):
    """The root command group: every command is parsed and run inside it, so it is where usage
    mistakes are caught (:func:`_usage_mistakes`); typer's ``cls`` setting puts it in place."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with _usage_mistakes():  # options of the root itself (`fairytale --bogus`)
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _usage_mistakes():  # every command below, parsed and run here
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Root,
    name="fairytale",
    help="Turn a story into an illustrated children's picture book.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def stderr() -> Console:
    """A console on standard error for messages, warnings and progress."""
    return Console(stderr=True)


def plain(value: object) -> str:
    """``value`` as text that rich prints exactly as it is: for anything that is not ours (file
    names, prompts, tokens, titles), which may hold ``[...]`` that rich would read as markup."""
    return escape(str(value))


def user_errors(func: F) -> F:
    """Report :class:`FairytaleError` as one red line and a non-zero exit, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FairytaleError as exc:
            # The message quotes the user's own text (file names, tokens, titles): never markup.
            stderr().print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt as exc:
            # Ctrl-C: every finished file is in place (they are written atomically), so one
            # line says what is kept and how to go on, with the shell's code for SIGINT.
            if not isinstance(exc, Interrupted):
                exc = Interrupted("finished work is kept")
            stderr().print(
                f"[yellow]Stopped:[/] {escape(exc.kept)}; {escape(exc.go_on)}.",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(code=130) from None
        finally:
            # The up-front model check puts the process in cache-only mode for the command's
            # run; it ends with the command (imported only if the command used it).
            registry = sys.modules.get("fairytale.registry")
            if registry is not None:
                registry.end_cache_only()

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fairytale {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Turn a story into an illustrated children's picture book.

    [bold]story.txt[/] → [bold]plan.json[/] (editable) → pictures → [bold]book.pdf[/]
    """


def main() -> None:
    """Console-script entry point."""
    app(prog_name="fairytale")
    sys.exit(0)
