"""Endless scenarios: a finite scenario's events, then generated events that never run out.

Events ``1..K`` of a device are exactly the finite scenario's (``K`` = its ``num_events``: 77
for digits ``nic``). Event ``k > K`` is generated, lazily, as a pure function of (data set,
scenario, seed, options, device, ``k``): nothing is kept per event and no earlier event is
walked through, so a stream may start at any seq and two streams agree on every event.

Generated event ``g = k - K - 1`` (``g >= 0``):

1. **Unit.** The scenario's units are its event shapes over *all* the training data: ``nic``
   one class of one training session, ``nc`` one class of every training session, ``ni`` every
   class of one training session (the factory's units too: they come back like the others).
   Generated events go through the units in *rounds* of ``U`` events (``U`` units): round
   ``r = g // U`` takes them in an order seeded by (seed, device, ``r``) and event ``g`` is the
   one at ``g mod U``. A unit whose class is away (:class:`Recurrence`) gives way to the next
   unit of the order whose class is there; an ``ni`` unit drops the classes that are away.
2. **Samples.** The unit's training rows, shuffled by (seed, device, ``k``), at most as many as
   the largest finite event (the scenario's ``max_event_samples`` chunks). Only training
   sessions' rows are ever used: no test sample, nor another rendering of one.
3. **Look.** Round ``r`` is a new recording of every training session: session ``s`` is
   rendered through a look drawn from (seed, ``r``, ``s``), the same for every device; each
   sample's look is then moved by its class's drift (:class:`Drift`) at event ``g``, and every
   sample gets its own sensor noise (:mod:`dataset_stream.endless.looks`).

With ``same_order`` the device plays no part: every device gets the same events.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, overload

import numpy as np

from dataset_stream.continuation import ENDLESS_EVENTS
from dataset_stream.endless.looks import ImageLook, Look, Rendering, SignalLook
from dataset_stream.endless.schedule import EndlessOptions
from dataset_stream.errors import ScenarioError
from dataset_stream.protocol.topics import validate_device_id
from dataset_stream.scenarios import Event, Scenario, build_scenario
from dataset_stream.sources import Dataset

#: Generated events an :class:`EventStream` keeps (the one being published and the one before),
#: so that asking twice gives the same object; few, as a stream holds one per device.
KEPT_EVENTS: Final = 2
#: Training rows the per-channel scale of sensor windows is measured on (evenly spaced).
SCALE_ROWS: Final = 4096

_UNIT_SALT: Final = 0xE11D
_PICK_SALT: Final = 0x91C4
_LOOK_SALT: Final = 0x100C
_DRIFT_SALT: Final = 0xD21F
_NOISE_SALT: Final = 0x2015E


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class GeneratedEvent(Event):
    """A generated learning event (``seq > K``): ``indices`` are the training rows it renders,
    ``generated`` its number ``g`` among generated events, ``recording`` the round whose new
    recording of the sessions renders it, ``drift`` each of its classes' drift amount
    (intensity times strength), ``rendering`` how ``x`` is made."""

    generated: int = 0
    recording: int = 0
    drift: tuple[tuple[int, float], ...] = ()
    rendering: Rendering | None = field(default=None, repr=False)

    @property
    def x(self) -> np.ndarray:
        return self.take(np.arange(len(self.indices)))

    def take(self, positions: np.ndarray) -> np.ndarray:
        assert self.rendering is not None
        return self.rendering.samples(self.dataset, self.indices, positions)

    def __repr__(self) -> str:
        return (
            f"GeneratedEvent(seq={self.seq}, generated={self.generated}, samples={len(self)}, "
            f"classes={self.classes}, sessions={self.sessions}, recording={self.recording}, "
            f"drift={self.drift})"
        )


@dataclass(frozen=True, slots=True, eq=False)
class EndlessScenario(Scenario):
    """A finite scenario whose events go on for ever (see the module docstring).

    ``num_events`` is :data:`ENDLESS_EVENTS`; ``finite_events`` (``K``) the finite part's.
    """

    options: EndlessOptions = field(default_factory=EndlessOptions)
    units: tuple[np.ndarray, ...] = field(init=False, repr=False)
    unit_class: tuple[int, ...] = field(init=False, repr=False)  # -1: every class (ni)
    present: tuple[int, ...] = field(init=False, repr=False)
    max_samples: int = field(init=False, repr=False)
    scale: np.ndarray | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        Scenario.__post_init__(self)
        data = self.dataset
        train = data.select(sessions=data.train_sessions)
        present = tuple(int(c) for c in np.unique(data.y[train]))
        sessions = [int(s) for s in np.unique(data.session[train])]
        if self.name == "nic":
            pairs = [([c], [s], c) for s in sessions for c in present]
        elif self.name == "nc":
            pairs = [([c], sessions, c) for c in present]
        else:
            pairs = [(list(present), [s], -1) for s in sessions]
        units = [(data.select(sessions=s, classes=c), label) for c, s, label in pairs]
        units = [(rows, label) for rows, label in units if len(rows)]
        set_ = object.__setattr__
        set_(self, "units", tuple(rows for rows, _ in units))
        set_(self, "unit_class", tuple(label for _, label in units))
        set_(self, "present", present)
        set_(self, "max_samples", max(len(chunk) for block in self.blocks for chunk in block))
        set_(self, "scale", None if _is_image(data) else _channel_scale(data, train))
        drifting = self.options.drift.classes
        if drifting is not None and not set(drifting) <= set(range(self.num_classes)):
            raise ScenarioError(
                f"drift classes {list(drifting)} are not all labels 0..{self.num_classes - 1}"
            )

    @classmethod
    def of(cls, finite: Scenario, options: EndlessOptions | None = None) -> EndlessScenario:
        """``finite`` made endless with ``options`` (default: :class:`EndlessOptions`)."""
        base = {f.name: getattr(finite, f.name) for f in fields(Scenario)}
        return cls(**base, options=options or EndlessOptions())

    @property
    def num_events(self) -> int:
        return ENDLESS_EVENTS

    def events(self, device_id: str, same_order: bool = False) -> EventStream:
        """``device_id``'s events, lazily: the finite ones, then generated ones for ever."""
        validate_device_id(device_id)
        finite = list(Scenario.events(self, device_id, same_order))
        return EventStream(self, device_id, same_order, finite)

    def event(self, device_id: str, seq: int, same_order: bool = False) -> Event:
        """Event ``seq`` of ``device_id`` on its own (``seq > K``: generated; no list made)."""
        if seq <= self.finite_events:
            return self.events(device_id, same_order)[seq - 1]
        return self.generate(device_id, seq, same_order)

    def generate(self, device_id: str, seq: int, same_order: bool = False) -> GeneratedEvent:
        """Generated event ``seq`` (``> K``) of ``device_id``; see the module docstring."""
        g = seq - self.finite_events - 1
        if g < 0 or seq > ENDLESS_EVENTS:
            raise IndexError(f"seq {seq} is not a generated event (K = {self.finite_events})")
        words = [] if same_order else _device_words(device_id)
        count = len(self.units)
        round_, slot = divmod(g, count)
        order = np.random.default_rng(
            np.random.SeedSequence([self.seed, _UNIT_SALT, *words, round_])
        ).permutation(count)
        shift = words[0] % len(self.present) if words else 0
        unit = int(order[slot])
        for step in range(count):
            candidate = int(order[(slot + step) % count])
            label = self.unit_class[candidate]
            if label < 0 or not self._away(label, shift, g):
                unit = candidate
                break
        rows = self.units[unit]
        if self.unit_class[unit] < 0:  # every class: leave out the ones away
            there = [c for c in self.present if not self._away(c, shift, g)]
            kept = rows[np.isin(self.dataset.y[rows], there)]
            rows = kept if len(kept) else rows
        pick = np.random.default_rng(np.random.SeedSequence([self.seed, _PICK_SALT, *words, seq]))
        rows = pick.permutation(rows)[: self.max_samples]
        looks, look_of, drift = self._looks(rows, round_, g)
        rendering = Rendering(
            looks=looks,
            look_of=look_of,
            noise_entropy=(self.seed, _NOISE_SALT, *words, seq),
            scale=self.scale,
        )
        return GeneratedEvent(
            seq - 1,
            rows,
            self.dataset,
            generated=g,
            recording=round_,
            drift=drift,
            rendering=rendering,
        )

    def away(self, device_id: str, seq: int, same_order: bool = False) -> tuple[int, ...]:
        """The classes away (:class:`Recurrence`) at ``device_id``'s generated event ``seq``."""
        g = seq - self.finite_events - 1
        if g < 0:
            raise ValueError(f"seq {seq} is not a generated event (K = {self.finite_events})")
        words = [] if same_order else _device_words(device_id)
        shift = words[0] % len(self.present) if words else 0
        return tuple(c for c in self.present if self._away(c, shift, g))

    def _away(self, label: int, shift: int, g: int) -> bool:
        rank = self.present.index(label)
        return self.options.recurrence.away(rank, len(self.present), shift, g)

    def _looks(
        self, rows: np.ndarray, round_: int, g: int
    ) -> tuple[tuple[Look, ...], np.ndarray, tuple[tuple[int, float], ...]]:
        """The looks of the (session, class) groups of ``rows``, each row's group, and the
        drift intensity (times strength) of each class of the event."""
        drift = self.options.drift
        keys = np.stack([self.dataset.session[rows], self.dataset.y[rows]], axis=1)
        groups, look_of = np.unique(keys, axis=0, return_inverse=True)
        if len(groups) > np.iinfo(np.uint16).max:
            raise ScenarioError(f"an event spans {len(groups)} (session, class) pairs")
        amounts = {
            int(c): drift.strength * drift.intensity(self.seed, int(c), g)
            for c in np.unique(groups[:, 1])
        }
        looks = tuple(self._look(round_, int(s), int(c), amounts[int(c)]) for s, c in groups)
        return looks, look_of.reshape(-1).astype(np.uint16), tuple(amounts.items())

    def _look(self, round_: int, session: int, label: int, amount: float) -> Look:
        """The look of ``session`` in round ``round_``, moved by ``amount`` of ``label``'s
        drift."""
        session_rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, _LOOK_SALT, round_, session])
        )
        drift_rng = np.random.default_rng(np.random.SeedSequence([self.seed, _DRIFT_SALT, label]))
        if self.scale is None:
            return ImageLook.session(session_rng).moved(ImageLook.drift(drift_rng), amount)
        channels, length = len(self.scale), self.sample_shape[-1]
        look = SignalLook.session(session_rng, channels, length)
        return look.moved(SignalLook.drift(drift_rng, channels, length), amount)


class EventStream(Sequence[Event]):
    """A device's events of an :class:`EndlessScenario`, made when asked for: ``stream[i]`` is
    event ``seq = i + 1`` (the finite ones held, the generated ones made on demand, the last
    :data:`KEPT_EVENTS` of them kept). Its length is :data:`ENDLESS_EVENTS`."""

    def __init__(
        self, scenario: EndlessScenario, device_id: str, same_order: bool, finite: list[Event]
    ) -> None:
        self.scenario = scenario
        self.device_id = device_id
        self.same_order = same_order
        self._finite = finite
        self._kept: OrderedDict[int, GeneratedEvent] = OrderedDict()

    def __len__(self) -> int:
        return ENDLESS_EVENTS

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            return [self[i] for i in range(ENDLESS_EVENTS)[index]]
        if not 0 <= index < ENDLESS_EVENTS:
            raise IndexError(f"event index {index} is outside 0..{ENDLESS_EVENTS - 1}")
        if index < len(self._finite):
            return self._finite[index]
        kept = self._kept.get(index)
        if kept is None:
            kept = self.scenario.generate(self.device_id, index + 1, self.same_order)
            self._kept[index] = kept
            if len(self._kept) > KEPT_EVENTS:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(index)
        return kept

    def __iter__(self) -> Iterator[Event]:
        index = 0
        while index < ENDLESS_EVENTS:
            yield self[index]
            index += 1


def build_endless(
    dataset: str | Dataset = "digits",
    scenario: str = "nic",
    *,
    seed: int = 0,
    options: EndlessOptions | None = None,
    **finite: Any,
) -> EndlessScenario:
    """:func:`~dataset_stream.scenarios.build_scenario` (``finite``: its other options), made
    endless with ``options``."""
    return EndlessScenario.of(build_scenario(dataset, scenario, seed=seed, **finite), options)


def _device_words(device_id: str) -> list[int]:
    digest = hashlib.sha256(device_id.encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def _is_image(data: Dataset) -> bool:
    return data.dtype == np.uint8 and len(data.sample_shape) in (2, 3)


def _channel_scale(data: Dataset, train: np.ndarray) -> np.ndarray:
    """Each channel's standard deviation over (up to :data:`SCALE_ROWS`) training samples;
    channels are a sample's first axis (one channel for a flat vector)."""
    rows = train[np.linspace(0, len(train) - 1, min(len(train), SCALE_ROWS)).astype(np.intp)]
    x = data.take(rows).astype(np.float64)
    channels = data.sample_shape[0] if len(data.sample_shape) >= 2 else 1
    per_channel = x.reshape(len(x), channels, -1).transpose(1, 0, 2).reshape(channels, -1)
    return np.maximum(per_channel.std(axis=1), 1e-6).astype(np.float32)


__all__ = [
    "ENDLESS_EVENTS",
    "KEPT_EVENTS",
    "EndlessScenario",
    "EventStream",
    "GeneratedEvent",
    "build_endless",
]
