"""The inference job of a node: answer an infer request, charge it, commit the charge.

:meth:`Inference.infer` runs the frozen stage and the head's forward pass, draws the modelled
energy from the battery and commits it (without fsync, see :data:`SYNC_EVERY_S`) before the
prediction is returned; it changes nothing else. A request among the last :data:`SEQ_WINDOW`
charged is answered again, ``repeated``, and not charged (docs/protocol.md, "Inference"): with
the first answer while it is at hand, else classified again. A battery that cannot pay browns
out: what is left is spent on the attempt and the answer is an ``error`` ``depleted``.

With a radio, a prediction is priced at its real encoded size (:meth:`Inference._sized`): the
samples are classified first, and the radio's figure is the cost of sending the very message
that carries it (a fixed point: the size with that figure in it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from dataset_stream.protocol import BatteryState, ErrorMessage, InferRequest, Prediction
from device.energy import inference_cost
from device.energy.radio import PREDICTION_BYTES
from device.learning.inference import SEQ_WINDOW, SYNC_EVERY_S, classify
from device.node.parts import NodeParts
from device.node.persistence import LiveState
from device.node.reporting import battery_state
from device.node.store.snapshots import BatterySnapshot, LifetimeSnapshot

__all__ = ["Inference", "InferenceCharge"]

_CHARGES_KEPT = 64  # sample counts whose cost is kept
_SIZE_ROUNDS = 8  # rounds of the fixed point of a prediction's size and its radio figure


@dataclass(frozen=True, slots=True)
class InferenceCharge:
    """What classifying some samples costs: ``latency_s`` and ``energy_j`` by stage."""

    latency_s: Mapping[str, float]
    energy_j: Mapping[str, float]


class Inference:
    """Inference requests of one node, over its :class:`NodeParts` and :class:`LiveState`."""

    def __init__(self, parts: NodeParts, live: LiveState) -> None:
        self._parts = parts
        self._live = live
        self._answers: OrderedDict[int, Prediction] = OrderedDict()  # the last SEQ_WINDOW
        self._charges: dict[int, InferenceCharge] = {}

    def use(self, parts: NodeParts) -> None:
        """The node's parts after a desired state changed its settings."""
        self._parts = parts

    def charge(self, n_samples: int) -> InferenceCharge:
        """The modelled latency and energy of classifying ``n_samples`` on this node's profile
        (:func:`device.energy.inference_cost`), kept per sample count; with a radio, ``radio``
        (in ``total``) prices one prediction of the documented size
        (:data:`device.energy.radio.PREDICTION_BYTES`)."""
        charge = self._charges.get(n_samples)
        if charge is None:
            parts = self._parts
            cost = inference_cost(parts.layers, parts.profile, n_samples)
            energy_j = cost.energy_j
            if parts.power.priced:  # and the radio, for the prediction it sends
                radio_j = parts.power.send_j(PREDICTION_BYTES)
                energy_j = {**energy_j, "radio": radio_j, "total": energy_j["total"] + radio_j}
            charge = InferenceCharge(cost.latency_s, energy_j)
            if len(self._charges) < _CHARGES_KEPT:
                self._charges[n_samples] = charge
        return charge

    def infer(self, request: InferRequest) -> Prediction | ErrorMessage:
        """Classify ``request``'s samples, charge the battery, commit; nothing else changes.

        Store failures raise :class:`~device.node.store.StoreError` with nothing charged.
        """
        parts, live = self._parts, self._live
        charged = parts.store.inference_samples(request.seq)
        if charged is not None:
            return self._repeat(request, charged)
        n = len(request.x)
        cost = self.charge(n)
        if parts.power.priced:  # classified first: the answer's size is part of its price
            classes, confidence = classify(live.head, parts.frozen.run(request.x))
            cost = self._sized(request, classes, confidence, cost)
        energy_j, latency_s = cost.energy_j["total"], cost.latency_s["total"]
        if live.battery.remaining_j < energy_j or live.battery.depleted:
            return self._brown_out(request, energy_j)
        if not parts.power.priced:
            classes, confidence = classify(live.head, parts.frozen.run(request.x))
        counters = live.state.inference.charged(energy_j, latency_s)
        try:
            live.battery.draw(energy_j)
            # a producer clock going backwards is taken as "now", as for batches
            lifetime = live.lifetime
            t = max(request.t, lifetime.inference_last_t) if lifetime.inferences else request.t
            lifetime.observe_inference(t, energy_j, latency_s)
            durable = time.monotonic() - live.synced_s >= SYNC_EVERY_S
            new_state = replace(
                live.state,
                battery=BatterySnapshot.of(live.battery),
                lifetime=LifetimeSnapshot.of(lifetime),
                inference=counters,
            )
            with parts.store.event_transaction(durable=durable) as tx:
                tx.set_state(new_state)
                tx.log_inference(request.seq, counters.count, n, window=SEQ_WINDOW)
        except BaseException:
            live.reload()  # rolled back: the battery and lifetime as committed
            raise
        live.committed(new_state, synced=durable)
        if request.ids is not None:
            live.prequential.predicted(request.ids, classes)
        prediction = self._prediction(request, classes, confidence, cost)
        self._answers[request.seq] = prediction
        while len(self._answers) > SEQ_WINDOW:
            self._answers.popitem(last=False)
        return prediction

    def _sized(
        self,
        request: InferRequest,
        classes: np.ndarray,
        confidence: np.ndarray,
        cost: InferenceCharge,
    ) -> InferenceCharge:
        """``cost`` with its radio figure the price of sending the prediction that carries it:
        drafted with the figure, encoded, priced at that size, until the size and the figure
        agree. The shortest repr of a float changes with its last digits, so the size may
        swing by a few bytes from round to round without settling: then the largest price
        seen is charged (the message is never priced below its size by more than the swing
        of its own figures' digits)."""
        battery = self._live.battery
        power = self._parts.power
        radio = cost.energy_j["radio"]
        base_total = cost.energy_j["total"] - radio
        energy: dict[str, float] = dict(cost.energy_j)
        seen: list[float] = []
        for _ in range(_SIZE_ROUNDS):
            energy = {**cost.energy_j, "radio": radio, "total": base_total + radio}
            remaining = max(0.0, battery.remaining_j - energy["total"])
            draft = replace(
                self._prediction(
                    request, classes, confidence, InferenceCharge(cost.latency_s, energy)
                ),
                battery=BatteryState(soc=remaining / battery.capacity_j, remaining_j=remaining),
            )
            priced = power.send_j(len(draft.to_json()))
            if priced == radio:
                return InferenceCharge(cost.latency_s, energy)
            seen.append(priced)
            radio = priced
        radio = max(seen)
        energy = {**cost.energy_j, "radio": radio, "total": base_total + radio}
        return InferenceCharge(cost.latency_s, energy)

    def _repeat(self, request: InferRequest, samples: int) -> Prediction:
        """The answer to a request charged before: the first answer when it is still at hand,
        else the samples classified again with the current head; never charged."""
        first = self._answers.get(request.seq)
        if first is not None:
            return replace(first, repeated=True, battery=battery_state(self._live.battery))
        classes, confidence = classify(self._live.head, self._parts.frozen.run(request.x))
        cost = self.charge(samples)
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
            device=self._parts.device_id,
            seq=request.seq,
            t=request.t,
            classes=tuple(classes.tolist()),
            confidence=tuple(confidence.tolist()),
            latency_s=cost.latency_s,
            energy_j=cost.energy_j,
            ids=None if request.ids is None else tuple(request.ids.tolist()),
            battery=battery_state(self._live.battery),
            repeated=repeated,
        )

    def _brown_out(self, request: InferRequest, energy_j: float) -> ErrorMessage:
        """Too little energy for the inference: spend what is left on the attempt, commit."""
        live = self._live
        left = live.battery.remaining_j
        if left > 0:
            try:
                live.battery.draw(left)
                new_state = replace(
                    live.state,
                    battery=BatterySnapshot.of(live.battery),
                    energy_totals=live.state.energy_totals.plus({"idle": left}),
                )
                with self._parts.store.event_transaction() as tx:
                    tx.set_state(new_state)
            except BaseException:
                live.reload()
                raise
            live.committed(new_state, synced=True)
        text = f"the battery holds {left:.6g} J, the inference needs {energy_j:.6g} J"
        return ErrorMessage(self._parts.device_id, "depleted", text, infer_seq=request.seq)
