"""Offline training helpers for the model tools: image augmentation and a plain SGD loop.

Pure numpy: used by ``build-default`` to train the whole default CNN with the same layer code the
node uses for its adaptive stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from device.learning.nn.loss import softmax_cross_entropy
from device.learning.nn.optim import SGD, SGDConfig
from device.learning.nn.sequential import Sequential


@dataclass(frozen=True, slots=True)
class Augment:
    """Random appearance changes of ``[N, C, H, W]`` images in their raw 0..255 range."""

    rotation_deg: float = 18.0
    scale: tuple[float, float] = (0.8, 1.2)
    shift_px: float = 3.0
    contrast: tuple[float, float] = (0.6, 1.2)
    brightness: tuple[float, float] = (0.0, 40.0)
    noise_std: float = 12.0
    blur: float = 1.0  # maximum mixing weight of a 3x3 binomial blur

    def __post_init__(self) -> None:
        if self.scale[0] <= 0 or self.scale[0] > self.scale[1]:
            raise ValueError(f"scale range {self.scale!r} must be positive and ordered")
        if self.contrast[0] <= 0 or self.contrast[0] > self.contrast[1]:
            raise ValueError(f"contrast range {self.contrast!r} must be positive and ordered")
        if self.noise_std < 0 or self.shift_px < 0 or self.rotation_deg < 0:
            raise ValueError("noise_std, shift_px and rotation_deg must be >= 0")

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Float32 ``[N, C, H, W]`` in 0..255 (any dtype in) -> float32, same shape."""
        n, c, h, w = x.shape
        theta = np.deg2rad(rng.uniform(-self.rotation_deg, self.rotation_deg, n))
        inv_scale = 1.0 / rng.uniform(*self.scale, n)
        shift = rng.uniform(-self.shift_px, self.shift_px, (n, 2))
        cy, cx = (h - 1) / 2, (w - 1) / 2
        yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
        cos, sin = (
            (np.cos(theta) * inv_scale)[:, None, None],
            (np.sin(theta) * inv_scale)[:, None, None],
        )
        # output pixel -> source pixel (inverse map), bilinear sampling with zero outside
        sy = cos * yy[None] - sin * xx[None] + cy - shift[:, 0, None, None]
        sx = sin * yy[None] + cos * xx[None] + cx - shift[:, 1, None, None]
        y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
        fy, fx = (sy - y0).astype(np.float32), (sx - x0).astype(np.float32)
        src = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1)))
        idx_n = np.arange(n)[:, None, None]
        out = np.zeros((n, c, h, w), np.float32)
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            yi = np.clip(y0 + dy + 1, 0, h + 1)
            xi = np.clip(x0 + dx + 1, 0, w + 1)
            inside = (y0 + dy >= 0) & (y0 + dy < h) & (x0 + dx >= 0) & (x0 + dx < w)
            wgt = (fy if dy else 1 - fy) * (fx if dx else 1 - fx) * inside
            out += (
                src[idx_n[:, None], np.arange(c)[None, :, None, None], yi[:, None], xi[:, None]]
                * wgt[:, None]
            )
        if self.blur > 0:
            k = np.array([0.25, 0.5, 0.25], np.float32)
            padded = np.pad(out, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
            rows = sum(k[i] * padded[:, :, i : i + h, :] for i in range(3))
            blurred = sum(k[j] * rows[:, :, :, j : j + w] for j in range(3))
            a = rng.uniform(0, self.blur, (n, 1, 1, 1)).astype(np.float32)
            out = (1 - a) * out + a * blurred
        out *= rng.uniform(*self.contrast, (n, 1, 1, 1)).astype(np.float32)
        out += rng.uniform(*self.brightness, (n, 1, 1, 1)).astype(np.float32)
        out += rng.normal(0, self.noise_std, out.shape).astype(np.float32)
        return np.clip(out, 0, 255)


@dataclass(frozen=True, slots=True)
class FitConfig:
    """Epochs, mini-batch size, SGD settings (cosine-decayed learning rate)."""

    epochs: int = 30
    batch_size: int = 64
    sgd: SGDConfig = field(default_factory=lambda: SGDConfig(0.05, 0.9, 5e-4))

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be >= 1: {self.epochs}, {self.batch_size}"
            )


def fit(
    net: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    config: FitConfig,
    rng: np.random.Generator,
    *,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    normalize: tuple[float, float] = (0.0, 1.0),
) -> list[float]:
    """Train ``net`` on ``x [N, ...]`` / int ``y [N]``; returns the mean loss of each epoch.

    With ``augment`` (an :class:`Augment` for raw 0..255 images, or any function of the same
    form), ``x`` is augmented afresh each epoch, then mapped by
    ``(x - normalize[0]) / normalize[1]``.
    """
    mean, std = normalize
    losses = []
    steps = config.epochs * -(-len(x) // config.batch_size)
    step = 0
    opt = SGD(config.sgd)
    for _ in range(config.epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for i in range(0, len(x), config.batch_size):
            idx = order[i : i + config.batch_size]
            xb = augment(x[idx], rng) if augment is not None else x[idx].astype(np.float32)
            xb = (xb - np.float32(mean)) / np.float32(std)
            loss, grad = softmax_cross_entropy(net.forward(xb, train=True), y[idx])
            net.backward(grad)
            rate = 0.5 * config.sgd.learning_rate * (1 + np.cos(np.pi * step / steps))
            opt.config = SGDConfig(
                learning_rate=max(rate, 1e-6),
                momentum=config.sgd.momentum,
                weight_decay=config.sgd.weight_decay,
            )
            opt.step(net.params(), net.grads())
            total += loss * len(idx)
            step += 1
        losses.append(total / len(x))
    return losses


__all__ = ["Augment", "FitConfig", "fit"]
