"""The energy model against the paper's measurements (Table IV of arXiv 2110.10486).

Analytical: it calls the real ``device.energy.event_cost`` (the code behind ``vega-emu energy``)
for MobileNet-V1 1.0/128, 50 classes, 300 new images, 1500 LRs at 8 bits, the default plan, so
its numbers are the same on every machine. It prints markdown tables and writes them between
markers:

    python benchmarks/calibration.py              # print the calibration table
    python benchmarks/calibration.py --write      # into docs/energy-model.md
    python benchmarks/calibration.py --readme     # the README's "One learning event" tables

``tests/energy/test_calibration.py`` checks that both files hold exactly this script's output.
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass
from pathlib import Path

from device.energy import CostConfig, Duty, EventCost, event_cost, inference_cost, load_profile
from device.model.mobilenet import mobilenet_v1_layers

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "energy-model.md"
README = ROOT / "README.md"
DOC_MARKERS = ("<!-- calibration:start -->", "<!-- calibration:end -->")
README_MARKERS = ("<!-- energy-tables:start -->", "<!-- energy-tables:end -->")

# [P] Table IV: measured cumulative latency of the adaptive stage per learning event on VEGA,
# seconds, for LR layer l (layers l..27 trained); and the frozen stage at both ends of the range.
PAPER_ADAPTIVE_S: dict[int, float] = {
    20: 2490.0,
    21: 1730.0,
    22: 1640.0,
    23: 877.0,
    24: 781.0,
    25: 401.0,
    26: 381.0,
    27: 2.07,
}
PAPER_FROZEN_S: dict[int, float] = {20: 0.87, 27: 1.25}
README_LR_LAYERS = range(19, 28)
EVENTS_PER_HOUR = 60.0


def cost(lr_layer: int, profile: str = "vega") -> EventCost:
    """One learning event of the paper's configuration, from the real energy model."""
    layers = mobilenet_v1_layers(res=128, width=1.0, classes=50, lr_layer=lr_layer)
    config = CostConfig()
    return event_cost(
        layers, load_profile(profile), config, n_new=config.new_per_event, n_replay=config.lr_size
    )


@dataclass(frozen=True, slots=True)
class Row:
    """One LR layer: cumulative adaptive seconds and the step T(l) - T(l+1), ours and [P]'s."""

    lr_layer: int
    layer: str  # the layer the step adds (pw20, dw21, ...)
    macs: int  # its forward MACs per sample
    paper_s: float
    ours_s: float
    paper_step_s: float
    ours_step_s: float

    @property
    def ratio(self) -> float:
        return self.ours_s / self.paper_s

    @property
    def step_ratio(self) -> float:
        return self.ours_step_s / self.paper_step_s


def pw26_residual(found: list[Row]) -> float:
    """Seconds by which our pw26 step exceeds [P]'s (the step no one-rate model can match)."""
    step = next(r for r in found if r.layer == "pw26")
    return step.ours_step_s - step.paper_step_s


def ratio_without_pw26(row: Row, residual: float) -> float:
    """The cumulative ratio if our pw26 step were [P]'s (an explanation, not a fit: it is never
    used by the model)."""
    ours = row.ours_s - residual if row.lr_layer <= 26 else row.ours_s
    return ours / row.paper_s


def rows() -> list[Row]:
    """l20..l27; the step of l27 is T(27) itself (fc27 alone)."""
    ours = {layer: cost(layer).latency_s["adaptive"] for layer in PAPER_ADAPTIVE_S}
    named = {info.name: info for info in mobilenet_v1_layers(res=128, lr_layer=27)}
    out: list[Row] = []
    for layer, paper in PAPER_ADAPTIVE_S.items():
        after = layer + 1
        name = next(n for n in named if n.endswith(str(layer)) and n[:2] in ("pw", "dw", "fc"))
        out.append(
            Row(
                lr_layer=layer,
                layer=name,
                macs=named[name].macs,
                paper_s=paper,
                ours_s=ours[layer],
                paper_step_s=paper - PAPER_ADAPTIVE_S.get(after, 0.0),
                ours_step_s=ours[layer] - ours.get(after, 0.0),
            )
        )
    return out


def worst(found: list[Row]) -> tuple[float, int]:
    """The largest factor between ours and the paper's cumulative time, and its LR layer."""
    factor, layer = max((max(r.ratio, 1 / r.ratio), r.lr_layer) for r in found)
    return factor, layer


def _s(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"


def calibration_table() -> str:
    """Markdown: ours vs [P] for l20..l27, cumulative and step, with ratios and the worst."""
    found = rows()
    lines = [
        "| LR layer l | step adds | MACs/sample | [P] T(l) s | ours T(l) s | ratio "
        "| [P] step s | ours step s | step ratio | ratio with [P]'s pw26 step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    residual = pw26_residual(found)
    for r in found:
        lines.append(
            f"| {r.lr_layer} | {r.layer} | {r.macs:,} | {_s(r.paper_s)} | {_s(r.ours_s)} "
            f"| {r.ratio:.2f} | {_s(r.paper_step_s)} | {_s(r.ours_step_s)} "
            f"| {r.step_ratio:.2f} | {ratio_without_pw26(r, residual):.2f} |"
        )
    frozen = {layer: cost(layer).latency_s["frozen"] for layer in PAPER_FROZEN_S}
    factor, layer = worst(found)
    lines += [
        "",
        "Frozen stage: "
        + "; ".join(
            f"l{layer} [P] {paper:.2f} s, ours {frozen[layer]:.2f} s"
            for layer, paper in PAPER_FROZEN_S.items()
        )
        + ".",
        "",
        f"Worst ratio over l20..l27: **{factor:.2f}x** (l{layer}).",
    ]
    return "\n".join(lines)


def _lifetime(duty: Duty) -> str:
    """Hours, marked † when the rate is not sustainable (the device never sleeps)."""
    hours = f"{duty.lifetime_h:,.0f}"
    return hours if duty.sustainable else f"{hours} †"


def energy_table() -> str:
    """Markdown: LR layers 19..27 on vega and stm32l4 (and vega-hw's frozen stage)."""
    lines = [
        "| LR layer | vega adaptive s | vega frozen s | vega-hw frozen s | vega J "
        "| stm32l4 adaptive s | stm32l4 frozen s | stm32l4 J | speed-up | energy ratio "
        f"| vega lifetime h @ {EVENTS_PER_HOUR:g}/h | vega max events/h "
        f"| stm32l4 lifetime h @ {EVENTS_PER_HOUR:g}/h |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layer in README_LR_LAYERS:
        layers = mobilenet_v1_layers(res=128, width=1.0, classes=50, lr_layer=layer)
        found: dict[str, tuple[EventCost, Duty]] = {}
        for name in ("vega", "stm32l4"):
            profile = load_profile(name)
            event = cost(layer, name)
            duty = Duty.of_costs(
                event,
                inference_cost(layers, profile, 1),
                profile,
                events_per_hour=EVENTS_PER_HOUR,
            )
            found[name] = (event, duty)
        (vega, vega_duty), (stm, stm_duty) = found["vega"], found["stm32l4"]
        hw_frozen = cost(layer, "vega-hw").latency_s["frozen"]
        speedup = stm.latency_s["total"] / vega.latency_s["total"]
        ratio = stm.energy_j["total"] / vega.energy_j["total"]
        lines.append(
            f"| {layer} | {_s(vega.latency_s['adaptive'])} | {vega.latency_s['frozen']:.3g} "
            f"| {hw_frozen:.3g} | {_s(vega.energy_j['total'])} "
            f"| {_s(stm.latency_s['adaptive'])} | {_s(stm.latency_s['frozen'])} "
            f"| {_s(stm.energy_j['total'])} | {speedup:.1f}x | {ratio:.1f}x "
            f"| {_lifetime(vega_duty)} | {_s(vega_duty.max_events_per_hour)} "
            f"| {_lifetime(stm_duty)} |"
        )
    return "\n".join(lines)


def readme_block() -> str:
    """The README section's generated part: the energy table and the calibration table."""
    intro = (
        "Per learning event (300 new images, 1500 LRs at 8 bits, 4 epochs of 14 mini-batches of "
        "128: 21-22 new + 106-107 replays), from `vega-emu energy --mobilenet-v1 --res 128 "
        f"--lr-layer L --profile P --events-per-hour {EVENTS_PER_HOUR:g} --json` for P = vega, "
        "vega-hw, stm32l4. Speed-up and energy ratio are stm32l4 / vega over the whole event; "
        "lifetime is on a full 3300 mAh, 3.3 V battery with no inference; † marks a rate the "
        "device cannot sustain (one event lasts longer than the time between two): it computes "
        "without sleeping, so its lifetime is that of its active power."
    )
    calibration = (
        "Against the paper's measured adaptive time (Table IV of [P]), from "
        "`python benchmarks/calibration.py` (step = T(l) - T(l+1); every residual explained in "
        "[docs/energy-model.md](docs/energy-model.md#calibration-against-the-paper)):"
    )
    return "\n".join(
        [
            textwrap.fill(intro, width=100),
            "",
            energy_table(),
            "",
            textwrap.fill(calibration, width=100, break_on_hyphens=False),
            "",
            calibration_table(),
        ]
    )


def between(text: str, markers: tuple[str, str]) -> str:
    """The text between ``markers`` (without the newlines next to them)."""
    start, end = markers
    if start not in text or end not in text:
        raise ValueError(f"markers {start} / {end} not found")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def replace_between(text: str, markers: tuple[str, str], block: str) -> str:
    start, end = markers
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    return f"{head}{start}\n{block}\n{end}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--write", action="store_true", help=f"write the table into {DOC.name}")
    parser.add_argument("--readme", action="store_true", help="write the README's tables")
    args = parser.parse_args(argv)
    table = calibration_table()
    if args.write:
        DOC.write_text(replace_between(DOC.read_text("utf-8"), DOC_MARKERS, table), "utf-8")
    if args.readme:
        text = README.read_text("utf-8")
        README.write_text(replace_between(text, README_MARKERS, readme_block()), "utf-8")
    print(readme_block() if args.readme else table)


if __name__ == "__main__":
    main()


__all__ = [
    "calibration_table",
    "energy_table",
    "pw26_residual",
    "ratio_without_pw26",
    "readme_block",
    "rows",
    "worst",
]
