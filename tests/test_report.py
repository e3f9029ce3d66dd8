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
    # every figure is embedded as a data URI, and decodes to the file's bytes
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
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
