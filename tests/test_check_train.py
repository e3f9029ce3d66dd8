"""fracbench check --train: a model trained on the given and the grouped split, scored on the test images with a
copy in train and on those without. Which test image is a copy comes from the planting (file names), never
from the code under test; the numbers are recomputed by brute force from the run's own predictions."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from _check_trees import radiograph_png

from fracbench.claims.check import judge_trained, train_config, trained_metrics
from fracbench.cli import main

N_TRAIN = 40  # t0..t39, odd seeds fractured
COPIED = range(20)  # test/…/copy_of_t{s}.png: byte copies of t0..t19
FRESH = range(1000, 1012)  # test/…/new{s}.png: radiographs nowhere in train


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    for s in range(N_TRAIN):
        radiograph_png(root / "train" / ("fractured" if s % 2 else "not fractured") / f"t{s}.png", s)
    for s in COPIED:
        cls = "fractured" if s % 2 else "not fractured"
        (root / "test" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "train" / cls / f"t{s}.png", root / "test" / cls / f"copy_of_t{s}.png")
    for s in FRESH:
        radiograph_png(root / "test" / ("fractured" if s % 2 else "not fractured") / f"new{s}.png", s)
    return root


def _auroc_by_pairs(y: list[int], s: list[float]) -> float:
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_trained_metrics_split_by_copy_on_given_numbers() -> None:
    # 6 test images, the first three copied. At threshold 0.5 the copied ones are all right; of the others
    # (labels 1 0 0, scores .3 .7 .4 -> answers 0 1 0) only the last is
    y = [1, 0, 1, 1, 0, 0]
    score = [0.9, 0.2, 0.8, 0.3, 0.7, 0.4]
    copied = [True, True, True, False, False, False]
    m = trained_metrics(y, score, 0.5, ["a", "b", "c", "d", "e", "f"], copied, n_boot=200)
    assert (m["all"]["images"], m["with_copy_in_train"]["images"], m["copy_free"]["images"]) == (6, 3, 3)
    assert m["with_copy_in_train"]["accuracy"] == 1.0
    assert m["copy_free"]["accuracy"] == pytest.approx(1 / 3)
    assert m["all"]["accuracy"] == pytest.approx(4 / 6)
    # copy-free: y 1 0 0, scores .3 .7 .4: the positive ranks below both negatives
    assert m["copy_free"]["auroc"] == pytest.approx(0.0)
    assert m["with_copy_in_train"]["auroc"] == pytest.approx(1.0)
    lo, hi = m["copy_free"]["accuracy_ci"]
    assert 0 <= lo <= 1 / 3 <= hi <= 1


def test_trained_metrics_groups_count_copies_once() -> None:
    m = trained_metrics([1, 1, 0, 0], [0.9, 0.9, 0.1, 0.1], 0.5, ["g", "g", "h", "k"], [False] * 4, n_boot=50)
    assert m["all"]["groups"] == 3 and m["with_copy_in_train"]["images"] == 0
    assert m["with_copy_in_train"]["accuracy"] is None


def _ev(acc: float, lo: float, hi: float, groups: int = 150) -> dict:
    return {"images": groups, "groups": groups, "accuracy": acc, "accuracy_ci": [lo, hi], "auroc": None,
            "auroc_ci": None, "balanced_accuracy": acc, "majority_accuracy": 0.6}


def _trained(given: float, grouped: float, budget: str) -> dict:
    none = _ev(0.5, 0.4, 0.6, 0) | {"accuracy": None, "accuracy_ci": None}
    return {"model": "tiny_cnn", "profile": "smoke", "budget": budget,
            "splits": {"given": {"metrics": {"all": _ev(given, given - 0.02, given + 0.01),
                                             "with_copy_in_train": _ev(0.999, 0.99, 1.0), "copy_free": none}},
                       "grouped": {"metrics": {"all": _ev(grouped, grouped - 0.05, grouped + 0.05),
                                               "with_copy_in_train": none, "copy_free": none}}}}


def test_trained_verdicts_and_the_budget_clause() -> None:
    # given split reaches 0.99 (inside [0.97, 1.0]), the grouped one (0.70 [0.65, 0.75]) does not
    v = judge_trained("accuracy", 0.99, _trained(0.99, 0.70, "2/50 epochs, 64 px (full 150)"))
    assert v["verdict"] == "reached only with train/test copies"
    assert v["shown"] == "reached only with train/test copies at a reduced budget (2/50 epochs, 64 px (full 150))"
    full = judge_trained("accuracy", 0.99, _trained(0.99, 0.70, ""))
    assert full["shown"] == "reached only with train/test copies"  # the full budget: no clause
    # the grouped split reaches it too: copies are not needed
    assert judge_trained("accuracy", 0.72, _trained(0.99, 0.70, ""))["verdict"] == "reached without copies"
    # neither split reaches it, the copied test images do
    assert judge_trained("accuracy", 0.995, _trained(0.90, 0.70, "x"))["verdict"] == \
        "reached only on test images with a copy in train"


def test_train_config_profiles_and_budget() -> None:
    cfg, budget, source = train_config("paper_cnn", "smoke")
    assert (cfg.epochs, cfg.image_size, cfg.max_train_images, cfg.protocol) == (2, 64, 96, "honest")
    assert budget == "2/50 epochs, 64 px (full 150), at most 96 training images, 1/5 seeds"
    assert "paper_cnn_honest" in source
    cfg, budget, _ = train_config("tiny_cnn", "smoke")  # no experiment trains it: defaults, native 32 px kept
    assert cfg.image_size == 32 and cfg.epochs == 2 and budget == "2/50 epochs, at most 96 training images"
    assert train_config("tiny_cnn", "full")[1] == ""


def test_unknown_model_suggests_close_matches(planted: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import fracbench.data

    def no_data_work(*a, **k):
        raise AssertionError("the data was read before the model name was checked")

    monkeypatch.setattr(fracbench.data, "prepare", no_data_work)
    assert main(["check", str(planted), "--claim", "accuracy=0.9", "--train", "tiny_cn", "--profile", "smoke",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr()
    assert "Did you mean 'tiny_cnn'" in err.out + err.err
    assert not (tmp_path / "out").exists()  # refused before any data work


@pytest.mark.slow
def test_train_smoke_scores_copied_and_copy_free_test_images(planted: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["check", str(planted), "--claim", "accuracy=0.998", "--claim", "auroc=0.99", "--train", "tiny_cnn",
                 "--profile", "smoke", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "check.json").read_text())
    trained = report["trained"]
    assert trained["model"] == "tiny_cnn" and trained["profile"] == "smoke" and "2/50 epochs" in trained["budget"]
    given = trained["splits"]["given"]
    rec = json.loads((out / given["record"] / "record.json").read_text())
    with (out / given["record"] / "predictions.csv").open() as fh:
        preds = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    thr = rec["threshold"]
    planted_copy = [Path(p["id"]).name.startswith("copy_of_t") for p in preds]
    assert sum(planted_copy) == len(COPIED) and len(preds) - sum(planted_copy) == len(FRESH)
    for name, keep in (("with_copy_in_train", True), ("copy_free", False)):
        sub = [p for p, c in zip(preds, planted_copy) if c is keep]
        y, s = [int(p["label"]) for p in sub], [float(p["score"]) for p in sub]
        m = given["metrics"][name]
        assert m["images"] == len(sub)
        assert m["accuracy"] == pytest.approx(sum((v >= thr) == bool(t) for t, v in zip(y, s)) / len(sub))
        assert m["auroc"] == pytest.approx(_auroc_by_pairs(y, s))
        lo, hi = m["accuracy_ci"]
        assert lo <= m["accuracy"] <= hi
    # the grouped re-split keeps every copy group on one side: no test image has a copy in train
    grouped = trained["splits"]["grouped"]["metrics"]
    assert grouped["with_copy_in_train"]["images"] == 0 and grouped["copy_free"]["images"] == grouped["all"]["images"]
    # each claim carries the trained verdict; too few test groups here, so no evidence (and no budget clause)
    for v in report["claims"]:
        assert v["trained"]["verdict"] == "no evidence" and "2/50 epochs" in v["not_checked"]
    page = (out / "check.html").read_text()
    assert "Trained model: tiny_cnn" in page and "trained tiny_cnn: no evidence" in page
    assert "copy free (12 test images)" in capsys.readouterr().out
