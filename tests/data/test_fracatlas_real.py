"""`fracbench data info|split fracatlas` on the FracAtlas dev copy at ../shared/data/fracatlas.

Skips when the copy is absent. The first `data info` decodes all 3,471 images (about 20 s); the
index cache lives in one folder for the whole module, so that happens once.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fracbench import progress
from fracbench.cli import main

pytestmark = [pytest.mark.realdata, pytest.mark.slow]



# the ground truth below is computed here from the files, without fracbench (module-scoped: one pass)
@pytest.fixture(scope="module")
def truth(fracatlas_root: Path) -> dict[str, Any]:
    """Image count (dataset.csv rows), truncated files (PIL cannot load them in full) and the groups of
    pixel-identical images whose dataset.csv labels differ."""
    from PIL import Image, ImageFile, ImageOps

    with (fracatlas_root / "dataset.csv").open(newline="") as fh:
        label = {r["image_id"].rsplit(".", 1)[0]: int(r["fractured"]) for r in csv.DictReader(fh)}
    truncated, by_pixels = 0, defaultdict(list)
    for p in sorted(q for q in (fracatlas_root / "images").rglob("*") if q.is_file()):
        try:
            with Image.open(p) as im:
                im.load()
        except OSError:
            truncated += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            with Image.open(p) as im:
                g = ImageOps.exif_transpose(im).convert("L")
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        by_pixels[hashlib.sha256(g.tobytes() + str(g.size).encode()).hexdigest()].append(p.stem)
    conflicting = [set(g) for g in by_pixels.values() if len(g) > 1 and len({label[i] for i in g}) > 1]
    return {"images": len(label), "truncated": truncated, "conflicting_exact": conflicting}


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fracatlas-cache")


@pytest.fixture(autouse=True)
def _shared_cache(module_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FRACBENCH_CACHE", str(module_cache))
    quiet = progress.is_quiet()  # main() sets --quiet process-wide; put it back afterwards
    yield
    progress.set_quiet(quiet)


@pytest.fixture(scope="module")
def _runs() -> dict[str, Any]:
    return {}


@pytest.fixture
def info(fracatlas_root: Path, capsys: pytest.CaptureFixture[str], _runs: dict[str, Any]) -> dict[str, Any]:
    """The JSON of `data info fracatlas` (run once per module)."""
    if "info" not in _runs:
        rc = main(["data", "info", "fracatlas", "--data-dir", str(fracatlas_root), "--json", "--quiet"])
        out = capsys.readouterr().out
        assert rc == 0
        _runs["info"] = json.loads(out)
    return _runs["info"]


def _faults(info: dict[str, Any], kind: str) -> list[dict[str, str]]:
    return [f for f in info["faults"] if f["kind"] == kind]


def test_images_found(info: dict[str, Any], fracatlas_root: Path, truth: dict[str, Any]) -> None:
    assert info["dataset"] == "fracatlas" and Path(info["root"]) == fracatlas_root
    assert info["images_found"] == truth["images"]
    assert info["images_in_manifest"] == truth["images"]  # truncated files are kept, nothing is unreadable
    assert sum(sum(c.values()) for c in info["splits"].values()) == truth["images"]
    assert set(info["splits"]) == {"train", "val", "test"}
    assert set(info["body_parts"]) >= {"hand", "leg", "hip", "shoulder"}


def test_known_faults(info: dict[str, Any], truth: dict[str, Any]) -> None:
    (conflict,) = _faults(info, "label_conflict")
    assert Path(conflict["path"]).name == "IMG0003298.jpg" and "Fractured" in conflict["path"]
    truncated = _faults(info, "truncated")
    assert len(truncated) == truth["truncated"] == info["fault_counts"]["truncated"]
    assert all(f["path"].endswith(".jpg") for f in truncated)
    (mismatch,) = _faults(info, "annotation_size_mismatch")
    assert Path(mismatch["path"]).name == "IMG0002628.jpg"
    # COCO's 454x373 is the size after the file's EXIF orientation 8, which the decoder applies
    assert "EXIF orientation 8" in mismatch["detail"] and "fit the decoded image" in mismatch["detail"]
    assert "unreadable" not in info["fault_counts"]


def test_duplicate_groups_never_cross_splits(info: dict[str, Any]) -> None:
    groups = info["duplicate_groups"]
    assert groups and info["duplicate_group_count"] == len(groups)
    assert info["duplicate_images"] == sum(len(g["ids"]) for g in groups)
    for g in groups:
        assert len(g["ids"]) >= 2 and g["kind"] in ("exact", "near")
        assert len(g["splits"]) == 1 and g["splits"][0] in ("train", "val", "test"), g


def test_conflicting_label_groups_are_named(info: dict[str, Any], truth: dict[str, Any]) -> None:
    named = info["conflicting_label_groups"]
    # every pixel-identical group with differing dataset.csv labels is named (near-duplicates may add more)
    assert truth["conflicting_exact"]
    for group in truth["conflicting_exact"]:
        assert any(group <= set(g["ids"]) for g in named), group
    assert named == [g for g in info["duplicate_groups"] if len(set(g["labels"])) > 1]
    assert {"IMG0002886", "IMG0004243"} in [set(g["ids"]) for g in named]
    for g in named:
        assert set(g["labels"]) == {0, 1} and g["conflicting_labels"]


def test_split_twice_gives_identical_bytes(info: dict[str, Any], fracatlas_root: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], truth: dict[str, Any]) -> None:
    outs = [tmp_path / "first.csv", tmp_path / "second.csv"]
    for out in outs:
        assert main(["data", "split", "fracatlas", "--data-dir", str(fracatlas_root), "--out", str(out),
                     "--quiet"]) == 0
    capsys.readouterr()
    data = outs[0].read_bytes()
    assert data == outs[1].read_bytes()
    assert hashlib.sha256(data).hexdigest() == info["manifest_fingerprint"]

    rows = list(csv.DictReader(data.decode().splitlines()))
    assert len(rows) == truth["images"]
    splits_of_group: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        splits_of_group[r["group"]].add(r["split"])
        assert not Path(r["path"]).is_absolute() and (fracatlas_root / r["path"]).is_file()
    assert all(len(s) == 1 for s in splits_of_group.values())
    group_of = {r["id"]: r["group"] for r in rows}
    for g in info["duplicate_groups"]:
        assert len({group_of[i] for i in g["ids"]}) == 1, g  # copies share one manifest group
