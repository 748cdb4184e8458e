"""The Prometheus exporter: /metrics over HTTP from a monitor fed by a real broker."""

from __future__ import annotations

import asyncio
import socket

import aiomqtt
import pytest

from broker import EmbeddedBroker
from dataset_stream.protocol import ErrorMessage, Status
from device.observe.errors import ExporterError
from device.observe.exporter import MetricsServer
from device.observe.monitor import FleetMonitor
from tests.support.messages import report
from tests.support.metrics import scrape, value
from tests.support.times import NOW


async def test_metrics_carry_the_last_telemetry_and_delivery_counts(
    embedded_broker: EmbeddedBroker,
) -> None:
    url = embedded_broker.url
    a, b = "node-0000", "node-0001"
    messages = [
        ("telemetry", a, report(a, 1, t=NOW - 2.0, events=1, energy_j={"frozen": 0.5})),
        (
            "telemetry",
            a,
            report(
                a,
                2,
                t=NOW - 0.5,
                events=2,
                battery={"soc": 0.9, "remaining_j": 35100.0},
                accuracy=0.75,
                lifetime_h=20.0,
                prequential_accuracy=0.6,
                prequential_n=5,
            ),
        ),
        ("prediction", a, b"{}"),  # counted from the topic, never decoded
        ("prediction", a, b"{}"),
        ("telemetry", a, report(a, 2, t=NOW - 0.5, events=2)),  # a redelivery: not counted
        ("telemetry", b, report(b, 7, t=NOW - 40.0, events=7, gaps=3, lifetime_h=5000.0)),
        ("status", a, Status("learning", device=a, model="digits-mnv1", last_seq=2).to_json()),
        ("error", b, ErrorMessage(b, "gap", "4..8 skipped", gap_first=4, gap_last=8).to_json()),
        ("error", b, ErrorMessage(b, "duplicate", "seq 7 again", seq=7).to_json()),
        ("error", b, ErrorMessage(b, "bad_label", "label 12 >= 10", seq=9).to_json()),
        ("error", b, ErrorMessage(b, "bad_label", "label 11 >= 10", seq=10).to_json()),
        ("error", b, ErrorMessage(b, "stale_seq", "seq 1 < 7", seq=1).to_json()),
        ("error", b, ErrorMessage(b, "brand_new_code", "?", seq=11).to_json()),
        ("telemetry", a, b"{"),  # invalid
    ]
    async with (
        FleetMonitor(url, clock=lambda: NOW) as monitor,
        MetricsServer(monitor, port=0) as server,
        aiomqtt.Client(**url.client_kwargs()) as node,
    ):
        assert server.port > 0 and server.url.endswith(f":{server.port}/metrics")
        for kind, device, payload in messages:
            await node.publish(f"vega/{device}/{kind}", payload, qos=1)
        async with asyncio.timeout(10):
            await monitor.wait_handled(len(messages))
        got = await asyncio.to_thread(scrape, server.url)  # a scrape from another thread

    remaining = got["vega_battery_remaining_joules"]
    assert sorted(lab["device"] for lab, _ in remaining) == [a, b]  # one series per device
    assert value(got, "vega_battery_remaining_joules", device=a) == 35100.0
    assert value(got, "vega_battery_soc_ratio", device=a) == 0.9
    assert value(got, "vega_accuracy_ratio", device=a) == 0.75
    assert value(got, "vega_accuracy_measured_events", device=a) == 2  # at its own event
    assert not [lab for lab, _ in got["vega_accuracy_ratio"] if lab["device"] == b]  # null
    assert value(got, "vega_lifetime_seconds", device=a) == 20.0 * 3600
    assert value(got, "vega_events_total", device=a) == 2
    assert value(got, "vega_events_total", device=b) == 7
    # energy by phase summed over the two seqs of a (the redelivery not again)
    assert value(got, "vega_energy_joules_total", device=a, phase="frozen") == pytest.approx(0.53)
    assert value(got, "vega_energy_joules_total", device=a, phase="adaptive") == pytest.approx(0.02)
    assert value(got, "vega_energy_joules_total", device=b, phase="frozen") == pytest.approx(0.03)
    assert value(got, "vega_device_info", device=a, state="learning", model="digits-mnv1") == 1

    assert value(got, "vega_gaps_total", device=a) == 0
    assert value(got, "vega_gaps_total", device=b) == 5  # the gap error's 4..8 beats telemetry's 3
    assert value(got, "vega_duplicates_total", device=b) == 1
    assert value(got, "vega_rejected_inputs_total", device=b, code="bad_label") == 2
    assert value(got, "vega_rejected_inputs_total", device=b, code="stale_seq") == 1
    assert {lab["code"] for lab, _ in got["vega_rejected_inputs_total"]} == {
        "bad_label",
        "stale_seq",
    }
    assert value(got, "vega_node_errors_total", device=b, code="other") == 1
    assert value(got, "vega_predictions_total", device=a) == 2
    assert not [lab for lab, _ in got["vega_predictions_total"] if lab["device"] == b]
    assert value(got, "vega_prequential_accuracy_ratio", device=a) == 0.6

    # lags 2.0, 0.5 and 40.0 s: cumulative buckets
    assert value(got, "vega_event_lag_seconds_count") == 3
    assert value(got, "vega_event_lag_seconds_sum") == pytest.approx(42.5)
    assert value(got, "vega_event_lag_seconds_bucket", le="0.5") == 1
    assert value(got, "vega_event_lag_seconds_bucket", le="2.5") == 2
    assert value(got, "vega_event_lag_seconds_bucket", le="30.0") == 2
    assert value(got, "vega_event_lag_seconds_bucket", le="+Inf") == 3
    assert value(got, "vega_fleet_lifetime_seconds_bucket", le=repr(24 * 3600.0)) == 1
    assert value(got, "vega_fleet_lifetime_seconds_bucket", le="+Inf") == 2

    assert value(got, "vega_nodes", state="learning") == 2
    assert value(got, "vega_nodes", state="offline") == 0
    assert value(got, "vega_monitor_messages_total", kind="telemetry") == 3
    assert value(got, "vega_monitor_messages_total", kind="error") == 6
    assert value(got, "vega_monitor_ignored_messages_total", reason="repeated") == 1
    assert value(got, "vega_monitor_ignored_messages_total", reason="invalid") == 1
    assert value(got, "vega_monitor_connected") == 1


async def test_a_port_in_use_is_a_clear_error(embedded_broker: EmbeddedBroker) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with FleetMonitor(embedded_broker.url) as monitor:
            with pytest.raises(ExporterError, match=f"127.0.0.1:{port}: Address already in use"):
                async with MetricsServer(monitor, port=port):
                    pytest.fail("served on a port in use")


async def test_the_server_stops_with_its_context(embedded_broker: EmbeddedBroker) -> None:
    async with FleetMonitor(embedded_broker.url) as monitor:
        async with MetricsServer(monitor, port=0) as server:
            got = await asyncio.to_thread(scrape, server.url)
            assert "vega_battery_remaining_joules" not in got  # no device yet
            assert value(got, "vega_nodes", state="unknown") == 0
        with pytest.raises(OSError):
            await asyncio.to_thread(scrape, server.url)
