"""Dataset scanners on tiny trees: FracAtlas, MURA v1.1 and image folders; the dataset registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from _trees import MURA_CONFLICT, MURA_STUDIES, fracatlas_tree, mura_tree, save, smooth

from fracbench.data import DATASETS, open_dataset, prepare
from fracbench.data.fracatlas import FracAtlas
from fracbench.data.imagefolder import ImageFolder, class_label
from fracbench.data.mura import MURA
from fracbench.registry import UnknownNameError

pytestmark = pytest.mark.usefixtures("fresh_cache")


def _faults(listing, kind: str) -> list:
    return [f for f in listing.faults if f.kind == kind]


# ------------------------------------------------------------------ FracAtlas
def test_fracatlas_records_labels_parts_and_boxes(tmp_path: Path) -> None:
    root = fracatlas_tree(tmp_path / "FracAtlas")
    ds = open_dataset("fracatlas", root)
    assert isinstance(ds, FracAtlas) and FracAtlas.looks_like(ds.root)
    listing = ds.scan()
    recs = {r.id: r for r in listing.records}
    assert sorted(recs) == ["IMG0000001", "IMG0000002", "IMG0000003", "IMG0000004"]
    # the label comes from the folder, even where dataset.csv disagrees
    assert {i: r.label for i, r in recs.items()} == {
        "IMG0000001": 1, "IMG0000002": 1, "IMG0000003": 0, "IMG0000004": 0}
    assert {i: r.part for i, r in recs.items()} == {
        "IMG0000001": "hand", "IMG0000002": "leg", "IMG0000003": "mixed", "IMG0000004": ""}
    assert recs["IMG0000001"].boxes == ((4.0, 5.0, 10.5, 8.0), (20.0, 6.0, 3.0, 4.0))
    assert recs["IMG0000002"].boxes == ((1.0, 1.0, 5.0, 5.0),)
    assert recs["IMG0000003"].boxes == ()
    for r in recs.values():
        assert r.group == r.id and r.source == "fracatlas" and r.split == ""
        assert Path(r.path).is_file() and Path(r.path).is_absolute()


def test_fracatlas_every_fault_reported_with_its_kind(tmp_path: Path) -> None:
    root = fracatlas_tree(tmp_path / "FracAtlas").resolve()
    listing = FracAtlas(root).scan()
    by_kind: dict[str, list[str]] = {}
    for f in listing.faults:
        by_kind.setdefault(f.kind, []).append(Path(f.path).name)
    assert by_kind == {
        "label_conflict": ["IMG0000002.jpg"],
        "not_in_metadata": ["IMG0000004.jpg"],
        "missing_file": ["IMG0000009.jpg"],
        "annotation_size_mismatch": ["IMG0000002.jpg"],
    }
    (conflict,) = _faults(listing, "label_conflict")
    assert conflict.path == str(root / "images" / "Fractured" / "IMG0000002.jpg")
    assert "fractured=0" in conflict.detail and "folder label is used" in conflict.detail
    (mismatch,) = _faults(listing, "annotation_size_mismatch")
    assert "40x30" in mismatch.detail and "48x32" in mismatch.detail
    assert all(set(f.as_dict()) == {"path", "kind", "detail"} for f in listing.faults)


def _exif_jpeg(path: Path, pixels, orientation: int) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95, exif=exif)


def test_fracatlas_coco_size_is_checked_against_the_decoded_orientation(tmp_path: Path) -> None:
    import json

    from fracbench.data.decode import decode_image

    root = fracatlas_tree(tmp_path / "FracAtlas").resolve()
    coco_path = root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
    coco = json.loads(coco_path.read_text())
    # stored 48 wide x 32 high, EXIF orientation 6 (rotate 90): fracbench decodes it 32 wide x 48 high
    _exif_jpeg(root / "images" / "Fractured" / "IMG0000001.jpg", smooth(1, (32, 48)), 6)
    assert decode_image(root / "images" / "Fractured" / "IMG0000001.jpg").pixels.shape == (48, 32)
    coco["images"][0].update(width=32, height=48)  # annotated on the decoded (rotated) image
    # IMG0000003 stored 48x32 with orientation 8; COCO gives the stored size, not the decoded one
    _exif_jpeg(root / "images" / "Non_fractured" / "IMG0000003.jpg", smooth(3, (32, 48)), 8)
    coco["images"].append({"id": 3, "file_name": "IMG0000003.jpg", "width": 48, "height": 32})
    coco_path.write_text(json.dumps(coco))
    mismatches = {Path(f.path).name: f.detail for f in FracAtlas(root).scan().faults
                  if f.kind == "annotation_size_mismatch"}
    assert set(mismatches) == {"IMG0000001.jpg", "IMG0000002.jpg", "IMG0000003.jpg"}
    assert "EXIF orientation 6" in mismatches["IMG0000001.jpg"]
    assert "boxes fit the decoded image" in mismatches["IMG0000001.jpg"]
    assert "boxes do not fit the decoded image" in mismatches["IMG0000003.jpg"]
    assert "may be misplaced" in mismatches["IMG0000002.jpg"]


def test_fracatlas_missing_coco_is_a_fault_not_an_error(tmp_path: Path) -> None:
    root = fracatlas_tree(tmp_path / "FracAtlas")
    (root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json").unlink()
    listing = FracAtlas(root).scan()
    assert len(listing.records) == 4 and all(r.boxes == () for r in listing.records)
    assert [f.kind for f in listing.faults].count("missing_annotations") == 1


def test_fracatlas_wrong_folder_is_refused_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a FracAtlas folder") as exc:
        FracAtlas(tmp_path).scan()
    assert str(tmp_path.resolve()) in str(exc.value)


# ------------------------------------------------------------------ MURA
def test_mura_groups_parts_splits_and_label_conflict(tmp_path: Path) -> None:
    root = mura_tree(tmp_path / "MURA-v1.1").resolve()
    assert MURA.looks_like(root)
    listing = open_dataset("mura", root).scan()
    assert len(listing.records) == sum(n for *_, n in MURA_STUDIES)
    for r in listing.records:
        rel = Path(r.path).relative_to(root)
        official, part_dir, patient, study = rel.parts[:4]
        assert r.group == patient
        assert r.part == part_dir.removeprefix("XR_").lower()
        assert r.split == ("test" if official == "valid" else "")
        assert r.label == (1 if study.endswith("_positive") else 0)  # the folder name decides
        assert r.source == "mura"
    parts = {r.part for r in listing.records}
    assert parts == {"wrist", "elbow"}
    wrist1 = [r for r in listing.records if r.group == "patient00001"]
    assert len(wrist1) == 3 and {r.part for r in wrist1} == {"wrist"}
    assert {r.split for r in listing.records if r.group == "patient11185"} == {"test"}

    kinds = [f.kind for f in listing.faults]
    assert kinds == ["label_conflict", "label_conflict"]  # both images of the conflicting study
    for f in listing.faults:
        assert Path(f.path).parent == root / MURA_CONFLICT
        assert "train_labeled_studies.csv says 1" in f.detail


def test_mura_missing_listed_file_and_unlisted_file(tmp_path: Path) -> None:
    root = mura_tree(tmp_path / "MURA-v1.1").resolve()
    gone = root / "valid/XR_WRIST/patient11185/study1_positive/image2.png"
    gone.unlink()
    extra = save(root / "valid/XR_WRIST/patient11186/study1_negative/image9.png", smooth(999, 40))
    listing = MURA(root).scan()
    assert [f.path for f in listing.faults if f.kind == "missing_file"] == [str(gone)]
    assert [f.path for f in listing.faults if f.kind == "not_in_metadata"] == [str(extra)]


# ------------------------------------------------------------------ image folders
CLASS_NAMES = {
    "Fractured": 1, "not fractured": 0, "non_fractured": 0, "No-Fracture": 0, "positive": 1, "0": 0, "1": 1,
    "abnormal": 1, "normal": 0,
}


@pytest.mark.parametrize(("name", "label"), sorted(CLASS_NAMES.items()))
def test_class_name_variants(name: str, label: int) -> None:
    assert class_label(name) == label


@pytest.mark.parametrize("name", ["images", "fractures_and_more", "unknown", "2", ""])
def test_unknown_class_names(name: str) -> None:
    assert class_label(name) is None


def test_imagefolder_recognises_every_variant_and_reports_strays(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for seed, name in enumerate(CLASS_NAMES):
        save(root / name / f"img{seed}.png", smooth(seed, 24))
    save(root / "Fractured" / "nested" / "deep.jpg", smooth(50, 24), quality=90)
    (root / "unsure").mkdir()  # an empty folder is no class: reported
    (root / "normal" / "notes.txt").write_text("not an image")
    (root / "normal" / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored silently
    ds = open_dataset("imagefolder", root)
    assert isinstance(ds, ImageFolder) and ImageFolder.looks_like(ds.root)
    listing = ds.scan()
    got = {Path(r.path).parent.name if r.id != "Fractured/nested/deep" else "nested": r.label
           for r in listing.records}
    assert got == {**CLASS_NAMES, "nested": 1}
    assert all(r.split == "" and r.group == r.id for r in listing.records)
    assert {r.id for r in listing.records} >= {"Fractured/img0", "Fractured/nested/deep", "not fractured/img1"}
    faults = sorted((f.kind, Path(f.path).name) for f in listing.faults)
    assert faults == [("not_an_image", "notes.txt"), ("unknown_class_folder", "unsure")]
    assert ds.binary and ds.classes == ["not fractured", "fractured"]


def test_imagefolder_any_class_names_are_class_indices_in_sorted_order(tmp_path: Path) -> None:
    root = tmp_path / "cxr"
    names = ["Viral Pneumonia", "Covid", "Normal"]  # "Normal" alone would read as "not fractured"
    for k, name in enumerate(names):
        for j in range(2):
            save(root / name / f"{j}.png", smooth(10 * k + j, 24))
    ds = open_dataset("imagefolder", root)
    listing = ds.scan()
    assert listing.faults == []
    assert not ds.binary and ds.classes == ["Covid", "Normal", "Viral Pneumonia"]
    got = {r.id: r.label for r in listing.records}
    assert got == {"Covid/0": 0, "Covid/1": 0, "Normal/0": 1, "Normal/1": 1,
                   "Viral Pneumonia/0": 2, "Viral Pneumonia/1": 2}


def test_imagefolder_grades_and_a_stray_folder_make_classes_not_skips(tmp_path: Path) -> None:
    root = tmp_path / "grades"
    for split in ("train", "test"):
        for g in range(5):
            save(root / split / str(g) / "a.png", smooth(100 * (split == "test") + g, 24))
    save(root / "train" / "2" / "b.png", smooth(77, 24))
    save(root / "test" / "unsure" / "u.png", smooth(78, 24))  # not a grade: a sixth class, never skipped
    ds = ImageFolder(root)
    listing = ds.scan()
    assert listing.faults == []
    assert ds.classes == ["0", "1", "2", "3", "4", "unsure"] and not ds.binary
    assert sorted((r.split, r.label) for r in listing.records if r.split == "test") == [("test", k) for k in range(6)]
    assert ds.held_out == "test"
    p = prepare("imagefolder", root, progress=False)
    assert p.manifest.counts()["test"] == {"0": 1, "1": 1, "2": 1, "3": 1, "4": 1, "5": 1}


@pytest.mark.parametrize("held", ["val", "valid", "validation"])
def test_imagefolder_train_and_val_only_holds_val_out(tmp_path: Path, held: str) -> None:
    root = tmp_path / "tv"
    for k, split in enumerate(("train", held)):
        save(root / split / "fractured" / "a.png", smooth(10 * k + 1, 24))
        save(root / split / "normal" / "b.png", smooth(10 * k + 2, 24))
    ds = ImageFolder(root)
    listing = ds.scan()
    assert listing.faults == [] and ds.held_out == held
    assert {r.id.split("/")[0]: r.split for r in listing.records} == {"train": "train", held: "test"}


def test_imagefolder_test_folder_named(tmp_path: Path) -> None:
    root = tmp_path / "named"
    for k, split in enumerate(("train", "holdout", "test")):
        save(root / split / "fractured" / "a.png", smooth(10 * k + 1, 24))
        save(root / split / "normal" / "b.png", smooth(10 * k + 2, 24))
    ds = open_dataset("imagefolder", root, test_folder="holdout")
    listing = ds.scan()
    assert ds.held_out == "holdout"
    assert {r.id.split("/")[0]: r.split for r in listing.records} == {"train": "train", "holdout": "test"}
    assert [(f.kind, Path(f.path).name) for f in listing.faults] == [("bad_layout", "test")]
    assert "--test-folder" in listing.faults[0].detail
    with pytest.raises(FileNotFoundError, match="no folder 'nowhere'"):
        ImageFolder(root, test_folder="nowhere").scan()


def test_imagefolder_given_splits_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "split"
    seed = 0
    layout = {"train": ("fractured", "normal"), "valid": ("Fractured", "Not_Fractured"), "test": ("1", "0")}
    for split, classes in layout.items():
        for cls in classes:
            for k in range(3):
                seed += 1
                save(root / split / cls / f"{k}.png", smooth(seed, 24))
    listing = ImageFolder(root).scan()
    assert listing.faults == []
    want = {"train": "train", "valid": "val", "test": "test"}
    for r in listing.records:
        assert r.split == want[Path(r.path).relative_to(root.resolve()).parts[0]]
    p = prepare("imagefolder", root, progress=False)
    assert len(p.manifest.rows) == 18
    for row in p.manifest.rows:
        assert row.split == want[row.path.split("/")[0]], row
    assert {s: sum(c.values()) for s, c in p.manifest.counts().items()} == {"train": 6, "val": 6, "test": 6}


def test_imagefolder_ids_stay_unique_when_stems_repeat(tmp_path: Path) -> None:
    root = tmp_path / "stems"
    save(root / "fractured" / "scan.png", smooth(1, 24))
    save(root / "fractured" / "scan.jpg", smooth(2, 24), quality=90)
    save(root / "fractured" / "other.png", smooth(3, 24))
    save(root / "normal" / "scan.png", smooth(4, 24))
    ids = sorted(r.id for r in ImageFolder(root).scan().records)
    assert ids == ["fractured/other", "fractured/scan.jpg", "fractured/scan.png", "normal/scan"]


def test_imagefolder_skipped_root_folders_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "both"
    for seed, split in enumerate(("train", "val", "valid", "test")):
        save(root / split / "fractured" / "a.png", smooth(10 * seed + 1, 24))
        save(root / split / "normal" / "b.png", smooth(10 * seed + 2, 24))
    save(root / "fractured" / "loose.png", smooth(99, 24))
    listing = ImageFolder(root).scan()
    assert {r.path.split("/")[-3] for r in listing.records} == {"train", "valid", "test"}
    faults = sorted((f.kind, Path(f.path).name, f.detail) for f in listing.faults)
    assert [(k, n) for k, n, _ in faults] == [("bad_layout", "fractured"), ("bad_layout", "val")]
    assert "second val folder beside valid/" in faults[1][2]


def test_imagefolder_split_with_one_class_and_no_classes_reported(tmp_path: Path) -> None:
    root = tmp_path / "odd"
    save(root / "train" / "fractured" / "a.png", smooth(1, 24))
    save(root / "train" / "normal" / "b.png", smooth(2, 24))
    save(root / "test" / "fractured" / "c.png", smooth(3, 24))
    (root / "val" / "misc").mkdir(parents=True)
    kinds = sorted((f.kind, Path(f.path).name) for f in ImageFolder(root).scan().faults)
    assert kinds == [("bad_layout", "test"), ("bad_layout", "val"), ("unknown_class_folder", "misc")]


# ------------------------------------------------------------------ registry
def test_registry_lists_the_datasets() -> None:
    names = DATASETS.list()
    assert {"fracatlas", "mura", "imagefolder", "synthetic"} <= set(names)
    assert names == sorted(names) and list(DATASETS) == names
    assert DATASETS.list("f*") == ["fracatlas"]
    for name in names:
        cls = DATASETS.get(name)
        assert cls.name == name and (cls.__doc__ or "").strip()


@pytest.mark.parametrize(("typo", "meant"), [("fracatlass", "fracatlas"), ("FracAtlas", "fracatlas"),
                                            ("mur", "mura"), ("image_folder", "imagefolder")])
def test_unknown_dataset_suggests_a_close_match(typo: str, meant: str) -> None:
    with pytest.raises(UnknownNameError) as exc:
        DATASETS.get(typo)
    msg = str(exc.value)
    assert f"unknown dataset {typo!r}" in msg and f"Did you mean {meant!r}" in msg
    with pytest.raises(UnknownNameError, match=f"Did you mean '{meant}'"):
        open_dataset(typo, "/nonexistent")


def test_registry_refuses_a_second_registration() -> None:
    with pytest.raises(ValueError, match="already registered"):
        DATASETS.add("mura", MURA)
