"""A model bundle: the directory a node loads. Format described in ``docs/model-bundle.md``.

::

    model.toml            manifest: input, normalisation, LR tensor, classes, layer lists
    frozen.onnx           INT8 static-quantized frozen stage: input -> LR tensor
    adaptive.safetensors  FP32 weights of the adaptive stage (keys "<layer>.<tensor>")
    factory_replays.safetensors   optional: quantized factory latents a node's replay memory
                          starts from (:mod:`device.model.replays`; listed in ``[replays]``)
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.learning.layers import KINDS, LayerInfo
from device.learning.nn.base import LayerSpec
from device.learning.nn.sequential import Sequential, build_sequential
from device.learning.replay import FactoryReplays
from device.model.errors import BundleError
from device.model.replays import read_replays

FORMAT = "vega-emu-bundle"
VERSION = 1
MANIFEST, FROZEN, ADAPTIVE = "model.toml", "frozen.onnx", "adaptive.safetensors"
INPUT_DTYPES = ("uint8", "float32")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """Per-sample input of the model as it arrives on the wire, and its normalisation.

    The frozen stage computes ``(x.astype(float32) - mean[c]) / std[c]`` per channel (axis 0 of
    ``shape``); ``mean``/``std`` hold one value per channel or a single value for all.
    """

    shape: tuple[int, ...]
    dtype: str = "uint8"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if not self.shape or any(not isinstance(d, int) or d < 1 for d in self.shape):
            raise ValueError(f"input shape {self.shape!r} must be positive integers")
        if self.dtype not in INPUT_DTYPES:
            raise ValueError(f"input dtype {self.dtype!r} not in {INPUT_DTYPES}")
        for key, vals in (("mean", self.mean), ("std", self.std)):
            if len(vals) not in (1, self.shape[0]):
                raise ValueError(f"input {key} needs 1 or {self.shape[0]} values, got {vals!r}")
            if not all(math.isfinite(v) for v in vals):
                raise ValueError(f"input {key} {vals!r} must be finite")
        if any(v <= 0 for v in self.std):
            raise ValueError(f"input std {self.std!r} must be > 0")

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``[N, *shape]`` raw -> float32 normalised."""
        bshape = (1, -1) + (1,) * (len(self.shape) - 1)
        mean = np.asarray(self.mean, np.float32).reshape(bshape)
        inv = (1.0 / np.asarray(self.std, np.float32)).reshape(bshape)
        out: np.ndarray = (x.astype(np.float32) - mean) * inv
        return out


def _shape(v: Any, where: str) -> tuple[int, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(d, int) and d > 0 for d in v):
        raise BundleError(f"{where} must be a non-empty list of positive integers, got {v!r}")
    return tuple(v)


def _get(table: Mapping[str, Any], key: str, where: str, typ: type | tuple[type, ...]) -> Any:
    if key not in table:
        raise BundleError(f"{MANIFEST}: missing key {where}{key!r}")
    value = table[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise BundleError(f"{MANIFEST}: key {where}{key!r} has wrong type: {value!r}")
    return value


def _layer_info(t: Mapping[str, Any], i: int) -> LayerInfo:
    where = f"frozen.layers[{i}]."
    try:
        kind = _get(t, "kind", where, str)
        if kind not in KINDS:
            raise BundleError(f"{MANIFEST}: {where}kind {kind!r} not in {sorted(KINDS)}")
        return LayerInfo(
            name=_get(t, "name", where, str),
            kind=kind,
            in_shape=_shape(_get(t, "in_shape", where, list), where + "in_shape"),
            out_shape=_shape(_get(t, "out_shape", where, list), where + "out_shape"),
            params=_get(t, "params", where, int),
            macs=_get(t, "macs", where, int),
            adaptive=False,
        )
    except ValueError as exc:
        raise BundleError(f"{MANIFEST}: {where[:-1]}: {exc}") from exc


def layer_info_table(info: LayerInfo) -> dict[str, Any]:
    """The manifest entry of a frozen layer."""
    return {
        "name": info.name,
        "kind": info.kind,
        "in_shape": list(info.in_shape),
        "out_shape": list(info.out_shape),
        "params": info.params,
        "macs": info.macs,
    }


#: Optional top-level keys of model.toml kept in ``ModelBundle.meta``: ``train.learning_rate`` is
#: the model's recommended on-device learning rate, ``factory_classes`` the classes it was trained
#: on, ``class_names`` the name of each class (``model build`` writes them: a run of the model
#: checks its data's classes against them).
META_KEYS = ("description", "source", "calibration", "train", "factory_classes", "class_names")
#: The paper's SGD learning rate, for bundles that recommend none.
DEFAULT_LEARNING_RATE = 0.001
#: The old spelling of ``[train] learning_rate``: still read, with a deprecation notice.
OLD_LEARNING_RATE_KEY = "lr"


@dataclass(frozen=True, slots=True)
class ModelBundle:
    """A loaded, validated bundle. Build with :meth:`load`."""

    path: Path
    name: str
    input: InputSpec
    lr_tensor: str
    lr_shape: tuple[int, ...]
    num_classes: int
    frozen_layers: tuple[LayerInfo, ...]
    adaptive_specs: tuple[LayerSpec, ...]
    weights: Mapping[str, np.ndarray] = field(repr=False)
    meta: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: Latents of the factory training data a new node's replay memory starts from; None for a
    #: bundle that carries none (``model split``, older bundles): its nodes start empty.
    factory_replays: FactoryReplays | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise BundleError(f"{MANIFEST}: classes.count must be >= 2, got {self.num_classes}")
        try:
            head = self.build_head()
            out = head.out_shape(self.lr_shape)
        except ValueError as exc:
            raise BundleError(f"{self.path}: adaptive stage does not fit: {exc}") from exc
        if out != (self.num_classes,):
            raise BundleError(
                f"{MANIFEST}: adaptive stage outputs {out}, expected ({self.num_classes},)"
            )
        replays = self.factory_replays
        if replays is not None and len(replays) and int(replays.labels.max()) >= self.num_classes:
            raise BundleError(f"{self.path}: a factory replay's label is >= {self.num_classes}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input.shape

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.input.dtype)

    @property
    def frozen_path(self) -> Path:
        return self.path / FROZEN

    @property
    def recommended_learning_rate(self) -> float:
        """The on-device SGD learning rate of ``[train] learning_rate`` in model.toml, else
        :data:`DEFAULT_LEARNING_RATE`."""
        train = self.meta.get("train", {})
        value = train.get("learning_rate") if isinstance(train, dict) else None
        return (
            float(value) if isinstance(value, int | float) and value > 0 else DEFAULT_LEARNING_RATE
        )

    def build_head(self, rng: np.random.Generator | None = None) -> Sequential:
        """A fresh adaptive stage holding the bundle's FP32 weights (a copy: train it freely)."""
        head = build_sequential(self.adaptive_specs, rng or np.random.default_rng(0))
        head.load_params(self.weights)
        return head

    def layers(self) -> list[LayerInfo]:
        """Frozen then adaptive layers, with per-sample shapes, params and forward MACs."""
        head = build_sequential(self.adaptive_specs, np.random.default_rng(0))
        return [*self.frozen_layers, *head.layer_infos(self.lr_shape, adaptive=True)]

    @classmethod
    def load(cls, path: str | Path, *, warn_old_keys: bool = True) -> ModelBundle:
        """Read and validate a bundle directory; :class:`BundleError` names what is wrong.

        ``[train] lr``, the old spelling of ``[train] learning_rate``, is read as that, with a
        logged deprecation notice unless ``warn_old_keys`` is false: the cached default model
        is loaded quietly, because a cache written before the rename keeps the old spelling for
        good (its bytes are part of the model id that ties state files to it).
        """
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"model bundle {root} is not a directory")
        for fname in (MANIFEST, FROZEN, ADAPTIVE):
            if not (root / fname).is_file():
                raise BundleError(f"model bundle {root}: missing file {fname}")
        try:
            doc = tomllib.loads((root / MANIFEST).read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{root / MANIFEST}: not valid TOML: {exc}") from exc
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise BundleError(
                f"{MANIFEST}: expected format = {FORMAT!r}, version = {VERSION}; "
                f"got {doc.get('format')!r}, {doc.get('version')!r}"
            )
        inp = _get(doc, "input", "", dict)
        try:
            spec_in = InputSpec(
                shape=_shape(_get(inp, "shape", "input.", list), "input.shape"),
                dtype=_get(inp, "dtype", "input.", str),
                mean=tuple(float(v) for v in _get(inp, "mean", "input.", list)),
                std=tuple(float(v) for v in _get(inp, "std", "input.", list)),
            )
        except (ValueError, TypeError) as exc:
            raise BundleError(f"{MANIFEST}: [input]: {exc}") from exc
        lr = _get(doc, "lr", "", dict)
        frozen = _get(doc, "frozen", "", dict)
        adaptive = _get(doc, "adaptive", "", dict)
        specs = []
        for i, t in enumerate(_get(adaptive, "layers", "adaptive.", list)):
            try:
                specs.append(LayerSpec(t["name"], t["op"], t.get("attrs", {})))
            except (KeyError, TypeError, ValueError) as exc:
                raise BundleError(f"{MANIFEST}: adaptive.layers[{i}]: {exc!s}") from exc
        lr_shape = _shape(_get(lr, "shape", "lr.", list), "lr.shape")
        num_classes = _get(_get(doc, "classes", "", dict), "count", "classes.", int)
        replays = None
        if "replays" in doc:
            replays = read_replays(root, doc["replays"], lr_shape)
        return cls(
            path=root,
            name=str(doc.get("name", root.name)),
            input=spec_in,
            lr_tensor=_get(lr, "tensor", "lr.", str),
            lr_shape=lr_shape,
            num_classes=num_classes,
            frozen_layers=tuple(_layer_info(t, i) for i, t in enumerate(frozen.get("layers", []))),
            adaptive_specs=tuple(specs),
            weights=_read_weights(root / ADAPTIVE),
            meta=_meta(doc, root / MANIFEST, warn_old_keys=warn_old_keys),
            factory_replays=replays,
        )


def _meta(doc: Mapping[str, Any], manifest: Path, *, warn_old_keys: bool) -> dict[str, Any]:
    """The :data:`META_KEYS` of ``doc``, ``[train] lr`` read as ``[train] learning_rate``."""
    meta = {k: v for k, v in doc.items() if k in META_KEYS}
    train = meta.get("train")
    if isinstance(train, dict) and OLD_LEARNING_RATE_KEY in train:
        if "learning_rate" in train:
            raise BundleError(
                f"{manifest}: [train] has both learning_rate and its old spelling lr; "
                "keep learning_rate"
            )
        if warn_old_keys:
            log.warning(
                "%s: [train] lr is the deprecated spelling of [train] learning_rate, read as that "
                "(bundles are written with learning_rate now; editing this file changes the "
                "model id that state files are tied to)",
                manifest,
            )
        meta["train"] = {
            ("learning_rate" if key == OLD_LEARNING_RATE_KEY else key): value
            for key, value in train.items()
        }
    return meta


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read safetensors: {exc}") from exc
    for key, arr in weights.items():
        if arr.dtype != np.float32:
            raise BundleError(f"{path}: tensor {key!r} is {arr.dtype}, expected float32")
        arr.setflags(write=False)
    return weights


__all__ = ["ADAPTIVE", "FROZEN", "MANIFEST", "InputSpec", "ModelBundle", "layer_info_table"]
