"""The application layer: what the commands do, composed from the layers below.

- :class:`Up` / :class:`UpConfig` (:mod:`device.app.up`): ``vega-emu up``, an embedded broker, a
  monitor (and run recorder), a fleet and a stream in one process, ending in a run summary;
- :class:`EnergyReport` (:mod:`device.app.energy`): ``vega-emu energy``, a learning event, an
  inference and a lifetime as one typed value (its ``--json`` output is
  :meth:`EnergyReport.to_json`);
- :func:`load_model` (:mod:`device.app.models`): a bundle directory or the cached default model,
  which is trained on the producer's factory split, so it is composed here.

The command line (:mod:`device.cli`) parses flags into these values, calls them and prints; it
holds no composition of its own. Modules here import their heavy dependencies where they are
used, so importing the package stays cheap.
"""

from device.app.energy import EnergyReport
from device.app.models import load_model
from device.app.up import LANDING_TIMEOUT_S, Up, UpConfig

__all__ = ["LANDING_TIMEOUT_S", "EnergyReport", "Up", "UpConfig", "load_model"]
