"""Energy-aware policies: parsing, and their effect on uptime and learning in a simulated node."""

from __future__ import annotations

import numpy as np
import pytest

from device.energy import CostConfig, load_profile
from device.energy.chemistry import ideal
from device.energy.errors import PolicyError
from device.energy.harvest import ClearSky, ConstantSource, Panel
from device.energy.policy import NodeLoad, Policy, reduced_config, run_policy
from device.energy.simulate import Storage, simulate

VEGA = load_profile("vega")
DAY_S = 86400.0
STORE = Storage(ideal(VEGA), 1000.0)
# 1 mW asleep, 60 events/h of 0.18 J: a mean of 4 mW; a reduced event costs 0.06 J
LOAD = NodeLoad(base_w=0.001, events_per_hour=60, event_j=0.18, reduced_j=0.06)


def test_parse() -> None:
    assert Policy.parse("soc-threshold:0.3") == Policy("soc-threshold", 0.3)
    assert Policy.parse("low-soc:0.5").describe() == "low-soc:0.5"
    assert Policy.parse("defer-to-sun") == Policy("defer-to-sun")
    for bad in ("soc-threshold", "soc-threshold:abc", "low-soc:1.5", "sunny", "always:1"):
        with pytest.raises(PolicyError):
            Policy.parse(bad)


def test_reduced_config_halves_epochs_and_replays() -> None:
    reduced = reduced_config(CostConfig())
    assert (reduced.epochs, reduced.mb_size, reduced.new_per_mb) == (2, 21 + 53, 21)


def test_always_matches_the_vectorised_simulation() -> None:
    run = run_policy(Policy(), LOAD, STORE, ConstantSource(0.003), horizon_s=30 * DAY_S, step_s=60)
    same = simulate(LOAD.mean_w, STORE, ConstantSource(0.003), horizon_s=30 * DAY_S, step_s=60)
    assert same.depleted_at_s == pytest.approx(1000.0 / 0.001, rel=1e-6)
    assert run.depleted_at_s == pytest.approx(same.depleted_at_s, abs=60)
    assert run.uptime < 1 and run.learned < run.arrived


def test_enough_harvest_learns_everything() -> None:
    run = run_policy(Policy(), LOAD, STORE, ConstantSource(0.005), horizon_s=10 * DAY_S)
    assert run.neutral and run.uptime == 1 and run.learned == run.arrived == 240 * 60


def test_soc_threshold_keeps_the_node_up_by_learning_less() -> None:
    source = ConstantSource(0.0015)  # above the sleep load, below the mean load
    always = run_policy(Policy(), LOAD, STORE, source, horizon_s=30 * DAY_S, step_s=60)
    careful = run_policy(
        Policy.parse("soc-threshold:0.3"), LOAD, STORE, source, horizon_s=30 * DAY_S, step_s=60
    )
    assert not always.neutral and careful.neutral
    assert careful.uptime == 1 > always.uptime
    assert 0 < careful.learned < careful.arrived
    assert careful.final_soc == pytest.approx(0.3, abs=0.01)


def test_low_soc_reduces_events_and_lasts_longer() -> None:
    always = run_policy(Policy(), LOAD, STORE, horizon_s=5 * DAY_S, step_s=60)
    low = run_policy(Policy.parse("low-soc:0.5"), LOAD, STORE, horizon_s=5 * DAY_S, step_s=60)
    assert low.reduced > 0 and low.depleted_at_s > always.depleted_at_s  # type: ignore[operator]
    # 500 J at 4 mW, then 500 J at 2 mW
    assert low.depleted_at_s == pytest.approx(500 / 0.004 + 500 / 0.002, abs=120)


def test_defer_to_sun_learns_in_daylight_only() -> None:
    sky = ClearSky(45, 172, seed=0, panel=Panel(0.01, 0.15))
    run = run_policy(Policy("defer-to-sun"), LOAD, STORE, sky, horizon_s=7 * DAY_S, step_s=600)
    assert run.neutral and 0 < run.learned < run.arrived
    dark = run_policy(Policy("defer-to-sun"), LOAD, STORE, None, horizon_s=DAY_S, step_s=600)
    assert dark.learned == 0 and dark.neutral
    t = np.arange(0, DAY_S, 600.0)
    assert sky.power_w(t)[0] == 0  # midnight: events wait
