"""Copy finding on planted copies of real radiographs, and on multiregion's own copy families.

``test_planted_copies``: FracAtlas radiographs (synthetic ones in smoke mode), each source given ONE
planted copy of one kind (fracbench.copies.KINDS, dealt in turn), so no copy is found through a sibling,
among distractor radiographs of the same set. Recall per kind and per turn-angle bin (Wilson 95% CIs),
and the originals joined to another original (exact copies FracAtlas ships, and near ones, drawn on a
sheet to be judged by eye). Sources and planting use seeds of their own, not the calibration's.

``test_multiregion_families``: how many of multiregion's ``N-rotated`` families (a source radiograph N and
its turned/zoomed/cropped copies, named so by the release: ground truth here, never an input) end as one
copy group, and how many distinct radiographs the set holds; the time of a warm prepare (index and groups cached).

Both write results/benchmarks/<date>-copies*.json with the environment (git commit, hardware).
"""

from __future__ import annotations

import glob
import json
import math
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from _benchlib import FRACATLAS_DEV, REPO_ROOT, SMOKE, check_target, describe, run_pedantic

pytest.importorskip("cv2")

MULTIREGION_DEV = (REPO_ROOT / ".." / "shared" / "data" / "multiregion").resolve()
N_SOURCES = 22 if SMOKE else 550  # one planted copy each, kinds dealt in turn: 50 per kind in full mode
N_DISTRACTORS = 10 if SMOKE else 1000
ANGLE_BINS = ((3, 15), (15, 30), (30, 45))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _images() -> list[np.ndarray]:
    n = N_SOURCES + N_DISTRACTORS
    if SMOKE or not FRACATLAS_DEV.is_dir():
        from fracbench.data.synthetic import render_case  # smoke: synthetic radiographs

        rng = np.random.default_rng(5)
        return [render_case(rng, 192, bool(rng.integers(2)), 0.5).pixels for _ in range(n)]
    from fracbench.data.decode import decode_image

    files = sorted(glob.glob(str(FRACATLAS_DEV / "images" / "*" / "*.jpg")))
    picked = np.random.default_rng(2026).choice(len(files), n, replace=False)
    return [decode_image(files[i]).pixels for i in picked]


def _write(name: str, report: dict) -> Path:
    from fracbench.io import atomic_write_json
    from fracbench.results import environment

    out = REPO_ROOT / "results" / "benchmarks" / f"{time.strftime('%Y-%m-%d')}-{name}{'-smoke' if SMOKE else ''}.json"
    atomic_write_json(out, {**environment("cpu"), "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), **report})
    return out


def test_planted_copies(benchmark):
    from fracbench.copies import KINDS, EncodedImages, find_copies, plant

    images = _images()
    rng = np.random.default_rng(77)
    src, copies, kind_of, angle_of = images[:N_SOURCES], [], [], []
    for s, px in enumerate(src):
        kind = KINDS[s % len(KINDS)]
        c, params = plant(px, kind, rng)
        copies.append(c)
        kind_of.append(kind)
        angle_of.append(abs(float(params.get("angle", 0.0))) % 90 if "turn" in kind else None)
    allimgs = images + copies
    enc = EncodedImages.from_pixels(allimgs)
    groups: list = []

    def run():
        groups[:] = find_copies(enc)

    secs = run_pedantic(benchmark, run, group="copies", rounds=1)
    describe(benchmark, images=len(allimgs), sources=N_SOURCES, distractors=N_DISTRACTORS)
    gid = {m: g for g, grp in enumerate(groups) for m in grp.members}
    n_orig = len(images)
    found = [gid.get(n_orig + c, -1) == gid.get(c, -2) for c in range(N_SOURCES)]
    per_kind = {}
    for kind in KINDS:
        ks = [f for f, k in zip(found, kind_of) if k == kind]
        per_kind[kind] = {"found": int(sum(ks)), "planted": len(ks), "recall": sum(ks) / len(ks) if ks else None,
                          "recall_ci95": wilson(int(sum(ks)), len(ks))}
    per_angle = {}
    for lo, hi in ANGLE_BINS:
        ks = [f for f, a in zip(found, angle_of) if a is not None and lo <= a < hi + 1e-9]
        per_angle[f"{lo}-{hi} deg"] = {"found": int(sum(ks)), "planted": len(ks), "recall_ci95": wilson(int(sum(ks)), len(ks))}
    joined = []
    for g in groups:
        originals = [m for m in g.members if m < n_orig]
        if len(originals) > 1:
            exact = len({enc.pixel_sha256[m] for m in originals}) == 1
            joined.append({"members": originals, "exact": exact})
    report = {
        "benchmark": "planted copies", "mode": "smoke" if SMOKE else "full",
        "source": "synthetic radiographs" if SMOKE or not FRACATLAS_DEV.is_dir() else "FracAtlas radiographs",
        "sources": N_SOURCES, "distractors": N_DISTRACTORS, "seconds": round(secs[0], 1),
        "per_kind": per_kind, "per_angle_bin": per_angle,
        "originals_joined": {"groups": len(joined), "images": sum(len(j["members"]) for j in joined),
                             "exact_groups": sum(j["exact"] for j in joined),
                             "near_groups": sum(not j["exact"] for j in joined), "of_originals": n_orig},
    }
    if not SMOKE and FRACATLAS_DEV.is_dir():
        _sheet([j["members"] for j in joined if not j["exact"]], allimgs)
    if not SMOKE:  # smoke numbers judge nothing: not written beside the measured ones
        _write("copies", report)
    for kind, v in per_kind.items():
        check_target(benchmark, f"recall {kind}", v["recall"], 0.95, at_least=True)


def _sheet(groups: list[list[int]], images: list[np.ndarray]) -> None:
    """The near groups among the originals, side by side, to be judged by eye (are they one radiograph?)."""
    from PIL import Image

    rows = []
    for members in groups[:40]:
        tiles = [np.asarray(Image.fromarray(images[m]).resize((120, 150))) for m in members[:4]]
        tiles += [np.zeros((150, 120), np.uint8)] * (4 - len(tiles))
        rows.append(np.hstack(tiles))
    if rows:
        import io

        from fracbench.io import atomic_write_bytes

        buf = io.BytesIO()
        Image.fromarray(np.vstack(rows)).save(buf, "PNG")
        atomic_write_bytes(REPO_ROOT / "results" / "benchmarks" / "copies-originals-joined.png", buf.getvalue())


@pytest.mark.skipif(SMOKE or not MULTIREGION_DEV.is_dir(), reason="needs ../shared/data/multiregion (full mode)")
def test_multiregion_families(benchmark):
    from fracbench.data import prepare

    prepared: list = []

    def run():
        prepared[:] = [prepare("multiregion", MULTIREGION_DEV, progress=False)]

    secs = run_pedantic(benchmark, run, group="copies", rounds=1)
    p = prepared[0]
    gid = {m: g for g, grp in enumerate(p.duplicates) for m in grp.members}
    fam: dict[tuple[str, str], set] = defaultdict(set)
    for i, r in enumerate(p.index.records):
        m = re.match(r"^(\d+)-rotated", Path(r.path).name)
        if m:
            fam[(Path(r.path).parent.name, m.group(1))].add(gid.get(i, ("single", i)))
    singles = int(p.index.ok.sum()) - sum(len(g.members) for g in p.duplicates)
    report = {"benchmark": "multiregion copy families", "warm_prepare_seconds": round(secs[0], 1),
              "images": int(p.index.ok.sum()), "n_rotated_families": len(fam),
              "families_as_one_group": sum(1 for v in fam.values() if len(v) == 1),
              "copy_groups": len(p.duplicates), "distinct_radiographs": len(p.duplicates) + singles}
    describe(benchmark, **report)
    out = _write("copies-multiregion", report)
    print(json.dumps(report), out)
    check_target(benchmark, "families as one group", report["families_as_one_group"] / max(1, len(fam)), 1.0,
                 at_least=True)
