"""The learning job of a node: one batch becomes one committed event, or a skip, or a gap.

:meth:`Learning.apply` turns a validated batch into one learning event: frozen stage -> AR1*
training with dequantized replays -> LR memory update -> battery draw -> evaluation -> ONE
SQLite transaction (weights, optimizer state, LR memory, battery, energy bookkeeping, the
per-class records of :mod:`device.node.classbook`, last ``seq``, event log). An injected
brown-out (:attr:`Learning.power_cut`) raises :class:`~device.node.errors.PowerLost` inside
that transaction, after its writes: it rolls back, as a power loss would. A battery that
cannot pay browns out instead: what is left is spent on the attempt and nothing is learned, for
good. If anything fails before the commit, the live state is reloaded from the last commit, so
memory and disk never disagree.

Under ``defer-to-sun`` a batch arriving while the harvest does not cover the node's mean load
is held instead (:meth:`Learning._defer`: its seq and the batch committed in one transaction,
answered ``deferred``); :meth:`Learning.to_release` and :meth:`Learning.learn_held` learn the
held ones, in seq order, before the first batch that arrives in the sun, each in one
transaction with its removal from the held ones, so a crash learns none twice and loses none.

:meth:`Learning.skip` and :meth:`Learning.record_gap` commit the batches that are not learned:
one the node failed on, and seqs that never arrived; :meth:`Learning.pause`, one that arrived
while an operator turned learning off (committed, measured, not trained on). A batch with
sample ``ids`` first scores the predictions made for them (prequential accuracy), committed with
its event.
:meth:`Learning.measure_factory` measures the factory model before the first event (event 0).

Accuracy is measured after every ``eval_every``-th learned event (events k, 2k, ...), or when the
node has no measurement in hand (after a start); in between, an event reports the last
measurement and the event count it was made at (:meth:`Learning._measurement`). The per-class
records change only at a measurement.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from dataset_stream.protocol import Batch, ErrorMessage, EvalSet
from device.energy import EventCost, event_cost, reduced_config
from device.energy.harvest import harvested_j
from device.energy.policy import RESTART_SOC
from device.learning.learner import Evaluation, evaluate, train_event
from device.learning.prequential import ScoreTally
from device.node.cputime import charged
from device.node.energy_policy import (
    choose,
    deferred_error,
    dropped_error,
    policy_error,
    reduced_train,
)
from device.node.errors import PowerLost
from device.node.evalcache import shared_eval_latents
from device.node.parts import NodeParts
from device.node.persistence import LiveState, weights_snapshot
from device.node.reporting import EventFacts, telemetry_of
from device.node.store import EventRecord, NodeState
from device.node.store.snapshots import BatterySnapshot, LifetimeSnapshot

__all__ = ["Learning"]

_SIZE_ROUNDS = 8  # rounds of the fixed point of a telemetry's size and its radio figure


class Learning:
    """Learning events of one node, over its :class:`NodeParts` and :class:`LiveState`."""

    def __init__(self, parts: NodeParts, live: LiveState) -> None:
        self._parts = parts
        self._live = live
        self._eval: tuple[np.ndarray, np.ndarray] | None = None
        self._policy = parts.settings.power.learning_policy()
        self._harvester = parts.settings.power.harvester()
        #: An injected brown-out: the next learning event loses power before its commit.
        self.power_cut = False
        self._wire_bytes: int | None = None  # the payload size of the batch in hand
        self._load_w: tuple[NodeParts, float] | None = None  # the mean load of these parts
        #: the last committed measurement: the learned-event count it was made at, and it
        self._measured: tuple[int, Evaluation] | None = None

    def use(self, parts: NodeParts) -> None:
        """The node's parts after a desired state changed its settings."""
        self._parts = parts
        self._policy = parts.settings.power.learning_policy()
        self._harvester = parts.settings.power.harvester()

    def set_eval(self, eval_set: EvalSet) -> None:
        """Measure accuracy on ``eval_set`` from now on (its latents, shared by the process)."""
        self._eval = shared_eval_latents(self._parts.frozen, eval_set)

    def evaluate(self) -> Evaluation | None:
        """The head's accuracy on the eval set; None before one was given."""
        if self._eval is None:
            return None
        with charged("eval"):
            return evaluate(self._live.head, *self._eval)

    def measure_factory(self) -> Evaluation | None:
        """The factory model's accuracy on the eval set, committed as the start of each class's
        record, while no event has been learned; None once one has, or without an eval set.

        Like every evaluation, the emulator's own measurement: not charged to the battery.
        Measured again (the same figures) each time an eval set arrives before the first event.
        """
        live = self._live
        if live.state.events_applied > 0:
            return None
        evaluation = self.evaluate()
        if evaluation is None:
            return None
        classes = live.classes.after_factory_evaluation(evaluation.per_class)
        try:
            with self._parts.store.event_transaction(durable=False) as tx:
                tx.set_class_rows(classes.changed(live.classes))
        except BaseException:
            live.reload()
            raise
        live.committed(live.state, synced=False, classes=classes)
        self._measured = (0, evaluation)
        return evaluation

    def _measurement(self, events_applied: int) -> tuple[Evaluation | None, int | None, bool]:
        """What an event leaving the count at ``events_applied`` reports: the evaluation, the
        count it was measured at, and whether it is measured now -- when the count is a
        multiple of ``eval_every`` or no measurement is in hand; else the last one, carried
        (the head is measured only when due: the eval set's forward pass is the largest work
        and allocation of an event after training). (None, None, False) without an eval set."""
        if self._eval is None:
            return None, None, False
        last = self._measured
        if last is None or events_applied % self._parts.settings.eval_every == 0:
            return self.evaluate(), events_applied, True
        return last[1], last[0], False

    def _measured_since(self) -> int | None:
        """The learned-event count of the last measurement (None: none in hand)."""
        return None if self._measured is None else self._measured[0]

    def apply(self, batch: Batch, wire_bytes: int | None = None) -> EventFacts:
        """Learn from one validated batch (its ``seq`` is new) and commit it; ``wire_bytes``:
        the size of its payload, charged to the radio when batches arrive over it. Under
        ``defer-to-sun``, a batch arriving in the dark is held instead (:meth:`_defer`)."""
        started = time.perf_counter()
        self._wire_bytes = wire_bytes
        try:
            return self._apply(batch, started)
        except BaseException:
            self._live.reload()  # the transaction rolled back (or never began): forget it
            raise

    def to_release(self, batch: Batch) -> tuple[float, list[Batch]]:
        """The batches held for the sun to learn before ``batch`` (next in order), in seq
        order, and the simulated time they are learned at (``batch``'s): all of them if it
        arrives in the sun (or the policy is no longer ``defer-to-sun``) and the node is on;
        none while it is dark."""
        prev_t = self._live.state.sim_time
        t = batch.t if prev_t is None else max(batch.t, prev_t)
        if self._policy.kind == "defer-to-sun" and self._dark(t):
            return t, []
        store = self._parts.store
        if store.deferred_count() == 0 or self.off:
            return t, []
        return t, store.deferred()

    def learn_held(self, batch: Batch, at_t: float) -> EventFacts:
        """Learn ``batch``, held for the sun, at simulated time ``at_t``: an ordinary learning
        event committed in one transaction with its removal from the held ones (its reception
        was charged when it arrived; ``last_seq`` stays where it is)."""
        started = time.perf_counter()
        self._wire_bytes = None
        try:
            return self._apply(batch, started, held_at=at_t)
        except BaseException:
            self._live.reload()
            raise

    def _dark(self, t: float) -> bool:
        """Whether the harvest at simulated time ``t`` does not cover the node's mean load
        (never without a harvester)."""
        harvester = self._harvester
        if harvester is None:
            return False
        power_w = float(harvester.power_w(np.array([t], dtype=np.float64))[0])
        return power_w < self._mean_load_w()

    def _mean_load_w(self) -> float:
        """The node's mean power at its nominal rate: sleep, plus a full event (its compute,
        its replays at the memory's capacity, its telemetry) ``events_per_hour`` times an hour.
        """
        parts = self._parts
        if self._load_w is None or self._load_w[0] is not parts:
            config = parts.cost_config
            cost = event_cost(
                parts.layers,
                parts.profile,
                config,
                n_new=config.new_per_event,
                n_replay=parts.settings.replay.lr_size,
            )
            event_j = cost.energy_j["total"] + self._telemetry_j()
            load_w = parts.profile.sleep_w + parts.settings.events_per_hour * event_j / 3600.0
            self._load_w = (parts, load_w)
        return self._load_w[1]

    def _apply(self, batch: Batch, started: float, held_at: float | None = None) -> EventFacts:
        parts, live = self._parts, self._live
        memory, battery = parts.memory, live.battery
        n_new = len(batch.y)
        n_replay = memory.size
        prev_t = live.state.sim_time
        # test, then train: score the predictions made for these samples before learning them
        tally = live.prequential.tally(batch.ids, batch.y)
        # a producer whose clock went backwards: the batch is learned as if captured now; a
        # batch held for the sun is learned when the sun came
        at = batch.t if held_at is None else held_at
        t = at if prev_t is None else max(at, prev_t)
        harvester = self._harvester
        gained = 0.0 if harvester is None else self._harvested_j(t, prev_t)
        soc = self._arrival_soc(self._sleep_j(t, prev_t), gained)
        was_off = self.off
        # a harvester brings a node that was off back once the charge reaches the restart level
        off = was_off and (harvester is None or soc < RESTART_SOC)
        choice = "full" if off else choose(self._policy, soc)
        if held_at is None and self._policy.kind == "defer-to-sun" and not off and self._dark(t):
            return self._defer(batch, t, gained, tally, started)
        if choice == "skipped":
            return self._policy_skip(batch, t, soc, gained, tally, started)
        cost_config, train = parts.cost_config, parts.settings.train
        if choice == "reduced":
            cost_config = reduced_config(cost_config)
            train = reduced_train(train, cost_config)
        cost = event_cost(
            parts.layers,
            parts.profile,
            cost_config,
            n_new=n_new,
            n_replay=n_replay,
            n_written=memory.writes_for(n_new),
        )
        energy = self._event_energy(cost, t, prev_t)
        if not off:
            self._add_reception(energy)
        if harvester is None:  # the paper's node: one draw, as it always was
            learned = not battery.depleted and battery.remaining_j >= energy["total"]
            to_draw = energy["total"]
        else:  # sleep and harvest over the same time, then the event
            taken, kept = battery.exchange(energy["idle"], gained)
            to_draw = energy["total"] - energy["idle"]
            learned = not off and not battery.depleted and battery.remaining_j >= to_draw
        latents: np.ndarray | None = None
        events_applied = live.state.events_applied + int(learned)
        if learned:
            with charged("frozen"):
                latents = parts.frozen.run(batch.x)
            with charged("training"):
                train_event(
                    live.head,
                    live.optimizer,
                    latents,
                    batch.y,
                    replay=memory.sample,
                    n_replay=n_replay,
                    config=train,
                    rng=self._rng(batch.seq),
                    replay_into=memory.sample_into,
                )
        evaluation, measured_at, fresh = self._measurement(events_applied)
        if learned:
            if parts.power.priced:  # its telemetry at its real encoded size
                sized = self._sized_telemetry(
                    batch, t, energy, cost, (evaluation, measured_at, fresh), tally, started, choice
                )
                delta = sized - self._telemetry_j()
                energy["radio"] += delta
                energy["total"] += delta
                to_draw += delta
            battery.draw(to_draw)
            # active energy only: the estimator adds sleep power between events itself
            # the node times its events with its own (drifting) clock
            local_t = parts.settings.hardware.local_time(t)
            active_j = cost.energy_j["total"] + energy.get("radio", 0.0)
            live.lifetime.observe(local_t, active_j, cost.latency_s["total"])
            latency = cost.latency_s
        elif harvester is not None and off:  # still off: it slept and harvested, nothing more
            slept = energy["idle"]
            energy = dict.fromkeys(energy, 0.0) | {"idle": slept, "total": slept}
            latency = dict.fromkeys(cost.latency_s, 0.0)
        else:  # not enough energy left: the node browns out and stops learning (for good,
            # without a harvester); what was left is spent on the failed attempt, reported
            drained = battery.draw(battery.remaining_j)
            if harvester is not None:
                drained += taken
            energy = dict.fromkeys(energy, 0.0) | {"idle": drained, "total": drained}
            latency = dict.fromkeys(cost.latency_s, 0.0)
        if harvester is not None:
            energy["harvest"] = kept
        classes = live.classes.after_event(
            events_applied,
            t,
            {int(c) for c in np.unique(batch.y)} if learned else (),
            None if evaluation is None or not fresh else evaluation.per_class,
            trained_since=self._measured_since(),
        )
        host_s = time.perf_counter() - started
        since = live.state.inference
        new_state = NodeState(
            last_seq=batch.seq if held_at is None else live.state.last_seq,
            events_applied=events_applied,
            sim_time=t,
            gaps=live.state.gaps,
            battery=BatterySnapshot.of(battery),
            lifetime=LifetimeSnapshot.of(live.lifetime),
            energy_totals=live.state.energy_totals.plus(_stages(energy)),
            last_latency_s=latency["total"],
            inference=since.reported(tally.right, tally.n),
        )
        with parts.store.event_transaction() as tx:
            if latents is not None:  # learned
                memory.update(latents, batch.y, self._rng(batch.seq, stream=1))
                tx.save_weights(weights_snapshot(live.head, live.optimizer))
            tx.set_state(new_state)
            tx.set_class_rows(classes.changed(live.classes))
            record = EventRecord(
                seq=batch.seq,
                t=batch.t,
                samples=n_new if learned else 0,
                accuracy=None if evaluation is None else evaluation.accuracy,
                energy=energy,
                host_s=host_s,
                outcome="learned" if learned else "depleted",
            )
            if held_at is None:
                tx.log_event(record)
            else:  # its ``deferred`` line and held row give way to it, in this transaction
                tx.settle_deferred(record)
            if self.power_cut:  # every write made, none committed: the transaction rolls back
                self.power_cut = False
                raise PowerLost(f"power lost in the middle of the event of seq {batch.seq}")
        live.committed(new_state, synced=True, classes=classes)
        live.prequential.apply(tally)
        if fresh and evaluation is not None and measured_at is not None:
            self._measured = (measured_at, evaluation)
        return EventFacts(
            seq=batch.seq,
            t=batch.t,
            learned=learned,
            samples=n_new if learned else 0,
            evaluation=evaluation,
            latency_s=latency,
            energy_j=energy,
            host_s=host_s,
            inferences=since,
            classes=classes.metrics(
                events_applied, t, parts.bundle.num_classes, measured_at=measured_at
            ),
            measured_events=measured_at,
            policy=None if self._policy.kind == "always" or not learned else choice,
            back_on=learned and was_off,
        )

    def _sized_telemetry(
        self,
        batch: Batch,
        t: float,
        energy: Mapping[str, float],
        cost: EventCost,
        measurement: tuple[Evaluation | None, int | None, bool],
        tally: ScoreTally,
        started: float,
        choice: str,
    ) -> float:
        """The radio's price of the telemetry of the learned event in hand, at its real encoded
        size: drafted with the figures the event is about to commit (its radio figure among
        them), encoded, priced at that size, until the size and the figure agree. The shortest
        repr of a float changes with its last digits, so the size may swing by a few bytes
        without settling: then the largest price seen is charged."""
        parts, live = self._parts, self._live
        estimate = self._telemetry_j()
        events_applied = live.state.events_applied + 1
        labels = {int(c) for c in np.unique(batch.y)}
        evaluation, measured_at, fresh = measurement
        per_class = None if evaluation is None or not fresh else evaluation.per_class
        classes = live.classes.after_event(
            events_applied, t, labels, per_class, trained_since=self._measured_since()
        )
        metrics = classes.metrics(
            events_applied, t, parts.bundle.num_classes, measured_at=measured_at
        )
        right, n = live.prequential.right + tally.right, live.prequential.n + tally.n
        local_t = parts.settings.hardware.local_time(t)
        radio, seen = estimate, []
        for _ in range(_SIZE_ROUNDS):
            delta = radio - estimate
            drafted = {**energy, "radio": energy["radio"] + delta, "total": energy["total"] + delta}
            battery = replace(live.battery)
            battery.draw(
                drafted["total"] - drafted["idle"] if self._harvester else drafted["total"]
            )
            lifetime = LifetimeSnapshot.of(live.lifetime).restore()
            lifetime.observe(
                local_t, cost.energy_j["total"] + drafted["radio"], cost.latency_s["total"]
            )
            facts = EventFacts(
                seq=batch.seq,
                t=batch.t,
                learned=True,
                samples=len(batch.y),
                evaluation=evaluation,
                latency_s=cost.latency_s,
                energy_j=drafted,
                host_s=time.perf_counter() - started,
                inferences=live.state.inference,
                classes=metrics,
                policy=None if self._policy.kind == "always" else choice,
                measured_events=measured_at,
            )
            draft = telemetry_of(
                parts,
                facts,
                battery=battery,
                lifetime=lifetime,
                events=events_applied,
                gaps=live.state.gaps,
                prequential=(right / n if n else None, n),
            )
            priced = parts.power.send_j(len(draft.to_json()))
            if priced == radio:
                return priced
            seen.append(priced)
            radio = priced
        return max(seen)

    def _policy_skip(
        self,
        batch: Batch,
        t: float,
        soc: float,
        gained: float,
        tally: ScoreTally,
        started: float,
    ) -> EventFacts:
        """Commit ``batch`` without learning it, as the policy chose (outcome ``policy``): the
        seq and the simulated time move on, the sleep (and harvest) since the last event is
        settled, the answer (an ``energy_policy`` error) is charged to the radio; the head,
        the replay memory and the learned-event count stay as they were."""
        error = policy_error(self._parts.device_id, batch.seq, soc, self._policy)
        return self._unlearned(batch, t, gained, error, started, tally=tally)

    def _defer(
        self, batch: Batch, t: float, gained: float, tally: ScoreTally, started: float
    ) -> EventFacts:
        """Hold ``batch`` for the sun (``defer-to-sun`` in the dark), in ONE transaction: its
        seq committed (outcome ``deferred``), the batch kept in the state file, the sleep (and
        harvest) since the last event settled, its interim answer (a ``deferred`` error)
        charged to the radio; beyond ``hold_events`` held, the oldest is dropped for good
        (outcome ``policy``, answered ``energy_policy``). Its samples are scored when it is
        learned, not now."""
        del tally  # scored by the event that learns it
        parts = self._parts
        held = min(parts.store.deferred_count() + 1, parts.settings.power.hold_events)
        error = deferred_error(parts.device_id, batch.seq, held)
        return self._unlearned(batch, t, gained, error, started, tally=None)

    def _unlearned(
        self,
        batch: Batch,
        t: float,
        gained: float,
        error: ErrorMessage,
        started: float,
        *,
        tally: ScoreTally | None,
    ) -> EventFacts:
        """Commit ``batch`` unlearned, answered by ``error``, in ONE transaction: skipped by the
        policy (``tally``: its samples scored now) or, without ``tally``, held for the sun
        (kept in the state file; the oldest beyond ``hold_events`` dropped)."""
        parts, live = self._parts, self._live
        battery = live.battery
        held = tally is None
        idle = event_cost(parts.layers, parts.profile, parts.cost_config, n_new=0, n_replay=0)
        energy = dict.fromkeys(idle.energy_j, 0.0)
        slept = self._sleep_j(t, live.state.sim_time)
        if self._harvester is None:
            drawn = battery.draw(min(slept, battery.remaining_j))
        else:
            drawn, energy["harvest"] = battery.exchange(slept, gained)
        energy |= {"idle": drawn, "total": drawn}
        if parts.power.priced:  # it was received, and its answer is sent all the same
            radio_j = parts.power.send_j(len(error.to_json())) + self._reception_j()
            sent = battery.draw(min(radio_j, battery.remaining_j))
            energy |= {"radio": sent, "total": drawn + sent}
        since = live.state.inference
        new_state = replace(
            live.state,
            last_seq=batch.seq,
            sim_time=t,
            battery=BatterySnapshot.of(battery),
            energy_totals=live.state.energy_totals.plus(_stages(energy)),
            last_latency_s=0.0,
            inference=since.reported(0, 0)
            if tally is None
            else since.reported(tally.right, tally.n),
        )
        host_s = time.perf_counter() - started
        hold_events = parts.settings.power.hold_events
        dropped: list[int] = []
        with parts.store.event_transaction() as tx:
            tx.set_state(new_state)
            tx.log_event(
                EventRecord(
                    seq=batch.seq,
                    t=batch.t,
                    samples=0,
                    accuracy=None,
                    energy=energy,
                    host_s=host_s,
                    outcome="deferred" if held else "policy",
                )
            )
            if held:
                tx.hold_deferred(batch)
                dropped = list(tx.drop_deferred_beyond(hold_events))
            if self.power_cut:
                self.power_cut = False
                raise PowerLost(f"power lost in the middle of the event of seq {batch.seq}")
        live.committed(new_state, synced=True)
        if tally is not None:
            live.prequential.apply(tally)
        return EventFacts(
            seq=batch.seq,
            t=batch.t,
            learned=False,
            samples=0,
            evaluation=None,
            latency_s=dict.fromkeys(idle.latency_s, 0.0),
            energy_j=energy,
            host_s=host_s,
            inferences=since,
            policy="deferred" if held else "skipped",
            refusal=error,
            dropped=tuple(dropped_error(parts.device_id, seq, hold_events) for seq in dropped),
        )

    @property
    def off(self) -> bool:
        """Whether the node is off: its battery is empty, or (with a harvester) its last event
        found it depleted and the harvest has not brought it back to
        :data:`~device.energy.policy.RESTART_SOC` yet."""
        battery = self._live.battery
        if battery.depleted:
            return True
        if self._harvester is None or battery.soc >= RESTART_SOC:
            return False
        return self._parts.store.event_outcome() == "depleted"

    def _arrival_soc(self, idle_j: float, gained_j: float) -> float:
        """The state of charge an event arrives at: the last one's, less the sleep and plus
        the harvest since (within 0 and the capacity)."""
        battery = self._live.battery
        remaining = battery.remaining_j + gained_j - idle_j
        return min(battery.capacity_j, max(0.0, remaining)) / battery.capacity_j

    def _harvested_j(self, t: float, prev_t: float | None) -> float:
        """Joules the harvester delivered since the last event (0 before the first)."""
        if self._harvester is None or prev_t is None:
            return 0.0
        return harvested_j(self._harvester, prev_t, t)

    def _reception_j(self) -> float:
        """Joules the radio spends receiving the batch in hand: its payload's real size at the
        radio's downlink cost, when batches arrive over the radio (0 otherwise: captured
        locally, the paper's case)."""
        parts = self._parts
        if not (parts.settings.power.batches_over_radio and parts.power.priced):
            return 0.0
        return 0.0 if self._wire_bytes is None else parts.power.receive_j(self._wire_bytes)

    def _add_reception(self, energy: dict[str, float]) -> None:
        """Add the batch's reception (:meth:`_reception_j`) to an event's radio and total."""
        reception = self._reception_j()
        if reception:
            energy["radio"] = energy.get("radio", 0.0) + reception
            energy["total"] += reception

    def pause(self, batch: Batch, wire_bytes: int | None = None) -> EventFacts:
        """Commit ``batch`` without learning it (an operator turned learning off): ``last_seq``
        and the simulated time move on, the sleep since the last event is drawn from the
        battery, the head is measured (not charged, as always); the head, the replay memory and
        the learned-event count stay as they were. Logged as ``paused``."""
        self._wire_bytes = wire_bytes
        try:
            return self._pause(batch)
        except BaseException:
            self._live.reload()
            raise

    def _pause(self, batch: Batch) -> EventFacts:
        parts, live = self._parts, self._live
        started = time.perf_counter()
        battery = live.battery
        prev_t = live.state.sim_time
        tally = live.prequential.tally(batch.ids, batch.y)
        t = batch.t if prev_t is None else max(batch.t, prev_t)
        idle = event_cost(parts.layers, parts.profile, parts.cost_config, n_new=0, n_replay=0)
        zero = dict.fromkeys(idle.energy_j, 0.0)
        slept = self._sleep_j(t, prev_t)
        if self._harvester is None:
            drawn = battery.draw(min(slept, battery.remaining_j))
            energy = zero | {"idle": drawn, "total": drawn}
        else:
            drawn, kept = battery.exchange(slept, self._harvested_j(t, prev_t))
            energy = zero | {"idle": drawn, "total": drawn, "harvest": kept}
        if parts.power.priced:  # its telemetry is sent all the same (and the batch received)
            radio_j = self._telemetry_j() + self._reception_j()
            sent = battery.draw(min(radio_j, battery.remaining_j))
            energy |= {"radio": sent, "total": drawn + sent}
        latency = dict.fromkeys(idle.latency_s, 0.0)
        events_applied = live.state.events_applied
        evaluation, measured_at, fresh = self._measurement(events_applied)
        classes = live.classes.after_event(
            events_applied,
            t,
            (),
            None if evaluation is None or not fresh else evaluation.per_class,
            trained_since=self._measured_since(),
        )
        since = live.state.inference
        new_state = replace(
            live.state,
            last_seq=batch.seq,
            sim_time=t,
            battery=BatterySnapshot.of(battery),
            energy_totals=live.state.energy_totals.plus(_stages(energy)),
            last_latency_s=0.0,
            inference=since.reported(tally.right, tally.n),
        )
        host_s = time.perf_counter() - started
        with parts.store.event_transaction() as tx:
            tx.set_state(new_state)
            tx.set_class_rows(classes.changed(live.classes))
            tx.log_event(
                EventRecord(
                    seq=batch.seq,
                    t=batch.t,
                    samples=0,
                    accuracy=None if evaluation is None else evaluation.accuracy,
                    energy=energy,
                    host_s=host_s,
                    outcome="paused",
                )
            )
        live.committed(new_state, synced=True, classes=classes)
        live.prequential.apply(tally)
        if fresh and evaluation is not None and measured_at is not None:
            self._measured = (measured_at, evaluation)
        return EventFacts(
            seq=batch.seq,
            t=batch.t,
            learned=False,
            samples=0,
            evaluation=evaluation,
            latency_s=latency,
            energy_j=energy,
            host_s=host_s,
            inferences=since,
            classes=classes.metrics(
                events_applied, t, parts.bundle.num_classes, measured_at=measured_at
            ),
            measured_events=measured_at,
            paused=True,
        )

    def _event_energy(self, cost: EventCost, t: float, prev_t: float | None) -> dict[str, float]:
        """Joules by stage of an event at ``t``: its cost, and sleep since the node was last
        busy (the last event's latency and the inferences' since then)."""
        energy = {**cost.energy_j, "idle": self._sleep_j(t, prev_t)}
        energy["total"] = energy["total"] + energy["idle"]
        if self._parts.power.priced:  # and the radio, for the telemetry it sends
            energy["radio"] = self._telemetry_j()
            energy["total"] += energy["radio"]
        return energy

    def _telemetry_j(self) -> float:
        """Joules the radio spends on one telemetry of the nominal size (0 without a radio): the
        first guess of :meth:`_sized_telemetry`, and the price of a paused event's."""
        parts = self._parts
        return parts.power.send_j(parts.settings.power.telemetry_bytes)

    def _sleep_j(self, t: float, prev_t: float | None) -> float:
        """Joules slept between the node's last busy time and an event at ``t``."""
        live = self._live
        busy_s = live.state.last_latency_s + live.state.inference.since_latency_s
        idle_s = 0.0 if prev_t is None else max(0.0, t - prev_t - busy_s)
        return self._parts.profile.sleep_w * idle_s

    def skip(self, seq: int, t: float) -> None:
        """Commit that ``seq`` was handled but not learned (the node failed on it): the event log
        says ``failed``, ``last_seq`` moves on, nothing else changes."""
        live = self._live
        live.reload()  # whatever the failed attempt left in memory is gone
        new_state = replace(live.state, last_seq=seq)
        with self._parts.store.event_transaction() as tx:
            tx.set_state(new_state)
            tx.log_event(
                EventRecord(
                    seq=seq, t=t, samples=0, accuracy=None, energy={}, host_s=0.0, outcome="failed"
                )
            )
        live.committed(new_state, synced=False)

    def record_gap(self, first: int, last: int) -> None:
        """Commit that seqs ``first..last`` never arrived and are skipped for good."""
        live = self._live
        last_seq = live.state.last_seq
        if not (last_seq is None or first == last_seq + 1) or last < first:
            raise ValueError(f"gap {first}..{last} does not follow seq {last_seq}")
        new_state = replace(live.state, last_seq=last, gaps=live.state.gaps + last - first + 1)
        with self._parts.store.event_transaction() as tx:
            tx.set_state(new_state)
            tx.log_gap(first, last)
        live.committed(new_state, synced=False)

    def _rng(self, seq: int, stream: int = 0) -> np.random.Generator:
        """Reproducible randomness per (seed, device, seq): a restart replays the same draws."""
        settings = self._parts.settings
        key = zlib.crc32(settings.device_id.encode())
        return np.random.default_rng([settings.seed, key, seq, stream])


def _stages(energy: Mapping[str, float]) -> dict[str, float]:
    """An event's joules by the stages the state file totals (``radio`` is in ``total``
    only, ``harvest`` is energy gained, not spent: the totals keep the stages they always
    had)."""
    return {stage: joules for stage, joules in energy.items() if stage not in ("radio", "harvest")}
