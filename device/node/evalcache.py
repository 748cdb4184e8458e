"""Eval-set latents shared by the nodes of a process.

A fleet usually receives one eval set for all its devices; computing and holding its latents once
per process (per frozen stage) instead of once per node saves memory and start-up time.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from dataset_stream.protocol import EvalSet
from device.model.frozen import FrozenStage

_EVAL_CACHE: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]] = {}
_EVAL_CACHE_SIZE = 8
_EVAL_LOCK = threading.Lock()


def shared_eval_latents(frozen: FrozenStage, eval_set: EvalSet) -> tuple[np.ndarray, np.ndarray]:
    """Latents of an eval set, shared (read-only) by every node of the process that got it.

    A fleet usually receives one eval set for all its devices: computing and holding its
    latents once per process instead of once per node saves memory and start-up time.
    """
    digest = hashlib.sha256(eval_set.x.tobytes())
    digest.update(eval_set.y.astype(np.int64).tobytes())
    model = frozen.bundle.frozen_path.resolve()
    key = (str(model), model.stat().st_mtime_ns, digest.hexdigest())
    with _EVAL_LOCK:
        cached = _EVAL_CACHE.get(key)
    if cached is not None:
        return cached
    latents = frozen.run(eval_set.x)
    labels = eval_set.y.astype(np.int64)
    latents.flags.writeable = labels.flags.writeable = False
    with _EVAL_LOCK:
        while len(_EVAL_CACHE) >= _EVAL_CACHE_SIZE:
            _EVAL_CACHE.pop(next(iter(_EVAL_CACHE)))
        return _EVAL_CACHE.setdefault(key, (latents, labels))


__all__ = ["shared_eval_latents"]
