"""Terminal tables, CSV and plot of ``vega-emu energy`` / ``vega-emu plan`` (imported lazily)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from device.energy import FROZEN_PHASE, PlanRow

if TYPE_CHECKING:
    from device.app.energy import EnergyReport

out = Console()
MIB = 1024 * 1024


def _si(value: float, unit: str) -> str:
    """3 significant digits with an SI prefix: 0.00123 s -> '1.23 ms'."""
    if value == 0:
        return "-"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value / 1e-9:.3g} n{unit}"


def _count(value: int) -> str:
    return _si(value, "").strip() if value else "0"


def _mib(value: int) -> str:
    return f"{value / MIB:.2f} MiB"


def _hours(value: float | None) -> str:
    if value is None:
        return "inf"
    return f"{value:,.0f} h" if value >= 100 else f"{value:.3g} h"


_BASIS = {
    "paper-derived": "from the paper's measured 1.25 s for 300 images; above the hardware's "
    "INT8 peak, use --profile vega-hw for a bound",
    "hardware-bounded": "bounded by the 8-core INT8 throughput, not the paper's 1.25 s",
}


def show_energy(report: EnergyReport) -> None:
    line = report.describe_model()
    if line is not None:
        out.print(line, highlight=False, soft_wrap=True)
    cost = report.event
    title = f"one learning event on {report.profile.name} (dim: frozen stage, INT8 forward only)"
    table = Table(title=title)
    table.add_column("layer")
    table.add_column("kind")
    for column in ("MACs/smp", "event MACs", "fwd", "bw-err", "bw-grad", "energy"):
        table.add_column(column, justify="right")
    for layer in cost.layers:
        phases = layer.phases
        forward = phases.get(FROZEN_PHASE) or phases.get("forward")
        cells = [phases.get(p) for p in ("backward_error", "backward_gradient")]
        event_macs = sum(p.macs for p in phases.values())
        table.add_row(
            layer.name if layer.adaptive else f"[dim]{layer.name}[/]",
            layer.kind,
            _count(layer.macs_per_sample),
            _count(event_macs),
            _si(forward.seconds, "s") if forward else "-",
            *(_si(p.seconds, "s") if p else "-" for p in cells),
            _si(layer.joules, "J"),
        )
    out.print(table)
    latency, energy = cost.latency_s, cost.energy_j
    totals = Table(title="event totals")
    totals.add_column("part")
    totals.add_column("latency", justify="right")
    totals.add_column("energy", justify="right")
    for part in ("frozen", "adaptive", "memory", "total"):
        seconds = latency.get(part, 0.0)
        totals.add_row(part, _si(seconds, "s"), _si(energy[part], "J"))
    out.print(totals)
    profile = report.profile
    out.print(
        f"frozen stage: INT8 at {profile.int8_mac_per_cycle:.4g} MAC/cycle, "
        f"{profile.int8_basis} ({_BASIS.get(profile.int8_basis, 'see the profile')})",
        highlight=False,
    )
    plan, traffic = cost.plan, cost.traffic
    out.print(
        f"plan: {plan.epochs} epochs x {plan.minibatches} mini-batches "
        f"({plan.describe()}), "
        f"{plan.samples_trained:,} latents trained; LR traffic {traffic.bytes_read:,} B read, "
        f"{traffic.bytes_written:,} B written in {traffic.region or 'nowhere (does not fit)'}"
    )
    memory = Table(title="memory map")
    memory.add_column("item")
    memory.add_column("size", justify="right")
    memory.add_column("lives in")
    for placement in cost.memory.placements:
        where = placement.region or "[bold red]does not fit[/]"
        memory.add_row(placement.item, _mib(placement.bytes), where)
    for region in cost.memory.regions:
        used = f"{_mib(region.used_bytes)} / {_mib(region.capacity_bytes)}"
        memory.add_row(f"[dim]{region.name} used[/]", used, "")
    out.print(memory)
    for warning in cost.memory.warnings:
        out.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    per_sample = report.inference
    infer = Table(title="one inference (one sample: frozen INT8 + adaptive forward)")
    infer.add_column("part")
    infer.add_column("latency", justify="right")
    infer.add_column("energy", justify="right")
    for part in ("frozen", "adaptive", "total"):
        infer.add_row(
            part, _si(per_sample.latency_s[part], "s"), _si(per_sample.energy_j[part], "J")
        )
    out.print(infer)
    duty = report.duty
    rate, inference_rate = report.config.events_per_hour, duty.inference_per_s
    limit = report.max_events_per_hour
    note = "" if duty.sustainable else " [bold red](not sustainable: rates scaled down to fit)[/]"
    duty_text = f"{rate:g} events/h" + (
        f" + {inference_rate:g} inferences/s" if inference_rate else ""
    )
    out.print(
        f"lifetime at {duty_text}: [bold]{_hours(report.lifetime_h)}[/] "
        f"(mean power {_si(duty.power_w, 'W')}, battery {profile.battery_j:,.0f} J){note}"
    )
    if inference_rate:
        out.print(
            f"inference: {_si(duty.inference_power_w, 'W')}, "
            f"{report.inference_power_share:.1%} of the mean power, "
            f"busy {duty.inference_busy:.2%} of the time"
        )
    shown = f"{limit:.4g} events/h" if limit is not None else "no limit"
    out.print(
        f"largest sustainable rate: {shown} (events overlap neither each other nor inferences)"
    )


def write_csv(rows: Sequence[PlanRow], path: Path) -> None:
    names = [f.name for f in fields(PlanRow)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_dict())


def show_plan(
    rows: Sequence[PlanRow],
    profile: str,
    csv_path: Path,
    plot_path: Path,
    model_line: str | None = None,
) -> None:
    """One line per (LR layer, LR count, LR bits); one lifetime column per event rate;
    ``model_line`` first, when given (which model is swept)."""
    if model_line is not None:
        out.print(model_line, highlight=False, soft_wrap=True)
    rates = sorted({row.events_per_hour for row in rows})
    groups: dict[tuple[int, int, int], dict[float, PlanRow]] = {}
    for row in rows:
        groups.setdefault((row.lr_layer, row.lr_size, row.lr_bits), {})[row.events_per_hour] = row
    inference = {row.inference_per_s for row in rows}
    extra = "".join(f" + {r:g} inferences/s" for r in inference if r)
    table = Table(title=f"plan on {profile}: lifetime of a full battery per events/h{extra}")
    for column in ("LR", "LRs", "bits", "LR mem", "fits", "latency", "J/event", "max/h"):
        table.add_column(column, justify="right")
    for rate in rates:
        table.add_column(f"life @{rate:g}/h", justify="right")
    table.add_column("acc", justify="right")
    for (layer, size, bits), by_rate in groups.items():
        first = next(iter(by_rate.values()))
        measured = [r.accuracy for r in by_rate.values() if r.accuracy is not None]
        lives = [
            ("" if r.sustainable else "[red]")
            + _hours(r.lifetime_h)
            + ("" if r.sustainable else "[/]")
            if (r := by_rate.get(rate)) is not None
            else "-"
            for rate in rates
        ]
        table.add_row(
            str(layer),
            str(size),
            str(bits),
            f"{first.lr_memory_bytes / MIB:.2f}M",
            "yes" if first.fits else "[red]no[/]",
            _si(first.latency_s, "s"),
            _si(first.energy_j, "J"),
            f"{first.max_events_per_hour:.3g}",
            *lives,
            f"{sum(measured) / len(measured):.3f}" if measured else "-",
        )
    out.print(table)
    out.print("red: does not fit / rate not sustainable (lifetime at the largest sustainable rate)")
    out.print(f"{len(rows)} configurations -> {csv_path}, plot -> {plot_path}")


def write_plot(rows: Sequence[PlanRow], path: Path, profile: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted({row.events_per_hour for row in rows})
    layers = sorted({row.lr_layer for row in rows})
    cmap = plt.get_cmap("viridis", max(len(layers), 2))
    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4.2), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        for i, layer in enumerate(layers):
            chosen = [r for r in rows if r.events_per_hour == rate and r.lr_layer == layer]
            for fits, sustainable in ((True, True), (True, False), (False, True), (False, False)):
                part = [r for r in chosen if r.fits == fits and r.sustainable == sustainable]
                if not part:
                    continue
                ax.scatter(
                    [r.lr_memory_bytes / MIB for r in part],
                    [r.lifetime_h for r in part],
                    color=cmap(i),
                    facecolors=cmap(i) if sustainable or not fits else "none",
                    marker="o" if fits else "x",
                    label=f"LR layer {layer}" if fits and sustainable else None,
                )
            for r in chosen:
                if r.accuracy is not None:
                    ax.annotate(f"{r.accuracy:.2f}", (r.lr_memory_bytes / MIB, r.lifetime_h))
        ax.set(xscale="log", yscale="log", xlabel="LR memory (MiB)", ylabel="lifetime (h)")
        ax.set_title(
            f"{profile}, {rate:g} events/h\n(x: does not fit, hollow: rate not sustainable)"
        )
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
