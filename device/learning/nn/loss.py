"""Softmax cross-entropy: the loss of the adaptive stage."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``[N, K]``, numerically stable."""
    z: np.ndarray = np.subtract(logits, logits.max(axis=1, keepdims=True), order="C")
    total = np.exp(z).sum(axis=1, keepdims=True)
    z -= np.log(total, out=total)
    return z


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits [N, K]`` against int ``labels [N]``, and its gradient.

    Returns ``(loss, grad)`` with ``grad [N, K] = (softmax(logits) - onehot(labels)) / N``.
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"want logits [N, K] and labels [N], got {logits.shape}, {labels.shape}")
    n, k = logits.shape
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be in [0, {k}), got range {labels.min()}..{labels.max()}")
    logp = log_softmax(logits)
    # flat positions of each row's label: one take / subtract instead of two fancy indexings
    at = labels + np.arange(0, n * k, k)
    # the sum / n of ndarray.mean (the same float32 pairwise sum), without its Python wrapper
    loss = float(-(np.add.reduce(logp.take(at)) / n)) if n else 0.0
    grad = np.exp(logp, out=logp)
    grad.ravel()[at] -= 1.0  # logp is C-contiguous (log_softmax): ravel() is a view
    grad /= max(n, 1)
    return loss, grad


__all__ = ["log_softmax", "softmax_cross_entropy"]
