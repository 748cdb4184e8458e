"""The factory replays of a bundle: ``factory_replays.safetensors`` and its ``[replays]`` table.

A class-balanced set of latents of the factory training data, computed by the bundle's own INT8
frozen stage and quantized per LR (:mod:`device.learning.replay.quant`): a node's replay memory
starts from it, as AR1* starts from the latents of its initial training batch. Safetensors, no
pickle::

    codes       uint8   [N, row_bytes(prod(lr.shape), bits)]   bit-packed codes of each LR
    scale       float32 [N]                                    per-LR scale
    zero_point  float32 [N]                                    per-LR zero point
    labels      int64   [N]                                    class of each LR
    metadata    {"bits": "8"}

``model.toml`` lists it like the other files::

    [replays]
    file = "factory_replays.safetensors"
    count = 425            # LRs in the file
    bits = 8
    lr_size = 1500         # the memory size the set was chosen for (at most this many)
    classes = [0, 8, 9]
    source = "..."

Only a builder that has the training data writes it (``model build-default``); a bundle without
it loads all the same, and its nodes start with an empty memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device.learning.replay import (
    FactoryReplays,
    QuantizationError,
    QuantizedLR,
    balanced_pick,
    quantize,
)
from device.model.errors import BundleError

__all__ = [
    "FACTORY_LR_BITS",
    "FACTORY_LR_SIZE",
    "REPLAYS",
    "pick_factory",
    "read_replays",
    "replays_table",
    "write_replays",
]

REPLAYS = "factory_replays.safetensors"
#: The memory a bundle's factory replays are chosen for: the node's default LR size and bits
#: (``vega-emu node --lr-size 1500 --lr-bits 8``); a node with other settings refits them.
FACTORY_LR_SIZE = 1500
FACTORY_LR_BITS = 8


def pick_factory(y: np.ndarray, lr_size: int = FACTORY_LR_SIZE, *, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced subset of at most ``lr_size`` factory samples (labels ``y``)."""
    return balanced_pick(y, lr_size, np.random.default_rng([seed, 0xFAC7]))


def write_replays(
    path: Path, latents: np.ndarray, labels: np.ndarray, bits: int = FACTORY_LR_BITS
) -> FactoryReplays:
    """Quantize float ``latents [N, *lr_shape]`` at ``bits`` and save them with ``labels``."""
    from safetensors.numpy import save_file

    flat = np.asarray(latents, np.float32).reshape(len(latents), -1)
    replays = FactoryReplays(quantize(flat, bits), labels.astype(np.int64), latents.shape[1:])
    save_file(
        {
            "codes": replays.lrs.packed,
            "scale": replays.lrs.scale,
            "zero_point": replays.lrs.zero_point,
            "labels": replays.labels,
        },
        str(path),
        metadata={"bits": str(bits)},
    )
    return replays


def replays_table(replays: FactoryReplays, lr_size: int, source: str) -> dict[str, Any]:
    """The ``[replays]`` table of model.toml for ``replays``."""
    return {
        "file": REPLAYS,
        "count": len(replays),
        "bits": replays.bits,
        "lr_size": lr_size,
        "classes": sorted(replays.class_counts()),
        "source": source,
    }


def read_replays(root: Path, table: Any, lr_shape: tuple[int, ...]) -> FactoryReplays:
    """The factory replays the ``[replays]`` ``table`` of ``root/model.toml`` lists, checked
    against the LR shape and the table (count, bits); the bundle checks their labels."""
    from safetensors import SafetensorError, safe_open

    if not isinstance(table, dict) or table.get("file") != REPLAYS:
        raise BundleError(f"model.toml: [replays] must name file = {REPLAYS!r}, got {table!r}")
    path = root / REPLAYS
    if not path.is_file():
        raise BundleError(f"model bundle {root}: missing file {REPLAYS} (listed in [replays])")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - not a dict
        bits = int(meta.get("bits", ""))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read safetensors: {exc}") from exc
    missing = {"codes", "scale", "zero_point", "labels"} - arrays.keys()
    if missing:
        raise BundleError(f"{path}: missing tensors {sorted(missing)}")
    try:
        replays = FactoryReplays(
            QuantizedLR(
                arrays["codes"], arrays["scale"], arrays["zero_point"], bits, int(np.prod(lr_shape))
            ),
            arrays["labels"],
            lr_shape,
        )
    except QuantizationError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    if (table.get("count"), table.get("bits")) != (len(replays), bits):
        raise BundleError(
            f"model.toml: [replays] says count = {table.get('count')!r}, bits = "
            f"{table.get('bits')!r}; {REPLAYS} holds {len(replays)} LRs at {bits} bits"
        )
    return replays
