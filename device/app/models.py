"""Which model a run uses: a bundle directory, or the cached default digits model.

The default model is trained on the factory split of the bundled digits data, which lives on the
producer side (:func:`dataset_stream.scenarios.factory_split`); the model layer does not import
the producer, so the two meet here. For the same reason its *benchmark* -- the scenario ``up``
streams to it, whose events set how many new samples one learning event trains -- is known here:
``vega-emu energy --model default`` costs the events ``up`` sends, not the paper's 300 images.

``default`` (:data:`DEFAULT_MODEL`) names the default bundle wherever a model is given; a bundle
directory of that name is reached by its absolute path. With the ``watch`` data set
(:data:`WATCH_DATASET`) the default bundle is the watch model (:mod:`device.model.watch`),
trained on the factory classes of that data set's training subjects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

    from dataset_stream import Scenario
    from device.model.bundle import ModelBundle

#: The name of the default bundle wherever a model is taken (``--model default``).
DEFAULT_MODEL: Final = "default"
#: The data source and scenario the default model is trained for (its factory split) and that
#: ``vega-emu up`` streams by default.
DEFAULT_DATASET: Final = "digits"
DEFAULT_SCENARIO: Final = "nic"
#: The data set whose default bundle is the watch 1-D CNN, not the digits CNN.
WATCH_DATASET: Final = "watch"


def is_default(path: Path | str | None) -> bool:
    """Whether ``path`` names the default bundle: no path, or exactly ``default``."""
    return path is None or str(path) == DEFAULT_MODEL


def is_default_bundle(path: Path | str | None, *, seed: int = 0) -> bool:
    """Whether ``path`` is the default bundle for ``seed``: named (:func:`is_default`) or
    given by its cache directory."""
    from device.model.default import default_cache_dir

    if path is None or is_default(path):
        return True
    return Path(path).resolve() == default_cache_dir(seed).resolve()


def load_model(
    path: Path | str | None,
    *,
    seed: int = 0,
    announce: Callable[[str], None] | None = None,
    dataset: str = DEFAULT_DATASET,
) -> ModelBundle:
    """The bundle at ``path``, or the cached default model for ``seed`` when ``path`` is None
    or ``default`` (built on first use, about 10 s; ``announce`` is told before a build): the
    watch model when ``dataset`` is ``watch``, else the digits one.
    Raises :class:`~device.model.errors.ModelError` for a bundle that cannot be loaded."""
    from dataset_stream.scenarios import factory_split
    from device.model.bundle import ModelBundle
    from device.model.default import load_default

    if path is not None and not is_default(path):
        return ModelBundle.load(Path(path))
    if dataset == WATCH_DATASET:
        return load_watch_default(seed, announce=announce)
    factory = partial(factory_split, DEFAULT_DATASET, DEFAULT_SCENARIO, seed)
    return load_default(seed, factory=factory, announce=announce)


def load_watch_default(
    seed: int = 0, *, announce: Callable[[str], None] | None = None
) -> ModelBundle:
    """The cached watch model for ``seed``, trained on first use on the factory classes of the
    watch training subjects (the ``nc`` factory batch: the same classes as ``nic``'s)."""
    from dataset_stream.scenarios import factory_split
    from device.model.watch import load_watch_model

    factory = partial(factory_split, WATCH_DATASET, "nc", seed)
    return load_watch_model(seed, factory=factory, announce=announce)


def _is_watch_bundle(path: Path) -> bool:
    """Whether the bundle at ``path`` is a watch model (by the name in its manifest)."""
    import tomllib

    from device.model.bundle import MANIFEST
    from device.model.watch import WATCH_NAME

    try:
        with (path / MANIFEST).open("rb") as fh:
            return bool(tomllib.load(fh).get("name") == WATCH_NAME)
    except (OSError, tomllib.TOMLDecodeError):
        return False


@dataclass(frozen=True, slots=True)
class Benchmark:
    """The scenario a model is run on: ``events`` learning events of ``samples`` new samples
    in all (every device gets the same events, each in its own order)."""

    dataset: str
    scenario: str
    seed: int
    events: int
    samples: int

    def __post_init__(self) -> None:
        if self.events < 1 or self.samples < self.events:
            raise ValueError(f"a benchmark needs events >= 1 of >= 1 sample, got {self!r}")

    @classmethod
    def of(cls, scenario: Scenario) -> Benchmark:
        """The events of ``scenario`` (its blocks, chunked as they are streamed)."""
        sizes = [len(chunk) for block in scenario.blocks for chunk in block]
        return cls(scenario.source, scenario.name, scenario.seed, len(sizes), sum(sizes))

    @property
    def mean_new_per_event(self) -> float:
        """New samples one learning event trains, on average over the scenario."""
        return self.samples / self.events

    @property
    def new_per_event(self) -> int:
        """:attr:`mean_new_per_event` rounded, as a cost configuration takes it."""
        return max(1, round(self.mean_new_per_event))

    def describe(self) -> str:
        return (
            f"{self.dataset}/{self.scenario} seed {self.seed}: {self.events} events, "
            f"{self.mean_new_per_event:.1f} new samples each on average"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "scenario": self.scenario,
            "seed": self.seed,
            "events": self.events,
            "samples": self.samples,
            "mean_new_per_event": self.mean_new_per_event,
        }


def benchmark_of(path: Path | str | None, *, seed: int = 0) -> Benchmark | None:
    """The scenario the model at ``path`` is run on, None when it is not known.

    The default model (``path`` None or ``default``) is trained on the factory split of the
    digits ``nic`` scenario for ``seed`` and ``vega-emu up`` streams that scenario's events to
    it (also when ``path`` is its cache directory); a watch model's (a bundle named
    ``watch-cnn1d-v1``, cached or built by ``model build-default --dataset watch``) is the
    watch ``nic`` scenario; another bundle directory names no scenario, so its benchmark is
    not known.
    """
    from dataset_stream.scenarios import build_scenario

    if path is not None and not is_default(path) and _is_watch_bundle(Path(path)):
        return Benchmark.of(build_scenario(WATCH_DATASET, DEFAULT_SCENARIO, seed=seed))
    if not is_default_bundle(path, seed=seed):
        return None
    return Benchmark.of(build_scenario(DEFAULT_DATASET, DEFAULT_SCENARIO, seed=seed))


__all__ = [
    "DEFAULT_DATASET",
    "DEFAULT_MODEL",
    "DEFAULT_SCENARIO",
    "WATCH_DATASET",
    "Benchmark",
    "benchmark_of",
    "is_default",
    "is_default_bundle",
    "load_model",
    "load_watch_default",
]
