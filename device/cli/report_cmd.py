"""``vega-emu report``: a static HTML report (plots and tables) of a recorded run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from device.cli._runtime import creatable, fail


def report(
    run: Annotated[Path, typer.Argument(help="The recording (SQLite) of a run.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for index.html and its PNG plots.")],
) -> None:
    """Write OUT/index.html and its plots from the recording RUN; print the page's path."""
    from device.observe.recorder import NotARecording, RecordError
    from device.observe.report import render_report

    if not run.is_file():
        raise fail(f"{run}: no such recording", code=2)
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out}: not a directory", code=2)
    creatable(out / "index.html", "--out")
    try:
        index = render_report(run, out)
    except NotARecording as exc:
        raise fail(str(exc), code=2) from exc
    except RecordError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"--out {out}: cannot write the report: {exc.strerror or exc}") from exc
    typer.echo(str(index))


def register(app: typer.Typer) -> None:
    app.command("report")(report)


__all__ = ["register", "report"]
