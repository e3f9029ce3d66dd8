"""The verdict on the paper's headline test claim (the 99.8%), in one line, read from the claims table.

The claims table (:func:`fracbench.claims.tables.claims_table`, with the multiregion columns of
:func:`fracbench.claims.tables.splits.split_claims_table`) judges every claim; ``fracbench tables`` writes it
to ``results/tables/claims.csv`` (across datasets) and ``results/<dataset>/tables/claims.csv``.
This module judges nothing: it reads the row of :data:`~fracbench.claims.tables.inputs.HEADLINE_TEST_CLAIM`
from those files, so the demo and any other reader show the verdict the tables and report show.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from fracbench.claims.tables.inputs import HEADLINE_TEST_CLAIM


@dataclass(frozen=True)
class Headline:
    line: str  # one line, e.g. "The paper's 99.8% test accuracy: not reproduced on fracatlas (...); ..."
    source: Path  # the claims.csv it was read from


def claims_files(results: str | Path) -> list[Path]:
    """The claims tables under ``results``: the cross-dataset one first, then each dataset's."""
    root = Path(results)
    return [p for p in [root / "tables" / "claims.csv", *sorted(root.glob("*/tables/claims.csv"))] if p.is_file()]


def headline_from_csv(text: str) -> str | None:
    """The headline line from the text of a claims.csv, or None when it has no headline-claim row."""
    rows = list(csv.DictReader(io.StringIO(text)))
    row = next((r for r in rows if r.get("claim") == HEADLINE_TEST_CLAIM), None)
    if row is None:
        return None
    try:
        paper = f"{float(row.get('paper', '')) * 100:.1f}%"
    except ValueError:
        paper = row.get("paper", "?")
    ours = next((v for k, v in row.items() if k and k.startswith("fracbench") and "balanced" not in k
                 and "majority" not in k), "")
    verdicts = []
    for k, v in row.items():
        if not (k and k.startswith("verdict") and v and v != "—"):
            continue
        where = k.removeprefix("verdict").strip()  # "on fracatlas", "across multiregion splits"
        verdicts.append(v if not where or where in v else f"{where}: {v}")
    if not verdicts:
        return None
    first = verdicts[0] + (f" (fracbench {ours})" if ours and ours != "—" else "")
    return f"The paper's {paper} test accuracy: " + "; ".join([first, *verdicts[1:]]) + "."


def headline_verdict(results: str | Path) -> Headline | None:
    """The headline line from the first claims table under ``results`` that has the headline claim."""
    for path in claims_files(results):
        try:
            line = headline_from_csv(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if line:
            return Headline(line, path)
    return None
