"""Subgroups: the FracAtlas reader, the subgroups CSV, and the per-subgroup table's numbers."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fracbench import results as R
from fracbench.claims.subgroups import read_subgroups, subgroups_path, write_subgroups
from fracbench.claims.tables import write_tables
from fracbench.claims.tables.claims import wilson_ci
from fracbench.claims.tables.inputs import load_runs
from fracbench.claims.tables.subgroups import MIN_SUBGROUP, share_verdict, subgroup_results, subgroups_table
from fracbench.data.fracatlas import FracAtlas

REAL = Path("/work/shared/data/fracatlas")
HEADER = "image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,fracture_count,frontal,lateral,oblique\n"


def test_fracatlas_subgroups_from_a_tiny_csv(tmp_path: Path) -> None:
    (tmp_path / "dataset.csv").write_text(
        HEADER
        + "IMG0000001.jpg,0,1,0,0,0,1,0,1,1,1,1,0\n"  # leg, hardware, frontal+lateral
        + "IMG0000002.jpg,1,0,0,1,1,0,0,0,0,0,0,1\n"  # hand+shoulder marked mixed, oblique
        + "IMG0000003.jpg,0,0,1,0,0,0,0,0,0,0,0,0\n"  # hip, no view marked
    )
    assert FracAtlas(tmp_path).subgroups() == {
        "IMG0000001": {"hardware": "present", "part": "leg", "view": "frontal+lateral"},
        "IMG0000002": {"hardware": "absent", "part": "mixed", "view": "oblique"},
        "IMG0000003": {"hardware": "absent", "part": "hip", "view": "unknown"},
    }


@pytest.mark.skipif(not (REAL / "dataset.csv").is_file(), reason=f"FracAtlas not at {REAL} (real-data check)")
def test_fracatlas_subgroups_match_the_real_csv() -> None:
    with (REAL / "dataset.csv").open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    groups = FracAtlas(REAL).subgroups()
    assert set(groups) == {Path(r["image_id"]).stem for r in rows}
    got = Counter(g["hardware"] for g in groups.values())
    assert got["present"] == sum(r["hardware"] == "1" for r in rows)
    assert got["absent"] == sum(r["hardware"] == "0" for r in rows)
    single = {p: sum(r[p] == "1" and r["mixed"] == "0" for r in rows) for p in ("hand", "leg", "hip", "shoulder")}
    parts = Counter(g["part"] for g in groups.values())
    assert {p: parts[p] for p in single} == single
    assert Counter(g["view"] for g in groups.values())["frontal"] == sum(
        (r["frontal"], r["lateral"], r["oblique"]) == ("1", "0", "0") for r in rows)


def test_subgroups_csv_round_trip_and_bad_file(tmp_path: Path) -> None:
    groups = {"b": {"hardware": "absent", "part": "leg", "view": "frontal"},
              "a": {"hardware": "present", "part": "hip", "view": "lateral"}}
    path = write_subgroups(subgroups_path(tmp_path, "ds"), groups)
    assert path == tmp_path / "data" / "ds-subgroups.csv"
    assert path.read_text().splitlines()[:2] == ["id,hardware,part,view", "a,present,hip,lateral"]
    assert read_subgroups(path) == groups
    (tmp_path / "bad.csv").write_text("id,part\nx,leg\n")
    with pytest.raises(ValueError, match="bad.csv.*hardware.*fracbench data subgroups"):
        read_subgroups(tmp_path / "bad.csv")


def _fake_folder(tmp_path: Path, rng: np.random.Generator, *, shortcut: bool) -> tuple[Path, dict, list]:
    """A results folder with one record whose test predictions are written with fracbench.results.

    shortcut=True: every image with hardware is fractured and scores high; without hardware the score is
    noise, so hardware alone explains the AUROC. shortcut=False: the score carries the label everywhere.
    """
    results = tmp_path / "fakeds"
    n = 800
    ids = [f"IMG{i:04d}" for i in range(n)]
    hardware = np.arange(n) < 240
    if shortcut:
        y = np.where(hardware, 1, (rng.random(n) < 0.2).astype(int))
        score = np.where(hardware, 0.9 + 0.1 * rng.random(n), 0.8 * rng.random(n))
    else:
        y = rng.integers(0, 2, n)
        score = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    parts = np.where(np.arange(n) % 2 == 0, "hand", "leg")
    parts[:10] = "hip"  # a subgroup below MIN_SUBGROUP
    groups = {i: {"hardware": "present" if h else "absent", "part": str(p), "view": "frontal"}
              for i, h, p in zip(ids, hardware, parts)}
    write_subgroups(subgroups_path(results, "fakeds"), groups)
    d = R.run_dir(results, "exp_a", 3)
    d.mkdir(parents=True)
    R.write_record(d, {"experiment": "exp_a", "seed": 3, "status": "complete", "dataset": "fakeds",
                       "threshold": 0.5, "metrics": {"test": {}}})
    rows = [(i, "test", int(lab), float(s)) for i, lab, s in zip(ids, y, score)]
    R.write_predictions(d, [("VAL1", "val", 1, 0.1), *rows])
    return results, groups, rows


def test_per_subgroup_numbers_match_an_independent_computation(tmp_path: Path) -> None:
    results, groups, rows = _fake_folder(tmp_path, np.random.default_rng(0), shortcut=False)
    [res] = subgroup_results(load_runs(results), groups, n_boot=200)
    assert (res["experiment"], res["seed"]) == ("exp_a", 3)
    by = {(r["attribute"], r["value"]): r for r in res["rows"]}
    for (attr, value), r in by.items():
        sub = [(lab, s) for i, _, lab, s in rows if groups[i][attr] == value]
        y = np.array([lab for lab, _ in sub])
        s = np.array([x for _, x in sub])
        assert r["n"] == len(sub) and r["fractured"] == int(y.sum())
        if len(sub) < MIN_SUBGROUP:
            assert r["status"] == "small" and r["auroc"] is None
            continue
        assert r["auroc"] == pytest.approx(roc_auc_score(y, s))
        lo, hi = r["auroc_ci"]
        assert lo < r["auroc"] < hi and hi - lo < 0.3
        tp = int(((s >= 0.5) & (y == 1)).sum())
        tn = int(((s < 0.5) & (y == 0)).sum())
        assert r["sensitivity"] == pytest.approx(tp / y.sum())
        assert r["sensitivity_ci"] == pytest.approx(wilson_ci(tp, int(y.sum())))
        assert r["specificity"] == pytest.approx(tn / (y == 0).sum())
    assert by[("part", "hip")]["status"] == "small"
    y_all = np.array([lab for _, _, lab, _ in rows])
    s_all = np.array([s for *_, s in rows])
    absent = np.array([groups[i]["hardware"] == "absent" for i, *_ in rows])
    summary = res["summary"]
    assert summary["auroc_all"] == pytest.approx(roc_auc_score(y_all, s_all))
    assert summary["auroc_absent"] == pytest.approx(roc_auc_score(y_all[absent], s_all[absent]))
    # the score carries the label in both groups: most of the AUROC survives without hardware
    lo, hi = summary["share_ci"]
    assert lo < summary["share"] < hi and lo > 0.5
    assert not share_verdict(summary).startswith("no evidence")


def test_a_hardware_shortcut_leaves_no_auroc_without_hardware(tmp_path: Path) -> None:
    results, groups, _ = _fake_folder(tmp_path, np.random.default_rng(1), shortcut=True)
    [res] = subgroup_results(load_runs(results), groups, n_boot=300)
    s = res["summary"]
    assert s["auroc_all"] > 0.85
    assert abs(s["auroc_absent"] - 0.5) < 0.1
    lo, hi = s["share_ci"]
    assert abs(s["share"]) < 0.25 and lo < 0.2 and hi < 0.5
    by = {(r["attribute"], r["value"]): r for r in res["rows"]}
    assert by[("hardware", "present")]["status"] == "one class"  # every hardware image is fractured


def test_write_tables_writes_the_subgroup_table_only_with_a_subgroups_file(tmp_path: Path) -> None:
    results, _, _ = _fake_folder(tmp_path, np.random.default_rng(2), shortcut=True)
    paths = write_tables(results, tmp_path / "out")
    assert tmp_path / "out" / "subgroups.md" in paths
    md = (tmp_path / "out" / "subgroups.md").read_text()
    assert "| exp_a | 3 | hardware | present | 240 | 240 | undefined (one class) |" in md
    assert "summary: without hardware vs all" in md
    assert f"no evidence (n < {MIN_SUBGROUP})" in md  # the 10 hip images
    subgroups_path(results, "fakeds").unlink()
    write_tables(results, tmp_path / "none")
    text = (tmp_path / "none" / "subgroups.csv").read_text()
    assert "no subgroups file" in text and "exp_a" not in text


def test_records_on_other_images_are_left_out(tmp_path: Path) -> None:
    results, groups, _ = _fake_folder(tmp_path, np.random.default_rng(3), shortcut=False)
    other = {k: v for k, v in groups.items() if k != "IMG0000"}  # one test id not covered
    table = subgroups_table(load_runs(results), other, n_boot=50)
    assert table.rows == [] and any("No complete record" in n for n in table.footnotes)


def test_subgroups_figure_only_with_a_subgroups_file(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from fracbench.claims.figures import _subgroups_figure

    results, _, _ = _fake_folder(tmp_path, np.random.default_rng(4), shortcut=False)
    assert _subgroups_figure(results, load_runs(results)) is None  # exp_a is none of the figure's experiments
    d = R.run_dir(results, "paper_cnn_honest", 0)
    d.mkdir(parents=True)
    R.write_record(d, {"experiment": "paper_cnn_honest", "seed": 0, "status": "complete", "threshold": 0.5})
    R.write_predictions(d, [(p["id"], p["split"], p["label"], p["score"])
                         for p in R.read_predictions(R.run_dir(results, "exp_a", 3))])
    fig = _subgroups_figure(results, load_runs(results))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "all test images" and "hardware: absent" in labels and "part: hip" not in labels
    subgroups_path(results, "fakeds").unlink()
    assert _subgroups_figure(results, load_runs(results)) is None
