"""How long ``stream`` runs and what its generated events do: ``--events``, ``--forever``,
``--hours`` and the drift and recurrence flags, checked once into a :class:`RunLength` and the
:class:`~dataset_stream.endless.EndlessOptions` of the scenario.

A run that names a length (``--events N``, ``--hours H``) or none at all (``--forever``) streams
an endless scenario: its events ``1..K`` are the finite scenario's, the later ones generated
(docs/datasets.md, "Endless scenarios"). Without any of the three, a run sends the finite
scenario's events that are left, as it always has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from device.cli._runtime import fail

if TYPE_CHECKING:
    from dataset_stream.endless import EndlessOptions


class DriftName(StrEnum):
    none = "none"
    gradual = "gradual"
    abrupt = "abrupt"
    recurring = "recurring"


ForeverOpt = Annotated[
    bool,
    typer.Option(
        "--forever",
        help="Stream until stopped (Ctrl-C, SIGTERM); past the scenario's last event, events "
        "are generated; not with --events or --hours",
    ),
]
HoursOpt = Annotated[
    float | None,
    typer.Option(
        "--hours",
        help="Learning events per device for H hours of simulated time (H x 3600 / cadence), "
        "generated past the scenario's last event; not with --events",
        show_default=False,
    ),
]
DriftOpt = Annotated[
    DriftName,
    typer.Option(
        "--drift",
        help="Drift of the generated events' classes: none; gradual (each class reaches its "
        "full drift over --drift-period events); abrupt (all at once, at a point within the "
        "first period); recurring (drifted, then back, every --drift-period events)",
    ),
]
DriftPeriodOpt = Annotated[
    int, typer.Option("--drift-period", help="Events of a drift period, see --drift", min=1)
]
DriftStrengthOpt = Annotated[
    float,
    typer.Option(
        "--drift-strength", help="How far a full drift moves a class's look (1: as documented)."
    ),
]
DriftClassesOpt = Annotated[
    str | None,
    typer.Option(
        "--drift-classes",
        help="Comma-separated labels of the classes that drift (default: every class).",
        show_default=False,
    ),
]
RecurCycleOpt = Annotated[
    int,
    typer.Option(
        "--recur-cycle",
        help="Generated events of a recurrence cycle: each class is away once a cycle.",
        min=2,
    ),
]
RecurAbsentOpt = Annotated[
    int,
    typer.Option(
        "--recur-absent",
        help="Generated events each class is away per cycle (0: classes never leave; at most "
        "half the cycle).",
        min=0,
    ),
]


@dataclass(frozen=True, slots=True)
class RunLength:
    """What a run sends each device: ``events`` (None: all that are left, or for ever when
    ``forever``); ``endless``: the scenario goes on past its finite events."""

    events: int | None = None
    forever: bool = False

    @property
    def endless(self) -> bool:
        return self.forever or self.events is not None

    def plan_line(self, finite_events: int, devices: int, from_seq: int | None) -> str:
        """What the run will send, said before the devices' statuses tell where each one
        continues, e.g. ``2000 events x 2 devices, each from the seq after its last``."""
        start = f"from seq {from_seq}" if from_seq is not None else "from the seq after its last"
        fleet = f"{devices} device{'s' if devices != 1 else ''}"
        if self.forever:
            return f"events until stopped x {fleet}, each {start}"
        if self.events is not None:
            return f"{_events(self.events)} x {fleet}, each {start}"
        if from_seq is not None:
            left = max(0, finite_events - from_seq + 1)
            seqs = f"seq {from_seq}" if left == 1 else f"seqs {from_seq}-{finite_events}"
            return f"{_events(left)} x {fleet} ({seqs})"
        return f"up to {_events(finite_events)} x {fleet}, each {start}"


def _events(count: int) -> str:
    return f"{count} event{'s' if count != 1 else ''}"


def run_length(
    events: int | None, forever: bool, hours: float | None, cadence_s: float
) -> RunLength:
    """``--events``, ``--forever`` and ``--hours`` as one :class:`RunLength` (exit 2 when
    they conflict or ``--hours`` is not a positive number)."""
    given = [flag for flag, v in (("--events", events), ("--hours", hours)) if v is not None]
    if forever and given:
        raise fail(f"--forever streams without an end: drop {' and '.join(given)}", code=2)
    if len(given) == 2:
        raise fail("--events and --hours both say how long: give one", code=2)
    if hours is not None:
        if not (math.isfinite(hours) and hours > 0):
            raise typer.BadParameter(f"{hours} is not a positive number", param_hint="--hours")
        events = max(1, math.ceil(hours * 3600 / cadence_s))
    return RunLength(events=events, forever=forever)


def endless_options(
    drift: DriftName,
    period_events: int,
    strength: float,
    classes: str | None,
    cycle_events: int,
    absent_events: int,
) -> EndlessOptions:
    """The drift and recurrence flags as :class:`EndlessOptions` (a bad value: exit 2)."""
    from dataset_stream.endless import Drift, DriftKind, EndlessOptions, Recurrence

    labels = None
    if classes is not None:
        try:
            labels = tuple(int(part) for part in classes.split(","))
        except ValueError:
            raise typer.BadParameter(
                f"{classes!r} is not a comma-separated list of labels", param_hint="--drift-classes"
            ) from None
    try:
        chosen = Drift(DriftKind(drift.value), period_events, strength, labels)
    except ValueError as exc:
        hint = "--drift-classes" if "classes" in str(exc) else "--drift-strength"
        raise typer.BadParameter(str(exc), param_hint=hint) from exc
    try:
        recurrence = Recurrence(cycle_events, absent_events)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--recur-absent") from exc
    return EndlessOptions(drift=chosen, recurrence=recurrence)


def describe(options: EndlessOptions, finite_events: int) -> str:
    """One line on what the generated events do, e.g. ``events past 77 are generated: drift
    abrupt (period 200 events, strength 1), each class away 100 of every 300 events``."""
    drift = options.drift
    said = "no drift"
    if drift.kind != "none":
        which = "" if drift.classes is None else f", classes {','.join(map(str, drift.classes))}"
        said = (
            f"drift {drift.kind} (period {drift.period_events} events, strength "
            f"{drift.strength:g}{which})"
        )
    recur = options.recurrence
    away = (
        f"each class away {recur.absent_events} of every {recur.cycle_events} events"
        if recur.absent_events
        else "no class leaves"
    )
    return f"events past {finite_events} are generated: {said}, {away}"


__all__ = [
    "DriftClassesOpt",
    "DriftName",
    "DriftOpt",
    "DriftPeriodOpt",
    "DriftStrengthOpt",
    "ForeverOpt",
    "HoursOpt",
    "RecurAbsentOpt",
    "RecurCycleOpt",
    "RunLength",
    "describe",
    "endless_options",
    "run_length",
]
