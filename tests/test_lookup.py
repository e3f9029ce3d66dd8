"""Tests for fracbench.serving.lookup: exact and near-duplicate lookup of an image in a dataset's index."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracbench.data import prepare
from fracbench.data.decode import decode_image
from fracbench.data.synthetic import render_case
from fracbench.serving.lookup import Lookup, Match, Query, build_lookup, parse_spec


def _xray(seed: int) -> np.ndarray:
    return render_case(np.random.default_rng([31, seed]), 96, seed % 2 == 0, 0.5).pixels


def make_leaky_folder(root: Path) -> dict[str, Path]:
    """train/ and test/ class folders of synthetic radiographs; test/ holds an exact copy of one train image
    and a rotated-and-flipped copy of another (re-encoded, so neither file nor pixel hash matches)."""
    for i in range(8):
        cls = "fractured" if i % 2 == 0 else "not fractured"
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_xray(i)).save(root / "train" / cls / f"tr{i}.png")
    for i in range(8, 11):
        cls = "fractured" if i % 2 == 0 else "not fractured"
        (root / "test" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_xray(i)).save(root / "test" / cls / f"te{i}.png")
    exact = root / "test" / "fractured" / "copy_of_tr2.png"
    shutil.copyfile(root / "train" / "fractured" / "tr2.png", exact)
    turned = root / "test" / "not fractured" / "turned_tr3.png"
    Image.fromarray(np.ascontiguousarray(np.fliplr(np.rot90(_xray(3))))).save(turned)
    return {"exact": exact, "turned": turned, "original": root / "train" / "fractured" / "tr2.png"}


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lookup, dict[str, Path]]:
    root = tmp_path_factory.mktemp("leaky")
    planted = make_leaky_folder(root)
    return build_lookup(prepare("imagefolder", root, progress=False)), planted


def test_exact_copy_is_found_with_its_split_and_label(leaky: tuple[Lookup, dict[str, Path]]) -> None:
    lookup, planted = leaky
    assert len(lookup) == 13
    path = planted["exact"]
    matches = lookup.query(decode_image(path).pixels, path.read_bytes())
    kinds = {m.path.split("/")[-1]: m.kind for m in matches}
    assert kinds == {"tr2.png": "exact file", "copy_of_tr2.png": "exact file"}, kinds
    train = next(m for m in matches if m.path.endswith("tr2.png") and "copy" not in m.path)
    assert train.label == 1 and train.split.startswith("train")  # the leak: a test image is a train image
    assert train.thumb.shape == (32, 32) and train.thumb.dtype == np.uint8
    # without the file's bytes, the decoded pixels still match exactly
    assert {m.kind for m in lookup.query(decode_image(path).pixels)} == {"exact pixels"}


def test_rotated_flipped_copy_is_a_near_duplicate(leaky: tuple[Lookup, dict[str, Path]]) -> None:
    lookup, planted = leaky
    matches = lookup.query(decode_image(planted["turned"]).pixels)
    by = {m.path.split("/")[-1]: m for m in matches}
    assert by["tr3.png"].kind == "near duplicate" and by["tr3.png"].transform != "identity"
    assert by["tr3.png"].split.startswith("train") and by["tr3.png"].label == 0
    assert by["turned_tr3.png"].kind == "exact pixels"  # the uploaded file itself is in the set too
    assert set(by) == {"tr3.png", "turned_tr3.png"}


def test_unrelated_image_matches_nothing_but_shows_nearest(leaky: tuple[Lookup, dict[str, Path]]) -> None:
    lookup, _ = leaky
    fresh = _xray(99)
    assert lookup.query(fresh) == []
    near = lookup.query(fresh, nearest=3)
    assert len(near) == 3 and {m.kind for m in near} == {"similar (not a copy)"}
    assert [m.hash_distance for m in near] == sorted(m.hash_distance for m in near)


def test_a_second_matcher_plugs_in(leaky: tuple[Lookup, dict[str, Path]]) -> None:
    lookup, _ = leaky

    class Always:
        name = "always-row-0"

        def match(self, query: Query, lk: Lookup) -> list[Match]:
            return [lk.match_of(0, "near duplicate", transform="keypoints", hash_distance=40)]

    lookup2 = Lookup(**{**lookup.__dict__, "matchers": [*lookup.matchers, Always()]})
    hits = lookup2.query(_xray(99))
    assert [(m.row, m.transform) for m in hits] == [(0, "keypoints")]


def test_parse_spec() -> None:
    assert parse_spec("fracatlas") == ("fracatlas", None)
    assert parse_spec("imagefolder:/data/x") == ("imagefolder", "/data/x")
    with pytest.raises(ValueError, match="DATASET"):
        parse_spec("imagefolder:")


def test_a_copy_turned_a_few_degrees_and_zoomed_is_found_by_the_keypoint_matcher(tmp_path: Path) -> None:
    import sys

    pytest.importorskip("cv2")
    sys.path.insert(0, str(Path(__file__).parent / "copies"))
    from test_copies import radiograph, turned

    for cls in ("fractured", "not fractured"):
        (tmp_path / cls).mkdir()
    for k in range(6):
        Image.fromarray(radiograph(40 + k)).save(tmp_path / ("fractured" if k % 2 else "not fractured") / f"r{k}.png")
    lookup = build_lookup(prepare("imagefolder", tmp_path, progress=False))
    query = turned(radiograph(43), 8, 1.1)  # r3, as public sets copy it: turned, zoomed, cropped
    matches = lookup.query(query)
    assert [(m.id, m.kind) for m in matches] == [("fractured/r3", "near duplicate")]
    assert matches[0].transform.startswith("turned/zoomed/cropped")
    for degrees, mirror in ((30, False), (45, False), (-40, True)):  # large turns, and a mirror
        hits = lookup.query(turned(radiograph(41), degrees, 1.1, mirror=mirror))
        assert [(m.id, m.kind) for m in hits] == [("fractured/r1", "near duplicate")], (degrees, mirror)
    # without the keypoint matcher the 90-degree/flip hash does not see it
    lookup.matchers = [m for m in lookup.matchers if m.name != "keypoints"]
    assert lookup.query(query) == []


def test_lookup_reads_the_checkpoint_s_own_manifest_and_says_what_it_searched(tmp_path: Path) -> None:
    """The splits shown are those of the manifest whose fingerprint the checkpoint's record names, not
    <dataset>.csv; a miss says what was searched."""
    import hashlib
    import json
    from dataclasses import replace

    from fracbench.serving.lookup import checkpoint_manifest_sha, load_lookup

    data = tmp_path / "data"
    make_leaky_folder(data)
    p = prepare("imagefolder", data, progress=False)
    res = tmp_path / "results"
    (res / "imagefolder" / "manifests").mkdir(parents=True)
    p.manifest.write(res / "imagefolder" / "manifests" / "imagefolder.csv")
    # the checkpoint's own split: every image in train (not the committed <dataset>.csv)
    own = replace(p.manifest, rows=[replace(r, split="train") for r in p.manifest.rows])
    own.write(res / "imagefolder" / "manifests" / "imagefolder-own.csv")
    sha = hashlib.sha256((res / "imagefolder" / "manifests" / "imagefolder-own.csv").read_bytes()).hexdigest()
    run = res / "imagefolder" / "runs" / "x" / "seed0"
    run.mkdir(parents=True)
    (run / "record.json").write_text(json.dumps({"manifest_sha256": sha}))
    (run / "best.safetensors").write_bytes(b"")
    assert checkpoint_manifest_sha(run / "best.safetensors") == sha
    lookup = load_lookup(f"imagefolder:{data}", res, progress=False, manifest_sha=sha)
    assert all(s == "train" or s.endswith("train (manifest)") for s in lookup.splits)
    assert "imagefolder-own.csv" in lookup.manifest_note
    default = load_lookup(f"imagefolder:{data}", res, progress=False)
    assert "test" in set(default.splits)
    missing = load_lookup(f"imagefolder:{data}", res, progress=False, manifest_sha="0" * 64)
    assert "not necessarily the ones the model was trained on" in missing.manifest_note
    assert lookup.searched().startswith(f"{len(lookup)} indexed images of imagefolder")
