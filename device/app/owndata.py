"""The user's own data and model: train a factory model on a data set, and run a model on the
scenario of the data it was built for.

``vega-emu model build`` trains on the factory batch of the data's ``nc`` scenario -- the
factory classes from every training session (the test sessions are never used) -- and the
bundle records those classes (``factory_classes``) and every class's name (``class_names``).
``stream``, ``up`` and a fleet spec's streams with that ``--model`` build their scenario with
the recorded factory classes (:func:`scenario_for`), so the classes the events teach are the
ones the model was not trained on, whatever ``--seed`` picks; a model whose class names are not
the data's, or whose input is another sample shape, is refused with both named
(:class:`~device.model.errors.DataMismatchError`). A model that records no factory classes
(``model split``, ``mobilenet-v1``) gets the seed's random pick, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataset_stream import Dataset, Scenario
    from device.model.bundle import ModelBundle

__all__ = ["BuiltModel", "build_own_model", "factory_class_ids", "scenario_for"]


@dataclass(frozen=True, slots=True)
class BuiltModel:
    """What ``model build`` made: the bundle, the data set it was trained on (the spec
    ``stream --dataset`` and ``up --dataset`` take), its architecture, the factory classes by
    name and how many samples they held."""

    bundle: ModelBundle
    dataset: str
    arch: str
    factory_classes: tuple[str, ...]
    samples: int


def factory_class_ids(tokens: Sequence[str], classes: Sequence[str]) -> tuple[int, ...]:
    """The label indices of ``tokens``, each a class name of ``classes`` or a label index;
    :class:`ValueError` naming a token that is neither, or one given twice."""
    ids = []
    for token in tokens:
        if token in classes:
            ids.append(list(classes).index(token))
        elif token.isdigit() and int(token) < len(classes):
            ids.append(int(token))
        else:
            raise ValueError(f"{token!r} is not one of the classes {', '.join(classes)}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"a class is named twice in {', '.join(tokens)}")
    return tuple(ids)


def build_own_model(
    dataset: str,
    out: Path,
    *,
    arch: str | None = None,
    factory_classes: Sequence[str] | None = None,
    seed: int = 0,
    epochs: int | None = None,
    name: str = "own-model",
) -> BuiltModel:
    """Train a factory model on ``dataset`` (a source spec) and write its bundle into ``out``.

    ``factory_classes`` (names or label indices) are the classes it is trained on, by default
    the ``seed``'s pick of 30 % of them, as ``build_scenario`` makes it; ``arch`` defaults to
    the one for the data's sample shape (:func:`device.model.build.arch_for`). Raises the
    source's :class:`~dataset_stream.errors.SourceError` for bad data, ``ValueError`` for an
    unknown factory class, :class:`~device.model.errors.ModelError` for a model that cannot be
    built on it.
    """
    from dataset_stream import build_scenario, load_source
    from device.model.build import BuildConfig, arch_for, build_model

    data = load_source(dataset)  # data seed 0, as build_scenario loads it for stream and up
    ids = None if factory_classes is None else factory_class_ids(factory_classes, data.classes)
    plan = build_scenario(data, "nc", seed=seed, factory_class_ids=ids)
    x, y = plan.factory
    config = BuildConfig(
        arch=arch or arch_for(data.sample_shape),
        class_names=data.classes,
        name=name,
        data=dataset,
        seed=seed,
        epochs=epochs,
    )
    bundle = build_model(x, y, out, config)
    chosen = tuple(data.classes[int(c)] for c in sorted(set(y.tolist())))
    return BuiltModel(bundle, dataset, config.arch, chosen, len(y))


def scenario_for(
    dataset: str | Dataset, scenario: str, *, seed: int, bundle: ModelBundle | None
) -> Scenario:
    """``build_scenario(dataset, scenario, seed=seed)`` for a run of ``bundle``: with the
    factory classes it records, after checking its class names and sample shape against the
    data's (see the module docstring). ``bundle`` None: the scenario as the seed makes it."""
    from dataset_stream import build_scenario, load_source
    from device.model.errors import DataMismatchError

    data = load_source(dataset) if isinstance(dataset, str) else dataset
    if bundle is None:
        return build_scenario(data, scenario, seed=seed)
    names = bundle.meta.get("class_names")
    if isinstance(names, list) and tuple(str(n) for n in names) != data.classes:
        raise DataMismatchError(
            f"model {bundle.path} was built for the classes {', '.join(map(str, names))}; "
            f"dataset {data.name} has {', '.join(data.classes)}: pass the data it was built on, "
            "or build a model for this data (vega-emu model build)"
        )
    if data.sample_shape != bundle.input_shape:
        raise DataMismatchError(
            f"dataset {data.name} gives samples of shape {data.sample_shape}, the model takes "
            f"{bundle.input_shape}: pass a matching --model"
        )
    recorded = bundle.meta.get("factory_classes")
    ids = [int(c) for c in recorded] if isinstance(recorded, list) and recorded else None
    return build_scenario(data, scenario, seed=seed, factory_class_ids=ids)
