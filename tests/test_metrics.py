"""Tests for fracbench.metrics: known values, sklearn agreement, thresholds, bootstrap CIs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from fracbench.metrics import (
    CI_METRICS,
    METRIC_NAMES,
    _metrics_from_level_counts,
    binary_metrics,
    bootstrap_ci,
    choose_threshold,
    confusion,
    metrics_with_ci,
)


def _noisy(n: int, seed: int = 0, prevalence: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative but imperfect scores, rounded so that ties occur."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    score = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.25, n), 0, 1).round(2)
    return y, score


# --- known values -------------------------------------------------------------------------------


def test_confusion_known_values() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    pred = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    assert confusion(y, pred) == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}


def test_binary_metrics_known_values() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    score = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.45, 0.05])
    m = binary_metrics(y, score, threshold=0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["n"]) == (3, 1, 5, 1, 10)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["precision"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 5 / 6) / 2)
    assert m["prevalence"] == pytest.approx(0.4)
    assert m["majority_accuracy"] == pytest.approx(0.6)
    pred = (score >= 0.5).astype(int)
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    # pairs: 24; the positive at 0.3 loses to 0.7, 0.4, 0.45; the one at 0.6 loses to 0.7
    assert m["auroc"] == pytest.approx(1 - 4 / 24)


def test_keys_are_lowercase_and_complete() -> None:
    y, s = _noisy(50)
    m = binary_metrics(y, s)
    assert set(m) == {*METRIC_NAMES, "kappa", "n", "tp", "fp", "tn", "fn"}
    assert all(k == k.lower() for k in m)
    assert set(CI_METRICS) <= set(m)
    assert "kappa" not in METRIC_NAMES  # kappa ranges over [-1, 1]


def test_perfect_classifier() -> None:
    y = np.array([0, 0, 0, 1, 1])
    m = binary_metrics(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9]))
    for k in (
        "accuracy",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "precision",
        "f1",
        "auroc",
        "auprc",
    ):
        assert m[k] == pytest.approx(1.0), k
    assert m["kappa"] == pytest.approx(1.0)


def test_inverted_classifier() -> None:
    y = np.array([0, 0, 0, 1, 1])
    m = binary_metrics(y, np.array([0.9, 0.8, 0.7, 0.2, 0.1]))
    for k in ("accuracy", "sensitivity", "specificity", "f1", "auroc", "balanced_accuracy"):
        assert m[k] == pytest.approx(0.0), k
    assert m["kappa"] < 0
    assert m["precision"] == 0.0  # three positive calls, all wrong: defined, and zero


def test_agrees_with_sklearn() -> None:
    y, s = _noisy(300, seed=3)
    m = binary_metrics(y, s, threshold=0.55)
    pred = (s >= 0.55).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["auprc"] == pytest.approx(average_precision_score(y, s))


def test_single_class_gives_nan_without_raising() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn UndefinedMetricWarning, no numpy division warning
        m = binary_metrics(np.zeros(6, dtype=int), np.linspace(0, 1, 6))
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"])
    assert math.isnan(m["sensitivity"]) and math.isnan(m["balanced_accuracy"])
    assert m["specificity"] == pytest.approx(0.5)
    assert m["prevalence"] == 0.0 and m["majority_accuracy"] == 1.0
    lo, hi = bootstrap_ci(np.ones(6, dtype=int), np.linspace(0, 1, 6), "auroc", n_boot=50)
    assert math.isnan(lo) and math.isnan(hi)


def test_invalid_input_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        binary_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_metrics([0, 2], [0.1, 0.9])
    with pytest.raises(ValueError, match="nan"):
        binary_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="no samples"):
        binary_metrics([], [])


# --- thresholds ---------------------------------------------------------------------------------


def test_youden_separable() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.05, 0.2, 0.3, 0.35, 0.6, 0.7, 0.95])
    t = choose_threshold(y, s, "youden")
    assert 0.35 < t <= 0.6
    m = binary_metrics(y, s, threshold=t)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 1.0


def test_sensitivity_target() -> None:
    y = np.array([1] * 10 + [0] * 10)
    s = np.concatenate([np.linspace(0.3, 0.99, 10), np.linspace(0.0, 0.6, 10)])
    t = choose_threshold(y, s, "sensitivity", target_sensitivity=0.9)
    assert binary_metrics(y, s, threshold=t)["sensitivity"] >= 0.9
    # the largest such threshold: any observed score above it misses the target
    higher = s[s > t]
    assert all(binary_metrics(y, s, threshold=h)["sensitivity"] < 0.9 for h in higher)
    assert choose_threshold(y, s, "sensitivity", target_sensitivity=1.0) == pytest.approx(0.3)


def test_choose_threshold_errors() -> None:
    y, s = _noisy(40)
    with pytest.raises(ValueError, match="unknown method"):
        choose_threshold(y, s, "f1max")
    with pytest.raises(ValueError, match="target_sensitivity"):
        choose_threshold(y, s, "sensitivity")
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(np.ones(4, dtype=int), np.linspace(0, 1, 4))


# --- bootstrap ----------------------------------------------------------------------------------


def test_vectorised_engine_matches_sklearn_on_resamples() -> None:
    """The bootstrap's count-based metrics equal binary_metrics on the very same resamples."""
    y, s = _noisy(120, seed=5)
    levels, level_of = np.unique(s, return_inverse=True)
    rng = np.random.default_rng(1)
    resamples = [rng.integers(0, y.size, y.size) for _ in range(5)]
    pos = np.stack([np.bincount(level_of[i][y[i] == 1], minlength=levels.size) for i in resamples]).astype(
        float
    )
    neg = np.stack([np.bincount(level_of[i][y[i] == 0], minlength=levels.size) for i in resamples]).astype(
        float
    )
    batch = _metrics_from_level_counts(pos, neg, levels >= 0.5, CI_METRICS)
    for b, idx in enumerate(resamples):
        ref = binary_metrics(y[idx], s[idx], threshold=0.5)
        for name in CI_METRICS:
            assert batch[name][b] == pytest.approx(ref[name], nan_ok=True), name


def test_ci_contains_estimate_and_narrows() -> None:
    y_small, s_small = _noisy(100, seed=1)
    y_big, s_big = _noisy(2000, seed=1)
    for metric in ("auroc", "accuracy", "sensitivity", "auprc"):
        point = binary_metrics(y_small, s_small)[metric]
        lo, hi = bootstrap_ci(y_small, s_small, metric, n_boot=500)
        assert lo <= point <= hi, metric
        lo_b, hi_b = bootstrap_ci(y_big, s_big, metric, n_boot=500)
        assert hi_b - lo_b < hi - lo, metric


def test_bootstrap_deterministic_by_seed() -> None:
    y, s = _noisy(200, seed=2)
    assert bootstrap_ci(y, s, "auroc", seed=7, n_boot=200) == bootstrap_ci(y, s, "auroc", seed=7, n_boot=200)
    assert bootstrap_ci(y, s, "auroc", seed=7, n_boot=200) != bootstrap_ci(y, s, "auroc", seed=8, n_boot=200)


def test_bootstrap_errors() -> None:
    y, s = _noisy(30)
    with pytest.raises(ValueError, match="no bootstrap"):
        bootstrap_ci(y, s, "prevalence")
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(y, s, "auroc", alpha=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(y, s, "auroc", n_boot=0)


def test_metrics_with_ci_schema_and_consistency() -> None:
    y, s = _noisy(150, seed=4)
    out = metrics_with_ci(y, s, n_boot=300, seed=3)
    point = binary_metrics(y, s)
    for k, v in point.items():
        assert out[k] == pytest.approx(v)
    for name in CI_METRICS:
        ci = out[f"{name}_ci95"]
        assert isinstance(ci, list) and len(ci) == 2 and ci[0] <= ci[1]
        assert tuple(ci) == bootstrap_ci(y, s, name, n_boot=300, seed=3)
    assert set(out) == set(point) | {f"{n}_ci95" for n in CI_METRICS}


def test_precision_ci_is_nan_safe() -> None:
    # Scores almost never reach the threshold: many resamples have no positive call.
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.1, 0.1, 0.2, 0.1, 0.3, 0.1, 0.2, 0.1, 0.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = bootstrap_ci(y, s, "precision", n_boot=200)
    assert lo == hi == 1.0


# --- property ----------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 1), st.floats(0.0, 1.0, allow_nan=False)),
        min_size=1,
        max_size=60,
    ),
    threshold=st.floats(0.0, 1.0, allow_nan=False),
)
def test_rates_in_unit_interval_or_nan(data: list[tuple[int, float]], threshold: float) -> None:
    y = np.array([d[0] for d in data])
    s = np.array([d[1] for d in data])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = binary_metrics(y, s, threshold=threshold)
    for name in METRIC_NAMES:
        v = m[name]
        assert math.isnan(v) or 0.0 <= v <= 1.0, (name, v)
    assert math.isnan(m["kappa"]) or -1.0 - 1e-9 <= m["kappa"] <= 1.0 + 1e-9
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == m["n"] == len(data)
