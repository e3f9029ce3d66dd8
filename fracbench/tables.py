"""Records in, tables out: the paper's Tables 1-3, a leaderboard and a claim-by-claim verdict.

Every table is built from run records alone (``results/runs/<experiment>/seed<k>/``, read through
fracbench.results) plus the experiments' YAML and baselines/claims.yaml, and written as Markdown,
CSV and LaTeX. A column holding the paper's numbers is headed "paper ..."; a column holding
fracbench's is headed "fracbench ...". Over several seeds a cell shows "mean ± sd" (sample sd over
the seeds present); one seed shows the value alone. Output is deterministic: rows are sorted, numbers
are rounded to a fixed number of decimals and nothing time-dependent is written, so the same records
give byte-identical files.

Intervals. A test-set metric of one run is shown as "point [lo, hi]" with the run's 95% bootstrap
interval (``<metric>_ci95`` in the record). Over several seeds the point is the mean over seeds and
the interval is the envelope of the seeds' intervals (lowest lower bound, highest upper bound): it
covers both test-set sampling and seed-to-seed variation, and never looks narrower than a single
run's interval. Per-epoch values (train loss and accuracy, test accuracy) have no bootstrap
interval; over several seeds the claims table uses their range over seeds instead.

A table refuses records made on different manifests (``MixedManifestError``): numbers from two
splits cannot stand in one column.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fracbench import results as R
from fracbench.experiments import Experiment, baselines_dir, load_experiment
from fracbench.io import atomic_write_text
from fracbench.metrics import METRIC_NAMES

__all__ = [
    "CLAIM_KINDS",
    "EPOCH_METRICS",
    "KNOWN_METRICS",
    "RECORD_METRICS",
    "Claim",
    "MixedManifestError",
    "Run",
    "Table",
    "claims_table",
    "leaderboard",
    "leak_table",
    "load_claims",
    "load_experiments",
    "load_runs",
    "protocol_table",
    "table1",
    "table2",
    "table3",
    "write_tables",
]

DASH = "—"
CLAIMS_FILE = "claims.yaml"
TABLE_NAMES = ("table1", "table2", "table3", "leaderboard", "claims", "leak", "protocol")

# Test-set metrics of the reported checkpoint, as in record["metrics"]["test"].
RECORD_METRICS: tuple[str, ...] = (*METRIC_NAMES, "kappa")
# Per-epoch values, as in epochs.jsonl.
EPOCH_METRICS: tuple[str, ...] = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auroc",
                                  "test_loss", "test_accuracy", "test_auroc")
# "count": a number of images; "unnamed": the paper gives a number without saying what it measures.
KNOWN_METRICS: frozenset[str] = frozenset((*RECORD_METRICS, *EPOCH_METRICS, "count", "unnamed"))
# protocol_effect: a habit of the paper's evaluation (or data) whose effect on its accuracy fracbench measures
CLAIM_KINDS = ("model_result", "dataset_fact", "citation", "protocol_effect")
PROTOCOL_EFFECTS = ("test_selection", "test_time_flip", "jpg_denominator", "selection_and_flip", "leak")
PAPER_TEST_ACCURACY = 0.998  # "the test Accuracy was 0.998" (Experiment section)
TOLERANCE = 0.01  # "within 1 point": one percentage point on a 0-1 scale (also applied to losses)
# Keys that change how a run executes, not what it computes; ignored when matching a record to a profile.
_RUNTIME_KEYS = ("device", "amp", "channels_last", "compile", "seed")
_TABLE_ORDER = ("table1", "table2", "table3", "hparam", "reference", "audit")


class MixedManifestError(ValueError):
    """Records made on different manifests (splits) were given to one table."""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One finished run: its folder, record.json and epochs.jsonl."""

    dir: Path
    record: dict[str, Any]
    epochs: list[dict[str, Any]]

    @property
    def experiment(self) -> str:
        return str(self.record.get("experiment", ""))

    @property
    def seed(self) -> int:
        return int(self.record.get("seed", 0))

    def epoch(self, n: int) -> dict[str, Any] | None:
        for e in self.epochs:
            if e.get("epoch") == n:
                return e
        return None

    @property
    def test(self) -> dict[str, Any]:
        return (self.record.get("metrics") or {}).get("test") or {}


def load_runs(results: Path) -> list[Run]:
    """Every run under ``results/runs``, sorted by experiment then seed."""
    return [Run(d, rec, R.read_epochs(d)) for d, rec in R.find_records(results)]


def load_experiments(directory: Path | None = None) -> dict[str, Experiment]:
    """Every experiment YAML of ``directory`` (default: baselines/), skipping claims.yaml."""
    directory = Path(directory or baselines_dir())
    out: dict[str, Experiment] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name == CLAIMS_FILE:
            continue
        exp = load_experiment(path)
        if exp.name in out:
            raise ValueError(f"{path}: experiment {exp.name!r} is also defined in {out[exp.name].path}")
        out[exp.name] = exp
    return out


@dataclass(frozen=True)
class Claim:
    """One number the paper states (see the header of baselines/claims.yaml)."""

    id: str
    text: str
    where: str
    value: float
    metric: str
    kind: str
    experiment: str | None = None
    epoch: int | None = None
    run: int | None = None
    note: str = ""
    effect: str = ""  # protocol_effect claims: which effect (PROTOCOL_EFFECTS)


def load_claims(path: Path | None = None) -> list[Claim]:
    """baselines/claims.yaml, validated: unique ids, known metrics and kinds."""
    path = Path(path or baselines_dir() / CLAIMS_FILE)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = raw.get("claims") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a top-level 'claims:' list")
    claims, seen = [], set()
    for i, c in enumerate(entries):
        try:
            claim = Claim(**{k: ("" if k == "note" and v is None else v) for k, v in c.items()})
        except TypeError as exc:
            raise ValueError(f"{path}: claim {i + 1}: {exc}") from None
        if claim.id in seen:
            raise ValueError(f"{path}: duplicate claim id {claim.id!r}")
        seen.add(claim.id)
        if claim.metric not in KNOWN_METRICS:
            raise ValueError(f"{path}: claim {claim.id}: unknown metric {claim.metric!r}")
        if claim.kind not in CLAIM_KINDS:
            raise ValueError(f"{path}: claim {claim.id}: kind {claim.kind!r}, expected one of {CLAIM_KINDS}")
        if (claim.kind == "protocol_effect") != bool(claim.effect) or (claim.effect and claim.effect not in
                                                                        PROTOCOL_EFFECTS):
            raise ValueError(f"{path}: claim {claim.id}: a protocol_effect claim names one effect of "
                             f"{PROTOCOL_EFFECTS}, and only it")
        claims.append(claim)
    return claims


def _experiments(experiments: Any) -> dict[str, Experiment]:
    """A name -> Experiment mapping from a Registry, a mapping or an iterable of experiments."""
    if isinstance(experiments, Mapping):
        return dict(experiments)
    if hasattr(experiments, "get") and hasattr(experiments, "list"):  # fracbench.registry.Registry
        return {n: experiments.get(n) for n in experiments}
    return {e.name: e for e in experiments}


def _by_experiment(runs: Iterable[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in sorted(runs, key=lambda r: (r.experiment, r.seed)):
        out.setdefault(r.experiment, []).append(r)
    return out


def _complete(runs: Iterable[Run]) -> tuple[list[Run], list[Run]]:
    """(finished runs, runs that failed): a failed run's record has no metrics and no manifest."""
    done, failed = [], []
    for r in runs:
        (done if r.record.get("status", "complete") == "complete" else failed).append(r)
    return done, failed


def _failed_notes(failed: Sequence[Run], names: Iterable[str] | None = None) -> list[str]:
    keep = None if names is None else set(names)
    return [f"{r.experiment} seed {r.seed} {r.record.get('status')}: "
            f"{str(r.record.get('error', ''))[:120]} (not shown; rerun it)."
            for r in failed if keep is None or r.experiment in keep]


def check_manifests(runs: Sequence[Run], table: str) -> None:
    """Refuse runs made on more than one manifest, naming each manifest and its runs."""
    groups: dict[str, list[str]] = {}
    for r in runs:
        key = str(r.record.get("manifest_sha256", "unknown"))
        groups.setdefault(key, []).append(f"{r.experiment}/seed{r.seed} ({r.record.get('dataset', '?')})")
    if len(groups) > 1:
        parts = [f"manifest {k[:16]}: {', '.join(v)}" for k, v in sorted(groups.items())]
        raise MixedManifestError(f"{table}: records from {len(groups)} different manifests cannot share a table; "
                                 f"rerun them on one split or move the others out of results/runs. "
                                 + "; ".join(parts))


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

    def to_markdown(self) -> str:
        def cell(s: str) -> str:
            return str(s).replace("|", "\\|").replace("\n", " ")

        lines = [f"## {self.title}", "", "| " + " | ".join(cell(c) for c in self.columns) + " |",
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


def _ci_cell(runs: Sequence[Run], metric: str, nd: int = 3) -> str:
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


def _epoch_values(runs: Sequence[Run], epoch: int, key: str) -> list[Any]:
    out = []
    for r in runs:
        e = r.epoch(epoch)
        if e is not None and key in e:
            out.append(e[key])
    return out


def _selected_values(runs: Sequence[Run], key: str) -> list[Any]:
    """A per-epoch value at each run's reported (selected) epoch."""
    out = []
    for r in runs:
        e = r.epoch(int(r.record.get("selected_epoch", -1)))
        if e is not None and key in e:
            out.append(e[key])
    return out


def _accuracy_as_reported(r: Run) -> float | None:
    """The test accuracy the run's protocol reports: the tutorial's .jpg-denominator count under as_published."""
    if r.record.get("protocol") == "as_published":
        v = r.test.get("accuracy_as_counted")
        return None if v is None else float(v)
    v = r.test.get("accuracy")
    return None if v is None else float(v)


# --------------------------------------------------------------------------------------------
# Provenance footnotes
# --------------------------------------------------------------------------------------------


def _profile_of(run: Run, exp: Experiment | None) -> str:
    """The profile a record was made under: the record's own field, else the profile whose config matches."""
    if run.record.get("profile"):
        return str(run.record["profile"])
    if exp is None:
        return "unknown"
    have = {k: v for k, v in (run.record.get("config") or {}).items() if k not in _RUNTIME_KEYS}
    for profile in ("full", "cpu", "smoke"):
        try:
            want = exp.train_config(profile, seed=run.seed).to_dict()
        except (ValueError, TypeError):
            continue
        if {k: v for k, v in want.items() if k not in _RUNTIME_KEYS} == have:
            return profile
    return "custom"


def _profiles(runs: Sequence[Run], exp: Experiment | None) -> str:
    return ", ".join(sorted({_profile_of(r, exp) for r in runs})) or DASH


def _provenance(exp: Experiment, runs: Sequence[Run]) -> str:
    if not runs:
        return f"{exp.name}: not run."
    profiles = sorted({_profile_of(r, exp) for r in runs})
    epochs = sorted({int(r.record.get("epochs_run", len(r.epochs))) for r in runs})
    seeds = ", ".join(str(r.seed) for r in runs)
    datasets = ", ".join(sorted({str(r.record.get("dataset", "?")) for r in runs}))
    ep = f"epochs 0..{epochs[0] - 1}" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]} epochs"
    changes = [f"{k}={v}" for p in profiles for k, v in sorted(exp.reduced(p).items()) if k != "seeds"]
    changed = f"; changed from the paper's configuration: {', '.join(changes)}" if changes else ""
    return (f"{exp.name}: profile {', '.join(profiles)}, {ep}, seeds {seeds} ({len(runs)} of "
            f"{len(exp.seeds)} in the full run), dataset {datasets}{changed}.")


def _jpg_warnings(runs: Sequence[Run]) -> list[str]:
    """Footnotes for as-published runs whose .jpg count is not the number of test images."""
    out = []
    for name, rs in sorted(_by_experiment(r for r in runs if r.record.get("protocol") == "as_published").items()):
        odd = sorted({(int((r.record.get("counts") or {}).get("test_denominator", -1)),
                       int((r.record.get("counts") or {}).get("test", -1))) for r in rs})
        odd = [(d, n) for d, n in odd if d != n]
        if odd:
            d, n = odd[0]
            out.append(f"{name}: the tutorial's .jpg count finds {d} of {n} test images, and as-published accuracies "
                       f"(train and test) divide by that count" + (", so they exceed 1 here: this dataset has no "
                                                                   ".jpg files." if d == 0 else "."))
    return out


def _protocol_label(exp: Experiment) -> str:
    return exp.protocol.replace("_", " ")


def _paper_value(exp: Experiment, metric: str, epoch: int | None = None, run: int | None = None) -> float | None:
    for pv in exp.paper:
        if pv.metric == metric and pv.epoch == epoch and pv.run == run:
            return pv.value
    return None


def _table_experiments(exps: Mapping[str, Experiment], table: str) -> list[Experiment]:
    order = {"as_published": 0, "honest": 1}
    return sorted((e for e in exps.values() if e.table == table), key=lambda e: (order.get(e.protocol, 2), e.name))


def _used_runs(by_exp: Mapping[str, list[Run]], exps: Iterable[Experiment]) -> list[Run]:
    return [r for e in exps for r in by_exp.get(e.name, [])]


# --------------------------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------------------------


def table1(runs: Sequence[Run], experiments: Any) -> Table:
    """The paper's Table 1 (train loss, train and test accuracy per epoch) beside fracbench's reruns."""
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    t1 = _table_experiments(exps, "table1")
    by_exp = _by_experiment(runs)
    check_manifests(_used_runs(by_exp, t1), "table1")
    paper_exp = next((e for e in t1 if e.protocol == "as_published"), t1[0] if t1 else None)
    epochs = sorted({pv.epoch for pv in paper_exp.paper if pv.epoch is not None}) if paper_exp else []

    labels = [_protocol_label(e) for e in t1]
    columns = ["epoch", "paper train loss", *[f"fracbench train loss ({x})" for x in labels],
               "paper train acc", *[f"fracbench train acc ({x})" for x in labels],
               "paper test acc", *[f"fracbench test acc ({x})" for x in labels],
               *[f"fracbench test balanced acc ({x})" for x in labels], "fracbench test majority-class acc"]
    used = _used_runs(by_exp, t1)
    majority = _split_value([r.test.get("majority_accuracy") for r in used if "majority_accuracy" in r.test])

    rows = []
    for ep in epochs:
        row = [str(ep), _paper(_paper_value(paper_exp, "train_loss", ep))]
        row += [_mean_sd(_epoch_values(by_exp.get(e.name, []), ep, "train_loss")) for e in t1]
        row.append(_paper(_paper_value(paper_exp, "train_accuracy", ep)))
        row += [_mean_sd(_epoch_values(by_exp.get(e.name, []), ep, "train_accuracy")) for e in t1]
        row.append(_paper(_paper_value(paper_exp, "test_accuracy", ep)))
        tests = [_mean_sd(_epoch_values(by_exp.get(e.name, []), ep, "test_accuracy")) for e in t1]
        row += tests
        row += [DASH for _ in t1]  # balanced accuracy exists for the reported checkpoint only
        row.append(majority if any(t != DASH for t in tests) else DASH)
        rows.append(row)

    # the reported checkpoint: what each protocol's record says (selected epoch in the footnote)
    sel = ["reported checkpoint", DASH]
    sel += [_mean_sd(_selected_values(by_exp.get(e.name, []), "train_loss")) for e in t1]
    sel.append("0.999")  # "the training accuracy was 0.999" (Experiment section)
    sel += [_mean_sd(_selected_values(by_exp.get(e.name, []), "train_accuracy")) for e in t1]
    sel.append("0.998")  # "the test Accuracy was 0.998" (Experiment section)
    sel += [_mean_sd([_accuracy_as_reported(r) for r in by_exp.get(e.name, [])]) for e in t1]
    sel += [_mean_sd([r.test.get("balanced_accuracy") for r in by_exp.get(e.name, []) if r.test]) for e in t1]
    sel.append(majority)
    rows.append(sel)

    notes = ["Paper columns: the paper's Table 1, digit for digit (rounded here to 4 decimals); in the last row the "
             "Experiment section's 'training accuracy was 0.999, and the test Accuracy was 0.998'.",
             "fracbench columns: mean ± sd over the seeds present (one seed: the value). " + DASH
             + ": that epoch was not run (a profile with fewer epochs) or not logged.",
             "as published: test-time random flip, accuracy over the .jpg count, checkpoint chosen on test accuracy; "
             "honest: checkpoint chosen on validation AUROC, threshold from validation, test scored once. Per-epoch "
             "test accuracy under honest is logged for the learning curve only and chooses nothing.",
             "Majority-class accuracy: what always answering the commoner class scores on the test split; balanced "
             "accuracy: the mean of sensitivity and specificity at the reported checkpoint."]
    for e in t1:
        sel_epochs = sorted({int(r.record.get("selected_epoch", -1)) for r in by_exp.get(e.name, [])})
        if sel_epochs:
            notes.append(f"{e.name}: reported checkpoint at epoch(s) {', '.join(map(str, sel_epochs))} "
                         f"(chosen on {_selected_on(by_exp[e.name])}).")
    notes += [_provenance(e, by_exp.get(e.name, [])) for e in t1]
    notes += _jpg_warnings(used)
    notes += _failed_notes(failed, [e.name for e in t1])
    return Table("table1", "Table 1: training and test statistics per epoch, paper vs fracbench", columns, rows,
                 notes)


def _selected_on(runs: Sequence[Run]) -> str:
    return ", ".join(sorted({str(r.record.get("selected_on", "?")) for r in runs}))


# --------------------------------------------------------------------------------------------
# Table 2
# --------------------------------------------------------------------------------------------


def table2(runs: Sequence[Run], experiments: Any) -> Table:
    """The paper CNN's training statistics (epochs 18..49) beside the [14] stand-in's (epochs 1..11)."""
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    paper_exp = next((e for e in _table_experiments(exps, "table1") if e.protocol == "as_published"), None)
    stand_ins = _table_experiments(exps, "table2")
    stand_in = stand_ins[0] if stand_ins else None
    by_exp = _by_experiment(runs)
    used = [e for e in (paper_exp, stand_in) if e is not None]
    check_manifests(_used_runs(by_exp, used), "table2")

    ours_epochs = sorted({pv.epoch for pv in paper_exp.paper if pv.epoch is not None and pv.epoch >= 18}) \
        if paper_exp else []
    rao_epochs = sorted({pv.epoch for pv in stand_in.paper if pv.epoch is not None}) if stand_in else []
    p_runs = by_exp.get(paper_exp.name, []) if paper_exp else []
    s_runs = by_exp.get(stand_in.name, []) if stand_in else []
    columns = ["epoch", "paper train acc", "fracbench train acc", "paper train loss", "fracbench train loss",
               "[14] epoch", "paper: [14] train acc", "fracbench stand-in train acc", "paper: [14] train loss",
               "fracbench stand-in train loss"]
    rows = []
    for i in range(max(len(ours_epochs), len(rao_epochs))):
        row: list[str] = []
        if i < len(ours_epochs):
            ep = ours_epochs[i]
            assert paper_exp is not None
            row += [str(ep), _paper(_paper_value(paper_exp, "train_accuracy", ep)),
                    _mean_sd(_epoch_values(p_runs, ep, "train_accuracy")),
                    _paper(_paper_value(paper_exp, "train_loss", ep)),
                    _mean_sd(_epoch_values(p_runs, ep, "train_loss"))]
        else:
            row += [""] * 5
        if i < len(rao_epochs):
            ep = rao_epochs[i]
            assert stand_in is not None
            row += [str(ep), _paper(_paper_value(stand_in, "train_accuracy", ep)),
                    _mean_sd(_epoch_values(s_runs, ep, "train_accuracy")),
                    _paper(_paper_value(stand_in, "train_loss", ep)),
                    _mean_sd(_epoch_values(s_runs, ep, "train_loss"))]
        else:
            row += [""] * 5
        rows.append(row)
    notes = ["Left: the paper's CNN (paper columns: Table 1's exact values, which Table 2 prints as percentages "
             "truncated to two decimals) beside fracbench's as-published rerun. Right: Rao [14] as quoted in Table 2 "
             "beside fracbench's STAND-IN for [14], whose architecture is unpublished: a tutorial-style CNN, not the "
             "cited network, on fracbench's dataset, not [14]'s.",
             "[14]'s epoch N is set beside fracbench's epoch index N (0-based). [14]'s losses (0.88-1.07) exceed ln 2 "
             "= 0.693, a constant 50/50 guess on two classes, so [14] was most likely not a two-class task: the "
             "paper's side-by-side comparison (same row, epochs 18-49 against 1-11) does not compare like with like.",
             "fracbench columns: mean ± sd over the seeds present; " + DASH + ": epoch not run."]
    notes += [_provenance(e, by_exp.get(e.name, [])) for e in used]
    notes += _jpg_warnings(_used_runs(by_exp, used))
    notes += _failed_notes(failed, [e.name for e in used])
    return Table("table2", "Table 2: training statistics of the paper's CNN and of [14] (stand-in)", columns, rows,
                 notes)


# --------------------------------------------------------------------------------------------
# Table 3
# --------------------------------------------------------------------------------------------


def table3(runs: Sequence[Run], experiments: Any) -> Table:
    """Each [15] configuration row beside the stand-in's runs: per seed, then mean ± sd."""
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    t3 = sorted(_table_experiments(exps, "table3"),
                key=lambda e: (int(e.config.get("epochs", 0)), int(e.config.get("batch_size", 0)), e.name))
    by_exp = _by_experiment(runs)
    check_manifests(_used_runs(by_exp, t3), "table3")
    columns = ["configuration", "epochs", "batch size", "paper row", "fracbench seed", "paper accuracy",
               "fracbench accuracy", "fracbench balanced acc", "fracbench majority-class acc", "paper AUC",
               "fracbench AUROC", "paper specificity", "fracbench specificity"]
    rows = []
    for e in t3:
        ex_runs = {r.seed: r for r in by_exp.get(e.name, [])}
        paper_runs = sorted({pv.run for pv in e.paper if pv.run is not None})
        where = {pv.run: pv.where for pv in e.paper if pv.run is not None}
        n = max(len(paper_runs), len(e.seeds))
        extra = sorted(s for s in ex_runs if s not in e.seeds)
        seeds_in_order = list(e.seeds) + extra
        head = [e.name, str(e.config.get("epochs", DASH)), str(e.config.get("batch_size", DASH))]
        for i in range(max(n, len(seeds_in_order))):
            seed = seeds_in_order[i] if i < len(seeds_in_order) else None
            r = ex_runs.get(seed) if seed is not None else None
            pr = paper_runs[i] if i < len(paper_runs) else None

            def ours(metric: str, r: Run | None = r) -> str:
                if r is None:
                    return "not run"
                return _mean_sd([r.test.get(metric)], missing="undefined")

            rows.append([*head, where.get(pr, DASH) if pr is not None else DASH,
                         DASH if seed is None else str(seed),
                         _paper(_paper_value(e, "accuracy", run=pr)) if pr is not None else DASH, ours("accuracy"),
                         ours("balanced_accuracy"), ours("majority_accuracy"),
                         _paper(_paper_value(e, "auroc", run=pr)) if pr is not None else DASH, ours("auroc"),
                         _paper(_paper_value(e, "specificity", run=pr)) if pr is not None else DASH,
                         ours("specificity")])
        present = [ex_runs[s] for s in sorted(ex_runs)]

        def paper_ms(metric: str, e: Experiment = e) -> str:
            return _mean_sd([pv.value for pv in e.paper if pv.metric == metric and pv.run is not None])

        def ours_ms(metric: str, present: list[Run] = present) -> str:
            return _mean_sd([r.test.get(metric) for r in present], missing="not run")

        rows.append([*head, "mean ± sd", f"{len(present)} seed(s)", paper_ms("accuracy"), ours_ms("accuracy"),
                     ours_ms("balanced_accuracy"),
                     _split_value([r.test.get("majority_accuracy") for r in present], missing="not run"),
                     paper_ms("auroc"), ours_ms("auroc"),
                     paper_ms("specificity"), ours_ms("specificity")])
    notes = ["Paper columns: Table 3 as printed, which the Discussion attributes to [15]. fracbench columns: a "
             "STAND-IN for [15] (architecture unpublished) trained with the row's epochs and batch size under the "
             "honest protocol, on fracbench's dataset. Paper row N of a configuration is set beside its N-th seed.",
             "In every row of the paper's Table 3 specificity equals accuracy.",
             "Balanced accuracy and majority-class accuracy (always answering the commoner class) stand beside "
             "accuracy so that an accuracy near the majority-class rate reads as what it is."]
    notes += [_provenance(e, by_exp.get(e.name, [])) for e in t3]
    notes += _failed_notes(failed, [e.name for e in t3])
    return Table("table3", "Table 3: [15]'s configurations (paper) vs the [15] stand-in (fracbench)", columns, rows,
                 notes)


# --------------------------------------------------------------------------------------------
# Leaderboard
# --------------------------------------------------------------------------------------------

_LEADER_METRICS = (("AUROC", "auroc"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
                   ("balanced accuracy", "balanced_accuracy"), ("kappa", "kappa"), ("accuracy", "accuracy"))


def _exp_order(e: Experiment) -> tuple[int, str]:
    return (_TABLE_ORDER.index(e.table) if e.table in _TABLE_ORDER else len(_TABLE_ORDER), e.name)


def _variants(e: Experiment, by_exp: Mapping[str, list[Run]]) -> list[tuple[Experiment, list[Run]]]:
    """An experiment with its runs; one entry per variant for a kind that records variants (leak_demo)."""
    import dataclasses

    names = sorted(n for n in by_exp if n.startswith(f"{e.name}__")) if e.kind != "train" else []
    if not names:
        return [(e, by_exp.get(e.name, []))]
    out = []
    for n in names:
        protocols = sorted({str(r.record.get("protocol", e.protocol)) for r in by_exp[n]})
        out.append((dataclasses.replace(e, name=n, protocol=", ".join(protocols)), by_exp[n]))
    return out


def _flops(v: float) -> str:
    return f"{v / 1e9:.3f} G" if v >= 1e9 else f"{v / 1e6:.3f} M"


def leaderboard(runs: Sequence[Run], experiments: Any) -> Table:
    """Every experiment's test metrics with 95% CIs, cost and provenance (one row per experiment)."""
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    by_exp = _by_experiment(runs)
    shared = [e for e in exps.values() if e.dataset is None]
    check_manifests(_used_runs(by_exp, shared), "leaderboard")
    columns = ["experiment", "model", "protocol", "dataset", "profile", "seeds",
               *[f"fracbench {label}" for label, _ in _LEADER_METRICS], "fracbench majority-class accuracy",
               "params", "FLOPs/image", "train seconds", "images/s", "device"]
    rows = []
    shown_variants: set[str] = set()
    for e, rs in (entry for x in sorted(exps.values(), key=_exp_order) for entry in _variants(x, by_exp)):
        shown_variants.add(e.name)
        if not rs:
            state = "failed" if any(r.experiment == e.name for r in failed) else "not run"
            rows.append([e.name, e.model, e.protocol, e.dataset or DASH, DASH, "none",
                         *[state for _ in _LEADER_METRICS], state, DASH, DASH, DASH, DASH, DASH])
            continue
        params = sorted({int(r.record.get("params", 0)) for r in rs})
        flops = sorted({float(r.record.get("flops_per_image", 0)) for r in rs})
        rows.append([
            e.name, e.model, e.protocol, ", ".join(sorted({str(r.record.get("dataset", "?")) for r in rs})),
            _profiles(rs, e), ", ".join(str(r.seed) for r in rs),
            *[_ci_cell(rs, key) for _, key in _LEADER_METRICS],
            _split_value([r.test.get("majority_accuracy") for r in rs], nd=3),
            ", ".join(f"{p:,}" for p in params), ", ".join(_flops(f) for f in flops),
            _mean_sd([r.record.get("train_seconds") for r in rs], nd=1),
            _mean_sd([r.record.get("images_per_second") for r in rs], nd=1),
            "; ".join(sorted({str(r.record.get("device_name", "?")) for r in rs})),
        ])
    unknown = sorted(set(by_exp) - set(exps) - shown_variants)
    notes = ["Each metric: the test set at the reported checkpoint and threshold, 'point [lo, hi]' with the 95% "
             "stratified bootstrap interval. Over several seeds the point is the mean over seeds and the interval "
             "the envelope of the seeds' intervals (lowest lower bound, highest upper bound), covering both "
             "test-set sampling and seed variation.",
             "Accuracy of as-published runs is at argmax (threshold 0.5) over every test image; the tutorial's "
             ".jpg-denominator count is in Table 1. Kappa is Cohen's, in [-1, 1]. Majority-class accuracy: always "
             "answering the commoner class.",
             "Train seconds and images/s: mean ± sd over seeds, on the device named."]
    if unknown:
        notes.append(f"Records of experiments without a YAML in baselines/ are not shown: {', '.join(unknown)}.")
    if any(e.dataset is not None for e in exps.values()):
        notes.append("Experiments with a fixed dataset of their own are not held to the shared manifest.")
    notes += _failed_notes(failed)
    return Table("leaderboard", "Leaderboard: every experiment on the test split (fracbench)", columns, rows, notes)


# --------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reproduced:
    value: float | None = None  # mean over seeds
    interval: tuple[float, float] | None = None
    interval_kind: str = ""  # "95% CI" or "seed range"
    cell: str = DASH
    majority: str = DASH
    balanced: str = DASH
    problem: str = ""  # why there is no value


def _reproduce(claim: Claim, runs: Sequence[Run], exp: Experiment | None) -> _Reproduced:
    if not runs:
        return _Reproduced(problem=f"{claim.experiment} was not run")
    majority = _split_value([r.test.get("majority_accuracy") for r in runs])
    if claim.run is not None:
        seeds = list(exp.seeds) if exp else sorted(r.seed for r in runs)
        seed = seeds[claim.run] if claim.run < len(seeds) else None
        runs = [r for r in runs if r.seed == seed]
        if not runs:
            return _Reproduced(problem=f"{claim.experiment} seed {seed} (row {claim.run}) was not run")
    if claim.metric in EPOCH_METRICS:
        if claim.epoch is not None:
            values = _finite(_epoch_values(runs, claim.epoch, claim.metric))
            if not values:
                ran = sorted({len(r.epochs) for r in runs})
                return _Reproduced(problem=f"epoch {claim.epoch} of {claim.experiment} was not run or not logged "
                                           f"(ran epochs 0..{ran[-1] - 1 if ran and ran[-1] else 0})")
        else:
            values = _finite(_selected_values(runs, claim.metric))
            if not values:
                return _Reproduced(problem=f"{claim.metric} at the reported checkpoint was not logged")
        mean = statistics.fmean(values)
        interval = (min(values), max(values)) if len(values) > 1 else None
        cell = _mean_sd(values)
        if interval:
            cell += f" (seeds {_num(interval[0])}-{_num(interval[1])})"
        balanced = DASH
        if claim.metric == "test_accuracy" and claim.epoch is None:
            balanced = _mean_sd([r.test.get("balanced_accuracy") for r in runs])
        return _Reproduced(mean, interval, "seed range", cell,
                           majority if claim.metric.startswith("test") else DASH, balanced)
    if claim.metric in RECORD_METRICS:
        values, los, his = [], [], []
        for r in runs:
            v, ci = r.test.get(claim.metric), r.test.get(f"{claim.metric}_ci95")
            if claim.metric == "accuracy" and r.record.get("protocol") == "as_published":
                # as the tutorial counts: correct / number of .jpg files (the CI scaled alike)
                counts = r.record.get("counts") or {}
                scale = counts.get("test", 1) / max(counts.get("test_denominator", 1), 1)
                v = _accuracy_as_reported(r)
                ci = [c * scale for c in ci] if isinstance(ci, (list, tuple)) else ci
            if v is None or not _finite([v]):
                continue
            values.append(float(v))
            if isinstance(ci, (list, tuple)) and len(ci) == 2 and _finite(ci) == list(ci):
                los.append(float(ci[0]))
                his.append(float(ci[1]))
        if not values:
            return _Reproduced(problem=f"{claim.metric} is undefined in {claim.experiment}'s records")
        mean = statistics.fmean(values)
        interval = (min(los), max(his)) if los and len(los) == len(values) else None
        cell = _num(mean)
        if len(values) > 1:
            cell = _mean_sd(values)
        if interval:
            cell += f" [{_num(interval[0])}, {_num(interval[1])}]"
        acc = claim.metric == "accuracy"
        return _Reproduced(mean, interval, "95% CI", cell, majority if acc else DASH,
                           _mean_sd([r.test.get("balanced_accuracy") for r in runs]) if acc else DASH)
    return _Reproduced(problem=f"metric {claim.metric} has no counterpart in a record")


def claims_table(runs: Sequence[Run], experiments: Any, claims: Sequence[Claim | Mapping[str, Any]]) -> Table:
    """Each claim of the paper beside fracbench's number and a verdict."""
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    by_exp = _by_experiment(runs)
    claims = [c if isinstance(c, Claim) else Claim(**c) for c in claims]
    wanted = sorted({c.experiment for c in claims if c.experiment})
    check_manifests(_used_runs(by_exp, [exps[n] for n in wanted if n in exps and exps[n].dataset is None]), "claims")
    columns = ["claim", "where", "quote", "paper", "fracbench", "fracbench balanced acc",
               "fracbench majority-class acc", "verdict", "reason"]
    rows = []
    counts: dict[str, int] = {}
    for c in claims:
        paper = str(int(c.value)) if c.metric == "count" else _paper(c.value)
        if c.kind == "protocol_effect":
            row = _effect_row(c, paper, exps, by_exp)
            counts[row[7]] = counts.get(row[7], 0) + 1
            rows.append(row)
            continue
        exp = exps.get(c.experiment) if c.experiment else None
        rs = by_exp.get(c.experiment, []) if c.experiment else []
        if c.experiment and exp is None:
            rep = _Reproduced(problem=f"no experiment named {c.experiment} in baselines/")
        elif c.experiment and c.kind != "dataset_fact":
            rep = _reproduce(c, rs, exp)
        else:
            rep = _Reproduced()
        datasets = ", ".join(sorted({str(r.record.get("dataset", "?")) for r in rs})) or "fracbench's dataset"
        if c.kind == "dataset_fact":
            verdict, reason = "not comparable", "dataset_fact: a count of the paper's dataset, not a model result"
        elif c.kind == "citation":
            verdict = "not comparable"
            reason = ("citation: quoted from another work" + (f"; fracbench's number is a stand-in on {datasets}"
                                                              if rep.value is not None else ""))
        elif rep.value is None:
            verdict, reason = "not comparable", rep.problem or "no experiment reproduces it"
        else:
            diff = rep.value - float(c.value)
            inside = rep.interval is not None and rep.interval[0] <= float(c.value) <= rep.interval[1]
            balanced = _finite(r.test.get("balanced_accuracy") for r in rs)
            one_sided = (c.metric in ("sensitivity", "specificity") and balanced
                         and sum(balanced) / len(balanced) < float(c.value) - TOLERANCE)
            if (inside or abs(diff) <= TOLERANCE + 1e-12) and one_sided:
                # a specificity of 1.0 from a model that never calls "fractured" reproduces nothing:
                # the paper claims sensitivity and specificity together
                verdict = f"not reproduced on {datasets}"
                reason = (f"{c.metric} alone matches, but balanced accuracy is only "
                          f"{sum(balanced) / len(balanced):.3f}: the other rate is far below the paper's")
            elif inside:
                verdict, reason = "reproduced", f"inside fracbench's {rep.interval_kind}"
            elif abs(diff) <= TOLERANCE + 1e-12:
                verdict, reason = "reproduced", f"within 1 point ({_signed_diff(c.metric, diff)})"
            else:
                verdict = f"not reproduced on {datasets}"
                reason = f"fracbench {_signed_diff(c.metric, diff)} from the paper"
                if rep.interval is not None:
                    reason += f", outside the {rep.interval_kind}"
        counts[verdict.split(" on ")[0]] = counts.get(verdict.split(" on ")[0], 0) + 1
        rows.append([c.id, c.where, c.text, paper, rep.cell, rep.balanced, rep.majority, verdict, reason])
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    notes = [f"{len(claims)} claims: {summary}.",
             "paper: the number as the paper states it (a fraction; counts as integers). fracbench: mean over the "
             "seeds present; [lo, hi] is the 95% bootstrap interval (the envelope over seeds) for test-set metrics of "
             "the reported checkpoint, and the range over seeds for per-epoch values. A per-epoch claim without an "
             "epoch is read at the reported checkpoint's epoch.",
             "reproduced: the paper's number lies inside that interval or within 1 point (0.01; also for losses) of "
             "fracbench's mean. not comparable: a dataset fact, a number quoted from another work (fracbench's "
             "stand-in is shown for orientation only), or an experiment or epoch that was not run.",
             "Accuracy of an as-published run is counted as the tutorial counts it (correct / number of .jpg test "
             "files). Notes on the paper's inconsistencies are in baselines/claims.yaml."]
    if any(c.kind == "protocol_effect" for c in claims):
        notes.append("protocol effect: a habit of the paper's evaluation or data, measured by fracbench (the leak "
                     "and protocol tables): the fracbench column holds how many points it adds to an accuracy, or "
                     "what accuracy it produces, beside the paper's reported test accuracy.")
    notes += _leak_notes(runs, exps)
    notes += _jpg_warnings(_used_runs(by_exp, [exps[n] for n in wanted if n in exps]))
    notes += _failed_notes(failed, wanted)
    return Table("claims", "Claims: every number in the paper, checked against fracbench", columns, rows, notes)


def _signed_diff(metric: str, diff: float) -> str:
    """A rate's difference in percentage points; a loss's as a plain difference."""
    if metric.endswith("loss"):
        return f"{diff:+.4f}"
    return f"{diff * 100:+.2f} points"


# --------------------------------------------------------------------------------------------
# The leak demonstration and the protocol effects
# --------------------------------------------------------------------------------------------

_LEAK_VARIANTS = (("naive", "as_published"), ("naive", "honest"), ("grouped", "as_published"), ("grouped", "honest"))
_SPLIT_TITLE = {"naive": "(a) image-level random", "grouped": "(b) grouped by source image"}


def _points(values: Sequence[Any], nd: int = 2) -> str:
    """Differences of rates in percentage points: 'mean ± sd points' (the value alone for one)."""
    vals = _finite(values)
    if not vals:
        return DASH
    if len(vals) == 1:
        return f"{vals[0] * 100:+.{nd}f} points"
    return f"{statistics.fmean(vals) * 100:+.{nd}f} ± {statistics.stdev(vals) * 100:.{nd}f} points"


def _leak_runs(exp_name: str, by_exp: Mapping[str, list[Run]], split: str, protocol: str) -> list[Run]:
    return by_exp.get(f"{exp_name}__{split}_{protocol}", [])


def _by_seed_diff(a: Sequence[Run], b: Sequence[Run], value) -> list[float]:
    """value(run a) - value(run b) for each seed present in both."""
    bs = {r.seed: r for r in b}
    out = []
    for r in a:
        if r.seed in bs:
            va, vb = value(r), value(bs[r.seed])
            if _finite([va, vb]) == [va, vb]:
                out.append(float(va) - float(vb))
    return out


def _leak_notes(runs: Sequence[Run], exps: Mapping[str, Experiment]) -> list[str]:
    """The claims table's footnote citing the leak table: what an image-level split of copies reaches."""
    by_exp = _by_experiment(runs)
    out = []
    for e in sorted((e for e in exps.values() if e.kind == "leak_demo"), key=lambda e: e.name):
        a = _leak_runs(e.name, by_exp, "naive", "as_published")
        b = _leak_runs(e.name, by_exp, "grouped", "as_published")
        if not a:
            continue
        va = _finite(_accuracy_as_reported(r) for r in a)
        vb = _finite(_accuracy_as_reported(r) for r in b)
        if not va:
            continue
        copies = ", ".join((a[0].record.get("leak") or {}).get("copies", []))
        text = (f"Leak table ({e.name}): an image-level split of rotated/flipped copies ({copies}) reaches "
                f"{100 * statistics.fmean(va):.1f}% test accuracy as published")
        if vb:
            text += f"; the same images split by source image reach {100 * statistics.fmean(vb):.1f}%"
        out.append(text + f" (paper: {100 * PAPER_TEST_ACCURACY:.1f}%).")
    return out


def _effect_row(c: Claim, paper: str, exps: Mapping[str, Experiment], by_exp: Mapping[str, list[Run]]) -> list[str]:
    """One claims-table row for a protocol_effect claim."""
    exp = exps.get(c.experiment or "")
    head = [c.id, c.where, c.text, paper]
    if exp is None:
        return [*head, DASH, DASH, DASH, "not comparable", f"no experiment named {c.experiment} in baselines/"]
    if c.effect == "leak":
        a = _leak_runs(exp.name, by_exp, "naive", "as_published")
        b = _leak_runs(exp.name, by_exp, "grouped", "as_published")
        if not a:
            return [*head, DASH, DASH, DASH, "not comparable", f"{exp.name} was not run"]
        va = [_accuracy_as_reported(r) for r in a]
        cell = f"image-level split: {_mean_sd(va)}"
        reason = f"an image-level split of rotated copies reaches {_mean_sd(va)} test accuracy as published"
        if b:
            cell += f"; by source: {_mean_sd([_accuracy_as_reported(r) for r in b])}"
            reason += (f"; split by source image {_mean_sd([_accuracy_as_reported(r) for r in b])}: "
                       f"{_points(_by_seed_diff(a, b, _accuracy_as_reported))} from the leak alone (leak table)")
        return [*head, cell, _mean_sd([r.test.get("balanced_accuracy") for r in a]),
                _split_value([r.test.get("majority_accuracy") for r in a]), "protocol effect", reason]
    rs = [r for r in by_exp.get(exp.name, []) if isinstance(r.record.get("protocol_effects"), dict)]
    if not rs:
        return [*head, DASH, DASH, DASH, "not comparable", f"{exp.name} was not run"]
    vals = [r.record["protocol_effects"].get(c.effect) for r in rs]
    fin = _finite(vals)
    cell = _points(vals)
    if len(fin) > 1:
        cell += f" (seeds {min(fin) * 100:+.2f} to {max(fin) * 100:+.2f})"
    what = {"test_selection": "choosing the checkpoint on test accuracy instead of validation AUROC",
            "test_time_flip": "the random flip at test time",
            "jpg_denominator": "dividing by the .jpg count of a folder where a third of the images are PNG",
            "selection_and_flip": "the best flipped test accuracy over epochs (both habits together)"}[c.effect]
    reason = (f"{what} changes the test accuracy by {_points(vals)} over {len(fin)} seed(s) (protocol table)")
    return [*head, cell, _mean_sd([r.test.get("balanced_accuracy") for r in rs]),
            _split_value([r.test.get("majority_accuracy") for r in rs]), "protocol effect", reason]


def leak_table(runs: Sequence[Run], experiments: Any) -> Table:
    """The leak demonstration: test metrics of (a) image-level and (b) grouped splits of copies, both protocols."""
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    by_exp = _by_experiment(runs)
    leak_exps = sorted((e for e in exps.values() if e.kind == "leak_demo"), key=lambda e: e.name)
    columns = ["experiment", "split", "protocol", "seeds", "test images", "test images with a copy in train",
               "fracbench test accuracy", "fracbench balanced acc", "fracbench majority-class acc",
               "fracbench AUROC", "paper test accuracy"]
    rows = []
    notes = []
    for e in leak_exps:
        for split, protocol in _LEAK_VARIANTS:
            rs = _leak_runs(e.name, by_exp, split, protocol)
            name = f"{e.name}__{split}_{protocol}"
            if not rs:
                state = "failed" if any(r.experiment == name for r in failed) else "not run"
                rows.append([e.name, _SPLIT_TITLE[split], protocol.replace("_", " "), "none", DASH, DASH, state,
                             state, state, state, _paper(PAPER_TEST_ACCURACY)])
                continue
            info = [r.record.get("leak") or {} for r in rs]
            shares = _finite(i.get("test_share_with_a_copy_in_train") for i in info)
            leaked = sorted({int(i.get("test_images_with_a_copy_in_train", 0)) for i in info})
            n_test = sorted({int((r.record.get("counts") or {}).get("test", 0)) for r in rs})
            rows.append([e.name, _SPLIT_TITLE[split], protocol.replace("_", " "), ", ".join(str(r.seed) for r in rs),
                         ", ".join(map(str, n_test)),
                         ", ".join(map(str, leaked)) + (f" ({100 * shares[0]:.1f}%)" if shares else ""),
                         _mean_sd([_accuracy_as_reported(r) for r in rs]),
                         _mean_sd([r.test.get("balanced_accuracy") for r in rs]),
                         _split_value([r.test.get("majority_accuracy") for r in rs]),
                         _mean_sd([r.test.get("auroc") for r in rs]), _paper(PAPER_TEST_ACCURACY)])
        for protocol in ("as_published", "honest"):
            a = _leak_runs(e.name, by_exp, "naive", protocol)
            b = _leak_runs(e.name, by_exp, "grouped", protocol)
            rows.append([e.name, "(a) − (b): inflation by the leak", protocol.replace("_", " "),
                         ", ".join(sorted({str(r.seed) for r in a} & {str(r.seed) for r in b})) or "none", DASH, DASH,
                         _points(_by_seed_diff(a, b, _accuracy_as_reported)),
                         _points(_by_seed_diff(a, b, lambda r: r.test.get("balanced_accuracy"))), DASH,
                         _points(_by_seed_diff(a, b, lambda r: r.test.get("auroc"))), DASH])
        a = _leak_runs(e.name, by_exp, "naive", "as_published")
        gap = [PAPER_TEST_ACCURACY - v for v in _finite(_accuracy_as_reported(r) for r in a)]
        rows.append([e.name, "paper − (a): gap left to 99.8%", "as published", ", ".join(str(r.seed) for r in a)
                     or "none", DASH, DASH, _points(gap), DASH, DASH, DASH, _paper(PAPER_TEST_ACCURACY)])
        some = next((r for s, p in _LEAK_VARIANTS for r in _leak_runs(e.name, by_exp, s, p)), None)
        if some is not None:
            info = some.record.get("leak") or {}
            notes.append(f"{e.name}: {info.get('source_images', '?')} source images of {info.get('source_dataset', '?')}"
                         f", {len(info.get('copies', []))} copies of each ({', '.join(info.get('copies', []))}; rot90 "
                         f"and rot270 turn counter-clockwise, hflip mirrors left-right), written as PNGs at "
                         f"{(some.record.get('config') or {}).get('image_size', '?')} px; dataset "
                         f"{some.record.get('dataset', '?')}.")
        ran = next((rs for s, p in _LEAK_VARIANTS if (rs := _leak_runs(e.name, by_exp, s, p))), [])
        notes.append("Each variant: " + _provenance(e, ran))
    notes = ["(a): every copy is dealt to train/val/test at random on its own (70/15/15), as a naive random split of "
             "the folder does, so copies of one radiograph sit on both sides; (b): all copies of a source image (and "
             "of its duplicates) go to one split. Same images, same model, same epochs.",
             "Test accuracy is what the protocol reports: as published, at argmax with the checkpoint chosen on test "
             "accuracy and test-time flip (the copies are PNG files, so the tutorial's .jpg count finds none and "
             "every image is counted); honest, at the validation threshold with the checkpoint chosen on validation "
             "AUROC. Balanced accuracy and majority-class accuracy (always answering the commoner class) stand "
             "beside it.",
             "(a) − (b): per seed, then mean ± sd over seeds, in percentage points. paper − (a): how far the leaky "
             "split still is from the paper's 0.998."] + notes
    notes += _failed_notes(failed, [f"{e.name}__{s}_{p}" for e in leak_exps for s, p in _LEAK_VARIANTS])
    return Table("leak", "Leak demonstration: rotated copies split at image level vs by source image (fracbench)",
                 columns, rows, notes)


def protocol_table(runs: Sequence[Run], experiments: Any) -> Table:
    """Per seed and mean ± sd: what choosing on test, the test-time flip and the .jpg denominator add."""
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    by_exp = _by_experiment(runs)
    pexps = sorted((e for e in exps.values() if e.kind == "protocol_inflation"), key=lambda e: e.name)
    check_manifests(_used_runs(by_exp, pexps), "protocol")
    columns = ["experiment", "seed", "epochs", "epoch chosen on val AUROC", "epoch with best test acc",
               "test acc (val-chosen)", "test acc (test-chosen)", "(i) choosing on test",
               "flipped test acc (val-chosen)", "(ii) test-time flip", "(i)+(ii) best flipped over epochs",
               "mixed folder images (.jpg/.png)", "acc over all images", "acc over .jpg count",
               "(iii) .jpg denominator", "fracbench balanced acc", "fracbench majority-class acc"]
    rows = []
    notes = []
    for e in pexps:
        rs = [r for r in by_exp.get(e.name, []) if isinstance(r.record.get("protocol_effects"), dict)]
        if not rs:
            state = "failed" if any(r.experiment == e.name for r in failed) else "not run"
            rows.append([e.name, "none", *[state] * (len(columns) - 2)])
            continue

        def fx(r: Run, key: str) -> Any:
            return r.record["protocol_effects"].get(key)

        for r in rs:
            rows.append([e.name, str(r.seed), str(fx(r, "epochs")), str(fx(r, "val_selected_epoch")),
                         str(fx(r, "test_selected_epoch")), _mean_sd([fx(r, "accuracy_val_selected")]),
                         _mean_sd([fx(r, "accuracy_test_selected")]), _points([fx(r, "test_selection")]),
                         _mean_sd([fx(r, "accuracy_flip_val_selected")]), _points([fx(r, "test_time_flip")]),
                         _points([fx(r, "selection_and_flip")]),
                         f"{fx(r, 'mixed_images')} ({fx(r, 'mixed_jpg')}/{fx(r, 'mixed_png')})",
                         _mean_sd([fx(r, "mixed_accuracy")]), _mean_sd([fx(r, "mixed_accuracy_as_counted")]),
                         _points([fx(r, "jpg_denominator")]), _mean_sd([r.test.get("balanced_accuracy")]),
                         _mean_sd([r.test.get("majority_accuracy")])])

        def ms(key: str, rs: list[Run] = rs) -> str:
            return _mean_sd([r.record["protocol_effects"].get(key) for r in rs])

        def mp(key: str, rs: list[Run] = rs) -> str:
            return _points([r.record["protocol_effects"].get(key) for r in rs])

        rows.append([e.name, "mean ± sd", DASH, DASH, DASH, ms("accuracy_val_selected"), ms("accuracy_test_selected"),
                     mp("test_selection"), ms("accuracy_flip_val_selected"), mp("test_time_flip"),
                     mp("selection_and_flip"), DASH, ms("mixed_accuracy"), ms("mixed_accuracy_as_counted"),
                     mp("jpg_denominator"), _mean_sd([r.test.get("balanced_accuracy") for r in rs]),
                     _split_value([r.test.get("majority_accuracy") for r in rs])])
        notes.append(_provenance(e, rs))
    notes = ["One honest training run per seed; per epoch the test set is scored with and without the tutorial's "
             "random flip (logged only; nothing is chosen on it). Accuracies here are at argmax (0.5), as the "
             "tutorial counts.",
             "(i) test accuracy at the first epoch with the best test accuracy minus at the epoch chosen on "
             "validation AUROC; (ii) flipped minus unflipped test accuracy of the validation-chosen checkpoint; "
             "(i)+(ii) the best flipped test accuracy over epochs (what the tutorial reports) minus the honest one; "
             "(iii) on a copy of the test folder with a third of the images stored as PNG: number correct over the "
             ".jpg count minus number correct over every image (the tutorial's glob counts '*.jpg' only).",
             "Balanced accuracy and majority-class accuracy: the validation-chosen checkpoint at its validation "
             "threshold on the test split."] + notes
    notes += _failed_notes(failed, [e.name for e in pexps])
    return Table("protocol", "Protocol inflation: what each habit of the tutorial adds to test accuracy (fracbench)",
                 columns, rows, notes)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def build_tables(runs: Sequence[Run], experiments: Any, claims: Sequence[Claim]) -> list[Table]:
    return [table1(runs, experiments), table2(runs, experiments), table3(runs, experiments),
            leaderboard(runs, experiments), claims_table(runs, experiments, claims), leak_table(runs, experiments),
            protocol_table(runs, experiments)]


def write_tables(results: Path, out: Path | None = None, *, baselines: Path | None = None) -> list[Path]:
    """Write results/tables/{table1,table2,table3,leaderboard,claims,leak,protocol}.{md,csv,tex}; returns the paths."""
    results = Path(results)
    out = Path(out) if out is not None else results / "tables"
    bdir = Path(baselines) if baselines is not None else baselines_dir()
    runs = load_runs(results)
    experiments = load_experiments(bdir)
    claims = load_claims(bdir / CLAIMS_FILE) if (bdir / CLAIMS_FILE).exists() else []
    paths = []
    for table in build_tables(runs, experiments, claims):
        for ext, text in (("md", table.to_markdown()), ("csv", table.to_csv()), ("tex", table.to_latex())):
            paths.append(atomic_write_text(out / f"{table.name}.{ext}", text))
    return sorted(paths)
