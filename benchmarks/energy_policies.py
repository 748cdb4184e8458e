"""Energy-aware learning policies on harvested energy: their effect on uptime and on learning.

A node runs the default model (the one ``vega-emu up`` runs, its mean event of the digits
``nic`` benchmark) on ``vega-hw`` with 1500 LRs at 8 bits, one learning event per minute, and
sends its telemetry over BLE; it stores energy in a small LiPo cell (100 mAh) charged by a
1 cm2 solar panel under the clear-sky model at 50 deg N for a year from 1 January (seeded
clouds). Each policy of ``device.energy.policy`` is simulated forward over the year
(``run_policy``, 10-minute steps) and the table says how long the node was up, how many of the
events it learned (and how many of them reduced), and when it was first empty.

The **accuracy** column is an estimate, not a run of the policy: the node's learning engine is
run once per share of events (0, 25, 50, 75, 100 % of the benchmark's 77 events, evenly spread,
the others skipped; and once with every event reduced as ``low-soc`` reduces it), its final
accuracy on the held-out set measured, and each policy's accuracy interpolated at its share of
events learned (for ``low-soc``, minus its reduced share times the loss of an all-reduced run).
Which events a policy skips in the year (night, winter) is not what the even spread skips, and
a year has 525,600 events where the benchmark has 77: the column says what learning fewer (or
lighter) events costs on this benchmark, no more.

    python benchmarks/energy_policies.py            # uses benchmarks/results/energy_policies.json
    python benchmarks/energy_policies.py --measure  # re-measures the accuracy (a few minutes)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from dataset_stream import build_scenario
from dataset_stream.protocol import Batch, EvalSet
from dataset_stream.scenarios import factory_split
from device.app.energy import cost_bundle
from device.energy import (
    ClearSky,
    CostConfig,
    NodeLoad,
    Panel,
    Policy,
    Storage,
    Temperature,
    Traffic,
    event_cost,
    load_chemistry,
    load_profile,
    load_radio,
    price_traffic,
    reduced_config,
    run_policy,
)
from device.learning.learner import TrainConfig
from device.learning.nn import SGDConfig
from device.model.default import load_default
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings, ReplaySettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "energy_policies.json"
POLICIES = ("always", "soc-threshold:0.3", "low-soc:0.5", "defer-to-sun")
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
EVENTS_PER_HOUR = 60.0
CELL_MAH = 100.0
T0 = 1_764_000_000.0


def measure_accuracy(seed: int = 0) -> dict[str, object]:
    """Final accuracy of the default model after learning an evenly spread share of the
    benchmark's events (and after learning all of them reduced)."""
    bundle = load_default(seed, factory=partial(factory_split, "digits", "nic", seed))
    scenario = build_scenario("digits", "nic", seed=seed)
    device = "node-0000"
    events = scenario.events(device)
    ex, ey = scenario.eval_set

    def run(chosen: list[int], train: TrainConfig) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            settings = NodeSettings(
                device,
                Path(tmp),
                replay=ReplaySettings(1500, 8),
                seed=seed,
                sgd=SGDConfig(learning_rate=bundle.recommended_learning_rate),
                train=train,
            )
            engine = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
            engine.set_eval(EvalSet(ex, ey, "digits"))
            for seq, index in enumerate(chosen, 1):
                event = events[index]
                engine.apply(Batch(event.x, event.y, seq=seq, t=T0 + 60 * seq, source="digits"))
            evaluation = engine.evaluate()
            engine.close()
        assert evaluation is not None
        return float(evaluation.accuracy)

    n = len(events)
    by_share = {}
    for share in SHARES:
        count = round(share * n)
        chosen = sorted({int(i) for i in np.linspace(0, n - 1, count)}) if count else []
        started = time.perf_counter()
        by_share[str(share)] = run(chosen, TrainConfig())
        print(
            f"share {share:.2f}: {by_share[str(share)]:.4f} ({time.perf_counter() - started:.0f} s)"
        )
    full = TrainConfig()
    reduced = reduced_config(CostConfig(mb_size=full.mb_size, new_per_mb=full.new_per_mb))
    light = TrainConfig(epochs=reduced.epochs, mb_size=reduced.mb_size, new_per_mb=full.new_per_mb)
    all_reduced = run(list(range(n)), light)
    print(f"all reduced: {all_reduced:.4f}")
    return {"seed": seed, "events": n, "by_share": by_share, "all_reduced": all_reduced}


def accuracy_of(measured: dict[str, object], learned: float, reduced: float) -> float:
    """The estimate of the module docstring: interpolated at ``learned`` (share of events),
    less ``reduced`` (share of them reduced) times what reducing every event loses."""
    table = measured["by_share"]
    assert isinstance(table, dict)
    xs = [float(k) for k in table]
    ys = [float(v) for v in table.values()]
    base = float(np.interp(learned, xs, ys))
    loss = ys[-1] - float(measured["all_reduced"])  # type: ignore[arg-type]
    return base - reduced * loss


def scenario_rows() -> list[dict[str, object]]:
    """Each policy's year on the scenario of the module docstring."""
    profile = load_profile("vega-hw")
    costed = cost_bundle(None)
    layers = list(costed.layers)
    config = CostConfig(new_per_event=costed.new_per_event, events_per_hour=EVENTS_PER_HOUR)
    full = event_cost(layers, profile, config, n_new=config.new_per_event, n_replay=config.lr_size)
    light_config = reduced_config(config)
    light = event_cost(
        layers, profile, light_config, n_new=config.new_per_event, n_replay=config.lr_size
    )
    radio = load_radio("ble")
    traffic = price_traffic(radio, Traffic(EVENTS_PER_HOUR))
    telemetry_j = traffic.telemetry_w * 3600.0 / EVENTS_PER_HOUR
    load = NodeLoad(
        base_w=profile.sleep_w + traffic.idle_w,
        events_per_hour=EVENTS_PER_HOUR,
        event_j=full.energy_j["total"] + telemetry_j,
        reduced_j=light.energy_j["total"] + telemetry_j,
    )
    lipo = load_chemistry("lipo")
    storage = Storage(lipo, lipo.usable_j(CELL_MAH), Temperature(20.0))
    sky = ClearSky(latitude_deg=50.0, day_of_year=1, seed=0, panel=Panel(1e-4, 0.15))
    harvest_w = float(sky.power_w(np.arange(0, 365 * 86400, 600.0)).mean())
    print(
        f"load: {load.mean_w * 1e3:.3f} mW mean ({full.energy_j['total'] * 1e3:.1f} mJ per event, "
        f"{light.energy_j['total'] * 1e3:.1f} mJ reduced, telemetry {telemetry_j * 1e6:.0f} uJ); "
        f"harvest: {sky.describe()}, mean {harvest_w * 1e3:.3f} mW; "
        f"cell: {CELL_MAH:g} mAh lipo, {storage.capacity_j:.0f} J"
    )
    rows = []
    for text in POLICIES:
        policy = Policy.parse(text)
        run = run_policy(policy, load, storage, sky, step_s=600.0)
        rows.append(
            {
                "policy": text,
                "uptime": run.uptime,
                "arrived": run.arrived,
                "learned": run.learned,
                "reduced": run.reduced,
                "first_empty_day": None if run.depleted_at_s is None else run.depleted_at_s / 86400,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="re-measure the accuracy")
    args = parser.parse_args()
    if args.measure or not RESULTS.exists():
        measured = measure_accuracy()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(measured, indent=1), "utf-8")
    measured = json.loads(RESULTS.read_text("utf-8"))
    rows = scenario_rows()
    print()
    print("| policy | uptime | events learned | of them reduced | first empty | accuracy (est.) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        arrived, learned = int(row["arrived"]), int(row["learned"])  # type: ignore[call-overload]
        share = learned / arrived if arrived else 0.0
        reduced = int(row["reduced"]) / learned if learned else 0.0  # type: ignore[call-overload]
        day = row["first_empty_day"]
        empty = "never" if day is None else f"day {float(day):.0f}"  # type: ignore[arg-type]
        accuracy = accuracy_of(measured, share, reduced)
        print(
            f"| {row['policy']} | {float(row['uptime']):.1%} | {share:.1%} | "  # type: ignore[arg-type]
            f"{reduced:.1%} | {empty} | {accuracy:.1%} |"
        )
    print()
    print(
        "accuracy (est.): final accuracy on the digits benchmark after learning that share of "
        "its events (measured once per share), not a run of the policy; see the docstring"
    )


if __name__ == "__main__":
    main()
