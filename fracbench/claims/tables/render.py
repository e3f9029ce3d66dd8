"""Table objects and their Markdown, CSV and LaTeX forms; fixed-decimal number formatting.

Numbers are rounded to a fixed number of decimals and nothing time-dependent is written, so the
same records give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

DASH = "—"


# --------------------------------------------------------------------------------------------
# The table object
# --------------------------------------------------------------------------------------------


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    footnotes: list[str] = field(default_factory=list)
    banner: str = ""  # shown above the table when set (smoke runs, synthetic data)

    def to_markdown(self) -> str:
        def cell(s: str) -> str:
            return str(s).replace("|", "\\|").replace("\n", " ")

        lines = [f"## {self.title}", ""] + ([f"> **{self.banner}**", ""] if self.banner else []) + ["| " + " | ".join(cell(c) for c in self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        if self.footnotes:
            lines.append("")
            lines += [f"- {f}" for f in self.footnotes]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        w.writerows(self.rows)
        return buf.getvalue()

    def to_latex(self) -> str:
        spec = "l" * len(self.columns)
        lines = ["\\begin{table}[htbp]", "\\centering", "\\scriptsize",
                 f"\\caption{{{_tex(self.title)}}}", f"\\label{{tab:{self.name}}}",
                 *([f"\\textbf{{{_tex(self.banner)}}}\\par"] if self.banner else []),
                 f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                 " & ".join(_tex(c) for c in self.columns) + " \\\\", "\\midrule"]
        lines += [" & ".join(_tex(c) for c in row) + " \\\\" for row in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        if self.footnotes:
            lines.append("\\par\\smallskip\\raggedright")
            lines += [_tex(f) + "\\par" for f in self.footnotes]
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"


_TEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{",
        "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "±": "$\\pm$", "—": "---",
        "≤": "$\\le$", "≥": "$\\ge$", "×": "$\\times$", "→": "$\\to$"}


def _tex(s: Any) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


# --------------------------------------------------------------------------------------------
# Number formatting (fixed decimals: the files must not change between identical regenerations)
# --------------------------------------------------------------------------------------------


def _finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def _num(v: float, nd: int = 4) -> str:
    s = f"{v:.{nd}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s  # never "-0.0000"


def _mean_sd(values: Sequence[Any], nd: int = 4, missing: str = DASH) -> str:
    """'mean ± sd' over the finite values; the value alone for one; ``missing`` for none."""
    if not values:
        return missing
    vals = _finite(values)
    if not vals:
        return "undefined"
    if len(vals) == 1:
        return _num(vals[0], nd)
    return f"{_num(statistics.fmean(vals), nd)} ± {_num(statistics.stdev(vals), nd)}"


def _split_value(values: Sequence[Any], nd: int = 4, missing: str = DASH) -> str:
    """A property of the test split (majority-class accuracy): one value when the runs agree."""
    vals = _finite(values)
    if vals and len(set(vals)) == 1:
        return _num(vals[0], nd)
    return _mean_sd(values, nd, missing)


def _paper(v: float | None, nd: int = 4) -> str:
    return DASH if v is None else _num(float(v), nd)


def _ci_cell(runs: Sequence[Any], metric: str, nd: int = 3) -> str:
    """'point [lo, hi]' from the records' bootstrap CIs: mean over seeds, envelope of the seeds' CIs."""
    if not runs:
        return "not run"
    points = _finite(r.test.get(metric) for r in runs)
    if not points:
        return "undefined"
    point = _num(statistics.fmean(points), nd)
    cis = [r.test.get(f"{metric}_ci95") for r in runs]
    los = _finite(c[0] for c in cis if isinstance(c, (list, tuple)) and len(c) == 2)
    his = _finite(c[1] for c in cis if isinstance(c, (list, tuple)) and len(c) == 2)
    if not los or not his:
        return point
    return f"{point} [{_num(min(los), nd)}, {_num(max(his), nd)}]"




def _points(values: Sequence[Any], nd: int = 2) -> str:
    """Differences of rates in percentage points: 'mean ± sd points' (the value alone for one)."""
    vals = _finite(values)
    if not vals:
        return DASH
    if len(vals) == 1:
        return f"{vals[0] * 100:+.{nd}f} points"
    return f"{statistics.fmean(vals) * 100:+.{nd}f} ± {statistics.stdev(vals) * 100:.{nd}f} points"

