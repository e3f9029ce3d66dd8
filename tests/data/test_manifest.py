"""prepare(): duplicate groups (exact, rotated, flipped, resized), grouped deterministic splits, faults."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from _trees import MURA_STUDIES, mura_tree, save, smooth, write_truncated_jpeg
from PIL import Image

from fracbench.data import prepare
from fracbench.data.base import SPLITS
from fracbench.data.manifest import COLUMNS, Manifest

pytestmark = pytest.mark.usefixtures("fresh_cache")

POS, NEG = "fractured", "not fractured"

# the planted copies: record ids of each group that must be found, and its kind
EXPECTED_GROUPS = {
    frozenset({f"{POS}/a0", f"{POS}/a0_copy"}): "exact",  # byte-identical
    frozenset({f"{POS}/a1", f"{POS}/a1_bmp"}): "exact",  # same pixels, other file format
    frozenset({f"{POS}/a2", f"{POS}/a2_rot90"}): "near",  # np.rot90
    frozenset({f"{NEG}/b0", f"{POS}/b0_flipped"}): "near",  # np.fliplr, and filed under the other class
    frozenset({f"{NEG}/b1", f"{NEG}/b1_big"}): "near",  # resized 64 -> 96 px
    frozenset({f"{NEG}/b2", f"{NEG}/b2_rot270_flip"}): "near",  # rotated and mirrored
}


def dup_tree(root: Path) -> Path:
    """An image folder of distinct images plus planted copies, a garbage .png and a truncated JPEG."""
    pos, neg = root / POS, root / NEG
    for k in range(8):
        save(pos / f"a{k}.png", smooth(10 + k))
    for k in range(12):
        save(neg / f"b{k}.png", smooth(40 + k))
    (pos / "a0_copy.png").write_bytes((pos / "a0.png").read_bytes())
    save(pos / "a1_bmp.bmp", smooth(11))
    save(pos / "a2_rot90.png", np.rot90(smooth(12)))
    save(pos / "b0_flipped.png", np.fliplr(smooth(40)))
    save(neg / "b1_big.png", np.asarray(Image.fromarray(smooth(41)).resize((96, 96), Image.Resampling.BILINEAR)))
    save(neg / "b2_rot270_flip.png", np.fliplr(np.rot90(smooth(42), 3)))
    (pos / "garbage.png").write_bytes(os.urandom(64) + b"definitely not a PNG")
    write_truncated_jpeg(neg / "trunc.jpg", seed=77)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return dup_tree(tmp_path / "dups").resolve()


def _groups(p) -> dict[frozenset, str]:
    recs = p.index.records
    return {frozenset(recs[i].id for i in g.members): g.kind for g in p.duplicates}


def test_planted_duplicates_are_grouped(tree: Path) -> None:
    p = prepare("imagefolder", tree, progress=False)
    assert _groups(p) == EXPECTED_GROUPS


def test_no_group_crosses_splits(tree: Path) -> None:
    p = prepare("imagefolder", tree, progress=False)
    m = p.manifest
    split_of = {r.id: r.split for r in m.rows}
    group_of = {r.id: r.group for r in m.rows}
    for ids in EXPECTED_GROUPS:
        assert len({split_of[i] for i in ids}) == 1, ids
        assert len({group_of[i] for i in ids}) == 1, ids  # merged into one manifest group
    splits_per_group: dict[str, set[str]] = defaultdict(set)
    for r in m.rows:
        splits_per_group[r.group].add(r.split)
    assert all(len(s) == 1 for s in splits_per_group.values())
    assert {r.split for r in m.rows} == set(SPLITS)  # 24 images: every split gets some


def test_manifest_is_deterministic_and_round_trips(tree: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a = prepare("imagefolder", tree, progress=False).manifest
    b = prepare("imagefolder", tree, progress=False).manifest  # from the index cache
    monkeypatch.setenv("FRACBENCH_CACHE", str(tmp_path / "other-cache"))
    c = prepare("imagefolder", tree, progress=False).manifest  # decoded afresh
    assert a.to_csv_bytes() == b.to_csv_bytes() == c.to_csv_bytes()
    assert a.fingerprint == b.fingerprint == c.fingerprint
    assert len(a.fingerprint) == 64

    path = a.write(tmp_path / "out" / "m.csv")
    assert path.read_bytes() == a.to_csv_bytes()
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    back = Manifest.read(path, "imagefolder", tree)
    assert back.rows == a.rows and back.fingerprint == a.fingerprint
    for r in back.rows:
        assert not Path(r.path).is_absolute() and back.abspath(r).is_file()
    assert {s: dict(c) for s, c in back.counts().items()} == a.counts()

    # prepare() can start from a saved manifest
    again = prepare("imagefolder", tree, progress=False, manifest_path=path)
    assert again.manifest.rows == a.rows


def test_split_seed_changes_the_split_not_the_images(tree: Path) -> None:
    a = prepare("imagefolder", tree, seed=0, progress=False).manifest
    b = prepare("imagefolder", tree, seed=1, progress=False).manifest
    assert sorted(r.id for r in a.rows) == sorted(r.id for r in b.rows)
    assert {r.id: r.split for r in a.rows} != {r.id: r.split for r in b.rows}


def test_unreadable_excluded_truncated_kept(tree: Path) -> None:
    p = prepare("imagefolder", tree, progress=False)
    ids = {r.id for r in p.manifest.rows}
    assert f"{POS}/garbage" not in ids
    assert f"{NEG}/trunc" in ids
    assert len(ids) == 8 + 12 + 6 + 1  # originals, copies and the truncated JPEG: all but the garbage
    kinds = {(f.kind, Path(f.path).name) for f in p.faults}
    assert kinds == {("unreadable", "garbage.png"), ("truncated", "trunc.jpg")}
    (bad,) = [f for f in p.faults if f.kind == "unreadable"]
    assert bad.path == str(tree / POS / "garbage.png") and "excluded" in bad.detail
    # the same faults come back from the index cache
    again = prepare("imagefolder", tree, progress=False)
    assert [f.as_dict() for f in again.faults] == [f.as_dict() for f in p.faults]


def test_manifest_read_refuses_foreign_files(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("file,label\na.png,1\n")
    with pytest.raises(ValueError, match="not a fracbench manifest"):
        Manifest.read(other, "x", tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(COLUMNS) + "\na,a.png,1,a,,holdout,00\n")
    with pytest.raises(ValueError, match="unknown split names"):
        Manifest.read(bad, "x", tmp_path)


def test_mura_patients_never_cross_splits_and_valid_stays_test(tmp_path: Path) -> None:
    root = mura_tree(tmp_path / "MURA-v1.1").resolve()
    p = prepare("mura", root, progress=False)
    m = p.manifest
    assert len(m.rows) == sum(n for *_, n in MURA_STUDIES)
    assert p.duplicates == []
    by_patient: dict[str, set[str]] = defaultdict(set)
    for r in m.rows:
        official, _part, patient = r.path.split("/")[:3]
        assert r.group == patient
        by_patient[patient].add(r.split)
        if official == "valid":
            assert r.split == "test", r
        else:
            assert r.split in ("train", "val"), r
    assert all(len(s) == 1 for s in by_patient.values()), by_patient
    assert "val" in {r.split for r in m.rows}  # val is carved out of the official train set
    assert [f.kind for f in p.faults] == ["label_conflict", "label_conflict"]



@pytest.mark.slow
def test_val_is_carved_only_from_train_groups_with_no_copy_in_test(tmp_path: Path) -> None:
    """A release with train/ and test/ folders and byte copies across them: the val carved from train keeps
    every test image's copies in train (the release's leak, as released) and holds no copy of a test image."""
    import shutil

    root = tmp_path / "release"
    copied = {}  # test file -> its planted copies in train (ground truth: byte-identical files)
    for cls, label in (("fractured", 1), ("not_fractured", 0)):
        for k in range(40):  # train images with no copy anywhere
            save(root / "train" / cls / f"solo{k}.png", smooth(1000 * label + k))
        for k in range(12):  # test images, each with two byte copies in train
            src = save(root / "test" / cls / f"t{k}.png", smooth(5000 + 1000 * label + k))
            copies = [root / "train" / cls / f"t{k}_copy{c}.png" for c in range(2)]
            for c in copies:
                shutil.copyfile(src, c)
            copied[f"test/{cls}/t{k}.png"] = {f"train/{cls}/{c.name}" for c in copies}
    m = prepare("imagefolder", root, progress=False).manifest
    split = {r.path: r.split for r in m.rows}
    assert {"train", "val", "test"} <= set(split.values())  # val is carved out of the train folder
    for test_path, copies in copied.items():
        assert split[test_path] == "test"
        assert {split[c] for c in copies} == {"train"}, (test_path, {c: split[c] for c in copies})
