"""Smoke runs and synthetic data say what they are: a banner on every table and on the report (issue 14)."""

from __future__ import annotations

from pathlib import Path

from test_tables import fake_run

from fracbench import results as R
from fracbench.claims.report import render_report
from fracbench.claims.tables import write_tables


def test_smoke_synthetic_tables_and_report_carry_the_banner(tmp_path: Path) -> None:
    res = tmp_path / "results"
    fake_run(res, "paper_cnn_as_published", 0, "as_published", train_loss=[0.7], test_accuracy=[0.8])
    for path in write_tables(res):
        if path.suffix in (".md", ".tex"):
            assert "tests the machinery, not the paper" in path.read_text(), path.name
    page = render_report(res, figures=tmp_path / "nofigures")
    assert "tests the machinery, not the paper" in page and "smoke profile" in page and "synthetic" in page


def test_real_runs_have_no_banner(tmp_path: Path) -> None:
    res = tmp_path / "results"
    d = fake_run(res, "paper_cnn_as_published", 0, "as_published", train_loss=[0.7], test_accuracy=[0.8],
                 dataset="fracatlas")
    rec = R.read_record(d)
    rec["profile"] = "cpu"
    R.write_record(d, {k: v for k, v in rec.items() if k != "schema_version"})
    assert all("tests the machinery" not in p.read_text() for p in write_tables(res))
    assert "tests the machinery" not in render_report(res, figures=tmp_path / "nofigures")
