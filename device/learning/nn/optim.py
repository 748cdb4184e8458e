"""SGD with momentum and (L2) weight decay, PyTorch semantics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class SGDConfig:
    """Learning rate, momentum and weight decay (paper defaults: 0.001, 0.9, 5e-4)."""

    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")


class SGD:
    """``v = momentum * v + (g + weight_decay * p); p -= learning_rate * v`` for every key of
    ``grads``.

    Parameters are updated in place. The velocity buffers are state (``state()`` /
    ``load_state()``) so that a node can persist them with its weights.
    """

    def __init__(self, config: SGDConfig | None = None) -> None:
        self.config = config or SGDConfig()
        self._velocity: dict[str, np.ndarray] = {}

    def step(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        cfg = self.config
        for key, g in grads.items():
            p = params[key]
            d = g + cfg.weight_decay * p if cfg.weight_decay else g
            if cfg.momentum:
                v = self._velocity.get(key)
                if v is None:
                    v = self._velocity[key] = np.array(d, dtype=p.dtype)
                else:
                    v *= cfg.momentum
                    v += d
                d = v
            p -= (cfg.learning_rate * d).astype(p.dtype, copy=False)

    def state(self) -> dict[str, np.ndarray]:
        """Velocity buffers, keyed like the parameters (copies)."""
        return {k: v.copy() for k, v in self._velocity.items()}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._velocity = {k: np.array(v, dtype=np.float32) for k, v in state.items()}


__all__ = ["SGD", "SGDConfig"]
