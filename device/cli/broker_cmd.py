"""``vega-emu broker``: run an MQTT broker in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from device.cli._logs import configure_logging
from device.cli._runtime import console, fail, run_async

if TYPE_CHECKING:
    from broker.mosquitto import Mosquitto, MosquittoTLS


class Engine(StrEnum):
    embedded = "embedded"
    mosquitto = "mosquitto"


def broker(
    engine: Annotated[
        Engine, typer.Option(help="embedded: amqtt in this process; mosquitto: a child process")
    ] = Engine.embedded,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            help="TCP port: default 1883, 8883 with --tls-cert; 0 picks a free one.",
            min=0,
            max=65535,
            show_default=False,
        ),
    ] = None,
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
            "plus the 'stream' and 'monitor' users (and every stream-* or monitor-* user of "
            "--passwords), and a gateway role for every gw-{first}-{count} user of --passwords "
            "(a fleet worker's shared connection: its count devices from first on)."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="Mosquitto: server certificate (PEM); the listener then speaks TLS only "
            "(mqtts://). Needs --tls-key."
        ),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="Mosquitto: private key of --tls-cert (PEM).")
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            help="Mosquitto: CA certificate (PEM) that signed --tls-cert; clients trust it "
            "(VEGA_EMU_MQTT_CA_FILE). Default: a public CA, in the clients' system store."
        ),
    ] = None,
    tls_require_client_cert: Annotated[
        bool,
        typer.Option(
            "--tls-require-client-cert",
            help="Mosquitto: mutual TLS, every client shows a certificate signed by --tls-ca.",
        ),
    ] = False,
) -> None:
    """Run an MQTT broker until SIGINT or SIGTERM (exit status 0)."""
    from broker import BrokerError, EmbeddedBroker, Mosquitto, MosquittoConfig

    tls_options = (tls_cert, tls_key, tls_ca, tls_require_client_cert)
    if engine is Engine.embedded and (passwords or acl_devices or data_dir or any(tls_options)):
        raise fail(
            "--passwords, --acl-devices, --data-dir and --tls-* need --engine mosquitto "
            "(the embedded broker is for local, anonymous use)",
            code=2,
        )
    if passwords is not None and not passwords.is_file():
        raise fail(f"--passwords {passwords}: no such file", code=2)
    try:
        devices = _device_ids(acl_devices) if acl_devices is not None else None
    except BrokerError as exc:  # a bad id in the file
        raise fail(f"--acl-devices {acl_devices}: {exc}", code=2) from exc
    tls = _tls(*tls_options) if any(tls_options) else None
    if port is None:
        port = 8883 if tls is not None else 1883
    configure_logging(logging.WARNING, console)

    running: list[Mosquitto] = []  # the child a stop at once must not leave behind

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
                tls=tls,
            )
            async with Mosquitto(config) as m:
                running.append(m)
                _announce(str(m.url), f"mosquitto, data in {config.data_dir}")
                if tls is not None and tls.ca_file is not None:
                    console.print(f"clients trust the CA: VEGA_EMU_MQTT_CA_FILE={tls.ca_file}")
                await stop.wait()

    try:
        run_async(main, on_force=lambda: _kill(running))
    except BrokerError as exc:
        raise fail(str(exc)) from exc
    console.print("broker stopped")


def _kill(running: list[Mosquitto]) -> None:
    """Kill the Mosquitto child now: the command is ending at once (a second signal)."""
    for broker in running:
        with contextlib.suppress(ProcessLookupError, RuntimeError):
            os.kill(broker.pid, signal.SIGKILL)


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


def _tls(
    cert: Path | None, key: Path | None, ca: Path | None, require_client_cert: bool
) -> MosquittoTLS:
    """The TLS listener of the options, each file checked here with the option's name."""
    from broker.mosquitto import MosquittoTLS

    if cert is None or key is None:
        raise fail("a TLS listener needs both --tls-cert and --tls-key", code=2)
    if require_client_cert and ca is None:
        raise fail(
            "--tls-require-client-cert needs --tls-ca (the CA of client certificates)", code=2
        )
    for option, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)):
        if path is not None and not path.is_file():
            raise fail(f"{option} {path}: no such file", code=2)
    return MosquittoTLS(cert, key, ca, require_certificate=require_client_cert)


def register(app: typer.Typer) -> None:
    app.command("broker")(broker)
