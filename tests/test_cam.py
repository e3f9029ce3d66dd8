"""Tests for fracbench.serving.cam: Grad-CAM maps, overlays and the pointing game."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fracbench.data.synthetic import render_case
from fracbench.models import create_model
from fracbench.serving.cam import colorize, gradcam, overlay, peak_in_boxes, pointing_game
from fracbench.serving.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fracbench.serving.predict import predict_array

SIZE = 64


def _checkpoint(tmp: Path, name: str, model: torch.nn.Module | None = None) -> Checkpoint:
    torch.manual_seed(0)
    model = model or create_model(name, image_size=SIZE)
    path = save_checkpoint(tmp / name, model, model_name=name, model_kwargs={}, image_size=SIZE, channels=3,
                           threshold=0.5)
    return load_checkpoint(path)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Checkpoint]:
    tmp = tmp_path_factory.mktemp("cam")
    return {name: _checkpoint(tmp, name) for name in ("paper_cnn", "tiny_cnn")}


def _brightness_detector(tmp: Path) -> Checkpoint:
    """A tiny_cnn whose fracture logit is the mean brightness: Grad-CAM must peak on the brightest spot."""
    model = create_model("tiny_cnn", image_size=SIZE)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        conv1, conv2 = model.features[0], model.features[3]
        conv1.weight[0, :, 1, 1] = 1.0 / 3  # channel 0 = the image (in [-1, 1]) ...
        conv1.bias[0] = 1.0  # ... shifted to [0, 2], so the ReLU keeps it
        conv2.weight[0, 0, 1, 1] = 1.0
        model.fc.weight[1, 0] = 4.0  # fractured logit grows with brightness
    path = save_checkpoint(tmp / "bright", model, model_name="tiny_cnn", model_kwargs={}, image_size=SIZE,
                           channels=3, threshold=0.5)
    return load_checkpoint(path)


@pytest.mark.parametrize("name", ["paper_cnn", "tiny_cnn"])
def test_heatmap_shape_and_range(checkpoints: dict[str, Checkpoint], name: str) -> None:
    ck = checkpoints[name]
    px = render_case(np.random.default_rng([3, 0]), 96, True, 0.5).pixels[:90, :70]  # not square
    heat, p = gradcam(ck, px)
    assert heat.shape == (90, 70) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    assert 0.0 < p < 1.0
    assert p == pytest.approx(predict_array(ck, px), abs=1e-5)  # the same forward pass as predict
    small, _ = gradcam(ck, px, out_shape=(30, 20))
    assert small.shape == (30, 20)
    # no gradients left behind on the model
    assert all(q.grad is None for q in ck.model.parameters())


def test_gradcam_finds_the_bright_spot(tmp_path: Path) -> None:
    ck = _brightness_detector(tmp_path)
    px = np.full((120, 100), 30, np.uint8)
    px[80:96, 20:36] = 250  # a bright square, lower left
    heat, p = gradcam(ck, px)
    i, j = np.unravel_index(np.argmax(heat), heat.shape)
    assert 80 <= i < 96 and 20 <= j < 36
    assert heat[10:40, 60:90].max() < 0.2  # far from the square the map is cold
    assert p > 0.5
    hit_box = (18.0, 78.0, 20.0, 20.0)
    miss_box = (60.0, 10.0, 30.0, 30.0)
    res = pointing_game(ck, [(px, [hit_box]), (px, [miss_box]), (px, [miss_box, hit_box]), (px, [])])
    assert {k: res[k] for k in ("hits", "n", "rate", "empty")} == {"hits": 2, "n": 3, "rate": pytest.approx(2 / 3),
                                                                  "empty": 0}
    assert {"random_peak", "image_centre", "rate_ci95"} <= set(res)  # chance rates stand beside it


def test_peak_in_boxes_scales_boxes_to_the_map() -> None:
    heat = np.zeros((32, 32), np.float32)
    heat[8, 24] = 1.0  # peak cell centre (24.5, 8.5) in map units = (122.5, 26.6) in a 160 x 100 image
    assert peak_in_boxes(heat, (100, 160), [(115.0, 20.0, 15.0, 10.0)])
    assert not peak_in_boxes(heat, (100, 160), [(140.0, 20.0, 20.0, 10.0)])  # right of the peak
    assert not peak_in_boxes(heat, (100, 160), [(115.0, 30.0, 15.0, 10.0)])  # below it
    assert not peak_in_boxes(heat, (100, 160), [])


def test_pointing_game_on_synthetic_cases(checkpoints: dict[str, Checkpoint]) -> None:
    cases = [render_case(np.random.default_rng([11, i]), 128, i % 3 != 0, 0.5) for i in range(9)]
    fractured = sum(1 for c in cases if c.boxes)
    for ck in checkpoints.values():
        res = pointing_game(ck, cases, batch_size=4)
        assert res["n"] == fractured > 0
        assert 0 <= res["hits"] <= res["n"]
        assert 0.0 <= res["rate"] <= 1.0
    res = pointing_game(checkpoints["tiny_cnn"], [c for c in cases if not c.boxes])
    assert res["n"] == 0 and np.isnan(res["rate"])


def test_overlay() -> None:
    px = np.tile(np.arange(0, 200, 2, dtype=np.uint8), (50, 1))  # 50 x 100
    heat = np.linspace(0, 1, 25 * 50, dtype=np.float32).reshape(25, 50)  # another resolution
    out = overlay(px, heat, opacity=0.4)
    assert out.shape == (50, 100, 3) and out.dtype == np.uint8
    assert np.array_equal(overlay(px, heat, opacity=0.0), np.repeat(px[:, :, None], 3, axis=2))
    full = overlay(px, np.zeros((50, 100), np.float32), opacity=1.0)
    assert np.array_equal(full, np.broadcast_to(colorize(np.zeros(1))[0], full.shape))
    # jet: cold is blue, hot is red
    cold, hot = colorize(np.array([0.0, 1.0]))
    assert cold[2] > cold[0] and hot[0] > hot[2]
    assert overlay(np.repeat(px[:, :, None], 3, axis=2), heat).shape == (50, 100, 3)


def test_zero_padding_draws_no_frame_on_a_uniform_border(tmp_path: Path) -> None:
    """A radiograph on a uniform dark background: the convolutions' zero padding used to light up a rectangular
    frame along the image borders (on FracAtlas the outer band averaged 4x the interior); after the fix the
    border band of the map holds no more than the ring just inside it."""
    from fracbench.serving.cam import gradcam, padding_band

    torch.manual_seed(0)
    size = 64
    ck = load_checkpoint(save_checkpoint(tmp_path / "paper", create_model("paper_cnn", image_size=size),
                                         model_name="paper_cnn", model_kwargs={}, image_size=size, channels=3,
                                         threshold=0.5))
    px = np.zeros((128, 128), np.uint8)  # dark border all round
    yy, xx = np.mgrid[:128, :128]
    px[(yy - 64) ** 2 + (xx - 60) ** 2 < 30 ** 2] = 200  # a bright bone in the middle
    px[50:80, 40:45] = 90
    band = padding_band(ck, (3, size, size))
    assert 0 < band < size // 4  # three 3x3 convolutions reach a few pixels in, not the whole map
    for image in (px, np.full((96, 96), 30, np.uint8)):
        heat, _ = gradcam(ck, image, out_shape=(size, size))
        b = band + 2
        edge = np.concatenate([heat[:b].ravel(), heat[-b:].ravel(), heat[:, :b].ravel(), heat[:, -b:].ravel()])
        ring = heat[b:2 * b, b:-b].ravel().tolist() + heat[-2 * b:-b, b:-b].ravel().tolist() + \
            heat[b:-b, b:2 * b].ravel().tolist() + heat[b:-b, -2 * b:-b].ravel().tolist()
        assert edge.mean() <= np.mean(ring) + 0.02, f"border frame: edge {edge.mean():.3f}, inside {np.mean(ring):.3f}"
    flat, _ = gradcam(ck, np.full((96, 96), 30, np.uint8))
    assert float(flat.max()) == 0.0  # a uniform image: no evidence anywhere, not a frame
