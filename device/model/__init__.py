"""Model tools: per-layer costs, bundles (INT8 frozen stage + numpy head), MobileNet-V1, splitting.

Heavy builders live in submodules that import onnx on use: :mod:`device.model.default`
(``build_default``, ``default_bundle_path``), :mod:`device.model.mobilenet_build`,
:mod:`device.model.split`.
"""

from device.learning.layers import KINDS, LayerInfo, LayerKind, total_macs
from device.model.bundle import InputSpec, ModelBundle
from device.model.errors import (
    BundleError,
    ExportError,
    ModelError,
    ModelInputError,
    UnsupportedModelError,
)
from device.model.frozen import FrozenStage
from device.model.info import bundle_report, lr_bytes
from device.model.mobilenet import mobilenet_v1_layers

__all__ = [
    "KINDS",
    "BundleError",
    "ExportError",
    "FrozenStage",
    "InputSpec",
    "LayerInfo",
    "LayerKind",
    "ModelBundle",
    "ModelError",
    "ModelInputError",
    "UnsupportedModelError",
    "bundle_report",
    "lr_bytes",
    "mobilenet_v1_layers",
    "total_macs",
]
