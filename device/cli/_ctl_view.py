"""What ``vega-emu ctl`` prints: the table of desired vs reported state, and plain lines.

:func:`state_table` fits the terminal (:mod:`device.cli._tables`), devices not converged
first; :func:`device_line` and :func:`not_converged_line` are what ``ctl watch`` prints off a
terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device.app.ctl import DeviceView

__all__ = [
    "device_line",
    "not_converged_line",
    "print_table",
    "settings_cell",
    "state_table",
    "stdout_width",
    "value_text",
    "version_of",
]


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and len(value) == 64:
        return value[:8]  # a SHA-256
    return str(value)


def version_of(view: DeviceView, which: str) -> str:
    state = view.desired if which == "desired" else view.reported
    return "-" if state is None else str(state.version)


def settings_cell(view: DeviceView) -> str:
    """The desired settings, each with what the device runs when it differs:
    ``lr_bits=6 (runs 8)``; ``own`` without a desired state."""
    if view.desired is None or not view.desired.settings:
        return "own"
    runs = view.reported.settings if view.reported is not None else {}
    cells = []
    for name, value in view.desired.settings.items():
        cell = f"{name}={value_text(value)}"
        if name in runs and runs[name] != value:
            cell += f" (runs {value_text(runs[name])})"
        cells.append(cell)
    return " ".join(cells)


def _state_cell(view: DeviceView) -> str:
    if view.desired is None and view.reported is None and view.status is None:
        return "[dim]unknown[/]"  # nothing on the broker: a typo, or a device that never ran
    if view.state == "refused" and view.desired is not None:
        refusal = view.refusal_of(view.desired.version)
        return f"[red]refused[/] {refusal.field if refusal else ''}"
    colour = {"converged": "green", "pending": "yellow"}.get(view.state, "dim")
    return f"[{colour}]{view.state}[/]"


def state_table(views: Sequence[DeviceView], *, width: int, max_rows: int | None = None) -> Any:
    """Desired vs reported per device, not converged first; fits ``width`` columns."""
    from device.cli._tables import Col, fit_table

    ordered = sorted(views, key=lambda v: (v.state == "converged", v.device))
    shown = ordered if max_rows is None else ordered[: max(1, max_rows)]
    cols = [
        Col("device", "name"),
        Col("want", legend="want/has: desired and reported version"),
        Col("has"),
        Col("state", "text"),
        Col("online", "text", hide=2),
        Col("settings (desired; runs)", "text", hide=1),
    ]
    rows = [
        [
            v.device,
            version_of(v, "desired"),
            version_of(v, "reported"),
            _state_cell(v),
            {None: "?", True: "yes", False: "no"}[v.online],
            settings_cell(v),
        ]
        for v in shown
    ]
    caption = not_converged_line(views)
    if len(shown) < len(ordered):
        caption += f"; {len(ordered) - len(shown)} more not shown"
    return fit_table(cols, rows, width, caption=caption)


def not_converged_line(views: Sequence[DeviceView]) -> str:
    """``3 of 4 converged; not converged: node-0002 (pending)``."""
    behind = [v for v in views if v.state != "converged"]
    text = f"{len(views) - len(behind)} of {len(views)} converged"
    if behind:
        names = ", ".join(f"{v.device} ({v.state})" for v in behind[:8])
        text += f"; not converged: {names}{', ...' if len(behind) > 8 else ''}"
    return text


def device_line(view: DeviceView) -> str:
    """One plain line per device: ``node-0001 desired v3 reported v3 converged lr_bits=6``."""
    return (
        f"{view.device} desired v{version_of(view, 'desired')} "
        f"reported v{version_of(view, 'reported')} {view.state} {settings_cell(view)}"
    )


def stdout_width() -> int:
    from rich.console import Console

    return Console().width


def print_table(renderable: Any) -> None:
    """A table on standard output (so that it can be piped), at most 80 columns off a terminal."""
    from rich.console import Console

    out = Console()
    out.print(renderable)
