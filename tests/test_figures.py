"""Tests for fracbench.claims.figures: which PNGs are written, that they are valid, deterministic and current."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fracbench import results as R
from fracbench.claims.figures import caption, write_figures
from fracbench.claims.tables import load_experiments
from fracbench.data.manifest import Manifest, ManifestRow
from fracbench.io import atomic_write_json

EXPERIMENTS = load_experiments()
N_TEST, N_VAL = 24, 12


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 32), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_results(tmp_path: Path) -> tuple[Path, Path]:
    """A small results tree: two Table 1 experiments x 2 seeds, one failed run, a manifest, a data folder."""
    import hashlib

    res, data = tmp_path / "results", tmp_path / "data"
    rows = []
    for i in range(N_TEST + N_VAL):
        blob = _png(i)
        (data / "images").mkdir(parents=True, exist_ok=True)
        (data / "images" / f"IMG{i:03d}.png").write_bytes(blob)
        split = "test" if i < N_TEST else "val"
        rows.append(ManifestRow(f"IMG{i:03d}", f"images/IMG{i:03d}.png", i % 3 == 0, f"IMG{i:03d}", "hand", split,
                                hashlib.sha256(blob).hexdigest()))
    rows = [ManifestRow(r.id, r.path, int(r.label), r.group, r.part, r.split, r.sha256) for r in rows]
    manifest = Manifest("synthetic", data, rows)
    manifest.write(res / "manifests" / "synthetic.csv")
    atomic_write_json(res / "data" / "synthetic.json", {
        "dataset": "synthetic", "images_found": len(rows), "images_in_manifest": len(rows),
        "manifest_fingerprint": manifest.fingerprint, "root": "<data-dir>",
        "splits": {"test": {"fractured": 8, "not_fractured": 16}, "val": {"fractured": 4, "not_fractured": 8}},
        "body_parts": {"hand": {"fractured": 12, "not_fractured": 24}},
        "fault_counts": {"unreadable": 1}, "faults": [{"kind": "unreadable", "path": "bad.png", "detail": "<oops>"}],
        "duplicate_group_count": 0, "duplicate_groups": [], "duplicate_images": 0, "conflicting_label_groups": []})
    for name, protocol in (("paper_cnn_as_published", "as_published"), ("paper_cnn_honest", "honest")):
        for seed in (0, 1):
            _fake_run(res, name, seed, protocol, manifest, rows)
    d = R.run_dir(res, "ref_resnet18", 0)
    R.write_record(d, {"experiment": "ref_resnet18", "seed": 0, "status": "failed", "profile": "smoke",
                       "error": "RuntimeError: <script>alert(1)</script>", "created": "2026-01-01T00:00:00+00:00"})
    return res, data


def _fake_run(res: Path, name: str, seed: int, protocol: str, manifest: Manifest, rows: list[ManifestRow]) -> None:
    rng = np.random.default_rng(100 + seed)
    d = R.run_dir(res, name, seed)
    epochs = [{"epoch": e, "train_loss": 0.7 - 0.1 * e + 0.01 * seed, "train_accuracy": 0.6 + 0.05 * e,
               "val_loss": 0.6, "val_accuracy": 0.7, "val_auroc": 0.75, "test_loss": 0.65 - 0.05 * e,
               "test_accuracy": 0.6 + 0.04 * e - 0.01 * seed, "test_auroc": 0.8} for e in range(5)]
    R.write_epochs(d, epochs)
    preds = [(r.id, r.split, r.label, float(np.clip(0.6 * r.label + 0.5 * rng.random(), 0, 1))) for r in rows]
    R.write_predictions(d, preds)
    y = np.array([p[2] for p in preds if p[1] == "test"])
    s = np.array([p[3] for p in preds if p[1] == "test"])
    pred = s >= 0.5
    test: dict[str, Any] = {"auroc": 0.8, "accuracy": float((pred == y).mean()), "majority_accuracy": 0.67,
                            "tp": int((pred & (y == 1)).sum()), "fp": int((pred & (y == 0)).sum()),
                            "tn": int((~pred & (y == 0)).sum()), "fn": int((~pred & (y == 1)).sum())}
    cfg = EXPERIMENTS[name].train_config("smoke", seed=seed).to_dict()
    R.write_record(d, {
        "experiment": name, "model": "paper_cnn", "protocol": protocol, "dataset": "synthetic",
        "manifest_sha256": manifest.fingerprint, "seed": seed, "config": cfg, "status": "complete",
        "epochs_run": 5, "selected_epoch": 4, "selected_on": "val_auroc", "threshold": 0.5,
        "threshold_source": "argmax of the two logits (0.5)", "metrics": {"test": test},
        "counts": {"train": 96, "val": N_VAL, "test": N_TEST, "test_denominator": N_TEST},
        "profile": "smoke", "table": "table1", "device": "cpu", "device_name": "Test CPU", "torch": "2.x-test",
        "python": "3.11", "git_commit": "abc123", "git_dirty": False, "created": f"2026-01-0{seed + 1}T00:00:00+00:00",
        "code_version": "0.1.0+src.test"})


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    return make_results(tmp_path)


def _names(paths: list[Path]) -> list[str]:
    return sorted(p.name for p in paths)


@pytest.mark.slow
def test_valid_deterministic_pngs_for_complete_runs_only(tree: tuple[Path, Path]) -> None:
    res, data = tree
    paths = write_figures(res, data_root=data, echo=lambda s: None)
    assert _names(paths) == ["confusion_table1.png", "curves_paper_cnn_as_published.png", "curves_paper_cnn_honest.png",
                             "examples_paper_cnn_as_published.png", "examples_paper_cnn_honest.png",
                             "roc_pr_table1.png"]
    for p in paths:
        assert p.parent == res / "figures"
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
            assert "Software" not in im.info
    assert not any("ref_resnet18" in p.name for p in paths)  # the failed run is not drawn
    assert not list((res / "figures").glob(".*.tmp"))
    assert all(caption(p.name) for p in paths)

    # the same records give the same bytes; figures of an earlier call that no longer apply go
    first = {p.name: p.read_bytes() for p in paths}
    (res / "figures" / "curves_gone.png").write_bytes(b"old")
    (res / "figures" / "notes.png").write_bytes(b"not ours")
    second = {p.name: p.read_bytes() for p in write_figures(res, data_root=data, echo=lambda s: None)}
    assert first == second
    assert not (res / "figures" / "curves_gone.png").exists()
    assert (res / "figures" / "notes.png").exists()  # files fracbench does not write are left alone


@pytest.mark.slow
def test_example_grid_skipped_without_images(tree: tuple[Path, Path], tmp_path: Path) -> None:
    res, data = tree
    said: list[str] = []
    paths = write_figures(res, out=tmp_path / "figs", echo=said.append)
    assert not any(p.name.startswith("examples_") for p in paths)
    assert any("no data folder" in s for s in said)
    assert (tmp_path / "figs" / "roc_pr_table1.png").exists()

    for p in (data / "images").iterdir():  # changed files: the checksums no longer match the manifest
        p.write_bytes(_png(999))
    said.clear()
    paths = write_figures(res, out=tmp_path / "figs", data_root=data, echo=said.append)
    assert not any(p.name.startswith("examples_") for p in paths)
    assert any("checksums" in s for s in said)


@pytest.mark.slow
def test_other_manifest_refused_for_examples(tree: tuple[Path, Path]) -> None:
    res, data = tree
    path = res / "manifests" / "synthetic.csv"
    path.write_bytes(path.read_bytes().replace(b",hand,", b",foot,"))
    said: list[str] = []
    paths = write_figures(res, data_root=data, echo=said.append)
    assert not any(p.name.startswith("examples_") for p in paths)
    assert any("not the manifest this run used" in s for s in said)


@pytest.mark.slow
def test_cli_figures(tree: tuple[Path, Path]) -> None:
    from fracbench.cli import main

    res, data = tree
    assert main(["figures", "--results", str(res), "--data-dir", str(data), "--quiet"]) == 0
    assert (res / "figures" / "examples_paper_cnn_honest.png").exists()
    assert json.loads((res / "data" / "synthetic.json").read_text())["dataset"] == "synthetic"


def _drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Capture each figure object as write_figures saves it, by file name."""
    import fracbench.claims.figures as F

    figs: dict[str, Any] = {}
    real = F._save

    def keep(fig: Any, path: Path) -> Path:
        figs[path.name] = fig
        return real(fig, path)

    monkeypatch.setattr(F, "_save", keep)
    return figs


def _line(ax: Any, label_start: str) -> Any:
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith(label_start)]
    return line


@pytest.mark.slow
def test_figures_draw_the_records_numbers(tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """What is drawn is what the records and predictions say (computed here from the values _fake_run wrote)."""
    res, data = tree
    for name, change in (("paper_cnn_honest", {"tn": 10, "fp": 3, "fn": 5, "tp": 6}), ("paper_cnn_as_published", None)):
        d = R.run_dir(res, name, 0)
        rec = json.loads((d / R.RECORD).read_text())
        for k in ("tn", "fp", "fn", "tp"):
            rec["metrics"]["test"].pop(k)
        if change:
            rec["metrics"]["test"].update(change)
        else:
            rec["threshold"] = 0.6
        rec.pop("schema_version")
        R.write_record(d, rec)
    figs = _drawn(monkeypatch)
    write_figures(res, data_root=data, echo=lambda s: None)

    # (a) learning curves: the mean over seeds 0 and 1 of the epochs _fake_run wrote, per epoch
    ax_loss, ax_acc = figs["curves_paper_cnn_honest.png"].axes[:2]
    train_loss = _line(ax_loss, "fracbench train loss")
    assert list(train_loss.get_xdata()) == [0, 1, 2, 3, 4]
    assert np.allclose(train_loss.get_ydata(), [np.mean([0.7 - 0.1 * e + 0.01 * s for s in (0, 1)]) for e in range(5)])
    test_acc = _line(ax_acc, "fracbench test accuracy")
    assert np.allclose(test_acc.get_ydata(), [np.mean([0.6 + 0.04 * e - 0.01 * s for s in (0, 1)]) for e in range(5)])
    assert "2 seeds" in test_acc.get_label()

    # (b) ROC of seed 0: the curve's area (trapezoids) is the rank AUROC of the predictions file
    ax_roc = figs["roc_pr_table1.png"].axes[0]
    preds = [p for p in R.read_predictions(R.run_dir(res, "paper_cnn_honest", 0)) if p["split"] == "test"]
    y = np.array([p["label"] for p in preds])
    s = np.array([p["score"] for p in preds])
    pos, neg = s[y == 1], s[y == 0]
    auroc = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    roc = _line(ax_roc, "paper_cnn_honest (AUROC")
    fpr, tpr = np.asarray(roc.get_xdata()), np.asarray(roc.get_ydata())
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) == pytest.approx(auroc, abs=1e-12)
    assert f"AUROC {auroc:.3f}" in roc.get_label()

    # (c) confusion matrices: the honest record's own counts (made distinct here), and for the as-published run,
    # whose counts are removed, the counts at its threshold (0.6) from its predictions, as rates per true class
    def cells(name: str) -> tuple[np.ndarray, dict[tuple[int, int], int]]:
        (ax,) = [a for a in figs["confusion_table1.png"].axes if a.get_title().startswith(name + "\n")]
        at = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text().split("\n")[0])
              for t in ax.texts}
        return np.array(ax.get_images()[0].get_array()), at

    def expect(tn: int, fp: int, fn: int, tp: int) -> tuple[np.ndarray, dict[tuple[int, int], int]]:
        return (np.array([[tn / (tn + fp), fp / (tn + fp)], [fn / (fn + tp), tp / (fn + tp)]]),
                {(0, 0): tn, (0, 1): fp, (1, 0): fn, (1, 1): tp})

    rates, at = cells("paper_cnn_honest")
    want_rates, want_at = expect(10, 3, 5, 6)
    assert at == want_at and np.allclose(rates, want_rates)
    pub = [p for p in R.read_predictions(R.run_dir(res, "paper_cnn_as_published", 0)) if p["split"] == "test"]
    yp, sp = np.array([p["label"] for p in pub]), np.array([p["score"] for p in pub]) >= 0.6
    rates, at = cells("paper_cnn_as_published")
    want_rates, want_at = expect(int(np.sum(~sp & (yp == 0))), int(np.sum(sp & (yp == 0))),
                                 int(np.sum(~sp & (yp == 1))), int(np.sum(sp & (yp == 1))))
    assert at == want_at and np.allclose(rates, want_rates)


@pytest.mark.slow
def test_figure_pixels_are_not_blank(tree: tuple[Path, Path]) -> None:
    """Every PNG has drawn content: many distinct colours, and not one flat colour over most of it."""
    res, data = tree
    for p in write_figures(res, data_root=data, echo=lambda s: None):
        with Image.open(p) as im:
            px = np.asarray(im.convert("RGB")).reshape(-1, 3)
        colours, counts = np.unique(px, axis=0, return_counts=True)
        assert len(colours) > 50, p.name
        assert counts.max() / len(px) < 0.97, p.name  # the background is not everything


def test_split_curves_show_the_papers_table1_beside_both_splits(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim anatomy's learning curves: published and grouped split per epoch, and the paper's Table 1
    values (baselines/paper_cnn_as_published.yaml), labelled as the paper's."""
    from test_splits import split_run

    from fracbench.claims.tables.splits import SPLIT_ROWS

    res = tmp_path / "results" / "multiregion"
    for i, (split, protocol, name) in enumerate(SPLIT_ROWS):
        d = split_run(res, name, split, protocol, 0.8, exact=30 if split == "published" else 0)
        R.write_epochs(d, [{"epoch": e, "train_accuracy": 0.8 + 0.02 * e, "test_accuracy": 0.6 + 0.01 * e + i / 100,
                            "train_loss": 0.5, "test_loss": 0.5} for e in range(8)])
    figs = _drawn(monkeypatch)
    names = [p.name for p in write_figures(res, echo=lambda s: None)]
    assert "curves_splits.png" in names
    ax_test, ax_train = figs["curves_splits.png"].axes[:2]
    paper = {pv.epoch: pv.value for pv in load_experiments()["paper_cnn_as_published"].paper
             if pv.metric == "test_accuracy" and pv.epoch is not None and pv.run is None}
    marks = _line(ax_test, "paper (Table 1): the paper's test accuracy")
    assert list(marks.get_xdata()) == sorted(paper) and list(marks.get_ydata()) == [paper[e] for e in sorted(paper)]
    assert 14 in paper  # the point the 15-epoch cpu profile reaches
    pub = _line(ax_test, "fracbench, published split, as published")
    grp = _line(ax_test, "fracbench, grouped split, as published")
    assert np.allclose(pub.get_ydata(), [0.6 + 0.01 * e for e in range(8)])
    assert np.allclose(grp.get_ydata(), [0.6 + 0.01 * e + 0.02 for e in range(8)])
    assert _line(ax_train, "paper (Table 1): the paper's train accuracy")
    assert "the paper's own Table 1" in caption("curves_splits.png")
