"""fracbench audit: planted duplicates, rotated and flipped copies, label conflicts, faults, leaky splits."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from fracbench.audit import audit, decode_group_images, write_audit
from fracbench.data import prepare
from fracbench.data.manifest import Manifest, ManifestRow


def smooth(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random grey image, distinct per seed (upsampled 8x8 noise)."""
    small = np.random.default_rng(seed).integers(0, 256, (8, 8)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def png(path: Path, pixels: np.ndarray, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("comment", text)  # other bytes, same pixels
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="PNG", pnginfo=info)
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """An image folder with one of everything the audit must find.

    fractured/: a + a_copy (byte-identical), b + b_meta (same pixels, other bytes), c + c_rot (rot90),
    d + d_flip (mirrored), e (whose byte-identical copy sits in not_fractured/), t.jpg (truncated),
    x.png (garbage); plus distinct filler images in both classes.
    """
    root = tmp_path_factory.mktemp("planted")
    fr, nf = root / "fractured", root / "not_fractured"
    png(fr / "a.png", smooth(1))
    (fr / "a_copy.png").write_bytes((fr / "a.png").read_bytes())
    png(fr / "b.png", smooth(2))
    png(fr / "b_meta.png", smooth(2), text="re-saved")
    png(fr / "c.png", smooth(3))
    png(fr / "c_rot.png", np.rot90(smooth(3)))
    png(fr / "d.png", smooth(4))
    png(fr / "d_flip.png", np.fliplr(smooth(4)))
    png(fr / "e.png", smooth(5))
    (nf / "e.png").parent.mkdir(parents=True, exist_ok=True)
    (nf / "e.png").write_bytes((fr / "e.png").read_bytes())
    buf = io.BytesIO()
    noisy = (smooth(6, 96).astype(np.int16) + np.random.default_rng(6).integers(0, 60, (96, 96))).clip(0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(buf, format="JPEG", quality=95)
    (fr / "t.jpg").write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * 0.6)])
    (fr / "x.png").write_bytes(np.random.default_rng(7).integers(0, 256, 500, dtype=np.uint8).tobytes())
    for k in range(10):
        png(fr / f"f{k}.png", smooth(100 + k))
        png(nf / f"n{k}.png", smooth(200 + k))
    return root


@pytest.fixture(scope="module")
def prepared(planted):
    return prepare("imagefolder", planted, progress=False)


def _group_ids(report: dict) -> list[set[str]]:
    return [{m["id"] for m in g["members"]} for g in report["groups"]]


def test_planted_duplicates_are_found_and_counted(prepared) -> None:
    squares, thumbs = decode_group_images(prepared)
    r = audit(prepared, pixels=squares)
    ex = r["exact_duplicates"]
    assert ex["by_file_hash"] == {"groups": 2, "images": 4, "redundant_copies": 2}  # a, e
    assert ex["by_pixel_hash"] == {"groups": 3, "images": 6, "redundant_copies": 3}  # a, b, e
    assert ex["pixel_identical_but_different_files"]["groups"] == 1  # b
    assert sorted(map(sorted, _group_ids(r))) == sorted([
        ["fractured/a", "fractured/a_copy"], ["fractured/b", "fractured/b_meta"], ["fractured/c", "fractured/c_rot"],
        ["fractured/d", "fractured/d_flip"], ["fractured/e", "not_fractured/e"]])
    dg = r["duplicate_groups"]
    assert (dg["total"], dg["exact"], dg["near"]) == (5, 3, 2)
    assert dg["near_pairs_by_transform"] == {"horizontal flip": 1, "rot90": 1}
    assert dg["pixel_check"]["unconfirmed_pairs"] == 0 and dg["pixel_check"]["size"] == 64
    by_id = {m["id"]: m for g in r["groups"] for m in g["members"]}
    assert by_id["fractured/c_rot"]["transform"] == "rot90" and by_id["fractured/c_rot"]["mean_abs_diff"] < 1
    assert by_id["fractured/d_flip"]["transform"] == "horizontal flip"
    assert by_id["fractured/a_copy"]["match"] == "file" and by_id["fractured/b_meta"]["match"] == "pixels"
    # the conflicting pair is named
    assert [c["ids"] for c in r["conflicting_label_groups"]] == [["fractured/e", "not_fractured/e"]]
    assert r["conflicting_label_groups"][0]["labels"] == [1, 0]
    # faults
    assert r["faults"]["truncated"] == 1 and r["faults"]["unreadable"] == 1
    kinds = {f["path"]: f["kind"] for f in r["faults"]["files"]}
    assert kinds == {"fractured/t.jpg": "truncated", "fractured/x.png": "unreadable"}
    # fracbench's own split keeps every group on one side
    assert r["leaks"]["groups_crossing_splits"] == 0 and r["crossing_groups"] == []
    # class balance, with majority-class accuracy
    cb = r["class_balance"]
    assert cb["overall"]["total"] == len(prepared.manifest.rows) == 31  # 32 files, x.png unreadable
    assert set(cb["by_split"]) == {"train", "val", "test"}
    assert (cb["overall"]["fractured"], cb["overall"]["not_fractured"]) == (20, 11)
    assert cb["overall"]["majority_accuracy"] == pytest.approx(20 / 31)
    # thumbnails of every group member
    assert len(thumbs) == 10 and all(u.startswith("data:image/png;base64,") for u in thumbs.values())


def test_naive_manifest_leak_is_reported(prepared, tmp_path) -> None:
    """A split that puts a and its byte copy on two sides: the audit shows the crossing group."""
    rows = []
    for r in prepared.manifest.rows:
        split = {"fractured/a": "train", "fractured/a_copy": "test"}.get(r.id, r.split)
        rows.append(ManifestRow(r.id, r.path, r.label, r.id, r.part, split, r.sha256))
    naive = Manifest(prepared.manifest.dataset, prepared.manifest.root, rows)
    r = audit(prepared, naive)
    crossing = [set(c["ids"]) for c in r["crossing_groups"]]
    assert {"fractured/a", "fractured/a_copy"} in crossing
    assert r["manifest"]["source"] == "given"
    assert r["leaks"]["test_images_with_a_copy_in_train"] >= 1
    assert r["leaks"]["fracbench_manifest_groups_crossing"] == 0


def test_cli_writes_json_and_offline_html(planted, prepared, tmp_path) -> None:
    from fracbench.cli import main

    rows = [ManifestRow(r.id, r.path, r.label, r.id, r.part,
                        {"fractured/c": "train", "fractured/c_rot": "test"}.get(r.id, r.split), r.sha256)
            for r in prepared.manifest.rows]
    csv_path = Manifest(prepared.manifest.dataset, prepared.manifest.root, rows).write(tmp_path / "naive.csv")
    out = tmp_path / "out"
    assert main(["audit", "imagefolder", "--data-dir", str(planted), "--manifest", str(csv_path),
                 "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["root"] == "<data-dir>"
    assert [set(c["ids"]) for c in report["crossing_groups"]] == [{"fractured/c", "fractured/c_rot"}]
    page = (out / "audit.html").read_text()
    assert page.startswith("<!doctype html>") and "<style>" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing fetched from outside
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 10  # every member of every group
    assert "fractured/e" in page and "not_fractured/e" in page and "conflicting labels" in page
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_write_audit_is_atomic_and_relative(prepared, tmp_path) -> None:
    r = audit(prepared)
    paths = write_audit(r, tmp_path / "a")
    assert sorted(p.name for p in paths) == ["audit.html", "audit.json"]
    saved = json.loads(paths[0].read_text()) if paths[0].name == "audit.json" else json.loads(paths[1].read_text())
    assert str(prepared.dataset.root) not in json.dumps(saved)


# --------------------------------------------------------------------------------------------
# the FracAtlas dev copy: the numbers the tool establishes
# --------------------------------------------------------------------------------------------

CONFLICTING = [["IMG0002738", "IMG0004121"], ["IMG0002886", "IMG0004243"], ["IMG0002998", "IMG0004280"],
               ["IMG0003034", "IMG0004314", "IMG0004341"], ["IMG0004262", "IMG0002952"]]


@pytest.mark.realdata
@pytest.mark.slow
def test_fracatlas_audit(fracatlas_root, tmp_path) -> None:
    p = prepare("fracatlas", fracatlas_root, progress=False)
    squares, thumbs = decode_group_images(p)
    r = audit(p, pixels=squares)
    assert r["images_found"] == r["images_readable"] == 3471
    ex = r["exact_duplicates"]
    assert ex["by_file_hash"] == {"groups": 12, "images": 27, "redundant_copies": 15}
    assert ex["by_pixel_hash"] == {"groups": 79, "images": 163, "redundant_copies": 84}
    assert ex["pixel_identical_but_different_files"]["groups"] == 69
    dg = r["duplicate_groups"]
    assert (dg["total"], dg["exact"], dg["near"], dg["images"]) == (107, 71, 36, 227)
    # FracAtlas' near-duplicates are re-encoded copies, none rotated or mirrored; all confirmed by pixels
    assert dg["near_pairs_by_transform"] == {"identity": 36}
    assert dg["pixel_check"]["unconfirmed_pairs"] == 0
    assert [c["ids"] for c in r["conflicting_label_groups"]] == CONFLICTING
    assert r["faults"]["truncated"] == 59 and r["faults"]["unreadable"] == 0
    meta = {(f["kind"], Path(f["path"]).stem) for f in r["faults"]["metadata"]}
    assert meta == {("label_conflict", "IMG0003298"), ("metadata_inconsistent", "IMG0003298"),
                    ("annotation_size_mismatch", "IMG0002628")}
    assert r["leaks"]["groups_crossing_splits"] == 0
    assert r["class_balance"]["overall"] == pytest.approx(
        {"fractured": 609, "not_fractured": 2862, "total": 3471, "fractured_share": 609 / 3471,
         "majority_accuracy": 2862 / 3471})
    # every conflicting group is named in the written report
    write_audit(r, tmp_path, thumbs)
    page = (tmp_path / "audit.html").read_text()
    saved = json.loads((tmp_path / "audit.json").read_text())
    for ids in CONFLICTING:
        assert all(i in page for i in ids)
        assert ids in [c["ids"] for c in saved["conflicting_label_groups"]]
    assert page.count("src='data:image/png;base64,") == 227
    # a naive image-level random split of the same images leaks duplicates across train and test
    rng = np.random.default_rng(0)
    naive = Manifest(p.manifest.dataset, p.manifest.root,
                     [ManifestRow(x.id, x.path, x.label, x.id, x.part, str(rng.choice(["train", "val", "test"],
                                                                                      p=[0.7, 0.15, 0.15])),
                                  x.sha256) for x in p.manifest.rows])
    leaky = audit(p, naive, pixels=squares)
    assert leaky["leaks"]["groups_crossing_splits"] > 0
    assert leaky["leaks"]["fracbench_manifest_groups_crossing"] == 0
