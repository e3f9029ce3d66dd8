"""The claims table: each number of the paper beside fracbench's and a verdict."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fracbench.claims.inflation import jpg_denominator_effect
from fracbench.claims.tables.claims import (
    LOSS_RELATIVE_TOLERANCE,
    MIN_TEST_GROUPS,
    Evidence,
    judge,
    scale_to_jpg_count,
    wilson_ci,
    with_budget,
)
from fracbench.claims.tables.effects import seed_effect
from fracbench.claims.tables.inputs import (
    EPOCH_METRICS,
    HEADLINE_TEST_CLAIM,
    RECORD_METRICS,
    Claim,
    Run,
    _accuracy_as_reported,
    _by_experiment,
    _complete,
    _experiments,
    _failed_notes,
    _jpg_warnings,
    _used_runs,
    budget,
    check_manifests,
    min_test_groups,
    paper_claim,
)
from fracbench.claims.tables.leak import _leak_runs, leak_effect
from fracbench.claims.tables.render import DASH, Table, _finite, _mean_sd, _num, _paper, _points, _split_value
from fracbench.training.experiments import Experiment

# --------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reproduced:
    """fracbench's evidence on one claim (for the verdict) and how its cells read."""

    evidence: Evidence = Evidence()
    cell: str = DASH
    majority: str = DASH
    balanced: str = DASH

    @property
    def value(self) -> float | None:
        return self.evidence.value


def _mean(values: Sequence[Any]) -> float | None:
    vals = _finite(values)
    return statistics.fmean(vals) if vals else None


def _n_images(r: Run, metric: str) -> int | None:
    """Images behind a rate of run ``r``: train count for train metrics, else the test count the protocol divides by."""
    counts = r.record.get("counts") or {}
    if metric.startswith("train"):
        n = counts.get("train")
    elif r.record.get("protocol") == "as_published" and metric in ("test_accuracy", "accuracy"):
        n = counts.get("test_denominator", counts.get("test"))
    else:
        n = counts.get("test")
    return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None


def _at_selected(r: Run, epoch: int | None) -> bool:
    """Whether the claim's epoch is the run's reported checkpoint (whose balanced accuracy the record holds)."""
    return epoch is None or int(r.record.get("selected_epoch", -1)) == epoch


def leaked_split(r: Run) -> bool:
    """Whether run ``r``'s test images have copies in its training images: record["leak"] counts test images
    with an exact or near copy in train, or source images whose copies cross the split (the leak demo's naive split)."""
    leak = r.record.get("leak") or {}
    return any(isinstance(leak.get(k), (int, float)) and leak[k] > 0
               for k in ("test_near_in_train", "test_exact_in_train", "sources_crossing_splits"))


def _artefacts(runs: Sequence[Run], at_reported_checkpoint: bool) -> tuple[str, ...]:
    """The evaluation artefacts behind the runs' number (see fracbench.claims.tables.claims.ARTEFACT_VERDICTS)."""
    out = []
    if any(leaked_split(r) for r in runs):
        out.append("leaked_split")
    if at_reported_checkpoint and any(str(r.record.get("selected_on", "")).startswith("test") for r in runs):
        out.append("test_selection")  # a number of the checkpoint the test set chose
    return tuple(out)


def _reproduce(claim: Claim, runs: Sequence[Run], exp: Experiment | None) -> _Reproduced:
    if not runs:
        return _Reproduced(Evidence(problem=f"{claim.experiment} was not run"))
    majority_values = [r.test.get("majority_accuracy") for r in runs]
    if claim.run is not None:
        seeds = list(exp.seeds) if exp else sorted(r.seed for r in runs)
        seed = seeds[claim.run] if claim.run < len(seeds) else None
        runs = [r for r in runs if r.seed == seed]
        if not runs:
            return _Reproduced(Evidence(problem=f"{claim.experiment} seed {seed} (row {claim.run}) was not run"))
    test_metric = not claim.metric.startswith("train")
    n_test = min((n for r in runs if (n := _n_images(r, "test")) is not None), default=None) if test_metric else None
    n_groups = min_test_groups(runs) if test_metric else None
    accuracy = claim.metric in ("accuracy", "test_accuracy")
    if claim.metric in EPOCH_METRICS:
        pairs = []  # (run, value)
        for r in runs:
            e = r.epoch(claim.epoch) if claim.epoch is not None else r.epoch(int(r.record.get("selected_epoch", -1)))
            if e is not None and _finite([e.get(claim.metric)]):
                pairs.append((r, float(e[claim.metric])))
        if not pairs:
            if claim.epoch is not None:
                ran = sorted({len(r.epochs) for r in runs})
                return _Reproduced(Evidence(problem=f"epoch {claim.epoch} of {claim.experiment} was not run or not "
                                                    f"logged (ran epochs 0..{ran[-1] - 1 if ran and ran[-1] else 0})"))
            return _Reproduced(Evidence(problem=f"{claim.metric} at the reported checkpoint was not logged"))
        values = [v for _, v in pairs]
        mean = statistics.fmean(values)
        if claim.metric.endswith("loss"):
            interval = (min(values), max(values)) if len(values) > 1 else None
            kind = "seed range"
        else:  # a proportion of a known number of images: Wilson interval per seed, envelope over seeds
            cis = [wilson_ci(v * n, n) for r, v in pairs if (n := _n_images(r, claim.metric))]
            interval = (min(c[0] for c in cis), max(c[1] for c in cis)) if len(cis) == len(pairs) else None
            kind = "95% Wilson CI"
        cell = _mean_sd(values)
        if interval:
            cell += f" [{_num(interval[0])}, {_num(interval[1])}]"
        at_sel = [r for r, _ in pairs if _at_selected(r, claim.epoch)]
        balanced = _mean([r.test.get("balanced_accuracy") for r in at_sel]) if len(at_sel) == len(pairs) else None
        majority = _mean(majority_values) if test_metric else None
        ev = Evidence(mean, interval, kind, n_test if test_metric else _n_images(pairs[0][0], claim.metric),
                      balanced if accuracy else None, majority, n_groups=n_groups,
                      artefacts=_artefacts([r for r, _ in pairs], claim.epoch is None))
        return _Reproduced(ev, cell, _split_value(majority_values) if test_metric else DASH,
                           _num(balanced) if accuracy and balanced is not None else DASH)
    if claim.metric in RECORD_METRICS:
        values, los, his, all_los, all_his = [], [], [], [], []
        for r in runs:
            v, ci = r.test.get(claim.metric), r.test.get(f"{claim.metric}_ci95")
            if isinstance(ci, (list, tuple)) and len(ci) == 2 and _finite(ci) == list(ci):
                all_los.append(float(ci[0]))  # over every test image, before any .jpg rescaling
                all_his.append(float(ci[1]))
            if claim.metric == "accuracy" and r.record.get("protocol") == "as_published":
                # as the tutorial counts: correct / number of .jpg files (the CI scaled alike)
                counts = r.record.get("counts") or {}
                v = _accuracy_as_reported(r)
                if isinstance(ci, (list, tuple)) and len(ci) == 2 and counts.get("test_denominator"):
                    ci = list(scale_to_jpg_count((ci[0], ci[1]), int(counts.get("test", 0)),
                                                 int(counts["test_denominator"])))
            if v is None or not _finite([v]):
                continue
            values.append(float(v))
            if isinstance(ci, (list, tuple)) and len(ci) == 2 and _finite(ci) == list(ci):
                los.append(float(ci[0]))
                his.append(float(ci[1]))
        if not values:
            return _Reproduced(Evidence(problem=f"{claim.metric} is undefined in {claim.experiment}'s records"))
        mean = statistics.fmean(values)
        interval = (min(los), max(his)) if los and len(los) == len(values) else None
        cell = _num(mean)
        if len(values) > 1:
            cell = _mean_sd(values)
        if interval:
            cell += f" [{_num(interval[0])}, {_num(interval[1])}]"
        balanced = _mean([r.test.get("balanced_accuracy") for r in runs])
        all_images = (min(all_los), max(all_his)) if all_los and len(all_los) == len(values) else None
        ev = Evidence(mean, interval, "95% bootstrap CI", n_test, balanced, _mean(majority_values), n_groups=n_groups,
                      all_images_interval=all_images if all_images != interval else None,
                      artefacts=_artefacts(runs, True))
        return _Reproduced(ev, cell, _split_value(majority_values) if accuracy else DASH,
                           _mean_sd([r.test.get("balanced_accuracy") for r in runs]) if accuracy else DASH)
    return _Reproduced(Evidence(problem=f"metric {claim.metric} has no counterpart in a record"))


def claims_table(runs: Sequence[Run], experiments: Any, claims: Sequence[Claim | Mapping[str, Any]]) -> Table:
    """Each claim of the paper beside fracbench's number and a verdict."""
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    by_exp = _by_experiment(runs)
    claims = [c if isinstance(c, Claim) else Claim(**c) for c in claims]
    wanted = sorted({c.experiment for c in claims if c.experiment})
    check_manifests(_used_runs(by_exp, [exps[n] for n in wanted if n in exps and exps[n].on_run_manifest]), "claims")
    columns = ["claim", "where", "quote", "paper", "fracbench", "fracbench balanced acc",
               "fracbench majority-class acc", "verdict", "reason"]
    rows = []
    counts: dict[str, dict[str, int]] = {}

    def count(category: str, verdict: str) -> None:
        counts.setdefault(category, {})
        counts[category][verdict] = counts[category].get(verdict, 0) + 1

    for c in claims:
        paper = str(int(c.value)) if c.metric == "count" else _paper(c.value)
        if c.kind == "protocol_effect":
            row = _effect_row(c, paper, exps, by_exp)
            count("protocol effect", row[7])
            rows.append(row)
            continue
        exp = exps.get(c.experiment) if c.experiment else None
        rs = by_exp.get(c.experiment, []) if c.experiment else []
        if c.experiment and exp is None:
            rep = _Reproduced(Evidence(problem=f"no experiment named {c.experiment} in baselines/"))
        elif c.experiment and c.kind != "dataset_fact":
            rep = _reproduce(c, rs, exp)
        else:
            rep = _Reproduced()
        datasets = ", ".join(sorted({str(r.record.get("dataset", "?")) for r in rs})) or "fracbench's dataset"
        ran = ""  # what ran, when it is not the paper's configuration
        if c.kind == "dataset_fact":
            category, verdict = "other", "not comparable"
            reason = "dataset_fact: a count of the paper's dataset, not a model result"
        elif c.kind == "citation":
            category, verdict = "other", "not comparable"
            reason = ("citation: quoted from another work" + (f"; fracbench's number is a stand-in on {datasets}"
                                                              if rep.value is not None else ""))
        else:
            v = judge(c.metric, float(c.value), replace(rep.evidence, budget=budget(rs, exp)))
            category, verdict, reason, ran = v.category, v.verdict, v.reason, v.budget
        count(category, verdict)
        shown = f"{verdict} on {datasets}" if verdict in ("not reproduced", "train fit differs") else verdict
        shown = with_budget(shown, ran)  # "... at a reduced budget (8/50 epochs, ...)" unless the paper's config
        rows.append([c.id, c.where, c.text, paper, rep.cell, rep.balanced, rep.majority, shown, reason])
    summary = "; ".join(f"{cat}: " + ", ".join(f"{n} {v}" for v, n in sorted(vs.items()))
                        for cat, vs in sorted(counts.items(), key=lambda kv: _CATEGORY_ORDER.index(kv[0])))
    n_train = sum(counts.get("train fit", {}).values())
    notes = [f"{len(claims)} claims ({summary}).",
             f"The {n_train} train-set fit claims (train loss, train accuracy) are counted apart: fitting the training "
             "set is no evidence about test performance, and a match there does not support the paper's test claim "
             f"({_paper(paper_claim(HEADLINE_TEST_CLAIM, claims).value)}).",
             "paper: the number as the paper states it (a fraction; counts as integers). fracbench: mean over the "
             "seeds present with its 95% interval [lo, hi]: for test-set metrics of the reported checkpoint the "
             "records' bootstrap interval, for a per-epoch rate the Wilson interval on the run's image count; over "
             "several seeds the envelope of the seeds' intervals. A per-epoch claim without an epoch is read at the "
             "reported checkpoint's epoch.",
             "reproduced (a rate): the paper's number lies inside that interval; an accuracy only with the same "
             "checkpoint's balanced accuracy and majority-class accuracy beside it. A loss: within "
             f"{LOSS_RELATIVE_TOLERANCE:.0%} of the paper's (relative). no evidence: fewer than {MIN_TEST_GROUPS} "
             "independent test groups (copies of one image count once), no interval, or an accuracy whose balanced accuracy is unknown. not comparable: a "
             "dataset fact, a number quoted from another work (fracbench's stand-in is shown for orientation only), "
             "or an experiment or epoch that was not run. reached only through the .jpg denominator / test-set "
             "selection / a leaked split: inside the interval only as the tutorial counts accuracy (correct / .jpg "
             "files; over every test image it is not), at a checkpoint chosen on the test set, or on a split whose "
             "test images have copies in train: never counted as reproduced.",
             "Accuracy of an as-published run is counted as the tutorial counts it (correct / number of .jpg test "
             "files; its interval scaled alike). Notes on the paper's inconsistencies are in baselines/claims.yaml."]
    if any(c.kind == "protocol_effect" for c in claims):
        notes.append("protocol effect: a habit of the paper's evaluation or data, measured by fracbench (the leak "
                     "and protocol tables): the fracbench column holds how many points it adds to an accuracy, or "
                     "what accuracy it produces, beside the paper's reported test accuracy.")
    notes += _leak_notes(runs, exps, claims)
    notes += _jpg_warnings(_used_runs(by_exp, [exps[n] for n in wanted if n in exps]))
    notes += _failed_notes(failed, wanted)
    return Table("claims", "Claims: every number in the paper, checked against fracbench", columns, rows, notes)


_CATEGORY_ORDER = ("test", "train fit", "protocol effect", "other")


def _leak_notes(runs: Sequence[Run], exps: Mapping[str, Experiment], claims: Sequence[Claim]) -> list[str]:
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
        out.append(text + f" (paper: {100 * paper_claim(HEADLINE_TEST_CLAIM, claims).value:.1f}%).")
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
            # the leak alone: the leak table's own cell (the one effect rule), never a bare difference
            reason += (f"; split by source image {_mean_sd([_accuracy_as_reported(r) for r in b])}; the leak alone "
                       f"(image-level − by source, as the leak table states it): {leak_effect(a, b, 'accuracy')}")
        return [*head, cell, _mean_sd([r.test.get("balanced_accuracy") for r in a]),
                _split_value([r.test.get("majority_accuracy") for r in a]), "protocol effect", reason]
    if c.effect == "jpg_denominator":
        # measured on each dataset's real test folder: correct/.jpg count minus correct/images
        pub = [r for rs_ in by_exp.values() for r in rs_
               if r.record.get("protocol") == "as_published" and jpg_denominator_effect(r.test) is not None]
        if not pub:
            return [*head, DASH, DASH, DASH, "not comparable", "no as-published record to measure it on"]
        per_ds: dict[str, list[float]] = {}
        for r in pub:
            per_ds.setdefault(str(r.record.get("dataset", "?")), []).append(jpg_denominator_effect(r.test) or 0.0)
        cell = "; ".join(f"{ds}: {_points([statistics.fmean(v)])}" for ds, v in sorted(per_ds.items()))
        reason = ("dividing by the number of .jpg test files instead of the number of images, on each dataset's real "
                  "test folder (protocol table; 0 where the .jpg count is the image count)")
        return [*head, cell, DASH, DASH, "protocol effect", reason]
    rs = [r for r in by_exp.get(exp.name, []) if isinstance(r.record.get("protocol_effects"), dict)]
    if not rs:
        return [*head, DASH, DASH, DASH, "not comparable", f"{exp.name} was not run"]
    vals = [r.record["protocol_effects"].get(c.effect) for r in rs]
    cell = seed_effect(vals, min_test_groups(rs)).cell()
    what = {"test_selection": "choosing the checkpoint on test accuracy instead of validation AUROC (both the data and "
                              "the criterion change; the protocol table shows them apart)",
            "test_time_flip": "the random flip at test time",
            "selection_and_flip": "the best flipped test accuracy over epochs (both habits together)"}[c.effect]
    reason = f"{what}: {cell} over {len(_finite(vals))} seed(s) (protocol table)"
    return [*head, cell, _mean_sd([r.test.get("balanced_accuracy") for r in rs]),
            _split_value([r.test.get("majority_accuracy") for r in rs]), "protocol effect", reason]


