"""Read a ``.npy`` file that holds a pickled object (``np.save`` of a dict) without trusting it.

``np.load(..., allow_pickle=True)`` runs whatever callable the pickle names. This reader parses
the ``.npy`` header itself (:mod:`numpy.lib.format`), insists on a 0-d object array, and
unpickles the rest with :class:`RestrictedUnpickler`, which resolves exactly the globals needed
to rebuild plain numpy arrays (the "Restricting Globals" pattern of Python's :mod:`pickle`
documentation) and refuses every other one with :class:`UnsafePickleError` before anything is
called. It is used once, to convert seglearn's ``watch_dataset.npy`` into a pickle-free cache.
"""

from __future__ import annotations

import io
import pickle  # only through RestrictedUnpickler below
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.lib import format as npy_format

from dataset_stream.errors import SourceError, UnsafePickleError

#: ``(module, name)`` of every global a pickle may name: what numpy arrays and dtypes pickle
#: to (``_reconstruct`` under its numpy 1 and numpy 2 module names) and the bytes decoder a
#: Python 2 pickle read with ``encoding="latin1"`` uses for array buffers.
ALLOWED_GLOBALS: Final = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only {allowed} are allowed"
            )
        if module == "numpy.core.multiarray":  # the numpy 1 name of the same function
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``encoding="latin1"``).

    :class:`UnsafePickleError` for a forbidden global, :class:`SourceError` for a broken pickle.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as exc:
        raise SourceError(f"not a readable pickle of numpy arrays: {exc}") from exc


def load_npy_object(path: str | Path) -> Any:
    """The object stored by ``np.save(path, obj)`` (a 0-d object array), read safely."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(fh)
            else:
                raise SourceError(f"{path}: unsupported .npy version {version}")
            payload = fh.read()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    except ValueError as exc:
        raise SourceError(f"{path} is not a .npy file: {exc}") from exc
    if shape != () or dtype != np.dtype(object):
        raise SourceError(f"{path}: expected one pickled object, found {dtype} {list(shape)}")
    try:
        return restricted_loads(payload)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from exc


__all__ = [
    "ALLOWED_GLOBALS",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "load_npy_object",
    "restricted_loads",
]
