"""Tests for fracbench.claims.tables: values, mean ± sd, manifest refusal, determinism, claim verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fracbench import results as R
from fracbench.claims.tables import (
    KNOWN_METRICS,
    Claim,
    MixedManifestError,
    Table,
    claims_table,
    leaderboard,
    load_claims,
    load_experiments,
    load_runs,
    table1,
    table2,
    table3,
    write_tables,
)

EXPERIMENTS = load_experiments()


def _test_metrics(acc: float) -> dict[str, Any]:
    m: dict[str, Any] = {"accuracy": acc, "balanced_accuracy": acc - 0.05, "sensitivity": acc - 0.1,
                         "specificity": acc, "precision": 0.7, "f1": 0.7, "auroc": 0.8, "auprc": 0.6,
                         "kappa": 0.4, "majority_accuracy": 0.65, "prevalence": 0.35, "n": 200,
                         "tp": 50, "fp": 20, "tn": 110, "fn": 20}
    for k in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "auroc", "auprc",
              "kappa"):
        m[f"{k}_ci95"] = [m[k] - 0.04, m[k] + 0.04]
    m["accuracy_as_counted"] = acc
    m["accuracy_at_0.5"] = acc
    return m


def bare(verdict: str) -> str:
    """A verdict cell without its budget clause (the fake records are smoke-sized: every judgement carries one)."""
    return verdict.split(" at a reduced budget (")[0]


def fake_run(results: Path, experiment: str, seed: int, protocol: str, *, train_loss: list[float],
             test_accuracy: list[float], final_accuracy: float = 0.8, manifest: str = "a" * 64,
             dataset: str = "synthetic", selected_epoch: int | None = None) -> Path:
    d = R.run_dir(results, experiment, seed)
    epochs = [{"epoch": i, "train_loss": tl, "train_accuracy": 1 - tl / 2, "val_loss": 0.5, "val_accuracy": 0.7,
               "val_auroc": 0.75, "test_loss": 0.5, "test_accuracy": ta, "test_auroc": 0.8, "lr": 0.001,
               "seconds": 1.5, "images_per_second": 64.0}
              for i, (tl, ta) in enumerate(zip(train_loss, test_accuracy, strict=True))]
    R.write_epochs(d, epochs)
    exp = EXPERIMENTS[experiment]
    cfg = exp.train_config("smoke", seed=seed).to_dict()
    cfg["epochs"] = len(epochs)
    R.write_record(d, {
        "experiment": experiment, "model": exp.model, "protocol": protocol, "dataset": dataset,
        "manifest_sha256": manifest, "seed": seed, "config": cfg, "status": "complete",
        "epochs_run": len(epochs), "selected_epoch": len(epochs) - 1 if selected_epoch is None else selected_epoch,
        "selected_on": "test_accuracy" if protocol == "as_published" else "val_auroc",
        "threshold": 0.5, "metrics": {"test": _test_metrics(final_accuracy)},
        "counts": {"train": 96, "val": 100, "test": 200, "test_denominator": 200},
        "params": 368398, "flops_per_image": 12_345_678, "train_seconds": 3.0, "images_per_second": 64.0,
        "device_name": "Test CPU", "profile": "smoke",
    })
    return d


@pytest.fixture
def results(tmp_path: Path) -> Path:
    res = tmp_path / "results"
    # two seeds as published, one honest; five epochs (0..4) so epochs 10..49 are "not run"
    fake_run(res, "paper_cnn_as_published", 0, "as_published", train_loss=[0.70, 0.6, 0.5, 0.4, 0.3],
             test_accuracy=[0.60, 0.70, 0.75, 0.80, 0.9600], final_accuracy=0.96)
    fake_run(res, "paper_cnn_as_published", 1, "as_published", train_loss=[0.72, 0.6, 0.5, 0.4, 0.3],
             test_accuracy=[0.62, 0.70, 0.75, 0.80, 0.9700], final_accuracy=0.97)
    fake_run(res, "paper_cnn_honest", 0, "honest", train_loss=[0.69, 0.6, 0.5, 0.4, 0.35],
             test_accuracy=[0.61, 0.70, 0.74, 0.78, 0.80], final_accuracy=0.80)
    return res


def _row(table: Table, first: str) -> dict[str, str]:
    for row in table.rows:
        if row[0] == first:
            return dict(zip(table.columns, row, strict=True))
    raise AssertionError(f"no row {first!r} in {table.name}")


def test_table1_values_mean_sd_and_missing_epochs(results: Path) -> None:
    t = table1(load_runs(results), EXPERIMENTS)
    assert [r[0] for r in t.rows[:-1]] == ["0", "4", "10", "14", "16", "18", "20", "25", "28", "32", "35", "38",
                                           "41", "44", "47", "49"]
    e0 = _row(t, "0")
    assert e0["paper train loss"] == "4.3960"
    assert e0["paper test acc"] == "0.5337"
    # two seeds: 0.70 and 0.72 -> mean 0.7100, sample sd 0.0141
    assert e0["fracbench train loss (as published)"] == "0.7100 ± 0.0141"
    assert e0["fracbench test acc (as published)"] == "0.6100 ± 0.0141"
    assert e0["fracbench train loss (honest)"] == "0.6900"  # one seed: the value alone
    assert e0["fracbench test majority-class acc"] == "0.6500"
    e4 = _row(t, "4")
    assert e4["fracbench test acc (as published)"] == "0.9650 ± 0.0071"
    e49 = _row(t, "49")
    assert e49["paper train acc"] == "0.9991"
    assert e49["fracbench train loss (as published)"] == "—"
    assert e49["fracbench test acc (honest)"] == "—"
    sel = _row(t, "reported checkpoint")
    assert sel["paper test acc"] == "0.998"
    assert sel["fracbench test acc (as published)"] == "0.9650 ± 0.0071"
    assert sel["fracbench test balanced acc (honest)"] == "0.7500"
    assert all(c.startswith(("paper", "fracbench")) or c == "epoch" for c in t.columns)
    text = " ".join(t.footnotes)
    assert "profile smoke" in text and "seeds 0, 1" in text and "epochs 0..4" in text


def test_tables_refuse_mixed_manifests(results: Path) -> None:
    fake_run(results, "paper_cnn_honest", 1, "honest", train_loss=[0.7] * 5, test_accuracy=[0.6] * 5,
             manifest="b" * 64, dataset="fracatlas")
    runs = load_runs(results)
    with pytest.raises(MixedManifestError) as info:
        table1(runs, EXPERIMENTS)
    msg = str(info.value)
    assert "paper_cnn_honest/seed1" in msg and "paper_cnn_as_published/seed0" in msg
    assert "aaaaaaaaaaaaaaaa" in msg and "bbbbbbbbbbbbbbbb" in msg
    with pytest.raises(MixedManifestError):
        leaderboard(runs, EXPERIMENTS)
    with pytest.raises(MixedManifestError):
        write_tables(results, results / "tables")
    assert isinstance(info.value, ValueError)


def test_failed_runs_are_listed_not_tabulated(results: Path) -> None:
    d = R.run_dir(results, "ref_resnet18", 0)
    R.write_record(d, {"experiment": "ref_resnet18", "model": "resnet18", "protocol": "honest", "seed": 0,
                       "profile": "smoke", "status": "failed", "error": "RuntimeError: out of memory"})
    runs = load_runs(results)
    lb = leaderboard(runs, EXPERIMENTS)  # a failed record has no manifest: not a mixed-manifest error
    assert _row(lb, "ref_resnet18")["fracbench AUROC"] == "failed"
    assert any("ref_resnet18 seed 0 failed: RuntimeError: out of memory" in f for f in lb.footnotes)
    assert not any("ref_resnet18" in f for f in table1(runs, EXPERIMENTS).footnotes)


def test_write_tables_is_deterministic(results: Path, tmp_path: Path) -> None:
    first = write_tables(results, tmp_path / "one")
    again = write_tables(results, tmp_path / "one")  # regenerate in place
    other = write_tables(results, tmp_path / "two")
    names = sorted(p.name for p in first)
    assert names == sorted(f"{t}.{ext}" for t in ("table1", "table2", "table3", "leaderboard", "claims", "leak",
                                                  "protocol", "leak_splits", "subgroups")
                           for ext in ("md", "csv", "tex"))
    assert [p.name for p in again] == [p.name for p in first]
    for a, b in zip(first, other, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert not list((tmp_path / "one").glob(".*.tmp"))  # atomic writes leave no temporaries
    md = (tmp_path / "one" / "table1.md").read_text()
    assert md.startswith("## Table 1") and "| 0 | 4.3960 |" in md
    tex = (tmp_path / "one" / "table1.tex").read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex and "±" not in tex
    csv_text = (tmp_path / "one" / "claims.csv").read_text()
    assert csv_text.splitlines()[0].startswith("claim,where,quote,paper,fracbench")


def test_claim_verdicts(results: Path) -> None:
    runs = load_runs(results)
    claims = [
        # ours at epoch 4 (the reported checkpoint): 0.965 ± 0.007 on 200 test images: 0.968 lies in the Wilson CI
        Claim("close", "epoch 4 test accuracy", "Table 1, epoch 4", 0.968, "test_accuracy", "model_result",
              "paper_cnn_as_published", 4),
        # outside the seed range, inside the Wilson interval of 200 images (envelope 0.92-0.99)
        Claim("near", "accuracy", "somewhere", 0.975, "test_accuracy", "model_result", "paper_cnn_as_published", 4),
        Claim("far", "epoch 0 train loss 4.3960", "Table 1, epoch 0", 4.396, "train_loss", "model_result",
              "paper_cnn_as_published", 0),
        Claim("max", "maximum accuracy 99.98%", "Introduction", 0.9998, "accuracy", "model_result",
              "paper_cnn_honest"),
        Claim("count", "9193 training images", "Methods", 9193, "count", "dataset_fact"),
        Claim("cite", "[14] epoch 8 accuracy", "Table 2", 0.6118, "train_accuracy", "citation", "stand_in_rao14", 8),
        Claim("late", "epoch 49 test accuracy", "Table 1, epoch 49", 0.9979, "test_accuracy", "model_result",
              "paper_cnn_as_published", 49),
        Claim("norun", "stand-in accuracy", "Table 3, row 1", 0.872, "accuracy", "model_result",
              "stand_in_cnn15_e10_b10", run=0),
    ]
    t = claims_table(runs, EXPERIMENTS, claims)
    rows = {r[0]: dict(zip(t.columns, r, strict=True)) for r in t.rows}
    assert bare(rows["close"]["verdict"]) == "reproduced" and "Wilson CI" in rows["close"]["reason"]
    # an accuracy is reproduced only with balanced and majority-class accuracy of the same run beside it
    assert rows["close"]["fracbench balanced acc"] == "0.9150" and rows["close"]["fracbench majority-class acc"] == "0.6500"
    assert bare(rows["near"]["verdict"]) == "reproduced" and "Wilson CI" in rows["near"]["reason"]
    assert bare(rows["far"]["verdict"]) == "train fit differs on synthetic"
    assert "no evidence about test performance" in rows["far"]["reason"]
    assert rows["far"]["paper"] == "4.3960" and rows["far"]["fracbench"].startswith("0.7100 ± 0.0141")
    assert bare(rows["max"]["verdict"]) == "not reproduced on synthetic"
    assert rows["max"]["fracbench"] == "0.8000 [0.7600, 0.8400]"
    assert rows["max"]["fracbench majority-class acc"] == "0.6500"
    assert rows["max"]["fracbench balanced acc"] == "0.7500"
    assert rows["count"]["verdict"] == "not comparable" and "dataset_fact" in rows["count"]["reason"]
    assert rows["count"]["paper"] == "9193"
    assert rows["cite"]["verdict"] == "not comparable" and "citation" in rows["cite"]["reason"]
    assert rows["late"]["verdict"] == "not comparable" and "epoch 49" in rows["late"]["reason"]
    assert rows["norun"]["verdict"] == "not comparable" and "not run" in rows["norun"]["reason"]


def test_every_claim_is_valid_and_renders(results: Path) -> None:
    claims = load_claims()
    assert len(claims) > 100
    for c in claims:
        assert c.metric in KNOWN_METRICS, c.id
        if c.experiment is not None:
            assert c.experiment in EXPERIMENTS, f"{c.id}: unknown experiment {c.experiment}"
            if c.run is not None:
                assert c.run < len(EXPERIMENTS[c.experiment].seeds), c.id
        if c.kind == "model_result":
            assert c.experiment is not None, f"{c.id}: a model result needs an experiment"
        if c.metric != "count":
            assert 0 <= c.value <= 1 or c.metric.endswith("loss"), f"{c.id}: {c.value} is not a fraction"
    ids = {c.id for c in claims}
    for expected in ("abstract_accuracy_epoch26", "intro_max_accuracy", "methods_train_images",
                     "experiment_test_accuracy", "table1_epoch49_test_accuracy", "table3_row6_auroc",
                     "discussion_ref16_precision", "discussion_max_accuracy"):
        assert expected in ids
    t = claims_table(load_runs(results), EXPERIMENTS, claims)
    assert len(t.rows) == len(claims)
    verdicts = {r[0]: bare(r[7]) for r in t.rows}
    assert verdicts["table1_epoch0_train_loss"] == "train fit differs on synthetic"
    assert verdicts["methods_test_images"] == "not comparable"


def test_jpg_count_warning(tmp_path: Path) -> None:
    d = fake_run(tmp_path, "paper_cnn_as_published", 0, "as_published", train_loss=[0.7], test_accuracy=[57.0])
    rec = R.read_record(d)
    assert rec is not None
    rec["counts"]["test_denominator"] = 0  # a dataset without .jpg files: the tutorial divides by max(0, 1)
    del rec["schema_version"]
    R.write_record(d, rec)
    t = table1(load_runs(tmp_path), EXPERIMENTS)
    assert any("finds 0 of 200 test images" in f and "exceed 1" in f for f in t.footnotes)


def test_other_tables_render(results: Path) -> None:
    runs = load_runs(results)
    t2 = table2(runs, EXPERIMENTS)
    assert t2.rows[0][0] == "18" and t2.rows[0][5] == "1"
    assert t2.rows[0][6] == "0.5553" and t2.rows[0][7] == "—"  # the stand-in was not run
    assert any("STAND-IN" in f for f in t2.footnotes)
    t3 = table3(runs, EXPERIMENTS)
    assert [r[3] for r in t3.rows[:2]] == ["Table 3, row 1", "mean ± sd"]
    assert t3.rows[0][5] == "0.8720" and t3.rows[0][6] == "not run"
    assert t3.rows[-1][3] == "mean ± sd" and t3.rows[-1][5] == "0.8598 ± 0.0559"
    lb = leaderboard(runs, EXPERIMENTS)
    row = _row(lb, "paper_cnn_as_published")
    assert row["fracbench accuracy"] == "0.965 [0.920, 1.010]"  # mean over seeds, envelope of CIs
    assert row["fracbench majority-class accuracy"] == "0.650"
    assert row["params"] == "368,398" and row["device"] == "Test CPU" and row["profile"] == "smoke"
    assert _row(lb, "ref_resnet18")["fracbench AUROC"] == "not run"
    assert {r[0] for r in lb.rows} == set(EXPERIMENTS)


def test_one_sided_rate_is_not_a_reproduction(tmp_path: Path) -> None:
    """Specificity 1.0 from a model that never calls 'fractured' does not reproduce a 99.82% claim."""
    res = tmp_path / "results"
    d = fake_run(res, "paper_cnn_as_published", 0, "as_published", train_loss=[0.7], test_accuracy=[0.82])
    rec = R.read_record(d)
    m = rec["metrics"]["test"]
    m.update(specificity=1.0, specificity_ci95=[0.99, 1.0], sensitivity=0.0, balanced_accuracy=0.5)
    R.write_record(d, {k: v for k, v in rec.items() if k != "schema_version"})
    claim = Claim("spec", "specificity of 99.82%", "Introduction", 0.9982, "specificity", "model_result",
                  "paper_cnn_as_published")
    row = dict(zip(*[claims_table(load_runs(res), EXPERIMENTS, [claim]).columns,
                     claims_table(load_runs(res), EXPERIMENTS, [claim]).rows[0]], strict=True))
    assert bare(row["verdict"]) == "not reproduced on synthetic"
    # a smoke-sized record: the cell says what ran (1 of 50 epochs at 64 px, 96 images, 1 of 5 seeds)
    assert row["verdict"] == ("not reproduced on synthetic at a reduced budget (1/50 epochs, 64 px (paper 150), "
                              "96 training images at most, 1/5 seeds)")
    assert "balanced accuracy is only 0.500" in row["reason"]
