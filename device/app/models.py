"""Which model a run uses: a bundle directory, or the cached default digits model.

The default model is trained on the factory split of the bundled digits data, which lives on the
producer side (:func:`dataset_stream.scenarios.factory_split`); the model layer does not import
the producer, so the two meet here.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from device.model.bundle import ModelBundle


def load_model(
    path: Path | None, *, seed: int = 0, announce: Callable[[str], None] | None = None
) -> ModelBundle:
    """The bundle at ``path``, or the cached default model for ``seed`` (built on first use,
    about 10 s; ``announce`` is told before a build). Raises
    :class:`~device.model.errors.ModelError` for a bundle that cannot be loaded."""
    from dataset_stream.scenarios import factory_split
    from device.model.bundle import ModelBundle
    from device.model.default import load_default

    if path is not None:
        return ModelBundle.load(path)
    factory = partial(factory_split, "digits", "nic", seed)
    return load_default(seed, factory=factory, announce=announce)


__all__ = ["load_model"]
