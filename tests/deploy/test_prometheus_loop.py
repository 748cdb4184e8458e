"""The Grafana dashboard and the alert rules against a real Prometheus scraping a live monitor.

A small fleet and a stream run as ``vega-emu`` processes on an embedded broker, in real time
(speed 1, a short cadence); the monitor serves its exporter on a free port; Debian's
``prometheus`` scrapes it every second into a temporary TSDB. Once it holds enough samples,
every panel query of every shipped dashboard goes through ``/api/v1/query`` (Grafana's
variables replaced by concrete values) and must give a sensible answer: not empty, no NaN or
infinity, ratios within 0..1, a value per node where the panel is per node. Every alert rule's
expression must evaluate too (its result may be empty: nothing is wrong with this fleet).

One inconsistent batch and one desired state the node cannot apply are published on purpose,
so that the rejected-input and node-error panels have series to show.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
import yaml

from broker import BrokerURL, EmbeddedBroker
from dataset_stream.protocol import fleet_ids
from device.observe.exporter import MetricsServer
from device.observe.monitor import FleetMonitor
from tests.deploy.stack import DEPLOY
from tests.support.prometheus import PrometheusServer, Sample, require_prometheus
from tests.support.wait import wait_for_telemetry, wait_until

pytestmark = pytest.mark.slow

DEVICES = 3
IDS = fleet_ids(DEVICES)
CADENCE_S = 2.0
#: enough events for the test at the cadence; the stream is stopped when it is done
EVENTS = 200
#: values of Grafana's variables in the queries (a 1 s scrape interval)
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "5s",
    "$__range": "5m",
    "$__range_s": "300",
}
SAMPLES_TIMEOUT_S = 240.0


@dataclass(frozen=True, slots=True)
class PanelQuery:
    """One target of a dashboard panel."""

    dashboard: str
    panel: str
    expr: str

    @property
    def name(self) -> str:
        return f"{self.dashboard} / {self.panel}: {self.expr}"


def panel_queries() -> list[PanelQuery]:
    """Every target of every shipped dashboard, its variables replaced."""
    found = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                assert "$" not in expr, f"{path.name} {panel['title']}: unknown variable {expr!r}"
                found.append(PanelQuery(path.name, panel["title"], expr))
    return found


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def per_device(expr: str) -> bool:
    """Whether a query gives one series per device: it selects a per-device metric and does not
    aggregate it away (``bottomk`` keeps the series)."""
    aggregated = any(
        f"{word}(" in expr or f"{word} by" in expr
        for word in ("sum", "avg", "min", "max", "count", "quantile")
    )
    return not aggregated and any(
        name in expr for name in ("vega_lifetime_seconds", "vega_accuracy_ratio")
    )


def problems(query: PanelQuery, result: list[Sample]) -> list[str]:
    """What is not sensible about ``result`` (empty: it is)."""
    if not result:
        return [f"{query.name}: no data"]
    found = []
    for sample in result:
        if not math.isfinite(sample.value):
            found.append(f"{query.name}: {sample.value} for {sample.labels}")
        elif sample.value < 0:
            found.append(f"{query.name}: negative {sample.value} for {sample.labels}")
        elif "_ratio" in query.expr and "rate(" not in query.expr and sample.value > 1:
            found.append(f"{query.name}: ratio {sample.value} above 1 for {sample.labels}")
    if per_device(query.expr):
        devices = sorted(s.labels.get("device", "") for s in result)
        if devices != IDS:
            found.append(f"{query.name}: devices {devices}, not one value per node {IDS}")
    return found


def test_every_panel_query_is_found_and_per_node_ones_are_known() -> None:
    queries = panel_queries()
    assert len(queries) >= 20
    assert any(per_device(q.expr) for q in queries)
    assert not per_device("avg(vega_accuracy_ratio)")
    assert per_device("bottomk(10, vega_lifetime_seconds)")


class VegaProcess:
    """A ``vega-emu`` command as a process, its output in a log file; SIGTERM at the end."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> VegaProcess:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "device.cli",
                *self.args,
                stdout=out,
                stderr=out,
                stdin=asyncio.subprocess.DEVNULL,
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def alive(self) -> None:
        assert self.proc is not None
        assert self.proc.returncode is None, (
            f"vega-emu {self.args[0]} exited: {self.log.read_text(errors='replace')[-3000:]}"
        )


@asynccontextmanager
async def live_fleet(url: BrokerURL, tmp_path: Path) -> AsyncIterator[list[VegaProcess]]:
    """A fleet of :data:`DEVICES` nodes and a real-time stream feeding them."""
    broker = ["--broker", str(url)]
    async with AsyncExitStack() as stack:
        fleet = await stack.enter_async_context(
            VegaProcess(
                tmp_path / "fleet.log",
                "fleet",
                *broker,
                "-n",
                str(DEVICES),
                "--workers",
                "1",
                "--epochs",
                "1",
                "--state-dir",
                str(tmp_path / "state"),
            )
        )
        stream = await stack.enter_async_context(
            VegaProcess(
                tmp_path / "stream.log",
                "stream",
                *broker,
                "--devices",
                str(DEVICES),
                "--speed",
                "1",
                "--cadence",
                str(CADENCE_S),
                "--events",
                str(EVENTS),
            )
        )
        yield [fleet, stream]


async def trouble(url: BrokerURL) -> None:
    """An inconsistent batch (rejected: a protocol error code) and a desired state node-0001
    cannot apply (a node error: bad_desired), as a careless peer would publish them."""
    bad_desired = {"device": IDS[1], "version": 1, "settings": {"lr_bits": 9}}
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        await peer.publish(f"vega/{IDS[0]}/batch", b"not a batch", qos=1)
        await peer.publish(f"vega/{IDS[1]}/desired", json.dumps(bad_desired), qos=1, retain=True)


async def test_prometheus_scrapes_the_monitor_and_every_dashboard_query_has_data(
    embedded_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    require_prometheus()
    url = embedded_broker.url
    queries = panel_queries()
    async with (
        FleetMonitor(url) as monitor,
        MetricsServer(monitor, port=0) as exporter,
        PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{exporter.port}"]) as prometheus,
        live_fleet(url, tmp_path) as processes,
    ):
        await wait_until(prometheus.targets_up, 30, what="prometheus scraping the monitor")
        await wait_for_telemetry(monitor, IDS, 1, timeout_s=120)  # the nodes are subscribed
        await trouble(url)
        last: list[str] = []

        async def every_panel_sensible() -> bool:
            nonlocal last
            for process in processes:
                process.alive()
            found = []
            for query in queries:
                found += problems(query, await prometheus.query(query.expr))
            last = found
            return not found

        try:
            await wait_until(
                every_panel_sensible, SAMPLES_TIMEOUT_S, what="every panel sensible", every_s=2.0
            )
        except AssertionError:
            pytest.fail("dashboard queries without sensible data:\n" + "\n".join(last))
        # the per-node panels: one value per node; the online count: the whole fleet
        (online,) = await prometheus.query('sum(vega_nodes{state=~"idle|learning"})')
        assert online.value == DEVICES
        (rejected,) = await prometheus.query("sum(vega_rejected_inputs_total)")
        (errors,) = await prometheus.query('sum(vega_node_errors_total{code="bad_desired"})')
        assert rejected.value >= 1 and errors.value >= 1
        for name, expr in alert_exprs():
            for sample in await prometheus.query(expr):  # evaluates; may be empty
                assert not math.isnan(sample.value), (name, sample)
