"""Binary classification metrics over labels and scores, with stratified cluster-bootstrap CIs.

Pure functions over numpy arrays: ``y`` holds labels (1 = fracture, 0 = no fracture) and
``score`` the predicted P(fracture). A case is called positive when ``score >= threshold``.
Point estimates use scikit-learn where it has the metric; the bootstrap recomputes every metric
for all resamples at once from per-score-level counts, which gives the same numbers as
scikit-learn on each resample (the tests check this) at a small fraction of the cost.

Conventions: metrics are fractions (not percentages) with lowercase names; a ratio whose
denominator is zero (sensitivity with no positive cases, precision with no positive calls, AUROC
with one class) is ``nan`` rather than an exception or a silent 0, so a report shows "undefined"
instead of a number that looks measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CI_METHOD",
    "CI_METRICS",
    "METRIC_NAMES",
    "binary_metrics",
    "bootstrap_ci",
    "choose_threshold",
    "confusion",
    "group_index",
    "joint_bootstrap_diff",
    "metrics_with_ci",
    "n_groups",
    "wilson_ci",
]

# Every key of binary_metrics that is a rate in [0, 1] (or nan). Kappa is not one: it lies in
# [-1, 1]. The counts (n, tp, fp, tn, fn) are not rates either.
METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "auroc",
    "auprc",
    "majority_accuracy",
    "prevalence",
)

# Metrics that metrics_with_ci reports with a 95% interval. Prevalence and majority accuracy are
# fixed under stratified resampling, so an interval for them would be meaningless.
CI_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "auroc",
    "auprc",
    "kappa",
)

_COUNT_KEYS = ("n", "tp", "fp", "tn", "fn")

# What a record's ``ci_method`` says when its intervals come from the cluster bootstrap over
# the manifest's duplicate groups. Records without the key have image-level intervals (every image its
# own group), which is what a recomputation without groups gives.
CI_METHOD = "stratified cluster bootstrap over the manifest's duplicate groups"


def _validate(y: ArrayLike, score: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    y_arr = np.asarray(y)
    s_arr = np.asarray(score, dtype=np.float64)
    if y_arr.ndim != 1 or s_arr.ndim != 1:
        raise ValueError(f"y and score must be 1-D, got shapes {y_arr.shape} and {s_arr.shape}")
    if y_arr.shape != s_arr.shape:
        raise ValueError(f"y and score differ in length: {y_arr.shape[0]} != {s_arr.shape[0]}")
    if y_arr.size == 0:
        raise ValueError("no samples")
    if not np.isin(y_arr, (0, 1)).all():
        raise ValueError(
            f"y must hold only 0 and 1, found {sorted(set(np.unique(y_arr).tolist()) - {0, 1})[:5]}"
        )
    if not np.isfinite(s_arr).all():
        raise ValueError("score holds nan or infinite values")
    return y_arr.astype(np.int64), s_arr


def _div(num: NDArray[np.float64] | float, den: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """num / den elementwise, nan where den == 0 (an undefined rate, not 0)."""
    num_a = np.asarray(num, dtype=np.float64)
    den_a = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num_a, den_a).shape, np.nan)
    np.divide(num_a, den_a, out=out, where=den_a != 0)
    return out


def _rates_from_counts(
    tp: NDArray[np.float64], fp: NDArray[np.float64], tn: NDArray[np.float64], fn: NDArray[np.float64]
) -> dict[str, NDArray[np.float64]]:
    """Confusion-based metrics, elementwise over arrays of counts (one entry per resample)."""
    n = tp + fp + tn + fn
    sensitivity = _div(tp, tp + fn)
    specificity = _div(tn, tn + fp)
    # Cohen's kappa for two raters (truth, prediction): (p_o - p_e) / (1 - p_e).
    p_o = _div(tp + tn, n)
    p_e = _div((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp), n * n)
    kappa = _div(p_o - p_e, 1.0 - p_e)
    kappa = np.where(np.isclose(p_e, 1.0, rtol=0.0, atol=1e-12), np.nan, kappa)
    return {
        "accuracy": p_o,
        # nan when a class is absent: the mean of one defined recall is not a balanced accuracy.
        "balanced_accuracy": (sensitivity + specificity) / 2.0,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": _div(tp, tp + fp),
        "f1": _div(2.0 * tp, 2.0 * tp + fp + fn),
        "kappa": kappa,
    }


def confusion(y: ArrayLike, pred: ArrayLike) -> dict[str, int]:
    """Confusion counts of 0/1 predictions against 0/1 labels: tp, fp, tn, fn."""
    y_arr, p_arr = _validate(y, np.asarray(pred, dtype=np.float64))
    if not np.isin(p_arr, (0, 1)).all():
        raise ValueError("pred must hold only 0 and 1")
    p_bool = p_arr.astype(bool)
    y_bool = y_arr.astype(bool)
    return {
        "tp": int(np.sum(y_bool & p_bool)),
        "fp": int(np.sum(~y_bool & p_bool)),
        "tn": int(np.sum(~y_bool & ~p_bool)),
        "fn": int(np.sum(y_bool & ~p_bool)),
    }


def binary_metrics(y: ArrayLike, score: ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """Every metric fracbench reports, at one threshold.

    Keys: the rates in :data:`METRIC_NAMES`, ``kappa`` (Cohen's, in [-1, 1]) and the counts
    ``n, tp, fp, tn, fn`` (ints). ``auroc`` is scikit-learn's ``roc_auc_score``; ``auprc`` is its
    ``average_precision_score`` (step-wise, no interpolation). With only one class present
    ``auroc``, ``auprc``, ``balanced_accuracy`` and the missing class's recall are ``nan``.
    ``majority_accuracy`` is the accuracy of always predicting the majority class, the floor an
    accuracy figure must be read against.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_arr, s_arr = _validate(y, score)
    counts = confusion(y_arr, (s_arr >= threshold).astype(np.int64))
    tp, fp, tn, fn = (np.float64(counts[k]) for k in ("tp", "fp", "tn", "fn"))
    rates = {k: float(v) for k, v in _rates_from_counts(tp, fp, tn, fn).items()}
    n = int(y_arr.size)
    n_pos = int(y_arr.sum())
    both_classes = 0 < n_pos < n
    prevalence = n_pos / n
    out: dict[str, float] = {
        **rates,
        "auroc": float(roc_auc_score(y_arr, s_arr)) if both_classes else float("nan"),
        "auprc": float(average_precision_score(y_arr, s_arr)) if both_classes else float("nan"),
        "majority_accuracy": max(prevalence, 1.0 - prevalence),
        "prevalence": prevalence,
        "n": n,
        **counts,
    }
    return {k: out[k] for k in (*METRIC_NAMES, "kappa", *_COUNT_KEYS)}


def choose_threshold(
    y: ArrayLike,
    score: ArrayLike,
    method: str = "youden",
    target_sensitivity: float | None = None,
) -> float:
    """A decision threshold chosen on (validation) data; predict positive when ``score >= t``.

    ``"youden"``: maximises sensitivity + specificity - 1 (ties go to the largest threshold, i.e.
    the fewest positive calls). ``"sensitivity"``: the largest threshold whose sensitivity is at
    least ``target_sensitivity``, which is the most specific operating point meeting that
    sensitivity. The result is always one of the observed scores. Choose it on validation data,
    never on the test set it is then evaluated on.
    """
    from sklearn.metrics import roc_curve

    y_arr, s_arr = _validate(y, score)
    if not 0 < y_arr.sum() < y_arr.size:
        raise ValueError("choosing a threshold needs both classes in y")
    fpr, tpr, thresholds = roc_curve(y_arr, s_arr, drop_intermediate=False)
    # roc_curve's first point is "nothing positive" at threshold +inf; it is never the answer
    # (the lowest observed score reaches J = 0 as well) and would not survive JSON.
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if method == "youden":
        if target_sensitivity is not None:
            raise ValueError("target_sensitivity applies only to method='sensitivity'")
        # thresholds decrease along the curve, so argmax's first maximum is the largest threshold
        return float(thresholds[int(np.argmax(tpr - fpr))])
    if method == "sensitivity":
        if target_sensitivity is None or not 0.0 < target_sensitivity <= 1.0:
            raise ValueError(
                f"method='sensitivity' needs target_sensitivity in (0, 1], got {target_sensitivity}"
            )
        # tpr is non-decreasing as the threshold falls; the first index reaching the target is the
        # largest such threshold. A tiny tolerance keeps e.g. 0.9 reachable as 9/10 in floats.
        reached = np.flatnonzero(tpr >= target_sensitivity - 1e-12)
        return float(thresholds[int(reached[0])])
    raise ValueError(f"unknown method {method!r}; use 'youden' or 'sensitivity'")


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


def _metrics_from_level_counts(
    pos: NDArray[np.float64],
    neg: NDArray[np.float64],
    called_positive: NDArray[np.bool_],
    names: Sequence[str],
) -> dict[str, NDArray[np.float64]]:
    """Metrics for a batch of resamples given as counts per distinct score level.

    ``pos[b, k]`` / ``neg[b, k]``: how many positives / negatives of resample ``b`` have the
    ``k``-th smallest distinct score; ``called_positive[k]``: whether that score reaches the
    threshold. Confusion counts are sums over the called levels; AUROC is the Mann-Whitney
    statistic (ties count one half); AUPRC is scikit-learn's step-wise average precision.
    """
    n_pos = pos.sum(axis=1)
    n_neg = neg.sum(axis=1)
    tp = pos[:, called_positive].sum(axis=1)
    fp = neg[:, called_positive].sum(axis=1)
    values = _rates_from_counts(tp, fp, n_neg - fp, n_pos - tp)
    want = set(names)
    if "auroc" in want:
        neg_below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each level
        wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
        values["auroc"] = _div(wins, n_pos * n_neg)
    if "auprc" in want:
        # Thresholds descending: at each distinct level, the recall gained times the precision.
        pos_d, neg_d = pos[:, ::-1], neg[:, ::-1]
        cum_tp = np.cumsum(pos_d, axis=1)
        precision_at = np.nan_to_num(_div(cum_tp, cum_tp + np.cumsum(neg_d, axis=1)))
        ap = _div((pos_d * precision_at).sum(axis=1), n_pos)
        values["auprc"] = np.where(n_neg > 0, ap, np.nan)  # one class only: undefined, as in binary_metrics
    unknown = [name for name in names if name not in values]
    if unknown:
        raise ValueError(f"no bootstrap for metric(s) {unknown}; choose from {', '.join(CI_METRICS)}")
    return values


def group_index(groups: ArrayLike | None, n: int) -> NDArray[np.int64]:
    """Integer group ids ``0..G-1`` in order of first appearance; ``None``: every image its own group."""
    if groups is None:
        return np.arange(n, dtype=np.int64)
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"groups must be 1-D and aligned with y ({n} entries), got shape {g.shape}")
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # unique ids sorted by where they first occur
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse.ravel()].astype(np.int64)


def n_groups(groups: ArrayLike | None, n: int) -> int:
    """How many distinct groups (independent units of evidence) ``n`` images with these ``groups`` hold."""
    return n if groups is None else int(np.unique(np.asarray(groups)).size)


def _group_strata(y: NDArray[np.int64], gidx: NDArray[np.int64]) -> list[NDArray[np.int64]]:
    """Group ids split by label composition: all fractured, all not fractured, mixed (each in first-seen order).

    Resampling within these strata keeps the class counts fixed whenever no group mixes labels, as the
    image-level stratified bootstrap does (which it equals when every image is its own group).
    """
    g = int(gidx.max()) + 1
    pos = np.bincount(gidx, weights=y.astype(np.float64), minlength=g)
    size = np.bincount(gidx, minlength=g)
    ids = np.arange(g)
    return [ids[pos == size], ids[pos == 0], ids[(pos > 0) & (pos < size)]]


def _draw_group_counts(rng: np.random.Generator, strata: Sequence[NDArray[np.int64]], n_grp: int,
                       b: int) -> NDArray[np.float64]:
    """``(b, n_grp)``: how often each group is drawn in each of ``b`` resamples (with replacement per stratum)."""
    counts = np.zeros((b, n_grp))
    for members in strata:
        m = members.size
        if m == 0:
            continue
        draws = members[rng.integers(0, m, size=(b, m))]
        flat = draws + (np.arange(b) * n_grp)[:, None]
        counts += np.bincount(flat.ravel(), minlength=b * n_grp).reshape(b, n_grp)
    return counts


def _weighted_level_counts(levels_of: NDArray[np.int64], weights: NDArray[np.float64],
                           n_levels: int) -> NDArray[np.float64]:
    """``(b, n_levels)``: per resample, the summed weight of the images at each score level."""
    b = weights.shape[0]
    if levels_of.size == 0:
        return np.zeros((b, n_levels))
    flat = levels_of[None, :] + (np.arange(b) * n_levels)[:, None]
    return np.bincount(flat.ravel(), weights=weights.ravel(), minlength=b * n_levels).reshape(b, n_levels)


class _Arm:
    """One scored test set prepared for the bootstrap: score levels and each image's group column."""

    def __init__(self, y: NDArray[np.int64], score: NDArray[np.float64], gcol: NDArray[np.int64],
                 threshold: float) -> None:
        levels, level_of = np.unique(score, return_inverse=True)  # levels ascending
        self.n_levels = levels.size
        self.size = y.size
        self.called_positive = levels >= threshold  # per level: is a case at this score called positive?
        self.pos_levels, self.pos_groups = level_of[y == 1], gcol[y == 1]
        self.neg_levels, self.neg_groups = level_of[y == 0], gcol[y == 0]

    def draws(self, counts: NDArray[np.float64], names: Sequence[str]) -> dict[str, NDArray[np.float64]]:
        pos = _weighted_level_counts(self.pos_levels, counts[:, self.pos_groups], self.n_levels)
        neg = _weighted_level_counts(self.neg_levels, counts[:, self.neg_groups], self.n_levels)
        return _metrics_from_level_counts(pos, neg, self.called_positive, names)


def _bootstrap_draws(
    y: NDArray[np.int64],
    score: NDArray[np.float64],
    threshold: float,
    n_boot: int,
    seed: int,
    names: Sequence[str],
    groups: ArrayLike | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Metric values on ``n_boot`` cluster resamples, computed together.

    Resampling is over groups (``groups``: one id per image; ``None``: every image its own group), the
    cluster bootstrap: each resample draws groups with replacement and takes every image of each drawn
    group, so copies of one radiograph count as one unit of evidence, not many. Groups are drawn within
    strata of label composition (:func:`_group_strata`): with every image its own group this is the
    stratified image-level bootstrap, resample for resample (same draws for the same seed). Each resample
    is reduced to counts per distinct score level (:func:`_metrics_from_level_counts`), so no resample is
    ever sorted. Resamples are processed in chunks to bound memory on large test sets; the random draws
    do not depend on which metrics are asked for, so one seed gives the same resamples for all of them.
    """
    return _joint_draws([(y, score, threshold)], [group_index(groups, y.size)], n_boot, seed, names)[0]


def _joint_draws(
    arms: Sequence[tuple[NDArray[np.int64], NDArray[np.float64], float]],
    gcols: Sequence[NDArray[np.int64]],
    n_boot: int,
    seed: int,
    names: Sequence[str],
) -> list[dict[str, NDArray[np.float64]]]:
    """Metric values of several arms on the same ``n_boot`` group resamples (``gcols``: shared group ids)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n_grp = int(max(int(g.max()) for g in gcols)) + 1
    # a group's label composition over all arms (an image in several arms has one label)
    y_all = np.concatenate([a[0] for a in arms])
    g_all = np.concatenate(list(gcols))
    strata = _group_strata(*_first_label_per_image(y_all, g_all))
    prepared = [_Arm(y, s, g, t) for (y, s, t), g in zip(arms, gcols, strict=True)]
    out: list[dict[str, list[NDArray[np.float64]]]] = [{name: [] for name in names} for _ in arms]
    # ~4M cells per count matrix per chunk: tens of MB whatever the test-set size.
    widest = max(a.n_levels + a.size for a in prepared)
    chunk = max(1, min(n_boot, 4_000_000 // max(1, widest, n_grp)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        counts = _draw_group_counts(rng, strata, n_grp, b)  # (b, groups): how often each group is drawn
        for arm, acc in zip(prepared, out, strict=True):
            values = arm.draws(counts, names)
            for name in names:
                acc[name].append(values[name])
    return [{name: np.concatenate(parts) for name, parts in acc.items()} for acc in out]


def _first_label_per_image(y_all: NDArray[np.int64],
                           g_all: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Labels and groups for stratifying: every (group, label) pair once (only a group's label composition
    counts, and an image in both arms of a joint bootstrap must not count twice)."""
    pairs = np.unique(g_all * 2 + y_all)
    return (pairs % 2).astype(np.int64), (pairs // 2).astype(np.int64)


def _percentile_ci(values: NDArray[np.float64], alpha: float) -> tuple[float, float]:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    # Resamples where the metric is undefined (e.g. precision with no positive calls) are left
    # out rather than counted as 0 or 1.
    lo, hi = np.percentile(finite, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return (float(lo), float(hi))


def bootstrap_ci(
    y: ArrayLike,
    score: ArrayLike,
    metric: str,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: ArrayLike | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` at level ``1 - alpha`` for one metric.

    A cluster bootstrap over ``groups`` (one id per image, e.g. the manifest's duplicate group; ``None``:
    every image its own group), stratified by class (see :func:`_bootstrap_draws`); deterministic for a
    given seed; ``(nan, nan)`` when the metric is undefined on every resample (e.g. AUROC with one class).
    """
    if metric not in CI_METRICS:
        raise ValueError(f"no bootstrap for metric {metric!r}; choose from {', '.join(CI_METRICS)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    y_arr, s_arr = _validate(y, score)
    draws = _bootstrap_draws(y_arr, s_arr, threshold, n_boot, seed, [metric], groups)
    return _percentile_ci(draws[metric], alpha)


def metrics_with_ci(
    y: ArrayLike, score: ArrayLike, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0,
    groups: ArrayLike | None = None,
) -> dict[str, float | list[float]]:
    """:func:`binary_metrics` plus ``"<name>_ci95": [lo, hi]`` for each of :data:`CI_METRICS`.

    All intervals come from one shared set of resamples (a cluster bootstrap over ``groups``, see
    :func:`bootstrap_ci`), and each equals what :func:`bootstrap_ci` gives for that metric with the same
    seed and groups.
    """
    y_arr, s_arr = _validate(y, score)
    result: dict[str, float | list[float]] = dict(binary_metrics(y_arr, s_arr, threshold))
    draws = _bootstrap_draws(y_arr, s_arr, threshold, n_boot, seed, CI_METRICS, groups)
    for name in CI_METRICS:
        result[f"{name}_ci95"] = list(_percentile_ci(draws[name], 0.05))
    return result


def joint_bootstrap_diff(
    a: tuple[ArrayLike, ArrayLike, ArrayLike | None],
    b: tuple[ArrayLike, ArrayLike, ArrayLike | None],
    metric: str,
    thresholds: tuple[float, float] = (0.5, 0.5),
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, tuple[float, float]]:
    """``metric(a) - metric(b)`` and its percentile interval from a joint cluster bootstrap.

    ``a`` and ``b`` are ``(y, score, groups)`` of two arms whose test sets share images (e.g. two
    protocols scored on one test set, or a test set and a subset of it); group ids are shared between
    the arms (``None``: the arm's images are each their own group, only sensible when both arms hold
    the same images in the same order). Each resample draws groups once and scores both arms on the
    images of the drawn groups, so what the arms share cancels in the per-resample difference: the
    interval is narrower than two independent bootstraps would give when the arms are correlated.
    """
    if metric not in CI_METRICS:
        raise ValueError(f"no bootstrap for metric {metric!r}; choose from {', '.join(CI_METRICS)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    arms, raw = [], []
    for (y, score, groups), t in zip((a, b), thresholds, strict=True):
        y_arr, s_arr = _validate(y, score)
        arms.append((y_arr, s_arr, float(t)))
        raw.append(np.arange(y_arr.size).astype(str) if groups is None else np.asarray(groups).astype(str))
        if raw[-1].shape != y_arr.shape:
            raise ValueError(f"groups must be 1-D and aligned with y ({y_arr.size} entries)")
    gcol = group_index(np.concatenate(raw), sum(r.size for r in raw))
    cols = [gcol[: raw[0].size], gcol[raw[0].size:]]
    da, db = _joint_draws(arms, cols, n_boot, seed, [metric])
    point = binary_metrics(arms[0][0], arms[0][1], arms[0][2])[metric] - \
        binary_metrics(arms[1][0], arms[1][1], arms[1][2])[metric]
    return float(point), _percentile_ci(da[metric] - db[metric], alpha)


def wilson_ci(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes/n (95% by default); (0, 1) for n = 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))
