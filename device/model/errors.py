"""Errors of the model tools; the tree of :mod:`device.errors` goes on. Outside errors (onnx,
onnxruntime, safetensors, TOML, files) are converted where they enter, with
``raise ... from exc``::

    ModelError                      every error raised by ``device.model``
    ├── BundleError                 a bundle directory, file or key is missing or wrong
    ├── UnsupportedModelError       an ONNX operator / attribute the tools cannot handle
    ├── ModelInputError (ValueError) input to the frozen stage has the wrong shape or dtype
    ├── DataMismatchError (ValueError) a model run on data it was not built for (other classes,
    │                               another sample shape)
    └── ExportError                 building, quantizing or running an ONNX model failed
"""

from __future__ import annotations

from device.errors import DeviceError


class ModelError(DeviceError):
    """Base class of the model tools' errors."""


class BundleError(ModelError):
    """A model bundle is missing a file or key, or holds a wrong value (the message names it)."""


class UnsupportedModelError(ModelError):
    """An ONNX model uses an operator or attribute that the tools cannot split or train."""


class ModelInputError(ModelError, ValueError):
    """Data given to a model does not match its input shape or dtype."""


class DataMismatchError(ModelError, ValueError):
    """A model and a data set that do not fit: the bundle records other class names than the
    data's, or takes another sample shape. The message names both."""


class ExportError(ModelError):
    """Building, quantizing or checking an ONNX model failed."""


__all__ = [
    "BundleError",
    "DataMismatchError",
    "ExportError",
    "ModelError",
    "ModelInputError",
    "UnsupportedModelError",
]
