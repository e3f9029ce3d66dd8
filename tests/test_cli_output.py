"""Where commands write: data on stdout (TSV when piped, JSON with --json), logs on stderr; full names
at 80 columns; `fracbench run` ends by writing the report. Run in-process through fracbench.cli.main."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from fracbench import progress
from fracbench.cli import main
from fracbench.models import MODELS
from fracbench.output import print_table
from fracbench.runs.runner import Outcome, print_summary
from fracbench.training.experiments import load_all


@pytest.fixture(autouse=True)
def _narrow_and_keep_quiet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COLUMNS", "80")  # a narrow terminal: where names used to be cut ("paper_cn…")
    quiet = progress.is_quiet()
    yield
    progress.set_quiet(quiet)  # main() sets the process-wide --quiet flag


def _tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


def test_list_is_data_on_stdout_with_full_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr()
    rows = _tsv(out.out)
    assert rows[0] == ["experiment", "model", "protocol", "paper table", "seeds", "title"]
    names = [r[0] for r in rows[1:]]
    assert names == load_all().list()  # every name, whole, one line each, so `| grep paper` works
    assert any(len(n) > 20 for n in names)  # the registry does have names longer than a cut column
    assert all(len(r) == 6 for r in rows)
    assert out.err == ""  # nothing but data was asked for
    assert main(["list", "paper_*", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["experiment"] for e in listed] == load_all().list("paper_*")
    assert listed[0]["seeds"] == len(load_all().get(listed[0]["experiment"]).seeds)


def test_models_json_and_tsv(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    out = capsys.readouterr()
    models = json.loads(out.out)
    assert [m["model"] for m in models] == MODELS.list()
    assert models[0]["input px"] == MODELS.get(models[0]["model"]).default_size
    assert main(["models"]) == 0
    assert [r[0] for r in _tsv(capsys.readouterr().out)[1:]] == MODELS.list()


def _outcomes() -> list[Outcome]:
    long = "stand_in_cnn15_e20_b32__a_rather_long_variant_name"
    rec = {"metrics": {"test": {"auroc": 0.7123, "sensitivity": 0.5, "specificity": 0.75, "accuracy": 0.8,
                                "majority_accuracy": 0.82}}, "train_seconds": 12.5}
    return [Outcome(long, 0, "complete", rec), Outcome(long + "_2", 1, "failed", None, "RuntimeError: boom\nmore"),
            Outcome("paper_cnn_as_published", 0, "skipped", rec)]


def test_print_summary_piped_keeps_full_names(capsys: pytest.CaptureFixture[str]) -> None:
    print_summary(_outcomes())
    out = capsys.readouterr()
    rows = _tsv(out.out)
    assert [r[:3] for r in rows[1:]] == [
        ["stand_in_cnn15_e20_b32__a_rather_long_variant_name", "0", "complete"],
        ["stand_in_cnn15_e20_b32__a_rather_long_variant_name_2", "1", "failed RuntimeError: boom"],
        ["paper_cnn_as_published", "0", "skipped"]]
    assert rows[1][3:] == ["0.712", "0.500", "0.750", "0.800", "0.820", "12.5"]
    assert rows[2][3] == "—"
    assert "fracbench run" in out.err  # the title is context: stderr


def _terminal(width: int) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, force_terminal=True, color_system=None), buf


def test_terminal_tables_never_cut_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import fracbench.output

    names = ["leak_demo__grouped_as_published", "stand_in_cnn15_e20_b32"]  # the longest names a run writes
    # a table that fits 80 columns is drawn; the key column is whole, the long title wraps
    console, buf = _terminal(80)
    print_table(["experiment", "model", "title"],
                [[n, "paper_cnn", "A title long enough to need wrapping at eighty columns, twice over"]
                 for n in names], console=console)
    text = buf.getvalue()
    assert "┃" in text and "…" not in text
    assert all(any(n in line for line in text.splitlines()) for n in names)
    assert all(len(line) <= 80 for line in text.splitlines())
    # the run summary (9 columns) cannot be drawn in 80 without cutting: whole rows instead
    console, buf = _terminal(80)
    monkeypatch.setattr(fracbench.output, "stdout_console", lambda: console)
    print_summary([Outcome(n, 0, "skipped", None) for n in names])
    rows = _tsv(buf.getvalue())
    assert "…" not in buf.getvalue() and [r[0] for r in rows[1:]] == names
    # and at 200 columns it is drawn, names whole
    console, buf = _terminal(200)
    print_summary([Outcome(n, 0, "skipped", None) for n in names])
    text = buf.getvalue()
    assert "┃" in text and "…" not in text and all(n in text for n in names)


def test_tables_and_report_print_paths_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = tmp_path / "res"
    res.mkdir()  # an existing results folder with no records yet (a missing one is refused, naming it)
    assert main(["tables", "--results", str(res), "--quiet"]) == 0
    out = capsys.readouterr()
    paths = [Path(line) for line in out.out.splitlines()]
    assert paths and all(p.is_file() and res in p.parents for p in paths)
    assert main(["report", "--results", str(res), "--no-refresh", "--quiet"]) == 0
    assert capsys.readouterr().out == f"Report: {res / 'report.html'}\n"


def _fake_run(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace the training itself: run_experiments returns one completed outcome, and is recorded."""
    import fracbench.runs.runner

    calls: list = []

    def run_experiments(experiments, **kwargs):
        calls.append(([e.name for e in experiments], kwargs))
        return [Outcome("paper_cnn_honest", 0, "complete", {"dataset": "synthetic"})]

    monkeypatch.setattr(fracbench.runs.runner, "run_experiments", run_experiments)
    return calls


def test_run_ends_by_writing_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    calls = _fake_run(monkeypatch)
    res = tmp_path / "res"
    assert main(["run", "paper_cnn_honest", "--profile", "smoke", "--results", str(res), "--quiet"]) == 0
    assert calls[0][0] == ["paper_cnn_honest"]
    report = res / "report.html"
    assert report.is_file() and "fracbench report" in report.read_text(encoding="utf-8")
    assert capsys.readouterr().out.splitlines()[-1] == f"Report: {report}"
    report.unlink()
    assert main(["run", "paper_cnn_honest", "--results", str(res), "--no-report", "--quiet"]) == 0
    assert not report.exists() and "Report:" not in capsys.readouterr().out


def test_run_report_failure_is_said_and_does_not_fail_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import fracbench.claims.report

    _fake_run(monkeypatch)

    def broken(results, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fracbench.claims.report, "write_report", broken)
    res = tmp_path / "res"
    assert main(["run", "paper_cnn_honest", "--results", str(res), "--no-tables", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "Report:" not in out.out
    err = " ".join(out.err.split())
    assert f"report not written: disk full (retry with `fracbench report --results {res}`)" in err


def test_smoke_run_summary_says_its_numbers_judge_nothing_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Piped (not a terminal), the line is whole: rich used to break it at 80 columns, mid-phrase."""
    _fake_run(monkeypatch)
    res = tmp_path / "res"
    assert main(["run", "paper_cnn_honest", "--profile", "smoke", "--results", str(res), "--no-report",
                 "--no-tables", "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "judge nothing" in line]
    assert len(lines) == 1 and len(lines[0]) > 80
    assert lines[0].startswith("Smoke profile on synthetic data: these numbers judge nothing") \
        and lines[0].endswith("(no claim is judged by them).")


def test_real_run_summary_has_no_judges_nothing_line() -> None:
    from fracbench.cli import run_judges_nothing

    assert run_judges_nothing("cpu", [{"dataset": "fracatlas"}]) == ""
    assert run_judges_nothing("full", [], "fracatlas") == ""
    assert "judge nothing" in run_judges_nothing("cpu", [{"dataset": "synthetic"}])


def test_long_status_lines_are_not_wrapped_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    from fracbench.output import stdout_console
    from fracbench.progress import console

    long = " ".join(["word"] * 60)  # 299 characters
    console.print(long)
    stdout_console().print(long)
    out = capsys.readouterr()
    assert out.err.strip() == long and out.out.strip() == long
