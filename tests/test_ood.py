"""Tests for fracbench.ood: the feature-space guard against inputs that are not radiographs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fracbench.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_ood_reference
from fracbench.data.synthetic import render_case
from fracbench.loader import to_input
from fracbench.models import create_model
from fracbench.ood import NO_REFERENCE, attach_reference, check_pixels, fit_reference, ood_score
from fracbench.predict import predict_paths

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


def test_sidecar_round_trip(with_reference: Path) -> None:
    meta = json.loads(with_reference.with_suffix(".json").read_text())
    ref = meta["ood_reference"]
    assert ref["dim_in"] == 16 and len(ref["precision"]) == 16 and ref["fit_images"] == 192
    assert ref["calibration_images"] == 96 and ref["quantile"] == 0.95
    ck = load_checkpoint(with_reference)
    assert ck.meta["ood_reference"] == ref
    # the threshold is the 95th percentile of the calibration distances under the stored (rounded) reference
    from fracbench.ood import _batches_features

    d = ood_score(ref, _batches_features(ck.model, "tiny_cnn", _batches(_radiographs(3, 96))))
    assert ref["threshold"] == pytest.approx(float(np.quantile(d, 0.95)), rel=1e-5)


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
    import shutil

    path, _ = trained
    dest = tmp_path / "c.safetensors"
    shutil.copyfile(path, dest)
    shutil.copyfile(path.with_suffix(".json"), dest.with_suffix(".json"))
    px = _radiographs(7, 60)
    splits = np.array(["train"] * 40 + ["val"] * 20)
    cache = SimpleNamespace(array=px, failed={0: "unreadable", 45: "unreadable"},
                            indices=lambda s: np.flatnonzero(splits == s),
                            manifest=SimpleNamespace(fingerprint="f" * 64, dataset="synthetic"))
    ref = attach_reference(dest, cache)
    assert ref["fit_images"] == 39 and ref["calibration_images"] == 19  # failed rows left out
    assert ref["manifest_sha256"] == "f" * 64 and ref["fit_split"] == "train"
    assert load_checkpoint(dest).meta["ood_reference"] == json.loads(json.dumps(ref))
