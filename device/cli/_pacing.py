"""``--speed``, ``--cadence``, ``--infer-rate`` and ``--stagger`` as one checked :class:`Pacing`.

The rules are :class:`dataset_stream.pacing.Pacing`'s; here a value it refuses becomes an error
that names the flag (exit status 2), as ``stream`` and ``up`` print it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import typer

from device.cli._runtime import fail

if TYPE_CHECKING:
    from dataset_stream.pacing import Pacing, PacingError

#: The flag of each :class:`Pacing` field.
FLAGS: Final = {
    "speed": "--speed",
    "cadence_s": "--cadence",
    "infer_per_s": "--infer-rate",
    "stagger": "--stagger",
}
STAGGER_REFUSED: Final = (
    "--stagger spreads a paced stream: not with --speed max, --infer-rate or --dump"
)


def refused(exc: PacingError) -> typer.Exit | typer.BadParameter:
    """The command-line error to raise for ``exc``, naming its flag."""
    if exc.field == "stagger":
        return fail(STAGGER_REFUSED, code=2)
    return typer.BadParameter(exc.reason, param_hint=FLAGS[exc.field])


def pacing(speed: str, cadence_s: float, infer_rate: float, stagger: bool = False) -> Pacing:
    """The flags as a :class:`Pacing`; a bad value raises the error :func:`refused` gives."""
    from dataset_stream.pacing import Pacing, PacingError, parse_speed

    try:
        return Pacing(
            cadence_s=cadence_s, speed=parse_speed(speed), stagger=stagger, infer_per_s=infer_rate
        )
    except PacingError as exc:
        raise refused(exc) from exc


__all__ = ["FLAGS", "STAGGER_REFUSED", "pacing", "refused"]
