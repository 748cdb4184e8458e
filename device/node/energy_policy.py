"""What a node's energy-aware policy does to one event, and how the node says so.

The policy (:class:`~device.energy.policy.Policy`, the ``policy`` power setting) looks at the
state of charge an event arrives at -- after the sleep and the harvest since the last one --:

- ``always``: the event is learned (the paper's node);
- ``soc-threshold:X``: below ``X`` it is not learned: committed as outcome ``policy``, its seq
  consumed, and answered with an ``error`` of code :data:`POLICY_CODE` (never telemetry: it was
  not learned, and never a failure: the node chose so);
- ``low-soc:X``: below ``X`` it is learned reduced (:func:`~device.energy.policy.reduced_config`:
  half the epochs, half the replays per mini-batch), with the real engine, at its real cost;
- ``defer-to-sun``: a batch arriving while the harvest does not cover the node's mean load
  (the harvester's power at its simulated time below it) is *deferred*: its seq committed
  (outcome ``deferred``), the batch kept in the state file, answered at once with an ``error``
  of code :data:`DEFERRED_CODE` (an interim answer). The first batch arriving in the sun
  first learns the held ones, in seq order, each answered by its telemetry. Beyond
  ``hold_events`` held, the oldest is dropped (outcome ``policy``, answered
  :data:`POLICY_CODE`).

Pure functions, no I/O: :mod:`device.node.learning` carries them out.
"""

from __future__ import annotations

from typing import Final, Literal

from dataset_stream.protocol import ErrorMessage
from device.energy import CostConfig, reduced_config
from device.energy.policy import Policy
from device.learning.learner import TrainConfig

__all__ = [
    "DEFERRED_CODE",
    "POLICY_CODE",
    "Choice",
    "choose",
    "deferred_error",
    "dropped_error",
    "policy_error",
    "reduced_train",
]

#: The ``error`` code of a batch the energy-aware policy did not learn.
POLICY_CODE: Final = "energy_policy"

#: The ``error`` code of a batch held for the sun: an interim answer, answered again later.
DEFERRED_CODE: Final = "deferred"

#: What the policy makes of one event.
Choice = Literal["full", "reduced", "skipped"]


def choose(policy: Policy, soc: float) -> Choice:
    """What ``policy`` does with an event arriving at state of charge ``soc`` (0..1)."""
    if policy.kind == "soc-threshold" and soc < policy.soc:
        return "skipped"
    if policy.kind == "low-soc" and soc < policy.soc:
        return "reduced"
    return "full"


def reduced_train(train: TrainConfig, reduced: CostConfig) -> TrainConfig:
    """``train`` as the reduced event runs it: the epochs and mini-batch of ``reduced``."""
    return TrainConfig(epochs=reduced.epochs, mb_size=reduced.mb_size, new_per_mb=train.new_per_mb)


def reduced_cost(config: CostConfig) -> CostConfig:
    """The cost configuration of a reduced event (:func:`reduced_config`)."""
    return reduced_config(config)


def policy_error(device: str, seq: int, soc: float, policy: Policy) -> ErrorMessage:
    """The answer to seq ``seq``, not learned by ``policy`` at state of charge ``soc``."""
    text = (
        f"not learned: state of charge {soc:.2f} below the policy's {policy.soc:.2f} "
        f"({policy.describe()})"
    )
    return ErrorMessage(device, POLICY_CODE, text, seq=seq)


def deferred_error(device: str, seq: int, held: int) -> ErrorMessage:
    """The interim answer to seq ``seq``, held for the sun with ``held`` batches in all."""
    text = f"held for the sun: {held} held, learned when the harvest covers the load"
    return ErrorMessage(device, DEFERRED_CODE, text, seq=seq)


def dropped_error(device: str, seq: int, hold_events: int) -> ErrorMessage:
    """The final answer to held seq ``seq``, dropped: more than ``hold_events`` were held."""
    text = f"dropped: held for the sun beyond {hold_events} events"
    return ErrorMessage(device, POLICY_CODE, text, seq=seq)
