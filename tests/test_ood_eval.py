"""Tests for fracbench.serving.ood_eval: the look-alike families, the summary's numbers, and that every family is flagged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fracbench.data.loader import to_input
from fracbench.data.synthetic import render_case
from fracbench.models import create_model
from fracbench.serving.checkpoint import load_checkpoint, save_checkpoint, write_ood_reference
from fracbench.serving.ood import check_pixels, fit_reference
from fracbench.serving.ood_eval import (
    LOOK_ALIKE_FAMILIES,
    LOOK_ALIKES,
    PROBES,
    fracatlas_bases,
    make_probes,
    probe_distances,
    summarise,
    wilson,
)

SIZE = 32
PER_FAMILY = 20


def _radiographs(seed: int, n: int) -> np.ndarray:
    return np.stack([render_case(np.random.default_rng([seed, i]), SIZE, i % 2 == 0, 0.5).pixels for i in range(n)])


def _batches(px: np.ndarray, size: int = 32) -> list[torch.Tensor]:
    return [to_input(torch.from_numpy(px[i:i + size]), 3) for i in range(0, len(px), size)]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny_cnn trained for 40 steps on synthetic radiographs, with a reference fitted and calibrated on others."""
    torch.manual_seed(0)
    model = create_model("tiny_cnn", image_size=SIZE)
    px = _radiographs(1, 128)
    y = torch.tensor([i % 2 == 0 for i in range(128)], dtype=torch.long)
    x = to_input(torch.from_numpy(px), 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(40):
        idx = torch.arange(step * 32, step * 32 + 32) % 128
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    path = save_checkpoint(tmp_path_factory.mktemp("ood_eval") / "tiny", model, model_name="tiny_cnn",
                           model_kwargs={}, image_size=SIZE, channels=3, threshold=0.5)
    ref = fit_reference(model, _batches(_radiographs(2, 192)), _batches(_radiographs(3, 96)), model_name="tiny_cnn",
                        channels=3)
    write_ood_reference(path, ref)
    return path


@pytest.fixture(scope="module")
def probes() -> dict[str, list[np.ndarray]]:
    return make_probes(PER_FAMILY, seed=0)


# --------------------------------------------------------------------------------------------
# the families


def test_families_are_deterministic_and_look_like_what_they_name() -> None:
    a, b = make_probes(2, seed=3), make_probes(2, seed=3)
    assert list(a) == [*PROBES, *LOOK_ALIKES]
    assert set(LOOK_ALIKE_FAMILIES) == {"photo-like scene", *LOOK_ALIKES}
    for name in a:
        assert all(np.array_equal(x, y) for x, y in zip(a[name], b[name])), name
        assert all(x.dtype == np.uint8 and min(x.shape[:2]) >= 5 for x in a[name]), name
    screen = a["radiograph photographed on a screen"][0].astype(float)
    assert screen.ndim == 3 and screen[..., 2].mean() > screen[..., 0].mean()  # a colour cast, blue over red
    page = a["scanned page with a small radiograph"][0]
    assert page.ndim == 2 and np.median(page) > 215  # mostly white paper
    assert a["UI screenshot"][0].ndim == 3
    fan = a["ultrasound-like speckle fan"][0]
    assert fan[-1].max() == 0 and fan[: fan.shape[0] // 2, fan.shape[1] // 2].mean() > 10  # a fan on black
    ct = a["CT-like round slice"][0]
    assert ct.shape[0] == ct.shape[1] and ct[:5, :5].mean() < 15 and ct[ct.shape[0] // 2].max() > 150


def test_look_alikes_are_built_on_the_given_radiographs() -> None:
    white = [np.full((300, 200), 255, np.uint8)]
    black = [np.zeros((300, 200), np.uint8)]
    for name in ("radiograph photographed on a screen", "scanned page with a small radiograph"):
        on_white = make_probes(1, seed=1, bases=white)[name][0].astype(float)
        on_black = make_probes(1, seed=1, bases=black)[name][0].astype(float)
        assert on_white.shape == on_black.shape and on_white.mean() > on_black.mean() + 2, name


# --------------------------------------------------------------------------------------------
# the numbers


def test_summary_counts_planted_distances() -> None:
    d_test = np.r_[np.full(95, 1.0), np.full(5, 3.0)]  # 5 of 100 test radiographs above the threshold 2
    d_probe = {"flat": np.full(10, 5.0), "CT-like round slice": np.r_[np.full(7, 5.0), np.full(3, 2.0)]}
    d_calib = np.r_[np.full(19, 1.0), 2.5]
    s = summarise(d_test, d_probe, 2.0, d_calib=d_calib, quantile=0.95)
    assert s["false_warnings"] == 5 and s["false_warning_rate"] == 0.05
    assert s["false_warning_rate_ci95"] == pytest.approx([0.02154, 0.11175], abs=1e-4)  # Wilson, by hand
    ct = s["families"]["CT-like round slice"]
    assert ct["warned"] == 7 and ct["recall"] == 0.7 and ct["kind"] == "look-alike"  # 2.0 is not above 2.0
    assert ct["recall_ci95"] == pytest.approx(list(wilson(7, 10)))
    assert s["families"]["flat"]["kind"] == "simple probe" and s["families"]["flat"]["recall"] == 1.0
    assert s["look_alike_recall"] == 0.7 and s["probe_warning_rate"] == 17 / 20
    cal = s["calibration_check"]
    assert cal["false_warning_rate"] == 0.05 and cal["expected_by_construction"] == 0.05
    assert "by construction" in cal["note"] and "not a performance figure" in cal["note"]


def test_wilson_matches_the_formula() -> None:
    lo, hi = wilson(0, 40)
    assert lo == 0.0 and hi == pytest.approx(0.0876, abs=1e-4)
    lo, hi = wilson(40, 40)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.0876, abs=1e-4)
    assert all(math.isnan(v) for v in wilson(0, 0))


# --------------------------------------------------------------------------------------------
# the guard flags every family

# each family's recall must stay at or above this with the tiny model (measured: 1.0 for all but the
# ultrasound fan, 0.7 at 20 images); a family falling below it is a family the guard no longer flags
MIN_RECALL = 0.5


@pytest.mark.slow  # ~15 s: trains the tiny model and generates 13 x 20 probes
def test_every_family_is_flagged_by_the_guard(guarded: Path, probes: dict[str, list[np.ndarray]]) -> None:
    ck = load_checkpoint(guarded)
    s = summarise(np.zeros(1), probe_distances(ck, probes), float(ck.meta["ood_reference"]["threshold"]))
    low = {n: f["recall"] for n, f in s["families"].items() if f["recall"] < MIN_RECALL}
    assert not low, f"families the guard no longer flags: {low}"
    # the recall is the guard's own decision (check_pixels, the path predict and the demo take)
    for name in LOOK_ALIKE_FAMILIES:
        flagged = [check_pixels(ck, img).flagged for img in probes[name][:5]]
        assert sum(flagged) == int((probe_distances(ck, {name: probes[name][:5]})[name] >
                                    ck.meta["ood_reference"]["threshold"]).sum()), name
        assert any(flagged), f"{name}: none of 5 flagged by check_pixels"


@pytest.mark.slow
def test_evaluate_end_to_end_on_a_synthetic_dataset(tmp_path: Path) -> None:
    """evaluate(): reference fitted on train, calibrated on val, test false warnings, every family reported."""
    from fracbench.data import prepare
    from fracbench.data.synthetic import SyntheticSpec, generate
    from fracbench.serving.ood_eval import evaluate

    root = tmp_path / "data"
    generate(SyntheticSpec(count=120, size=48, seed=5), root)
    prepared = prepare("synthetic", root, progress=False)
    manifest = prepared.manifest.write(tmp_path / "manifest.csv")
    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "ck" / "tiny", create_model("tiny_cnn", image_size=SIZE), model_name="tiny_cnn",
                         model_kwargs={}, image_size=SIZE, channels=3, threshold=0.5)
    res = evaluate(ck, "synthetic", manifest, root, out_dir=tmp_path / "out", per_family=4, progress=False)
    saved = json.loads((tmp_path / "out" / "ood_eval.json").read_text())
    assert saved["families"].keys() == res["families"].keys() == {*PROBES, *LOOK_ALIKES}
    assert res["reference_source"].startswith("fitted for this evaluation")
    assert "synthetic's test radiographs" in res["look_alike_base"]
    n_test = res["counts"]["test_radiographs"]
    assert n_test == len(prepared.manifest.split_rows("test"))
    assert res["false_warning_rate_ci95"] == pytest.approx(list(wilson(res["false_warnings"], n_test)))
    cal = res["calibration_check"]
    assert cal["split"] == "val" and cal["n"] == len(prepared.manifest.split_rows("val"))
    assert cal["false_warning_rate"] <= 0.05 + 1 / cal["n"]  # the 95th percentile: about 5% above it by construction
    assert (tmp_path / "out" / "ood_distances.png").stat().st_size > 1000


# --------------------------------------------------------------------------------------------
# real radiographs as the look-alikes' base


@pytest.mark.realdata
def test_fracatlas_radiographs_as_the_base(fracatlas_root: Path) -> None:
    bases = fracatlas_bases(fracatlas_root, n=2)
    assert len(bases) == 2 and all(b.ndim == 2 and min(b.shape) > 200 for b in bases)
    p = make_probes(2, seed=0, bases=bases)
    assert p["radiograph photographed on a screen"][0].ndim == 3
    assert p["scanned page with a small radiograph"][1].ndim == 2


# --------------------------------------------------------------------------------------------
# cross-check against pytorch-ood


def test_distance_matches_pytorch_ood_mahalanobis() -> None:
    """fracbench's score is a one-Gaussian Mahalanobis distance with a Ledoit-Wolf shrunk precision.

    pytorch-ood's ``Mahalanobis`` fits class means and an unshrunk shared covariance (the sum of centred
    outer products, not divided by N, plus 1e-6 on the diagonal) and scores half the squared distance to the
    nearest class mean. With one class and fracbench's precision replaced by the unshrunk one,
    ``d**2 == 2 * N * score`` exactly; with the shrunk precision the two rank images alike.
    """
    pood = pytest.importorskip("pytorch_ood.detector")
    from scipy.stats import spearmanr

    from fracbench.serving.ood import ood_score, reference_from_features

    rng = np.random.default_rng(0)
    mix = rng.normal(0, 1, (8, 8))
    train = rng.normal(0, 1, (500, 8)) @ mix
    test = np.r_[rng.normal(0, 1, (50, 8)) @ mix, rng.normal(3, 2, (50, 8))]  # 50 like train, 50 not
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # pytorch-ood allocates its means and covariance in the default dtype
    try:
        det = pood.Mahalanobis(None).fit_features(torch.from_numpy(train), torch.zeros(500, dtype=torch.long))
        theirs = det.predict_features(torch.from_numpy(test)).numpy()
    finally:
        torch.set_default_dtype(old)
    ref = reference_from_features(train, train[:10], layer="x")
    emp = dict(ref, precision=np.linalg.inv(np.cov(train - train.mean(0), rowvar=False, bias=True)).tolist(),
               center=train.mean(0).tolist())
    assert ood_score(emp, test) ** 2 == pytest.approx(2 * len(train) * theirs, rel=1e-4)
    rho = spearmanr(ood_score(ref, test), theirs).statistic
    assert rho > 0.9, f"Ledoit-Wolf shrinkage {ref['shrinkage']:.3f} reorders the images: Spearman {rho:.3f}"
