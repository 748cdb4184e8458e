"""Softmax cross-entropy: the loss of the adaptive stage."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``[N, K]``, numerically stable."""
    z = logits - logits.max(axis=1, keepdims=True)
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


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
    rows = np.arange(n)
    loss = float(-logp[rows, labels].mean()) if n else 0.0
    grad = np.exp(logp)
    grad[rows, labels] -= 1.0
    grad /= max(n, 1)
    return loss, grad


__all__ = ["log_softmax", "softmax_cross_entropy"]
