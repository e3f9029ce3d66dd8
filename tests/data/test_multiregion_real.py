"""The real multiregion copy (../shared/data/multiregion): counts checked against the files themselves.

Every expected number here is computed in the test from the files (os.listdir, hashlib), not copied
from a run; fracbench's own numbers must agree with them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from fracbench.paths import REPO_ROOT

ROOT = REPO_ROOT.parent / "shared" / "data" / "multiregion"
FRACATLAS = REPO_ROOT.parent / "shared" / "data" / "fracatlas"
pytestmark = [pytest.mark.realdata, pytest.mark.slow,
              pytest.mark.skipif(not ROOT.is_dir(), reason=f"the multiregion copy is not at {ROOT}")]


def _files() -> dict[str, Path]:
    """id (path without suffix, relative to the root) -> file, for every file in the class folders."""
    out = {}
    for split in ("train", "test"):
        for cls in ("fractured", "not fractured"):
            for name in os.listdir(ROOT / split / cls):
                p = ROOT / split / cls / name
                if p.is_file() and not name.startswith("."):
                    out[p.relative_to(ROOT).as_posix()] = p
    return out


@pytest.fixture(scope="module")
def prepared():
    from fracbench.data import prepare

    return prepare("multiregion", ROOT, progress=False)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_published_split_is_the_release_and_every_file_is_kept(prepared):
    files = _files()
    m = prepared.manifest
    assert len(m.rows) == len(files)  # truncated files are predicted with a warning, never dropped
    by_folder = Counter(Path(r.path).parts[0] for r in m.rows)
    release = Counter(Path(k).parts[0] for k in files)
    assert by_folder == release
    assert {r.split for r in m.rows if r.path.startswith("test/")} == {"test"}
    assert {r.split for r in m.rows if r.path.startswith("train/")} == {"train", "val"}
    # labels come from the class folder
    assert all(r.label == (Path(r.path).parts[1] == "fractured") for r in m.rows)


def test_exact_copies_of_test_files_in_train_match_hashlib(prepared):
    from fracbench.claims.anatomy import copy_shares

    split = {r.path: r.split for r in prepared.manifest.rows}
    files = _files()
    sha = {k: _sha(p) for k, p in files.items()}
    train = {sha[k] for k, p in files.items() if split[p.relative_to(ROOT).as_posix()] == "train"}
    test = [k for k, p in files.items() if split[p.relative_to(ROOT).as_posix()] == "test"]
    expected = sum(sha[k] in train for k in test)
    shares = copy_shares(prepared, prepared.manifest)
    # by file bytes alone; fracbench also counts identical decoded pixels, so it may find more, never fewer
    assert shares["test_images"] == len(test)
    assert shares["test_exact_in_train"] >= expected > len(test) // 2
    assert shares["test_near_in_train"] >= shares["test_exact_in_train"]


def test_grouped_split_has_no_byte_identical_file_across_splits(prepared):
    g = prepared.manifest_for("grouped")
    by_sha: dict[str, set[str]] = {}
    for r in g.rows:
        by_sha.setdefault(_sha(ROOT / r.path), set()).add(r.split)
    assert all(len(s) == 1 for s in by_sha.values())
    assert {r.split for r in g.rows} == {"train", "val", "test"}


def _families() -> dict[tuple[str, str], list[str]]:
    """The release's ``N-rotated...`` files per class folder and source N: one source radiograph N turned up to
    about 45 degrees, zoomed and cropped (ground truth from the release's names; fracbench never reads them)."""
    fam: dict[tuple[str, str], list[str]] = {}
    for p in _files().values():
        m = re.match(r"^(\d+)-rotated", p.name)
        if m:
            fam.setdefault((p.parent.name, m.group(1)), []).append(p.relative_to(ROOT).as_posix())
    return fam


def test_every_turned_copy_family_is_one_group_and_never_crosses_the_grouped_split(prepared):
    """Each of the 99 ``N-rotated`` families (8,930 files) ends as one copy group, and the grouped split keeps
    each family on one side: the committed grouped manifest too, checked here against the names."""
    from fracbench.data.manifest import Manifest

    fam = _families()
    assert len(fam) == 99 and sum(map(len, fam.values())) > 8000
    group_of = {}
    for g, grp in enumerate(prepared.duplicates):
        for i in grp.members:
            group_of[Path(prepared.index.records[i].path).relative_to(ROOT).as_posix()] = g
    split_apart = [k for k, files in fam.items() if len({group_of.get(f, f) for f in files}) > 1]
    assert split_apart == []
    grouped = prepared.manifest_for("grouped")
    committed = REPO_ROOT / "results" / "multiregion" / "manifests" / "multiregion-grouped.csv"
    manifests = [grouped] + ([Manifest.read(committed, "multiregion", ROOT)] if committed.is_file() else [])
    for m in manifests:
        split = {r.path: r.split for r in m.rows}
        crossing = [k for k, files in fam.items() if len({split[f] for f in files if f in split}) > 1]
        assert crossing == [], f"manifest {m.fingerprint[:12]}: families across splits {crossing[:5]}"


def test_the_split_verifier_passes_the_grouped_split_and_finds_the_published_split_s_copies(prepared):
    from fracbench.claims.anatomy import verified_crossings

    assert verified_crossings(prepared, prepared.manifest_for("grouped")).crossings == []
    files = _files()
    sha = {k: _sha(p) for k, p in files.items()}
    split = {r.path: r.split for r in prepared.manifest.rows}
    train = {sha[k] for k in files if split[k] == "train"}
    byte_copies = sum(sha[k] in train for k in files if split[k] == "test")
    found = verified_crossings(prepared, prepared.manifest).crossings
    assert len(found) >= byte_copies  # every byte copy, and the turned ones beyond


def test_format_mix_and_the_tutorial_jpg_count(prepared):
    from fracbench.claims.anatomy import format_mix

    files = _files()
    fm = format_mix(prepared)
    test_suffixes = Counter(p.suffix for k, p in files.items() if k.startswith("test/"))
    assert fm["test"]["by_suffix"] == dict(sorted(test_suffixes.items()))
    assert fm["test"]["tutorial_jpg_count"] == test_suffixes[".jpg"] < fm["test"]["images"]


@pytest.mark.skipif(not FRACATLAS.is_dir(), reason=f"FracAtlas is not at {FRACATLAS}")
def test_fracatlas_images_in_multiregion_are_found_by_content():
    """multiregion kept FracAtlas' file names for the radiographs it took from it (converted and downscaled,
    so no byte is shared): the content match must find nearly all of those and almost nothing else."""
    from fracbench.claims.anatomy import shared_images
    from fracbench.data import prepare

    fa = prepare("fracatlas", FRACATLAS, progress=False)
    mr = prepare("multiregion", ROOT, progress=False)
    fa_ids = {r.id: i for i, r in enumerate(fa.index.records)}
    named = {Path(k).stem for k in _files() if re.fullmatch(r"IMG\d{7}", Path(k).stem)} & set(fa_ids)
    assert named, "the copy should hold FracAtlas radiographs"
    rows = sorted(fa_ids[n] for n in named)
    # the named ones plus as many other FracAtlas images as controls
    others = [i for i in range(len(fa.index.records)) if fa.index.records[i].id not in named and fa.index.ok[i]]
    controls = others[:: max(1, len(others) // len(rows))][: len(rows)]
    found = shared_images(fa, mr, rows + controls)
    hit = sum(i in found for i in rows)
    false = sum(i in found for i in controls)
    assert hit >= 0.9 * len(rows), f"{hit} of {len(rows)} FracAtlas images named in multiregion found by content"
    assert false <= 0.02 * len(controls), f"{false} of {len(controls)} other FracAtlas images matched"
