"""The monitor trusts a gateway's status only for the devices that gateway owns.

A gateway ``gw-{first}-{count}`` speaks for the ``count`` fleet ids from ``first`` on
(:func:`broker.acl.gateway_owns`: the range the generated ACL gives that gateway user); what
its status says of any other device is counted (``foreign``, once per status), warned about
once per gateway, and not applied. The rule agrees with the ACL's own
(:func:`broker.acl.gateway_devices`) on every fleet's ids. The messages go through
:meth:`FleetMonitor.handle`, the monitor's one entry for what the broker delivers; the same
forgery over a real Mosquitto with the deployed ACL is in tests/deploy/test_deploy_broker_probe.py.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import BrokerURL
from broker.acl import gateway_devices, gateway_owns
from dataset_stream.protocol import GatewayStatus, Status, fleet_ids
from device.fleet.shard import gateway_id
from device.observe.monitor import FleetMonitor

URL = BrokerURL(host="127.0.0.1", port=1)  # never connected: messages are handed in


def monitor_with_online(*devices: str) -> FleetMonitor:
    monitor = FleetMonitor(URL)
    for device in devices:
        monitor.handle(f"vega/{device}/status", Status("idle", device=device).to_json())
    return monitor


def states(monitor: FleetMonitor) -> dict[str, str]:
    return {d: r.status.state for d, r in monitor.devices.items() if r.status is not None}


def test_an_offline_gateway_takes_only_its_own_devices_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = fleet_ids(4)
    monitor = monitor_with_online(*ids)
    lie = GatewayStatus("gw-node-0000-2", "offline", ["node-0000", "node-0001", "node-0002"])
    with caplog.at_level(logging.DEBUG, logger="device.observe.monitor"):
        monitor.handle("vega/gateway/gw-node-0000-2/status", lie.to_json())
        monitor.handle("vega/gateway/gw-node-0000-2/status", lie.to_json())  # again
    assert states(monitor) == {
        "node-0000": "offline",  # its own: applied (the positive control)
        "node-0001": "offline",
        "node-0002": "idle",  # another gateway's device: not applied
        "node-0003": "idle",
    }
    assert monitor.foreign == 2 and monitor.invalid == 0  # once per status
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per gateway
    assert "gw-node-0000-2 named 1 device(s) it does not own (node-0002)" in warnings[0].message
    assert monitor.gateways == {"gw-node-0000-2": "offline"}


@pytest.mark.parametrize(
    ("gateway", "named"),
    [
        ("gw2", ["node-0001"]),  # not a gateway name: owns nothing
        ("gw-node-0002-2", ["node-0001", "node-0004"]),  # before and after its range
        ("gw-node-0000-1", ["node-00000", "node-0001"]),  # other digits, the next device
        ("gw-sensor-a-2", ["sensor-b"]),  # no index: owns its first device only
        ("gw-node-0000-2", ["lab-0001"]),  # another prefix
    ],
)
def test_a_gateway_is_not_trusted_for_a_device_it_does_not_own(
    gateway: str, named: list[str]
) -> None:
    monitor = monitor_with_online(*named)
    monitor.handle(
        f"vega/gateway/{gateway}/status", GatewayStatus(gateway, "offline", named).to_json()
    )
    assert set(states(monitor).values()) == {"idle"}
    assert monitor.foreign == 1


def test_an_online_status_naming_other_devices_is_counted_too() -> None:
    monitor = FleetMonitor(URL)
    status = GatewayStatus("gw-node-0000-2", "online", ["node-0000", "node-0001", "node-0005"])
    monitor.handle("vega/gateway/gw-node-0000-2/status", status.to_json())
    assert monitor.foreign == 1 and monitor.gateways == {"gw-node-0000-2": "online"}


def test_gateway_owns_examples() -> None:
    assert gateway_owns("gw-node-9990-20", "node-9999")
    assert gateway_owns("gw-node-9990-20", "node-10009")  # past 9999 the ids grow a digit
    assert not gateway_owns("gw-node-9990-20", "node-10010")
    assert not gateway_owns("gw-node-9990-20", "node-09999")
    assert gateway_owns("gw-sensor-a-2", "sensor-a")
    assert not gateway_owns("not-a-gateway", "node-0000")


@given(
    prefix=st.sampled_from(["node-", "dev_", "x", "site-a-", "n0-"]),
    start=st.integers(0, 20_000),
    size=st.integers(1, 40),
    data=st.data(),
)
def test_the_monitor_and_the_acl_agree_on_every_fleet(
    prefix: str, start: int, size: int, data: st.DataObject
) -> None:
    ids = fleet_ids(size, prefix, start=start)
    first = data.draw(st.integers(0, size - 1), label="first")
    count = data.draw(st.integers(1, size - first), label="count")
    user = gateway_id(ids[first], count)
    owned = gateway_devices(user, ids)
    assert [d for d in ids if gateway_owns(user, d)] == owned == ids[first : first + count]
    neighbours = fleet_ids(3, prefix, start=max(0, start + first - 1)) + fleet_ids(
        1, prefix, start=start + first + count
    )
    assert [d for d in neighbours if gateway_owns(user, d)] == [d for d in neighbours if d in owned]
