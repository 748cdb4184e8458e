"""``vega-emu report RUN`` without ``--out``: the report goes beside the recording, and never
over files that are not a report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.observe.test_report import fleet_recording, vega_emu


@pytest.mark.parametrize(
    ("name", "where"), [("run.sqlite", "report"), ("lab.sqlite", "lab-report")]
)
def test_without_out_the_report_goes_beside_the_recording(
    tmp_path: Path, name: str, where: str
) -> None:
    run = tmp_path / "runs" / name
    run.parent.mkdir()
    fleet_recording(run, devices=2, events=2)
    result = vega_emu("report", str(run))
    assert result.returncode == 0, result.stderr
    index = tmp_path / "runs" / where / "index.html"
    assert result.stdout.strip() == str(index)
    assert (index.parent / "accuracy.png").is_file()
    again = vega_emu("report", str(run))  # a report replaces the report it wrote
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(index)


@pytest.mark.parametrize("given", [False, True])
def test_a_directory_of_other_files_is_refused_and_left_alone(tmp_path: Path, given: bool) -> None:
    run = tmp_path / "lab.sqlite"
    fleet_recording(run, devices=2, events=2)
    where = tmp_path / ("mine" if given else "lab-report")
    where.mkdir()
    (where / "index.html").write_text("<html><title>my page</title></html>\n")
    (where / "notes.txt").write_text("mine\n")
    result = vega_emu("report", str(run), *(["--out", str(where)] if given else []))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    named = f"--out {where}" if given else f"the report's directory {where}"
    assert lines[0].startswith(f"error: {named} holds other files and no report")
    assert given or lines[0].endswith("choose one with --out DIR")
    assert sorted(p.name for p in where.iterdir()) == ["index.html", "notes.txt"]
    assert (where / "index.html").read_text() == "<html><title>my page</title></html>\n"


def test_a_file_where_the_report_would_go_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "lab.sqlite"
    fleet_recording(run, devices=2, events=2)
    (tmp_path / "lab-report").write_text("a file\n")
    result = vega_emu("report", str(run))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: the report's directory {tmp_path / 'lab-report'}: not a directory"
    )


def test_the_help_says_the_default() -> None:
    result = vega_emu("report", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "Default: report/ beside a run.sqlite of vega-emu up" in text
    assert "lab-report/" in text and "holds other files and no report is refused" in text
