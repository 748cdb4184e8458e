"""The default model: a small CNN for 1x32x32 uint8 digit images, trained in numpy.

::

    frozen   c0  conv 3x3 1->16 pad 1, ReLU, avgpool 2      -> 16x16x16
             c1  conv 3x3 16->32 pad 1, ReLU, avgpool 2     -> 32x8x8
             c2  conv 3x3 32->32 pad 1, ReLU, avgpool 2     -> 32x4x4   = the LR (512 values)
    adaptive dw3 depthwise 3x3 pad 1, ReLU
             pw4 pointwise 32->64, ReLU, avgpool 2 (-> 64x2x2), flatten, fc5 linear 256->10

It is trained on the factory split (a few classes only) with strong augmentation so that the
frozen features also serve the classes the devices learn later. The head keeps a 2x2 spatial
layout before the classifier: with global average pooling instead, accuracy on all ten classes
dropped from ~0.82 to ~0.59 (digits test sessions, head trained on frozen latents).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from device.learning.nn import (
    AvgPool,
    Conv2d,
    DepthwiseConv2d,
    Flatten,
    Linear,
    PointwiseConv2d,
    ReLU,
    Sequential,
)
from device.model.bundle import MANIFEST, InputSpec, ModelBundle
from device.model.errors import BundleError, ModelError, ModelInputError
from device.model.export import write_bundle
from device.model.onnx_build import layers_to_onnx
from device.model.train import Augment, FitConfig, fit
from device.private import DIR_MODE, FILE_MODE, private_dir

INPUT_SHAPE = (1, 32, 32)
NUM_CLASSES = 10
DEFAULT_LR_LAYER = "p2"
#: The default model's name; its version goes up whenever what a build writes changes, so that a
#: cache of an older build is never taken for this one.
MODEL_NAME = "default-v2"
CACHE_NAME = MODEL_NAME + "-seed{seed}"


#: On-device SGD rate of this head. With the factory replays in the memory, 0.01 keeps the
#: factory classes through the first event (8 devices, seed 0: -4.7 points on them, against
#: -12.1 at 0.05) at about the same final accuracy (seed 0: 82.2 % against 83.9 %);
#: ``python benchmarks/first_events.py [--learning-rate 0.05]``.
RECOMMENDED_LEARNING_RATE = 0.01


def default_network(
    rng: np.random.Generator,
    num_classes: int = NUM_CLASSES,
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
) -> Sequential:
    """The untrained default CNN (input ``[N, *input_shape]`` float32, default ``[N, 1, 32,
    32]``, output logits). Its four poolings halve height and width (rounding down), so both
    must be at least 16; the classifier takes what is left, ``64 x H/16 x W/16``."""
    channels, height, width = input_shape
    if height < 16 or width < 16:
        raise ModelInputError(f"the 2-D CNN needs images of at least 16x16, not {input_shape}")
    return Sequential(
        [
            Conv2d(channels, 16, 3, padding=1, name="c0", rng=rng),
            ReLU(name="r0"),
            AvgPool(2, name="p0"),
            Conv2d(16, 32, 3, padding=1, name="c1", rng=rng),
            ReLU(name="r1"),
            AvgPool(2, name="p1"),
            Conv2d(32, 32, 3, padding=1, name="c2", rng=rng),
            ReLU(name="r2"),
            AvgPool(2, name="p2"),
            DepthwiseConv2d(32, 3, padding=1, name="dw3", rng=rng),
            ReLU(name="r3"),
            PointwiseConv2d(32, 64, name="pw4", rng=rng),
            ReLU(name="r4"),
            AvgPool(2, name="p4"),
            Flatten(name="flat"),
            Linear(64 * (height // 16) * (width // 16), num_classes, name="fc5", rng=rng),
        ]
    )


def split_index(net: Sequential, lr_layer: str) -> int:
    """Index of the first adaptive layer: the one after ``lr_layer`` (whose output is the LR)."""
    names = [layer.name for layer in net.layers]
    if lr_layer not in names[:-1]:
        raise ModelError(f"LR layer {lr_layer!r} is not one of {names[:-1]}")
    return names.index(lr_layer) + 1


def build_default(
    x: np.ndarray,
    y: np.ndarray,
    out_dir: Path,
    *,
    lr_layer: str | None = None,
    seed: int = 0,
    fit_config: FitConfig | None = None,
    augment: Augment | None = None,
) -> ModelBundle:
    """Train the default CNN on ``x`` uint8 ``[N, 1, 32, 32]`` / ``y`` int64 ``[N]`` and write a
    bundle split after ``lr_layer`` (default ``p2``: LR = 32x4x4) into ``out_dir``, with the
    factory replays of ``x`` (:mod:`device.model.replays`)."""
    if x.dtype != np.uint8 or x.shape[1:] != INPUT_SHAPE or y.shape != (len(x),):
        raise ModelError(
            f"want x uint8 [N, 1, 32, 32] and y [N], got {x.dtype} {x.shape}, {y.shape}"
        )
    if len(x) == 0 or y.min() < 0 or y.max() >= NUM_CLASSES:
        raise ModelError(f"labels must be in 0..{NUM_CLASSES - 1} and N > 0")
    rng = np.random.default_rng(seed)
    net = default_network(rng)
    cut = split_index(net, lr_layer or DEFAULT_LR_LAYER)
    if not any(layer.trainable for layer in net.layers[cut:]):
        raise ModelError("the adaptive stage must contain a trainable layer")
    mean, std = float(np.round(x.mean(), 1)), float(np.round(x.std() + 1e-3, 1))
    start = time.perf_counter()
    losses = fit(
        net,
        x,
        y.astype(np.int64),
        fit_config or FitConfig(),
        rng,
        augment=augment or Augment(),
        normalize=(mean, std),
    )
    frozen = Sequential(net.layers[:cut])
    head = Sequential(net.layers[cut:])
    input_spec = InputSpec(INPUT_SHAPE, "uint8", (mean,), (std,))
    model = layers_to_onnx(
        frozen.specs(), frozen.params(), INPUT_SHAPE, output_name="lr", graph_name="default-frozen"
    )
    calib = x[rng.permutation(len(x))[:256]]
    return write_bundle(
        out_dir,
        name=MODEL_NAME,
        input_spec=input_spec,
        frozen_fp32=model,
        calibration=calib,
        frozen_layers=frozen.layer_infos(INPUT_SHAPE, adaptive=False),
        head=head,
        num_classes=NUM_CLASSES,
        meta={
            "description": "default CNN for 1x32x32 digits, trained in numpy on the factory split",
            "source": f"build-default seed={seed} samples={len(x)} "
            f"classes={sorted(int(c) for c in np.unique(y))} "
            f"final_loss={losses[-1]:.4f} train_s={time.perf_counter() - start:.1f}",
            "factory_classes": sorted(int(c) for c in np.unique(y)),
            # on-device SGD rate for this head; measured with benchmarks/accuracy.py
            "train": {"learning_rate": RECOMMENDED_LEARNING_RATE},
        },
        factory=(x, y),
    )


def default_cache_dir(seed: int = 0) -> Path:
    """``$VEGA_EMU_CACHE/default-v2-seed{seed}``, else under ``~/.cache/vega-emu/models``.

    The seed is the scenario seed: it picks the factory split the model is trained on.
    """
    return models_root() / CACHE_NAME.format(seed=seed)


def models_root() -> Path:
    """Where built models are cached: ``$VEGA_EMU_CACHE``, else ``~/.cache/vega-emu/models``."""
    root = os.environ.get("VEGA_EMU_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "vega-emu" / "models"


def load_default(
    seed: int = 0,
    *,
    factory: Callable[[], tuple[np.ndarray, np.ndarray]],
    announce: Callable[[str], None] | None = None,
) -> ModelBundle:
    """The cached default model for ``seed``, built from ``factory()`` on first use (~10 s).

    ``factory`` gives the factory-split training data (``dataset_stream.scenarios.factory_split``
    for the digits scenarios: the data lives with the producer side, the model here). ``announce``
    is told, before a build, what is about to happen and where the bundle will be cached.
    """
    cache = default_cache_dir(seed)
    if announce is not None and not (cache / MANIFEST).is_file():
        announce(
            "first run: training the default model (digits CNN, about 10 s on 2 cores) "
            f"and caching it in {cache}; later runs start at once"
        )
    return ModelBundle.load(default_bundle_path(cache, factory=factory), warn_old_keys=False)


def default_bundle_path(
    cache_dir: Path | None = None,
    *,
    factory: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> Path:
    """The cached default bundle, built from ``factory()`` data on first use.

    Built in a temporary sibling directory and renamed into place, so a crash never leaves a
    half bundle and two racing processes both end up with one complete bundle. The cache is the
    user's own: a cache directory it creates is 0700, the bundle 0700 with 0600 files (the image
    build opens its built-in cache to every user on purpose: deploy/Dockerfile).
    """
    target = cache_dir or default_cache_dir()
    return cached_bundle(target, lambda out: build_default(*factory(), out), what="default model")


def cached_bundle(target: Path, build: Callable[[Path], object], *, what: str) -> Path:
    """``target``, a bundle ``build(out_dir)`` writes on first use: built in a temporary sibling
    directory and renamed into place, so a crash never leaves a half bundle and two racing
    processes both end up with one complete bundle; 0700 directories and 0600 files."""
    if (target / MANIFEST).is_file():
        return target
    if not target.parent.is_dir():
        private_dir(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp / "bundle")
        _make_private(tmp / "bundle")
        try:
            os.rename(tmp / "bundle", target)
        except OSError:  # somebody else finished first (target exists and is not empty)
            if not (target / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        ModelBundle.load(target, warn_old_keys=False)
    except BundleError as exc:
        raise BundleError(f"cached {what} {target} is broken; delete it: {exc}") from exc
    return target


def _make_private(tree: Path) -> None:
    """``tree`` and every directory in it 0700, every file 0600."""
    for path in tree.rglob("*"):
        path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)
    tree.chmod(DIR_MODE)


__all__ = [
    "DEFAULT_LR_LAYER",
    "INPUT_SHAPE",
    "RECOMMENDED_LEARNING_RATE",
    "build_default",
    "cached_bundle",
    "default_bundle_path",
    "default_cache_dir",
    "default_network",
    "load_default",
    "models_root",
    "split_index",
]
