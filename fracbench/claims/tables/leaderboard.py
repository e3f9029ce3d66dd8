"""Leaderboard: every experiment's test metrics with 95% CIs, cost and provenance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fracbench.claims.tables.inputs import (
    _TABLE_ORDER,
    Run,
    _by_experiment,
    _complete,
    _experiments,
    _failed_notes,
    _profiles,
    _used_runs,
    check_manifests,
)
from fracbench.claims.tables.render import DASH, Table, _ci_cell, _mean_sd, _split_value
from fracbench.training.experiments import Experiment

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
    shared = [e for e in exps.values() if e.on_run_manifest]
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


