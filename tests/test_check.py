"""fracbench check on planted-copy trees: the expected numbers come from the planting, never from the code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _check_trees import radiograph_png

from fracbench.claims.check import check, parse_claims
from fracbench.cli import main
from fracbench.data import prepare


def save(path: Path, seed: int) -> Path:
    return radiograph_png(path, seed)


# train: 70 fractured (seeds 0-69), 50 not fractured (seeds 100-149): the training majority is "fractured"
TRAIN = [("fractured", s) for s in range(70)] + [("not fractured", s) for s in range(100, 150)]
# leaky test: byte copies of 60 fractured and 40 not-fractured training files, and 5 + 5 new radiographs
COPIED = [("fractured", s) for s in range(60)] + [("not fractured", s) for s in range(100, 140)]
FRESH = [("fractured", s) for s in range(1000, 1005)] + [("not fractured", s) for s in range(1100, 1105)]
# lookup baseline: the 100 copies answered by their copy's label, the 10 new ones "fractured": 5 of them right
LEAKY_LOOKUP = (100 + 5) / 110
LEAKY_MAJORITY = 65 / 110
# clean test: 65 fractured, 45 not fractured, none of them in train: the lookup answers "fractured" throughout
CLEAN_TEST = [("fractured", s) for s in range(2000, 2065)] + [("not fractured", s) for s in range(3000, 3045)]
CLEAN_LOOKUP = 65 / 110


def _train(root: Path) -> None:
    for cls, s in TRAIN:
        save(root / "train" / cls / f"t{s}.png", s)


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("leaky")
    _train(root)
    for cls, s in COPIED:
        dst = root / "test" / cls / f"copy_of_t{s}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "train" / cls / f"t{s}.png", dst)
    for cls, s in FRESH:
        save(root / "test" / cls / f"new{s}.png", s)
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    _train(root)
    for cls, s in CLEAN_TEST:
        save(root / "test" / cls / f"new{s}.png", s)
    return root


@pytest.fixture(scope="module")
def chest(tmp_path_factory) -> Path:
    """Three classes that are not fracture names, held-out folder valid/, one byte copy per class across."""
    root = tmp_path_factory.mktemp("chest")
    for k, cls in enumerate(("Covid", "Normal", "Viral Pneumonia")):
        for j in range(4):
            save(root / "train" / cls / f"{j}.png", 5000 + 10 * k + j)
        (root / "valid" / cls).mkdir(parents=True)
        shutil.copyfile(root / "train" / cls / "0.png", root / "valid" / cls / "copy.png")
        save(root / "valid" / cls / "new.png", 6000 + k)
    return root


def test_parse_claims() -> None:
    assert parse_claims(["accuracy=0.998", "auroc=99%", "accuracy=99.8"]) == [
        ("accuracy", 0.998), ("auroc", 0.99), ("accuracy", pytest.approx(0.998))]
    for bad in (["accuracy"], ["f1=0.9"], ["accuracy=high"], ["accuracy=-0.1"], []):
        with pytest.raises(ValueError):
            parse_claims(bad)


@pytest.mark.slow
def test_leaky_tree_is_explained_by_copies(leaky: Path) -> None:
    p = prepare("imagefolder", leaky, progress=False)
    rep = check(p, [("accuracy", 0.95), ("auroc", 0.9)])
    assert rep["held_out_folder"] == "test"
    assert rep["images"]["test"] == 110
    assert rep["copies"]["test_near_in_train"] == 100 and rep["copies"]["test_exact_in_train"] == 100
    assert rep["copies"]["test_groups"] == 110
    assert rep["lookup"]["accuracy"] == pytest.approx(LEAKY_LOOKUP)
    assert rep["lookup"]["with_copy_in_train"]["accuracy"] == 1.0
    assert rep["lookup"]["copy_free"]["accuracy"] == pytest.approx(0.5)
    lo, hi = rep["lookup"]["ci"]
    assert lo <= LEAKY_LOOKUP <= hi and hi > 0.95
    assert rep["majority"]["test_accuracy"] == pytest.approx(LEAKY_MAJORITY)
    acc, auroc = rep["claims"]
    assert acc["verdict"] == "explained by copies" and "memorising alone scores 0.955" in acc["reason"]
    assert "no model trained" in acc["not_checked"]
    assert auroc["verdict"] == "explained by copies"
    assert rep["distinct_radiographs"]["distinct"] == 120 + 10
    assert rep["leak"] and rep["fail_on_leak_would_exit"] == 3


@pytest.mark.slow
def test_leaky_tree_cli_exits_3_on_leak(leaky: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["check", str(leaky), "--claim", "accuracy=0.95", "--out", str(out), "--fail-on-leak",
                 "--quiet"]) == 3
    assert main(["check", str(leaky), "--claim", "accuracy=0.95", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.index("EXPLAINED BY COPIES") < text.index("test images")  # the answer leads
    data = json.loads((out / "check.json").read_text())
    assert data["claims"][0]["verdict"] == "explained by copies"
    page = (out / "check.html").read_text()
    assert "explained by copies" in page and "data:image/png;base64," in page
    assert str(leaky) not in page and str(leaky) not in (out / "check.json").read_text()


@pytest.mark.slow
def test_clean_tree_is_not_explained_by_copies(clean: Path, tmp_path: Path) -> None:
    p = prepare("imagefolder", clean, progress=False)
    rep = check(p, [("accuracy", 0.95), ("accuracy", 0.5)])
    assert rep["copies"]["test_near_in_train"] == 0 and not rep["leak"]
    assert rep["lookup"]["accuracy"] == pytest.approx(CLEAN_LOOKUP)
    high, low = rep["claims"]
    assert high["verdict"] == "not explained by copies"
    assert low["verdict"] == "below the majority class"
    assert main(["check", str(clean), "--claim", "accuracy=0.95", "--fail-on-leak", "--out",
                 str(tmp_path / "o"), "--quiet"]) == 0


@pytest.mark.slow
def test_three_classes_held_out_valid(chest: Path, tmp_path: Path, capsys) -> None:
    p = prepare("imagefolder", chest, progress=False)
    assert [f.kind for f in p.faults] == ["group_crosses_given_splits"] * 3  # the planted copies, nothing skipped
    rep = check(p, [("accuracy", 0.9), ("auroc", 0.9)])
    assert rep["classes"] == ["Covid", "Normal", "Viral Pneumonia"] and not rep["binary_fracture_labels"]
    assert rep["held_out_folder"] == "valid"
    assert rep["images"]["train"] + rep["images"]["val"] == 12 and rep["images"]["test"] == 6
    assert rep["class_balance"]["test"] == {"Covid": 2, "Normal": 2, "Viral Pneumonia": 2}
    pairs = sorted((q["test"], q["train"], q["how"]) for q in rep["copies"]["pairs"])
    assert pairs == [(f"valid/{c}/copy", f"train/{c}/0", "file") for c in ("Covid", "Normal", "Viral Pneumonia")]
    assert rep["claims"][1]["verdict"] == "not checked"  # AUROC needs two classes
    assert main(["check", str(chest), "--claim", "accuracy=0.9", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert "held-out folder: valid/" in capsys.readouterr().out
    assert "held-out folder <b>valid/</b>" in (tmp_path / "o" / "check.html").read_text()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert main(["check", str(tmp_path / "nowhere"), "--claim", "accuracy=0.9", "--quiet"]) == 2
    assert main(["check", str(tmp_path), "--claim", "f1=0.9", "--quiet"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["check", str(tmp_path)])  # no --claim
    assert exc.value.code == 2


def test_verdict_rules_on_given_numbers() -> None:
    from fracbench.claims.check import judge_claim

    lookup = {"accuracy": 0.80, "ci": [0.75, 0.85]}
    fmt = {"accuracy_scale": 1.25, "tutorial_jpg_count": 80, "images": 100}
    args = dict(lookup=lookup, majority=0.6, n_copied=50, test_fmt=fmt, few="", majority_class="a", binary=True)
    assert judge_claim("accuracy", 0.84, **args)["verdict"] == "explained by copies"
    assert judge_claim("accuracy", 0.55, **args)["verdict"] == "below the majority class"
    # 0.85 * 1.25 = 1.0625: counted over the .jpg files only, memorising reaches 0.99
    assert judge_claim("accuracy", 0.99, **args)["verdict"] == "needs the .jpg denominator"
    assert judge_claim("accuracy", 0.99, **{**args, "test_fmt": {"accuracy_scale": 1.0}})["verdict"] == \
        "not explained by copies"
    few = judge_claim("accuracy", 0.99, **{**args, "test_fmt": {}, "few": "only 40 independent test groups"})
    assert few["verdict"] == "no evidence" and "40 independent test groups" in few["reason"]


@pytest.mark.slow
def test_leaky_tree_grouped_split_has_no_copies_across(leaky: Path) -> None:
    p = prepare("imagefolder", leaky, progress=False)
    rep = check(p, [("accuracy", 0.95)], split="grouped")
    assert rep["split"] == "grouped" and rep["copies"]["test_near_in_train"] == 0 and not rep["leak"]
    # no copy to look up: every test image gets the training majority class
    assert rep["lookup"]["with_copy_in_train"]["images"] == 0
    assert rep["claims"][0]["verdict"] in ("not explained by copies", "no evidence")
