"""``vega-emu broker``: run an MQTT broker in the foreground."""

from __future__ import annotations

import asyncio
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from device.cli._runtime import console, fail, run_async


class Engine(StrEnum):
    embedded = "embedded"
    mosquitto = "mosquitto"


def broker(
    engine: Annotated[
        Engine, typer.Option(help="embedded: amqtt in this process; mosquitto: a child process")
    ] = Engine.embedded,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="TCP port (0 picks a free one).", min=0, max=65535)
    ] = 1883,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Mosquitto: directory for config, persistence and log (default: temp)."),
    ] = None,
    passwords: Annotated[
        Path | None,
        typer.Option(
            help="Mosquitto: password file, lines 'user:password' or mosquitto_passwd hashes; "
            "anonymous clients are then refused."
        ),
    ] = None,
    acl_devices: Annotated[
        str | None,
        typer.Option(
            help="Mosquitto: ACL for N fleet devices (node-0000..) or a file of device ids, "
            "plus the 'stream' and 'monitor' users."
        ),
    ] = None,
) -> None:
    """Run an MQTT broker until SIGINT or SIGTERM (exit status 0)."""
    from broker import BrokerError, EmbeddedBroker, Mosquitto, MosquittoConfig

    if engine is Engine.embedded and (passwords or acl_devices or data_dir):
        raise fail(
            "--passwords, --acl-devices and --data-dir need --engine mosquitto "
            "(the embedded broker is for local, anonymous use)",
            code=2,
        )
    devices = _device_ids(acl_devices) if acl_devices is not None else None

    async def main(stop: asyncio.Event) -> None:
        if engine is Engine.embedded:
            async with EmbeddedBroker(host=host, port=port) as b:
                _announce(str(b.url), "embedded")
                await stop.wait()
            return
        with tempfile.TemporaryDirectory(prefix="vega-emu-mosquitto-") as tmp:
            config = MosquittoConfig(
                data_dir=data_dir or Path(tmp),
                host=host,
                port=port,
                password_file=passwords,
                acl_devices=devices,
            )
            async with Mosquitto(config) as m:
                _announce(str(m.url), f"mosquitto, data in {config.data_dir}")
                await stop.wait()

    try:
        run_async(main)
    except BrokerError as exc:
        raise fail(str(exc)) from exc
    console.print("broker stopped")


def _announce(url: str, what: str) -> None:
    print(url, flush=True)
    console.print(f"[green]broker ready[/] ({what}); stop with Ctrl-C or SIGTERM")


def _device_ids(value: str) -> tuple[str, ...]:
    from broker.acl import read_device_ids
    from dataset_stream.protocol import fleet_ids

    if value.isdigit():
        return tuple(fleet_ids(int(value)))
    path = Path(value)
    if not path.is_file():
        raise fail(f"--acl-devices {value!r} is neither a device count nor a file", code=2)
    return tuple(read_device_ids(path))


def register(app: typer.Typer) -> None:
    app.command("broker")(broker)
