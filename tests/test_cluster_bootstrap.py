"""Cluster (group) bootstrap: copies of one image are one unit of evidence, not many.

Expected values come from brute-force references written here (plain loops over resamples with
scikit-learn), never from the functions under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from fracbench.metrics import bootstrap_ci, joint_bootstrap_diff, metrics_with_ci


def _brute_stratified(y: np.ndarray, s: np.ndarray, metric, n_boot: int, seed: int) -> np.ndarray:
    """Plain stratified image-level bootstrap, one resample at a time."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    out = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        out.append(metric(y[idx], s[idx]))
    return np.asarray(out)


def _acc(y, s):
    return accuracy_score(y, (s >= 0.5).astype(int))


def _copies(n_groups: int = 10, copies: int = 20):
    """n_groups source images, each copied ``copies`` times (identical label and score)."""
    rng = np.random.default_rng(5)
    y_rep = np.array([1, 0] * (n_groups // 2))
    s_rep = np.clip(0.5 + 0.3 * (2 * y_rep - 1) + rng.normal(0, 0.3, n_groups), 0.01, 0.99).round(3)
    y = np.repeat(y_rep, copies)
    s = np.repeat(s_rep, copies)
    groups = np.repeat([f"g{i}" for i in range(n_groups)], copies)
    return y_rep, s_rep, y, s, groups


def _width(ci) -> float:
    return float(ci[1] - ci[0])


@pytest.mark.slow
def test_copies_give_the_width_of_their_source_images() -> None:
    y_rep, s_rep, y, s, groups = _copies()
    # the reference: a plain bootstrap of the 10 source images
    for name, fn in (("accuracy", _acc), ("auroc", roc_auc_score)):
        ref = _width(np.percentile(_brute_stratified(y_rep, s_rep, fn, 3000, 1), [2.5, 97.5]))
        assert ref > 0.1, (name, ref)
        cluster = _width(bootstrap_ci(y, s, name, n_boot=3000, seed=0, groups=groups))
        image = _width(bootstrap_ci(y, s, name, n_boot=3000, seed=0))
        assert 0.75 * ref <= cluster <= 1.3 * ref, (name, cluster, ref)
        assert image < 0.5 * cluster, (name, image, cluster)
    # metrics_with_ci carries the same groups through
    out = metrics_with_ci(y, s, n_boot=3000, seed=0, groups=groups)
    assert out["auroc_ci95"] == list(bootstrap_ci(y, s, "auroc", n_boot=3000, seed=0, groups=groups))


@pytest.mark.slow
def test_cluster_draws_match_a_brute_force_group_bootstrap() -> None:
    """Unequal groups with mixed labels: the interval agrees with a loop that draws groups and takes all
    their images (within strata all-fractured / none / mixed), up to Monte-Carlo error."""
    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 8, 60)
    groups = np.repeat(np.arange(60), sizes)
    base = rng.random(60) < 0.4
    y = np.where(rng.random(groups.size) < 0.9, base[groups], ~base[groups]).astype(int)
    s = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.3, 60)[groups], 0, 1).round(2)
    members = [np.flatnonzero(groups == g) for g in range(60)]
    comp = np.array([y[m].mean() for m in members])
    strata = [np.flatnonzero(comp == 1), np.flatnonzero(comp == 0), np.flatnonzero((comp > 0) & (comp < 1))]
    r2 = np.random.default_rng(11)
    ref = []
    for _ in range(3000):
        drawn = np.concatenate([r2.choice(st, st.size) for st in strata if st.size])
        idx = np.concatenate([members[g] for g in drawn])
        ref.append(roc_auc_score(y[idx], s[idx]))
    lo_ref, hi_ref = np.percentile(ref, [2.5, 97.5])
    lo, hi = bootstrap_ci(y, s, "auroc", n_boot=3000, seed=0, groups=groups)
    assert abs(lo - lo_ref) < 0.02 and abs(hi - hi_ref) < 0.02, ((lo, hi), (lo_ref, hi_ref))
    image = bootstrap_ci(y, s, "auroc", n_boot=3000, seed=0)
    assert _width(image) < 0.8 * (hi_ref - lo_ref)


def test_singleton_groups_are_the_image_level_bootstrap() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.3).astype(int)
    s = rng.random(300).round(2)
    a = metrics_with_ci(y, s, 0.4, n_boot=400, seed=9)
    b = metrics_with_ci(y, s, 0.4, n_boot=400, seed=9, groups=[f"img{i}" for i in range(300)])
    assert a == b or all(np.allclose(a[k], b[k], equal_nan=True) for k in a)


@pytest.mark.slow
def test_joint_bootstrap_of_correlated_arms_is_narrower() -> None:
    """Two arms scored on the same images, mostly agreeing: drawing the same groups for both arms gives a
    narrower difference CI than independent bootstraps, and its width agrees with a brute-force joint loop."""
    rng = np.random.default_rng(4)
    n = 400
    groups = np.repeat(np.arange(n // 4), 4)
    y = np.repeat((rng.random(n // 4) < 0.5).astype(int), 4)
    sa = np.clip(0.5 + 0.2 * (2 * y - 1) + rng.normal(0, 0.3, n), 0, 1).round(3)
    sb = np.clip(sa + rng.normal(0.02, 0.03, n), 0, 1).round(3)
    d, (lo, hi) = joint_bootstrap_diff((y, sa, groups), (y, sb, groups), "auroc", n_boot=2000, seed=0)
    assert np.isclose(d, roc_auc_score(y, sa) - roc_auc_score(y, sb))
    ia = bootstrap_ci(y, sa, "auroc", n_boot=2000, seed=0, groups=groups)
    ib = bootstrap_ci(y, sb, "auroc", n_boot=2000, seed=1, groups=groups)
    independent = 2 * 1.96 * np.hypot(_width(ia) / 3.92, _width(ib) / 3.92)
    assert hi - lo < 0.5 * independent, (hi - lo, independent)
    # brute-force joint cluster bootstrap (groups are pure, so strata are the two classes)
    r2 = np.random.default_rng(7)
    members = [np.flatnonzero(groups == g) for g in range(n // 4)]
    gpos = [g for g in range(n // 4) if y[members[g][0]] == 1]
    gneg = [g for g in range(n // 4) if y[members[g][0]] == 0]
    diffs = []
    for _ in range(2000):
        idx = np.concatenate([members[g] for g in [*r2.choice(gpos, len(gpos)), *r2.choice(gneg, len(gneg))]])
        diffs.append(roc_auc_score(y[idx], sa[idx]) - roc_auc_score(y[idx], sb[idx]))
    ref = np.percentile(diffs, [2.5, 97.5])
    assert abs((hi - lo) - (ref[1] - ref[0])) < 0.3 * (ref[1] - ref[0]), ((lo, hi), ref)


def test_joint_bootstrap_with_partly_shared_images() -> None:
    """A test set and its subset: groups drawn once; the subset arm takes only its own images."""
    rng = np.random.default_rng(6)
    n = 300
    groups = np.arange(n)
    y = (rng.random(n) < 0.5).astype(int)
    s = np.clip(0.5 + 0.2 * (2 * y - 1) + rng.normal(0, 0.3, n), 0, 1)
    keep = np.arange(n) < 200
    d, (lo, hi) = joint_bootstrap_diff((y, s, groups), (y[keep], s[keep], groups[keep]), "accuracy",
                                       n_boot=1000, seed=0)
    assert np.isclose(d, _acc(y, s) - _acc(y[keep], s[keep]))
    assert lo <= d <= hi


# --------------------------------------------------------------------------------------------
# Rules built on groups
# --------------------------------------------------------------------------------------------


def test_too_few_counts_groups_not_images() -> None:
    from fracbench.claims.tables.claims import Evidence, judge, too_few
    from fracbench.claims.tables.effects import seed_effect

    # 200 images in 5 duplicate groups: 5 units of evidence
    ev = Evidence(0.99, (0.98, 1.0), "95% bootstrap CI", n_images=200, balanced=0.99, majority=0.5, n_groups=5)
    assert too_few(ev) and "5 independent test groups" in too_few(ev)
    assert judge("accuracy", 0.99, ev).verdict == "no evidence"
    # the same 200 images with no copies are enough
    alone = Evidence(0.99, (0.98, 1.0), "95% bootstrap CI", n_images=200, balanced=0.99, majority=0.5)
    assert not too_few(alone) and judge("accuracy", 0.99, alone).verdict == "reproduced"
    assert not seed_effect([0.30, 0.31, 0.32], 5).evidence
    assert seed_effect([0.30, 0.31, 0.32], 200).evidence


def test_accuracy_effect_across_class_balance_is_not_shown() -> None:
    from fracbench.claims.tables.effects import balance_differs

    why = balance_differs(0.18, 0.52)
    assert why.startswith("class balance differs: 0.18 vs 0.52 fractured") and "AUROC" in why
    assert balance_differs(0.50, 0.52) == ""


def test_link_groups_merges_through_shared_images() -> None:
    from fracbench.claims.tables.paired import link_groups

    ka, kb = link_groups(["x", "y", "z"], ["g1", "g1", "g2"], ["z", "w", "v"], ["h1", "h1", "h2"])
    # z links a's g2 with b's h1, so w (h1) is in z's unit; y stays with x; v alone
    assert ka[2] == kb[0] == kb[1] and ka[0] == ka[1] != ka[2] and kb[2] not in (ka[0], ka[2])
