"""The root of every error the :mod:`device` package raises on purpose, and the whole tree.

Each layer defines its errors in its own ``errors.py`` (named in brackets) and derives them from
:class:`DeviceError`; outside errors (SQLite, onnxruntime, TOML, sockets, MQTT) are converted
where they enter, with ``raise ... from exc``::

    DeviceError                          catch this to catch any of the below
    ├── ReplayError                      latent replays (device.learning.replay.errors)
    │   ├── QuantizationError (ValueError)   bad latents, codes or bit width
    │   ├── ReplayConfigError (ValueError)   the replay memory (device.node.store.errors) was
    │   │                                    made with another capacity, bit width or shape
    │   ├── ReplayStateError                 the memory misused, or its table inconsistent
    │   └── ReplayStorageError               SQLite could not read or write the replay table
    ├── EnergyError                      profiles, costs, battery (device.energy.errors)
    │   ├── ProfileError (ValueError)        a hardware profile missing, unreadable or invalid
    │   │   ├── ChemistryError               a battery chemistry profile invalid or unsourced
    │   │   └── RadioError                   a radio profile invalid or unsourced
    │   ├── CostConfigError (ValueError)     a cost configuration that makes no sense
    │   ├── BatteryStateError (ValueError)   a saved battery or lifetime state that is unusable
    │   ├── TraceError (ValueError)          an irradiance/temperature trace or harvest source
    │   └── PolicyError (ValueError)         an energy-aware learning policy that cannot be parsed
    ├── ModelError                       model bundles and tools (device.model.errors)
    │   ├── BundleError                      a bundle directory, file or key missing or wrong
    │   ├── UnsupportedModelError            an ONNX operator or attribute the tools cannot use
    │   ├── ModelInputError (ValueError)     frozen-stage input of the wrong shape or dtype
    │   ├── DataMismatchError (ValueError)   a model run on data of other classes or shape
    │   └── ExportError                      building, quantizing or running an ONNX model failed
    ├── NodeError                        the node, or a gateway for its nodes, cannot go on (here)
    │   └── NodeGaveUp                       the broker refused it for good (password, host, ...)
    ├── StoreError                       the node's SQLite state (device.node.store.errors)
    │   ├── ModelMismatchError               the state file belongs to another model or device
    │   └── StoreCorruptError                not a vega-emu state file, or bad values in it
    ├── FleetError                       a fleet worker failed for good (device.fleet.errors)
    │   └── FleetSpecError (ValueError)      a fleet spec that cannot be used
    │       └── DistributionError                a distribution table that cannot be drawn from
    ├── ObserveError                     the observers of a fleet (device.observe.errors)
    │   ├── MonitorError                     the monitor's first connection to the broker failed
    │   ├── ExporterError                    the Prometheus metrics server could not listen
    │   └── RecordError                      a recording cannot be created, written or read
    │       ├── NotARecording                    the file is not a vega-emu recording
    │       └── UnsupportedRecording             a recording format this version cannot read
    └── OperatorError                    ctl and rollout on a running fleet (device.app.errors)
        ├── HaltRuleError (ValueError)       a rollout's halt rule that does not parse
        ├── SettingError (ValueError)        a key=value that is no desired setting, or bad
        ├── LinkError                        the broker unreachable, or the connection lost
        └── RolloutError                     a rollout that cannot start

:class:`NodeError` and :class:`NodeGaveUp` live here, not in :mod:`device.node`, because both a
node on its own session and a :class:`~device.fleet.gateway.Gateway` (one session for many
nodes) raise them. This module imports nothing, so every layer can derive from it.

An injected crash or brown-out raises :class:`device.node.errors.DeviceRestart`, a
``BaseException`` on purpose (it must pass every ``except Exception`` up to the node's
supervisor). The other packages have roots of their own:
:class:`dataset_stream.DatasetStreamError` and :class:`broker.BrokerError`; the command line
turns any of the three into a one-line error.
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base class of every error raised on purpose by :mod:`device`."""


class NodeError(DeviceError):
    """The node could not handle a message or keep its loop running."""


class NodeGaveUp(NodeError):
    """The broker refused the node for longer than its ``give_up_s``: retrying cannot help."""


__all__ = ["DeviceError", "NodeError", "NodeGaveUp"]
