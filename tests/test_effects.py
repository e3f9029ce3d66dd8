"""Effects with a CI or "no evidence" (fracbench.claims.tables.effects), the split of effect (i), the real .jpg effect."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_tables import EXPERIMENTS, fake_run

from fracbench import results as R
from fracbench.claims.inflation import jpg_denominator_effect, selection_decomposition
from fracbench.claims.tables import load_runs, protocol_table
from fracbench.claims.tables.claims import MIN_TEST_GROUPS
from fracbench.claims.tables.effects import MIN_SEEDS, pair_effect, seed_effect, t975
from fracbench.claims.tables.leak import leak_effect


def test_seed_effect_ci_uses_student_t() -> None:
    vals = [0.01, 0.02, 0.03, 0.04, 0.05]  # mean 0.03, sd 0.0158; half-width t(4) * sd / sqrt(5)
    e = seed_effect(vals, 500)
    half = 2.7764 * 0.015811388 / math.sqrt(5)
    assert e.evidence and e.ci == pytest.approx((0.03 - half, 0.03 + half), abs=1e-6)
    assert e.cell().startswith("+3.00 ± 1.58 points [95% CI +1.04, +4.96]")
    assert t975(4) == 2.7764 and t975(11) == t975(12) and t975(100) == 1.96


def test_effect_whose_ci_includes_zero_is_no_evidence() -> None:
    e = seed_effect([0.0, 0.04, 0.0, 0.2567, 0.0019], 518)  # the old "+5.98 ± 11.14 points"
    assert not e.evidence and e.cell().startswith("no evidence (the CI includes zero")


def test_too_few_seeds_or_images_is_no_evidence() -> None:
    assert seed_effect([0.1] * (MIN_SEEDS - 1), 500).cell().startswith("no evidence (2 seed(s)")
    e = seed_effect([0.30, 0.31, 0.32], MIN_TEST_GROUPS - 1)
    assert not e.evidence and f"{MIN_TEST_GROUPS - 1} test groups" in e.cell()
    # the example: AUROC 0.14 vs 0.11 on 32 test images is not "+33.87 points" of anything
    assert pair_effect(0.4787, [0.3, 0.6], 0.14, [0.1, 0.2], 32).cell().startswith("no evidence (32 test groups")
    assert pair_effect(0.9, [0.85, 0.95], 0.5, [0.45, 0.55], 500).evidence
    assert not pair_effect(0.9, [0.5, 0.95], 0.5, [0.45, 0.55], 500).evidence


def test_selection_split_into_data_and_criterion() -> None:
    epochs = [{"epoch": 0, "val_accuracy": 0.70, "test_accuracy": 0.60},
              {"epoch": 1, "val_accuracy": 0.80, "test_accuracy": 0.65},
              {"epoch": 2, "val_accuracy": 0.75, "test_accuracy": 0.72}]
    d = selection_decomposition(epochs, selected_epoch=0)  # chosen on val AUROC at epoch 0
    assert d["val_accuracy_selected_epoch"] == 1
    assert d["selection_criterion"] == pytest.approx(0.05)  # accuracy vs AUROC, both on validation
    assert d["selection_data"] == pytest.approx(0.07)  # test vs validation, both on accuracy
    assert d["selection_data"] + d["selection_criterion"] == pytest.approx(0.72 - 0.60)


def test_jpg_effect_is_measured_on_the_real_folder(tmp_path: Path) -> None:
    assert jpg_denominator_effect({"accuracy_as_counted": 0.8, "accuracy_at_0.5": 0.8}) == 0
    res = tmp_path / "results"
    d = fake_run(res, "paper_cnn_as_published", 0, "as_published", train_loss=[0.7], test_accuracy=[0.8])
    rec = R.read_record(d)
    rec["counts"]["test_denominator"] = 160  # 200 images, 160 of them .jpg
    rec["metrics"]["test"].update({"accuracy_at_0.5": 0.8, "accuracy_as_counted": 1.0})
    R.write_record(d, {k: v for k, v in rec.items() if k != "schema_version"})
    t = protocol_table(load_runs(res), EXPERIMENTS)
    row = next(r for r in t.rows if r[0] == ".jpg denominator on synthetic")
    assert row[t.columns.index("(iii) .jpg denominator on the real test folder")] == "+20.00 points"
    assert "200 test images, 160 .jpg" in row[2]


def test_leak_effect_on_few_images_is_no_evidence(tmp_path: Path) -> None:
    res = tmp_path / "results"
    a = fake_run(res, "paper_cnn_as_published", 0, "as_published", train_loss=[0.7], test_accuracy=[0.8])
    b = fake_run(res, "paper_cnn_honest", 0, "honest", train_loss=[0.7], test_accuracy=[0.8], final_accuracy=0.5)
    runs = {r.experiment: r for r in load_runs(res)}
    ra, rb = runs["paper_cnn_as_published"], runs["paper_cnn_honest"]
    assert leak_effect([ra], [rb], "auroc").startswith("no evidence (one seed; the two runs")  # equal AUROCs
    assert leak_effect([ra], [rb], "balanced_accuracy").startswith("+30.00 points")  # 200 images, CIs apart
    for d in (a, b):
        rec = R.read_record(d)
        rec["counts"]["test"] = 32
        R.write_record(d, {k: v for k, v in rec.items() if k != "schema_version"})
    runs = {r.experiment: r for r in load_runs(res)}
    cell = leak_effect([runs["paper_cnn_as_published"]], [runs["paper_cnn_honest"]], "balanced_accuracy")
    assert cell.startswith("no evidence (32 test groups")


def _leak_record(res: Path, variant: str, accuracy: float, ci: tuple[float, float]) -> None:
    """A leak-demonstration record (one seed, 144 test images, no predictions: the CI-overlap rule applies)."""
    name = f"leak_demo__{variant}_as_published"
    m = {"accuracy": accuracy, "accuracy_ci95": list(ci), "accuracy_as_counted": accuracy,
         "balanced_accuracy": accuracy, "balanced_accuracy_ci95": list(ci), "auroc": 0.8,
         "auroc_ci95": [0.7, 0.9], "majority_accuracy": 0.51, "prevalence": 0.49}
    R.write_record(R.run_dir(res, name, 0), {
        "experiment": name, "model": "paper_cnn", "protocol": "as_published", "dataset": "fracatlas+4copies",
        "manifest_sha256": variant[0] * 64, "seed": 0, "status": "complete", "profile": "cpu", "epochs_run": 6,
        "selected_epoch": 5, "selected_on": "test_accuracy", "threshold": 0.5, "metrics": {"test": m},
        "counts": {"train": 700, "val": 150, "test": 144, "test_denominator": 144},
        "leak": {"split": variant, "variant": variant, "copies": ["rot90"], "test_images": 144,
                 "test_images_with_a_copy_in_train": 0, "test_share_with_a_copy_in_train": 0.0}})


def test_claims_and_leak_tables_state_the_leak_by_one_rule(tmp_path: Path) -> None:
    """Overlapping CIs: the leak table says no evidence, and so does the claims table (never '+4.17 points')."""
    from fracbench.claims.tables import Claim, claims_table, leak_table

    res = tmp_path / "results"
    _leak_record(res, "naive", 0.7361, (0.66, 0.81))
    _leak_record(res, "grouped", 0.6944, (0.62, 0.77))
    runs = load_runs(res)
    claim = Claim("leak", "the test Accuracy was 0.998", "Experiment", 0.998, "test_accuracy", "protocol_effect",
                  "leak_demo", effect="leak")
    leak = leak_table(runs, EXPERIMENTS, [claim])
    row = next(r for r in leak.rows if r[1].startswith("(a) − (b)") and r[2] == "as published")
    cell = row[leak.columns.index("fracbench test accuracy")]
    assert cell.startswith("no evidence (one seed; the two runs' 95% CIs overlap; measured +4.17 points")
    claims = claims_table(runs, EXPERIMENTS, [claim])
    reason = claims.rows[0][claims.columns.index("reason")]
    assert cell in reason
    assert "+4.17 points from the leak alone" not in reason
