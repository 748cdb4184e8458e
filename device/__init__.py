"""Everything that runs on or for an emulated VEGA device, in layers; each imports only the ones
below it (``tests/cli/test_layers.py`` checks it; ``docs/architecture.md`` draws it):

- :mod:`device.cli`: the ``vega-emu`` command line (typer + rich): parse, call, print;
- :mod:`device.observe`: watching a fleet through the broker: monitor, delivery accounting,
  Prometheus exporter, recorder, report, run summary;
- :mod:`device.fleet`: many nodes: fleet spec, worker shards, their supervisor, the shared
  connection (gateway);
- :mod:`device.node`: one node on MQTT: its session, the engine, settings, the SQLite store;
- :mod:`device.energy` and :mod:`device.model`: what a node's work costs (hardware profiles,
  battery, lifetime) and the model bundles it runs;
- :mod:`device.learning`: the numeric core, no I/O: nn, latent replays, AR1* plan, learner,
  inference and prequential scoring;
- base modules every layer may use: :mod:`device.errors` (the exception tree), :mod:`device.aio`
  and :mod:`device.private`.

This package imports only its exception root: importing any layer stays as light as that layer.
"""

from device.errors import DeviceError, NodeError, NodeGaveUp

__all__ = ["DeviceError", "NodeError", "NodeGaveUp"]
