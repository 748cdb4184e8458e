"""Terminal tables, CSV and plot of ``vega-emu energy`` / ``vega-emu plan`` (imported lazily)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Final

from rich.console import Console
from rich.table import Table

from device.cli._tables import Col, fit_table
from device.cli._units import DASH, compact, hours, mib, si
from device.energy import FROZEN_PHASE, PlanRow

if TYPE_CHECKING:
    from device.app.energy import EnergyReport
    from device.energy import Budget
    from device.energy.harvest_plan import HarvestRow

out = Console()
MIB = 1024 * 1024


def _si(value: float, unit: str) -> str:
    """3 significant digits with an SI prefix (0.00123 s -> '1.23 ms'); nothing spent: '-'."""
    return DASH if value == 0 else si(value, unit)


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


#: The columns of the per-layer table, the least important with the highest ``hide``.
LAYER_COLUMNS: Final = (
    Col("layer", "name"),
    Col("kind", "name", hide=1),
    Col("MACs/smp"),
    Col("event MACs", hide=3),
    Col("fwd"),
    Col("bw-err", hide=2),
    Col("bw-grad", hide=2),
    Col("energy"),
)
_PARTS: Final = (Col("part", "name"), Col("latency"), Col("energy"))


def layer_table(report: EnergyReport, width: int) -> Table:
    """One row per layer of one learning event: MACs, time per phase, energy."""
    cost = report.event
    rows = []
    for layer in cost.layers:
        phases = layer.phases
        forward = phases.get(FROZEN_PHASE) or phases.get("forward")
        cells = [phases.get(p) for p in ("backward_error", "backward_gradient")]
        event_macs = sum(p.macs for p in phases.values())
        rows.append(
            (
                layer.name if layer.adaptive else f"[dim]{layer.name}[/]",
                layer.kind,
                compact(layer.macs_per_sample),
                compact(event_macs),
                _si(forward.seconds, "s") if forward else DASH,
                *(_si(p.seconds, "s") if p else DASH for p in cells),
                _si(layer.joules, "J"),
            )
        )
    title = f"one learning event on {report.profile.name} (dim: frozen stage, INT8 forward only)"
    return fit_table(LAYER_COLUMNS, rows, width, title=title)


def show_energy(report: EnergyReport) -> None:
    line = report.describe_model()
    if line is not None:
        out.print(line, highlight=False, soft_wrap=True)
    cost = report.event
    out.print(layer_table(report, out.width))
    latency, energy = cost.latency_s, cost.energy_j
    parts = ("frozen", "adaptive", "memory", "total")
    totals = [(p, _si(latency.get(p, 0.0), "s"), _si(energy[p], "J")) for p in parts]
    out.print(fit_table(_PARTS, totals, out.width, title="event totals"))
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
    memory = [
        (placement.item, _mib(placement.bytes), placement.region or "[bold red]does not fit[/]")
        for placement in cost.memory.placements
    ]
    memory += [
        (
            f"[dim]{region.name} used[/]",
            f"{_mib(region.used_bytes)} / {_mib(region.capacity_bytes)}",
            "",
        )
        for region in cost.memory.regions
    ]
    memory_cols = (Col("item", "name"), Col("size"), Col("lives in", "text"))
    out.print(fit_table(memory_cols, memory, out.width, title="memory map"))
    for warning in cost.memory.warnings:
        out.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    per_sample = report.inference
    infer = [
        (p, _si(per_sample.latency_s[p], "s"), _si(per_sample.energy_j[p], "J"))
        for p in ("frozen", "adaptive", "total")
    ]
    title = "one inference (one sample: frozen INT8 + adaptive forward)"
    out.print(fit_table(_PARTS, infer, out.width, title=title))
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
    if report.budget is not None:
        show_budget(report.budget)


_BUDGET_COLS: Final = (Col("part", "name"), Col("power"), Col("share"))


def show_budget(budget: Budget) -> None:
    """The node's whole budget: compute, radio, self-discharge, their shares, the lifetime of
    its cell, and what the radio cannot carry."""
    radio = budget.radio
    rows = [
        ("compute (events, inference, sleep)", budget.compute_w),
        (f"radio {radio.radio}", radio.power_w),
        (f"self-discharge at {budget.temperature.describe()}", budget.self_discharge_w),
        ("total", budget.power_w),
    ]
    cells = [(name, _si(watts, "W"), f"{budget.share(watts):.1%}") for name, watts in rows]
    title = f"power budget, {budget.chemistry.name} cell"
    out.print(fit_table(_BUDGET_COLS, cells, out.width, title=title))
    lifetime = budget.lifetime_h
    out.print(
        f"lifetime of the {budget.chemistry.name} cell ({budget.usable_j:,.0f} J usable): "
        f"[bold]{_hours(lifetime if lifetime != float('inf') else None)}[/] "
        f"(radio {budget.share(radio.power_w):.1%}, "
        f"self-discharge {budget.share(budget.self_discharge_w):.1%} of the mean power)",
        highlight=False,
    )
    for problem in radio.problems:
        out.print(
            f"[bold red]the radio cannot carry this:[/] {problem.message} ({problem.code})",
            highlight=False,
        )


def write_csv(rows: Sequence[PlanRow], path: Path) -> None:
    names = [f.name for f in fields(PlanRow)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_dict())


def plan_table(rows: Sequence[PlanRow], profile: str, width: int) -> Table:
    """One line per (LR layer, LR count, LR bits), one lifetime column per event rate; the
    measured accuracy only when some run summary gave one."""
    rates = sorted({row.events_per_hour for row in rows})
    groups: dict[tuple[int, int, int], dict[float, PlanRow]] = {}
    for row in rows:
        groups.setdefault((row.lr_layer, row.lr_size, row.lr_bits), {})[row.events_per_hour] = row
    inference = {row.inference_per_s for row in rows}
    extra = "".join(f" + {r:g} inferences/s" for r in inference if r)
    measured_any = any(row.accuracy is not None for row in rows)
    cols = [
        Col("LR"),
        Col("LRs"),
        Col("bits"),
        Col("LR MiB"),
        Col("fits", hide=1),
        Col("latency", hide=4),
        Col("J/event", hide=2),
        Col("max/h", hide=3, legend="max/h: the largest sustainable events/h"),
        *(Col(f"life @{rate:g}/h") for rate in rates),
    ]
    if measured_any:
        cols.append(Col("acc", legend="acc: measured accuracy"))
    table_rows = []
    for (layer, size, bits), by_rate in groups.items():
        first = next(iter(by_rate.values()))
        lives = [_life(by_rate.get(rate)) for rate in rates]
        cells = [
            str(layer),
            str(size),
            str(bits),
            mib(first.lr_memory_bytes),
            "yes" if first.fits else "[red]no[/]",
            _si(first.latency_s, "s"),
            _si(first.energy_j, "J"),
            compact(first.max_events_per_hour),
            *lives,
        ]
        if measured_any:
            measured = [r.accuracy for r in by_rate.values() if r.accuracy is not None]
            cells.append(f"{sum(measured) / len(measured):.3f}" if measured else DASH)
        table_rows.append(cells)
    title = f"plan on {profile}: lifetime of a full battery per events/h{extra}"
    return fit_table(cols, table_rows, width, title=title)


def _life(row: PlanRow | None) -> str:
    """A plan row's lifetime, red when its rate is not sustainable."""
    if row is None:
        return DASH
    text = hours(row.lifetime_h)
    return text if row.sustainable else f"[red]{text}[/]"


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
    out.print(plan_table(rows, profile, out.width))
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


def _outcome(row: HarvestRow) -> str:
    """``yes`` (energy-neutral) or the days until first empty; with a policy, the share of the
    events learned; red when the radio cannot carry it or the rate is not sustainable."""
    at = row.depleted_at_s
    text = "yes" if at is None else f"{compact(at / 86400)} d"
    share = row.learned_share
    if share is not None:
        text += f" {share:.0%}"
    if row.problems or not row.row.sustainable:
        return f"[red]{text}![/]"
    return text if at is None else f"[yellow]{text}[/]"


def harvest_table(rows: Sequence[HarvestRow], profile: str, width: int) -> Table:
    """One line per (LR layer, LR count, LR bits), one column per event rate: energy-neutral
    or days to the first empty cell."""
    rates = sorted({h.row.events_per_hour for h in rows})
    groups: dict[tuple[int, int, int], dict[float, HarvestRow]] = {}
    for h in rows:
        key = (h.row.lr_layer, h.row.lr_size, h.row.lr_bits)
        groups.setdefault(key, {})[h.row.events_per_hour] = h
    cols = [
        Col("LR"),
        Col("LRs"),
        Col("bits"),
        Col("fits", hide=1),
        Col("J/event", hide=2),
        *(Col(f"@{rate:g}/h") for rate in rates),
    ]
    table_rows = []
    for (layer, size, bits), by_rate in groups.items():
        first = next(iter(by_rate.values())).row
        cells = [
            str(layer),
            str(size),
            str(bits),
            "yes" if first.fits else "[red]no[/]",
            _si(first.energy_j, "J"),
            *(_outcome(by_rate[r]) if r in by_rate else DASH for r in rates),
        ]
        table_rows.append(cells)
    title = f"plan on {profile}: energy-neutral (yes) or days to the first empty cell"
    return fit_table(cols, table_rows, width, title=title)


def show_harvest_plan(
    rows: Sequence[HarvestRow],
    profile: str,
    describe: str,
    csv_path: Path,
    plot_path: Path,
    model_line: str | None = None,
) -> None:
    """The harvest plan: what is simulated, the table, which configurations are neutral and
    what the radio cannot carry."""
    if model_line is not None:
        out.print(model_line, highlight=False, soft_wrap=True)
    out.print(f"simulated: {describe}", highlight=False)
    out.print(harvest_table(rows, profile, out.width))
    neutral = sum(1 for h in rows if h.neutral and not h.problems and h.row.sustainable)
    policy_note = (
        " NN%: share of the events learned;"
        if any(h.learned_share is not None for h in rows)
        else ""
    )
    out.print(
        f"{neutral} of {len(rows)} configurations are energy-neutral;{policy_note} "
        "yellow: empties; red !: the radio cannot carry it or the rate is not sustainable",
        highlight=False,
    )
    seen: set[str] = set()
    for h in rows:
        for problem in h.problems:
            if problem.code not in seen:
                seen.add(problem.code)
                out.print(f"[bold red]radio:[/] {problem.message}", highlight=False)
    out.print(f"{len(rows)} configurations -> {csv_path}, plot -> {plot_path}")


HARVEST_FIELDS: Final = (
    "energy_neutral",
    "depleted_at_h",
    "min_or_final_soc",
    "uptime",
    "learned_share",
    "load_w",
    "radio_problems",
)


def write_harvest_csv(rows: Sequence[HarvestRow], path: Path) -> None:
    """The plan's CSV with the simulation's outcome of each row."""
    names = [f.name for f in fields(PlanRow)] + list(HARVEST_FIELDS)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for h in rows:
            outcome = h.outcome
            at = h.depleted_at_s
            soc = getattr(outcome, "min_soc", None)
            writer.writerow(
                h.row.as_dict()
                | {
                    "energy_neutral": h.neutral,
                    "depleted_at_h": None if at is None else at / 3600,
                    "min_or_final_soc": soc if soc is not None else outcome.final_soc,
                    "uptime": getattr(outcome, "uptime", None),
                    "learned_share": h.learned_share,
                    "load_w": h.load.mean_w,
                    "radio_problems": ";".join(p.code for p in h.problems),
                }
            )
