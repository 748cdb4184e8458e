"""When generated events drift and which classes are away: pure functions of the event number.

Generated events are numbered ``g = 0, 1, 2, ...`` (the scenario's event ``K + 1 + g``). Both
schedules below are closed forms of ``g`` (and the class), so the event of any ``g`` is computed
without walking the ones before it.

**Drift** moves the appearance of a class's samples away from how its sessions render it: at
intensity ``a`` in ``[0, 1]``, each transform parameter moves by ``a x strength`` times the
class's own drift (a seeded direction, :mod:`dataset_stream.endless.looks`). With ``P`` the
``period_events`` and ``o_c`` the class's onset (seeded, uniform in ``[0, P)``):

- ``none``: ``a = 0`` (no drift);
- ``gradual``: ``a = clip((g - o_c) / P, 0, 1)``: the class starts drifting at ``o_c`` and reaches
  its full drift ``P`` events later, where it stays;
- ``abrupt``: ``a = 1`` from ``g = o_c`` on, 0 before: a sudden change that stays;
- ``recurring``: ``a = floor((g + o_c) / P) mod 2``: the class alternates between its usual
  look and its drifted one every ``P`` events (concepts that come back).

Only ``classes`` drift (None: every class).

**Recurrence** sends classes away and brings them back: with ``C`` the ``cycle_events``, ``A``
the ``absent_events`` and ``n`` classes, class ``c`` (its rank ``i`` among the classes, shifted
by a per-device offset ``s``) is away while ``(g + ((i + s) mod n) x C / n) mod C < A``: away for
``A`` events of every ``C``, the classes' absences spread evenly over the cycle, so at most about
``n x A / C`` classes are away at once (``A <= C / 2`` keeps at least half of them). ``A = 0``:
no class ever leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np

#: Defaults of the documented parameters (docs/datasets.md, "Endless scenarios").
DEFAULT_PERIOD_EVENTS: Final = 200
DEFAULT_STRENGTH: Final = 1.0
DEFAULT_CYCLE_EVENTS: Final = 300
DEFAULT_ABSENT_EVENTS: Final = 100
_ONSET_SALT: Final = 0x0D51F7


class DriftKind(StrEnum):
    """How a class's drift intensity follows the generated event number."""

    none = "none"
    gradual = "gradual"
    abrupt = "abrupt"
    recurring = "recurring"


@dataclass(frozen=True, slots=True)
class Drift:
    """A drift schedule; see the module docstring."""

    kind: DriftKind = DriftKind.none
    period_events: int = DEFAULT_PERIOD_EVENTS
    strength: float = DEFAULT_STRENGTH
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", DriftKind(self.kind))
        if self.period_events < 1:
            raise ValueError(f"drift period_events must be >= 1, not {self.period_events!r}")
        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= 4.0):
            raise ValueError(f"drift strength must lie in 0..4, not {self.strength!r}")
        if self.classes is not None:
            if any(c < 0 for c in self.classes) or len(set(self.classes)) != len(self.classes):
                raise ValueError(f"drift classes must be distinct labels >= 0: {self.classes}")
            object.__setattr__(self, "classes", tuple(sorted(self.classes)))

    def onset(self, seed: int, label: int) -> int:
        """``o_c``: the generated event at which ``label`` starts drifting (``gradual``,
        ``abrupt``) or its phase (``recurring``), in ``[0, period_events)``."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, _ONSET_SALT, label]))
        return int(rng.integers(self.period_events))

    def intensity(self, seed: int, label: int, g: int) -> float:
        """The drift intensity ``a`` (0..1, before ``strength``) of ``label`` at event ``g``."""
        if g < 0:
            raise ValueError(f"generated event numbers start at 0, not {g}")
        if self.kind is DriftKind.none or (self.classes is not None and label not in self.classes):
            return 0.0
        onset = self.onset(seed, label)
        if self.kind is DriftKind.gradual:
            return min(1.0, max(0.0, (g - onset) / self.period_events))
        if self.kind is DriftKind.abrupt:
            return 1.0 if g >= onset else 0.0
        return float(((g + onset) // self.period_events) % 2)


@dataclass(frozen=True, slots=True)
class Recurrence:
    """Classes away for ``absent_events`` of every ``cycle_events``; see the module docstring."""

    cycle_events: int = DEFAULT_CYCLE_EVENTS
    absent_events: int = DEFAULT_ABSENT_EVENTS

    def __post_init__(self) -> None:
        if self.cycle_events < 2:
            raise ValueError(f"recurrence cycle_events must be >= 2, not {self.cycle_events!r}")
        if not 0 <= 2 * self.absent_events <= self.cycle_events:
            raise ValueError(
                f"recurrence absent_events must lie in 0..cycle_events / 2 "
                f"({self.cycle_events // 2}), not {self.absent_events!r}"
            )

    def away(self, rank: int, n_classes: int, shift: int, g: int) -> bool:
        """Whether the class of ``rank`` (0..n-1 among ``n_classes``) is away at event ``g``,
        for a device whose classes' absences are shifted by ``shift`` ranks."""
        if self.absent_events == 0:
            return False
        phase = ((rank + shift) % n_classes) * self.cycle_events // n_classes
        return (g + phase) % self.cycle_events < self.absent_events


@dataclass(frozen=True, slots=True, kw_only=True)
class EndlessOptions:
    """What a scenario's generated events do: their drift and their classes' recurrence."""

    drift: Drift = Drift()
    recurrence: Recurrence = Recurrence()


__all__ = [
    "DEFAULT_ABSENT_EVENTS",
    "DEFAULT_CYCLE_EVENTS",
    "DEFAULT_PERIOD_EVENTS",
    "DEFAULT_STRENGTH",
    "Drift",
    "DriftKind",
    "EndlessOptions",
    "Recurrence",
]
