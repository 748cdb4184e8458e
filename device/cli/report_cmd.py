"""``vega-emu report``: a static HTML report (plots and tables) of a recorded run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

import typer

from device.cli._runtime import creatable, fail

#: What the first bytes of a report's page hold: a directory with such an ``index.html`` is a
#: report, which a new one may replace.
REPORT_MARK: Final = "<title>vega-emu run"
#: The name of the recording ``vega-emu up`` writes, whose report goes to ``report/`` beside it.
UP_RECORDING: Final = "run.sqlite"


def default_out(run: Path) -> Path:
    """Where the report of ``run`` goes without ``--out``: ``report/`` beside a recording of
    ``vega-emu up`` (``run.sqlite``, where ``up`` wrote it), else ``<name>-report/`` beside it
    (``lab.sqlite``: ``lab-report/``), so two recordings of one directory keep two reports."""
    if run.name == UP_RECORDING:
        return run.parent / "report"
    return run.with_name(f"{run.stem}-report")


def is_report(directory: Path) -> bool:
    """Whether ``directory`` holds a report of this command (its ``index.html`` is one)."""
    try:
        with (directory / "index.html").open("rb") as page:
            head = page.read(512).decode("utf-8", errors="replace")
    except OSError:
        return False
    return REPORT_MARK in head


def report(
    run: Annotated[Path, typer.Argument(help="The recording (SQLite) of a run.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Directory for index.html and its PNG plots. Default: report/ beside a "
            "run.sqlite of vega-emu up, else RUN's name with -report beside it (lab.sqlite: "
            "lab-report/). A directory that holds other files and no report is refused.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write index.html and its plots from the recording RUN; print the page's path."""
    from device.observe.recorder import NotARecording, RecordError
    from device.observe.report import render_report

    if not run.is_file():
        raise fail(f"{run}: no such recording", code=2)
    where = default_out(run) if out is None else out
    flag = f"--out {where}" if out is not None else f"the report's directory {where}"
    if where.exists() and not where.is_dir():
        raise fail(f"{flag}: not a directory", code=2)
    if where.is_dir() and any(where.iterdir()) and not is_report(where):
        hint = "" if out is not None else "; choose one with --out DIR"
        raise fail(f"{flag} holds other files and no report: not written there{hint}", code=2)
    creatable(where / "index.html", "--out")
    try:
        index = render_report(run, where)
    except NotARecording as exc:
        raise fail(str(exc), code=2) from exc
    except RecordError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"{flag}: cannot write the report: {exc.strerror or exc}") from exc
    typer.echo(str(index))


def register(app: typer.Typer) -> None:
    app.command("report")(report)


__all__ = ["REPORT_MARK", "default_out", "is_report", "register", "report"]
