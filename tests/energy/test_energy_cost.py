"""Event cost: conservation, monotonicity, units, and agreement with the AR1* plan."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.energy import (
    FROZEN_PHASE,
    CostConfig,
    CostConfigError,
    event_cost,
    load_profile,
    memory_map,
)
from device.learning.ar1 import plan_event
from device.learning.layers import LayerInfo
from device.model.mobilenet import mobilenet_v1_layers

VEGA = load_profile("vega")
STM = load_profile("stm32l4")
CONFIG = CostConfig()
KINDS = ["conv", "pointwise", "depthwise", "linear", "relu", "pool", "batchnorm"]


@st.composite
def models(draw: st.DrawFn) -> list[LayerInfo]:
    """A random chain of layers: a frozen prefix, then at least one adaptive layer."""
    count = draw(st.integers(1, 8))
    cut = draw(st.integers(0, count - 1))
    layers = []
    for i in range(count):
        kind = draw(st.sampled_from(KINDS))
        shape = (draw(st.integers(1, 64)), draw(st.integers(1, 8)), draw(st.integers(1, 8)))
        layers.append(
            LayerInfo(
                name=f"l{i}",
                kind=kind,
                in_shape=shape,
                out_shape=shape,
                params=draw(st.integers(0, 10**6)),
                macs=draw(st.integers(0, 10**8)),
                adaptive=i >= cut,
            )
        )
    return layers


@settings(max_examples=150, deadline=None)
@given(
    layers=models(),
    profile=st.sampled_from([VEGA, STM]),
    mb_size=st.integers(1, 256),
    new_frac=st.floats(0.01, 1.0),
    epochs=st.integers(1, 8),
    lr_bits=st.sampled_from([1, 4, 6, 7, 8, 32]),
    n_new=st.integers(0, 1000),
    n_replay=st.integers(0, 5000),
)
def test_parts_sum_to_totals(
    layers: list[LayerInfo],
    profile,
    mb_size: int,
    new_frac: float,
    epochs: int,
    lr_bits: int,
    n_new: int,
    n_replay: int,
) -> None:
    new_per_mb = max(1, math.floor(mb_size * new_frac))
    config = CostConfig(
        lr_size=n_replay, lr_bits=lr_bits, mb_size=mb_size, new_per_mb=new_per_mb, epochs=epochs
    )
    cost = event_cost(layers, profile, config, n_new=n_new, n_replay=n_replay)
    latency, energy = cost.latency_s, cost.energy_j
    assert latency["total"] == pytest.approx(latency["frozen"] + latency["adaptive"], rel=1e-12)
    parts = energy["frozen"] + energy["adaptive"] + energy["memory"]
    assert energy["total"] == pytest.approx(parts, rel=1e-12)
    by_layer = math.fsum(layer.joules for layer in cost.layers)
    assert by_layer + energy["memory"] == pytest.approx(energy["total"], rel=1e-9, abs=1e-15)
    # every phase: energy = P_active x time, time = cycles / f
    plan = plan_event(n_new, n_replay, mb_size=mb_size, new_per_mb=new_per_mb, epochs=epochs)
    assert cost.plan == plan
    for layer in cost.layers:
        for name, phase in layer.phases.items():
            assert phase.joules == pytest.approx(profile.active_w * phase.seconds)
            assert phase.seconds == pytest.approx(phase.cycles / profile.freq_hz)
            samples = n_new if name == FROZEN_PHASE else plan.samples_trained
            assert phase.macs == layer.macs_per_sample * samples
    assert all(value >= 0 for value in (*latency.values(), *energy.values()))


def test_every_trained_layer_pays_three_phases() -> None:
    """The first trained layer's backward-error pass is charged too: the paper's measured steps
    T(l) - T(l+1) equal layer l's three phases (docs/energy-model.md, Calibration)."""
    layers = mobilenet_v1_layers(lr_layer=25)
    cost = event_cost(layers, VEGA, CONFIG, n_new=300, n_replay=1500)
    trained = [layer for layer in cost.layers if layer.adaptive and layer.phases]
    assert [layer.name for layer in trained] == ["dw25", "pw26", "fc27"]
    for layer in trained:
        assert set(layer.phases) == {"forward", "backward_error", "backward_gradient"}
    # so removing one layer from the trained range removes exactly its own three phases
    later = event_cost(mobilenet_v1_layers(lr_layer=26), VEGA, CONFIG, n_new=300, n_replay=1500)
    step = cost.latency_s["adaptive"] - later.latency_s["adaptive"]
    assert step == pytest.approx(trained[0].seconds)
    frozen = [layer for layer in cost.layers if not layer.adaptive]
    assert all(set(layer.phases) == {FROZEN_PHASE} for layer in frozen)


def _total(lr_layer: int = 27, n_replay: int = 1500, **changes: int) -> float:
    config = replace(CONFIG, **changes)
    layers = mobilenet_v1_layers(lr_layer=lr_layer)
    cost = event_cost(layers, VEGA, config, n_new=config.new_per_event, n_replay=n_replay)
    return cost.energy_j["total"]


def test_monotonic_in_epochs_replays_and_lr_layer() -> None:
    by_epochs = [_total(epochs=e) for e in range(1, 7)]
    assert by_epochs == sorted(by_epochs) and by_epochs[0] < by_epochs[-1]
    by_replays = [_total(n_replay=n, lr_size=max(n, 1)) for n in (0, 10, 50, 107, 500, 3000)]
    few = by_replays[:4]  # below a full mini-batch of replays, each LR adds work
    assert all(a < b for a, b in pairwise(few))
    assert by_replays == sorted(by_replays)  # beyond, only the memory traffic can grow
    by_layer = [_total(lr_layer=layer) for layer in range(27, 18, -1)]  # earlier = more work
    assert all(a < b for a, b in pairwise(by_layer))
    assert _total(new_per_event=600) > _total(new_per_event=300)
    assert _total(lr_bits=32) > _total(lr_bits=8) > _total(lr_bits=6)


def test_vega_units_against_hand_arithmetic() -> None:
    """LR layer 27: only the 1024 x 50 classifier trains; frozen stage = the 1.25 s measurement."""
    cost = event_cost(mobilenet_v1_layers(lr_layer=27), VEGA, CONFIG, n_new=300, n_replay=1500)
    # 300 new at 21 per mini-batch -> floor(300 / 21) = 14 full mini-batches of 128, 4 epochs
    assert cost.plan.samples_trained == 4 * 14 * 128 == 7168
    macs = 1024 * 50 * 7168
    expected = macs * (1 / 1.5 + 1 / 1.42 + 1 / 1.2) / 375e6  # three phases, tiling inside rates
    assert cost.latency_s["adaptive"] == pytest.approx(expected)
    assert 1.0 < cost.latency_s["adaptive"] < 3.0  # seconds, not ms: 393 M MACs at ~1.3/cycle
    assert cost.latency_s["frozen"] == pytest.approx(1.25)
    assert cost.energy_j["frozen"] == pytest.approx(0.062 * 1.25)
    # VEGA vs STM32L4 on the same training work: 7.2 x 9/4 x 375/80 ~ 76x (paper: ~65x)
    slow = event_cost(mobilenet_v1_layers(lr_layer=27), STM, CONFIG, n_new=300, n_replay=1500)
    speedup = slow.latency_s["adaptive"] / cost.latency_s["adaptive"]
    assert speedup == pytest.approx(7.2 * 9 / 4 * 375 / 80)
    assert 50 < speedup < 80


def test_memory_traffic_bytes() -> None:
    config = replace(CONFIG, lr_bits=7)
    cost = event_cost(mobilenet_v1_layers(lr_layer=27), VEGA, config, n_new=300, n_replay=1500)
    lr_bytes = math.ceil(1024 * 7 / 8) + 8
    traffic = cost.traffic
    assert traffic.lr_bytes == lr_bytes
    assert traffic.bytes_read == 4 * (6 * 106 + 8 * 107) * lr_bytes  # 22+106 x6, 21+107 x8
    assert traffic.bytes_written == 300 * lr_bytes
    pj = {r.name: r.pj_per_byte for r in VEGA.memory}[traffic.region]
    expected = (traffic.bytes_read + traffic.bytes_written) * pj * 1e-12
    assert cost.energy_j["memory"] == pytest.approx(expected)
    fewer = event_cost(
        mobilenet_v1_layers(lr_layer=27), VEGA, config, n_new=300, n_replay=1500, n_written=10
    )
    assert fewer.traffic.bytes_written == 10 * lr_bytes


def test_lr_bytes_match_the_replay_memory() -> None:
    from device.learning.replay.quant import row_bytes

    for bits in (1, 6, 7, 8, 32):
        config = replace(CONFIG, lr_bits=bits)
        meta = 0 if bits == 32 else 8
        assert config.lr_bytes(32768) == row_bytes(32768, bits) + meta


def test_memory_map_places_and_warns() -> None:
    small = memory_map(mobilenet_v1_layers(lr_layer=27), VEGA, CONFIG)
    assert small.fits and not small.warnings
    assert small.region_of("frozen_weights") == "MRAM"
    assert small.region_of("activations") == "L2"
    huge = memory_map(mobilenet_v1_layers(lr_layer=19), VEGA, replace(CONFIG, lr_bits=32))
    assert not huge.fits
    assert huge.region_of("lr_memory") is None
    assert any("lr_memory" in w and "does not fit on vega" in w for w in huge.warnings)
    for region in huge.regions:
        assert region.used_bytes <= region.capacity_bytes
    stm = memory_map(mobilenet_v1_layers(lr_layer=27), STM, CONFIG)
    assert any("frozen_weights" in w and "stm32l4" in w for w in stm.warnings)


def test_bad_inputs() -> None:
    layers = mobilenet_v1_layers(lr_layer=27)
    with pytest.raises(CostConfigError, match="n_new"):
        event_cost(layers, VEGA, CONFIG, n_new=-1, n_replay=0)
    frozen_only = [replace(layer, adaptive=False) for layer in layers]
    with pytest.raises(CostConfigError, match="no adaptive layer"):
        event_cost(frozen_only, VEGA, CONFIG, n_new=1, n_replay=0)
    with pytest.raises(CostConfigError, match="lr_bits"):
        CostConfig(lr_bits=12)
    with pytest.raises(CostConfigError, match="new_per_mb"):
        CostConfig(mb_size=16, new_per_mb=21)
    with pytest.raises(CostConfigError, match="events_per_hour"):
        CostConfig(events_per_hour=0)
