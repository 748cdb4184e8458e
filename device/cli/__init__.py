"""The ``vega-emu`` command line.

This package is the composition root of the project: it is the one place that wires the producer
side (:mod:`dataset_stream`), the brokers (:mod:`broker`) and the nodes (:mod:`device`) together.
Sub-command modules import their heavy dependencies inside the command functions so that
``vega-emu --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from device.cli import (
    bridge_cmd,
    broker_cmd,
    ctl_cmd,
    energy_cmd,
    fleet_cmd,
    model_cmd,
    monitor_cmd,
    node_cmd,
    report_cmd,
    rollout_cmd,
    stream_cmd,
    up_cmd,
)
from device.cli._help import CommandsInOrder, show_version

app = typer.Typer(
    name="vega-emu",
    cls=CommandsInOrder,
    help=(
        "Emulate fleets of VEGA continual-learning nodes: MQTT brokers, data streams, INT8 frozen "
        "stages with quantized latent replays, energy and lifetime."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Emulate fleets of VEGA continual-learning nodes."""


broker_cmd.register(app)
model_cmd.register(app)
energy_cmd.register(app)
stream_cmd.register(app)
node_cmd.register(app)
monitor_cmd.register(app)
fleet_cmd.register(app)
up_cmd.register(app)
report_cmd.register(app)
bridge_cmd.register(app)
ctl_cmd.register(app)
rollout_cmd.register(app)


def main() -> None:
    """Run the command line; an error of the project's own trees is one line and exit status 1.

    Commands turn the errors they expect into messages themselves; this is the net under them,
    so that no project error ever reaches the user as a traceback.
    """
    from broker.errors import BrokerError
    from dataset_stream.errors import DatasetStreamError
    from device.cli._runtime import fail
    from device.errors import DeviceError

    try:
        app()
    except (DeviceError, DatasetStreamError, BrokerError) as exc:
        raise SystemExit(fail(str(exc)).exit_code) from exc


__all__ = ["app", "main"]
