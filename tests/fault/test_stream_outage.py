"""The stream through a broker outage: Mosquitto (with persistence) is stopped mid-run and started
again on the same port and data directory; the stream must reconnect and finish, every seq
published and answered exactly once. Each test is bounded (``asyncio.timeout``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from broker import Mosquitto, MosquittoConfig
from broker.url import BrokerURL
from dataset_stream import PublishError, StreamPublisher, build_scenario
from dataset_stream.outstanding import ResendPolicy
from dataset_stream.reconnect import ReconnectPolicy
from dataset_stream.scenarios import Scenario
from tests.support.echo import EchoDevice
from tests.support.messages import telemetry
from tests.support.mosquitto import require_mosquitto
from tests.support.times import T0
from tests.support.wait import wait_until

pytestmark = pytest.mark.fault

FAST = ReconnectPolicy(initial_s=0.05, cap_s=0.5, max_outage_s=20.0)


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return build_scenario("digits", "nic", seed=0)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """A Mosquitto with persistence the test may stop and start again (same port, same data)."""
    require_mosquitto()
    mosquitto = Mosquitto(MosquittoConfig(data_dir=tmp_path / "mosquitto", persistence=True))
    await mosquitto.start()
    try:
        yield mosquitto
    finally:
        await mosquitto.stop()


class Sent:
    """An ``on_progress`` callback: ``await sent.reached(run)`` returns once ``count`` batches
    are out (or ``run`` ended)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._event = asyncio.Event()

    def __call__(self, sent: int, answered: int) -> None:
        if sent >= self.count:
            self._event.set()

    async def reached(self, run: asyncio.Task[object]) -> None:
        waiter = asyncio.ensure_future(self._event.wait())
        await asyncio.wait({waiter, run}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if run.done():
            run.result()  # raise what ended it
            raise AssertionError("the stream ended before the outage")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("speed", [300.0, None], ids=["paced", "closed-loop"])
async def test_stream_survives_a_broker_restart(
    broker: Mosquitto, scenario: Scenario, speed: float | None
) -> None:
    url = broker.url
    device = EchoDevice(url, "node-0000", delay_s=0.0 if speed else 0.08)
    events = 30
    async with asyncio.timeout(30):
        node = asyncio.create_task(device.run())
        try:
            await device.ready.wait()
            async with StreamPublisher(
                url,
                scenario,
                [device.device],
                speed=speed,  # paced: 60 s cadence at 300x, one event every 0.2 s
                events=events,
                t0=T0,
                wait_for_answers=True,
                reconnect=FAST,
                on_progress=(sent := Sent(8)),
            ) as stream:
                run = asyncio.create_task(stream.run())
                await sent.reached(run)
                await broker.stop()  # SIGTERM: Mosquitto saves its sessions and queues
                await asyncio.sleep(2.5)  # the outage under test: the broker is away this long
                await broker.start()
                stats = await run
        finally:
            await stop(node)
    every = list(range(1, events + 1))
    assert sorted(device.learned) == every  # each seq learned exactly once
    assert set(device.deliveries) == set(every)
    assert (stats.sent, stats.acked, stats.rejected, stats.lost) == (events, events, 0, 0)
    assert stats.stalled == () and not stream.answers.unanswered()
    assert stats.link.reconnects == 1 and stats.link.outage_s >= 2.0
    assert (stats.ignored.invalid, stats.ignored.foreign) == (0, 0)
    if speed is None:
        assert stats.link.late == 0
    else:  # the events due during the outage went out late, at once, none dropped
        assert 5 <= stats.link.late <= events - 8
        assert stats.link.max_late_s >= 2.0
    assert device.connections >= 2


@pytest.mark.parametrize("speed", [300.0, None], ids=["paced", "closed-loop"])
async def test_a_device_that_lost_its_session_gets_its_batches_again(
    tmp_path: Path, scenario: Scenario, speed: float | None
) -> None:
    """Mosquitto without persistence forgets every session in a restart: what the stream
    re-publishes before the device has subscribed again is lost, so the stream publishes its
    unanswered batches once more when the device announces itself online."""
    require_mosquitto()
    broker = Mosquitto(MosquittoConfig(data_dir=tmp_path / "mosquitto", persistence=False))
    gate = asyncio.Event()
    gate.set()
    events = 20
    async with asyncio.timeout(30):
        await broker.start()
        device = EchoDevice(broker.url, "node-0000", delay_s=0.0 if speed else 0.08, gate=gate)
        node = asyncio.create_task(device.run())
        try:
            await device.ready.wait()
            async with StreamPublisher(
                broker.url,
                scenario,
                [device.device],
                speed=speed,
                events=events,
                t0=T0,
                wait_for_answers=True,
                ack_timeout_s=20,
                reconnect=FAST,
                on_progress=(sent := Sent(6)),
            ) as stream:
                run = asyncio.create_task(stream.run())
                await sent.reached(run)
                gate.clear()
                await broker.stop()
                await asyncio.sleep(1.0)  # the outage under test: the broker is away this long
                await broker.start()
                await wait_until(
                    lambda: stream.link.reconnects == 1,
                    timeout_s=10,
                    what="the stream reconnected to the restarted broker",
                )
                # the subject: the device stays away while the stream, back, publishes into a
                # broker that forgot the device's subscription
                await asyncio.sleep(1.0)
                assert stream.link.reconnects == 1
                gate.set()
                stats = await run
        finally:
            await stop(node)
            await broker.stop()
    every = list(range(1, events + 1))
    assert sorted(device.learned) == every
    assert (stats.sent, stats.acked, stats.rejected, stats.stalled) == (events, events, 0, ())
    assert stats.link.republished >= 1


@pytest.mark.parametrize("speed", [300.0, None], ids=["paced", "closed-loop"])
async def test_batches_a_broker_forgot_go_again_after_a_timeout(
    tmp_path: Path, scenario: Scenario, speed: float | None
) -> None:
    """Mosquitto without persistence is restarted mid-run: the device's session and everything
    queued for it are gone. The device comes back without a word (no status), so nothing but
    the stream's timeouts can bring it what the broker forgot; it learns in order, holding
    what comes early, and must end with every seq learned once."""
    require_mosquitto()
    broker = Mosquitto(MosquittoConfig(data_dir=tmp_path / "mosquitto", persistence=False))
    gate = asyncio.Event()
    gate.set()
    events = 12
    resend = ResendPolicy(first_s=0.5, cap_s=2.0, max_resends=10)
    async with asyncio.timeout(60):
        await broker.start()
        device = EchoDevice(
            broker.url,
            "node-0000",
            delay_s=0.0 if speed else 0.05,
            gate=gate,
            in_order=True,
        )
        node = asyncio.create_task(device.run())
        try:
            await device.ready.wait()
            async with StreamPublisher(
                broker.url,
                scenario,
                [device.device],
                speed=speed,
                events=events,
                t0=T0,
                drain_timeout_s=30,
                reconnect=FAST,
                resend=resend,
                on_progress=(sent := Sent(4)),
            ) as stream:
                run = asyncio.create_task(stream.run())
                await sent.reached(run)
                gate.clear()
                device.announce = False  # from now on it comes back without a word
                await broker.stop()
                await broker.start()
                await wait_until(
                    lambda: stream.link.reconnects == 1,
                    timeout_s=10,
                    what="the stream reconnected to the restarted broker",
                )
                # the subject: batches published while the device has no session are lost
                await wait_until(
                    lambda: stream.link.resent >= 1,
                    timeout_s=10,
                    what="a batch published again after a timeout",
                )
                gate.set()
                stats = await run
        finally:
            await stop(node)
            await broker.stop()
    assert device.learned == list(range(1, events + 1))  # each once, in order
    assert stats.complete and (stats.sent, stats.acked, stats.rejected) == (events, events, 0)
    assert stats.link.resent >= 1 and stats.stalled == ()


async def test_an_outage_longer_than_max_outage_fails_clearly(
    broker: Mosquitto, scenario: Scenario
) -> None:
    policy = ReconnectPolicy(initial_s=0.05, cap_s=0.2, max_outage_s=1.0)
    async with asyncio.timeout(20):
        async with StreamPublisher(
            broker.url,
            scenario,
            ["node-0000"],
            speed=600,
            events=50,
            reconnect=policy,
            on_progress=(sent := Sent(3)),
        ) as stream:
            run = asyncio.create_task(stream.run())
            await sent.reached(run)
            await broker.stop()
            started = asyncio.get_running_loop().time()
            with pytest.raises(PublishError, match=r"no broker at .* \(max outage 1 s\)"):
                await run
            waited = asyncio.get_running_loop().time() - started
    assert 0.9 <= waited < 3.0


async def run_stream_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "device.cli", "stream", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "100"},
    )


async def first_batches(url: BrokerURL, count: int) -> None:
    """Until ``count`` batches have gone through the broker (the CLI is up and streaming)."""
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        await peer.subscribe("vega/+/batch", qos=1)
        seen = 0
        async for _ in peer.messages:
            seen += 1
            if seen == count:
                return


async def test_stream_command_rides_out_an_outage(broker: Mosquitto) -> None:
    url = f"mqtt://127.0.0.1:{broker.port}"
    devices = [EchoDevice(broker.url, f"node-000{i}") for i in range(2)]
    nodes = [asyncio.create_task(device.run()) for device in devices]
    try:
        async with asyncio.timeout(40):
            for device in devices:
                await device.ready.wait()
            # 20 events per device at 600x: one every 0.1 s; the devices answer each one
            cli = await run_stream_cli(
                *("--broker", url, "--devices", "2", "--events", "20", "--speed", "600")
            )
            await first_batches(broker.url, 4)
            await broker.stop()
            await asyncio.sleep(2.0)  # the outage under test: the broker is away this long
            await broker.start()
            _, err = await cli.communicate()
    finally:
        for node in nodes:
            await stop(node)
    text = err.decode()
    assert cli.returncode == 0, text  # every batch answered by its device
    assert "sent 40/40 events to 2 devices" in text, text
    assert "answered 40 of 40 batch(es)" in " ".join(text.split()), text
    assert "1 reconnect(s)" in text and "Traceback" not in text, text
    for device in devices:
        assert sorted(device.learned) == list(range(1, 21)), (device.device, text)


async def test_stream_command_gives_up_after_max_outage(broker: Mosquitto) -> None:
    url = f"mqtt://127.0.0.1:{broker.port}"
    async with asyncio.timeout(30):
        cli = await run_stream_cli(
            *("--broker", url, "--devices", "1", "--events", "50", "--speed", "60"),
            *("--max-outage", "1"),
        )
        await first_batches(broker.url, 1)
        await broker.stop()
        _, err = await cli.communicate()
    text = err.decode()
    assert cli.returncode == 1, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "max outage 1 s" in errors[0], text
    assert "Traceback" not in text


async def test_answers_sent_while_the_stream_is_away_wait_for_it(
    broker: Mosquitto, scenario: Scenario
) -> None:
    """The stream's session is persistent: the broker queues what arrives while it is away."""
    url = broker.url
    slow = ReconnectPolicy(initial_s=3.0, cap_s=3.0, max_outage_s=20.0)  # 1.5..3 s to retry
    async with asyncio.timeout(20):
        async with StreamPublisher(
            url,
            scenario,
            ["node-0001"],
            speed=1e6,
            events=1,
            t0=T0,
            wait_for_answers=True,
            ack_timeout_s=15,
            reconnect=slow,
            on_progress=(sent := Sent(1)),
        ) as stream:
            run = asyncio.create_task(stream.run())
            await sent.reached(run)
            await broker.stop()
            await broker.start()
            async with aiomqtt.Client(**url.client_kwargs()) as node:  # the stream is still away
                await node.publish("vega/node-0001/telemetry", telemetry("node-0001", 1), qos=1)
            stats = await run
    assert (stats.acked, stats.link.reconnects) == (1, 1)
