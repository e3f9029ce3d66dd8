"""Records in, figures out: learning curves, ROC and precision-recall, confusion matrices, examples.

``write_figures(results)`` writes PNGs to ``results/figures/`` from run records alone (read through
fracbench.claims.tables' loaders and fracbench.results), plus the experiments' YAML for the paper's values:

- ``curves_<experiment>.png`` for each Table 1 / Table 2 experiment: loss and accuracy against
  epoch, train and test, mean ± sd band over the seeds present (as the paper's Figures 4-7), with
  the paper's values for that experiment overlaid as markers labelled "paper (Table N)".
- ``curves_splits.png`` (claim-anatomy records): test and train accuracy against epoch on the
  published and the grouped split, with the paper's Table 1 values as markers labelled as the paper's.
- ``roc_pr_<group>.png``: ROC and precision-recall curves of the test predictions (seed 0, else
  the lowest seed), several experiments of one group (paper table) on one axes, with chance lines
  and each run's recorded operating point.
- ``confusion_<group>.png``: test confusion matrices at each run's recorded threshold.
- ``examples_<experiment>.png``: thumbnails of the most confident correct and wrong test
  predictions, decoded from the manifest's files under ``data_root``; skipped (and said so) when
  the images are not there or differ from the manifest's checksums.

Only complete records are drawn (a failed run has no predictions). Output is deterministic for
the same records and data: fixed size and dpi, default style, no timestamps or software tag in
the PNGs, and rows sorted. Each file is written atomically; figures of an earlier call that this
call did not write are removed, so the folder always matches the records.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from fracbench import results as R
from fracbench.io import atomic_write_bytes

__all__ = ["CURVE_TABLES", "DPI", "Bar", "accuracy_bars_png", "caption", "find_data_root", "write_figures"]

DPI = 100
CURVE_TABLES = ("table1", "table2")
EXAMPLES_PER_ROW = 6
THUMB = 128
FIGURE_PREFIXES = ("curves_", "roc_pr_", "confusion_", "examples_", "subgroups_")
_GROUP_TITLES = {
    "table1": "Table 1: the paper's CNN (as published and honest)",
    "table2": "Table 2: stand-in for Rao [14]",
    "table3": "Table 3: stand-ins for the paper's other configurations",
    "hparam": "Hyperparameter sweep of the paper's CNN",
    "reference": "Reference models",
    "leak": "Leak demonstration (rotated copies; own manifests)",
    "anatomy": "Claim anatomy: published split, grouped split, external test (each on its own test set)",
    "audit": "Audit experiments",
    "other": "Other experiments",
}
_GROUP_ORDER = ("table1", "table2", "table3", "hparam", "reference", "anatomy", "leak", "audit", "other")
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
_TRAIN, _TEST, _VAL = "#1f77b4", "#d62728", "#2ca02c"


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def write_figures(results: Path, out: Path | None = None, *, data_root: Path | None = None,
                  baselines: Path | None = None, echo: Callable[[str], None] | None = None) -> list[Path]:
    """Write every figure of ``results`` to ``out`` (default results/figures/); returns the paths written.

    ``data_root``: the dataset folder the manifest's paths are relative to; without it (or when
    the files are missing or changed) the thumbnail grid is skipped and ``echo`` says why.
    """
    from fracbench.claims.tables import load_experiments, load_runs

    results = Path(results)
    out = Path(out) if out is not None else results / "figures"
    if echo is None:
        from fracbench.progress import say as echo
    exps = load_experiments(baselines)
    runs = [r for r in load_runs(results) if r.record.get("status", "complete") == "complete"]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.style

    with matplotlib.style.context("default"):  # the user's matplotlibrc must not change the files
        written = _write_all(results, out, runs, exps, data_root, echo)

    # figures of an earlier call that this one did not write no longer match the records
    keep = {p.resolve() for p in written}
    if out.is_dir():
        for old in sorted(out.glob("*.png")):
            if old.name.startswith(FIGURE_PREFIXES) and old.resolve() not in keep:
                old.unlink()
    return written


def _write_all(results: Path, out: Path, runs: Sequence[Any], exps: dict[str, Any], data_root: Path | None,
               echo: Callable[[str], None]) -> list[Path]:
    written: list[Path] = []

    by_exp: dict[str, list[Any]] = {}
    for r in runs:
        by_exp.setdefault(r.experiment, []).append(r)

    # (a) learning curves of the Table 1 / Table 2 experiments
    for name in sorted(by_exp):
        if _table_of(by_exp[name][0], exps) in CURVE_TABLES and any(r.epochs for r in by_exp[name]):
            written.append(_save(_curves_figure(name, by_exp[name], exps.get(name)), out / f"curves_{_slug(name)}.png"))

    # (a') the claim anatomy's learning curves: published and grouped split beside the paper's Table 1
    split_runs = [r for r in runs if _is_split_run(r) and r.epochs]
    if split_runs:
        written.append(_save(_split_curves_figure(split_runs, exps), out / f"{SPLIT_CURVES}.png"))

    # (b) ROC / PR and (c) confusion matrices, one figure per group, seed 0 of each experiment
    groups: dict[str, list[tuple[Any, list[dict[str, Any]]]]] = {}
    for name in sorted(by_exp):
        run = min(by_exp[name], key=lambda r: (r.seed != 0, r.seed))
        try:
            preds = [p for p in R.read_predictions(run.dir) if p["split"] == "test"]
        except (OSError, KeyError, ValueError) as exc:
            echo(f"{name} seed {run.seed}: no test predictions ({exc}); left out of the ROC and confusion figures")
            continue
        if preds:
            groups.setdefault(_group_of(run, exps), []).append((run, preds))
    for group in sorted(groups, key=_group_key):
        members = groups[group]
        written.append(_save(_roc_pr_figure(group, members), out / f"roc_pr_{_slug(group)}.png"))
        written.append(_save(_confusion_figure(group, members), out / f"confusion_{_slug(group)}.png"))

    # (e) AUROC per subgroup (hardware, body part, view), when the folder has a subgroups file
    fig = _subgroups_figure(results, runs)
    if fig is not None:
        written.append(_save(fig, out / "subgroups_auroc.png"))

    # (d) thumbnails of correct and wrong test predictions
    for group in CURVE_TABLES:
        for run, preds in groups.get(group, []):
            fig, why = _examples_figure(results, run, preds, data_root)
            if fig is None:
                echo(f"no example grid for {run.experiment}: {why}")
                continue
            written.append(_save(fig, out / f"examples_{_slug(run.experiment)}.png"))
    return written


def caption(name: str) -> str:
    """A one-line caption for a figure file written by :func:`write_figures` (for the report)."""
    stem = Path(name).stem
    if stem == SPLIT_CURVES:
        return ("Claim anatomy: test and train accuracy against epoch on the published split (copies of test images "
                "in train) and the grouped split (no copy across train/test), one line per split and protocol; black "
                "squares: the paper's own Table 1 values.")
    if stem.startswith("curves_"):
        return (f"{stem[len('curves_'):]}: loss and accuracy against epoch, train and test (mean ± sd over seeds "
                "as a band); markers: the paper's own numbers for this experiment.")
    if stem.startswith("roc_pr_"):
        g = stem[len("roc_pr_"):]
        return (f"{_GROUP_TITLES.get(g, g)}: ROC and precision-recall curves of the test predictions (seed 0); "
                "dots: each run's recorded operating point; dashed: chance.")
    if stem.startswith("confusion_"):
        g = stem[len("confusion_"):]
        return (f"{_GROUP_TITLES.get(g, g)}: test confusion matrices at each run's recorded threshold (seed 0); "
                "colour and percentages: share of the actual class (row).")
    if stem == "subgroups_auroc":
        return ("Test AUROC per subgroup (hardware, body part, view) with 95% bootstrap CIs, seed 0, for the paper's "
                "CNN (honest and as published) and the best reference model; subgroups of fewer than "
                "30 images or one class are left out (see the subgroups table).")
    if stem.startswith("examples_"):
        return (f"{stem[len('examples_'):]}: the most confident correct and wrong test predictions (seed 0) at "
                "the recorded threshold; P = the model's P(fracture).")
    return stem


def find_data_root(dataset: str) -> Path | None:
    """Where the dataset lives by default (download location, or the synthetic set's cache), if it exists.

    Generates and downloads nothing; the example grid still checks every file against the manifest.
    """
    from fracbench.paths import cache_dir, data_home

    if dataset == "synthetic":
        from fracbench.data.synthetic import Synthetic, SyntheticSpec

        root = cache_dir() / "synthetic" / SyntheticSpec().key()
        return root if Synthetic.looks_like(root) else None
    root = data_home() / dataset
    return root if root.is_dir() else None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _table_of(run: Any, exps: dict[str, Any]) -> str:
    exp = exps.get(run.experiment)
    return str(exp.table if exp is not None and exp.table else run.record.get("table", "") or "")


def _group_of(run: Any, exps: dict[str, Any]) -> str:
    leak = run.record.get("leak")
    if isinstance(leak, dict) and "test_exact_in_train" in leak:  # fracbench.claims.anatomy's records
        return "anatomy"
    if leak:
        return "leak"
    table = _table_of(run, exps)
    return table if table in _GROUP_TITLES else "other"


def _group_key(group: str) -> tuple[int, str]:
    return (_GROUP_ORDER.index(group) if group in _GROUP_ORDER else len(_GROUP_ORDER), group)


SUBGROUP_FIGURE_EXPERIMENTS = ("paper_cnn_honest", "paper_cnn_as_published")  # plus the best ref_* by test AUROC


def _subgroups_figure(results: Path, runs: Sequence[Any]) -> Any | None:
    """Forest plot: AUROC [95% CI] per subgroup value, one colour per experiment; None without subgroups."""
    from fracbench.claims.tables.subgroups import load_groups, subgroup_results

    groups, _ = load_groups(results)
    if not groups:
        return None
    seed0 = {}
    for r in sorted(runs, key=lambda r: (r.seed != 0, r.seed)):
        seed0.setdefault(r.experiment, r)
    refs = [r for name, r in seed0.items() if name.startswith("ref_") and _finite(r.test.get("auroc"))]
    chosen = [seed0[n] for n in SUBGROUP_FIGURE_EXPERIMENTS if n in seed0]
    chosen += [max(refs, key=lambda r: r.test["auroc"])] if refs else []
    res = subgroup_results(chosen, groups)
    if not res:
        return None
    labels: list[str] = ["all test images"]
    for e in res:
        for row in e["rows"]:
            key = f"{row['attribute']}: {row['value']}"
            if row["status"] == "ok" and key not in labels:
                labels.append(key)
    fig = _new_figure(7.5, 0.35 * len(labels) * max(1, len(res)) / 2 + 1.8)
    ax = fig.add_subplot(1, 1, 1)
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    for k, e in enumerate(res):
        off = (k - (len(res) - 1) / 2) * 0.8 / max(1, len(res))
        s = e["summary"]
        pts = [(0, s["auroc_all"], s["auroc_all_ci"])]
        pts += [(labels.index(f"{r['attribute']}: {r['value']}"), r["auroc"], r["auroc_ci"])
                for r in e["rows"] if r["status"] == "ok"]
        ys = [i + off for i, _, _ in pts]
        ax.errorbar([v for _, v, _ in pts], ys, xerr=[[v - c[0] for _, v, c in pts], [c[1] - v for _, v, c in pts]],
                    fmt="o", ms=4, capsize=2, color=colors[k % len(colors)], label=e["experiment"])
    ax.axvline(0.5, color="grey", ls="--", lw=0.8)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("test AUROC [95% CI]")
    ax.set_title("AUROC per subgroup (seed 0)")
    ax.set_xlim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


class Bar:
    """One bar of :func:`accuracy_bars_png`: a test accuracy with its 95% interval (None: not available)."""

    def __init__(self, label: str, value: float | None, ci: Sequence[float] | None = None, color: str = "#2e86c1",
                 note: str = "") -> None:
        self.label, self.value, self.ci, self.color, self.note = label, value, ci, color, note


def accuracy_bars_png(bars: Sequence[Bar], lines: Sequence[tuple[str, float, str, str]], *, title: str,
                      ylabel: str = "test accuracy") -> bytes:
    """The findings figure of check.html and report.html: one bar per test set with its 95% CI, and
    horizontal lines (label, value, colour, line style), e.g. the majority class and the paper's claim.
    A bar without a value reads its note (e.g. "not run"). Deterministic PNG bytes."""
    fig = _new_figure(6.4, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    for x, b in enumerate(bars):
        if not _finite(b.value):
            ax.text(x, 0.3, b.note or "none", ha="center", color="#666", fontsize=8)
            continue
        acc = float(b.value)
        ax.bar(x, acc, color=b.color, width=0.6, alpha=0.85)
        if b.ci is not None and all(_finite(c) for c in b.ci):
            lo, hi = float(b.ci[0]), float(b.ci[1])
            ax.errorbar(x, acc, yerr=[[max(acc - lo, 0)], [max(hi - acc, 0)]], color="black", capsize=5, lw=1.2)
        ax.text(x + 0.32, min(acc, 1.0) - 0.07, f"{acc:.3f}", ha="left", va="bottom", fontsize=7, rotation=90)
    for label, value, color, style in lines:
        ax.axhline(value, color=color, ls=style, lw=1.3, label=f"{label} ({value:.3f})")
    ax.set_xticks(range(len(bars)), [b.label for b in bars], fontsize=7)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(ylabel, fontsize=8)
    if lines:
        ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI)


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return atomic_write_bytes(path, buf.getvalue())


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(runs: Sequence[Any], key: str) -> tuple[list[int], list[float], list[float]]:
    """Epochs, mean and sample sd (0 for one seed) of ``key`` over the runs' epochs.jsonl."""
    per_epoch: dict[int, list[float]] = {}
    for r in runs:
        for e in r.epochs:
            v = e.get(key)
            if _finite(v) and isinstance(e.get("epoch"), int):
                per_epoch.setdefault(int(e["epoch"]), []).append(float(v))
    xs = sorted(per_epoch)
    means, sds = [], []
    for x in xs:
        vals = per_epoch[x]
        m = sum(vals) / len(vals)
        means.append(m)
        sds.append(math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0)
    return xs, means, sds


def _paper_points(exp: Any, metric: str) -> tuple[list[int], list[float], str]:
    """The paper's per-epoch values of ``metric`` and a label naming where they stand ("paper (Table 1)")."""
    pts = sorted((pv.epoch, pv.value) for pv in (exp.paper if exp is not None else ())
                 if pv.metric == metric and pv.epoch is not None and pv.run is None)
    wheres = [pv.where for pv in (exp.paper if exp is not None else ()) if pv.metric == metric]
    source = wheres[0].split(", epoch")[0] if wheres else "paper"
    return [p[0] for p in pts], [p[1] for p in pts], f"paper ({source})"


def _plot_series(ax: Any, runs: Sequence[Any], key: str, label: str, color: str, n: int) -> bool:
    xs, mean, sd = _series(runs, key)
    if not xs:
        return False
    seeds = f"mean ± sd, {n} seeds" if n > 1 else "1 seed"
    ax.plot(xs, mean, color=color, lw=1.8, marker="o" if len(xs) < 15 else None, ms=3.5,
            label=f"fracbench {label} ({seeds})")
    if n > 1:
        ax.fill_between(xs, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], color=color,
                        alpha=0.18, lw=0)
    return True


# --------------------------------------------------------------------------------------------
# (a) learning curves
# --------------------------------------------------------------------------------------------


def _curves_figure(name: str, runs: Sequence[Any], exp: Any) -> Any:
    fig = _new_figure(12.0, 4.6)
    ax_loss, ax_acc = fig.subplots(1, 2)
    n = len(runs)
    for ax, kind in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        _plot_series(ax, runs, f"train_{kind}", f"train {kind}", _TRAIN, n)
        if not _plot_series(ax, runs, f"test_{kind}", f"test {kind}", _TEST, n):
            _plot_series(ax, runs, f"val_{kind}", f"validation {kind} (test not logged)", _VAL, n)
        for split, color, marker in (("train", _TRAIN, "D"), ("test", _TEST, "s")):
            px, py, label = _paper_points(exp, f"{split}_{kind}")
            if px:
                ax.plot(px, py, ls="none", marker=marker, ms=6, mfc="none", mec=color, mew=1.5,
                        label=f"{label}: {split} {kind}")
        ax.set_xlabel("epoch (0-based index)")
        ax.grid(True, alpha=0.3)
    ys = [v for line in ax_loss.get_lines() for v in line.get_ydata() if _finite(v)]
    if ys and min(ys) > 0 and max(ys) / min(ys) > 100:
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("loss (log scale)")
    else:
        ax_loss.set_ylabel("loss")
    ax_acc.set_ylabel("accuracy")
    ax_loss.set_title("Loss")
    ax_acc.set_title("Accuracy")
    for ax in (ax_loss, ax_acc):
        if ax.get_lines():
            ax.legend(fontsize=7.5, loc="best")

    rec = runs[0].record
    title = exp.title if exp is not None else name
    seeds = ", ".join(str(r.seed) for r in runs)
    epochs = sorted({int(r.record.get("epochs_run", len(r.epochs))) for r in runs})
    sub = (f"{name}: protocol {rec.get('protocol', '?')}, profile {rec.get('profile', '?')}, dataset "
           f"{rec.get('dataset', '?')}, seeds {seeds}, {'/'.join(map(str, epochs))} epochs")
    fig.suptitle(f"{title}\n{sub}", fontsize=10)
    odd = _denominator_note(runs)
    if odd:
        fig.text(0.5, 0.005, odd, ha="center", va="bottom", fontsize=8, color="#a40000", wrap=True)
    fig.tight_layout(rect=(0, 0.05 if odd else 0, 1, 1))
    return fig


SPLIT_CURVES = "curves_splits"  # the claim anatomy's learning-curve figure
PAPER_CURVE_EXPERIMENT = "paper_cnn_as_published"  # whose YAML holds the paper's Table 1 values
_SPLIT_STYLES = {("published", "as_published"): ("#d62728", "-"), ("published", "honest"): ("#d62728", ":"),
                 ("grouped", "as_published"): ("#1f77b4", "-"), ("grouped", "honest"): ("#1f77b4", ":"),
                 ("external", "honest"): ("#2ca02c", ":")}


_SPLIT_NAMES = {"published": "published split", "grouped": "grouped split", "external": "external test"}


def _is_split_run(run: Any) -> bool:
    from fracbench.claims.tables.splits import is_split_run

    return is_split_run(run)


def _split_curves_figure(runs: Sequence[Any], exps: dict[str, Any]) -> Any:
    """Test accuracy and train accuracy against epoch on the published split (copies of test images in train)
    and the grouped split (none), each (split, protocol) one line, with the paper's Table 1 values as markers
    labelled as the paper's: where the paper's curve sits against a leaky and a clean split."""
    fig = _new_figure(12.0, 4.8)
    ax_test, ax_train = fig.subplots(1, 2)
    by: dict[tuple[str, str], list[Any]] = {}
    for r in runs:
        by.setdefault((r.record["leak"]["split"], str(r.record.get("protocol"))), []).append(r)
    for key in sorted(by, key=lambda k: list(_SPLIT_STYLES).index(k) if k in _SPLIT_STYLES else 99):
        split, protocol = key
        color, ls = _SPLIT_STYLES.get(key, ("#7f7f7f", "--"))
        rs = by[key]
        for ax, metric in ((ax_test, "test_accuracy"), (ax_train, "train_accuracy")):
            xs, mean, _ = _series(rs, metric)
            if xs:
                seeds = f"{len(rs)} seeds" if len(rs) > 1 else "1 seed"
                ax.plot(xs, mean, color=color, ls=ls, lw=1.8, marker="o" if len(xs) < 20 else None, ms=3,
                        label=f"fracbench, {_SPLIT_NAMES.get(split, split)}, {protocol.replace('_', ' ')} ({seeds})")
    paper = exps.get(PAPER_CURVE_EXPERIMENT)
    for ax, metric in ((ax_test, "test_accuracy"), (ax_train, "train_accuracy")):
        px, py, label = _paper_points(paper, metric)
        if px:
            ax.plot(px, py, ls="none", marker="s", ms=6, mfc="none", mec="black", mew=1.5,
                    label=f"{label}: the paper's {metric.replace('_', ' ')}")
        ax.set_xlabel("epoch (0-based index)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7, loc="lower right")
    ax_test.set_title("Test accuracy")
    ax_train.set_title("Train accuracy")
    epochs = sorted({int(r.record.get("epochs_run", len(r.epochs))) for r in runs})
    profiles = ", ".join(sorted({str(r.record.get("profile", "?")) for r in runs}))
    datasets = ", ".join(sorted({str(r.record.get("dataset", "?")) for r in runs}))
    fig.suptitle("Claim anatomy: learning curves on the published split (copies of test images in train) and the "
                 f"grouped split (none), beside the paper's Table 1\n{datasets}, profile {profiles}, "
                 f"{'/'.join(map(str, epochs))} epochs; each split is scored on its own test set", fontsize=10)
    odd = _denominator_note(runs)
    if odd:
        fig.text(0.5, 0.005, odd, ha="center", va="bottom", fontsize=8, color="#a40000", wrap=True)
    fig.tight_layout(rect=(0, 0.05 if odd else 0, 1, 1))
    return fig


def _denominator_note(runs: Sequence[Any]) -> str:
    """A warning when the as-published denominators (.jpg counts) are not the image counts."""
    for r in runs:
        c = r.record.get("counts") or {}
        if r.record.get("protocol") == "as_published" and "test_denominator" in c and c["test_denominator"] != c.get(
                "test"):
            return (f"As published, losses and accuracies divide by the tutorial's .jpg count ({c['test_denominator']} "
                    f"of {c.get('test')} test images are .jpg here), so they are not per-image rates"
                    + (" and accuracies exceed 1." if c["test_denominator"] == 0 else "."))
    return ""


# --------------------------------------------------------------------------------------------
# (b) ROC and precision-recall
# --------------------------------------------------------------------------------------------


def _labels_scores(preds: Sequence[dict[str, Any]]) -> tuple[Any, Any]:
    import numpy as np

    return (np.asarray([p["label"] for p in preds], dtype=np.int64),
            np.asarray([p["score"] for p in preds], dtype=np.float64))


def _run_label(run: Any) -> str:
    return run.experiment if run.seed == 0 else f"{run.experiment} (seed {run.seed})"


def _roc_pr_figure(group: str, members: Sequence[tuple[Any, list[dict[str, Any]]]]) -> Any:
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    fig = _new_figure(12.0, 5.4)
    ax_roc, ax_pr = fig.subplots(1, 2)
    prevalences, skipped, prev_colors = [], [], []
    for i, (run, preds) in enumerate(members):
        y, s = _labels_scores(preds)
        color = _COLORS[i % len(_COLORS)]
        if not 0 < int(y.sum()) < len(y):
            skipped.append(run.experiment)
            continue
        prevalences.append(float(y.mean()))
        prev_colors.append(color)
        fpr, tpr, _ = roc_curve(y, s)
        prec, rec, _ = precision_recall_curve(y, s)
        ax_roc.plot(fpr, tpr, color=color, lw=1.6, label=f"{_run_label(run)} (AUROC {roc_auc_score(y, s):.3f})")
        ax_pr.step(rec, prec, where="post", color=color, lw=1.6,
                   label=f"{_run_label(run)} (AP {average_precision_score(y, s):.3f})")
        thr = run.record.get("threshold")
        if _finite(thr):
            pred = s >= float(thr)
            tp, fp = int(np.sum(pred & (y == 1))), int(np.sum(pred & (y == 0)))
            pos, neg = int(y.sum()), int((y == 0).sum())
            ax_roc.plot([fp / neg], [tp / pos], "o", color=color, ms=6, mec="black", mew=0.6)
            if tp + fp:
                ax_pr.plot([tp / pos], [tp / (tp + fp)], "o", color=color, ms=6, mec="black", mew=0.6)
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    if prevalences and max(prevalences) - min(prevalences) <= 0.01:
        prev = sum(prevalences) / len(prevalences)
        ax_pr.axhline(prev, ls="--", color="grey", lw=1, label=f"chance (prevalence {prev:.3f})")
    elif prevalences:  # different test sets: each curve's chance level is its own prevalence
        for prev, color in zip(prevalences, prev_colors):
            ax_pr.axhline(prev, ls=":", color=color, lw=1)
        ax_pr.plot([], [], ls=":", color="grey", label="chance (each test set's prevalence, dotted)")
    ax_roc.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
               title="ROC (test)", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax_pr.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall (test)",
              xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    for ax in (ax_roc, ax_pr):
        ax.set_aspect("equal")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
    title = _GROUP_TITLES.get(group, group)
    if skipped:
        title += f"\n(not drawn, one class only in test: {', '.join(skipped)})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# (c) confusion matrices
# --------------------------------------------------------------------------------------------


def _confusion_counts(run: Any, preds: Sequence[dict[str, Any]]) -> tuple[int, int, int, int, float]:
    """(tn, fp, fn, tp, threshold): the record's counts at its threshold, else counted from the predictions."""
    test = (run.record.get("metrics") or {}).get("test") or {}
    thr = run.record.get("threshold")
    thr = float(thr) if _finite(thr) else 0.5
    if all(isinstance(test.get(k), int) for k in ("tn", "fp", "fn", "tp")):
        return int(test["tn"]), int(test["fp"]), int(test["fn"]), int(test["tp"]), thr
    tn = fp = fn = tp = 0
    for p in preds:
        pos = p["score"] >= thr
        if p["label"] == 1:
            tp, fn = tp + pos, fn + (not pos)
        else:
            fp, tn = fp + pos, tn + (not pos)
    return tn, fp, fn, tp, thr


def _confusion_figure(group: str, members: Sequence[tuple[Any, list[dict[str, Any]]]]) -> Any:
    n = len(members)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(3.3 * ncols + 0.4, 3.5 * nrows + 0.7)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    classes = ("not fractured", "fractured")
    for i, (run, preds) in enumerate(members):
        ax = axes[i // ncols][i % ncols]
        tn, fp, fn, tp, thr = _confusion_counts(run, preds)
        cells = ((tn, fp), (fn, tp))
        rates = [[c / max(sum(row), 1) for c in row] for row in cells]
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for a in range(2):
            for b in range(2):
                ax.text(b, a, f"{cells[a][b]}\n{100 * rates[a][b]:.1f}%", ha="center", va="center", fontsize=9,
                        color="white" if rates[a][b] > 0.6 else "black")
        ax.set_xticks([0, 1], [f"pred. {c}" for c in classes], fontsize=7)
        ax.set_yticks([0, 1], [f"actual {c}" for c in classes], fontsize=7, rotation=90, va="center")
        src = str(run.record.get("threshold_source", ""))
        src = "argmax" if src.startswith("argmax") else src
        ax.set_title(f"{_run_label(run)}\nthreshold {thr:.3f}" + (f" ({src[:32]})" if src else ""), fontsize=7.5)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    fig.suptitle(f"{_GROUP_TITLES.get(group, group)}: test confusion matrices", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# (d) correct and wrong examples
# --------------------------------------------------------------------------------------------


def _manifest_rows(results: Path, run: Any, data_root: Path | None) -> tuple[dict[str, Any] | None, str]:
    """The run's manifest rows by id, or None and why not."""
    from fracbench.data.manifest import Manifest

    if data_root is None:
        return None, "no data folder given (pass --data-dir to draw it)"
    dataset = str(run.record.get("dataset", ""))
    path = results / "manifests" / f"{dataset}.csv"
    if not path.is_file():
        return None, f"no manifest at {path}"
    if hashlib.sha256(path.read_bytes()).hexdigest() != run.record.get("manifest_sha256"):
        return None, f"{path} is not the manifest this run used (fingerprints differ)"
    if not Path(data_root).is_dir():
        return None, f"data folder {data_root} not found"
    manifest = Manifest.read(path, dataset, data_root)
    return {r.id: (r, manifest.abspath(r)) for r in manifest.rows}, ""


def _thumbnail(path: Path, sha256: str) -> Any | None:
    """A THUMB x THUMB grey thumbnail of the file, or None when it is missing, changed or unreadable."""
    import numpy as np
    from PIL import Image

    from fracbench.data.decode import DecodeError, decode_bytes, to_rgb_uint8

    try:
        data = path.read_bytes()
    except OSError:
        return None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        return None
    try:
        px = to_rgb_uint8(decode_bytes(data, str(path)).pixels)
    except DecodeError:
        return None
    im = Image.fromarray(px).convert("L")
    im.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (THUMB, THUMB), 0)
    canvas.paste(im, ((THUMB - im.width) // 2, (THUMB - im.height) // 2))
    return np.asarray(canvas)


def _pick(preds: Iterable[dict[str, Any]], thr: float) -> dict[str, list[dict[str, Any]]]:
    """True/false positives/negatives, most confident first (ties by id)."""
    out: dict[str, list[dict[str, Any]]] = {"TP": [], "FN": [], "FP": [], "TN": []}
    for p in preds:
        pos = p["score"] >= thr
        key = ("TP" if pos else "FN") if p["label"] == 1 else ("FP" if pos else "TN")
        out[key].append(p)
    for key, items in out.items():
        high = key in ("TP", "FP")  # most confident: highest P for a positive call, lowest for a negative one
        items.sort(key=lambda p: (-p["score"] if high else p["score"], p["id"]))
    return out


def _examples_figure(results: Path, run: Any, preds: Sequence[dict[str, Any]],
                     data_root: Path | None) -> tuple[Any | None, str]:
    rows, why = _manifest_rows(results, run, data_root)
    if rows is None:
        return None, why
    thr = run.record.get("threshold")
    thr = float(thr) if _finite(thr) else 0.5
    picked = _pick(preds, thr)
    titles = {"TP": "correct: fractured", "TN": "correct: not fractured",
              "FN": "wrong: missed fracture (FN)", "FP": "wrong: false alarm (FP)"}
    order = ("TP", "TN", "FN", "FP")
    grid: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    missing = 0
    for key in order:
        grid[key] = []
        for p in picked[key]:
            if len(grid[key]) == EXAMPLES_PER_ROW:
                break
            entry = rows.get(p["id"])
            img = _thumbnail(entry[1], entry[0].sha256) if entry else None
            if img is None:
                missing += 1
                continue
            grid[key].append((p, img))
    if not any(grid.values()):
        return None, (f"none of the test images were found unchanged under {data_root} "
                      "(missing, unreadable or different from the manifest's checksums)")
    fig = _new_figure(1.6 * EXAMPLES_PER_ROW + 1.4, 1.9 * len(order) + 0.9)
    axes = fig.subplots(len(order), EXAMPLES_PER_ROW, squeeze=False)
    for i, key in enumerate(order):
        for j in range(EXAMPLES_PER_ROW):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(grid[key]):
                p, img = grid[key][j]
                ax.imshow(img, cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{p['id'][:18]}\nP={p['score']:.3f}", fontsize=7,
                             color="#1a7f37" if key in ("TP", "TN") else "#a40000")
            else:
                for side in ax.spines.values():
                    side.set_visible(False)
                if j == 0:
                    ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            if j == 0:
                ax.set_ylabel(f"{titles[key]}\n({len(picked[key])} in test)", fontsize=7.5)
    note = f"; {missing} image(s) missing or changed, skipped" if missing else ""
    fig.suptitle(f"{run.experiment} seed {run.seed}: test predictions at threshold {thr:.3f} "
                 f"({run.record.get('dataset', '?')}){note}", fontsize=9.5)
    fig.tight_layout()
    return fig, ""
