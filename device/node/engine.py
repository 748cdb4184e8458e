"""The learning engine of one node: blocking, numeric, transactional -- no MQTT, no asyncio.

:class:`NodeEngine` turns a validated batch into one committed learning event: frozen stage ->
AR1* training with dequantized replays -> LR memory update -> battery charge -> evaluation ->
ONE SQLite transaction (weights, optimizer state, LR memory, battery, last ``seq``, event log)
-> the telemetry dict. It is used from one worker thread at a time (the node serialises events).
If anything fails before the commit, the in-memory state is reloaded from the last commit, so
memory and disk never disagree.

:meth:`NodeEngine.infer` answers an inference request: frozen stage -> the head's forward pass ->
battery charge, committed (without fsync) before the prediction is returned; it changes nothing
else. A request among the last charged ones is answered again and not charged (docs/protocol.md,
"Inference"). A batch with sample ``ids`` first scores the predictions made for them
(prequential accuracy), committed with its event.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dataset_stream.protocol import (
    Batch,
    BatteryState,
    ErrorMessage,
    EvalSet,
    InferRequest,
    Prediction,
    ProtocolError,
    ReplayStats,
    Status,
    Telemetry,
    decode_eval,
)
from device.energy import (
    Battery,
    CostConfig,
    LifetimeEstimator,
    event_cost,
    inference_cost,
    load_profile,
)
from device.learning.inference import SEQ_WINDOW, SYNC_EVERY_S, InferenceCounters, classify
from device.learning.learner import Evaluation, evaluate, train_event
from device.learning.nn import SGD
from device.learning.prequential import PrequentialScore
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.evalcache import shared_eval_latents
from device.node.settings import NodeSettings
from device.node.store import EventRecord, NodeState, NodeStore, StoreError
from device.node.store.replay import ReplayConfig, ReplayMemory
from device.private import write_private

OPT_PREFIX = "opt."  # optimizer velocity buffers live next to the weights


BUNDLE_FILES = ("model.toml", "frozen.onnx", "adaptive.safetensors")


def model_id(bundle: ModelBundle) -> str:
    """Content hash of a bundle: a state file belongs to exactly one model.

    Hashed once per process for each version of the files (a fleet's nodes share the bundle).
    """
    root = bundle.path.resolve()
    stamps = tuple((root / name).stat().st_mtime_ns for name in BUNDLE_FILES)
    return _content_id(bundle.name, str(root), stamps)


@functools.lru_cache(maxsize=16)
def _content_id(name: str, root: str, stamps: tuple[int, ...]) -> str:  # stamps: cache key
    digest = hashlib.sha256()
    for file in BUNDLE_FILES:
        digest.update((Path(root) / file).read_bytes())
    return f"{name}-{digest.hexdigest()[:16]}"


@dataclass(frozen=True, slots=True)
class InferenceCharge:
    """What classifying some samples costs: ``latency_s`` and ``energy_j`` by stage."""

    latency_s: Mapping[str, float]
    energy_j: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What one batch did: the telemetry to publish and whether it changed the node."""

    telemetry: Telemetry
    learned: bool


class NodeEngine:
    """One node's model, LR memory, battery and state file."""

    def __init__(self, settings: NodeSettings, bundle: ModelBundle, frozen: FrozenStage) -> None:
        self.settings = settings
        self.bundle = bundle
        self.frozen = frozen
        self.profile = load_profile(settings.profile)
        self.layers = bundle.layers()
        self.cost_config = CostConfig(
            lr_size=settings.replay.size,
            lr_bits=settings.replay.bits,
            mb_size=settings.train.mb_size,
            new_per_mb=settings.train.new_per_mb,
            epochs=settings.train.epochs,
            events_per_hour=settings.events_per_hour,
        )
        self.store = NodeStore.open(
            settings.state_dir,
            settings.device_id,
            model_id(bundle),
            config=settings.learning_config(),
        )
        self.prequential = PrequentialScore()
        self._answers: OrderedDict[int, Prediction] = OrderedDict()  # the last SEQ_WINDOW
        self._inference_costs: dict[int, InferenceCharge] = {}
        self._synced = time.monotonic()  # when the last commit flushed the log to disk
        try:
            self.memory: ReplayMemory = self.store.open_replay(
                ReplayConfig(
                    capacity=settings.replay.size,
                    bits=settings.replay.bits,
                    shape=bundle.lr_shape,
                    class_balanced=settings.replay.class_balanced,
                )
            )
            self._load()
        except BaseException:
            self.store.close()
            raise
        self._eval: tuple[np.ndarray, np.ndarray] | None = None
        self._load_eval()

    # -- state -------------------------------------------------------------------------------

    def _load(self) -> None:
        """(Re)build the in-memory model, optimizer, battery and lifetime from the last commit."""
        self.head = self.bundle.build_head()
        self.optimizer = SGD(self.settings.sgd)
        stored = self.store.load_weights()
        if stored is not None:
            velocity = {
                k[len(OPT_PREFIX) :]: v for k, v in stored.items() if k.startswith(OPT_PREFIX)
            }
            self.head.load_params({k: v for k, v in stored.items() if not k.startswith(OPT_PREFIX)})
            self.optimizer.load_state(velocity)
        self.state = self.store.state()
        self.battery = (
            Battery.from_dict(self.state.battery)
            if self.state.battery
            else Battery.from_profile(self.profile)
        )
        energy = dict(self.state.energy)
        if "lifetime" in energy:
            self.lifetime = LifetimeEstimator.from_dict(energy["lifetime"])
        else:
            nominal = event_cost(
                self.layers,
                self.profile,
                self.cost_config,
                n_new=self.cost_config.new_per_event,
                n_replay=self.cost_config.lr_size,
            )
            self.lifetime = LifetimeEstimator(
                nominal_events_per_hour=self.settings.events_per_hour,
                nominal_energy_j=nominal.energy_j["total"],
                nominal_latency_s=nominal.latency_s["total"],
            )
        self.totals: dict[str, float] = dict(energy.get("totals", {}))
        self.last_latency_s = float(energy.get("last_latency_s", 0.0))
        self.inference = InferenceCounters.from_dict(self.state.inference)
        self.prequential.right = self.inference.preq_right
        self.prequential.n = self.inference.preq_n

    @property
    def last_seq(self) -> int | None:
        return self.state.last_seq

    def has_event(self, seq: int) -> bool:
        """Whether ``seq`` was handled (learned, depleted or failed), as opposed to skipped."""
        return self.store.has_event(seq)

    @property
    def depleted(self) -> bool:
        return self.battery.depleted

    def close(self) -> None:
        self.store.close()

    # -- inputs ------------------------------------------------------------------------------

    def set_eval(self, eval_set: EvalSet, payload: bytes | None = None) -> None:
        """Keep the latents of the held-out set (the emulator's own measurement, not charged).

        With ``payload`` (the wire bytes), the set is also kept next to the state file, so that
        a restarted node measures accuracy from its first event on, before the broker resends
        the retained eval message.
        """
        self._eval = shared_eval_latents(self.frozen, eval_set)
        if payload is not None:
            try:
                write_private(self.eval_path, payload)
            except OSError as exc:  # kept in memory all the same; the broker keeps it retained
                raise StoreError(f"cannot save the eval set to {self.eval_path}: {exc}") from exc

    @property
    def eval_path(self) -> Path:
        return self.store.path.with_suffix(".eval.safetensors")

    def _load_eval(self) -> None:
        if not self.eval_path.is_file():
            return
        try:
            eval_set = decode_eval(
                self.eval_path.read_bytes(),
                sample_shape=self.bundle.input_shape,
                dtype=self.bundle.input_dtype,
                num_classes=self.bundle.num_classes,
            )
        except ProtocolError:  # we wrote it: only a damaged disk gets here; the broker resends
            return
        self.set_eval(eval_set)

    def evaluate(self) -> Evaluation | None:
        return None if self._eval is None else evaluate(self.head, *self._eval)

    def apply(self, batch: Batch) -> EventOutcome:
        """Learn from one validated batch (its ``seq`` is new) and commit it."""
        started = time.perf_counter()
        try:
            return self._apply(batch, started)
        except BaseException:
            self._load()  # the transaction rolled back (or never began): forget partial work
            raise

    def _apply(self, batch: Batch, started: float) -> EventOutcome:
        n_new = len(batch.y)
        n_replay = self.memory.size
        prev_t = self.state.sim_time
        # test, then train: score the predictions made for these samples before learning them
        tally = self.prequential.tally(batch.ids, batch.y)
        # a producer whose clock went backwards: the batch is learned as if captured now
        t = batch.t if prev_t is None else max(batch.t, prev_t)
        busy_s = self.last_latency_s + self.inference.since_latency_s
        idle_s = 0.0 if prev_t is None else max(0.0, t - prev_t - busy_s)
        cost = event_cost(
            self.layers,
            self.profile,
            self.cost_config,
            n_new=n_new,
            n_replay=n_replay,
            n_written=self.memory.writes_for(n_new),
        )
        energy = {**cost.energy_j, "idle": self.profile.sleep_w * idle_s}
        energy["total"] = energy["total"] + energy["idle"]
        learned = not self.battery.depleted and self.battery.remaining_j >= energy["total"]
        if learned:
            rng = self._rng(batch.seq)
            latents = self.frozen.run(batch.x)
            train_event(
                self.head,
                self.optimizer,
                latents,
                batch.y,
                replay=self.memory.sample,
                n_replay=n_replay,
                config=self.settings.train,
                rng=rng,
                replay_into=self.memory.sample_into,
            )
            self.battery.charge(energy["total"])
            # active energy only: the estimator adds sleep power between events itself
            self.lifetime.observe(t, cost.energy_j["total"], cost.latency_s["total"])
            latency = cost.latency_s
        else:  # not enough energy left: the node browns out and stops learning for good;
            # what was left is spent on the failed attempt and reported as such
            drained = self.battery.charge(self.battery.remaining_j)
            energy = dict.fromkeys(energy, 0.0) | {"idle": drained, "total": drained}
            latency = dict.fromkeys(cost.latency_s, 0.0)
            latents = None
        evaluation = self.evaluate()
        host_s = time.perf_counter() - started
        for key, value in energy.items():
            self.totals[key] = self.totals.get(key, 0.0) + value
        new_state = NodeState(
            last_seq=batch.seq,
            events_applied=self.state.events_applied + int(learned),
            sim_time=t,
            battery=self.battery.to_dict(),
            energy={
                "lifetime": self.lifetime.to_dict(),
                "totals": self.totals,
                "last_latency_s": latency["total"],
            },
            gaps=self.state.gaps,
            inference=self.inference.reported(tally.right, tally.n).to_dict(),
        )
        with self.store.event_transaction() as tx:
            if learned:
                assert latents is not None
                self.memory.update(latents, batch.y, self._rng(batch.seq, stream=1))
                params = {k: v.copy() for k, v in self.head.params().items()}
                velocity = {OPT_PREFIX + k: v for k, v in self.optimizer.state().items()}
                tx.save_weights(params | velocity)
            tx.set_state(new_state)
            tx.log_event(
                EventRecord(
                    seq=batch.seq,
                    t=batch.t,
                    samples=n_new if learned else 0,
                    accuracy=None if evaluation is None else evaluation.accuracy,
                    energy=energy,
                    host_s=host_s,
                    outcome="learned" if learned else "depleted",
                )
            )
        self._synced = time.monotonic()
        self.state = new_state
        self.last_latency_s = latency["total"]
        since = self.inference
        self.inference = InferenceCounters.from_dict(new_state.inference)
        self.prequential.apply(tally)
        telemetry = self._telemetry(
            batch, learned, n_new, evaluation, latency, energy, host_s, since
        )
        return EventOutcome(telemetry=telemetry, learned=learned)

    # -- inference ---------------------------------------------------------------------------

    def inference_charge(self, n_samples: int) -> InferenceCharge:
        """The modelled latency and energy of classifying ``n_samples`` on this node's profile
        (:func:`device.energy.inference_cost`), kept per sample count."""
        charge = self._inference_costs.get(n_samples)
        if charge is None:
            cost = inference_cost(self.layers, self.profile, n_samples)
            charge = InferenceCharge(cost.latency_s, cost.energy_j)
            if len(self._inference_costs) < 64:
                self._inference_costs[n_samples] = charge
        return charge

    def infer(self, request: InferRequest) -> Prediction | ErrorMessage:
        """Classify ``request``'s samples, charge the battery, commit; nothing else changes.

        A request among the last :data:`SEQ_WINDOW` charged is answered again, ``repeated`` and
        not charged. A battery that cannot pay gets an ``error`` ``depleted`` (what was left is
        spent on the attempt). Store failures raise :class:`StoreError` with nothing charged.
        """
        charged = self.store.inference_samples(request.seq)
        if charged is not None:
            return self._repeat(request, charged)
        n = len(request.x)
        cost = self.inference_charge(n)
        energy_j, latency_s = cost.energy_j["total"], cost.latency_s["total"]
        if self.battery.remaining_j < energy_j or self.battery.depleted:
            return self._brown_out(request, energy_j)
        classes, confidence = classify(self.head, self.frozen.run(request.x))
        counters = self.inference.charged(energy_j, latency_s)
        try:
            self.battery.charge(energy_j)
            # a producer clock going backwards is taken as "now", as for batches
            t = (
                max(request.t, self.lifetime.inference_last_t)
                if self.lifetime.inferences
                else request.t
            )
            self.lifetime.observe_inference(t, energy_j, latency_s)
            durable = time.monotonic() - self._synced >= SYNC_EVERY_S
            new_state = replace(
                self.state,
                battery=self.battery.to_dict(),
                energy={**self.state.energy, "lifetime": self.lifetime.to_dict()},
                inference=counters.to_dict(),
            )
            with self.store.event_transaction(durable=durable) as tx:
                tx.set_state(new_state)
                tx.log_inference(request.seq, counters.count, n, window=SEQ_WINDOW)
        except BaseException:
            self._load()  # rolled back: the battery and lifetime as committed
            raise
        if durable:
            self._synced = time.monotonic()
        self.state = new_state
        self.inference = counters
        if request.ids is not None:
            self.prequential.predicted(request.ids, classes)
        prediction = self._prediction(request, classes, confidence, cost)
        self._answers[request.seq] = prediction
        while len(self._answers) > SEQ_WINDOW:
            self._answers.popitem(last=False)
        return prediction

    def _repeat(self, request: InferRequest, samples: int) -> Prediction:
        """The answer to a request charged before: the first answer when it is still at hand,
        else the samples classified again with the current head; never charged."""
        first = self._answers.get(request.seq)
        if first is not None:
            return replace(first, repeated=True, battery=self._battery_state())
        classes, confidence = classify(self.head, self.frozen.run(request.x))
        cost = self.inference_charge(samples)
        return self._prediction(request, classes, confidence, cost, repeated=True)

    def _prediction(
        self,
        request: InferRequest,
        classes: np.ndarray,
        confidence: np.ndarray,
        cost: InferenceCharge,
        *,
        repeated: bool = False,
    ) -> Prediction:
        return Prediction(
            device=self.settings.device_id,
            seq=request.seq,
            t=request.t,
            classes=tuple(classes.tolist()),
            confidence=tuple(confidence.tolist()),
            latency_s=cost.latency_s,
            energy_j=cost.energy_j,
            ids=None if request.ids is None else tuple(request.ids.tolist()),
            battery=self._battery_state(),
            repeated=repeated,
        )

    def _brown_out(self, request: InferRequest, energy_j: float) -> ErrorMessage:
        """Too little energy for the inference: spend what is left on the attempt, commit."""
        left = self.battery.remaining_j
        if left > 0:
            try:
                self.battery.charge(left)
                self.totals["idle"] = self.totals.get("idle", 0.0) + left
                new_state = replace(
                    self.state,
                    battery=self.battery.to_dict(),
                    energy={**self.state.energy, "totals": self.totals},
                )
                with self.store.event_transaction() as tx:
                    tx.set_state(new_state)
            except BaseException:
                self._load()
                raise
            self._synced = time.monotonic()
            self.state = new_state
        text = f"the battery holds {left:.6g} J, the inference needs {energy_j:.6g} J"
        return ErrorMessage(self.settings.device_id, "depleted", text, infer_seq=request.seq)

    def skip(self, seq: int, t: float) -> None:
        """Commit that ``seq`` was handled but not learned (the node failed on it): the event log
        says ``failed``, ``last_seq`` moves on, nothing else changes."""
        self._load()  # whatever the failed attempt left in memory is gone
        new_state = replace(self.state, last_seq=seq)
        with self.store.event_transaction() as tx:
            tx.set_state(new_state)
            tx.log_event(
                EventRecord(
                    seq=seq,
                    t=t,
                    samples=0,
                    accuracy=None,
                    energy={},
                    host_s=0.0,
                    outcome="failed",
                )
            )
        self.state = new_state

    def record_gap(self, first: int, last: int) -> None:
        """Commit that seqs ``first..last`` never arrived and are skipped for good."""
        if not (self.state.last_seq is None or first == self.state.last_seq + 1) or last < first:
            raise ValueError(f"gap {first}..{last} does not follow seq {self.state.last_seq}")
        new_state = replace(self.state, last_seq=last, gaps=self.state.gaps + last - first + 1)
        with self.store.event_transaction() as tx:
            tx.set_state(new_state)
        self.state = new_state

    # -- reports -----------------------------------------------------------------------------

    def _telemetry(
        self,
        batch: Batch,
        learned: bool,
        n_new: int,
        evaluation: Evaluation | None,
        latency: dict[str, float],
        energy: dict[str, float],
        host_s: float,
        since: InferenceCounters,
    ) -> Telemetry:
        """``since``: the inference counters before this event (what it reports)."""
        return Telemetry(
            device=self.settings.device_id,
            seq=batch.seq,
            t=batch.t,
            state="learning" if learned else "depleted",
            samples=n_new if learned else 0,
            accuracy=None if evaluation is None else evaluation.accuracy,
            latency_s=latency,
            energy_j=energy,
            battery=self._battery_state(),
            lifetime_h=self._lifetime_h(),
            replay=ReplayStats.from_dict(self.memory.stats()),
            host_s=host_s,
            events=self.state.events_applied,
            gaps=self.state.gaps,
            accuracy_by_class=None if evaluation is None else dict(evaluation.per_class),
            inferences=since.since_count,
            inference_energy_j=since.since_energy_j,
            prequential_accuracy=self.prequential.accuracy,
            prequential_n=self.prequential.n,
        )

    def _lifetime_h(self) -> float | None:
        hours = self.lifetime.lifetime_h(self.battery)
        return hours if math.isfinite(hours) else None  # JSON has no infinity

    def _battery_state(self) -> BatteryState:
        return BatteryState(soc=self.battery.soc, remaining_j=self.battery.remaining_j)

    def status(self, state: str, reason: str | None = None) -> Status:
        """The retained ``status`` message (``depleted`` wins over ``idle``/``learning``)."""
        if self.battery.depleted and state in ("idle", "learning"):
            state = "depleted"
        return Status(
            state=state,
            device=self.settings.device_id,
            t=self.state.sim_time if self.state.sim_time is not None else time.time(),
            last_seq=self.state.last_seq,
            events=self.state.events_applied,
            gaps=self.state.gaps,
            battery=self._battery_state(),
            lifetime_h=self._lifetime_h(),
            replay=ReplayStats.from_dict(self.memory.stats()),
            model=self.store.meta.model_id,
            reason=reason,
        )

    def _rng(self, seq: int, stream: int = 0) -> np.random.Generator:
        """Reproducible randomness per (seed, device, seq): a restart replays the same draws."""
        key = zlib.crc32(self.settings.device_id.encode())
        return np.random.default_rng([self.settings.seed, key, seq, stream])


__all__ = ["EventOutcome", "InferenceCharge", "NodeEngine", "model_id"]
