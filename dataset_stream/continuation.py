"""Where each device's batch seqs continue: a producer's plan from the nodes' retained statuses.

A node publishes its retained ``status`` after every event it commits, with ``last_seq``, the
last seq it committed (learned, depleted, failed or skipped in a gap). A producer that starts
reads those statuses and numbers each device's batches from ``last_seq + 1``, so a second run
continues the first one instead of sending seqs the node answers ``duplicate``. The stream sends
a scenario's event ``k`` as seq ``k`` (two runs agree on what seq ``k`` holds), so it continues
with the events after the last one learned.

:func:`plan_seqs` decides, without I/O, what a run sends each device, and refuses a run (all of
it, with one line: :meth:`SeqPlan.refusal_line`) when what it would send was learned before (an
explicit ``from_seq`` at or below a device's ``last_seq``) or a device has no events left. An
endless scenario (:mod:`dataset_stream.endless`) has :data:`ENDLESS_EVENTS` per device: it
never runs out, and a run continues into its generated events like into any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

#: Devices named in a refusal line before the rest are counted.
NAMED_DEVICES: Final = 5
#: The events per device of a scenario without an end (an endless scenario's ``num_events``):
#: more than any stream sends (at one event a second, 31 million years), and a valid seq on
#: the wire (below 10**18). A run whose last seq is this one has no planned end.
ENDLESS_EVENTS: Final = 10**15


@dataclass(frozen=True, slots=True)
class SeqPlan:
    """What a run sends: ``ranges`` maps each device to ``(first, last)``, the seqs it gets
    (``last >= first``). Refused devices: ``learned_before`` (their ``last_seq``, at or past the
    explicit ``from_seq``), ``exhausted`` (their ``last_seq``, the scenario's last event or past
    it); ``available``: events the scenario has per device; ``from_seq`` as asked (None:
    continue after each device's ``last_seq``); ``events``: per device, as asked (None: all
    that are left)."""

    ranges: Mapping[str, tuple[int, int]]
    learned_before: Mapping[str, int] = field(default_factory=dict)
    exhausted: Mapping[str, int] = field(default_factory=dict)
    available: Mapping[str, int] = field(default_factory=dict)
    from_seq: int | None = None
    events: int | None = None

    @property
    def refused(self) -> bool:
        """Whether the run must not send anything."""
        return bool(self.learned_before or self.exhausted)

    @property
    def total(self) -> int:
        """Batches the run sends, over every device."""
        return sum(last - first + 1 for first, last in self.ranges.values())

    @property
    def continued(self) -> dict[str, int]:
        """The devices that start past seq 1, with their first seq."""
        return {d: first for d, (first, _) in self.ranges.items() if first > 1}

    def seqs_text(self) -> str:
        """``seqs 4-6`` (every device the same) or ``seqs 1-9`` (the lowest to the highest)."""
        if not self.ranges:
            return "no seqs"
        first = min(a for a, _ in self.ranges.values())
        last = max(b for _, b in self.ranges.values())
        if last >= ENDLESS_EVENTS:
            return f"seqs from {first}"
        return f"seq {first}" if first == last else f"seqs {first}-{last}"

    @property
    def short(self) -> dict[str, int]:
        """The devices that get fewer than the ``events`` asked (their scenario ends first),
        with the number they get."""
        if self.events is None:
            return {}
        sizes = {d: last - first + 1 for d, (first, last) in self.ranges.items()}
        return {d: n for d, n in sizes.items() if n < self.events}

    def short_line(self, label: Callable[[str], str]) -> str:
        """One line saying that the scenario of some devices (``label`` names a device's) ends
        before the ``events`` asked and what they get instead, e.g. ``digits / nic has 77 events
        per device; sending 77 of the 100 asked (seqs 1-77)``; empty if none is short."""
        groups: dict[tuple[str, int], dict[str, tuple[int, int]]] = {}
        for device in self.short:
            key = (label(device), self.available.get(device, 0))
            groups.setdefault(key, {})[device] = self.ranges[device]
        parts = []
        for (name, available), ranges in groups.items():
            sizes = sorted({last - first + 1 for first, last in ranges.values()})
            sending = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
            seqs = SeqPlan(ranges).seqs_text()
            parts.append(
                f"{name} has {available} events per device; sending {sending} of the "
                f"{self.events} asked ({seqs})"
            )
        return "; ".join(parts)

    def refusal_line(self) -> str:
        """One line saying why nothing is sent, naming the devices; empty if not refused."""
        parts = []
        if self.learned_before:
            named = _named(self.learned_before, lambda d, last: f"{d} (learned up to {last})")
            parts.append(
                f"--from-seq {self.from_seq} would send seqs learned before to "
                f"{len(self.learned_before)} device(s): {named}; leave --from-seq out to "
                "continue after each device's last seq"
            )
        if self.exhausted:
            named = _named(
                self.exhausted,
                lambda d, last: f"{d} (learned up to {last} of {self.available.get(d, last)})",
            )
            parts.append(
                f"no events left for {len(self.exhausted)} device(s): {named}; start their "
                "nodes on fresh state to stream the scenario again"
            )
        return "nothing sent: " + "; ".join(parts) if parts else ""


def plan_seqs(
    last_seqs: Mapping[str, int | None],
    available: Mapping[str, int],
    *,
    events: int | None = None,
    from_seq: int | None = None,
) -> SeqPlan:
    """The seqs a run sends each device of ``available`` (events its scenario has).

    ``last_seqs``: each device's ``last_seq`` from its status (absent or None: it learned none,
    or said nothing: seq 1 is next); ``events``: at most this many per device (None: up to the
    scenario's last event); ``from_seq``: the first seq for every device instead of
    ``last_seq + 1``, refused for a device whose ``last_seq`` is at or past it.
    """
    if events is not None and events < 1:
        raise ValueError(f"events must be >= 1, not {events!r}")
    if from_seq is not None and from_seq < 1:
        raise ValueError(f"from_seq must be >= 1, not {from_seq!r}")
    ranges: dict[str, tuple[int, int]] = {}
    learned_before: dict[str, int] = {}
    exhausted: dict[str, int] = {}
    for device, count in available.items():
        last_seq = last_seqs.get(device)
        if from_seq is not None and last_seq is not None and from_seq <= last_seq:
            learned_before[device] = last_seq
            continue
        first = from_seq if from_seq is not None else (last_seq or 0) + 1
        if first > count:
            exhausted[device] = last_seq if last_seq is not None else first - 1
            continue
        last = count if events is None else min(count, first + events - 1)
        ranges[device] = (first, last)
    return SeqPlan(ranges, learned_before, exhausted, dict(available), from_seq, events)


def _named(devices: Mapping[str, int], say: Callable[[str, int], str]) -> str:
    names = sorted(devices)
    shown = [say(d, devices[d]) for d in names[:NAMED_DEVICES]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")


__all__ = ["ENDLESS_EVENTS", "NAMED_DEVICES", "SeqPlan", "plan_seqs"]
