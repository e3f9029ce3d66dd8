"""Effects between two runs from their predictions: the one effect rule (fracbench.claims.tables.effects) for one
seed per arm, and the class-balance check that keeps an accuracy difference out of the tables.

Two runs whose test sets share images get a joint cluster bootstrap: duplicate groups of the two
manifests are linked through the images they share (an image is one unit in both arms), each resample
draws the linked groups once and scores both arms on their own images of the drawn groups
(:func:`fracbench.metrics.joint_bootstrap_diff`). Without shared images, or without predictions, the
caller's independent rule applies.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import numpy as np

from fracbench import results as R
from fracbench.claims.tables.effects import Effect, balance_differs, joint_effect
from fracbench.claims.tables.inputs import Run
from fracbench.metrics import joint_bootstrap_diff

__all__ = ["accuracy_balance_note", "link_groups", "one_seed_effect"]


def _test_arm(r: Run) -> tuple[list[str], np.ndarray, np.ndarray, list[str]] | None:
    """Test ids, labels, scores and duplicate groups of a run (each image its own group without a manifest)."""
    if r.dir is None or not (r.dir / R.PREDICTIONS).exists():
        return None
    preds = [p for p in R.read_predictions(r.dir) if p["split"] == "test"]
    if not preds:
        return None
    ids = [p["id"] for p in preds]
    groups = R.prediction_groups(r.dir, r.record) or [f"image:{i}" for i in ids]
    return (ids, np.array([p["label"] for p in preds]), np.array([p["score"] for p in preds]), groups)


def link_groups(ids_a: Sequence[str], groups_a: Sequence[str], ids_b: Sequence[str],
                groups_b: Sequence[str]) -> tuple[list[str], list[str]]:
    """One group key per image of each arm, such that an image in both arms has one key and groups joined
    by a shared image (in either arm's manifest) merge: the units a joint bootstrap draws."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[str, tuple[str, str]] = {}
    for arm, ids, groups in (("a", ids_a, groups_a), ("b", ids_b, groups_b)):
        for i, g in zip(ids, groups, strict=True):
            node = find((arm, g))
            if i in first:
                other = find(first[i])
                if other != node:
                    parent[node] = other
            else:
                first[i] = node
    keys_a = ["/".join(find(("a", g))) for g in groups_a]
    keys_b = ["/".join(find(("b", g))) for g in groups_b]
    return keys_a, keys_b


def one_seed_effect(ra: Run, rb: Run, metric: str, n_groups: int | None,
                    otherwise: Callable[[], Effect]) -> Effect:
    """``metric(ra) - metric(rb)`` (over every test image at each record's threshold) under the one effect
    rule: a joint cluster bootstrap when the two test sets share images, else ``otherwise()``."""
    a, b = _test_arm(ra), _test_arm(rb)
    if a is None or b is None or not set(a[0]) & set(b[0]):
        return otherwise()
    keys_a, keys_b = link_groups(a[0], a[3], b[0], b[3])
    cfg = ra.record.get("config") or {}
    d, ci = joint_bootstrap_diff((a[1], a[2], keys_a), (b[1], b[2], keys_b), metric,
                                 thresholds=(float(ra.record.get("threshold", 0.5)),
                                             float(rb.record.get("threshold", 0.5))),
                                 n_boot=int(cfg.get("n_boot", 1000)), seed=ra.seed)
    return joint_effect(d, ci, n_groups)


def accuracy_balance_note(a: Sequence[Run], b: Sequence[Run]) -> str:
    """The reason an accuracy difference between the two arms' test sets is not shown ("" when it is):
    their fractured shares (mean over seeds) differ (fracbench.claims.tables.effects.balance_differs)."""
    def share(rs: Sequence[Run]) -> float | None:
        vals = [float(v) for r in rs if isinstance(v := r.test.get("prevalence"), (int, float))]
        return statistics.fmean(vals) if vals else None

    return balance_differs(share(a), share(b))
