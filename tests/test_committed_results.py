"""Every committed record recomputes from its own predictions, and says exactly what code made it.

For each ``results/<dataset>/runs/<experiment>/seed<k>/record.json`` with status complete:
the test metrics (and the validation AUROC) are recomputed here from ``predictions.csv`` with
code written for this test (rank-sum AUROC, counts at the record's threshold), not with
fracbench.metrics; the 95 % bootstrap intervals are recomputed with fracbench.metrics from the
record's seed and ``n_boot`` (the bootstrap is deterministic given both), which checks that the
published intervals belong to these predictions. A record written before predictions were stored
at full precision (6 decimals) fails here: rerun it.

A record must also come from a known state of the code: ``git_dirty`` false, or a
``git_diff_sha256`` naming the exact diff; and it must hold no absolute path of the machine it
ran on.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted(REPO_ROOT.glob("results/*/runs/*/seed*/record.json"))
POINT_TOL = 1e-9


def _id(path: Path) -> str:
    return "/".join(path.relative_to(REPO_ROOT / "results").parts[:-1])


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


COMPLETE = [p for p in RECORDS if _load(p).get("status") == "complete"]


def _predictions(run: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with (run / "predictions.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["score"]) for r in rows])


def rank_auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney: P(score of a positive > score of a negative), ties counted half."""
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    return (ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def point_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    pred = s >= threshold  # fracbench's rule: fractured when P(fracture) >= threshold
    tp, fn = int(np.sum(pred & (y == 1))), int(np.sum(~pred & (y == 1)))
    tn, fp = int(np.sum(~pred & (y == 0))), int(np.sum(pred & (y == 0)))
    sens, spec = tp / (tp + fn), tn / (tn + fp)
    return {"auroc": rank_auroc(y, s), "accuracy": (tp + tn) / len(y), "sensitivity": sens, "specificity": spec,
            "balanced_accuracy": (sens + spec) / 2, "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": len(y)}


def test_rank_auroc_agrees_with_a_pair_count() -> None:
    """The helper itself, against the definition (all pairs), with ties."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)  # many ties
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y == 1] for b in s[y == 0]]
    assert rank_auroc(y, s) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)


def test_there_are_committed_records() -> None:
    if not RECORDS:
        pytest.skip("no committed records under results/*/runs")
    assert COMPLETE, "no complete record under results/*/runs"


@pytest.mark.parametrize("path", COMPLETE, ids=_id)
def test_record_recomputes_from_its_predictions(path: Path) -> None:
    check_recomputes(path)


@pytest.mark.parametrize("path", COMPLETE, ids=_id)
def test_record_intervals_recompute_from_its_seed(path: Path) -> None:
    check_intervals(path)


@pytest.mark.parametrize("protocol", ["honest", "as_published"])
def test_the_checks_pass_on_a_fresh_record_and_catch_a_changed_one(tmp_path: Path, protocol: str) -> None:
    """The recompute checks themselves: a record fit() writes now passes; one changed prediction fails."""
    from fracbench.config import TrainConfig
    from fracbench.data import prepare
    from fracbench.data.cache import build_cache
    from fracbench.data.synthetic import SyntheticSpec, generate
    from fracbench.training.train import fit

    generate(SyntheticSpec(count=120, size=48, seed=4), tmp_path / "data")
    manifest = prepare("synthetic", tmp_path / "data", progress=False).manifest
    # two copies per group (the synthetic set has none), so a record with image-level CIs would fail
    test_rows = [r.id for r in manifest.rows if r.split == "test"]
    manifest.rows = [replace(r, group=f"pair{test_rows.index(r.id) // 2}") if r.split == "test" else r
                     for r in manifest.rows]
    manifest.write(tmp_path / "manifests" / "synthetic.csv")
    cache = build_cache(manifest, 32, progress=False)
    cfg = TrainConfig(model="tiny_cnn", image_size=32, epochs=2, batch_size=16, n_boot=100, protocol=protocol, seed=3)
    run = tmp_path / "runs" / "x" / "seed3"
    fit(cfg, cache, run, experiment="x", progress=False)
    assert _load(run / "record.json")["counts"]["test_groups"] < _load(run / "record.json")["counts"]["test"]
    check_recomputes(run / "record.json")
    check_intervals(run / "record.json")
    text = (run / "predictions.csv").read_text().splitlines()
    i = next(k for k, line in enumerate(text) if ",test," in line)
    ident, split, label, score = text[i].split(",")
    text[i] = ",".join([ident, split, label, "0.0" if label == "1" else "1.0"])  # now ranked the wrong way
    (run / "predictions.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(AssertionError):
        check_recomputes(run / "record.json")
        check_intervals(run / "record.json")


def check_recomputes(path: Path) -> None:
    rec = _load(path)
    y, s = _predictions(path.parent, "test")
    thr = float(rec["threshold"])
    got = point_metrics(y, s, thr)
    test = rec["metrics"]["test"]
    assert {k: test[k] for k in ("n", "tp", "fp", "tn", "fn")} == {k: got[k] for k in ("n", "tp", "fp", "tn", "fn")}
    for key in ("auroc", "accuracy", "sensitivity", "specificity", "balanced_accuracy"):
        assert math.isclose(test[key], got[key], rel_tol=0, abs_tol=POINT_TOL), (key, test[key], got[key])
    # the accuracy the tutorial reports: correct at 0.5 over its denominator (the .jpg count as published)
    correct = int(np.sum((s >= 0.5) == (y == 1)))
    if "accuracy_as_counted" in test:
        den = rec["counts"]["test_denominator"]
        assert math.isclose(test["accuracy_as_counted"], correct / den, abs_tol=POINT_TOL)
        assert math.isclose(test["accuracy_at_0.5"], correct / len(y), abs_tol=POINT_TOL)
    val = (rec["metrics"].get("val") or {})
    if "auroc" in val:
        vy, vs = _predictions(path.parent, "val")
        assert math.isclose(val["auroc"], rank_auroc(vy, vs), abs_tol=POINT_TOL)


def check_intervals(path: Path) -> None:
    from fracbench.metrics import metrics_with_ci
    from fracbench.results import prediction_groups

    rec = _load(path)
    y, s = _predictions(path.parent, "test")
    # records that say ci_method resampled their manifest's duplicate groups; older ones resampled images
    groups = None
    if rec.get("ci_method"):
        groups = prediction_groups(path.parent, rec)
        assert groups is not None, f"{path}: {rec['ci_method']}, but its manifest is not under results/*/manifests"
    again = metrics_with_ci(y, s, threshold=float(rec["threshold"]), n_boot=int(rec["config"]["n_boot"]),
                            seed=int(rec["config"]["seed"]), groups=groups)
    test = rec["metrics"]["test"]
    for key in sorted(k for k in test if k.endswith("_ci95")):
        assert np.allclose(test[key], again[key], rtol=0, atol=POINT_TOL, equal_nan=True), (key, test[key], again[key])


_ABSOLUTE = re.compile(r"^/(work|tmp|home|root)(/|$)")


def _strings(value: Any, where: str = "") -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _strings(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in _strings(v, f"{where}[{i}]")]
    return []


@pytest.mark.parametrize("path", RECORDS, ids=_id)
def test_record_names_its_code_and_no_machine_paths(path: Path) -> None:
    rec = _load(path)
    assert isinstance(rec.get("git_dirty"), bool), "record lacks git_dirty"
    if rec["git_dirty"]:
        assert re.fullmatch(r"[0-9a-f]{64}", str(rec.get("git_diff_sha256"))), (
            "made on a dirty tree without git_diff_sha256: nobody can say what code ran; rerun it from a clean "
            "checkout")
    leaked = [(k, v) for k, v in _strings(rec) if _ABSOLUTE.match(v)]
    assert not leaked, f"absolute paths of the machine it ran on: {leaked[:5]}"


def test_absolute_path_check_catches_one() -> None:
    assert [k for k, v in _strings({"a": {"b": ["x", "/tmp/run"]}, "c": "/workdir"}) if _ABSOLUTE.match(v)] == [".a.b[1]"]
