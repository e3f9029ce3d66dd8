"""Tests for fracbench.figures: which PNGs are written, that they are valid, deterministic and current."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fracbench import results as R
from fracbench.data.manifest import Manifest, ManifestRow
from fracbench.figures import caption, write_figures
from fracbench.io import atomic_write_json
from fracbench.tables import load_experiments

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
