"""An operator's desired state on a node: kept pending, applied at an event boundary, reported.

docs/protocol.md, "The downlink", is the contract; docs/node.md, "Desired state", what a node
does with each setting. The pieces:

- :func:`effective_settings`: the node's launch :class:`NodeSettings` with a desired state's
  settings over them (a setting the operator did not set is the launch one, so removing it
  reverts it); a combination the learner refuses (a mini-batch smaller than its new samples)
  is a :class:`DesiredRefused` naming the field;
- :func:`read_head`: a pushed head's safetensors bytes (the bundle's ``adaptive.safetensors``
  format, never pickle), checked against its SHA-256 and the model's adaptive stage;
- :class:`Downlink`: what one node's engine knows of it: the version in force (read from the
  state file at start), the one pending, the pushed heads received, the last refusal; and
  :meth:`Downlink.apply_pending`, which the engine runs before it learns the next batch (in its
  worker thread, under the node's lock: never in the middle of an event). Applying commits, in
  one transaction of its own, the replay memory re-quantized or resized in place, the head
  swapped (the node's own one kept, to be restored by ``head: "own"``), the battery charged for
  the bytes of a pushed head (:meth:`device.energy.NodePower.downlink_j`), and the desired state
  in force (version and settings), so a restart or a ``kill -9`` runs it still.

What it has to say (the reported state after each change, a ``bad_desired`` error for each
refusal) is queued as news, which the node publishes after the message or event at hand.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dataset_stream.protocol import DesiredRefused, ErrorMessage
from dataset_stream.protocol.desired import OWN_HEAD, DesiredState, Refusal, ReportedState
from device.energy import CostConfig
from device.model.bundle import ModelBundle
from device.node.parts import NodeParts
from device.node.persistence import LiveState, weights_snapshot
from device.node.settings import NodeSettings
from device.node.store import DesiredRecord, NodeState
from device.node.store.snapshots import BatterySnapshot

log = logging.getLogger(__name__)

__all__ = [
    "Downlink",
    "DownlinkNews",
    "PushedHead",
    "cost_config",
    "effective_settings",
    "read_head",
    "reported_settings",
]

#: What the node publishes after the message at hand: its reported state or a refusal.
DownlinkNews = ReportedState | ErrorMessage


def effective_settings(
    launch: NodeSettings, settings: Mapping[str, Any], *, version: int | None = None
) -> NodeSettings:
    """``launch`` with the desired ``settings`` over it (checked by ``check_settings``).

    Raises :class:`DesiredRefused` for a training plan the learner refuses: a ``mb_size``
    below the launch ``new_per_mb`` (the new samples of one mini-batch).
    """
    replay = replace(
        launch.replay,
        lr_size=int(settings.get("lr_size", launch.replay.lr_size)),
        bits=int(settings.get("lr_bits", launch.replay.bits)),
    )
    try:
        train = replace(
            launch.train,
            epochs=int(settings.get("epochs", launch.train.epochs)),
            mb_size=int(settings.get("mb_size", launch.train.mb_size)),
        )
    except ValueError as exc:
        field = "settings.mb_size" if "mb_size" in settings else "settings.epochs"
        raise DesiredRefused(version, field, f"the learner refuses it: {exc}") from None
    sgd = replace(
        launch.sgd, learning_rate=float(settings.get("learning_rate", launch.sgd.learning_rate))
    )
    return replace(launch, replay=replay, train=train, sgd=sgd)


def cost_config(settings: NodeSettings) -> CostConfig:
    """The energy model's view of ``settings`` (what one event costs)."""
    return CostConfig(
        lr_size=settings.replay.lr_size,
        lr_bits=settings.replay.bits,
        mb_size=settings.train.mb_size,
        new_per_mb=settings.train.new_per_mb,
        epochs=settings.train.epochs,
        events_per_hour=settings.events_per_hour,
    )


def reported_settings(effective: NodeSettings, desired: Mapping[str, Any]) -> dict[str, Any]:
    """Every downlink setting as the node runs it (``head_sha256`` only with a pushed head)."""
    out: dict[str, Any] = {
        "lr_bits": effective.replay.bits,
        "lr_size": effective.replay.lr_size,
        "learning_rate": effective.sgd.learning_rate,
        "epochs": effective.train.epochs,
        "mb_size": effective.train.mb_size,
        "learning": bool(desired.get("learning", True)),
        "inference": bool(desired.get("inference", True)),
        "head": str(desired.get("head", OWN_HEAD)),
    }
    if out["head"] != OWN_HEAD:
        out["head_sha256"] = str(desired["head_sha256"])
    return out


@dataclass(frozen=True, slots=True)
class PushedHead:
    """A pushed head that passed its checks: its name, digest, FP32 weights and wire size."""

    name: str
    sha256: str
    weights: Mapping[str, np.ndarray]
    size_bytes: int


def read_head(
    name: str, sha256: str, payload: bytes, bundle: ModelBundle, *, version: int | None = None
) -> PushedHead:
    """The head ``name`` published as ``payload``: its SHA-256 must be ``sha256``, its tensors
    FP32 safetensors with exactly the keys and shapes of ``bundle``'s adaptive stage, finite.
    Anything else is a :class:`DesiredRefused` naming the field."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        raise DesiredRefused(
            version,
            "settings.head_sha256",
            f"head {name!r} received ({len(payload)} bytes) has SHA-256 {digest}, not {sha256}",
        )
    try:
        weights = load(bytes(payload))
    except (SafetensorError, ValueError, OSError) as exc:
        raise DesiredRefused(
            version, "settings.head", f"{name!r} is not safetensors: {exc}"
        ) from None
    for key, array in weights.items():
        if array.dtype != np.float32:
            raise DesiredRefused(
                version, "settings.head", f"{name!r}: tensor {key!r} is {array.dtype}, not float32"
            )
    try:
        bundle.build_head().load_params(weights)
    except ValueError as exc:
        raise DesiredRefused(
            version, "settings.head", f"{name!r} does not fit the model: {exc}"
        ) from None
    return PushedHead(name, sha256, weights, len(payload))


class Downlink:
    """One node's desired state: in force, pending, refused; see the module docstring.

    Used from the engine's worker thread, one call at a time (the node's lock).
    """

    def __init__(self, launch: NodeSettings, parts: NodeParts, live: LiveState) -> None:
        self.launch = launch
        self._parts = parts
        self._live = live
        self.record: DesiredRecord | None = parts.store.desired()
        self.pending: DesiredState | None = None
        self.refused: Refusal | None = None
        self._heads: dict[str, PushedHead] = {}
        self._news: list[DownlinkNews] = []

    def use(self, parts: NodeParts) -> None:
        """The node's parts after a change (its settings)."""
        self._parts = parts

    # -- what is in force -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The desired version in force; 0 when none was ever applied."""
        return 0 if self.record is None else self.record.version

    @property
    def settings(self) -> Mapping[str, Any]:
        """The settings the operator set, as in force (only those)."""
        return {} if self.record is None else self.record.settings

    @property
    def learning(self) -> bool:
        return bool(self.settings.get("learning", True))

    @property
    def inference(self) -> bool:
        return bool(self.settings.get("inference", True))

    def wanted_head(self) -> tuple[str, str] | None:
        """The pushed head (name, SHA-256) the pending state waits for and has not received."""
        pending = self.pending
        if pending is None:
            return None
        name = pending.settings.get("head", OWN_HEAD)
        if name == OWN_HEAD:
            return None
        sha256 = str(pending.settings["head_sha256"])
        if self.settings.get("head") == name and self.settings.get("head_sha256") == sha256:
            return None  # the head in force already
        head = self._heads.get(name)
        if head is not None and head.sha256 == sha256:
            return None
        return name, sha256

    def reported(self) -> ReportedState:
        """The reported state: the version in force and every setting as the node runs it."""
        record = self.record
        return ReportedState(
            device=self._parts.device_id,
            version=self.version,
            settings=reported_settings(self._parts.settings, self.settings),
            seq=0 if record is None or record.seq is None else record.seq,
            t=0.0 if record is None or record.t is None else record.t,
            ts=time.time(),
            refused=self.refused,
        )

    def take_news(self) -> list[DownlinkNews]:
        """What to publish since the last call (reported states, ``bad_desired`` errors)."""
        news, self._news = self._news, []
        return news

    # -- what arrives ---------------------------------------------------------------------------

    def offer(self, state: DesiredState) -> None:
        """A valid desired state: kept pending when newer than the version in force (a retained
        one seen again is not), unless it cannot apply (then refused at once)."""
        if state.version <= self.version:
            return
        if self.pending is not None and state.version <= self.pending.version:
            return
        if self.refused is not None and self.refused.version == state.version:
            return
        try:
            effective_settings(self.launch, state.settings, version=state.version)
        except DesiredRefused as exc:
            self.refuse(exc)
            return
        self.pending = state

    def refuse(self, exc: DesiredRefused) -> None:
        """A desired state the node cannot apply: nothing changes; it is answered and named in
        the reported state until a later version applies."""
        if self.pending is not None and self.pending.version == exc.version:
            self.pending = None
        self.refused = Refusal(exc.version, exc.field, exc.reason)
        text = f"{exc.field}: {exc.reason}; nothing changed"
        self._news.append(
            ErrorMessage(
                self._parts.device_id, "bad_desired", text[:1024], desired_version=exc.version
            )
        )
        self._news.append(self.reported())

    def head_arrived(self, name: str, payload: bytes) -> None:
        """The bytes of pushed head ``name``: kept if the pending state waits for them (checked:
        a head that fails its checks refuses that state); ignored otherwise."""
        wanted = self.wanted_head()
        if wanted is None or wanted[0] != name:
            return
        version = None if self.pending is None else self.pending.version
        try:
            head = read_head(name, wanted[1], payload, self._parts.bundle, version=version)
        except DesiredRefused as exc:
            self.refuse(exc)
            return
        self._heads = {name: head}  # one kept at a time: heads are large

    # -- the event boundary ---------------------------------------------------------------------

    def apply_pending(self) -> NodeParts | None:
        """Apply the pending desired state, if it can be now; the node's new parts, or None
        when nothing changed. A pushed head not received yet leaves it pending; one that
        cannot apply is refused. Raises :class:`~device.node.store.StoreError` when the
        commit fails (nothing changed; it stays pending)."""
        state = self.pending
        if state is None or self.wanted_head() is not None:
            return None
        parts, live = self._parts, self._live
        try:
            effective = effective_settings(self.launch, state.settings, version=state.version)
        except DesiredRefused as exc:
            self.refuse(exc)
            return None
        old_head = self.settings.get("head", OWN_HEAD)
        new_head = state.settings.get("head", OWN_HEAD)
        pushed = self._heads.get(new_head) if new_head != OWN_HEAD else None
        changes_head = new_head != old_head or (
            pushed is not None and pushed.sha256 != self.settings.get("head_sha256")
        )
        own = parts.store.own_head() if changes_head and new_head == OWN_HEAD else None
        record = DesiredRecord(
            state.version, dict(state.settings), live.state.last_seq, live.state.sim_time
        )
        memory = parts.memory
        try:
            with parts.store.event_transaction() as tx:
                replay = effective.replay
                if (replay.lr_size, replay.bits) != (memory.lr_size, memory.bits):
                    memory.reconfigure(replay.lr_size, replay.bits, self._rng(state.version))
                if changes_head:
                    if old_head == OWN_HEAD:  # leaving its own head: keep it to come back to
                        tx.save_own_head(weights_snapshot(live.head, live.optimizer))
                    if pushed is not None:  # a pushed head starts with no optimizer state
                        tx.save_weights(dict(pushed.weights))
                        live.battery.draw(parts.power.downlink_j(pushed.size_bytes))
                        tx.set_state(self._charged(pushed.size_bytes))
                    else:
                        if own is not None:
                            tx.save_weights(own)
                        tx.drop_own_head()
                tx.set_desired(record)
        except BaseException:
            live.reload()  # rolled back: the battery as committed
            raise
        self.pending = None
        self.record = record
        self.refused = None
        self._heads.pop(new_head, None)
        new_parts = replace(parts, settings=effective, cost_config=cost_config(effective))
        self._parts = new_parts
        live.use(new_parts)
        live.reload()  # as committed: the head, its optimizer (new learning rate), the battery
        log.info(
            "%s: desired version %d applied: %s",
            parts.device_id,
            state.version,
            dict(state.settings) or "launch settings",
        )
        self._news.append(self.reported())
        return new_parts

    def _charged(self, size_bytes: int) -> NodeState:
        """The node's state with the downlink of ``size_bytes`` charged (battery drawn by the
        caller), counted in the energy totals' ``total``."""
        live = self._live
        return replace(
            live.state,
            battery=BatterySnapshot.of(live.battery),
            energy_totals=live.state.energy_totals.plus(
                {"total": self._parts.power.downlink_j(size_bytes)}
            ),
        )

    def _rng(self, version: int) -> np.random.Generator:
        """Reproducible draws of a resize: per (seed, device, desired version)."""
        settings = self._parts.settings
        key = zlib.crc32(settings.device_id.encode())
        return np.random.default_rng([settings.seed, key, version, 0xDE5])
