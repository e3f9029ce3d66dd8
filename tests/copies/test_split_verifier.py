"""The split verifier in a run: a split fracbench dealt with a copy across train and test stops the run with
the crossing pairs named; a user's own split is kept as given and its copies reported, not failed."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("cv2")
sys.path.insert(0, str(Path(__file__).parent))
from test_copies import radiograph, turned  # noqa: E402

from fracbench.claims import anatomy  # noqa: E402
from fracbench.data import prepare  # noqa: E402


def _folder(root: Path, splits: bool) -> None:
    for k in range(10):
        cls = "fractured" if k % 2 else "not fractured"
        sub = root / (("test" if k >= 8 else "train") if splits else "") / cls
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(radiograph(300 + k)).save(sub / f"r{k}.png")
    sub = root / ("test" if splits else "") / "fractured"
    sub.mkdir(parents=True, exist_ok=True)
    Image.fromarray(turned(radiograph(301), 30, 1.1)).save(sub / "r1_turned.png")  # a copy of r1


def _with_copy_in_test(manifest, copy_id: str, source_id: str):
    """The same rows with the copy dealt to test and its source to train: a grouping that missed the pair."""
    rows = [replace(r, split="test" if r.id == copy_id else "train" if r.id == source_id else r.split)
            for r in manifest.rows]
    return replace(manifest, rows=rows)


def test_a_dealt_split_with_a_copy_across_fails_naming_the_pair(tmp_path, monkeypatch):
    monkeypatch.setenv("FRACBENCH_CACHE", str(tmp_path / "cache"))
    _folder(tmp_path / "set", splits=False)
    p = prepare("imagefolder", tmp_path / "set", progress=False)
    assert p.dealt_by_fracbench()
    anatomy.check_dealt_split(p, p.manifest)  # the grouping put the pair on one side: passes
    leaky = _with_copy_in_test(p.manifest, "fractured/r1_turned", "fractured/r1")
    with pytest.raises(anatomy.SplitLeakError, match=r"fractured/r1_turned ~ fractured/r1 \(aligned\)"):
        anatomy.check_dealt_split(p, leaky)


def test_a_dealt_split_with_a_test_image_copied_in_val_fails_too(tmp_path, monkeypatch):
    """Val chooses the checkpoint and the threshold: a test image with a copy in val leaks into the test score
    as surely as one in train. The verifier checks the held-out boundary against train and val."""
    monkeypatch.setenv("FRACBENCH_CACHE", str(tmp_path / "cache"))
    _folder(tmp_path / "set", splits=False)
    p = prepare("imagefolder", tmp_path / "set", progress=False)
    rows = [replace(r, split="test" if r.id == "fractured/r1_turned" else "val" if r.id == "fractured/r1" else
                    "train" if r.split == "test" else r.split) for r in p.manifest.rows]
    leaky = replace(p.manifest, rows=rows)
    with pytest.raises(anatomy.SplitLeakError, match=r"fractured/r1_turned ~ fractured/r1 \(aligned\)"):
        anatomy.check_dealt_split(p, leaky)


def test_a_given_split_is_kept_image_by_image_and_its_copies_counted(tmp_path, monkeypatch):
    monkeypatch.setenv("FRACBENCH_CACHE", str(tmp_path / "cache"))
    _folder(tmp_path / "set", splits=True)
    p = prepare("imagefolder", tmp_path / "set", progress=False)
    split = {r.id: r.split for r in p.manifest.rows}
    # the user's test folder stays test, image by image, the copy included; nothing moved into it
    assert {i for i, s in split.items() if s == "test"} == {i for i in split if i.startswith("test/")}
    assert not p.dealt_by_fracbench()
    anatomy.check_dealt_split(p, p.manifest)  # a user's split is reported, never failed
    shares = anatomy.copy_shares(p, p.manifest)
    assert shares["test_images"] == 3
    assert shares["test_near_in_train"] == (1 if split["train/fractured/r1"] == "train" else 0)
    grouped = p.manifest_for("grouped")
    gsplit = {r.id: r.split for r in grouped.rows}
    assert gsplit["test/fractured/r1_turned"] == gsplit["train/fractured/r1"]


def test_dealing_repairs_a_grouping_that_missed_a_copy(tmp_path, monkeypatch):
    """Groups with a planted miss (no groups at all) and a seed that deals the copy and its source apart: the
    verifier's find joins them, and the split is dealt again with the pair on one side."""
    from fracbench.data.manifest import deal_verified, make_manifest

    monkeypatch.setenv("FRACBENCH_CACHE", str(tmp_path / "cache"))
    _folder(tmp_path / "set", splits=False)
    p = prepare("imagefolder", tmp_path / "set", progress=False)
    pos = {r.id: i for i, r in enumerate(p.index.records)}
    pair = {pos["fractured/r1_turned"], pos["fractured/r1"]}

    def apart(m) -> bool:
        s = {r.id: r.split for r in m.rows}
        return {s["fractured/r1_turned"], s["fractured/r1"]} == {"train", "test"}

    seed = next(s for s in range(200) if apart(make_manifest("imagefolder", p.dataset.root, p.index, [], seed=s)[0]))
    manifest, _, groups = deal_verified("imagefolder", p.dataset.root, p.index, [], seed=seed)
    assert not apart(manifest)
    assert any(pair <= set(g.members) for g in groups)
    unrepaired, _, same = deal_verified("imagefolder", p.dataset.root, p.index, [], seed=seed, dealt=False)
    assert apart(unrepaired) and same == []


def test_audit_reads_the_given_split_first_and_the_grouped_one_on_request(tmp_path, monkeypatch):
    """`fracbench audit imagefolder --split given|grouped` on a train/test folder with a turned copy across it: the
    given split keeps the user's 3 test files (not re-dealt) and its verifier counts the copy when its source
    stayed in train; the grouped split puts the pair on one side (no copy across)."""
    import json

    from fracbench.cli import main

    monkeypatch.setenv("FRACBENCH_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "set"
    _folder(data, splits=True)
    reports = {}
    for split in ("given", "grouped"):
        out = tmp_path / f"audit-{split}"
        assert main(["audit", "imagefolder", "--data-dir", str(data), "--split", split, "--out", str(out),
                     "--quiet"]) == 0
        reports[split] = json.loads((out / "audit.json").read_text())
    given, grouped = reports["given"], reports["grouped"]
    assert given["manifest"]["splits"]["test"] == 3  # the folder's own test files, image by image
    src_in_train = any(m["id"] == "train/fractured/r1" and m["split"] == "train"
                       for g in given["groups"] for m in g["members"])
    assert given["leaks"]["verified"]["test_images_with_a_copy_in_train"] == int(src_in_train)
    assert grouped["manifest"]["split_mode"] == "grouped"
    assert grouped["leaks"]["verified"]["test_images_with_a_copy_in_train"] == 0
