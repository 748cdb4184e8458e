"""What ``vega-emu node`` prints after each event: one line, its figures in SI units, however
small the model (``60.7 uJ in 210 us``, never ``0.0000 J in 0.000 s``) or long its lifetime
(``5.27M h``, not ``5,268,051 h``)."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from broker import EmbeddedBroker
from dataset_stream.protocol import Telemetry
from device.cli.node_cmd import event_line
from device.model.bundle import ModelBundle
from tests.support.cli import Command
from tests.support.messages import report

#: The figures of one event line: energy in (prefixed) J, emulated time in (prefixed) s.
FIGURES = re.compile(r", (\d+(?:\.\d+)? [munp]?J) in (\d+(?:\.\d+)? [munp]?s) \(emulated\)")


def test_tiny_and_huge_figures_keep_their_digits() -> None:
    tiny = Telemetry.from_json(
        report(
            "node-0000",
            3,
            energy_j={"total": 6.07e-5},
            latency_s={"frozen": 1e-4, "adaptive": 1.1e-4, "total": 2.1e-4},
            lifetime_h=5_268_051.0,
            host_s=0.0031,
            accuracy=0.5,
        )
    )
    assert event_line(tiny) == (
        "seq 3: learning, 140 samples, accuracy 0.500, 60.7 uJ in 210 us (emulated), "
        "SoC 100.0000%, lifetime 5.27M h, 0 LRs, host 3.1 ms"
    )
    unknown = Telemetry.from_json(report("node-0000", 1, lifetime_h=None, accuracy=None))
    assert "accuracy -," in event_line(unknown) and "lifetime -," in event_line(unknown)


async def test_the_node_prints_one_line_per_event_in_si_units(
    embedded_broker: EmbeddedBroker, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    broker = f"mqtt://127.0.0.1:{embedded_broker.url.port}"
    node = [
        *("node", "--broker", broker, "--id", "node-0000", "--state-dir", str(tmp_path)),
        *("--model", str(default_bundle.path)),
    ]
    stream = [*("stream", "--broker", broker, "--devices", "node-0000", "--speed", "max")]
    async with Command(node, env={"COLUMNS": "80"}) as running:
        await running.wait_for("Ctrl-C stops it")
        async with Command([*stream, "--events", "2"]) as streamed:
            await streamed.ended_within(120)
            assert streamed.returncode == 0, streamed.stderr
        await running.wait_for("seq 2:")
        running.send(signal.SIGINT)
        await running.ended_within(60)
    lines = [line for line in running.lines if line.startswith("seq ")]
    assert [line.split(":")[0] for line in lines] == ["seq 1", "seq 2"], running.lines
    for line in lines:  # one line each, though longer than the 80 columns of the node's output
        assert FIGURES.search(line), line
        assert re.search(r"lifetime (\d+(?:\.\d+)?[kMG]? h|-),", line), line
        assert "0.0000 J" not in line and not re.search(r"\d,\d{3} h", line)
