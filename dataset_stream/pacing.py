"""How a stream is paced: the cadence of events, the speed over real time, stagger, inference.

One policy value, checked once when it is built, so each rule lives here and nowhere else:
``vega-emu stream``, ``vega-emu up`` and :class:`~dataset_stream.StreamPublisher` all build a
:class:`Pacing`, and a value out of range is a :class:`~dataset_stream.errors.PacingError` that
names the field and the value. :func:`parse_speed` reads the ``--speed`` text (``max`` is the
closed loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dataset_stream.errors import PacingError

CLOSED_LOOP = "max"  # the speed text of a closed loop
#: The slowest pace a stream takes: one event a year of wall time (a slower one never sends,
#: and its re-send waits would overflow).
MAX_WALL_CADENCE_S = 365 * 86400.0


def _is_speed(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass(frozen=True, slots=True)
class Pacing:
    """When a stream sends each device its learning events and inference requests.

    ``cadence_s``: simulated seconds between two learning events of a device (> 0).
    ``speed``: simulated seconds per wall second (> 0; 1 is real time), or ``None`` for the
    closed loop: a device's next event goes once its previous one is answered.
    ``stagger``: each device at its own phase of a cadence instead of every device at the same
    instant; only for a paced stream (a ``speed``) without inference requests.
    ``infer_per_s``: unlabelled samples per simulated second each device is sent to classify
    between its events (>= 0; 0 sends none).
    """

    cadence_s: float = 60.0
    speed: float | None = 1.0
    stagger: bool = False
    infer_per_s: float = 0.0

    def __post_init__(self) -> None:
        if self.speed is not None and not _is_speed(self.speed):
            raise PacingError(
                "speed",
                self.speed,
                f"{self.speed!r} is not a positive number or None (closed loop)",
            )
        rate = self.infer_per_s
        if not math.isfinite(rate):
            raise PacingError("infer_per_s", rate, f"{rate} is not a number")
        if rate < 0:
            raise PacingError("infer_per_s", rate, f"{rate} is not a number >= 0")
        if not (math.isfinite(self.cadence_s) and self.cadence_s > 0):
            raise PacingError(
                "cadence_s", self.cadence_s, f"{self.cadence_s} is not a positive number of seconds"
            )
        if self.speed is not None and not self.cadence_s / self.speed <= MAX_WALL_CADENCE_S:
            raise PacingError(
                "speed",
                self.speed,
                f"{self.speed!r} is too slow: one event every {self.cadence_s / self.speed:.3g} "
                f"s of wall time (at most {MAX_WALL_CADENCE_S:.0f} s, a year)",
            )
        if self.stagger and (self.closed_loop or rate):
            raise PacingError(
                "stagger",
                True,
                "stagger spreads a paced stream: not with a closed loop (speed None) or "
                "inference requests",
            )

    @property
    def closed_loop(self) -> bool:
        """Whether each device's next event waits for the answer to its previous one."""
        return self.speed is None


def parse_speed(text: str) -> float | None:
    """``--speed``: a positive factor over real time, or ``max`` (closed loop: ``None``).

    A :class:`PacingError` (field ``speed``) names the text as given.
    """
    if text.strip().lower() == CLOSED_LOOP:
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = math.nan
    if not _is_speed(speed):
        raise PacingError("speed", text, f"{text!r} is not a positive number or {CLOSED_LOOP!r}")
    return speed


__all__ = ["CLOSED_LOOP", "MAX_WALL_CADENCE_S", "Pacing", "PacingError", "parse_speed"]
