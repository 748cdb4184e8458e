"""The instants tests put on the wire, so that every test's stream keeps one clock."""

from __future__ import annotations

from typing import Final

__all__ = ["NOW", "T0"]

#: the stream's clock at seq 0 (late 2025): a batch ``seq`` is due at ``T0 + 60 * seq``
T0: Final = 1_764_000_000.0
#: a monitor's wall clock in tests that pin it: every telemetry arrives at this time
NOW: Final = T0 + 1000.0
