"""``vega-emu rollout``: a new head to a fleet in stages, halted and rolled back by a rule."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Placeholder until the rollout command lands."""


__all__ = ["register"]
