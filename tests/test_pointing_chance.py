"""The pointing game's chance rates (random peak, image centre) and its verdict relative to chance."""

from __future__ import annotations

import pytest

from fracbench.serving.cam import box_area_fraction, centre_in_boxes, pointing_chance


def test_box_area_fraction_is_the_union_over_the_image() -> None:
    assert box_area_fraction((100, 200), [(0, 0, 100, 50)]) == pytest.approx(0.25)
    # two overlapping boxes: union 50x50 + 50x50 - 25x50 overlap = 3750 of 20000
    assert box_area_fraction((100, 200), [(0, 0, 50, 50), (25, 0, 50, 50)]) == pytest.approx(3750 / 20000)
    assert box_area_fraction((10, 10), [(-5, -5, 10, 10)]) == pytest.approx(0.25)  # clipped at the border
    with pytest.raises(ValueError):
        box_area_fraction((0, 10), [])


def test_centre_in_boxes() -> None:
    assert centre_in_boxes((100, 100), [(40, 40, 20, 20)])
    assert not centre_in_boxes((100, 100), [(0, 0, 20, 20)])


def test_verdict_relative_to_chance() -> None:
    # 1 hit of 91 against boxes covering ~10% of each image: below a random peak
    low = pointing_chance(1, 91, [0.10] * 45 + [0.12] * 46, centre_hits=20)
    assert low["random_peak"]["rate"] == pytest.approx((0.10 * 45 + 0.12 * 46) / 91)
    assert low["random_peak"]["verdict"] == "below chance"
    assert low["image_centre"]["rate"] == pytest.approx(20 / 91) and low["image_centre"]["verdict"] == "below chance"
    high = pointing_chance(80, 91, [0.10] * 91, centre_hits=5)
    assert high["random_peak"]["verdict"] == "above chance" and high["image_centre"]["verdict"] == "above chance"
    same = pointing_chance(9, 91, [0.10] * 45 + [0.11] * 46, centre_hits=9)
    assert same["random_peak"]["verdict"].startswith("no evidence")
    assert same["image_centre"]["verdict"].startswith("no evidence")
    lo, hi = same["rate_ci95"]
    assert lo < 9 / 91 < hi


def test_overlap_with_a_wide_chance_interval_is_no_evidence() -> None:
    # chance 0.2 [~0.16, ~0.24]; 25/91 = 0.27 with Wilson [~0.19, ~0.37]: the intervals overlap
    r = pointing_chance(25, 91, [0.0, 0.4] * 45 + [0.2], centre_hits=0)
    assert r["rate_ci95"][0] > r["random_peak"]["rate_ci95"][0]
    assert r["random_peak"]["verdict"].startswith("no evidence")
