"""``vega-emu ctl``: settings parsed and refused before anything is published, the next
desired version published retained, convergence, refusals and silence told apart -- over a
real broker, with the devices' reported states published by hand by a real MQTT client."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker.url import BrokerURL
from dataset_stream.protocol import (
    DesiredState,
    Refusal,
    ReportedState,
    Status,
    read_desired,
    topic,
)
from device.aio import cancel_and_wait
from device.app.ctl import DeviceView, StateBook, next_desired, parse_changes
from device.app.errors import SettingError
from device.app.link import FleetLink
from device.cli._ctl_view import not_converged_line, settings_cell
from tests.support.cli import Command

SETTINGS: dict[str, Any] = {
    "lr_bits": 8,
    "lr_size": 1500,
    "learning_rate": 0.01,
    "epochs": 4,
    "mb_size": 128,
    "learning": True,
    "inference": True,
    "head": "own",
}


def reported(device: str, version: int, **changes: Any) -> ReportedState:
    refused = changes.pop("refused", None)
    return ReportedState(device, version, {**SETTINGS, **changes}, refused=refused)


# -- parsing, no broker ----------------------------------------------------------------------


def test_values_are_parsed_by_the_type_of_their_setting() -> None:
    changes = parse_changes(
        ["lr_bits=6", "learning_rate=5e-3", "learning=false", "inference=on", "epochs="]
    )
    assert changes == {
        "lr_bits": 6,
        "learning_rate": 0.005,
        "learning": False,
        "inference": True,
        "epochs": None,
    }
    assert parse_changes([], unset=["mb_size"]) == {"mb_size": None}
    assert parse_changes(["head=own"]) == {"head": "own", "head_sha256": None}


@pytest.mark.parametrize(
    ("pairs", "names"),
    [
        (["lr_bitz=6"], "lr_bitz: no such setting"),
        (["lr_bits=9"], "lr_bits=9: 9 is not one of 32, 8, 7, 6, 5, 4"),
        (["lr_bits=six"], "lr_bits=six"),
        (["epochs=0"], "epochs=0"),
        (["learning=maybe"], "learning=maybe"),
        (["learning_rate=nan"], "learning_rate=nan"),
        (["head=a/b"], "head=a/b"),
        (["lr_bits"], "want key=value"),
        ([], "nothing to set"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(pairs: list[str], names: str) -> None:
    with pytest.raises(SettingError) as info:
        parse_changes(pairs)
    assert names in str(info.value)


def test_the_next_version_merges_and_removes() -> None:
    current = DesiredState("node-0000", 3, {"lr_bits": 6, "epochs": 2})
    state = next_desired(
        "node-0000", current, None, {"epochs": None, "mb_size": 64}, by="ctl", ts=1.0
    )
    assert (state.version, dict(state.settings), state.by) == (
        4,
        {"lr_bits": 6, "mb_size": 64},
        "ctl",
    )
    # no retained desired state, but the device runs version 5: go past it
    fresh = next_desired("node-0001", None, reported("node-0001", 5), {"epochs": 2}, by="x", ts=0)
    assert fresh.version == 6
    with pytest.raises(SettingError, match=r"settings\.head_sha256"):
        next_desired("node-0000", None, None, {"head": "v2"}, by="ctl", ts=0)


def test_a_device_view_says_converged_pending_refused() -> None:
    desired = DesiredState("node-0000", 2, {"lr_bits": 6})
    assert DeviceView("node-0000", desired, reported("node-0000", 1)).state == "pending"
    done = DeviceView("node-0000", desired, reported("node-0000", 2, lr_bits=6))
    assert done.state == "converged" and settings_cell(done) == "lr_bits=6"
    refusal = Refusal(2, "settings.lr_bits", "no")
    refused = DeviceView("node-0000", desired, reported("node-0000", 1, refused=refusal))
    assert refused.state == "refused"
    behind = DeviceView("node-0000", desired, reported("node-0000", 1))
    assert settings_cell(behind) == "lr_bits=6 (runs 8)"
    assert DeviceView("node-0001").state == "converged"  # nothing to apply
    assert not_converged_line([done, behind]) == (
        "1 of 2 converged; not converged: node-0000 (pending)"
    )


def test_the_book_ignores_what_is_not_a_device_state() -> None:
    book = StateBook("vega")
    assert book.handle("vega/node-0000/reported", reported("node-0000", 1).to_json()) == "node-0000"
    assert book.handle("vega/node-0001/reported", reported("node-0000", 1).to_json()) is None
    assert book.handle("vega/node-0000/desired", b"{not json") is None
    assert book.handle("other/node-0000/desired", b"{}") is None
    assert (book.foreign, book.invalid) == (2, 1)
    assert book.devices() == ["node-0000"]


# -- over a broker ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def client(url: BrokerURL) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(**url.client_kwargs(), identifier="ctl-test-hand") as c:
        yield c


async def retained_desired(url: BrokerURL, devices: list[str]) -> dict[str, DesiredState]:
    """The retained desired states of ``devices`` (read until each came or 1 s passed)."""
    found: dict[str, DesiredState] = {}
    async with aiomqtt.Client(**url.client_kwargs(), identifier="ctl-test-read") as c:
        for device in devices:
            await c.subscribe(topic("vega", device, "desired"), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for message in c.messages:
                    state = read_desired("vega", message.topic.value, message.payload)
                    found[state.device] = state
                    if len(found) == len(devices):
                        break
    return found


@contextlib.asynccontextmanager
async def devices_answering(
    url: BrokerURL, answer: Callable[[DesiredState], ReportedState | None]
) -> AsyncIterator[None]:
    """Devices played by hand: each desired state gets the reported state ``answer`` makes."""
    async with aiomqtt.Client(**url.client_kwargs(), identifier="ctl-test-devices") as c:
        await c.subscribe("vega/+/desired", qos=1)

        async def serve() -> None:
            async for message in c.messages:
                state = read_desired("vega", message.topic.value, message.payload)
                report = answer(state)
                if report is not None:
                    where = topic("vega", state.device, "reported")
                    await c.publish(where, report.to_json(), qos=1, retain=True)

        task = asyncio.create_task(serve())
        try:
            yield
        finally:
            await cancel_and_wait(task)  # a plain cancel can be swallowed (CPython gh-86296)


async def ctl(url: BrokerURL, *args: str, timeout_s: float = 60.0) -> Command:
    async with Command(["ctl", *args, "--broker", str(url)]) as cmd:
        await cmd.ended_within(timeout_s)
    return cmd


async def test_ctl_set_refuses_a_bad_key_before_publishing(embedded_broker: Any) -> None:
    url = embedded_broker.url
    for bad, named in (("lr_bitz=6", "lr_bitz"), ("lr_bits=9", "lr_bits=9")):
        cmd = await ctl(url, "set", "--devices", "2", "lr_size=100", bad)
        assert cmd.returncode == 2, cmd.stderr
        assert "nothing published" in cmd.stderr and named in cmd.stderr
    assert await retained_desired(url, ["node-0000", "node-0001"]) == {}


async def test_ctl_set_publishes_the_next_version_retained(embedded_broker: Any) -> None:
    url = embedded_broker.url
    async with client(url) as c:
        old = DesiredState("node-0000", 3, {"epochs": 2}, by="someone")
        await c.publish("vega/node-0000/desired", old.to_json(), qos=1, retain=True)
    cmd = await ctl(url, "set", "node-0000", "node-0001", "lr_bits=6", "learning=false")
    assert cmd.returncode == 0, cmd.stderr
    assert "published desired v1, v4 to 2 device(s): lr_bits=6 learning=false" in cmd.stderr
    found = await retained_desired(url, ["node-0000", "node-0001"])
    assert found["node-0000"].version == 4 and found["node-0000"].by == "ctl"
    assert dict(found["node-0000"].settings) == {"epochs": 2, "lr_bits": 6, "learning": False}
    assert found["node-0001"].version == 1
    cmd = await ctl(url, "set", "node-0000", "--unset", "epochs", "lr_bits=")
    assert cmd.returncode == 0, cmd.stderr
    again = await retained_desired(url, ["node-0000"])
    assert again["node-0000"].version == 5
    assert dict(again["node-0000"].settings) == {"learning": False}


async def test_ctl_set_wait_tells_converged_refused_and_silent_apart(embedded_broker: Any) -> None:
    url = embedded_broker.url

    def answer(state: DesiredState) -> ReportedState | None:
        if state.device == "node-0000":
            return reported(state.device, state.version, **state.settings)
        if state.device == "node-0001":
            why = Refusal(state.version, "settings.lr_bits", "lr_bits 4: no room")
            return reported(state.device, 0, refused=why)
        return None  # node-0002 is off

    async with devices_answering(url, answer):
        cmd = await ctl(url, "set", "--devices", "3", "lr_bits=4", "--wait", "--timeout", "2")
    assert cmd.returncode == 1, cmd.stderr
    assert (
        "1 converged, 1 refused (node-0001: settings.lr_bits), 1 did not answer (node-0002)"
        in cmd.stderr
    )
    assert "node-0001 refused: lr_bits 4: no room" in cmd.stderr

    async with devices_answering(url, lambda s: reported(s.device, s.version, **s.settings)):
        cmd = await ctl(url, "set", "node-0000", "node-0002", "epochs=2", "--wait")
    assert cmd.returncode == 0, cmd.stderr
    assert "2 converged, 0 refused, 0 did not answer" in cmd.stderr


async def test_ctl_get_all_and_watch_show_desired_vs_reported(embedded_broker: Any) -> None:
    url = embedded_broker.url
    async with client(url) as c:
        for n in range(3):
            device = f"node-000{n}"
            status = Status("idle", device=device, t=0.0, last_seq=0)
            await c.publish(f"vega/{device}/status", status.to_json(), qos=1, retain=True)
        await c.publish(
            "vega/node-0001/reported", reported("node-0001", 0).to_json(), qos=1, retain=True
        )
        desired = DesiredState("node-0001", 1, {"lr_bits": 6})
        await c.publish("vega/node-0001/desired", desired.to_json(), qos=1, retain=True)
    async with Command(["ctl", "get", "--all", "--broker", str(url)], env={"COLUMNS": "80"}) as cmd:
        await cmd.ended_within(60)
        assert cmd.returncode == 0, cmd.stderr
        assert cmd._drain is not None
        out = (await cmd._drain).decode()
    assert "2 of 3 converged; not converged: node-0001 (pending)" in " ".join(out.split())
    assert "lr_bits=6 (runs 8)" in out
    assert max(len(line) for line in out.splitlines()) <= 80, out

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "device.cli", "ctl", "watch", "node-0001", "--duration", "60"),
        *("--broker", str(url)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        await stdout_line(proc.stdout, "node-0001 desired v1 reported v0 pending")
        async with client(url) as c:
            now = reported("node-0001", 1, lr_bits=6)
            await c.publish("vega/node-0001/reported", now.to_json(), qos=1, retain=True)
        await stdout_line(proc.stdout, "node-0001 desired v1 reported v1 converged lr_bits=6")
        await stdout_line(proc.stdout, "1 of 1 converged")
    finally:
        proc.terminate()
        await proc.communicate()


async def stdout_line(stream: asyncio.StreamReader, text: str, timeout_s: float = 30.0) -> None:
    """Read lines until one holds ``text``."""
    seen = []
    async with asyncio.timeout(timeout_s):
        while line := (await stream.readline()).decode():
            seen.append(line)
            if text in line:
                return
    raise AssertionError(f"{text!r} not among {seen}")


async def test_the_link_rides_out_a_broker_restart(mosquitto: Any) -> None:
    """A connection lost after the first is made again: the retained states come back, and a
    desired state published while the broker is away goes out once it is back."""
    url = mosquitto.url
    async with client(url) as c:
        await c.publish("vega/node-0000/reported", reported("node-0000", 0).to_json(), 1, True)
    async with FleetLink(url) as link:
        await link.settle(["node-0000"])
        assert "node-0000" in link.book.reported
        await mosquitto.kill()
        async with asyncio.timeout(10):
            while link.connected.is_set():
                await link.changes(0.5)
        publishing = asyncio.create_task(link.set_desired(["node-0000"], {"epochs": 2}, by="t"))
        await mosquitto.start()
        async with asyncio.timeout(30):
            states = await publishing
        assert link.reconnects == 1 and states["node-0000"].version == 1
    found = await retained_desired(url, ["node-0000"])
    assert dict(found["node-0000"].settings) == {"epochs": 2}


async def test_a_class_of_a_fleet_spec_is_a_selector(embedded_broker: Any, tmp_path: Path) -> None:
    spec = tmp_path / "fleet.toml"
    spec.write_text(
        'prefix = "node-"\n\n[[class]]\nname = "big"\ncount = 2\n\n'
        '[[class]]\nname = "small"\ncount = 1\nlr_size = 500\n'
    )
    url = embedded_broker.url
    cmd = await ctl(url, "set", "--class", "small", "--spec", str(spec), "lr_size=400")
    assert cmd.returncode == 0, cmd.stderr
    found = await retained_desired(url, ["node-0000", "node-0001", "node-0002"])
    assert list(found) == ["node-0002"] and dict(found["node-0002"].settings) == {"lr_size": 400}
    cmd = await ctl(url, "get", "--class", "tiny", "--spec", str(spec))
    assert cmd.returncode == 2 and "--class tiny: not in" in cmd.stderr
    assert "classes: big, small" in cmd.stderr


async def test_what_a_stranger_trips_on_is_said(embedded_broker: Any) -> None:
    """A setting typed as two words is refused naming the fix; a device the broker knows
    nothing of (a typo) is named in a note and shown as unknown, not as converged; an empty
    broker is said so."""
    url = embedded_broker.url
    cmd = await ctl(url, "set", "node-0000", "lr_bits", "6")
    assert cmd.returncode == 2, cmd.stderr
    assert "lr_bits is a setting: write lr_bits=VALUE" in cmd.stderr
    assert await retained_desired(url, ["node-0000", "lr_bits", "6"]) == {}
    cmd = await ctl(url, "get", "--all")
    assert cmd.returncode == 0 and "note: no device has a status or reported state" in cmd.stderr
    async with client(url) as c:
        status = Status("idle", device="node-0000", t=0.0, last_seq=0)
        await c.publish("vega/node-0000/status", status.to_json(), qos=1, retain=True)
    async with Command(["ctl", "get", "node-0000", "node-000", "--broker", str(url)]) as cmd:
        await cmd.ended_within(60)
        assert cmd._drain is not None
        out = (await cmd._drain).decode()
    assert cmd.returncode == 0, cmd.stderr
    assert "for node-000 (no status, no reported state): a typo" in cmd.stderr
    assert "node-0000," not in cmd.stderr  # the known one is not named
    (row,) = [line for line in out.splitlines() if "node-000 " in line]
    assert "unknown" in row and "converged" not in row
