"""Keypoint near-copy detection: turned, zoomed, cropped and mirrored copies are found; other images are not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from fracbench.data import nearcopy as N

pytest.importorskip("cv2")


def radiograph(seed: int, size: int = 256) -> np.ndarray:
    """A textured grey picture with bone-like bars, joints and a marker: enough corners for ORB."""
    rng = np.random.default_rng(seed)
    im = Image.new("L", (size, size), 30)
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.integers(20, size - 60, 2)
        w, h = rng.integers(12, 30), rng.integers(60, 160)
        d.rounded_rectangle([x0, y0, x0 + w, min(size - 5, y0 + h)], radius=6, fill=int(rng.integers(140, 230)))
    for _ in range(8):
        x, y = rng.integers(10, size - 30, 2)
        r = int(rng.integers(6, 18))
        d.ellipse([x, y, x + r, y + r], fill=int(rng.integers(100, 250)))
    d.text((int(rng.integers(10, 60)), int(rng.integers(10, 60))), f"R{seed}", fill=255)
    noise = rng.normal(0, 6, (size, size))
    return np.clip(np.asarray(im.filter(ImageFilter.GaussianBlur(1.2)), np.float64) + noise, 0, 255).astype(np.uint8)


def turned(a: np.ndarray, degrees: float, zoom: float = 1.0, mirror: bool = False) -> np.ndarray:
    """A copy as public sets make them: turned a few degrees (black corners), zoomed and cropped back to size."""
    im = Image.fromarray(np.fliplr(a).copy() if mirror else a)
    im = im.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=0)
    w, h = im.size
    cw, ch = int(w / zoom), int(h / zoom)
    im = im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)).resize((224, 224))
    return np.asarray(im)


def mids(images: list[np.ndarray]) -> np.ndarray:
    return np.stack([N.mid_image(a) for a in images])


def test_turned_zoomed_mirrored_copies_are_confirmed_and_other_pictures_are_not():
    a, b = radiograph(1), radiograph(2)
    m = mids([a, turned(a, 7, 1.1), turned(a, -9, 1.05, mirror=True), b, turned(b, 4, 1.15)])
    found = N.find_near_copies(m, range(len(m)))
    pairs = {(min(i, j), max(i, j)) for i, j, _ in found}
    groups = _components(len(m), pairs)
    assert groups == [{0, 1, 2}, {3, 4}]
    assert all(chk.ncc >= N.MIN_NCC and chk.inliers >= N.MIN_INLIERS for _, _, chk in found)


def test_different_pictures_fail_the_check_even_when_forced_to_compare():
    a, b = radiograph(3), radiograph(4)
    m = mids([a, b])
    chk = N.Matcher(m).check(0, 1)
    assert not chk.confirmed
    same = N.Matcher(mids([a, turned(a, 6, 1.1)])).check(0, 1)
    assert same.confirmed, same


def test_known_pairs_are_not_checked_again():
    a = radiograph(5)
    m = mids([a, turned(a, 5), turned(a, -5)])
    checked = []
    joined = set()

    def same(i, j):
        checked.append((i, j))
        return {i, j} <= joined

    def join(i, j):
        joined.update((i, j))

    found = N.find_near_copies(m, range(3), same=same, join=join)
    # three images of one picture: two confirmations join all three, the third pair is skipped as known
    assert len(found) == 2


def test_nearest_similarity_sees_a_turned_copy_closer_than_another_picture():
    a, b, c = radiograph(6), radiograph(7), radiograph(8)
    sim = N.nearest_similarity(mids([turned(a, 8, 1.1), c]), mids([a, b]))
    assert sim[0] > 0.95 > sim[1]


def test_cross_copies_between_two_sets():
    a, b, c = radiograph(9), radiograph(10), radiograph(11)
    found = N.cross_copies(mids([turned(a, -6, 1.1), c]), mids([b, a]))
    assert [(i, j) for i, j, _ in found] == [(0, 1)]


def _components(n: int, pairs: set[tuple[int, int]]) -> list[set[int]]:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(j)] = find(i)
    comps: dict[int, set[int]] = {}
    for i in range(n):
        comps.setdefault(find(i), set()).add(i)
    return sorted((c for c in comps.values() if len(c) > 1), key=min)


@pytest.mark.parametrize("inliers,ncc,overlap,detail,expected", [
    (24, 0.90, 0.8, 0.5, False),  # two lateral forearms with other markers (multiregion): pixels differ
    (11, 0.86, 0.5, 0.5, False),  # two PA hands of different people
    (30, 0.96, 0.9, 0.20, False),  # two feet of different patients in one pose (FracAtlas): smooth pixels agree, detail not
    (93, 0.95, 0.8, 0.80, True),  # one radiograph turned and zoomed
    (9, 0.99, 0.9, 0.9, False),  # too few agreeing keypoints
    (40, 0.99, 0.3, 0.9, False),  # the warp leaves too little overlap to judge the pixels
])
def test_confirmation_rule_matches_the_calibration(inliers, ncc, overlap, detail, expected):
    assert N.PairCheck(inliers, ncc, overlap, 0, detail).confirmed is expected


def test_duplicate_groups_are_cached_by_content_and_rules(tmp_path, monkeypatch):
    from fracbench.data import dedup, prepare

    monkeypatch.setenv("FRACBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "set"
    for cls in ("fractured", "not fractured"):
        (root / cls).mkdir(parents=True)
    a = radiograph(60)
    Image.fromarray(a).save(root / "fractured" / "a.png")
    Image.fromarray(turned(a, 6, 1.1)).save(root / "fractured" / "a_turned.png")
    Image.fromarray(radiograph(61)).save(root / "not fractured" / "b.png")
    first = prepare("imagefolder", root, progress=False).duplicates
    assert [len(g.members) for g in first] == [2]

    def boom(*a, **k):
        raise AssertionError("searched again although nothing changed")

    monkeypatch.setattr(dedup, "_find_duplicates", boom)
    assert prepare("imagefolder", root, progress=False).duplicates == first
    # other rules are another key: searched again (and here that fails loudly)
    monkeypatch.setattr(N, "MIN_NCC", 0.5)
    with pytest.raises(AssertionError, match="searched again"):
        prepare("imagefolder", root, progress=False)
