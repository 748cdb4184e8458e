"""A node's state between memory and disk: what the state file belongs to, what is read back
from its last commit, and the eval set kept beside it.

- :func:`model_id`: the content hash that ties a state file to exactly one model;
- :func:`open_parts`: the state file and replay memory of a node, with its settings and model;
- :class:`LiveState`: the node in memory as of its last commit; rebuilt from the file whenever
  a job fails before its commit, so memory and disk never disagree;
- :class:`EvalFile`: the held-out set saved next to the state file.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dataset_stream.protocol import EvalSet, ProtocolError, decode_eval
from device.energy import (
    Battery,
    CostConfig,
    LifetimeEstimator,
    Profile,
    event_cost,
    load_profile,
)
from device.learning.nn import SGD, Sequential
from device.learning.prequential import PrequentialScore
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.model.replays import REPLAYS
from device.node.classbook import ClassBook
from device.node.parts import NodeParts
from device.node.settings import Hardware, NodeSettings
from device.node.store import NodeState, NodeStore, StoreError
from device.node.store.replay import ReplayConfig
from device.private import write_private

__all__ = [
    "BUNDLE_FILES",
    "OPT_PREFIX",
    "EvalFile",
    "LiveState",
    "factory_classes",
    "model_id",
    "open_parts",
    "weights_snapshot",
]

BUNDLE_FILES = ("model.toml", "frozen.onnx", "adaptive.safetensors")
OPT_PREFIX = "opt."  # optimizer velocity buffers live next to the weights

log = logging.getLogger(__name__)


def model_id(bundle: ModelBundle) -> str:
    """Content hash of a bundle: a state file belongs to exactly one model.

    Hashes :data:`BUNDLE_FILES`, then the factory replays when the bundle has them (a bundle
    without them keeps the id it always had). Hashed once per process for each version of the
    files (a fleet's nodes share the bundle).
    """
    root = bundle.path.resolve()
    files = BUNDLE_FILES + ((REPLAYS,) if bundle.factory_replays is not None else ())
    stamps = tuple((root / name).stat().st_mtime_ns for name in files)
    return _content_id(bundle.name, str(root), files, stamps)


@functools.lru_cache(maxsize=16)
def _content_id(
    name: str, root: str, files: tuple[str, ...], stamps: tuple[int, ...]
) -> str:  # stamps: cache key
    digest = hashlib.sha256()
    for file in files:
        digest.update((Path(root) / file).read_bytes())
    return f"{name}-{digest.hexdigest()[:16]}"


def open_parts(
    settings: NodeSettings,
    bundle: ModelBundle,
    frozen: FrozenStage,
    desired: Callable[[NodeSettings, Mapping[str, Any]], NodeSettings] | None = None,
) -> NodeParts:
    """Open (creating if needed) the state file and replay memory of ``settings.device_id``.

    ``desired(settings, stored)``, if given, makes the settings the node runs from its launch
    ``settings`` and the desired settings in force in the file (an operator's, applied before
    the node stopped): the replay memory is opened with those.
    """
    power = settings.power.load()
    profile = power.as_built(_as_built(load_profile(settings.profile), settings.hardware))
    store = NodeStore.open(
        settings.state_dir,
        settings.device_id,
        model_id(bundle),
        config=settings.learning_config(),
    )
    try:
        in_force = store.desired()
        if desired is not None and in_force is not None:
            settings = desired(settings, in_force.settings)
        cost_config = CostConfig(
            lr_size=settings.replay.lr_size,
            lr_bits=settings.replay.bits,
            mb_size=settings.train.mb_size,
            new_per_mb=settings.train.new_per_mb,
            epochs=settings.train.epochs,
            events_per_hour=settings.events_per_hour,
        )
        memory = store.open_replay(
            ReplayConfig(
                lr_size=settings.replay.lr_size,
                bits=settings.replay.bits,
                shape=bundle.lr_shape,
                class_balanced=settings.replay.class_balanced,
            ),
            factory=bundle.factory_replays,
            rng=_factory_rng(settings),
        )
    except BaseException:
        store.close()
        raise
    if memory.created and bundle.factory_replays is None and memory.lr_size:
        _note_no_factory_replays(str(bundle.path))
    return NodeParts(
        settings, bundle, frozen, profile, bundle.layers(), cost_config, store, memory, power
    )


def _as_built(profile: Profile, hardware: Hardware) -> Profile:
    """``profile`` with this device's battery capacity and compute clock."""
    changes: dict[str, Any] = {}
    if hardware.battery_j is not None:
        changes["capacity_mah"] = hardware.battery_j / (3.6 * profile.voltage_v)
    if hardware.speed_factor != 1.0:
        changes["freq_hz"] = profile.freq_hz * hardware.speed_factor
    return replace(profile, **changes) if changes else profile


def _factory_rng(settings: NodeSettings) -> np.random.Generator:
    """The draws that fit the factory replays to a node's memory: per (seed, device)."""
    key = zlib.crc32(settings.device_id.encode())
    return np.random.default_rng([settings.seed, key, 0xFAC7])


@functools.lru_cache(maxsize=16)
def _note_no_factory_replays(bundle_path: str) -> None:
    """Say once per bundle and process that its new nodes start with an empty memory."""
    log.warning(
        "model bundle %s carries no factory replays (%s): new nodes start with an empty replay "
        "memory, so their first events may forget the factory classes",
        bundle_path,
        REPLAYS,
    )


def factory_classes(bundle: ModelBundle) -> frozenset[int]:
    """The classes the bundle's factory model was trained on: its ``factory_classes``, else the
    labels of its factory replays, else none known."""
    named = bundle.meta.get("factory_classes")
    if isinstance(named, list) and all(isinstance(c, int) for c in named):
        return frozenset(named)
    replays = bundle.factory_replays
    if replays is not None and len(replays):
        return frozenset(int(c) for c in np.unique(replays.labels))
    return frozenset()


def weights_snapshot(head: Sequential, optimizer: SGD) -> dict[str, np.ndarray]:
    """What an event commits of the adaptive stage: a copy of its parameters and the
    optimizer's velocity buffers (named with :data:`OPT_PREFIX`)."""
    params = {k: v.copy() for k, v in head.params().items()}
    velocity = {OPT_PREFIX + k: v for k, v in optimizer.state().items()}
    return params | velocity


class LiveState:
    """The node in memory: its last committed :class:`NodeState` and what is built from it.

    A job changes ``head``, ``optimizer``, ``battery`` and ``lifetime`` while it works and calls
    :meth:`committed` once its transaction is committed; a job that fails before that calls
    :meth:`reload`, which forgets the partial work. ``prequential`` keeps its remembered
    predictions across a reload (only its counts are committed); ``synced_s`` is the monotonic
    time of the last commit that flushed the log to disk. ``classes``: what the node remembers of
    each class (:mod:`device.node.classbook`), a value replaced by each commit that changes it.
    """

    head: Sequential
    optimizer: SGD
    state: NodeState
    battery: Battery
    lifetime: LifetimeEstimator
    classes: ClassBook

    def __init__(self, parts: NodeParts) -> None:
        self._parts = parts
        self.prequential = PrequentialScore()
        self.synced_s = time.monotonic()
        self.reload()

    def reload(self) -> None:
        """(Re)build the model, optimizer, battery and lifetime from the last commit."""
        parts = self._parts
        self.head = parts.bundle.build_head()
        self.optimizer = SGD(parts.settings.sgd)
        stored = parts.store.load_weights()
        if stored is not None:
            velocity = {
                k[len(OPT_PREFIX) :]: v for k, v in stored.items() if k.startswith(OPT_PREFIX)
            }
            self.head.load_params({k: v for k, v in stored.items() if not k.startswith(OPT_PREFIX)})
            self.optimizer.load_state(velocity)
        self.state = state = parts.store.state()
        if state.battery is not None:
            self.battery = state.battery.restore()
        else:  # nothing spent yet: the battery as the device was delivered
            full = Battery.from_profile(parts.profile)
            soc = parts.settings.hardware.initial_soc
            self.battery = replace(full, remaining_j=full.capacity_j * soc) if soc < 1 else full
        self.lifetime = (
            state.lifetime.restore() if state.lifetime is not None else _nominal_lifetime(parts)
        )
        self.prequential.right = state.inference.preq_right
        self.prequential.n = state.inference.preq_n
        # the factory classes, seen at event 0, as they stand until a commit writes them
        start = ClassBook.new(factory_classes(parts.bundle))
        kept = {row.label: row for row in parts.store.class_rows()}
        self.classes = ClassBook({**start.rows, **kept})

    def use(self, parts: NodeParts) -> None:
        """The node's parts after a desired state changed its settings (read at each reload)."""
        self._parts = parts

    def committed(
        self, state: NodeState, *, synced: bool, classes: ClassBook | None = None
    ) -> None:
        """``state`` (and ``classes``, if given) is what the file holds now; ``synced``: that
        commit flushed the log."""
        if synced:
            self.synced_s = time.monotonic()
        self.state = state
        if classes is not None:
            self.classes = classes


def _nominal_lifetime(parts: NodeParts) -> LifetimeEstimator:
    """The estimator before anything was observed: the nominal rate, each event at the cost of
    one with a full memory."""
    config = parts.cost_config
    nominal = event_cost(
        parts.layers,
        parts.profile,
        config,
        n_new=config.new_per_event,
        n_replay=config.lr_size,
    )
    return LifetimeEstimator(
        nominal_events_per_hour=parts.settings.events_per_hour,
        nominal_energy_j=nominal.energy_j["total"],
        nominal_latency_s=nominal.latency_s["total"],
    )


@dataclass(frozen=True, slots=True)
class EvalFile:
    """The held-out set kept next to the state file (the wire bytes), so that a restarted node
    measures accuracy from its first event on, before the broker resends the retained eval."""

    path: Path

    @classmethod
    def beside(cls, store: NodeStore) -> EvalFile:
        return cls(store.path.with_suffix(".eval.safetensors"))

    def save(self, payload: bytes) -> None:
        """Write ``payload`` (private to the user); :class:`StoreError` if the disk refuses."""
        try:
            write_private(self.path, payload)
        except OSError as exc:
            raise StoreError(f"cannot save the eval set to {self.path}: {exc}") from exc

    def load(self, bundle: ModelBundle) -> EvalSet | None:
        """The saved set, checked against ``bundle``; None if there is none (or it is damaged:
        only a damaged disk gets there, and the broker resends the retained one)."""
        if not self.path.is_file():
            return None
        try:
            return decode_eval(
                self.path.read_bytes(),
                sample_shape=bundle.input_shape,
                dtype=bundle.input_dtype,
                num_classes=bundle.num_classes,
            )
        except ProtocolError:
            return None
