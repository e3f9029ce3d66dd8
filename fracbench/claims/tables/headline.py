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


# --------------------------------------------------------------------------------------------
# The report's first screen: each headline claim's verdicts, and the numbers behind the findings figure
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimLine:
    """One row of a claims table, read back: the claim, the paper's value, fracbench's, and each verdict."""

    claim: str
    where: str
    paper: str
    fracbench: str  # the first "fracbench ..." column (not the balanced or majority-class one)
    verdicts: tuple[tuple[str, str, str], ...]  # (where, verdict as shown, reason)


def claim_lines(columns: list[str], rows: list[list[str]]) -> list[ClaimLine]:
    """Every row of a claims table (its columns and rows as built, e.g. fracbench.claims.tables' Table) as ClaimLines."""
    out = []
    for row in rows:
        r = dict(zip(columns, row))
        ours = next((v for k, v in r.items() if k.startswith("fracbench") and "balanced" not in k
                     and "majority" not in k), "")
        verdicts = []
        for k, v in r.items():
            if k.startswith("verdict") and v and v != "—":
                where = k.removeprefix("verdict").strip()
                verdicts.append((where, v, r.get("reason" + k.removeprefix("verdict"), "")))
        out.append(ClaimLine(r.get("claim", ""), r.get("where", ""), r.get("paper", ""), ours, tuple(verdicts)))
    return out


@dataclass(frozen=True)
class Number:
    """A test accuracy with its 95% interval (None when the records do not hold it) and what it is."""

    value: float | None
    ci: tuple[float, float] | None
    images: int | None
    note: str  # e.g. "paper_cnn, as published protocol, seed 0; Wilson CI" or why it is missing


def _mean_ci(cells: list[tuple[float, tuple[float, float], int]]) -> tuple[float, tuple[float, float], int]:
    return (sum(c[0] for c in cells) / len(cells), (min(c[1][0] for c in cells), max(c[1][1] for c in cells)),
            min(c[2] for c in cells))


def anatomy_numbers(runs: list, lookup: dict | None = None) -> dict[str, Number]:
    """The findings figure's numbers from committed records: the published split's test images with a copy in
    train and the copy-free ones (paper's CNN, as-published protocol, cluster-bootstrap CIs by copy group from the
    predictions), the
    grouped split (same protocol) and the external test (bootstrap CIs of the records), the lookup baseline
    of ``fracbench check`` (its check.json's ``lookup``), the published split's majority-class accuracy, and
    the share of test images with a copy in train (``copy_share``: value = share, images = test images)."""
    from fracbench.claims.tables.splits import _split_runs, copy_subsets, split_evidence

    done = [r for r in runs if r.record.get("status", "complete") == "complete"]
    pub = _split_runs(done, "published", "as_published")
    out: dict[str, Number] = {}
    subsets = [s for s in (copy_subsets(r) for r in pub) if s is not None]
    for key, name in (("copied", "with a copy in train"), ("copy_free", "without a copy in train")):
        cells = [(s[name]["accuracy"], tuple(s[name]["accuracy_ci95"]), s[name]["n"]) for s in subsets
                 if s[name]["accuracy"] is not None]
        if cells and len(cells) == len(pub):
            v, ci, n = _mean_ci(cells)
            out[key] = Number(v, ci, n, f"published split, test images {name}; as-published protocol, "
                                        f"{len(cells)} seed(s); 95% cluster-bootstrap CI by copy group")
        else:
            out[key] = Number(None, None, None, "not run")
    for key, split, protocol in (("grouped", "grouped", "as_published"), ("external", "external", "honest")):
        rs = _split_runs(done, split, protocol)
        ev = split_evidence(rs, f"{split} split")
        out[key] = Number(ev.value, ev.interval, ev.n_images,
                          f"{split} split, {protocol.replace('_', '-')} protocol, {len(rs)} seed(s); 95% bootstrap CI"
                          if ev.value is not None else "not run")
    lk = (lookup or {}).get("lookup") or {}
    out["lookup"] = (Number(float(lk["accuracy"]), tuple(lk["ci"]), int(lk["images"]),
                            "fracbench check's lookup baseline (no model); 95% cluster-bootstrap CI")
                     if lk.get("accuracy") is not None and lk.get("ci") else Number(None, None, None, "not checked"))
    maj = [float(r.test["majority_accuracy"]) for r in pub if r.test.get("majority_accuracy") is not None]
    out["majority"] = Number(sum(maj) / len(maj) if maj else None, None, None, "published split's majority class")
    leak = [r.record["leak"] for r in pub]
    out["copy_share"] = (Number(float(leak[0]["test_near_in_train_share"]), None, int(leak[0]["test_images"]),
                                f"{leak[0]['test_near_in_train']} test images have an exact or near copy in train")
                         if leak else Number(None, None, None, "not run"))
    return out


def cell_number(cell: str, note: str = "") -> Number:
    """A table cell "0.8313 ± 0.0078 [0.7851, 0.8706]" or "0.8992 [0.8486, 0.9415]" as a Number (None: no number)."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)(?:\s*±\s*[0-9.]+)?\s*\[([0-9.]+),\s*([0-9.]+)\]\s*", cell or "")
    if not m:
        return Number(None, None, None, note or "not run")
    return Number(float(m.group(1)), (float(m.group(2)), float(m.group(3))), None, note)


def _acc(n: Number) -> str:
    return f"{n.value:.3f} [{n.ci[0]:.3f}, {n.ci[1]:.3f}]" if n.value is not None and n.ci else "not run"


def anatomy_sentences(nums: dict[str, Number], paper: float | None, dataset: str,
                      own: Number | None = None) -> list[str]:
    """Three sentences on where a ~99.8% comes from, in the numbers of :func:`anatomy_numbers`; ``own``: the
    headline claim's fracbench number on ``dataset``'s own split, said when no grouped or external test ran."""
    share, cp, cf = nums["copy_share"], nums["copied"], nums["copy_free"]
    claim = f"the paper's {paper * 100:.1f}%" if paper is not None else "the paper's accuracy"
    if share.value is None:
        s1 = (f"No record here splits {dataset}'s published test set by copies in train, so where {claim} comes "
              "from is not shown on this page (see the report across datasets).")
    else:
        s1 = (f"On {dataset}'s published split, {share.note} ({100 * share.value:.1f}% of {share.images}); the "
              f"paper's CNN scores {_acc(cp)} on those and {_acc(cf)} on the {cf.images or 0} others.")
    if nums["grouped"].value is None and nums["external"].value is None:
        s2 = (f"No grouped re-split or external test was run here; fracbench's rerun of the paper's CNN on "
              f"{dataset}'s own split scores {_acc(own) if own is not None else 'not run'}, against {claim}.")
    else:
        s2 = (f"Re-split so that no copy crosses train and test, it scores {_acc(nums['grouped'])} (grouped split), "
              f"and {_acc(nums['external'])} on FracAtlas images it never saw (external test), against {claim}.")
    maj = nums["majority"].value
    s3 = (f"Looking up each test image's copy in train, with no model at all, scores {_acc(nums['lookup'])}"
          + (f"; always answering the majority class scores {maj:.3f}." if maj is not None else "."))
    return [s1, s2, s3]
