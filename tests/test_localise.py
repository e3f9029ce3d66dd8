"""fracbench localise: pointing-game rates written beside the checkpoint and into its metadata.

Grad-CAM is replaced by a map whose peak sits at a chosen cell, so the expected hits follow from
the boxes alone (computed here from labels.csv and the rendered cases, not by fracbench.serving.cam).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from fracbench.cli import main
from fracbench.data import prepare
from fracbench.data.synthetic import SyntheticSpec, generate, render_case
from fracbench.models import create_model
from fracbench.serving import cam
from fracbench.serving.checkpoint import save_checkpoint

MAP = 32  # the checkpoint's image size: Grad-CAM maps come at model resolution


def _peak_at(cell: tuple[int, int]):
    def fake_cam_batch(checkpoint, x):
        maps = np.zeros((x.shape[0], MAP, MAP), np.float32)
        maps[:, cell[0], cell[1]] = 1.0
        return maps, np.full(x.shape[0], 0.5, np.float32)
    return fake_cam_batch


def _inside(cell: tuple[int, int], shape: tuple[int, int], boxes) -> bool:
    """The peak cell's centre, in image pixels, inside one of the (x, y, w, h) boxes."""
    y = (cell[0] + 0.5) * shape[0] / MAP
    x = (cell[1] + 0.5) * shape[1] / MAP
    return any(bx <= x <= bx + bw and by <= y <= by + bh for bx, by, bw, bh in boxes)


def _boxes(text: str) -> list[tuple[float, ...]]:
    return [tuple(float(v) for v in b.split()) for b in text.split(";") if b.strip()]


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "ck" / "best", create_model("tiny_cnn", image_size=MAP), model_name="tiny_cnn",
                           model_kwargs={}, image_size=MAP, channels=3, threshold=0.5)


@pytest.mark.parametrize("cell", [(16, 16), (2, 29), (27, 5), 0, 1, 2])
def test_localise_counts_dataset_hits_against_the_boxes(tmp_path, monkeypatch, cell):
    """A fixed peak cell, or (an int k) the cell at the centre of the k-th fractured image's first box."""
    data = generate(SyntheticSpec(count=120, size=64, seed=2), tmp_path / "syn")
    ck = _checkpoint(tmp_path)
    split = {r.id: r.split for r in prepare("synthetic", data, progress=False).manifest.rows}
    with (data / "labels.csv").open(newline="") as fh:
        fractured = [_boxes(r["boxes"]) for r in csv.DictReader(fh) if r["boxes"] and split[r["id"]] == "train"]
    if isinstance(cell, int):
        # the centre of a box that a peak with x and y swapped would miss
        centres = [(int((y + h / 2) * MAP / 64), int((x + w / 2) * MAP / 64)) for b in fractured for x, y, w, h in b]
        telling = [c for c in centres if not any(_inside(c[::-1], (64, 64), b) for b in fractured)]
        cell = telling[cell]
    monkeypatch.setattr(cam, "cam_batch", _peak_at(cell))
    assert main(["localise", str(ck), "--dataset", "synthetic", "--data-dir", str(data), "--split", "train",
                 "--synthetic", "0", "--quiet"]) == 0
    # every fractured train image with boxes (boxes from labels.csv), 64 x 64 pixels
    expected = sum(_inside(cell, (64, 64), b) for b in fractured)
    assert len(fractured) > 0
    out = json.loads((ck.parent / "pointing_game.json").read_text())["synthetic"]
    assert (out["n"], out["hits"], out["empty"]) == (len(fractured), expected, 0)
    assert out["rate"] == pytest.approx(expected / len(fractured))
    meta = json.loads(ck.with_suffix(".json").read_text())
    assert {k: meta["pointing_game"][k] for k in ("n", "hits")} == {"n": len(fractured), "hits": expected}


@pytest.mark.parametrize("cell", [(16, 16), (12, 20)])
def test_localise_counts_rendered_hits_against_the_boxes(tmp_path, monkeypatch, cell):
    data = generate(SyntheticSpec(count=20, size=64, seed=2), tmp_path / "syn")
    ck = _checkpoint(tmp_path)
    monkeypatch.setattr(cam, "cam_batch", _peak_at(cell))
    assert main(["localise", str(ck), "--dataset", "synthetic", "--data-dir", str(data), "--split", "val",
                 "--synthetic", "8", "--quiet"]) == 0
    # the same cases the command renders: seed 2024, 224 px (the checkpoint is smaller), all fractured
    rng = np.random.default_rng(2024)
    cases = [render_case(rng, 224, True, 1.0) for _ in range(8)]
    want = sum(_inside(cell, c.pixels.shape[:2], c.boxes) for c in cases)
    out = json.loads((ck.parent / "pointing_game.json").read_text())["rendered"]
    assert (out["n"], out["hits"]) == (8, want)
    assert out["rate"] == pytest.approx(want / 8)


def test_empty_maps_are_misses(tmp_path, monkeypatch):
    data = generate(SyntheticSpec(count=20, size=64, seed=2), tmp_path / "syn")
    ck = _checkpoint(tmp_path)
    monkeypatch.setattr(cam, "cam_batch", lambda c, x: (np.zeros((x.shape[0], MAP, MAP), np.float32),
                                                        np.full(x.shape[0], 0.5, np.float32)))
    assert main(["localise", str(ck), "--dataset", "synthetic", "--data-dir", str(data), "--split", "train",
                 "--synthetic", "5", "--quiet"]) == 0
    out = json.loads((ck.parent / "pointing_game.json").read_text())["rendered"]
    assert (out["n"], out["hits"], out["empty"], out["rate"]) == (5, 0, 5, 0.0)


def test_dataset_entry_survives_rendered_cases(tmp_path, monkeypatch):
    data = generate(SyntheticSpec(count=20, size=64, seed=2), tmp_path / "syn")
    ck = _checkpoint(tmp_path)
    monkeypatch.setattr(cam, "cam_batch", _peak_at((16, 16)))
    assert main(["localise", str(ck), "--dataset", "synthetic", "--data-dir", str(data), "--split", "train",
                 "--synthetic", "3", "--quiet"]) == 0
    meta = json.loads(ck.with_suffix(".json").read_text())
    assert meta["pointing_game"]["images"].startswith("train split")  # the dataset's entry, not the rendered one
