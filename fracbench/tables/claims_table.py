"""The claims table: each number of the paper beside fracbench's and a verdict."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fracbench.experiments import Experiment
from fracbench.tables.inputs import (
    EPOCH_METRICS,
    PAPER_TEST_ACCURACY,
    RECORD_METRICS,
    TOLERANCE,
    Claim,
    Run,
    _accuracy_as_reported,
    _by_experiment,
    _complete,
    _epoch_values,
    _experiments,
    _failed_notes,
    _jpg_warnings,
    _selected_values,
    _used_runs,
    check_manifests,
)
from fracbench.tables.leak import _by_seed_diff, _leak_runs
from fracbench.tables.render import DASH, Table, _finite, _mean_sd, _num, _paper, _points, _split_value

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


