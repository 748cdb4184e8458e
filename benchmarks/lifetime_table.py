"""Battery lifetime in the paper's deployment scenario, with and without an inference duty.

MobileNet-V1 1.0/128 with 50 classes, LR layer 27, the default learning event (300 new images,
1500 LRs at 8 bits, mini-batches of 128 = 21 new + 107 replays, 4 epochs), one learning event per
minute, and either no inference or one inference (one sample) per second, on a full battery of
each shipped profile. It runs the functions behind ``vega-emu energy`` (``event_cost``,
``inference_cost``, ``Duty.of``) and prints the markdown table the README quotes:

    python benchmarks/lifetime_table.py
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from device.energy import CostConfig, Duty, event_cost, inference_cost, load_profile
from device.model.mobilenet import mobilenet_v1_layers

PROFILES = ("vega", "stm32l4")
LR_LAYER = 27
EVENTS_PER_HOUR = 60.0  # one learning event per minute
INFERENCE_RATES = (0.0, 1.0)  # samples classified per second
HOURS_PER_DAY = 24.0


def duty(profile_name: str, inference_per_s: float) -> tuple[Duty, float, float]:
    """The scenario's duty on one profile: ``(duty, J per event, J per inference)``."""
    profile = load_profile(profile_name)
    layers = mobilenet_v1_layers(res=128, width=1.0, classes=50, lr_layer=LR_LAYER)
    config = CostConfig()
    event = event_cost(layers, profile, config, n_new=config.new_per_event, n_replay=config.lr_size)
    inference = inference_cost(layers, profile, 1)
    found = Duty.of_costs(
        event, inference, profile, events_per_hour=EVENTS_PER_HOUR, inference_per_s=inference_per_s
    )
    return found, event.energy_j["total"], inference.energy_j["total"]


def markdown_table(profiles: Sequence[str] = PROFILES) -> str:
    """The README's table, one row per profile and inference rate."""
    lines = [
        "| profile | inferences/s | J per event | mJ per inference | mean power, mW "
        "| inference share | lifetime, h | lifetime, days |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in profiles:
        for rate in INFERENCE_RATES:
            found, event_j, inference_j = duty(name, rate)
            hours = f"{found.lifetime_h:,.0f}"
            days = f"{found.lifetime_h / HOURS_PER_DAY:,.0f}"
            if not found.sustainable:
                limit = f"{found.max_events_per_hour:.3g}"
                hours += f" (not sustainable: at most {limit} events/h)"
            lines.append(
                f"| {name} | {rate:g} | {event_j:.3g} | {inference_j * 1e3:.3g} "
                f"| {found.power_w * 1e3:.3g} | {found.inference_power_w / found.power_w:.1%} "
                f"| {hours} | {days} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--profile", action="append", help="profile(s) (default: vega, stm32l4)")
    args = parser.parse_args()
    print(markdown_table(args.profile or PROFILES))


if __name__ == "__main__":
    main()
