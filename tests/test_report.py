"""Tests for fracbench.claims.report: one offline page with the disclaimer, the tables and embedded figures."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from test_figures import make_results

from fracbench.claims.figures import write_figures
from fracbench.claims.report import DISCLAIMER, write_report
from fracbench.claims.tables import build_tables, load_claims, load_experiments, load_runs


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    return make_results(tmp_path)


def _offline(page: str) -> None:
    assert not re.search(r"""(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page.lower()
    assert "<iframe" not in page.lower()


@pytest.mark.slow
def test_report_is_self_contained(tree: tuple[Path, Path]) -> None:
    res, data = tree
    figs = write_figures(res, data_root=data, echo=lambda s: None)
    path = write_report(res)
    assert path == res / "report.html"
    page = path.read_text(encoding="utf-8")
    _offline(page)
    assert DISCLAIMER in page
    # every figure is embedded as a data URI, and decodes to the file's bytes (besides the findings figure)
    assert page.count('<img id="figure"') == 1
    uris = re.findall(r'<figure id="[^"]*"><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(figs)
    assert sorted(base64.b64decode(u) for u in uris) == sorted(p.read_bytes() for p in figs)
    # every table, its title and its columns (escaped)
    exps = load_experiments()
    for table in build_tables(load_runs(res), exps, load_claims()):
        assert f">{_esc(table.title)}</h3>" in page
        for col in table.columns:
            assert f"<th>{_esc(col)}</th>" in page
    # what was run and the data summary
    for text in ("smoke", "Test CPU", "2.x-test", "abc123", "2026-01-01T00:00:00+00:00", "Images per split",
                 "Faults found"):
        assert text in page
    # values from records and summaries are escaped
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;oops&gt;" in page


def _esc(s: str) -> str:
    import html

    return html.escape(str(s), quote=True)


def test_report_without_figures_or_records(tmp_path: Path) -> None:
    page = write_report(tmp_path / "empty").read_text(encoding="utf-8")
    _offline(page)
    assert DISCLAIMER in page and "No run records found" in page and "No figures" in page


@pytest.mark.slow
def test_report_deterministic(tree: tuple[Path, Path]) -> None:
    res, _ = tree
    write_figures(res, echo=lambda s: None)
    a = write_report(res).read_bytes()
    b = write_report(res).read_bytes()
    assert a == b
    assert b"No grid of correct and wrong test predictions" in a  # no data folder: said so


@pytest.mark.slow
def test_cli_report_refreshes(tree: tuple[Path, Path]) -> None:
    from fracbench.cli import main

    res, data = tree
    assert main(["report", "--results", str(res), "--data-dir", str(data), "--quiet"]) == 0
    assert (res / "tables" / "table1.md").exists()
    assert (res / "figures" / "curves_paper_cnn_honest.png").exists()
    page = (res / "report.html").read_text(encoding="utf-8")
    _offline(page)
    assert "examples_paper_cnn_honest.png" in page
    (res / "figures" / "curves_paper_cnn_honest.png").unlink()
    assert main(["report", "--results", str(res), "--no-refresh", "--quiet"]) == 0
    assert not (res / "figures" / "curves_paper_cnn_honest.png").exists()


def test_report_opens_with_the_findings_and_ends_with_provenance(tmp_path: Path) -> None:
    from fracbench.claims.report import render_report

    page = render_report(tmp_path / "empty")
    _offline(page)
    first = page.index('id="verdicts"')
    order = [page.index(f"<summary>{s}") for s in ("Claims", "Tables", "Figures", "Audit", "Provenance")]
    assert first < page.index('class="why"') < order[0] and order == sorted(order)
    assert page.count("<details class=\"fold\">") == 5  # every detail folded
    assert "No run records found" in page[order[-1]:]  # what was run: under provenance, last


COMMITTED = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.skipif(not (COMMITTED / "multiregion" / "runs").is_dir(), reason="no committed results")
def test_findings_figure_numbers_recompute_from_the_committed_files() -> None:
    """The copied / copy-free bars: test rows whose copy group has a train row, scored from predictions.csv at
    the record's threshold, counted by brute force here; the split's copy count comes from its record."""
    import csv
    import json

    from fracbench import results as R
    from fracbench.claims.tables.headline import anatomy_numbers

    runs = load_runs(COMMITTED / "multiregion")
    check = json.loads((COMMITTED / "check" / "multiregion" / "check.json").read_text())
    nums = anatomy_numbers(runs, check)
    pub = [r for r in runs if r.experiment == "multiregion_published_as_published"]
    assert pub
    scored: dict[str, list[tuple[int, float]]] = {"copied": [], "copy_free": []}
    for run in pub:  # each seed scored by brute force; the figure shows their mean
        rows = R.manifest_rows(run.dir, run.record["manifest_sha256"])
        train_groups = {r["group"] for r in rows if r["split"] == "train"}
        copied = {r["id"] for r in rows if r["split"] == "test" and r["group"] in train_groups}
        thr = run.record["threshold"]
        with (run.dir / "predictions.csv").open() as fh:
            preds = [p for p in csv.DictReader(fh) if p["split"] == "test"]
        for key, keep in (("copied", True), ("copy_free", False)):
            sub = [p for p in preds if (p["id"] in copied) is keep]
            scored[key].append((len(sub), sum((float(p["score"]) >= thr) == (p["label"] == "1") for p in sub)
                                / len(sub)))
        assert len([p for p in preds if p["id"] in copied]) == run.record["leak"]["test_near_in_train"]  # verifier
        assert len(preds) == run.record["leak"]["test_images"]
    for key, per_seed in scored.items():
        assert nums[key].images == min(n for n, _ in per_seed)
        assert nums[key].value == pytest.approx(sum(v for _, v in per_seed) / len(per_seed))
    grouped = [r for r in runs if r.experiment == "multiregion_grouped_as_published"]
    assert nums["grouped"].value == pytest.approx(sum(r.test["accuracy"] for r in grouped) / len(grouped))
    assert nums["lookup"].value == check["lookup"]["accuracy"] and nums["lookup"].images == check["lookup"]["images"]


def test_cell_number_reads_the_claims_table_cells() -> None:
    from fracbench.claims.tables.headline import cell_number

    n = cell_number("0.8313 ± 0.0078 [0.7851, 0.8706]")
    assert (n.value, n.ci) == (0.8313, (0.7851, 0.8706))
    assert cell_number("0.8992 [0.8486, 0.9415]").ci == (0.8486, 0.9415)
    assert cell_number("—").value is None and cell_number("not run").value is None
