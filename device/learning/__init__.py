"""The numeric core of a node: numpy in, numpy out, no I/O (no files, sockets, SQLite or clocks).

- :mod:`device.learning.nn`: the adaptive stage's layers, forward and backward side by side, loss
  and optimiser;
- :mod:`device.learning.replay`: latent replays quantized and bit-packed, the AR1* replacement
  policy (the SQLite memory that keeps them is :mod:`device.node.store.replay`);
- :func:`plan_event` (AR1* mini-batch composition, shared with the energy model),
  :func:`train_event` and :func:`evaluate` (one learning event), :func:`classify` (inference),
  :class:`PrequentialScore` (test-then-train accuracy);
- :class:`LayerInfo` and friends: the per-layer work that the model tools and the energy model
  count in.

Randomness comes in as a ``np.random.Generator``; it imports only numpy and :mod:`device.errors`
(``tests/cli/test_layers.py`` checks it).
"""

from device.learning.ar1 import EventPlan, plan_event
from device.learning.inference import InferenceCounters, classify
from device.learning.layers import (
    KINDS,
    LayerInfo,
    LayerKind,
    lr_layer_of,
    total_macs,
    with_lr_layer,
)
from device.learning.learner import (
    Evaluation,
    IntoSampler,
    Sampler,
    TrainConfig,
    TrainResult,
    evaluate,
    train_event,
)
from device.learning.prequential import PrequentialScore

__all__ = [
    "KINDS",
    "Evaluation",
    "EventPlan",
    "InferenceCounters",
    "IntoSampler",
    "LayerInfo",
    "LayerKind",
    "PrequentialScore",
    "Sampler",
    "TrainConfig",
    "TrainResult",
    "classify",
    "evaluate",
    "lr_layer_of",
    "plan_event",
    "total_macs",
    "train_event",
    "with_lr_layer",
]
