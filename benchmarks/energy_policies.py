"""Energy-aware learning policies on harvested energy: their effect on uptime and on learning.

Two parts, one table:

**A year, simulated** (``run_policy``, 10-minute steps). A node runs the default model (the one
``vega-emu up`` runs, its mean event of the digits ``nic`` benchmark) on ``vega-hw`` with 1500 LRs
at 8 bits, one learning event per minute, and sends its telemetry over BLE; it stores energy in a
small LiPo cell (100 mAh) charged by a 1 cm2 solar panel under the clear-sky model at 50 deg N
for a year from 1 January (seeded clouds). The table says how long the node was up, how many of
the events it learned (and how many of them reduced), and when it was first empty.

**A winter day and night, measured** with the node's real engine (:class:`NodeEngine`, in
process, on its simulated clock: the batches' ``t``; no broker): the 77 events of the digits
benchmark, one every 20 minutes from noon of 1 January at 50 deg N (25.7 hours), on ``vega-hw``
with a BLE radio, a 2 J store and the node's own harvester (``--harvest
solar:clear-sky:50:1``: a 50 cm2 panel, seeded clouds) -- small enough that the 16-hour night
empties it. Each policy (``always``, ``soc-threshold:0.3``, ``low-soc:0.5``, ``defer-to-sun``)
is run over the same events, and the table gives what the node did with them (learned, of them
reduced, skipped by the policy -- for ``defer-to-sun``, dropped after being held beyond 24 --,
lost while depleted, still held for the sun at the end), its uptime (the share of events that
found it on) and its **measured** final accuracy on the held-out set. Under ``defer-to-sun`` a
batch arriving while the harvest is below the node's mean load is held and learned when the
sun comes, so it counts as learned when (and if) it is.

    python benchmarks/energy_policies.py            # the table (benchmarks/results/...json)
    python benchmarks/energy_policies.py --measure  # runs the engine again (a few minutes)
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
from device.learning.nn import SGDConfig
from device.model.default import load_default
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import Hardware, NodeSettings, PowerSettings, ReplaySettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "energy_policies.json"
POLICIES = ("always", "soc-threshold:0.3", "low-soc:0.5", "defer-to-sun")
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
EVENTS_PER_HOUR = 60.0
CELL_MAH = 100.0
T0 = 1_764_000_000.0


NODE_POLICIES = POLICIES
SPACING_S = 1200.0
START_S = 12 * 3600.0  # noon of 1 January (solar time) on the harvester's clock
STORE_J = 2.0
HARVEST = "solar:clear-sky:50:1"


def run_node(policy: str, seed: int = 0) -> dict[str, object]:
    """The real engine over the benchmark's events under ``policy`` (module docstring)."""
    bundle = load_default(seed, factory=partial(factory_split, "digits", "nic", seed))
    scenario = build_scenario("digits", "nic", seed=seed)
    device = "node-0000"
    events = scenario.events(device)
    ex, ey = scenario.eval_set
    counts = dict.fromkeys(("learned", "reduced", "skipped", "depleted", "held"), 0)
    harvest_j = 0.0
    socs: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        settings = NodeSettings(
            device,
            Path(tmp),
            replay=ReplaySettings(1500, 8),
            seed=seed,
            sgd=SGDConfig(learning_rate=bundle.recommended_learning_rate),
            profile="vega-hw",
            hardware=Hardware(battery_j=STORE_J),
            power=PowerSettings(radio="ble", policy=policy, harvest=HARVEST),
        )
        engine = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
        try:
            engine.set_eval(EvalSet(ex, ey, "digits"))
            for seq, event in enumerate(events, 1):
                t = START_S + SPACING_S * (seq - 1)
                outcome = engine.apply(Batch(event.x, event.y, seq=seq, t=t, source="digits"))
                counts["skipped"] += len(outcome.dropped)  # held for the sun beyond 24
                for telemetry in (*outcome.held, outcome.telemetry):
                    harvest_j += telemetry.energy_j.get("harvest", 0.0)
                    socs.append(telemetry.battery.soc)
                    if telemetry is outcome.telemetry and outcome.refusal is not None:
                        # skipped, or held for the sun: counted when it is learned or dropped
                        counts["skipped"] += outcome.refusal.code == "energy_policy"
                    elif telemetry.state == "learning":
                        counts["learned"] += 1
                        counts["reduced"] += telemetry.to_dict().get("policy") == "reduced"
                    else:
                        counts["depleted"] += 1
            counts["held"] = engine.store.deferred_count()
            evaluation = engine.evaluate()
        finally:
            engine.close()
    assert evaluation is not None
    n = len(events)
    print(
        f"{policy}: {counts}, accuracy {evaluation.accuracy:.4f} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return {
        "policy": policy,
        "events": n,
        **counts,
        "uptime": (n - counts["depleted"]) / n,
        "accuracy": float(evaluation.accuracy),
        "harvest_j": harvest_j,
        "min_soc": min(socs),
    }


def measure(seed: int = 0) -> dict[str, object]:
    """Every node policy's measured run (:func:`run_node`), with the run's settings."""
    return {
        "seed": seed,
        "model": "default (digits nic)",
        "profile": "vega-hw",
        "radio": "ble",
        "store_j": STORE_J,
        "harvest": HARVEST,
        "spacing_s": SPACING_S,
        "start_s": START_S,
        "runs": [run_node(policy, seed) for policy in NODE_POLICIES],
    }


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
    parser.add_argument("--measure", action="store_true", help="run the engine again")
    args = parser.parse_args()
    if args.measure or not RESULTS.exists() or "runs" not in json.loads(RESULTS.read_text("utf-8")):
        measured = measure()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(measured, indent=1) + "\n", "utf-8")
    measured = json.loads(RESULTS.read_text("utf-8"))
    runs = {run["policy"]: run for run in measured["runs"]}
    rows = scenario_rows()
    print()
    print(
        "| policy | year: uptime | year: events learned | year: first empty "
        "| day: uptime | day: learned (reduced) | day: skipped | day: accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        arrived, learned = int(row["arrived"]), int(row["learned"])  # type: ignore[call-overload]
        share = learned / arrived if arrived else 0.0
        reduced = int(row["reduced"]) / learned if learned else 0.0  # type: ignore[call-overload]
        day = row["first_empty_day"]
        empty = "never" if day is None else f"day {float(day):.0f}"  # type: ignore[arg-type]
        year = f"| {row['policy']} | {float(row['uptime']):.1%} | {share:.1%}"  # type: ignore[arg-type]
        year += f" ({reduced:.1%} reduced)" if reduced else ""
        run = runs.get(str(row["policy"]))
        if run is None:
            print(f"{year} | {empty} | - | - | - | plan only |")
            continue
        n = int(run["events"])
        held = f", {run['held']} held" if run.get("held") else ""
        print(
            f"{year} | {empty} | {float(run['uptime']):.1%} | {run['learned']}/{n} "
            f"({run['reduced']}{held}) | {run['skipped']} | {float(run['accuracy']):.1%} |"
        )
    print()
    print(
        "day: the real engine over the 77 events of the digits benchmark, one every 20 min from "
        "a winter noon, on a 2 J store and the node's clear-sky harvester; accuracy measured; "
        "held: batches still held for the sun at the end (defer-to-sun)"
    )


if __name__ == "__main__":
    main()
