"""How a fleet is split over worker processes: one :class:`ShardPlan` per worker.

Deciding the shards is done once, before any worker starts: every class's model is resolved (the
default one built here, once, not by every worker at the same time), every class's settings are
checked (a bad class fails here, not in each worker), and the fleet's members are cut into
contiguous id ranges (:func:`device.fleet.spec.shard`). The plans carry no password: the
supervisor hands it to the workers in their environment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from device.fleet.shard import ShardPlan
from device.fleet.spec import FleetSpec, shard

if TYPE_CHECKING:
    from broker.url import BrokerURL
    from device.model.bundle import ModelBundle

#: Gives the bundle of a class's ``model`` (``None``: the default model).
ModelLoader: TypeAlias = Callable[[Path | None], "ModelBundle"]


def shard_plans(
    spec: FleetSpec,
    workers: int,
    *,
    load_model: ModelLoader,
    broker: BrokerURL,
    state_dir: Path,
    topic_prefix: str,
    seed: int,
    hold_s: float,
    give_up_s: float,
    threads: int = 1,
    shared: bool = False,
    availability_speed: float | None = None,
) -> list[ShardPlan]:
    """One plan per worker (at most ``workers``): contiguous id ranges, every model resolved to
    an absolute bundle path by ``load_model``, every class's settings checked (``ValueError``).

    ``threads``: threads per worker that run learning events; ``shared``: one MQTT connection
    per worker for all its nodes (a gateway) instead of one per node. Each device's drawn values
    are checked with its settings, and its offline windows (:meth:`FleetSpec.offline_windows`)
    go to its worker, followed at ``availability_speed`` simulated seconds per wall second
    (None: the spec's ``[availability] speed``), as do its injected faults (docs/faults.md).
    """
    resolved = []
    bundles = {}
    for c in spec.classes:
        bundles[c.name] = bundle = load_model(c.model)
        c.settings("check", state_dir, bundle)  # a bad class fails here, not in every worker
        resolved.append(replace(c, model=bundle.path.resolve()))
    classes = tuple(resolved)
    members = replace(spec, classes=classes).members()
    for m in members:  # every device's drawn values, as its node will take them
        c = m.device_class
        if c.vary:
            c.for_device(spec.seed, m.device_id).settings(m.device_id, state_dir, bundles[c.name])
    windows = spec.offline_windows()
    faults = spec.faults.by_device([(m.device_id, m.device_class.name) for m in members])
    speed = spec.availability.speed if availability_speed is None else availability_speed
    no_password = broker.with_credentials(broker.username, None)
    return [
        ShardPlan(
            worker=w,
            broker=str(no_password),
            ca_file=str(broker.ca_file) if broker.ca_file is not None else None,
            state_dir=state_dir,
            devices=tuple((m.device_id, m.device_class.name) for m in part),
            classes=classes,
            topic_prefix=topic_prefix,
            seed=seed,
            hold_s=hold_s,
            give_up_s=give_up_s,
            threads=threads,
            shared=shared,
            spec_seed=spec.seed,
            offline=tuple((d, windows[d]) for d in (m.device_id for m in part) if d in windows),
            availability_speed=speed,
            faults=tuple((d, faults[d].specs) for d in (m.device_id for m in part) if d in faults),
        )
        for w, part in enumerate(shard(members, workers))
    ]


__all__ = ["ModelLoader", "shard_plans"]
