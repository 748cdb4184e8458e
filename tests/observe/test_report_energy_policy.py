"""The report shows what the nodes' energy-aware policies and harvesters did: the events a
policy skipped or held for the sun apart from the errors, and the energy harvested apart from
the phases (it charged the cells, nothing spent it)."""

from __future__ import annotations

import re
from pathlib import Path

from dataset_stream.protocol import ErrorMessage, Telemetry
from device.observe.recorder import RunRecorder, load_run
from device.observe.report import render_report
from tests.support.messages import draining_telemetry
from tests.support.times import T0


def _harvesting(device: str, seq: int, harvest_j: float) -> Telemetry:
    raw = draining_telemetry(device, seq, drain_j=1.0, accuracy=0.5).to_dict()
    raw["energy_j"] = {**raw["energy_j"], "harvest": harvest_j}
    return Telemetry.from_json(raw)


def _record(path: Path, *, harvest: bool, policy: bool = True) -> None:
    with RunRecorder(path, meta={"command": "vega-emu up"}) as recorder:
        received = T0
        for seq in range(1, 4):
            for device in ("node-0000", "node-0001"):
                tel = (
                    _harvesting(device, seq, 0.25)
                    if harvest
                    else draining_telemetry(device, seq, drain_j=1.0, accuracy=0.5)
                )
                recorder.add(device, tel, received)
                received += 1.0
        skipped = ErrorMessage("node-0000", "energy_policy", "not learned: soc 0.2", seq=4)
        held = ErrorMessage("node-0001", "deferred", "held for the sun: 1 held", seq=4)
        shape = ErrorMessage("node-0001", "bad_shape", "x is [3, 9]", seq=5)
        for message in (skipped, held, shape) if policy else (shape,):
            recorder.add(message.device, message, received)


def test_policy_answers_are_counted_apart_from_the_errors(tmp_path: Path) -> None:
    run = tmp_path / "run.sqlite"
    _record(run, harvest=True)
    page = render_report(run, tmp_path / "report").read_text(encoding="utf-8")
    assert re.search(r"<th>errors</th><td>1</td>", page)  # bad_shape only
    assert re.search(r"<th>events skipped by the energy policy</th><td>1</td>", page)
    assert re.search(r"<th>answers: held for the sun \(deferred\)</th><td>1</td>", page)
    assert "<td>energy_policy</td>" not in page and "<td>deferred</td>" not in page
    assert "1 events skipped by the nodes' energy policy and 1 answers" in page


def test_the_harvest_is_summed_and_shown_beside_the_phases(tmp_path: Path) -> None:
    run = tmp_path / "run.sqlite"
    _record(run, harvest=True)
    assert load_run(run).harvest_j == 6 * 0.25
    page = render_report(run, tmp_path / "report").read_text(encoding="utf-8")
    assert re.search(r"<th>energy harvested, fleet total</th><td>1.5 J</td>", page), page
    assert "harvesters brought in 1.5 J" in page


def test_a_run_without_harvest_or_policy_says_nothing_of_them(tmp_path: Path) -> None:
    run = tmp_path / "run.sqlite"
    _record(run, harvest=False, policy=False)
    assert load_run(run).harvest_j is None
    page = render_report(run, tmp_path / "report").read_text(encoding="utf-8")
    assert "id='harvest'" not in page and "energy harvested" not in page
    assert "id='energy-policy'" not in page and "skipped by the energy policy" not in page
