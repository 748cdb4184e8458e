"""``vega-emu ctl`` on a secured Mosquitto (passwords, the generated ACL, client ids bound to
users): the ``operator`` user sets a desired state and reads the device's answer; a device
answers under its own login; the ``stream`` user cannot write a desired state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt

from broker import Mosquitto, MosquittoConfig
from dataset_stream.protocol import DesiredState, ReportedState, fleet_ids, read_desired
from device.aio import cancel_and_wait
from tests.support.cli import Command
from tests.support.mosquitto import require_mosquitto

IDS = fleet_ids(2)
USERS = {IDS[0]: "d0", IDS[1]: "d1", "operator": "po", "stream": "ps", "monitor": "pm"}
SETTINGS = {"lr_bits": 8, "lr_size": 1500, "learning_rate": 0.01, "epochs": 4, "mb_size": 128}


async def test_the_operator_sets_and_a_device_answers_on_a_secured_broker(tmp_path: Path) -> None:
    require_mosquitto()
    users = tmp_path / "users.txt"
    users.write_text("".join(f"{u}:{p}\n" for u, p in USERS.items()))
    users.chmod(0o600)
    config = MosquittoConfig(data_dir=tmp_path / "mq", password_file=users, acl_devices=IDS)
    async with Mosquitto(config) as broker:
        url = broker.url
        device = url.with_credentials(IDS[0], USERS[IDS[0]])
        async with aiomqtt.Client(**device.client_kwargs()) as node:
            await node.subscribe(f"vega/{IDS[0]}/desired", qos=1)

            async def answer() -> None:
                async for message in node.messages:
                    state = read_desired("vega", message.topic.value, message.payload)
                    settings = {**SETTINGS, **state.settings}
                    reported = ReportedState(IDS[0], state.version, settings)
                    await node.publish(f"vega/{IDS[0]}/reported", reported.to_json(), 1, True)

            task = asyncio.create_task(answer())
            password = tmp_path / "operator.pw"
            password.write_text(USERS["operator"] + "\n")
            operator = f"mqtt://operator@{url.host}:{url.port}"
            args = ["ctl", "set", IDS[0], "lr_bits=6", "--wait", "--timeout", "20"]
            try:
                async with Command(
                    [*args, "--broker", operator, "--password-file", str(password)]
                ) as cmd:
                    await cmd.ended_within(60)
            finally:
                await cancel_and_wait(task)  # a plain cancel can be swallowed (gh-86296)
        assert cmd.returncode == 0, cmd.stderr
        assert "1 converged, 0 refused, 0 did not answer" in cmd.stderr

        # the stream's login cannot write a desired state: Mosquitto drops it silently
        stream = url.with_credentials("stream", USERS["stream"])
        async with aiomqtt.Client(**stream.client_kwargs()) as c:
            forged = DesiredState(IDS[0], 99, {"lr_bits": 4}).to_json()
            await c.publish(f"vega/{IDS[0]}/desired", forged, qos=1, retain=True)
        monitor = url.with_credentials("monitor", USERS["monitor"])
        async with aiomqtt.Client(**monitor.client_kwargs()) as c:
            await c.subscribe(f"vega/{IDS[0]}/desired", qos=1)
            async with asyncio.timeout(10):
                message = await anext(aiter(c.messages))
        kept = read_desired("vega", message.topic.value, message.payload)
        assert (kept.version, dict(kept.settings), kept.by) == (1, {"lr_bits": 6}, "ctl")
