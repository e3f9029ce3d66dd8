"""Claim anatomy: the same model on a published split, a grouped split and an external test set.

The multiregion release ships its own train/test split, in which exact and near copies of test images
sit in train ("published split"); fracbench also re-splits it so that no copy crosses train and test
("grouped split"), and tests the grouped-split model on FracAtlas images that are not in multiregion
("external"). Each such record carries ``record["leak"]`` with ``split`` in :data:`SPLITS`, the share of
test images with a copy in train and the nearest-train-neighbour similarity (see notes/schema.md).

Two tables come from these records:

- :func:`leak_splits_table`: per dataset, one row per (split, protocol) with test accuracy, balanced
  accuracy and AUROC and their 95% CIs beside the copy shares, then the differences between rows as
  effects with a 95% CI (or "no evidence").
- :func:`split_claims_table`: the claims table of the main dataset with, for every headline accuracy
  claim of the paper (``headline: true`` in baselines/claims.yaml), the multiregion accuracies and a
  verdict from :func:`fracbench.claims.tables.claims.judge_splits`.

Accuracy here is over every test image at the record's threshold (``metrics.test.accuracy`` and its
bootstrap CI): the tutorial's .jpg denominator is a separate effect (protocol table) and would mix in.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from fracbench.claims.tables.claims import Evidence, judge_splits
from fracbench.claims.tables.claims_table import claims_table
from fracbench.claims.tables.effects import Effect, independent_effect
from fracbench.claims.tables.inputs import Claim, Run, _complete, _experiments, budget, min_test_groups
from fracbench.claims.tables.paired import accuracy_balance_note, one_seed_effect
from fracbench.claims.tables.render import DASH, Table, _ci_cell, _finite, _num, _split_value
from fracbench.training.experiments import Experiment

__all__ = ["ANATOMY_DATASET", "SPLITS", "SPLIT_ROWS", "is_split_run", "leak_splits_table", "split_claims_table",
           "split_evidence"]

SPLITS = ("published", "grouped", "external")
ANATOMY_DATASET = "multiregion"  # the dataset whose release ships a leaky split (schema.md)
# (split, protocol, experiment) in table order
SPLIT_ROWS: tuple[tuple[str, str, str], ...] = (
    ("published", "as_published", "multiregion_published_as_published"),
    ("published", "honest", "multiregion_published_honest"),
    ("grouped", "as_published", "multiregion_grouped_as_published"),
    ("grouped", "honest", "multiregion_grouped_honest"),
    ("external", "honest", "multiregion_external"),
)
_SPLIT_TITLE = {"published": "published split (the release's own)", "grouped": "grouped split (no copy across "
                "train/test)", "external": "external test (FracAtlas minus overlap)"}
# (label, row a, row b): effects shown as a - b
_CONTRASTS = (
    ("published − grouped (as published): what the copies add", ("published", "as_published"),
     ("grouped", "as_published")),
    ("published − grouped (honest): what the copies add", ("published", "honest"), ("grouped", "honest")),
    ("grouped − external (honest): the drop on another hospital's images", ("grouped", "honest"),
     ("external", "honest")),
)
_METRICS = ("accuracy", "balanced_accuracy", "auroc")


def is_split_run(r: Run) -> bool:
    """A record of the claim-anatomy experiments: record["leak"]["split"] in SPLITS with the copy counts of
    that schema. The synthetic leak demonstration's records also say split "grouped" but count copies
    differently (test_images_with_a_copy_in_train); they stay in the leak table."""
    leak = r.record.get("leak")
    return isinstance(leak, dict) and leak.get("split") in SPLITS and "test_exact_in_train" in leak


def _split_runs(runs: Sequence[Run], split: str, protocol: str) -> list[Run]:
    return sorted((r for r in runs if is_split_run(r) and r.record["leak"]["split"] == split
                   and r.record.get("protocol") == protocol), key=lambda r: (r.experiment, r.seed))


def _interval(runs: Sequence[Run], metric: str) -> tuple[float | None, tuple[float, float] | None]:
    """Mean over seeds and the envelope of the seeds' 95% CIs (as the other tables show them)."""
    points = _finite(r.test.get(metric) for r in runs)
    if not points:
        return None, None
    cis = [r.test.get(f"{metric}_ci95") for r in runs]
    ok = [c for c in cis if isinstance(c, (list, tuple)) and len(c) == 2 and len(_finite(c)) == 2]
    if len(ok) != len(runs):
        return statistics.fmean(points), None
    return statistics.fmean(points), (min(float(c[0]) for c in ok), max(float(c[1]) for c in ok))


def _n_images(runs: Sequence[Run]) -> int | None:
    ns = [int(n) for r in runs if isinstance(n := (r.record.get("counts") or {}).get("test",
                                                   (r.record.get("leak") or {}).get("test_images")), (int, float))]
    return min(ns) if ns else None


def _n_test(runs: Sequence[Run]) -> int | None:
    """The fewest independent test groups over the runs (copies of one image count once)."""
    return min_test_groups(runs) if runs else None


def split_evidence(runs: Sequence[Run], name: str, exp: Experiment | None = None) -> Evidence:
    """Test accuracy of one split's runs as claim evidence (mean, CI envelope, images, balanced, majority);
    with ``exp`` (the runs' experiment) its budget when the runs are not the paper's configuration."""
    if not runs:
        return Evidence(problem=f"{name} not run")
    value, interval = _interval(runs, "accuracy")
    if value is None:
        return Evidence(problem=f"accuracy undefined in {name}'s records")
    bal = _finite(r.test.get("balanced_accuracy") for r in runs)
    maj = _finite(r.test.get("majority_accuracy") for r in runs)
    return Evidence(value, interval, "95% bootstrap CI", _n_images(runs), statistics.fmean(bal) if bal else None,
                    statistics.fmean(maj) if maj else None, n_groups=_n_test(runs), budget=budget(runs, exp))


# --------------------------------------------------------------------------------------------
# Leak across splits
# --------------------------------------------------------------------------------------------


def _copies(infos: Sequence[Mapping[str, Any]], key: str) -> str:
    cells = sorted({f"{int(i.get(key, 0))} ({100 * float(i.get(key + '_share', 0.0)):.1f}%)" for i in infos
                    if isinstance(i.get(key), (int, float))})
    return ", ".join(cells) or DASH


def _effect(a: Sequence[Run], b: Sequence[Run], metric: str) -> str:
    """a - b under the one effect rule: a joint cluster bootstrap where one run per arm shares test images,
    else independent estimates; no accuracy difference between test sets of different class balance."""
    va, ca = _interval(a, metric)
    vb, cb = _interval(b, metric)
    if va is None or vb is None:
        return DASH
    if metric == "accuracy" and (why := accuracy_balance_note(a, b)):
        return why
    n = min((n for n in (_n_test(a), _n_test(b)) if n is not None), default=None)

    def independent() -> Effect:
        return independent_effect(va, ca, vb, cb, n)

    if len(a) == 1 and len(b) == 1:
        return one_seed_effect(a[0], b[0], metric, n, independent).cell()
    return independent().cell()


ONLY_IN_VAL = "without a copy in train, with one in val"  # a part of "without a copy in train"


def copy_subsets(r: Run) -> dict[str, dict[str, Any]] | None:
    """Accuracy of one record on its test images that have an exact or near copy in train, on the rest, and on
    the part of the rest whose copies are in val (``ONLY_IN_VAL``).

    Which test images have a copy comes from the record's own manifest (results/<ds>/manifests/*.csv,
    found by its fingerprint): a test row whose duplicate group also has train rows. Scores come from
    the record's predictions.csv at the record's threshold, so the numbers recompute from committed files.
    None when the manifest or the predictions are not there.
    """
    from fracbench import metrics as M
    from fracbench import results as R

    rows = R.manifest_rows(r.dir, r.record.get("manifest_sha256"))
    if rows is None or not (r.dir / R.PREDICTIONS).exists():
        return None
    train_groups = {row["group"] for row in rows if row["split"] == "train"}
    val_groups = {row["group"] for row in rows if row["split"] == "val"}
    copied = {row["id"] for row in rows if row["split"] == "test" and row["group"] in train_groups}
    # a validation set carved out of a release's train folder takes some test images' only copies with it:
    # in the release (and a plain pipeline trained on the whole folder) those had a copy in train
    in_val = {row["id"] for row in rows if row["split"] == "test" and row["group"] not in train_groups
              and row["group"] in val_groups}
    group_of = {row["id"]: row["group"] for row in rows}
    threshold = float(r.record.get("threshold", 0.5))
    out: dict[str, dict[str, Any]] = {}
    preds = [p for p in R.read_predictions(r.dir) if p["split"] == "test"]
    for name, keep in (("with a copy in train", lambda i: i in copied),
                       ("without a copy in train", lambda i: i not in copied),
                       (ONLY_IN_VAL, lambda i: i in in_val)):
        sub = [p for p in preds if keep(p["id"])]
        correct = sum(int(p["score"] >= threshold) == p["label"] for p in sub)
        per_class = [[int(p["score"] >= threshold) == p["label"] for p in sub if p["label"] == c] for c in (0, 1)]
        pos = sum(p["label"] for p in sub)
        # copies are not independent: the interval resamples duplicate groups (cluster bootstrap), not images
        ci = (M.bootstrap_ci([p["label"] for p in sub], [p["score"] for p in sub], "accuracy", threshold,
                             groups=[group_of.get(p["id"], p["id"]) for p in sub]) if sub else None)
        out[name] = {"n": len(sub), "groups": len({group_of.get(p["id"], p["id"]) for p in sub}), "correct": correct,
                     "accuracy": correct / len(sub) if sub else None,
                     "accuracy_ci95": tuple(float(x) for x in ci) if ci is not None else None,
                     "balanced_accuracy": (sum(sum(k) / len(k) for k in per_class) / 2
                                           if all(per_class) else None),
                     "majority_accuracy": max(pos, len(sub) - pos) / len(sub) if sub else None}
    return out


def copies_evidence(runs: Sequence[Run], exp: Experiment | None = None) -> Evidence | None:
    """The published split's accuracy on its test images with a copy in train, as claim evidence (one seed:
    its cluster-bootstrap CI over duplicate groups; several: the mean and the envelope); None when it cannot be
    recomputed."""
    subs = [copy_subsets(r) for r in runs]
    if not runs or any(s is None for s in subs):
        return None
    cells = [s["with a copy in train"] for s in subs]
    if any(c["accuracy"] is None for c in cells):
        return None
    bal = [c["balanced_accuracy"] for c in cells]
    return Evidence(statistics.fmean(c["accuracy"] for c in cells),
                    (min(c["accuracy_ci95"][0] for c in cells), max(c["accuracy_ci95"][1] for c in cells)),
                    "95% cluster-bootstrap CI (by copy group)", min(c["n"] for c in cells),
                    statistics.fmean(bal) if all(b is not None for b in bal) else None,
                    statistics.fmean(c["majority_accuracy"] for c in cells), n_groups=min(c["groups"] for c in cells),
                    budget=budget(runs, exp))


def _subset_rows(label: str, protocol: str, rs: Sequence[Run], n_columns: int) -> list[list[str]]:
    """Rows under a published-split row: its accuracy on test images with and without a copy in train."""
    subsets = [copy_subsets(r) for r in rs]
    if not rs or any(s is None for s in subsets):
        return []
    out = []
    for name in ("with a copy in train", "without a copy in train", ONLY_IN_VAL):
        if name == ONLY_IN_VAL and not any(s[name]["n"] for s in subsets):
            continue
        cells = []
        for s in subsets:
            c = s[name]
            if c["accuracy"] is None:
                cells.append("no test images")
            else:
                lo, hi = c["accuracy_ci95"]
                cells.append(f"{c['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]" + (" (no evidence: fewer than 100 test groups)"
                                                                          if c["groups"] < 100 else ""))
        shown = ("    of which with a copy in val (carved out of the release's train folder, so a copy in train "
                 "before the carve)" if name == ONLY_IN_VAL else f"  published split, test images {name}")
        row = [label, shown, protocol.replace("_", " "), DASH,
               ", ".join(str(r.seed) for r in rs), ", ".join(str(s[name]["n"]) for s in subsets), DASH, DASH, DASH,
               "; ".join(cells)]
        out.append(row + [DASH] * (n_columns - len(row)))
    return out


def leak_splits_table(runs_by_dataset: Mapping[str, Sequence[Run]], *, expect: Sequence[str] = ()) -> Table:
    """Per dataset: published vs grouped split vs external test, with copy shares and effects.

    ``runs_by_dataset``: a label (the results folder's dataset) -> its runs; only records with a split
    (:func:`is_split_run`) are used. Datasets in ``expect`` get their rows even with no record ("not run").
    """
    columns = ["dataset", "split", "protocol", "experiment", "seeds", "test images",
               "test images with an exact copy in train", "test images with an exact or near copy in train",
               "nearest-train-neighbour similarity (median)", "fracbench test accuracy [95% CI]",
               "fracbench balanced accuracy [95% CI]", "fracbench AUROC [95% CI]", "fracbench majority-class acc"]
    rows: list[list[str]] = []
    notes: list[str] = []
    labels = sorted({*expect, *(k for k, rs in runs_by_dataset.items() if any(is_split_run(r) for r in rs))})
    for label in labels:
        done, failed = _complete(runs_by_dataset.get(label, []))
        groups = {(s, p): _split_runs(done, s, p) for s, p, _ in SPLIT_ROWS}
        for split, protocol, name in SPLIT_ROWS:
            rs = groups[(split, protocol)]
            exp = ", ".join(sorted({r.experiment for r in rs})) or name
            if not rs:
                state = "failed" if any(r.experiment == name for r in failed) else "not run"
                rows.append([label, _SPLIT_TITLE[split], protocol.replace("_", " "), exp, "none",
                             *[DASH] * 4, state, state, state, state])
                continue
            infos = [r.record["leak"] for r in rs]
            sims = [(i.get("nn_similarity") or {}).get("median") for i in infos]
            ns = sorted({str(i.get("test_images", (r.record.get("counts") or {}).get("test", "?")))
                         for i, r in zip(infos, rs, strict=True)})
            rows.append([label, _SPLIT_TITLE[split], protocol.replace("_", " "), exp,
                         ", ".join(str(r.seed) for r in rs), ", ".join(ns),
                         _copies(infos, "test_exact_in_train"), _copies(infos, "test_near_in_train"),
                         _split_value(sims, 3), *(_ci_cell(rs, m) for m in _METRICS),
                         _split_value([r.test.get("majority_accuracy") for r in rs], 3)])
            if split == "published":
                rows += _subset_rows(label, protocol, rs, len(columns))
            ext = next((r.record.get("external") for r in rs if isinstance(r.record.get("external"), dict)), None)
            if ext:
                notes.append(f"{label}, {name}: test images from {ext.get('dataset', '?')} (manifest "
                             f"{str(ext.get('manifest_sha256', '?'))[:16]}), {ext.get('excluded_overlap', '?')} "
                             f"images left out because they also occur in {label}.")
        for title, a, b in _CONTRASTS:
            ra, rb = groups[a], groups[b]
            rows.append([label, title, DASH, DASH, DASH, DASH, DASH, DASH, DASH,
                         *(_effect(ra, rb, m) if ra and rb else "not run" for m in _METRICS), DASH])
    notes = ["Rows: the same model (the paper's CNN) trained and tested on the release's own split (copies of test "
             "images sit in train), on a re-split where no exact or near-duplicate group crosses train/val/test, and, "
             "trained on the grouped split, tested on FracAtlas images that are not in the release (external).",
             "Copy shares: test images with an exact copy (file or pixel hash) in train, and with an exact or near "
             "copy (a superset); nearest-train-neighbour similarity: median over test images of the similarity to "
             "their closest train image.",
             "Accuracy: over every test image at the record's threshold (as published: 0.5 with the checkpoint "
             "chosen on test; honest: the validation threshold, checkpoint chosen on validation AUROC); the "
             "tutorial's .jpg denominator is left out here (protocol table). Several seeds: mean over seeds with "
             "the envelope of the seeds' 95% bootstrap CIs.",
             "Indented rows: the published-split record's accuracy on its test images that have an exact or near copy "
             "in train and on those that do not (from the record's manifest and predictions.csv at its threshold; "
             "95% cluster-bootstrap CI over duplicate groups). A test set made of copies scores what the first row "
             "scores.",
             "Differences (a − b, in points), one effect rule: one seed per row and test sets that share images: "
             "a joint bootstrap over duplicate groups (the same groups drawn for both rows, the difference taken "
             "per resample); otherwise the difference of the two independent estimates with a "
             "normal-approximation 95% CI, each standard error read off its row's 95% CI as (hi − lo) / 3.92. "
             "No accuracy difference where the rows' fractured shares differ by more than 0.05 (see AUROC). 'no "
             "evidence' when that CI includes zero or a test set has fewer than 100 independent groups.",
             "All 95% CIs resample duplicate groups (cluster bootstrap): copies of one image count once."] + notes
    if not labels:
        notes.append("No record with a published, grouped or external split in these results (the multiregion_* "
                     "experiments write them).")
    failed_all = [r for rs in runs_by_dataset.values() for r in _complete(rs)[1] if r.experiment in
                  {n for _, _, n in SPLIT_ROWS}]
    notes += [f"{r.experiment} seed {r.seed} {r.record.get('status')}: {str(r.record.get('error', ''))[:120]} "
              "(not shown; rerun it)." for r in failed_all]
    return Table("leak_splits", "Leak across splits: published split vs grouped split vs external test (fracbench)",
                 columns, rows, notes)


# --------------------------------------------------------------------------------------------
# Claims beside the multiregion splits
# --------------------------------------------------------------------------------------------

# (column label, split, protocol) of the multiregion accuracies beside each headline claim
_CLAIM_SPLITS = (("published split, as published", "published", "as_published"),
                 ("grouped split, as published", "grouped", "as_published"),
                 ("grouped split, honest", "grouped", "honest"))


def _evidence_cell(ev: Evidence) -> str:
    if ev.value is None:
        return "not run" if ev.problem.endswith("not run") else ev.problem or "not run"
    if ev.interval is None:
        return _num(ev.value)
    return f"{_num(ev.value)} [{_num(ev.interval[0])}, {_num(ev.interval[1])}]"


def split_claims_table(runs: Sequence[Run], split_runs: Sequence[Run], experiments: Any,
                       claims: Sequence[Claim], *, dataset: str = "") -> Table:
    """The claims table of ``runs`` (the main dataset) with the multiregion columns and verdict added.

    ``split_runs``: records of the claim-anatomy experiments (others are ignored); none gives "not run"
    cells. Only headline accuracy claims (``Claim.headline``) get multiregion values; other rows read "—".
    """
    base = claims_table(runs, experiments, claims)
    done, failed = _complete(split_runs)
    by_split = {(s, p): _split_runs(done, s, p) for _, s, p in _CLAIM_SPLITS}
    names = {(s, p): n for s, p, n in SPLIT_ROWS}
    exps = _experiments(experiments)
    evidence = [(label, split_evidence(by_split[(s, p)], names[(s, p)], exps.get(names[(s, p)])))
                for label, s, p in _CLAIM_SPLITS]
    copies = copies_evidence(by_split[("published", "as_published")], exps.get(names[("published", "as_published")]))
    where = f" on {dataset}" if dataset else ""
    columns = [f"{c}{where}" if c.startswith("fracbench") else c for c in base.columns]
    columns[columns.index("verdict")] = f"verdict{where}"
    columns[columns.index("reason")] = f"reason{where}"
    columns += [f"{ANATOMY_DATASET} {label}: test acc [95% CI]" for label, _ in evidence]
    columns += [f"verdict across {ANATOMY_DATASET} splits", f"reason across {ANATOMY_DATASET} splits"]
    headline = {c.id: c for c in claims if c.headline}
    rows = []
    counts: dict[str, int] = {}
    for row in base.rows:
        c = headline.get(row[0])
        if c is None:
            rows.append([*row, DASH, DASH, DASH, DASH, DASH])
            continue
        v = judge_splits(float(c.value), evidence[0][1], evidence[1:], copies)
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
        rows.append([*row, *(_evidence_cell(ev) for _, ev in evidence), v.shown, v.reason])
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    notes = [*base.footnotes,
             f"{ANATOMY_DATASET} columns ({len(headline)} headline accuracy claims: {summary or 'none'}): test "
             "accuracy over every test image with its 95% bootstrap CI, of the paper's CNN on the release's own "
             "split (copies of test images in train) and on a grouped re-split (no copy across train/test); see "
             "the leak_splits table. A split reaches a claim when the paper's value lies inside its CI or below "
             "it (the split does at least as well), with at least 100 test images and its balanced and "
             "majority-class accuracy known.",
             "reached only with train/test copies: the published split reaches it and no grouped split does; "
             "reached without copies: a grouped split reaches it; reached on the published split (without copies: "
             "no evidence): the published split reaches it and no grouped split run can say whether it needs the "
             "copies (too few independent groups); reached only on test images with a copy in "
             "train: no whole split does, but the published split's test images that have a copy in train do "
             "(cluster-bootstrap CI; leak_splits table); not reached on any split: none that ran does; "
             "no evidence: the published split has too few images or no interval; not run: the "
             "published split was not run.",
             "at a reduced budget (...): the records behind the verdict are not the paper's configuration (its "
             "epochs, image size and seeds, baselines/*.yaml); the clause says what ran, and a longer run may "
             "reach what this one did not."]
    notes += [f"{r.experiment} seed {r.seed} {r.record.get('status')}: {str(r.record.get('error', ''))[:120]} "
              "(not shown; rerun it)." for r in failed if is_split_run(r) or r.experiment in names.values()]
    title = f"Claims: every number in the paper, checked against fracbench{where} and the {ANATOMY_DATASET} splits"
    return replace(base, title=title, columns=columns, rows=rows, footnotes=notes)
