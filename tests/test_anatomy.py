"""Claim anatomy on a small multiregion-layout tree with planted copies across the release's train/test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "copies"))
from test_copies import radiograph, turned  # noqa: E402

from fracbench.claims import anatomy  # noqa: E402
from fracbench.data import prepare  # noqa: E402


def _tree(root: Path) -> dict[str, str]:
    """train/test x fractured/not fractured; planted: an exact copy and a turned copy of train images in test."""
    layout = {}
    n = 0
    for split in ("train", "test"):
        for cls in ("fractured", "not fractured"):
            (root / split / cls).mkdir(parents=True)
    for k in range(8):
        cls = "fractured" if k % 2 else "not fractured"
        a = radiograph(100 + k)
        Image.fromarray(a).save(root / "train" / cls / f"{k}.png")
        n += 1
        if k == 0:  # byte-identical copy in test
            (root / "test" / cls / "0 - Copy.png").write_bytes((root / "train" / cls / "0.png").read_bytes())
            layout["exact"] = f"test/{cls}/0 - Copy"
        if k in (1, 3, 5):  # turned, zoomed copies in test (three, so that val's carve cannot take every source)
            Image.fromarray(turned(a, 7, 1.1)).save(root / "test" / cls / f"{k}-rotated1.jpg", quality=95)
            layout.setdefault("near", []).append((f"train/{cls}/{k}", f"test/{cls}/{k}-rotated1"))
    for k in range(2):  # test images with no copy in train
        Image.fromarray(radiograph(200 + k)).save(root / "test" / ("fractured" if k else "not fractured") / f"t{k}.png")
    return layout


@pytest.fixture()
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("FRACBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "mr"
    return root, _tree(root)


def test_published_split_keeps_the_release_and_counts_its_copies(tree):
    root, planted = tree
    p = prepare("multiregion", root, progress=False)
    assert p.split_mode == "published"
    split = {r.id: r.split for r in p.manifest.rows}
    # the release's test folder stays test, image by image, copies included
    assert split[planted["exact"]] == "test" and all(split[copy] == "test" for _, copy in planted["near"])
    assert {s for i, s in split.items() if i.startswith("train/")} <= {"train", "val"}
    shares = anatomy.copy_shares(p, p.manifest)
    assert shares["test_images"] == 6
    # a planted copy counts when its source stayed in train (val is carved from the release's train folder)
    exact_src = split["train/not fractured/0"] == "train"
    near_src = sum(split[src] == "train" for src, _ in planted["near"])
    assert near_src >= 2  # at most one of the three sources can be carved into val
    assert shares["test_exact_in_train"] == int(exact_src)  # only the byte copy
    assert shares["test_near_in_train"] == int(exact_src) + near_src  # the byte copy and the turned copies
    assert any(f.kind == "group_crosses_given_splits" for f in p.faults)


def test_grouped_split_puts_every_copy_on_one_side(tree):
    root, planted = tree
    p = prepare("multiregion", root, progress=False)
    g = p.manifest_for("grouped")
    split = {r.id: r.split for r in g.rows}
    assert split[planted["exact"]] == split["train/not fractured/0"]
    assert all(split[copy] == split[src] for src, copy in planted["near"])
    shares = anatomy.copy_shares(p, g)
    assert shares["test_exact_in_train"] == 0 and shares["test_near_in_train"] == 0
    assert g.fingerprint != p.manifest.fingerprint
    info = anatomy.leak_info(p, g, "grouped")
    assert info["split"] == "grouped" and info["nn_similarity"]["threshold"] == anatomy.NN_SIMILAR


def test_external_manifest_leaves_out_shared_images(tree, tmp_path):
    root, planted = tree
    base = prepare("multiregion", root, progress=False)
    ext_root = tmp_path / "ext"
    for cls in ("fractured", "not_fractured"):
        (ext_root / cls).mkdir(parents=True)
    # an external set whose images: one turned copy of a multiregion training image, the rest new
    Image.fromarray(turned(radiograph(103), -6, 1.05)).save(ext_root / "fractured" / "shared.png")
    for k in range(12):
        Image.fromarray(radiograph(300 + k)).save(ext_root / ("fractured" if k % 2 else "not_fractured") / f"e{k}.png")
    ext = prepare("imagefolder", ext_root, progress=False)
    # force every external image into its test split so the shared one is among them
    from dataclasses import replace

    ext.manifest.rows[:] = [replace(r, split="test") for r in ext.manifest.rows]
    combined, info = anatomy.external_manifest(base.manifest, ext, base)
    assert info["excluded_overlap"] == 1 and info["excluded_ids"] == ["fractured/shared"]
    test_rows = [r for r in combined.rows if r.split == "test"]
    assert len(test_rows) == 12 and all(r.id.startswith("imagefolder:") for r in test_rows)
    assert combined.abspath(test_rows[0]).is_file()
    assert {r.split for r in combined.rows} == {"train", "val", "test"}
    # the fingerprint does not depend on where the external set lies
    assert all(not Path(r.path).is_absolute() for r in combined.rows)
    np.testing.assert_equal(len(combined.rows), sum(r.split != "test" for r in base.manifest.rows) + 12)


@pytest.mark.slow
def test_multiregion_suite_runs_on_the_release_split_and_the_grouped_split(tree, tmp_path):
    """run --all --dataset multiregion: the published and grouped pairs train once each (one trajectory per
    pair), every record says its copies across splits; the external test without FracAtlas fails, saying how
    to give it, and the rest still completes."""
    import json

    from fracbench.cli import main

    root, _ = tree
    res = tmp_path / "res"
    code = main(["run", "--all", "--dataset", "multiregion", "--data-dir", str(root), "--profile", "smoke",
                 "--results", str(res), "--external-data-dir", f"fracatlas={tmp_path / 'nowhere'}", "--no-report",
                 "--quiet"])
    assert code == 1  # the external experiment failed; the others completed
    recs = {p.parent.parent.name: json.loads(p.read_text()) for p in res.glob("runs/*/seed0/record.json")}
    assert recs["multiregion_external"]["status"] == "failed"
    assert "--external-data-dir fracatlas=PATH" in recs["multiregion_external"]["error"]
    for split in ("published", "grouped"):
        a, h = recs[f"multiregion_{split}_as_published"], recs[f"multiregion_{split}_honest"]
        assert a["status"] == h["status"] == "complete"
        assert a["leak"]["split"] == h["leak"]["split"] == split
        assert a["trajectory_shared_with"] == [f"multiregion_{split}_honest"]
    assert recs["multiregion_published_honest"]["leak"]["test_near_in_train"] >= 2
    assert recs["multiregion_grouped_honest"]["leak"]["test_near_in_train"] == 0
    assert (res / "manifests" / "multiregion-grouped.csv").is_file()
