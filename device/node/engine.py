"""A node's engine: blocking, numeric, transactional -- no MQTT, no asyncio.

:class:`NodeEngine` is what the MQTT node (:mod:`device.node.node`) drives, from one worker
thread at a time (the node serialises its events). It composes the node's jobs, each in its
own module over the same parts and live state:

- :mod:`device.node.learning`: a batch becomes one committed learning event, a skip or a gap,
  and the factory model is measured before the first event;
- :mod:`device.node.inference`: an infer request is answered and its charge committed;
- :mod:`device.node.reporting`: telemetry and status messages;
- :mod:`device.node.persistence`: the state file, the state reloaded from its last commit,
  the eval set kept beside it, and the model id that ties them together;
- :mod:`device.node.desired`: an operator's desired state, applied before the next batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from dataset_stream.protocol import (
    Batch,
    DesiredRefused,
    ErrorMessage,
    EvalSet,
    InferRequest,
    Prediction,
    Status,
    Telemetry,
)
from dataset_stream.protocol.desired import DesiredState, ReportedState
from device.energy import Battery, CostConfig, LifetimeEstimator, Profile
from device.energy.policy import RESTART_SOC
from device.learning.layers import LayerInfo
from device.learning.learner import Evaluation
from device.learning.nn import SGD, Sequential
from device.learning.prequential import PrequentialScore
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node import cputime, reporting
from device.node.classbook import ClassBook
from device.node.desired import Downlink, DownlinkNews, effective_settings
from device.node.inference import Inference, InferenceCharge
from device.node.learning import Learning
from device.node.parts import NodeParts
from device.node.persistence import EvalFile, LiveState, model_id, open_parts
from device.node.settings import NodeSettings
from device.node.store import NodeState, NodeStore, ReplayMemory, StoreError
from device.node.store.snapshots import BatterySnapshot

__all__ = ["EventOutcome", "InferenceCharge", "NodeEngine", "model_id", "radio_problem"]

log = logging.getLogger(__name__)


def radio_problem(parts: NodeParts) -> str | None:
    """What ``parts``' radio cannot carry at the node's nominal rate, in one sentence."""
    settings = parts.settings
    problems = parts.power.problems(settings.events_per_hour, settings.power.telemetry_bytes)
    if not problems:
        return None
    return "the radio cannot carry this traffic: " + "; ".join(p.message for p in problems)


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What one batch did: the telemetry to publish and whether it changed the node.

    ``refusal``: the answer to publish instead of the telemetry when the node's energy-aware
    policy did not learn the batch (an ``energy_policy`` error; the node stays on); ``reason``:
    why the node's status changed, when it did (the harvest brought a depleted node back);
    ``held``: the telemetry of the batches held for the sun that were learned, in seq order,
    before this one (``defer-to-sun``), each committed on its own: published before its answer;
    ``dropped``: the ``energy_policy`` errors of held batches dropped for good to hold this
    one."""

    telemetry: Telemetry
    learned: bool
    refusal: ErrorMessage | None = None
    reason: str | None = None
    held: tuple[Telemetry, ...] = ()
    dropped: tuple[ErrorMessage, ...] = ()


class NodeEngine:
    """One node's model, LR memory, battery and state file."""

    def __init__(self, settings: NodeSettings, bundle: ModelBundle, frozen: FrozenStage) -> None:
        # the settings it runs: its launch ones with the desired state in force over them
        self._parts = parts = open_parts(settings, bundle, frozen, effective_settings)
        try:
            self._live = LiveState(parts)
            self._learning = Learning(parts, self._live)
            self._inference = Inference(parts, self._live)
            self._downlink = Downlink(settings, parts, self._live)
            self._eval_file = EvalFile.beside(parts.store)
            #: the telemetry of held batches learned (``defer-to-sun``) and not yet handed out
            self._held_answers: list[Telemetry] = []
            eval_set = self._eval_file.load(bundle)
        except BaseException:
            parts.store.close()
            raise
        if eval_set is not None:
            self.set_eval(eval_set)
        #: What the node's radio cannot carry at its rate (None: all of it), said once here and
        #: as the reason of every status that has no other (never priced silently).
        self.radio_problem = radio_problem(parts)
        if self.radio_problem is not None:
            log.warning("%s: %s", settings.device_id, self.radio_problem)

    # -- what the node is made of --------------------------------------------------------------

    @property
    def settings(self) -> NodeSettings:
        return self._parts.settings

    @property
    def bundle(self) -> ModelBundle:
        return self._parts.bundle

    @property
    def frozen(self) -> FrozenStage:
        return self._parts.frozen

    @property
    def profile(self) -> Profile:
        return self._parts.profile

    @property
    def layers(self) -> list[LayerInfo]:
        return self._parts.layers

    @property
    def cost_config(self) -> CostConfig:
        return self._parts.cost_config

    @property
    def store(self) -> NodeStore:
        return self._parts.store

    @property
    def memory(self) -> ReplayMemory:
        return self._parts.memory

    # -- its state, as of the last commit ------------------------------------------------------

    @property
    def state(self) -> NodeState:
        return self._live.state

    @property
    def head(self) -> Sequential:
        return self._live.head

    @property
    def optimizer(self) -> SGD:
        return self._live.optimizer

    @property
    def battery(self) -> Battery:
        return self._live.battery

    @property
    def lifetime(self) -> LifetimeEstimator:
        return self._live.lifetime

    @property
    def prequential(self) -> PrequentialScore:
        return self._live.prequential

    @property
    def last_seq(self) -> int | None:
        return self._live.state.last_seq

    @property
    def depleted(self) -> bool:
        """Whether the node is off: an empty battery, or one a harvester is recharging after
        it was depleted, not yet back to the restart level."""
        return self._learning.off

    def has_event(self, seq: int) -> bool:
        """Whether ``seq`` was handled (learned, depleted or failed), as opposed to skipped."""
        return self._parts.store.has_event(seq)

    def close(self) -> None:
        self._parts.store.close()

    # -- inputs --------------------------------------------------------------------------------

    def set_eval(self, eval_set: EvalSet, payload: bytes | None = None) -> None:
        """Keep the latents of the held-out set (the emulator's own measurement, not charged).

        With ``payload`` (the wire bytes), the set is also kept next to the state file, so that
        a restarted node measures accuracy from its first event on, before the broker resends
        the retained eval message.
        """
        self._learning.set_eval(eval_set)
        if payload is not None:  # kept in memory all the same; the broker keeps it retained
            self._eval_file.save(payload)

    @property
    def eval_path(self) -> Path:
        return self._eval_file.path

    def evaluate(self) -> Evaluation | None:
        return self._learning.evaluate()

    def measure_factory(self) -> Evaluation | None:
        """Before the first learned event, the factory model's accuracy on the eval set (event 0),
        committed as the start of each class's record; None once an event was learned or
        without an eval set. Not charged, like every evaluation."""
        return self._learning.measure_factory()

    @property
    def classes(self) -> ClassBook:
        """What the node remembers of each class, as of the last commit."""
        return self._live.classes

    def apply(self, batch: Batch, wire_bytes: int | None = None) -> EventOutcome:
        """Learn from one validated batch (its ``seq`` is new) and commit it; a pending desired
        state is applied first (committed on its own), and with learning turned off the batch
        is committed without being learned. ``wire_bytes``: its payload's size, charged to the
        radio when batches arrive over it (``batches_over_radio``)."""
        with cputime.charged("event"):
            return self._apply(batch, wire_bytes)

    def _apply(self, batch: Batch, wire_bytes: int | None) -> EventOutcome:
        self._apply_desired()
        if self._downlink.learning:
            at_t, to_learn = self._learning.to_release(batch)
            for one in to_learn:  # each committed on its own: a crash between keeps the rest
                facts = self._learning.learn_held(one, at_t)
                # kept until an outcome carries it: the batch in hand may yet fail
                self._held_answers.append(reporting.telemetry(self._parts, self._live, facts))
            facts = self._learning.apply(batch, wire_bytes)
        else:
            facts = self._learning.pause(batch, wire_bytes)
        telemetry = reporting.telemetry(self._parts, self._live, facts)
        reason = None
        if facts.back_on:
            soc = self._live.battery.soc
            reason = f"back on: the harvest recharged the battery (state of charge {soc:.2f})"
        held, self._held_answers = tuple(self._held_answers), []
        return EventOutcome(
            telemetry=telemetry,
            learned=facts.learned or facts.paused or facts.refusal is not None,
            refusal=facts.refusal,
            reason=reason,
            held=held,
            dropped=facts.dropped,
        )

    # -- the downlink (docs/protocol.md, "The downlink") ---------------------------------------

    def offer_desired(self, state: DesiredState) -> None:
        """A valid desired state: pending until the next batch, if newer than the one in force."""
        self._downlink.offer(state)

    def refuse_desired(self, refused: DesiredRefused) -> None:
        """A desired state that cannot apply: answered, named in the reported state."""
        self._downlink.refuse(refused)

    def wanted_head(self) -> tuple[str, str] | None:
        """The pushed head (name, SHA-256) the pending desired state waits for, if any."""
        return self._downlink.wanted_head()

    def head_arrived(self, name: str, payload: bytes) -> None:
        """The bytes of pushed head ``name`` (kept if wanted, checked)."""
        self._downlink.head_arrived(name, payload)

    def reported(self) -> ReportedState:
        """The node's reported state (desired version in force, every setting's value)."""
        return self._downlink.reported()

    def downlink_news(self) -> list[DownlinkNews]:
        """Reported states and ``bad_desired`` errors to publish since the last call."""
        return self._downlink.take_news()

    @property
    def desired_version(self) -> int:
        """The desired version in force (0: none)."""
        return self._downlink.version

    @property
    def desired_pending(self) -> int | None:
        """The desired version waiting for the next batch (or its pushed head), if any."""
        pending = self._downlink.pending
        return None if pending is None else pending.version

    def _apply_desired(self) -> None:
        """Apply the pending desired state, if any, and run on the settings it makes. A store
        failure propagates (the batch is retried, the state stays pending); any other failure
        refuses that state, so it cannot make every later batch fail."""
        downlink = self._downlink
        try:
            parts = downlink.apply_pending()
        except StoreError:
            raise
        except Exception as exc:
            log.exception("%s: cannot apply the desired state", self.settings.device_id)
            version = None if downlink.pending is None else downlink.pending.version
            downlink.refuse(DesiredRefused(version, "(apply)", f"{type(exc).__name__}: {exc}"))
            return
        if parts is not None:
            self._parts = parts
            self._learning.use(parts)
            self._inference.use(parts)

    def skip(self, seq: int, t: float) -> None:
        """Commit that ``seq`` was handled but not learned (the node failed on it)."""
        self._learning.skip(seq, t)

    def record_gap(self, first: int, last: int) -> None:
        """Commit that seqs ``first..last`` never arrived and are skipped for good."""
        self._learning.record_gap(first, last)

    def inference_charge(self, n_samples: int) -> InferenceCharge:
        """The modelled latency and energy of classifying ``n_samples`` on this node's profile."""
        return self._inference.charge(n_samples)

    def infer(self, request: InferRequest) -> Prediction | ErrorMessage:
        """Classify ``request``'s samples, charge the battery, commit (see
        :meth:`device.node.inference.Inference.infer`); refused ``inference_off`` (nothing
        charged) while the desired state in force turns inference off."""
        if not self._downlink.inference:
            text = f"inference is off (desired version {self._downlink.version})"
            return ErrorMessage(
                self.settings.device_id, "inference_off", text, infer_seq=request.seq
            )
        if self._learning.off and not self._live.battery.depleted:  # off, recharging
            soc = self._live.battery.soc
            text = (
                f"the node is off: its battery ran empty and the harvest has brought it back to "
                f"{soc:.3f} of the {RESTART_SOC:.2f} it restarts at"
            )
            return ErrorMessage(self.settings.device_id, "depleted", text, infer_seq=request.seq)
        return self._inference.infer(request)

    # -- injected faults (docs/faults.md) -----------------------------------------------------

    def cut_power_in_next_event(self) -> None:
        """An injected brown-out: the next learning event raises
        :class:`~device.node.errors.PowerLost` before its commit, which rolls it back."""
        self._learning.power_cut = True

    def set_battery(self, capacity_j: float, remaining_j: float) -> None:
        """An injected battery fault: the battery holds ``remaining_j`` of ``capacity_j`` from
        now on, committed at once (its drawn and sleep figures are kept)."""
        live = self._live
        battery = live.battery
        battery.capacity_j, battery.remaining_j = capacity_j, min(remaining_j, capacity_j)
        new_state = replace(live.state, battery=BatterySnapshot.of(battery))
        try:
            with self._parts.store.event_transaction() as tx:
                tx.set_state(new_state)
        except BaseException:
            live.reload()
            raise
        live.committed(new_state, synced=False)

    # -- reports -------------------------------------------------------------------------------

    def status(
        self,
        state: str,
        reason: str | None = None,
        accuracy: float | None = None,
        online_since: float | None = None,
        *,
        forgetting: float | None = None,
        accuracy_by_class: dict[int, float] | None = None,
    ) -> Status:
        """The retained ``status`` message (``depleted`` wins over ``idle``/``learning``; the
        radio's problem is the reason when there is no other)."""
        if self._learning.off and state in ("idle", "learning"):
            state = "depleted"
        return reporting.status(
            self._parts,
            self._live,
            state,
            reason or self.radio_problem,
            accuracy,
            online_since,
            forgetting=forgetting,
            accuracy_by_class=accuracy_by_class,
        )

    def factory_accuracy_by_class(self, evaluation: Evaluation) -> dict[int, float] | None:
        """``evaluation``'s accuracy of each class, within the telemetry's class cap."""
        return reporting.by_class(self._parts, evaluation)
