"""A factory model for the user's own data: ``vega-emu model build``.

Trains a small network in numpy (the layer code the node trains its head with, the loop of
:func:`device.model.train.fit`) on the factory training data, cuts it at its LR layer, quantizes
the frozen stage to INT8 with calibration from that data and writes a bundle with factory
replays, as ``model build-default`` does for the bundled data sets. Three architectures, each
a default model's definition sized to the data (input shape, class count)::

    cnn2d  images [C, H, W], H and W >= 16: the digits CNN (device.model.default)
           frozen c0..p2 (three conv 3x3 + ReLU + avgpool 2), LR 32 x H/8 x W/8;
           head dw3, pw4, avgpool 2, fc5 linear 64 x H/16 x W/16 -> K
    cnn1d  windows [C, L], L >= 8: the watch CNN (device.model.watch)
           frozen c0..p2 (three conv1d + ReLU + avgpool 2), LR 32 x L/8;
           head fc3 linear -> 64, ReLU, fc4 linear 64 -> K
    mlp    feature vectors [F] (any sample, flattened)
           frozen fc0 linear F -> 64, ReLU, fc1 linear 64 -> 64, ReLU, LR 64;
           head fc2 linear 64 -> 64, ReLU, fc3 linear 64 -> K

Input normalisation: uint8 samples (images) get one mean and standard deviation, as the digits
model; float32 samples one per channel (axis 0 of the sample), from the training data. A source
that standardises its samples already (``csv:``, ``watch``) gets about the identity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from device.learning.nn import Flatten, Linear, ReLU, Sequential
from device.learning.nn.optim import SGDConfig
from device.model.bundle import InputSpec, ModelBundle
from device.model.default import RECOMMENDED_LEARNING_RATE, default_network
from device.model.errors import ModelError, ModelInputError
from device.model.export import write_bundle
from device.model.onnx_build import layers_to_onnx
from device.model.train import Augment, FitConfig, fit
from device.model.watch import SignalAugment, watch_network

__all__ = [
    "ARCHS",
    "LR_LAYERS",
    "BuildConfig",
    "arch_for",
    "build_model",
    "mlp_network",
    "network_for",
]

ARCHS: Final = ("cnn2d", "cnn1d", "mlp")
#: The layer whose output is the LR, per architecture.
LR_LAYERS: Final = {"cnn2d": "p2", "cnn1d": "p2", "mlp": "r1"}
#: Sample passes a build aims at when no epoch count is given (about 200 mini-batches of 32),
#: within :data:`EPOCH_RANGE`.
TARGET_SAMPLE_PASSES: Final = 6400
EPOCH_RANGE: Final = (4, 30)
BATCH_SIZE: Final = 32
CALIBRATION_SAMPLES: Final = 256
#: SGD rate of the factory training (cosine-decayed); a training that does not converge is run
#: again at a quarter of the rate, :data:`RETRIES` times in all.
LEARNING_RATE: Final = 0.02
RETRIES: Final = 3


@dataclass(frozen=True, slots=True)
class BuildConfig:
    """What to build: the architecture, every class's name (label ``k`` is ``class_names[k]``;
    the model has that many outputs, also for the classes it is not trained on), the bundle's
    name, a line saying where the data came from, the seed and the epochs (None: chosen from
    the data's size, :data:`TARGET_SAMPLE_PASSES`)."""

    arch: str
    class_names: tuple[str, ...]
    name: str = "own-model"
    data: str = ""
    seed: int = 0
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not one of {', '.join(ARCHS)}")
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class names {self.class_names!r}: at least 2, each once")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, not {self.epochs}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def epochs_for(self, samples: int) -> int:
        """The epochs of a build on ``samples`` training samples."""
        if self.epochs is not None:
            return self.epochs
        low, high = EPOCH_RANGE
        return min(high, max(low, math.ceil(TARGET_SAMPLE_PASSES / max(samples, 1))))


def arch_for(sample_shape: Sequence[int]) -> str:
    """The architecture for samples of ``sample_shape``: cnn2d for ``[C, H, W]``, cnn1d for
    ``[C, L]``, mlp for ``[F]``."""
    return {3: "cnn2d", 2: "cnn1d"}.get(len(sample_shape), "mlp")


def mlp_network(
    rng: np.random.Generator, num_classes: int, input_shape: tuple[int, ...]
) -> Sequential:
    """The untrained MLP (input ``[N, *input_shape]``, flattened first unless it is ``[F]``)."""
    features = math.prod(input_shape)
    front: list[Flatten] = [] if len(input_shape) == 1 else [Flatten(name="flat")]
    return Sequential(
        [
            *front,
            Linear(features, 64, name="fc0", rng=rng),
            ReLU(name="r0"),
            Linear(64, 64, name="fc1", rng=rng),
            ReLU(name="r1"),
            Linear(64, 64, name="fc2", rng=rng),
            ReLU(name="r2"),
            Linear(64, num_classes, name="fc3", rng=rng),
        ]
    )


def network_for(
    arch: str, input_shape: tuple[int, ...], num_classes: int, rng: np.random.Generator
) -> Sequential:
    """The untrained network of ``arch`` for samples of ``input_shape``; :class:`ModelInputError`
    when the shape does not suit it."""
    if arch == "cnn2d":
        if len(input_shape) != 3:
            raise ModelInputError(
                f"--arch cnn2d takes images [C, H, W], not samples {list(input_shape)}"
            )
        c, h, w = input_shape
        return default_network(rng, num_classes, (c, h, w))
    if arch == "cnn1d":
        if len(input_shape) != 2:
            raise ModelInputError(
                f"--arch cnn1d takes windows [C, L], not samples {list(input_shape)} (a CSV "
                "source gives windows with the option window=W, W > 1)"
            )
        c, length = input_shape
        return watch_network(rng, num_classes, (c, length))
    if arch == "mlp":
        return mlp_network(rng, num_classes, input_shape)
    raise ModelError(f"arch {arch!r} is not one of {', '.join(ARCHS)}")


def build_model(x: np.ndarray, y: np.ndarray, out_dir: Path, config: BuildConfig) -> ModelBundle:
    """Train ``config.arch`` on ``x`` (uint8 or float32 ``[N, *sample]``) / ``y`` (int ``[N]``,
    the factory classes) and write the bundle into ``out_dir`` (see the module docstring)."""
    if x.dtype not in (np.dtype(np.uint8), np.dtype(np.float32)) or x.ndim < 2:
        raise ModelInputError(f"want x uint8 or float32 [N, ...], got {x.dtype} {list(x.shape)}")
    if y.shape != (len(x),) or len(x) == 0:
        raise ModelInputError(f"want y [N] for x of {len(x)} samples, got {list(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= config.num_classes:
        raise ModelInputError(f"labels must lie in 0..{config.num_classes - 1}")
    shape = tuple(int(d) for d in x.shape[1:])
    input_spec = _input_spec(x)
    epochs = config.epochs_for(len(x))
    start = time.perf_counter()
    rate = LEARNING_RATE
    for attempt in range(RETRIES):
        rng = np.random.default_rng(config.seed)
        net = network_for(config.arch, shape, config.num_classes, rng)
        fit_config = FitConfig(epochs, BATCH_SIZE, SGDConfig(rate, 0.9, 5e-4))
        losses = _train(net, x, y, input_spec, config.arch, fit_config, rng)
        if _converged(losses):
            break
        if attempt == RETRIES - 1:
            raise ModelError(
                f"the training did not converge even at learning rate {rate:g} (mean loss by "
                f"epoch: {', '.join(f'{v:.3g}' for v in losses)})"
            )
        rate /= 4
    cut = [layer.name for layer in net.layers].index(LR_LAYERS[config.arch]) + 1
    frozen, head = Sequential(net.layers[:cut]), Sequential(net.layers[cut:])
    model = layers_to_onnx(
        frozen.specs(), frozen.params(), shape, output_name="lr", graph_name=f"{config.arch}-frozen"
    )
    classes = sorted(int(c) for c in np.unique(y))
    return write_bundle(
        out_dir,
        name=config.name,
        input_spec=input_spec,
        frozen_fp32=model,
        calibration=x[rng.permutation(len(x))[:CALIBRATION_SAMPLES]],
        frozen_layers=frozen.layer_infos(shape, adaptive=False),
        head=head,
        num_classes=config.num_classes,
        meta={
            "description": f"{config.arch} factory model trained in numpy on the user's data",
            "source": f"model build --arch {config.arch} seed={config.seed} data={config.data} "
            f"samples={len(x)} classes={classes} epochs={epochs} learning_rate={rate:g} "
            f"final_loss={losses[-1]:.4f} train_s={time.perf_counter() - start:.1f}",
            "factory_classes": classes,
            "class_names": list(config.class_names),
            "train": {"learning_rate": RECOMMENDED_LEARNING_RATE},
        },
        factory=(x, y),
    )


def _train(
    net: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    input_spec: InputSpec,
    arch: str,
    config: FitConfig,
    rng: np.random.Generator,
) -> list[float]:
    """Train ``net`` in place; the mean loss of each epoch."""
    labels = y.astype(np.int64)
    if x.dtype == np.uint8:  # raw images: augmented in 0..255, then normalised by fit
        augment = Augment() if arch == "cnn2d" else None
        normalize = (input_spec.mean[0], input_spec.std[0])
        return fit(net, x, labels, config, rng, augment=augment, normalize=normalize)
    signal = SignalAugment() if arch == "cnn1d" else None  # normalised first, then augmented
    return fit(net, input_spec.normalize(x), labels, config, rng, augment=signal)


def _converged(losses: list[float]) -> bool:
    """Whether a training stayed stable: every epoch's loss finite, none above twice the first
    one's, the last not above the first. A rate too high for the data blows the loss up
    instead, and leaves dead ReLUs behind (latents of zeros for whole classes)."""
    if not all(math.isfinite(v) for v in losses):
        return False
    return max(losses) <= 2 * losses[0] and losses[-1] <= 1.1 * losses[0]


def _input_spec(x: np.ndarray) -> InputSpec:
    """The normalisation of ``x``: one mean and std for uint8 images, one per channel (axis 1
    of ``x``) for float32 samples; a channel that does not vary keeps std 1."""
    shape = tuple(int(d) for d in x.shape[1:])
    if x.dtype == np.uint8:
        mean = float(np.round(x.mean(), 1))
        return InputSpec(shape, "uint8", (mean,), (float(np.round(x.std() + 1e-3, 1)),))
    per_channel = np.moveaxis(x, 1, 0).reshape(shape[0], -1).astype(np.float64)
    means = per_channel.mean(axis=1)
    stds = per_channel.std(axis=1)
    stds = np.where(stds > 1e-6, stds, 1.0)
    return InputSpec(shape, "float32", tuple(map(float, means)), tuple(map(float, stds)))
