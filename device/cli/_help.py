"""The top-level help: commands in the order a newcomer uses them, flags shown as flags.

``vega-emu --help`` lists the commands in :data:`ORDER` (the one-process demo first, then the
parts it is made of, then the tools around them), each with the first paragraph of its help on
one line (a docstring's line breaks are not the terminal's). Options that take no value
(``--quiet``, ``--report/--no-report``) show no value type: Typer would print ``<bool>`` for
them, although ``--quiet true`` is refused.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Final

import typer
from typer._click import core as click  # Typer's own copy of click: its commands, contexts
from typer.core import TyperGroup, TyperOption

__all__ = ["ORDER", "CommandsInOrder", "show_version"]

#: The commands of ``vega-emu --help``, in this order; any other after them, by name.
ORDER: Final = (
    "up",
    "node",
    "fleet",
    "stream",
    "bridge",
    "monitor",
    "report",
    "ctl",
    "rollout",
    "energy",
    "plan",
    "model",
    "broker",
)
DIST: Final = "vega-emu"


def _flags_as_flags(params: list[click.Parameter]) -> list[click.Parameter]:
    """``params`` with no value type shown for options that take no value."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


def _one_line(text: str | None) -> str | None:
    """The first paragraph of a help text, its line breaks made spaces."""
    if not text:
        return text
    return " ".join(text.split("\n\n", 1)[0].split())


def _tidy(command: click.Command, ctx: click.Context) -> None:
    """Flags shown as flags and a one-line summary, for ``command`` and, in a group, for
    every command under it."""
    _flags_as_flags(command.get_params(ctx))
    if command.short_help is None:
        command.short_help = _one_line(command.help)
    if isinstance(command, TyperGroup):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                _tidy(sub, ctx)


class CommandsInOrder(TyperGroup):
    """The ``vega-emu`` group: its commands in :data:`ORDER`, tidied (:func:`_tidy`) as they
    are looked up, for the help and for running them alike."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(ORDER)}
        return sorted(names, key=lambda name: (rank.get(name, len(ORDER)), name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _tidy(command, ctx)
        return command

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _flags_as_flags(super().get_params(ctx))


def show_version(value: bool) -> None:
    """``--version``: print ``vega-emu X.Y.Z`` and exit."""
    if not value:
        return
    try:
        number = version(DIST)
    except PackageNotFoundError:  # run from a source tree that was never installed
        number = "unknown (not installed)"
    typer.echo(f"{DIST} {number}")
    raise typer.Exit()
