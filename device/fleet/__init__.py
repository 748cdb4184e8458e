"""Many nodes: what a fleet is made of, how it is cut into worker processes, who keeps them up.

- :class:`FleetSpec` (:class:`DeviceClass` per kind of device, :class:`Member` per node): the
  fleet as data, read once from a TOML file or the command line;
- :class:`Fleet`: many nodes in one process sharing one model and one onnxruntime session;
- :class:`ShardPlan` and :func:`run_shard`: one worker process (``python -m device.fleet.shard``)
  running a shard of the fleet;
- :class:`FleetSupervisor`: the parent process that starts the workers and restarts one that
  dies;
- :class:`Gateway`: one MQTT connection for all the nodes of a worker (``--connection shared``).

The spec and the errors are imported with the package; the rest on first use (PEP 562): the
stream reads a fleet spec without loading the nodes, MQTT and onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from device.fleet.errors import FleetError, FleetSpecError
from device.fleet.spec import DeviceClass, FleetSpec, Member

if TYPE_CHECKING:
    from device.fleet.fleet import Fleet
    from device.fleet.gateway import Gateway
    from device.fleet.shard import EXIT_CONFIG, ShardPlan, run_shard
    from device.fleet.supervisor import FleetSupervisor, Worker

#: Names imported on first use, and the module that defines each.
_LAZY: Final = {
    "EXIT_CONFIG": "device.fleet.shard",
    "Fleet": "device.fleet.fleet",
    "FleetSupervisor": "device.fleet.supervisor",
    "Gateway": "device.fleet.gateway",
    "ShardPlan": "device.fleet.shard",
    "Worker": "device.fleet.supervisor",
    "run_shard": "device.fleet.shard",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "EXIT_CONFIG",
    "DeviceClass",
    "Fleet",
    "FleetError",
    "FleetSpec",
    "FleetSpecError",
    "FleetSupervisor",
    "Gateway",
    "Member",
    "ShardPlan",
    "Worker",
    "run_shard",
]
