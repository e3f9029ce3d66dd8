"""Claim anatomy tables (fracbench.claims.tables.splits): published vs grouped split vs external test, the claims
table with the multiregion splits beside each headline accuracy claim, several results folders, the report.

Records are written with fracbench.results' writers (record.json + predictions.csv) into tmp folders; the
expected numbers are recomputed here from predictions.csv and the records' intervals, not copied from a run.
"""

from __future__ import annotations

import csv
import io
import math
import re
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_tables import fake_run

from fracbench import results as R
from fracbench.claims.report import write_report, write_reports
from fracbench.claims.tables import load_claims, load_runs, write_cross_tables
from fracbench.claims.tables.claims import (
    MIN_TEST_GROUPS,
    SPLIT_VERDICTS,
    Evidence,
    judge,
    judge_splits,
    reaches,
)
from fracbench.claims.tables.effects import independent_effect
from fracbench.claims.tables.splits import SPLIT_ROWS
from fracbench.cli import main
from fracbench.metrics import metrics_with_ci

HEADLINE = "experiment_test_accuracy"  # "the test Accuracy was 0.998" (claims.yaml, headline: true)


CPU_BUDGET = "8/50 epochs, 96 px (paper 150), 1/5 seeds"  # the multiregion_* cpu profile (baselines/*.yaml)


def split_run(results: Path, experiment: str, split: str, protocol: str, accuracy: float, *, n: int = 300,
              exact: int = 0, near: int = 0, sim: float = 0.5, seed: int = 0, threshold: float = 0.5,
              config: dict[str, Any] | None = None, profile: str = "cpu") -> Path:
    """A claim-anatomy record whose predictions have the given accuracy (labels half and half)."""
    rng = np.random.default_rng(zlib.crc32(f"{experiment}/{seed}".encode()))
    y = np.array([i % 2 for i in range(n)])
    correct = np.arange(n) < round(accuracy * n)
    u = rng.uniform(0.0, 0.45, n)
    # a correct call lands on the label's side of the threshold, a wrong one on the other side
    score = np.where(correct == (y == 1), threshold + 0.01 + u, threshold - 0.01 - u).clip(0, 1)
    d = R.run_dir(results, experiment, seed)
    # each split its own test images (the two protocols of one split share them)
    R.write_predictions(d, [(f"img{i}" if split == "published" else f"{split}-img{i}", "test", int(y[i]), float(score[i])) for i in range(n)])
    metrics = metrics_with_ci(y, score, threshold, n_boot=300, seed=0)
    leak: dict[str, Any] = {"split": split, "split_title": split, "test_images": n,
                            "test_exact_in_train": exact, "test_exact_in_train_share": exact / n,
                            "test_near_in_train": near, "test_near_in_train_share": near / n,
                            "nn_similarity": {"median": sim, "p90": min(1.0, sim + 0.1), "share_above_threshold": 0.1}}
    rec: dict[str, Any] = {"experiment": experiment, "model": "paper_cnn", "protocol": protocol,
                           "dataset": "multiregion", "manifest_sha256": split[0] * 64, "seed": seed,
                           "status": "complete", "profile": profile, "threshold": threshold,
                           "metrics": {"test": metrics}, "counts": {"train": 900, "val": 100, "test": n},
                           "leak": leak}
    # as the committed records of the earlier cpu profile say it (8 of 50 epochs at 96 px, 1 seed)
    rec["epochs_run"] = 8
    rec["profile_changes"] = {"epochs": 8, "image_size": 96, "seeds": [0]}
    if config is not None:
        rec["config"] = config
        rec["epochs_run"] = config["epochs"]
        rec["profile_changes"] = {} if profile == "full" else {"epochs": config["epochs"],
                                                                "image_size": config["image_size"]}
    if split == "external":
        rec["external"] = {"dataset": "fracatlas", "manifest_sha256": "e" * 64, "excluded_overlap": 7}
    R.write_record(d, rec)
    return d


def fracatlas(results: Path) -> Path:
    fake_run(results, "paper_cnn_as_published", 0, "as_published", train_loss=[0.7, 0.5, 0.3],
             test_accuracy=[0.6, 0.7, 0.8], final_accuracy=0.8, dataset="fracatlas")
    # a synthetic leak-demonstration record: its leak info also says split "grouped", in the older schema
    d = R.run_dir(results, "leak_demo__grouped_honest", 0)
    rec = {"experiment": "leak_demo__grouped_honest", "protocol": "honest", "dataset": "fracatlas+4copies",
           "manifest_sha256": "c" * 64, "seed": 0, "status": "complete", "profile": "cpu",
           "metrics": {"test": {"accuracy": 0.5, "accuracy_ci95": [0.4, 0.6], "balanced_accuracy": 0.5,
                                "majority_accuracy": 0.5}}, "counts": {"test": 200},
           "leak": {"split": "grouped", "variant": "grouped", "copies": ["rot90"], "test_images": 200,
                    "test_images_with_a_copy_in_train": 0, "test_share_with_a_copy_in_train": 0.0}}
    R.write_record(d, rec)
    return results


def multiregion(results: Path, published: float = 1.0, grouped_pub: float = 0.8, grouped_honest: float = 0.78,
                external: float = 0.6) -> Path:
    accs = {"multiregion_published_as_published": published, "multiregion_published_honest": published - 0.01,
            "multiregion_grouped_as_published": grouped_pub, "multiregion_grouped_honest": grouped_honest,
            "multiregion_external": external}
    for split, protocol, name in SPLIT_ROWS:
        copies = split == "published"
        split_run(results, name, split, protocol, accs[name], n=400 if split == "external" else 300,
                  exact=30 if copies else 0, near=45 if copies else 0, sim=0.97 if copies else 0.61)
    return results


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    return fracatlas(tmp_path / "results" / "fracatlas"), multiregion(tmp_path / "results" / "multiregion")


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _claim_row(out: Path, claim: str = HEADLINE) -> dict[str, str]:
    return next(r for r in _csv(out / "claims.csv") if r["claim"] == claim)


# --------------------------------------------------------------------------------------------
# Pure rules
# --------------------------------------------------------------------------------------------


def _ev(value: float, lo: float, hi: float, n: int = 500) -> Evidence:
    return Evidence(value, (lo, hi), "95% bootstrap CI", n, balanced=value, majority=0.5)


def test_judge_splits_three_cases() -> None:
    paper = 0.998
    leaky, honest = _ev(0.999, 0.997, 1.0), _ev(0.80, 0.76, 0.84)
    v = judge_splits(paper, leaky, [("grouped split, honest", honest)])
    assert v.verdict == "reached only with train/test copies"
    v = judge_splits(paper, _ev(0.95, 0.93, 0.97), [("grouped split, honest", honest)])
    assert v.verdict == "not reached on any split"
    v = judge_splits(paper, leaky, [("grouped split, as published", honest), ("grouped split, honest", leaky)])
    assert v.verdict == "reached without copies" and "grouped split, honest reaches it" in v.reason
    assert {"reached only with train/test copies", "reached without copies",
            "not reached on any split"} <= set(SPLIT_VERDICTS)


def test_judge_splits_on_the_test_images_that_have_a_copy_in_train() -> None:
    paper = 0.998
    whole, honest = _ev(0.91, 0.88, 0.93), _ev(0.72, 0.69, 0.74)
    v = judge_splits(paper, whole, [("grouped split, honest", honest)], copies=_ev(0.999, 0.99, 1.0, n=400))
    assert v.verdict == "reached only on test images with a copy in train"
    assert "test images with a copy in train 0.9990" in v.reason
    # copies that fall short leave the verdict as it was, with their number in the reason
    v = judge_splits(paper, whole, [("grouped split, honest", honest)], copies=_ev(0.988, 0.971, 0.995, n=400))
    assert v.verdict == "not reached on any split" and "0.9880 [0.9710, 0.9950]" in v.reason
    # too few copied test images say nothing
    v = judge_splits(paper, whole, [("grouped split, honest", honest)], copies=_ev(1.0, 0.99, 1.0, n=40))
    assert v.verdict == "not reached on any split"
    # a grouped split that reaches it wins over the copies
    v = judge_splits(paper, whole, [("grouped split, honest", _ev(0.999, 0.997, 1.0))],
                     copies=_ev(1.0, 0.99, 1.0, n=400))
    assert v.verdict == "reached without copies"


def test_a_verdict_at_a_reduced_budget_says_what_ran() -> None:
    paper = 0.998
    budget = "8/50 epochs, 96 px (paper 150), 1/5 seeds"
    short = replace(_ev(0.95, 0.93, 0.97), budget=budget)
    v = judge_splits(paper, short, [("grouped split, honest", replace(_ev(0.80, 0.76, 0.84), budget=budget))])
    assert v.verdict == "not reached on any split"  # the category, counted as before
    # a short run that does not reach the claim says nothing about the paper's configuration: never "not reached"
    assert v.shown == f"undecided at a reduced budget ({budget}): the paper's configuration not run"
    assert "not reached" not in v.shown
    # the paper's configuration: the verdict alone
    v = judge_splits(paper, _ev(0.95, 0.93, 0.97), [("grouped split, honest", _ev(0.80, 0.76, 0.84))])
    assert v.shown == "not reached on any split"
    # the per-dataset rule carries it too; a verdict that judges nothing does not
    assert judge("accuracy", 0.998, replace(_ev(0.80, 0.76, 0.84), budget=budget)).shown == \
        f"undecided at a reduced budget ({budget}): the paper's configuration not run"
    # a short run that does reach a claim shows it can be reached: the verdict stands, with its budget
    reached = judge_splits(paper, replace(_ev(0.998, 0.99, 1.0), budget=budget),
                           [("grouped split, honest", replace(_ev(0.80, 0.76, 0.84), budget=budget))])
    assert reached.shown == f"reached only with train/test copies at a reduced budget ({budget})"
    assert judge("accuracy", 0.998, Evidence(problem="not run", budget=budget)).shown == "not comparable"
    # the paper's epochs and size with fewer seeds than the full profile is the paper's configuration (the paper
    # reports one run): the verdict stands, and says how many seeds
    assert judge("accuracy", 0.998, replace(_ev(0.80, 0.76, 0.84), budget="1/5 seeds")).shown == \
        "not reproduced (the paper's configuration, 1/5 seeds)"
    from fracbench.claims.tables.claims import with_budget
    assert with_budget("not reproduced on fracatlas", "1/5 seeds") == \
        "not reproduced on fracatlas (the paper's configuration, 1/5 seeds)"


def test_a_split_verdict_names_each_splits_budget() -> None:
    """The published split at the paper's configuration with 3 seeds, the grouped one with 1: the paper's
    configuration, each split's seeds said; a grouped split at a shortened budget makes it a reduced one."""
    paper = 0.998
    whole, honest = replace(_ev(0.91, 0.88, 0.93), budget="3/5 seeds"), _ev(0.72, 0.69, 0.74)
    copies = replace(_ev(0.999, 0.99, 1.0, n=400), budget="3/5 seeds")
    v = judge_splits(paper, whole, [("grouped split, honest", replace(honest, budget="1/5 seeds"))], copies=copies)
    assert v.shown == ("reached only on test images with a copy in train (the paper's configuration, "
                       "published split: 3/5 seeds; grouped split, honest: 1/5 seeds)")
    short = "8/50 epochs, 96 px (paper 150), 1/5 seeds"
    v = judge_splits(paper, whole, [("grouped split, honest", replace(honest, budget=short))], copies=copies)
    assert v.shown == ("reached only on test images with a copy in train at a reduced budget (published split: "
                       f"3/5 seeds; grouped split, honest: {short})")
    # a negative verdict with one split short is undecided
    v = judge_splits(paper, whole, [("grouped split, honest", replace(honest, budget=short))])
    assert v.shown.startswith("undecided at a reduced budget (published split: 3/5 seeds; grouped split, honest:")
    # every split with the same budget: said once
    v = judge_splits(paper, whole, [("grouped split, honest", replace(honest, budget="3/5 seeds"))])
    assert v.shown == "not reached on any split (the paper's configuration, 3/5 seeds)"


def _mixed_budget_tree(tmp_path: Path, config: dict[str, Any] | None, seeds: int) -> Path:
    fa = fracatlas(tmp_path / "results" / "fracatlas")
    mr = tmp_path / "results" / "multiregion"
    accs = {"published": 0.95, "grouped": 0.80, "external": 0.6}
    for seed in range(seeds):
        for split, protocol, name in SPLIT_ROWS:
            split_run(mr, name, split, protocol, accs[split], exact=30 if split == "published" else 0,
                      seed=seed, config=config, profile="full" if config and config["epochs"] == 50 else "cpu")
    write_cross_tables([fa, mr], tmp_path / "out")
    return tmp_path / "out"


def test_claims_table_states_the_budget_of_reduced_records(tmp_path: Path) -> None:
    """cpu-profile records never read "not reached" bare: the cell says the epochs, size and seeds that ran."""
    out = _mixed_budget_tree(tmp_path / "cpu", {"epochs": 8, "image_size": 96, "max_train_images": 0}, 1)
    verdict = _claim_row(out)["verdict across multiregion splits"]
    assert verdict == ("undecided at a reduced budget (8/50 epochs, 96 px (paper 150), 1/5 seeds): the paper's "
                       "configuration not run")
    md = (out / "claims.md").read_text(encoding="utf-8")
    assert "| not reached on any split |" not in md
    # the paper's configuration (50 epochs at 150 px, 5 seeds): the verdict alone
    out = _mixed_budget_tree(tmp_path / "full", {"epochs": 50, "image_size": 150, "max_train_images": 0}, 5)
    assert _claim_row(out)["verdict across multiregion splits"] == "not reached on any split"


def test_reaches_is_inside_or_below_the_interval() -> None:
    assert reaches(0.998, _ev(0.9995, 0.999, 1.0)) is True  # the run does better than the claim
    assert reaches(0.998, _ev(0.997, 0.996, 0.998)) is True  # the upper bound itself
    assert reaches(0.998, _ev(0.997, 0.996, 0.9979)) is False
    assert reaches(0.998, _ev(0.999, 0.99, 1.0, n=MIN_TEST_GROUPS - 1)) is None


def test_judge_splits_without_enough_evidence() -> None:
    paper, leaky = 0.998, _ev(0.999, 0.997, 1.0)
    assert judge_splits(paper, Evidence(problem="x not run"), []).verdict == "not run"
    small = _ev(0.5, 0.4, 0.6, n=MIN_TEST_GROUPS - 1)
    assert judge_splits(paper, small, [("g", leaky)]).verdict == "no evidence"
    # the published split reaches it but the grouped one cannot say: reached, copies not shown to be needed;
    # the reason says how much of the test set is copies
    v = judge_splits(paper, leaky, [("g", small)], copies=_ev(1.0, 0.99, 1.0, n=489))
    assert v.verdict == "reached on the published split (without copies: no evidence)"
    assert "(489 of its 500 test images, 97.8%, have an exact or near copy in train)" in v.reason
    assert judge_splits(paper, leaky, []).verdict == "reached on the published split (without copies: no evidence)"
    no_balanced = Evidence(0.999, (0.997, 1.0), "ci", 500, balanced=None, majority=0.5)
    assert judge_splits(paper, no_balanced, [("g", small)]).verdict == "no evidence"


def test_independent_effect_normal_approximation() -> None:
    # a: 0.90 [0.86, 0.94]; b: 0.70 [0.64, 0.76]; se = hypot(0.08, 0.12) / 3.92
    e = independent_effect(0.90, [0.86, 0.94], 0.70, [0.64, 0.76], 300)
    se = math.sqrt(0.08**2 + 0.12**2) / (2 * 1.959963984540054)
    assert e.evidence and e.ci == pytest.approx((0.2 - 1.959963984540054 * se, 0.2 + 1.959963984540054 * se))
    assert e.cell() == f"+20.00 points [95% CI {100 * e.ci[0]:+.2f}, {100 * e.ci[1]:+.2f}]"
    overlap = independent_effect(0.80, [0.70, 0.90], 0.75, [0.65, 0.85], 300)
    assert not overlap.evidence and overlap.cell().startswith("no evidence (the CI includes zero")
    assert independent_effect(0.9, [0.89, 0.91], 0.5, [0.49, 0.51], MIN_TEST_GROUPS - 1).cell().startswith(
        f"no evidence ({MIN_TEST_GROUPS - 1} test groups")
    assert not independent_effect(0.9, None, 0.5, [0.49, 0.51], 300).evidence


def test_headline_claims_are_marked_in_claims_yaml() -> None:
    heads = {c.id for c in load_claims() if c.headline}
    assert HEADLINE in heads and "intro_max_accuracy" in heads
    assert not any(i.startswith("table1_") for i in heads)  # Table 1's per-epoch rows are not headlines


def test_headline_on_a_non_accuracy_claim_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "claims.yaml"
    p.write_text("claims:\n  - {id: a, text: t, where: w, value: 0.5, metric: auroc, kind: model_result, "
                 "headline: true}\n")
    with pytest.raises(ValueError, match="headline"):
        load_claims(p)


# --------------------------------------------------------------------------------------------
# Rendered tables
# --------------------------------------------------------------------------------------------


def _accuracy_from_predictions(run_dir: Path, threshold: float = 0.5) -> float:
    with (run_dir / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return sum((float(r["score"]) >= threshold) == (r["label"] == "1") for r in rows) / len(rows)


def test_leak_splits_table_numbers(tree: tuple[Path, Path], tmp_path: Path) -> None:
    fa, mr = tree
    write_cross_tables([fa, mr], tmp_path / "out")
    rows = [r for r in _csv(tmp_path / "out" / "leak_splits.csv") if r["dataset"] == "multiregion"]
    by = {(r["split"].split()[0], r["protocol"]): r for r in rows if r["experiment"] != "—"}
    recs = {rn.experiment: rn for rn in load_runs(mr)}
    for split, protocol, name in SPLIT_ROWS:
        row, rec = by[(split, protocol.replace("_", " "))], recs[name]
        acc = _accuracy_from_predictions(rec.dir)
        lo, hi = rec.test["accuracy_ci95"]
        assert row["fracbench test accuracy [95% CI]"] == f"{acc:.3f} [{lo:.3f}, {hi:.3f}]"
        a_lo, a_hi = rec.test["auroc_ci95"]
        assert row["fracbench AUROC [95% CI]"] == f"{rec.test['auroc']:.3f} [{a_lo:.3f}, {a_hi:.3f}]"
        n = 400 if split == "external" else 300
        assert row["test images"] == str(n)
        exact, near = (30, 45) if split == "published" else (0, 0)
        assert row["test images with an exact copy in train"] == f"{exact} ({100 * exact / n:.1f}%)"
        assert row["test images with an exact or near copy in train"] == f"{near} ({100 * near / n:.1f}%)"
        assert row["nearest-train-neighbour similarity (median)"] == ("0.970" if split == "published" else "0.610")
    # published - grouped (as published): difference of independent estimates, normal-approximation CI
    a, b = recs["multiregion_published_as_published"].test, recs["multiregion_grouped_as_published"].test
    d = _accuracy_from_predictions(recs["multiregion_published_as_published"].dir) - \
        _accuracy_from_predictions(recs["multiregion_grouped_as_published"].dir)
    # se of each = its CI width / (2 * 1.96), so the difference's half-width 1.96 * se is hypot(widths) / 2
    half = math.hypot(a["accuracy_ci95"][1] - a["accuracy_ci95"][0], b["accuracy_ci95"][1] - b["accuracy_ci95"][0]) / 2
    effect = next(r for r in rows if r["split"].startswith("published − grouped (as published)"))
    assert d == pytest.approx(0.2)
    want = f"{100 * d:+.2f} points [95% CI {100 * (d - half):+.2f}, {100 * (d + half):+.2f}]"
    assert effect["fracbench test accuracy [95% CI]"] == want
    # grouped - external: 0.78 vs 0.60 on 300 and 400 images
    ext = next(r for r in rows if r["split"].startswith("grouped − external"))
    assert ext["fracbench test accuracy [95% CI]"].startswith("+18.00 points [95% CI")
    md = (tmp_path / "out" / "leak_splits.md").read_text()
    assert "normal-approximation 95% CI" in md and "joint bootstrap over duplicate groups" in md


def test_leak_splits_effect_without_evidence(tmp_path: Path) -> None:
    mr = tmp_path / "results" / "multiregion"
    multiregion(mr, published=0.80, grouped_pub=0.79)
    write_cross_tables([mr], tmp_path / "out")
    row = next(r for r in _csv(tmp_path / "out" / "leak_splits.csv")
               if r["split"].startswith("published − grouped (as published)"))
    assert row["fracbench test accuracy [95% CI]"].startswith("no evidence (the CI includes zero; measured +1.00")


@pytest.mark.parametrize(("published", "grouped_pub", "grouped_honest", "verdict"), [
    (1.0, 0.80, 0.78, "reached only with train/test copies"),
    (0.95, 0.80, 0.78, "not reached on any split"),
    (1.0, 0.80, 1.0, "reached without copies"),
])
def test_claims_table_verdict_across_splits(tmp_path: Path, published: float, grouped_pub: float,
                                            grouped_honest: float, verdict: str) -> None:
    fa = fracatlas(tmp_path / "results" / "fracatlas")
    mr = multiregion(tmp_path / "results" / "multiregion", published, grouped_pub, grouped_honest)
    write_cross_tables([fa, mr], tmp_path / "out")
    row = _claim_row(tmp_path / "out")
    # cpu-profile records (baselines: 8 of 50 epochs at 96 px, 1 of 5 seeds): the verdict says what ran
    shown = (f"undecided at a reduced budget ({CPU_BUDGET}): the paper's configuration not run"
             if verdict == "not reached on any split" else f"{verdict} at a reduced budget ({CPU_BUDGET})")
    assert row["verdict across multiregion splits"] == shown
    rec = {r.experiment: r for r in load_runs(mr)}["multiregion_published_as_published"]
    lo, hi = rec.test["accuracy_ci95"]
    acc = _accuracy_from_predictions(rec.dir)
    assert row["multiregion published split, as published: test acc [95% CI]"] == f"{acc:.4f} [{lo:.4f}, {hi:.4f}]"
    # the FracAtlas verdict stands beside it, from the FracAtlas records
    assert row["fracbench on fracatlas"].startswith("0.8000")
    # the leak demonstration's "grouped" record is not a grouped split of multiregion
    assert row["multiregion grouped split, honest: test acc [95% CI]"].startswith(f"{grouped_honest:.4f}")
    # a claim that is not a headline accuracy claim gets no multiregion verdict
    assert _claim_row(tmp_path / "out", "table1_epoch0_test_accuracy")["verdict across multiregion splits"] == "—"


def test_absent_multiregion_folder_reads_not_run(tmp_path: Path) -> None:
    fa = fracatlas(tmp_path / "results" / "fracatlas")
    paths = write_cross_tables([fa, tmp_path / "results" / "multiregion"])
    assert tmp_path / "results" / "tables" / "claims.md" in paths
    row = _claim_row(tmp_path / "results" / "tables")
    assert row["multiregion published split, as published: test acc [95% CI]"] == "not run"
    assert row["verdict across multiregion splits"] == "not run"
    rows = _csv(tmp_path / "results" / "tables" / "leak_splits.csv")
    assert [r["fracbench test accuracy [95% CI]"] for r in rows if r["dataset"] == "multiregion"] == ["not run"] * 8
    assert not [r for r in rows if r["dataset"] != "multiregion"]  # the leak demonstration is not a split row


def test_cli_tables_several_folders(tree: tuple[Path, Path]) -> None:
    fa, mr = tree
    assert main(["tables", "--quiet", "--results", str(fa), "--results", str(mr)]) == 0
    for folder in (fa, mr):
        assert (folder / "tables" / "claims.md").exists() and (folder / "tables" / "leak_splits.md").exists()
    cross = fa.parent / "tables"
    assert _claim_row(cross)["verdict across multiregion splits"] == \
        f"reached only with train/test copies at a reduced budget ({CPU_BUDGET})"
    assert "multiregion" in (mr / "tables" / "leak_splits.md").read_text()
    assert main(["tables", "--quiet", "--results", str(fa.parent / "nowhere")]) == 2


def test_report_side_by_side(tree: tuple[Path, Path]) -> None:
    fa, mr = tree
    path = write_reports([fa, mr, fa.parent / "absent"])
    assert path == fa.parent / "report.html"
    page = path.read_text(encoding="utf-8")
    assert "fracatlas, multiregion, absent side by side" in page
    assert "Leak across splits: published split vs grouped split vs external test" in page
    assert "reached only with train/test copies" in page
    assert "not run: no records under <code>absent/runs</code>" in page
    ids = re.findall(r'id="?([^" >]+)', page)
    assert len(ids) == len(set(ids)), "element ids must be unique across the datasets' sections"
    assert "<script" not in page.lower() and "http" not in page.lower()
    # each dataset's own report still works
    assert write_report(fa).read_text(encoding="utf-8").count("<h2 id=run>") == 1


def test_published_accuracy_is_split_into_test_images_with_and_without_a_copy_in_train(tmp_path: Path) -> None:
    """The indented rows: from the record's own manifest (found by fingerprint) and predictions.csv."""
    import hashlib

    from fracbench.claims.tables.splits import ONLY_IN_VAL, copy_subsets, leak_splits_table

    results = tmp_path / "multiregion"
    d = split_run(results, "multiregion_published_as_published", "published", "as_published", 0.8, n=300)
    # a manifest: img0..img199 share a duplicate group with a train image, img200..299 do not
    lines = ["id,path,label,group,part,split,sha256"]
    for i in range(300):
        group = f"g{i % 50}" if i < 200 else f"solo{i}"
        lines.append(f"img{i},test/x{i}.png,{i % 2},{group},,test,{i:064x}")
    for k in range(50):
        lines.append(f"tr{k},train/t{k}.png,{k % 2},g{k},,train,{k:064x}")
    lines.append("v0,train/v0.png,0,other,,val," + "f" * 64)
    # img250..img259 (without a copy in train) have theirs in val: in the release they were in train
    lines += [f"vc{i},train/vc{i}.png,0,solo{i},,val,{(1000 + i):064x}" for i in range(250, 260)]
    data = ("\n".join(lines) + "\n").encode()
    (results / "manifests").mkdir(parents=True)
    (results / "manifests" / "multiregion.csv").write_bytes(data)
    rec = R.read_record(d)
    rec["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    rec.pop("schema_version")
    R.write_record(d, rec)
    preds = [p for p in R.read_predictions(d) if p["split"] == "test"]
    right = {p["id"]: int(p["score"] >= 0.5) == p["label"] for p in preds}
    want_with = sum(right[f"img{i}"] for i in range(200)) / 200
    want_without = sum(right[f"img{i}"] for i in range(200, 300)) / 100
    run = next(r for r in load_runs(results) if r.experiment == "multiregion_published_as_published")
    sub = copy_subsets(run)
    assert sub["with a copy in train"]["n"] == 200 and sub["without a copy in train"]["n"] == 100
    assert sub["with a copy in train"]["accuracy"] == pytest.approx(want_with)
    assert sub["without a copy in train"]["accuracy"] == pytest.approx(want_without)
    want_val = sum(right[f"img{i}"] for i in range(250, 260)) / 10
    assert sub[ONLY_IN_VAL]["n"] == 10 and sub[ONLY_IN_VAL]["accuracy"] == pytest.approx(want_val)
    t = leak_splits_table({"multiregion": load_runs(results)})
    rows = {r[1].strip(): r for r in t.rows}
    assert rows["published split, test images with a copy in train"][9].startswith(f"{want_with:.3f} [")
    assert rows["published split, test images without a copy in train"][5] == "100"
    val_row = next(r for name, r in rows.items() if name.startswith("of which with a copy in val"))
    assert val_row[5] == "10" and val_row[9].startswith(f"{want_val:.3f} [")
    # a record whose manifest is not in the results folder gets no such rows (nothing to recompute from)
    (results / "manifests" / "multiregion.csv").unlink()
    assert copy_subsets(run) is None


def test_one_seed_effect_on_shared_test_images_is_a_joint_bootstrap(tmp_path: Path) -> None:
    """Two protocols of one split on the same 300 images, almost the same calls: the joint cluster bootstrap
    over shared images finds the 2-point difference that the runs' overlapping CIs would call no evidence."""
    from fracbench.claims.tables.effects import pair_effect
    from fracbench.claims.tables.leak import leak_effect

    res = tmp_path / "results"
    a = split_run(res, "x_as_published", "published", "as_published", 0.80)
    b = split_run(res, "x_honest", "published", "honest", 0.80)
    # b: the same scores, six more wrong calls (2 points lower), so the arms are almost perfectly correlated
    text = (b / "predictions.csv").read_text().splitlines()
    text = text[:1] + (a / "predictions.csv").read_text().splitlines()[1:]
    flipped = 0
    for k in range(1, len(text)):
        ident, split, label, score = text[k].split(",")
        if flipped < 6 and (float(score) >= 0.5) == (label == "1"):
            text[k] = ",".join([ident, split, label, "0.1" if label == "1" else "0.9"])
            flipped += 1
    (b / "predictions.csv").write_text("\n".join(text) + "\n")
    runs = {r.experiment: r for r in load_runs(res)}
    ra, rb = runs["x_as_published"], runs["x_honest"]
    for r in (ra, rb):  # records' own numbers from the predictions, as fit() writes them
        y, s = (np.array(v) for v in zip(*[(p["label"], p["score"]) for p in R.read_predictions(r.dir)],
                                              strict=True))
        r.record["metrics"]["test"] = metrics_with_ci(y, s, 0.5, n_boot=300, seed=0)
        r.record["metrics"]["test"]["accuracy_as_counted"] = r.test["accuracy"]  # every image a .jpg
    assert not pair_effect(ra.test["accuracy"], ra.test["accuracy_ci95"], rb.test["accuracy"],
                           rb.test["accuracy_ci95"], 300).evidence  # independent CIs overlap
    cell = leak_effect([ra], [rb], "accuracy")
    assert cell.startswith("+2.00 points [95% CI"), cell


def test_every_cross_table_carries_the_provenance_footnote(tree: tuple[Path, Path], tmp_path: Path) -> None:
    """results/tables/* say, as the per-dataset tables do, under which profile, epochs and seeds their records ran."""
    fa, mr = tree
    paths = write_cross_tables([fa, mr], tmp_path / "out")
    mds = [p for p in paths if p.suffix == ".md"]
    assert {p.stem for p in mds} == {"claims", "leak_splits"}
    for md in mds:
        text = md.read_text(encoding="utf-8")
        for _, _, name in SPLIT_ROWS:
            assert re.search(rf"- {name}: profile cpu, epochs 0\.\.7, seeds 0 \(1 of 5 in the full run\), dataset "
                             r"multiregion; changed from the paper's configuration: epochs=8, image_size=96\.", text), \
                (md.name, name)
    claims = (tmp_path / "out" / "claims.md").read_text(encoding="utf-8")
    assert "- paper_cnn_as_published: profile smoke, epochs 0..2, seeds 0" in claims


def test_copy_subset_intervals_resample_duplicate_groups_not_images(tmp_path: Path) -> None:
    """200 test images with a copy in train, in two duplicate groups: one all right (img0-99), one half right
    (img100-199). Resampling the two groups can only give 1.0, 0.75 or 0.5 (probabilities 1/4, 1/2, 1/4), so
    the 95% interval is [0.5, 1.0]; an interval over 200 independent images (Wilson: [0.69, 0.81]) claims a
    precision that two radiographs cannot give."""
    import hashlib

    from fracbench.claims.tables.splits import copy_subsets

    results = tmp_path / "multiregion"
    d = split_run(results, "multiregion_published_as_published", "published", "as_published", 0.5, n=300)
    lines = ["id,path,label,group,part,split,sha256"]
    for i in range(300):
        group = "gA" if i < 100 else "gB" if i < 200 else f"solo{i}"
        lines.append(f"img{i},test/x{i}.png,{i % 2},{group},,test,{i:064x}")
    lines += ["trA,train/a.png,0,gA,,train," + "a" * 64, "trB,train/b.png,1,gB,,train," + "b" * 64]
    data = ("\n".join(lines) + "\n").encode()
    (results / "manifests").mkdir(parents=True)
    (results / "manifests" / "multiregion.csv").write_bytes(data)
    rec = R.read_record(d)
    rec["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    rec.pop("schema_version")
    R.write_record(d, rec)
    run = next(r for r in load_runs(results) if r.experiment == "multiregion_published_as_published")
    cell = copy_subsets(run)["with a copy in train"]
    assert cell["accuracy"] == pytest.approx(0.75) and cell["groups"] == 2
    lo, hi = cell["accuracy_ci95"]
    assert lo <= 0.55 and hi >= 0.95
