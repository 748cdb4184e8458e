"""Inference in the energy model: its cost, the inference duty in lifetime, the CLI, the README."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from device.cli import app
from device.energy import (
    FROZEN_PHASE,
    Battery,
    CostConfig,
    CostConfigError,
    Duty,
    LifetimeEstimator,
    average_power_w,
    event_cost,
    inference_cost,
    load_profile,
    sweep,
)
from device.energy.errors import BatteryStateError
from device.learning.layers import LayerInfo, lr_layer_of, with_lr_layer
from device.model.mobilenet import mobilenet_v1_layers

ROOT = Path(__file__).resolve().parents[2]
VEGA = load_profile("vega")
STM = load_profile("stm32l4")
runner = CliRunner()

# a small network: two frozen layers, then an adaptive head with a zero-cost kind in it
SMALL = [
    LayerInfo("c0", "conv", (3, 8, 8), (8, 8, 8), params=224, macs=13_824, adaptive=False),
    LayerInfo("pw1", "pointwise", (8, 8, 8), (16, 8, 8), params=144, macs=8_192, adaptive=False),
    LayerInfo("dw2", "depthwise", (16, 8, 8), (16, 8, 8), params=160, macs=9_216, adaptive=True),
    LayerInfo("r2", "relu", (16, 8, 8), (16, 8, 8), params=0, macs=0, adaptive=True),
    LayerInfo("pw3", "pointwise", (16, 8, 8), (32, 8, 8), params=544, macs=32_768, adaptive=True),
    LayerInfo("pool", "pool", (32, 8, 8), (32,), params=0, macs=0, adaptive=True),
    LayerInfo("fc4", "linear", (32,), (10,), params=330, macs=320, adaptive=True),
]


def _seconds(macs: int, mac_per_cycle: float, profile=VEGA) -> float:
    return macs / mac_per_cycle * (1 + profile.tiling_overhead) / profile.freq_hz


def test_cost_is_the_sum_of_the_per_layer_forward_costs_by_hand() -> None:
    n = 5
    cost = inference_cost(SMALL, VEGA, n)
    frozen_s = _seconds(13_824 * n, VEGA.int8_mac_per_cycle) + _seconds(
        8_192 * n, VEGA.int8_mac_per_cycle
    )
    fp32 = VEGA.fp32
    adaptive_s = (
        _seconds(9_216 * n, fp32["depthwise"].forward)
        + _seconds(32_768 * n, fp32["pointwise"].forward)
        + _seconds(320 * n, fp32["linear"].forward)
    )
    assert cost.n_samples == n
    assert cost.latency_s["frozen"] == pytest.approx(frozen_s, rel=1e-12)
    assert cost.latency_s["adaptive"] == pytest.approx(adaptive_s, rel=1e-12)
    assert cost.latency_s["total"] == pytest.approx(frozen_s + adaptive_s, rel=1e-12)
    for stage, seconds in (("frozen", frozen_s), ("adaptive", adaptive_s)):
        assert cost.energy_j[stage] == pytest.approx(VEGA.active_w * seconds, rel=1e-12)
    # forward only: frozen layers INT8, adaptive layers FP32 forward, nothing else
    phases = {layer.name: set(layer.phases) for layer in cost.layers}
    assert phases["c0"] == phases["pw1"] == {FROZEN_PHASE}
    assert phases["dw2"] == phases["pw3"] == phases["fc4"] == {"forward"}
    assert phases["r2"] == phases["pool"] == set()


def test_frozen_stage_is_costed_as_in_a_learning_event() -> None:
    layers = mobilenet_v1_layers(lr_layer=27)
    event = event_cost(layers, VEGA, CostConfig(), n_new=300, n_replay=1500)
    inference = inference_cost(layers, VEGA, 300)
    assert inference.latency_s["frozen"] == event.latency_s["frozen"]
    assert inference.energy_j["frozen"] == event.energy_j["frozen"]
    assert inference.latency_s["frozen"] == pytest.approx(1.25)  # the paper's measurement
    # the adaptive stage: forward over 300 samples, much less than training over the plan
    assert 0 < inference.energy_j["adaptive"] < event.energy_j["adaptive"] / 4


@given(st.integers(min_value=1, max_value=100_000))
def test_cost_is_linear_in_the_number_of_samples(n: int) -> None:
    one = inference_cost(SMALL, STM, 1)
    many = inference_cost(SMALL, STM, n)
    for part in ("frozen", "adaptive", "total"):
        assert many.energy_j[part] == pytest.approx(n * one.energy_j[part], rel=1e-12)
        assert many.latency_s[part] == pytest.approx(n * one.latency_s[part], rel=1e-12)
        assert many.per_sample().energy_j[part] == pytest.approx(one.energy_j[part], rel=1e-12)
    assert many.per_sample().n_samples == 1
    assert [layer.macs_per_sample for layer in many.per_sample().layers] == [
        layer.macs_per_sample for layer in one.layers
    ]


def test_lr_layer_resplits_the_layers() -> None:
    at_27 = inference_cost(mobilenet_v1_layers(lr_layer=27), VEGA, 1)
    resplit = inference_cost(mobilenet_v1_layers(lr_layer=19), VEGA, 1, lr_layer=27)
    assert resplit.as_dict() == at_27.as_dict()
    assert [layer.adaptive for layer in resplit.layers] == [
        layer.adaptive for layer in at_27.layers
    ]
    for lr_layer in range(1, 28):
        layers = with_lr_layer(mobilenet_v1_layers(lr_layer=27), lr_layer)
        assert layers == mobilenet_v1_layers(lr_layer=lr_layer)
        assert lr_layer_of(layers) == lr_layer
    with pytest.raises(CostConfigError, match="no layer numbered 99"):
        inference_cost(SMALL, VEGA, 1, lr_layer=99)


@pytest.mark.parametrize("n", [0, -3])
def test_bad_sample_counts(n: int) -> None:
    with pytest.raises(CostConfigError, match="n_samples must be >= 1"):
        inference_cost(SMALL, VEGA, n)


# -- the inference duty ------------------------------------------------------------------------


def _scenario(profile=VEGA) -> tuple[float, float, float, float]:
    """(J per event, s per event, J per inference, s per inference) of MobileNet-V1, LR 27."""
    layers = mobilenet_v1_layers(lr_layer=27)
    event = event_cost(layers, profile, CostConfig(), n_new=300, n_replay=1500)
    one = inference_cost(layers, profile, 1)
    return (
        event.energy_j["total"],
        event.latency_s["total"],
        one.energy_j["total"],
        one.latency_s["total"],
    )


def _energy_json(*args: str) -> dict:
    base = ["energy", "--json", "--mobilenet-v1", "--lr-layer", "27"]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("profile", [VEGA, STM])
@pytest.mark.parametrize("rate", [0.5, 1.0, 2.0])
def test_inference_rate_changes_lifetime_as_the_arithmetic_says(profile, rate: float) -> None:
    e_event, t_event, e_inf, t_inf = _scenario(profile)
    events_per_hour = 0.5 if profile is STM else 60.0
    busy = events_per_hour * t_event / 3600 + rate * t_inf
    assert busy < 1
    power = e_event * events_per_hour / 3600 + e_inf * rate + profile.sleep_w * (1 - busy)
    expected_h = profile.capacity_mah * 3.6 * profile.voltage_v / power / 3600
    data = _energy_json(
        "--profile",
        profile.name,
        "--events-per-hour",
        str(events_per_hour),
        "--inference-rate",
        str(rate),
    )
    assert data["lifetime_h"] == pytest.approx(expected_h, rel=1e-12)
    assert data["power_w"] == pytest.approx(power, rel=1e-12)
    assert data["sustainable"] is True
    without = _energy_json("--profile", profile.name, "--events-per-hour", str(events_per_hour))
    assert data["lifetime_h"] < without["lifetime_h"]
    assert data["max_events_per_hour"] == pytest.approx((1 - rate * t_inf) * 3600 / t_event)


@pytest.mark.parametrize("events_per_hour", [0.25, 1.0, 60.0, 1e6])
def test_rate_zero_gives_the_numbers_without_inference_exactly(events_per_hour: float) -> None:
    e_event, t_event, e_inf, t_inf = _scenario()
    # the model before inference: R capped at 3600 / latency, P = E R / 3600 + P_sleep (1 - busy)
    capped = min(events_per_hour, 3600 / t_event)
    busy = min(1.0, capped * t_event / 3600)
    before = e_event * capped / 3600 + VEGA.sleep_w * (1.0 - busy)
    duty = Duty.of(
        energy_per_event_j=e_event,
        latency_s=t_event,
        events_per_hour=events_per_hour,
        sleep_w=VEGA.sleep_w,
        battery_j=VEGA.battery_j,
        inference_per_s=0.0,
        energy_per_inference_j=e_inf,
        latency_per_inference_s=t_inf,
    )
    assert duty.power_w == before
    assert duty.lifetime_h == VEGA.battery_j / before / 3600
    assert duty.max_events_per_hour == 3600 / t_event
    assert duty.sustainable == (events_per_hour <= 3600 / t_event)
    assert duty.inference_power_w == 0.0
    rate_zero = _energy_json("--events-per-hour", str(events_per_hour), "--inference-rate", "0")
    no_flag = _energy_json("--events-per-hour", str(events_per_hour))
    assert rate_zero == no_flag


def test_an_unsustainable_duty_is_reported() -> None:
    _, t_event, _, t_inf = _scenario()
    rate = 300.0  # 300 x 4.26 ms: more than all the time
    assert rate * t_inf > 1
    data = _energy_json("--events-per-hour", "60", "--inference-rate", str(rate))
    assert data["sustainable"] is False
    assert data["max_events_per_hour"] == 0.0
    assert data["inference"]["busy"] == pytest.approx(rate * t_inf)
    # scaled down to fit: the device never sleeps, it computes at about P_active
    assert data["power_w"] == pytest.approx(VEGA.active_w, rel=0.01)
    shown = runner.invoke(
        app, ["energy", "--lr-layer", "27", "--events-per-hour", "60", "--inference-rate", "300"]
    )
    assert shown.exit_code == 0, shown.output
    assert "not sustainable" in " ".join(shown.stdout.split())
    # both rates scaled by the same factor: the device is busy exactly all the time
    duty = Duty.of(
        energy_per_event_j=1.0,
        latency_s=t_event,
        events_per_hour=3600 / t_event,
        sleep_w=1.0,
        battery_j=1.0,
        inference_per_s=1 / t_inf,
        energy_per_inference_j=1.0,
        latency_per_inference_s=t_inf,
    )
    assert not duty.sustainable
    assert duty.power_w == pytest.approx(0.5 / t_event + 0.5 / t_inf)


def test_the_json_has_the_inference_fields() -> None:
    data = _energy_json("--events-per-hour", "60", "--inference-rate", "1")
    inference = data["inference"]
    assert set(inference) == {"per_s", "per_sample", "power_w", "power_share", "busy"}
    assert inference["per_s"] == 1.0
    per_sample = inference["per_sample"]
    for key in ("latency_s", "energy_j"):
        assert set(per_sample[key]) == {"frozen", "adaptive", "total"}
    _, _, e_inf, t_inf = _scenario()
    assert per_sample["energy_j"]["total"] == e_inf
    assert per_sample["latency_s"]["total"] == t_inf
    assert inference["power_w"] == pytest.approx(e_inf)
    assert inference["power_share"] == pytest.approx(e_inf / data["power_w"])
    assert inference["busy"] == pytest.approx(t_inf)


@pytest.mark.parametrize("command", ["energy", "plan"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_bad_inference_rates_are_clear_errors(command: str, value: str, tmp_path: Path) -> None:
    args = [command, "--inference-rate", value]
    if command == "plan":
        args += ["--csv", str(tmp_path / "p.csv"), "--plot", str(tmp_path / "p.png")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--inference-rate must be a finite number >= 0" in result.output
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(
    "name", ["inference_per_s", "energy_per_inference_j", "latency_per_inference_s"]
)
@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_bad_duty_values_name_the_value(name: str, value: float) -> None:
    values = {
        "energy_per_event_j": 1.0,
        "latency_s": 1.0,
        "events_per_hour": 1.0,
        "sleep_w": 1e-6,
        "battery_j": 1.0,
        name: value,
    }
    with pytest.raises(CostConfigError, match=f"{name} must be finite and >= 0"):
        Duty.of(**values)


def test_help_explains_the_option() -> None:
    for command in ("energy", "plan"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        assert "--inference-rate" in text and "per second" in text


def test_plan_includes_inference_in_every_row(tmp_path: Path) -> None:
    def rows(rate: float):
        return sweep(
            lambda layer: mobilenet_v1_layers(lr_layer=layer),
            VEGA,
            CostConfig(),
            lr_layers=[25, 27],
            lr_sizes=[1500],
            lr_bits=[8],
            rates=[1.0, 2.0],  # sustainable with one inference per second
            inference_per_s=rate,
        )

    for plain, loaded in zip(rows(0.0), rows(1.0), strict=True):
        one = inference_cost(mobilenet_v1_layers(lr_layer=plain.lr_layer), VEGA, 1)
        busy = plain.events_per_hour * plain.latency_s / 3600 + one.latency_s["total"]
        power = (
            plain.energy_j * plain.events_per_hour / 3600
            + one.energy_j["total"]
            + VEGA.sleep_w * (1 - busy)
        )
        assert loaded.lifetime_h == pytest.approx(VEGA.battery_j / power / 3600, rel=1e-12)
        assert loaded.sustainable and loaded.lifetime_h < plain.lifetime_h
        assert loaded.inference_per_s == 1.0
        assert loaded.energy_per_inference_j == one.energy_j["total"]
    csv_path, plot = tmp_path / "plan.csv", tmp_path / "plan.png"
    args = ["plan", "--lr-layers", "27", "--lr-sizes", "1500", "--lr-bits", "8", "--rates", "60"]
    result = runner.invoke(
        app, [*args, "--inference-rate", "1", "--csv", str(csv_path), "--plot", str(plot)]
    )
    assert result.exit_code == 0, result.output
    assert "1 inferences/s" in result.stdout
    header, row = csv_path.read_text("utf-8").splitlines()[:2]
    fields = dict(zip(header.split(","), row.split(","), strict=True))
    expected = _energy_json("--events-per-hour", "60", "--inference-rate", "1")
    assert float(fields["lifetime_h"]) == pytest.approx(expected["lifetime_h"], rel=1e-12)
    assert float(fields["inference_per_s"]) == 1.0


# -- the node's projection ----------------------------------------------------------------------


def test_the_estimator_charges_observed_inference() -> None:
    e_event, t_event, e_inf, t_inf = _scenario()
    battery = Battery.from_profile(VEGA)
    estimator = LifetimeEstimator(nominal_events_per_hour=60.0)
    for i in range(11):  # one event a minute for ten minutes
        estimator.observe(60.0 * i, e_event, t_event)
    without = estimator.lifetime_h(battery)
    assert estimator.inference_calls_per_s == 0.0
    estimator.observe_inference(0.0, 2 * e_inf, 2 * t_inf)  # one message: no rate yet
    assert estimator.lifetime_h(battery) == without
    for second in range(1, 601):  # then a message of 2 samples every second
        estimator.observe_inference(float(second), 2 * e_inf, 2 * t_inf)
    assert estimator.inference_calls_per_s == pytest.approx(1.0)
    expected = Duty.of(
        energy_per_event_j=e_event,
        latency_s=t_event,
        events_per_hour=60.0,
        sleep_w=VEGA.sleep_w,
        battery_j=battery.remaining_j,
        inference_per_s=2.0,
        energy_per_inference_j=e_inf,
        latency_per_inference_s=t_inf,
    )
    assert estimator.lifetime_h(battery) == pytest.approx(expected.lifetime_h, rel=1e-9)
    assert estimator.duty(battery).lifetime_h == estimator.lifetime_h(battery)
    assert estimator.power_w(VEGA.sleep_w) == pytest.approx(
        average_power_w(
            energy_per_event_j=e_event,
            latency_s=t_event,
            events_per_hour=60.0,
            sleep_w=VEGA.sleep_w,
            inference_per_s=1.0,
            energy_per_inference_j=2 * e_inf,
            latency_per_inference_s=2 * t_inf,
        )
    )
    restored = LifetimeEstimator.from_dict(estimator.to_dict())
    assert restored == estimator
    with pytest.raises(BatteryStateError, match="before the last inference"):
        estimator.observe_inference(10.0, e_inf, t_inf)
    for bad in (-1.0, math.nan):
        with pytest.raises(BatteryStateError, match="energy_j must be finite"):
            estimator.observe_inference(700.0, bad, t_inf)


def test_a_state_saved_before_inference_restores_without_it() -> None:
    old = {
        "nominal_events_per_hour": 60.0,
        "nominal_energy_j": 0.2,
        "nominal_latency_s": 3.0,
        "events": 3,
        "first_t": 0.0,
        "last_t": 120.0,
        "energy_sum_j": 0.6,
        "latency_sum_s": 9.0,
    }
    restored = LifetimeEstimator.from_dict(old)
    assert restored.inferences == 0 and restored.inference_calls_per_s == 0.0
    with pytest.raises(BatteryStateError, match="missing"):
        LifetimeEstimator.from_dict({k: v for k, v in old.items() if k != "events"})


# -- the README ---------------------------------------------------------------------------------


def test_the_readme_table_is_the_scripts_output() -> None:
    script = runpy.run_path(str(ROOT / "benchmarks" / "lifetime_table.py"), run_name="table")
    table = script["markdown_table"]()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert table in readme
    assert "`python benchmarks/lifetime_table.py`" in readme
    vega_rows = [line for line in table.splitlines() if line.startswith("| vega |")]
    hours = [float(row.split("|")[7].replace(",", "")) for row in vega_rows]
    assert hours[1] < hours[0]  # one inference per second shortens the lifetime
