"""``EnergyReport``: the typed value behind ``vega-emu energy``, and its ``--json`` form."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from device.app import EnergyReport
from device.app.energy import AnalysedModel
from device.cli import app
from device.energy import CostConfig, inference_cost, load_profile
from device.model.mobilenet import mobilenet_v1_layers

KEYS = [
    "profile",
    "event",
    "events_per_hour",
    "sustainable",
    "power_w",
    "battery_j",
    "lifetime_h",
    "max_events_per_hour",
    "inference",
    "frozen_stage",
    "memory",
    "layers",
    "config",
    "model",
]
#: What ``energy --lr-layer L`` (no --model) analyses: the paper's network, new samples per
#: event as in the paper.
MOBILENET = AnalysedModel("MobileNet-V1 1.0/128, 50 classes")


def report(inference_per_s: float = 0.0, **config: float) -> EnergyReport:
    layers = mobilenet_v1_layers(res=128, width=1.0, classes=50, lr_layer=27)
    return EnergyReport.compute(
        layers,
        load_profile("vega"),
        CostConfig(**config),
        inference_per_s=inference_per_s,
        model=MOBILENET,
    )


@pytest.mark.parametrize(
    ("args", "inference_per_s", "config"),
    [
        ([], 0.0, {}),
        (["--inference-rate", "2", "--events-per-hour", "4"], 2.0, {"events_per_hour": 4.0}),
        (["--lr-bits", "6", "--lr-size", "750"], 0.0, {"lr_bits": 6, "lr_size": 750}),
    ],
)
def test_the_json_output_is_the_report(
    args: list[str], inference_per_s: float, config: dict[str, float]
) -> None:
    result = CliRunner().invoke(app, ["energy", "--json", "--lr-layer", "27", *args])
    assert result.exit_code == 0, result.output
    expected = report(inference_per_s, **config)
    assert result.stdout == expected.to_json() + "\n"
    assert list(json.loads(result.stdout)) == KEYS


def test_the_report_reads_as_typed_values() -> None:
    slow = report(inference_per_s=50.0, events_per_hour=100_000.0)
    data = slow.to_dict()
    assert not slow.duty.sustainable and data["sustainable"] is False
    assert data["lifetime_h"] == slow.lifetime_h == pytest.approx(slow.duty.lifetime_h)
    assert 0 < slow.inference_power_share < 1
    assert data["inference"] == {
        "per_s": 50.0,
        "per_sample": {
            "latency_s": slow.inference.latency_s,
            "energy_j": slow.inference.energy_j,
        },
        "power_w": slow.duty.inference_power_w,
        "power_share": slow.inference_power_share,
        "busy": slow.duty.inference_busy,
    }
    assert data["config"] == {"lr_layer": 27, **CostConfig(events_per_hour=100_000.0).as_dict()}


def test_the_inference_is_of_one_sample() -> None:
    one = report()
    layers = mobilenet_v1_layers(res=128, width=1.0, classes=50, lr_layer=27)
    two = inference_cost(layers, one.profile, 2)
    with pytest.raises(ValueError, match="one sample, not of 2"):
        EnergyReport(one.profile, one.config, one.lr_layer, one.event, two, one.duty)
