"""Continual-learning scenarios: a source's training sessions cut into a factory batch + events.

Every scenario first fixes, from its ``seed`` only, the *factory* batch (what the device model is
trained on before deployment, identical for every device) and the contents of every learning
event; each device then receives the events in its own seeded order (or all in the same order).

- ``nic`` (NICv2-like, the default): the factory batch holds ``factory_classes`` classes from
  ``factory_sessions`` training session(s); every later event is *one class from one training
  session*; new instances and new classes keep arriving in a random order.
- ``nc`` (new classes): the factory batch holds ``factory_classes`` classes from every training
  session; every later event is one new class, all training sessions.
- ``ni`` (new instances): the factory batch is every class of ``factory_sessions`` training
  session(s); every later event is one more training session, all classes.

Events larger than ``max_event_samples`` are split into consecutive chunks. The eval set is drawn
from the test sessions only, so no test sample is ever in the factory batch or in an event.
Sequence numbers of events are 1..K; the factory batch is never published.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataset_stream.errors import ScenarioError
from dataset_stream.protocol.topics import validate_device_id
from dataset_stream.sources import Dataset, load_source

SCENARIOS = ("nic", "nc", "ni")
DEFAULT_EVAL_MAX_BYTES = 32 * 1024 * 1024
_ORDER_SALT = 0x5E9


@dataclass(frozen=True, slots=True, eq=False)
class Event:
    """One learning event of a device's stream; ``seq`` is ``index + 1``.

    Only row indices are held: ``x`` (read from the source, e.g. CORe50 image files) and ``y``
    (int64 ``[N]``) are built when asked for, so a fleet's streams cost little memory.
    """

    index: int
    indices: np.ndarray
    dataset: Dataset = field(repr=False)

    def __post_init__(self) -> None:
        if self.index < 0 or self.indices.ndim != 1 or len(self.indices) == 0:
            raise ValueError(f"event {self.index}: needs a non-negative index and some samples")

    @property
    def seq(self) -> int:
        return self.index + 1

    @property
    def x(self) -> np.ndarray:
        return self.dataset.take(self.indices)

    @property
    def y(self) -> np.ndarray:
        return self.dataset.y[self.indices]

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The samples at ``positions`` (int ``[k]``, into ``indices``) of this event's ``x``."""
        return self.dataset.take(self.indices[positions])

    @property
    def sessions(self) -> tuple[int, ...]:
        return tuple(int(s) for s in np.unique(self.dataset.session[self.indices]))

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(int(c) for c in np.unique(self.y))

    @property
    def session(self) -> int | None:
        """The session of this event's samples, ``None`` when they come from several."""
        sessions = self.sessions
        return sessions[0] if len(sessions) == 1 else None

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return (
            f"Event(seq={self.seq}, samples={len(self)}, classes={self.classes}, "
            f"sessions={self.sessions})"
        )


@dataclass(frozen=True, slots=True, eq=False)
class Scenario:
    """A factory batch, the learning events (as ordered blocks) and the eval set of a source."""

    dataset: Dataset
    name: str
    seed: int
    factory_indices: np.ndarray
    blocks: tuple[tuple[np.ndarray, ...], ...]
    eval_indices: np.ndarray

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ScenarioError(f"unknown scenario {self.name!r}; use one of {SCENARIOS}")
        if not self.blocks or not all(self.blocks) or len(self.factory_indices) == 0:
            raise ScenarioError(f"{self.name}: needs a factory batch and at least one event")
        if len(self.eval_indices) == 0:
            raise ScenarioError(f"{self.name}: the eval set is empty")

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.dataset.sample_shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.dataset.dtype

    @property
    def num_events(self) -> int:
        return self.finite_events

    @property
    def finite_events(self) -> int:
        """Events made from the blocks (an endless scenario's later ones are generated)."""
        return sum(len(block) for block in self.blocks)

    @property
    def source(self) -> str:
        return self.dataset.name

    @property
    def factory(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` the device model is trained on before deployment (same for all devices)."""
        return self.dataset.take(self.factory_indices), self.dataset.y[self.factory_indices]

    @property
    def eval_set(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` from the held-out test sessions."""
        return self.dataset.take(self.eval_indices), self.dataset.y[self.eval_indices]

    def events(self, device_id: str, same_order: bool = False) -> Sequence[Event]:
        """The learning events of ``device_id``, ordered by ``(seed, device_id)``.

        With ``same_order`` every device gets the order fixed by ``seed`` alone. (An endless
        scenario, :mod:`dataset_stream.endless`, gives these, then generated ones, lazily.)
        """
        validate_device_id(device_id)
        entropy = [self.seed, _ORDER_SALT]
        if not same_order:
            digest = hashlib.sha256(device_id.encode()).digest()
            entropy += [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
        order = np.random.default_rng(np.random.SeedSequence(entropy)).permutation(len(self.blocks))
        chunks = [chunk for b in order for chunk in self.blocks[b]]
        return [Event(i, chunk, self.dataset) for i, chunk in enumerate(chunks)]


def build_scenario(
    dataset: str | Dataset = "digits",
    scenario: str = "nic",
    *,
    seed: int = 0,
    data_seed: int = 0,
    factory_classes: int | None = None,
    factory_class_ids: Sequence[int] | None = None,
    factory_sessions: int = 1,
    max_event_samples: int = 4096,
    eval_max_bytes: int = DEFAULT_EVAL_MAX_BYTES,
) -> Scenario:
    """Build ``scenario`` over ``dataset`` (a source spec, see :func:`load_source`, or a Dataset).

    ``seed`` fixes the factory batch, the event contents and the default order; ``data_seed``
    fixes generated sources (digits sessions, sensor drift). ``factory_classes`` defaults to 30%
    of the classes present in training; ``factory_class_ids`` names them instead (label indices:
    the classes a model was trained on, so that its events are the other classes; every other
    draw of the seed stays what it would be without them). The eval set keeps a
    class-stratified subset of the test sessions of at most ``eval_max_bytes``.
    """
    data = load_source(dataset, seed=data_seed) if isinstance(dataset, str) else dataset
    if scenario not in SCENARIOS:
        raise ScenarioError(f"unknown scenario {scenario!r}; use one of {', '.join(SCENARIOS)}")
    if max_event_samples < 1 or factory_sessions < 1 or eval_max_bytes < 1:
        raise ScenarioError("max_event_samples, factory_sessions and eval_max_bytes must be >= 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xFAC]))
    train = data.select(sessions=data.train_sessions)
    present = np.unique(data.y[train])
    sessions = np.unique(data.session[train])
    n_classes = round(0.3 * len(present)) if factory_classes is None else factory_classes
    n_classes = max(1, n_classes)
    if n_classes >= len(present) and scenario != "ni":
        raise ScenarioError(f"factory_classes={n_classes} leaves no new class of {len(present)}")
    if factory_sessions >= len(sessions) and scenario == "ni":
        raise ScenarioError(f"factory_sessions={factory_sessions} leaves no new session")
    f_classes = np.sort(rng.choice(present, size=n_classes, replace=False))
    if factory_class_ids is not None:
        f_classes = _named_classes(factory_class_ids, present, scenario)
    n_sessions = min(factory_sessions, len(sessions))
    f_sessions = np.sort(rng.choice(sessions, size=n_sessions, replace=False))

    def unit(classes: object, in_sessions: object) -> np.ndarray:
        return rng.permutation(data.select(sessions=in_sessions, classes=classes))

    if scenario == "nic":
        factory = unit(f_classes, f_sessions)
        units = [
            unit([c], [s])
            for s in sessions
            for c in present
            if not (c in f_classes and s in f_sessions)
        ]
    elif scenario == "nc":
        factory = unit(f_classes, sessions)
        units = [unit([c], sessions) for c in present if c not in f_classes]
    else:
        factory = unit(present, f_sessions)
        units = [unit(present, [s]) for s in sessions if s not in f_sessions]
    blocks = tuple(_chunks(u, max_event_samples) for u in units if len(u))
    return Scenario(
        dataset=data,
        name=scenario,
        seed=seed,
        factory_indices=factory,
        blocks=blocks,
        eval_indices=_eval_indices(data, eval_max_bytes, rng),
    )


def factory_split(
    dataset: str = "digits", scenario: str = "nic", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The factory batch ``(x, y)`` of ``build_scenario(dataset, scenario, seed=seed)``."""
    return build_scenario(dataset, scenario, seed=seed).factory


def _named_classes(ids: Sequence[int], present: np.ndarray, scenario: str) -> np.ndarray:
    """``ids`` as sorted factory classes, each one present in training, leaving a new one."""
    chosen = np.unique(np.asarray(list(ids), dtype=np.int64))
    missing = sorted(set(chosen.tolist()) - set(present.tolist()))
    if len(chosen) == 0 or missing:
        raise ScenarioError(
            f"factory classes {list(ids)}: {missing or 'none'} not among the classes of the "
            f"training sessions {present.tolist()}"
        )
    if len(chosen) >= len(present) and scenario != "ni":
        raise ScenarioError(f"factory classes {chosen.tolist()} leave no new class to learn")
    return chosen


def _chunks(indices: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    parts = -(-len(indices) // size)
    return tuple(np.array_split(indices, parts))


def _eval_indices(data: Dataset, max_bytes: int, rng: np.random.Generator) -> np.ndarray:
    test = data.select(sessions=data.test_sessions)
    sample_bytes = int(np.prod(data.sample_shape)) * data.dtype.itemsize + 8
    keep = max(1, max_bytes // sample_bytes)
    if keep >= len(test):
        return test
    labels = data.y[test]
    chosen = []
    for label in np.unique(labels):
        members = test[labels == label]
        share = max(1, round(keep * len(members) / len(test)))
        chosen.append(rng.choice(members, size=min(share, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))
