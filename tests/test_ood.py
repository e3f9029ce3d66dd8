"""Tests for fracbench.serving.ood: the feature-space guard against inputs that are not radiographs."""

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
from fracbench.serving.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    write_ood_reference,
)
from fracbench.serving.ood import NO_REFERENCE, attach_reference, check_pixels, fit_reference
from fracbench.serving.predict import predict_paths

SIZE = 32


def _radiographs(seed: int, n: int) -> np.ndarray:
    return np.stack([render_case(np.random.default_rng([seed, i]), SIZE, i % 2 == 0, 0.5).pixels for i in range(n)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A tiny_cnn trained for 40 steps on synthetic radiographs, saved without a reference."""
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
    path = save_checkpoint(tmp_path_factory.mktemp("ood") / "tiny", model, model_name="tiny_cnn", model_kwargs={},
                           image_size=SIZE, channels=3, threshold=0.5)
    return path, model


def _batches(px: np.ndarray, size: int = 32) -> list[torch.Tensor]:
    return [to_input(torch.from_numpy(px[i:i + size]), 3) for i in range(0, len(px), size)]


@pytest.fixture(scope="module")
def with_reference(trained: tuple[Path, torch.nn.Module]) -> Path:
    path, model = trained
    ref = fit_reference(model, _batches(_radiographs(2, 192)), _batches(_radiographs(3, 96)), model_name="tiny_cnn",
                        channels=3)
    write_ood_reference(path, ref)
    return path


def _gradient() -> np.ndarray:
    return np.tile(np.linspace(0, 255, 300).astype(np.uint8), (200, 1))


def _colour_noise() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (150, 220, 3), dtype=np.uint8)


def test_training_like_images_pass_and_non_radiographs_warn(with_reference: Path) -> None:
    ck = load_checkpoint(with_reference)
    fresh = _radiographs(4, 60)  # never used to fit or calibrate
    flagged = [check_pixels(ck, p).flagged for p in fresh]
    # calibrated at the 95th percentile of 96 calibration images: expect ~5%; 20% leaves room for 60 draws
    assert sum(flagged) <= 12, f"{sum(flagged)} of 60 synthetic radiographs flagged"
    for name, px in [("flat", np.full((120, 120), 128, np.uint8)), ("black", np.zeros((80, 80), np.uint8)),
                     ("gradient", _gradient()), ("colour noise", _colour_noise())]:
        r = check_pixels(ck, px)
        assert r.flagged, f"{name}: distance {r.distance:.2f} under threshold {r.threshold:.2f}"
        assert r.status == "out of distribution" and "does not look like" in r.message()


def test_no_reference_means_no_warning_and_says_so(trained: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, model = trained
    bare = save_checkpoint(tmp_path / "bare", model, model_name="tiny_cnn", model_kwargs={}, image_size=SIZE,
                           channels=3, threshold=0.5)
    r = check_pixels(load_checkpoint(bare), np.full((50, 50), 128, np.uint8))
    assert not r.flagged and math.isnan(r.distance) and r.status == NO_REFERENCE
    assert NO_REFERENCE in r.message()


def test_predict_rows_carry_the_guard(with_reference: Path, tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(_colour_noise()).save(tmp_path / "noise.png")
    Image.fromarray(_radiographs(6, 1)[0]).save(tmp_path / "xray.png")
    rows, failures = predict_paths(load_checkpoint(with_reference), [tmp_path])
    by = {Path(r["file"]).name: r for r in rows}
    assert not failures
    assert by["noise.png"]["ood"] == "out of distribution"
    assert by["noise.png"]["decision"] == "no decision: out of distribution"  # not a class
    assert by["noise.png"]["ood_distance"] > load_checkpoint(with_reference).meta["ood_reference"]["threshold"]


def _brute_force_percentile(values: np.ndarray, q: float) -> float:
    """The linear-interpolation percentile written out by hand (not np.quantile, not fracbench's code)."""
    v = sorted(float(x) for x in values)
    pos = q * (len(v) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def test_sidecar_round_trip(with_reference: Path) -> None:
    meta = json.loads(with_reference.with_suffix(".json").read_text())
    ref = meta["ood_reference"]
    assert ref["dim_in"] == 16 and len(ref["precision"]) == 16 and ref["fit_images"] == 192
    assert ref["calibration_images"] == 96 and ref["quantile"] == 0.95
    ck = load_checkpoint(with_reference)
    assert ck.meta["ood_reference"] == ref
    # the threshold is the 95th percentile of the calibration distances under the stored (rounded) reference:
    # distances by an explicit loop over the stored mean and precision, percentile by hand
    from fracbench.serving.ood import _batches_features

    f = _batches_features(ck.model, "tiny_cnn", _batches(_radiographs(3, 96)))
    center, prec = np.asarray(ref["center"]), np.asarray(ref["precision"])
    d = [math.sqrt(sum((f[n, i] - center[i]) * prec[i, j] * (f[n, j] - center[j])
                       for i in range(16) for j in range(16))) for n in range(len(f))]
    assert ref["threshold"] == pytest.approx(_brute_force_percentile(np.array(d), 0.95), rel=1e-5)


def test_threshold_is_the_percentile_of_planted_distances() -> None:
    """Calibration points planted at Mahalanobis distances 1, 2, ..., 100: the 95th percentile is 95.05."""
    from fracbench.serving.ood import reference_from_features

    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (400, 6)) @ rng.normal(0, 1, (6, 6))
    probe = reference_from_features(train, train[:5], layer="x")
    center, prec = np.asarray(probe["center"]), np.asarray(probe["precision"])
    v = rng.normal(0, 1, 6)
    v /= math.sqrt(v @ prec @ v)  # one unit of Mahalanobis distance under the stored precision
    t = rng.permutation(np.arange(1, 101))
    ref = reference_from_features(train, center + t[:, None] * v[None, :], layer="x")
    assert ref["precision"] == probe["precision"]  # same training features, same reference
    assert ref["threshold"] == pytest.approx(95.05, rel=1e-5)
    assert ref["calibration_distance"]["max"] == pytest.approx(100.0, rel=1e-5)
    assert reference_from_features(train, center + t[:, None] * v[None, :], layer="x",
                                   quantile=0.5)["threshold"] == pytest.approx(50.5, rel=1e-5)


@pytest.mark.parametrize("tamper, match", [
    (lambda r: r.update(precision=r["precision"][:-1]), "precision"),
    (lambda r: r.update(center=r["center"] + [0.0]), "center"),
    (lambda r: r.update(dim_in=8), "center"),
    (lambda r: r.update(threshold="high"), "non-numeric"),
    (lambda r: r.pop("mean"), "lacks 'mean'"),
    (lambda r: r.update(version=99), "version"),
])
def test_tampered_reference_is_refused(with_reference: Path, tmp_path: Path, tamper, match: str) -> None:
    import shutil

    dest = tmp_path / "t.safetensors"
    shutil.copyfile(with_reference, dest)
    meta = json.loads(with_reference.with_suffix(".json").read_text())
    tamper(meta["ood_reference"])
    dest.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"t.json: damaged OOD reference: .*{match}"):
        load_checkpoint(dest)
    with pytest.raises(CheckpointError, match="damaged OOD reference"):
        write_ood_reference(dest, meta["ood_reference"])


def test_attach_reference_from_a_decode_cache(trained: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    """The real decode cache (build_cache over a manifest of 60 small PNGs, two of them unreadable)."""
    import hashlib
    import shutil

    from PIL import Image

    from fracbench.data.cache import build_cache
    from fracbench.data.manifest import Manifest, ManifestRow

    path, _ = trained
    dest = tmp_path / "c.safetensors"
    shutil.copyfile(path, dest)
    shutil.copyfile(path.with_suffix(".json"), dest.with_suffix(".json"))
    px = _radiographs(7, 60)
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i in range(60):
        f = data / f"{i:02d}.png"
        if i in (0, 45):
            f.write_bytes(b"not a png")  # fails to decode: the cache records it and decodes it as zeros
        else:
            Image.fromarray(px[i]).save(f)
        rows.append(ManifestRow(id=f"{i:02d}", path=f.name, label=i % 2, group=f"g{i}", part="forearm",
                                split="train" if i < 40 else "val", sha256=hashlib.sha256(f.read_bytes()).hexdigest()))
    man = Manifest("synthetic", data, rows)
    cache = build_cache(man, SIZE, root=tmp_path / "cache", progress=False)
    assert set(cache.failed) == {0, 45}
    ref = attach_reference(dest, cache)
    assert ref["fit_images"] == 39 and ref["calibration_images"] == 19  # failed rows left out
    assert ref["manifest_sha256"] == man.fingerprint and ref["fit_split"] == "train"
    assert ref["dataset"] == "synthetic" and ref["calibration_split"] == "val"
    assert load_checkpoint(dest).meta["ood_reference"] == json.loads(json.dumps(ref))
    # the failed rows' zeros are not in the fit: the same reference as one fitted on the readable images alone
    from fracbench.serving.ood import _batches_features, reference_from_features

    ck = load_checkpoint(dest)
    ok_train = [i for i in range(40) if i != 0]
    ok_val = [i for i in range(40, 60) if i != 45]
    f_train = _batches_features(ck.model, "tiny_cnn", _batches(np.asarray(cache.array[ok_train])))
    f_val = _batches_features(ck.model, "tiny_cnn", _batches(np.asarray(cache.array[ok_val])))
    again = reference_from_features(f_train, f_val, layer=ref["layer"])
    assert again["threshold"] == pytest.approx(ref["threshold"], rel=1e-6)
