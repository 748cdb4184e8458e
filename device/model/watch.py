"""The default model of the ``watch`` data set: a small 1-D CNN for ``float32 [6, 100]`` windows.

::

    frozen   c0  conv1d k5 6->16 pad 2, ReLU, avgpool 2    -> 16x50
             c1  conv1d k5 16->32 pad 2, ReLU, avgpool 2   -> 32x25
             c2  conv1d k3 32->32 pad 1, ReLU, avgpool 2   -> 32x12   = the LR (384 values)
    adaptive flat3, fc3 linear 384->64, ReLU, fc4 linear 64->7

The windows arrive standardised per channel (the source does it with the training subjects'
statistics), so the input normalisation is the identity. The network is trained in numpy on the
factory classes of every training subject (the ``nc`` factory batch: the ``nic`` one holds a
single subject, too few windows to learn features from), with light augmentation (per-channel
gain, offset and noise, a small time shift), then its frozen stage is quantized to INT8 like
the digits default. The head uses only layers whose training cost the energy profiles measure
(``linear``); the 1-D convolutions run in the frozen stage, charged as dense convolutions at
the profile's INT8 rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.learning.nn import AvgPool1d, Conv1d, Flatten, Linear, ReLU, Sequential
from device.model.bundle import MANIFEST, InputSpec, ModelBundle
from device.model.default import RECOMMENDED_LEARNING_RATE as DIGITS_LEARNING_RATE
from device.model.default import cached_bundle, models_root
from device.model.errors import ModelError, ModelInputError
from device.model.export import write_bundle
from device.model.onnx_build import layers_to_onnx
from device.model.train import FitConfig, fit

INPUT_SHAPE = (6, 100)
NUM_CLASSES = 7
WATCH_LR_LAYER = "p2"
WATCH_NAME = "watch-cnn1d-v1"
CACHE_NAME = "watch-cnn1d-v1-seed{seed}"
#: On-device SGD rate of this head: the digits default's (a head of the same size that also
#: starts from factory replays); not tuned on the watch data.
RECOMMENDED_LEARNING_RATE = DIGITS_LEARNING_RATE


@dataclass(frozen=True, slots=True)
class SignalAugment:
    """Random changes of standardised windows ``[N, C, L]``: a gain and an offset per channel,
    white noise, and a circular time shift of up to ``shift`` samples."""

    gain: tuple[float, float] = (0.8, 1.2)
    offset_std: float = 0.1
    noise_std: float = 0.05
    shift: int = 10

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, c, length = x.shape
        out = x.astype(np.float32) * rng.uniform(*self.gain, (n, c, 1)).astype(np.float32)
        out += rng.normal(0.0, self.offset_std, (n, c, 1)).astype(np.float32)
        out += rng.normal(0.0, self.noise_std, out.shape).astype(np.float32)
        if self.shift:
            steps = np.asarray(rng.integers(-self.shift, self.shift + 1, n))
            idx = (np.arange(length)[None, :] - steps[:, None]) % length
            out = np.take_along_axis(out, idx[:, None, :], axis=2)
        return out


def watch_network(
    rng: np.random.Generator,
    num_classes: int = NUM_CLASSES,
    input_shape: tuple[int, int] = INPUT_SHAPE,
) -> Sequential:
    """The untrained watch CNN (input ``[N, *input_shape]`` float32, default ``[N, 6, 100]``,
    output logits). Its three poolings halve the length (rounding down), so it must be at
    least 8; the LR is ``32 x L/8``."""
    channels, length = input_shape
    if length < 8:
        raise ModelInputError(f"the 1-D CNN needs windows of at least 8 readings, not {length}")
    return Sequential(
        [
            Conv1d(channels, 16, 5, padding=2, name="c0", rng=rng),
            ReLU(name="r0"),
            AvgPool1d(2, name="p0"),
            Conv1d(16, 32, 5, padding=2, name="c1", rng=rng),
            ReLU(name="r1"),
            AvgPool1d(2, name="p1"),
            Conv1d(32, 32, 3, padding=1, name="c2", rng=rng),
            ReLU(name="r2"),
            AvgPool1d(2, name="p2"),
            Flatten(name="flat3"),
            Linear(32 * (length // 8), 64, name="fc3", rng=rng),
            ReLU(name="r3"),
            Linear(64, num_classes, name="fc4", rng=rng),
        ]
    )


def build_watch(
    x: np.ndarray,
    y: np.ndarray,
    out_dir: Path,
    *,
    seed: int = 0,
    fit_config: FitConfig | None = None,
) -> ModelBundle:
    """Train the watch CNN on ``x`` float32 ``[N, 6, 100]`` / ``y`` int64 ``[N]`` and write a
    bundle split after ``p2`` (LR = 32x12) into ``out_dir``, with the factory replays of ``x``
    (:mod:`device.model.replays`)."""
    if x.dtype != np.float32 or x.shape[1:] != INPUT_SHAPE or y.shape != (len(x),):
        raise ModelError(
            f"want x float32 [N, 6, 100] and y [N], got {x.dtype} {x.shape}, {y.shape}"
        )
    if len(x) == 0 or y.min() < 0 or y.max() >= NUM_CLASSES:
        raise ModelError(f"labels must be in 0..{NUM_CLASSES - 1} and N > 0")
    rng = np.random.default_rng(seed)
    net = watch_network(rng)
    cut = [layer.name for layer in net.layers].index(WATCH_LR_LAYER) + 1
    start = time.perf_counter()
    losses = fit(
        net,
        x,
        y.astype(np.int64),
        fit_config or FitConfig(epochs=8, batch_size=32),
        rng,
        augment=SignalAugment(),
    )
    frozen, head = Sequential(net.layers[:cut]), Sequential(net.layers[cut:])
    model = layers_to_onnx(
        frozen.specs(), frozen.params(), INPUT_SHAPE, output_name="lr", graph_name="watch-frozen"
    )
    classes = sorted(int(c) for c in np.unique(y))
    return write_bundle(
        out_dir,
        name=WATCH_NAME,
        input_spec=InputSpec(INPUT_SHAPE, "float32", (0.0,), (1.0,)),
        frozen_fp32=model,
        calibration=x[rng.permutation(len(x))[:256]],
        frozen_layers=frozen.layer_infos(INPUT_SHAPE, adaptive=False),
        head=head,
        num_classes=NUM_CLASSES,
        meta={
            "description": "1-D CNN for 6x100 smartwatch windows (watch data set), trained in "
            "numpy on the factory classes of the training subjects",
            "source": f"build-default --dataset watch seed={seed} samples={len(x)} "
            f"classes={classes} final_loss={losses[-1]:.4f} "
            f"train_s={time.perf_counter() - start:.1f}",
            "factory_classes": classes,
            "train": {"learning_rate": RECOMMENDED_LEARNING_RATE},
        },
        factory=(x, y),
    )


def watch_cache_dir(seed: int = 0) -> Path:
    """``$VEGA_EMU_CACHE/watch-cnn1d-v1-seed{seed}``, else under ``~/.cache/vega-emu/models``."""
    return models_root() / CACHE_NAME.format(seed=seed)


def load_watch_model(
    seed: int = 0,
    *,
    factory: Callable[[], tuple[np.ndarray, np.ndarray]],
    announce: Callable[[str], None] | None = None,
) -> ModelBundle:
    """The cached watch model for ``seed``, built from ``factory()`` on first use.

    Built and cached as the default model is (:func:`device.model.default.cached_bundle`).
    """
    target = watch_cache_dir(seed)
    if announce is not None and not (target / MANIFEST).is_file():
        announce(
            "first run: training the watch model (1-D CNN, about 10 s) and caching it in "
            f"{target}; later runs start at once"
        )
    cached_bundle(target, lambda out: build_watch(*factory(), out, seed=seed), what="watch model")
    return ModelBundle.load(target, warn_old_keys=False)


__all__ = [
    "INPUT_SHAPE",
    "RECOMMENDED_LEARNING_RATE",
    "WATCH_LR_LAYER",
    "WATCH_NAME",
    "SignalAugment",
    "build_watch",
    "load_watch_model",
    "watch_cache_dir",
    "watch_network",
]
