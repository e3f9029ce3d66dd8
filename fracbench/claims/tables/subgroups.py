"""Subgroup table: each record's test metrics per hardware, body part and view, and the AUROC left
without hardware.

A score can mislead by leaning on a shortcut: in FracAtlas nearly every image with metal hardware
(plates, nails, screws) is fractured, so a model that finds the metal scores well without looking at
bone. This table splits each record's TEST predictions by the attributes of results/<ds>/data/<ds>-
subgroups.csv (fracbench.claims.subgroups, written by ``fracbench data subgroups`` and by every run) and
states, per record, how much of the AUROC above chance survives on images without hardware:

    surviving share = (AUROC_absent - 0.5) / (AUROC_all - 0.5)

with a 95% CI from one bootstrap over the record's test images (stratified by class, as in
fracbench.metrics; both AUROCs computed on the same resample). 1 means nothing is lost without
hardware; 0 means all the discrimination came from hardware images.

Per subgroup: n, fractured count, AUROC with its stratified bootstrap 95% CI (fracbench.metrics.
bootstrap_ci, seeded by the record's seed), and sensitivity / specificity at the record's threshold
with Wilson 95% CIs. A subgroup of fewer than :data:`MIN_SUBGROUP` images reads "no evidence"; a
subgroup with one class has an undefined AUROC. Built from committed files alone (records,
predictions.csv, the subgroups CSV): no dataset is needed at table time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fracbench import results as R
from fracbench.claims.subgroups import ATTRIBUTES
from fracbench.claims.tables.claims import wilson_ci
from fracbench.claims.tables.inputs import Run, _complete
from fracbench.claims.tables.render import DASH, Table
from fracbench.metrics import _metrics_from_level_counts, _percentile_ci, binary_metrics, bootstrap_ci

MIN_SUBGROUP = 30  # fewer test images than this in a subgroup: "no evidence" (intervals too wide to read)
N_BOOT = 1000  # bootstrap resamples for every interval of this table
MAX_SHARE_CI_WIDTH = 1.0  # a surviving-share interval wider than this says nothing: "no evidence"
SHORTCUT_ATTRIBUTE, SHORTCUT_PRESENT, SHORTCUT_ABSENT = "hardware", "present", "absent"
COLUMNS = ["experiment", "seed", "attribute", "value", "n", "fractured", "AUROC [95% CI]",
           "sensitivity [95% CI]", "specificity [95% CI]", "surviving AUROC share [95% CI]"]


# --------------------------------------------------------------------------------------------
# Pure computation
# --------------------------------------------------------------------------------------------


def subgroup_metrics(y: NDArray[np.int64], score: NDArray[np.float64], threshold: float, seed: int,
                     n_boot: int = N_BOOT) -> dict[str, Any]:
    """n, fractured, AUROC with CI and sensitivity / specificity with Wilson CIs on one subgroup.

    ``status`` is "ok", "small" (fewer than MIN_SUBGROUP images) or "one class" (AUROC undefined);
    undefined numbers are None.
    """
    n, pos = int(y.size), int(y.sum())
    out: dict[str, Any] = {"n": n, "fractured": pos, "auroc": None, "auroc_ci": None, "sensitivity": None,
                           "sensitivity_ci": None, "specificity": None, "specificity_ci": None}
    if n < MIN_SUBGROUP:
        return {**out, "status": "small"}
    called = score >= threshold
    tp, tn = int((called & (y == 1)).sum()), int((~called & (y == 0)).sum())
    if pos:
        out.update(sensitivity=tp / pos, sensitivity_ci=wilson_ci(tp, pos))
    if n - pos:
        out.update(specificity=tn / (n - pos), specificity_ci=wilson_ci(tn, n - pos))
    if pos == 0 or pos == n:
        return {**out, "status": "one class"}
    out.update(auroc=float(binary_metrics(y, score, threshold)["auroc"]),
               auroc_ci=bootstrap_ci(y, score, "auroc", threshold, n_boot=n_boot, seed=seed))
    return {**out, "status": "ok"}


def surviving_share(y: NDArray[np.int64], score: NDArray[np.float64], absent: NDArray[np.bool_], seed: int,
                    n_boot: int = N_BOOT) -> dict[str, Any]:
    """AUROC on all images and on images without the shortcut, and the share of AUROC - 0.5 that survives.

    One bootstrap over images, stratified by class: each resample draws positives from the positives
    and negatives from the negatives (all images), and both AUROCs are computed on that same resample
    (the "absent" one on its images without hardware), so their ratio's interval reflects their
    correlation. Resamples where the ratio is undefined (AUROC_all = 0.5, or one class left among
    the images without hardware) are dropped and counted in ``undefined_share``.
    """
    levels, level_of = np.unique(score, return_inverse=True)
    called = levels >= 0.5  # unused by AUROC; _metrics_from_level_counts needs a threshold

    def counts(idx: NDArray[np.int64], weight: NDArray[np.float64] | None) -> NDArray[np.float64]:
        b, m = idx.shape
        flat = (level_of[idx] + np.arange(b)[:, None] * levels.size).ravel()
        w = None if weight is None else weight[idx].ravel()
        return np.bincount(flat, weights=w, minlength=b * levels.size).reshape(b, levels.size)

    def auroc(pos: NDArray[np.float64], neg: NDArray[np.float64]) -> NDArray[np.float64]:
        return _metrics_from_level_counts(pos, neg, called, ["auroc"])["auroc"]

    ones = np.ones(y.size)
    keep = absent.astype(np.float64)
    pos_i, neg_i = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    every = (pos_i[None, :], neg_i[None, :])
    a_all = float(auroc(counts(every[0], ones), counts(every[1], ones))[0])
    a_abs = float(auroc(counts(every[0], keep), counts(every[1], keep))[0])
    rng = np.random.default_rng(seed)
    all_draws, abs_draws = [], []
    for start in range(0, n_boot, 200):  # chunks bound memory on large test sets
        b = min(200, n_boot - start)
        p = pos_i[rng.integers(0, pos_i.size, size=(b, pos_i.size))]
        q = neg_i[rng.integers(0, neg_i.size, size=(b, neg_i.size))]
        all_draws.append(auroc(counts(p, ones), counts(q, ones)))
        abs_draws.append(auroc(counts(p, keep), counts(q, keep)))
    d_all, d_abs = np.concatenate(all_draws), np.concatenate(abs_draws)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = (d_abs - 0.5) / (d_all - 0.5)
    shares[~np.isfinite(shares)] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        share = (a_abs - 0.5) / (a_all - 0.5) if a_all != 0.5 else float("nan")
    return {"n": int(y.size), "n_absent": int(absent.sum()), "fractured_absent": int(y[absent].sum()),
            "auroc_all": a_all, "auroc_all_ci": _percentile_ci(d_all, 0.05),
            "auroc_absent": a_abs, "auroc_absent_ci": _percentile_ci(d_abs, 0.05),
            "share": share, "share_ci": _percentile_ci(shares, 0.05),
            "undefined_share": float(np.isnan(shares).mean())}


def share_verdict(s: Mapping[str, Any]) -> str:
    """The surviving-share cell: "share [lo, hi]", or "no evidence (why)" when it cannot be read."""
    n_present = s["n"] - s["n_absent"]
    if n_present == 0:
        return "1 by construction (no test image has hardware)"
    absent_pos = s["fractured_absent"]
    if s["n_absent"] < MIN_SUBGROUP or absent_pos in (0, s["n_absent"]):
        return f"no evidence (without hardware: {s['n_absent']} images, {absent_pos} fractured)"
    if not s["auroc_all_ci"][0] > 0.5:
        return "no evidence (AUROC over all test images not above 0.5 beyond chance)"
    lo, hi = s["share_ci"]
    if s["undefined_share"] > 0.025 or not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo > MAX_SHARE_CI_WIDTH:
        return f"no evidence (CI {_ci(lo, hi)} wider than {MAX_SHARE_CI_WIDTH:g})"
    return f"{s['share']:.3f} {_ci(lo, hi)}"


def split_arrays(preds: Sequence[Mapping[str, Any]]) -> tuple[list[str], NDArray[np.int64], NDArray[np.float64]]:
    """(ids, labels, scores) of the TEST rows of a predictions.csv."""
    rows = [p for p in preds if p["split"] == "test"]
    return ([str(p["id"]) for p in rows], np.array([int(p["label"]) for p in rows], dtype=np.int64),
            np.array([float(p["score"]) for p in rows], dtype=np.float64))


def record_subgroups(run: Run, preds: Sequence[Mapping[str, Any]], groups: Mapping[str, Mapping[str, str]],
                     n_boot: int = N_BOOT) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """Per (attribute, value) metrics and the hardware summary of one record; None when its test ids
    are not all in ``groups`` (another dataset, an external test set) or it has no test predictions."""
    ids, y, score = split_arrays(preds)
    if not ids or any(i not in groups for i in ids):
        return None
    threshold, seed = float(run.record.get("threshold", 0.5)), run.seed
    rows = []
    for attr in ATTRIBUTES:
        values = np.array([groups[i].get(attr, "") for i in ids])
        for value in sorted(set(values.tolist()) - {""}):
            m = values == value
            rows.append({"attribute": attr, "value": value,
                         **subgroup_metrics(y[m], score[m], threshold, seed, n_boot)})
    absent = np.array([groups[i].get(SHORTCUT_ATTRIBUTE) == SHORTCUT_ABSENT for i in ids])
    return rows, surviving_share(y, score, absent, seed, n_boot)


def subgroup_results(runs: Sequence[Run], groups: Mapping[str, Mapping[str, str]],
                     n_boot: int = N_BOOT) -> list[dict[str, Any]]:
    """For each complete record with test predictions covered by ``groups``: its experiment, seed,
    subgroup rows and hardware summary (reads each record's predictions.csv)."""
    out = []
    for r in _complete(runs)[0]:
        if isinstance(r.record.get("external"), dict) or not (r.dir / R.PREDICTIONS).is_file():
            continue
        got = record_subgroups(r, R.read_predictions(r.dir), groups, n_boot)
        if got is not None:
            out.append({"experiment": r.experiment, "seed": r.seed, "rows": got[0], "summary": got[1]})
    return out


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _ci(lo: float, hi: float, nd: int = 3) -> str:
    return f"[{lo:.{nd}f}, {hi:.{nd}f}]"


def _rate(value: float | None, ci: tuple[float, float] | None, status: str, what: str) -> str:
    if status == "small":
        return f"no evidence (n < {MIN_SUBGROUP})"
    if value is None or ci is None:
        return f"undefined (no {what})"
    return f"{value:.3f} {_ci(*ci)}"


def _auroc_cell(row: Mapping[str, Any]) -> str:
    if row["status"] == "small":
        return f"no evidence (n < {MIN_SUBGROUP})"
    if row["status"] == "one class":
        return "undefined (one class)"
    return f"{row['auroc']:.3f} {_ci(*row['auroc_ci'])}"


def subgroups_table(runs: Sequence[Run], groups: Mapping[str, Mapping[str, str]] | None,
                    source: str = "the subgroups CSV", n_boot: int = N_BOOT) -> Table:
    """The subgroup table of a results folder; a one-line explanatory table when there are no subgroups."""
    title = "Test metrics per subgroup (hardware, body part, view) and the AUROC left without hardware"
    if not groups:
        return Table("subgroups", title, ["note"], [[
            f"no subgroups file ({source}): write it with `fracbench data subgroups DATASET` "
            "(datasets whose metadata has hardware, body part and view, e.g. FracAtlas)"]])
    results = subgroup_results(runs, groups, n_boot)
    rows: list[list[str]] = []
    for res in results:
        head = [res["experiment"], str(res["seed"])]
        for row in res["rows"]:
            rows.append([*head, row["attribute"], row["value"], str(row["n"]), str(row["fractured"]),
                         _auroc_cell(row),
                         _rate(row["sensitivity"], row["sensitivity_ci"], row["status"], "fractured image"),
                         _rate(row["specificity"], row["specificity_ci"], row["status"], "unfractured image"),
                         DASH])
        s = res["summary"]
        rows.append([*head, SHORTCUT_ATTRIBUTE, "summary: without hardware vs all", str(s["n"]), DASH,
                     f"all {s['auroc_all']:.3f} {_ci(*s['auroc_all_ci'])}; without hardware "
                     f"{s['auroc_absent']:.3f} {_ci(*s['auroc_absent_ci'])} (n = {s['n_absent']})",
                     DASH, DASH, share_verdict(s)])
    notes = [
        f"Test predictions of each complete record (predictions.csv) split by {source}. AUROC: 95% stratified "
        f"bootstrap CI ({n_boot} resamples, seeded by the record's seed); sensitivity and specificity at the "
        "record's threshold with Wilson 95% CIs.",
        f"Fewer than {MIN_SUBGROUP} images in a subgroup: no evidence; one class: AUROC undefined.",
        "Surviving AUROC share = (AUROC without hardware - 0.5) / (AUROC on all - 0.5), 95% CI from one bootstrap "
        "over the test images with both AUROCs on the same resample; 1: nothing lost without hardware, 0: all the "
        f"discrimination came from hardware images. No evidence when its CI is wider than {MAX_SHARE_CI_WIDTH:g} "
        "or the overall AUROC is not above 0.5 beyond chance.",
    ]
    if not results:
        notes.append("No complete record has test predictions whose ids are all in the subgroups file.")
    return Table("subgroups", title, list(COLUMNS), rows, notes)


def load_groups(results: Path) -> tuple[dict[str, dict[str, str]] | None, str]:
    """The subgroups file of a results folder (results/<ds>/data/<ds>-subgroups.csv), and its name.

    The folder's name is the dataset (fracbench.runs.runner writes results/<dataset>/); a folder named
    otherwise uses its only data/*-subgroups.csv. None when there is none.
    """
    from fracbench.claims.subgroups import read_subgroups, subgroups_path

    path = subgroups_path(results, Path(results).resolve().name)
    if not path.is_file():
        found = sorted((Path(results) / "data").glob("*-subgroups.csv"))
        path = found[0] if len(found) == 1 else path
    rel = f"data/{path.name}"
    return (read_subgroups(path), rel) if path.is_file() else (None, "data/<dataset>-subgroups.csv")
