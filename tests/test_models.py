"""Tests for fracbench.models: registry, the paper's CNN, shapes, CAM layers, weights, FLOPs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fracbench import models
from fracbench.models import (
    MODELS,
    ModelInfo,
    count_flops,
    count_params,
    create_model,
    get_cam_layer,
    list_models,
    register_model,
)
from fracbench.registry import UnknownNameError

ALL_MODELS = list_models()
SMALL = 64  # pixels: large enough for every torchvision reference, small enough to be quick


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- registry ---------------------------------------------------------------------------------


def test_expected_models_registered() -> None:
    expected = {
        "paper_cnn",
        "stand_in_rao14",
        "stand_in_cnn15",
        "resnet18",
        "resnet50",
        "densenet121",
        "densenet169",
        "efficientnet_b0",
        "tiny_cnn",
    }
    assert expected <= set(ALL_MODELS)


def test_duplicate_name_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_model("paper_cnn", cam_layer="x", default_size=1, description="dup")
        def _dup(num_classes: int = 2, in_channels: int = 3, image_size: int = 1) -> nn.Module:
            return nn.Identity()


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(UnknownNameError, match="resnet18"):
        create_model("resnet19")
    with pytest.raises(KeyError, match="paper_cnn"):
        MODELS.get("paper_cn")


def test_wildcard_listing() -> None:
    assert list_models("resnet*") == ["resnet18", "resnet50"]
    assert list_models("stand_in*") == ["stand_in_cnn15", "stand_in_rao14"]
    assert list_models() == sorted(list_models())
    assert list_models("nothing*") == []


@pytest.mark.parametrize("name", ALL_MODELS)
def test_metadata_schema(name: str) -> None:
    info = MODELS.get(name)
    assert isinstance(info, ModelInfo)
    assert info.name == name
    assert callable(info.builder)
    assert info.cam_layer and info.description
    assert info.default_size > 0
    if info.stand_in:
        assert "stand-in" in info.description.lower()
        assert info.citation


def test_stand_ins_flagged() -> None:
    flagged = {n for n in ALL_MODELS if MODELS.get(n).stand_in}
    assert flagged == {"stand_in_rao14", "stand_in_cnn15"}
    assert MODELS.get("paper_cnn").default_size == 150
    assert MODELS.get("resnet18").default_size == 224


# --- the paper's CNN ------------------------------------------------------------------------------


def test_paper_cnn_parameter_count() -> None:
    model = create_model("paper_cnn", num_classes=2, image_size=150)
    assert count_params(model) == 368_398


def test_paper_cnn_default_size_is_native() -> None:
    model = create_model("paper_cnn")
    assert model.fc.in_features == 32 * 75 * 75
    assert count_params(model) == 368_398


def test_paper_cnn_layers_are_the_tutorials() -> None:
    m = create_model("paper_cnn", image_size=150)
    assert (
        m.conv1.in_channels,
        m.conv1.out_channels,
        m.conv1.kernel_size,
        m.conv1.stride,
        m.conv1.padding,
    ) == (
        3,
        12,
        (3, 3),
        (1, 1),
        (1, 1),
    )
    assert m.bn1.num_features == 12
    assert isinstance(m.pool, nn.MaxPool2d) and m.pool.kernel_size == 2
    assert (m.conv2.in_channels, m.conv2.out_channels) == (12, 20)
    assert not hasattr(m, "bn2")  # the tutorial has no batch norm after conv2
    assert (m.conv3.in_channels, m.conv3.out_channels) == (20, 32)
    assert m.bn3.num_features == 32
    assert isinstance(m.relu1, nn.ReLU) and isinstance(m.relu2, nn.ReLU) and isinstance(m.relu3, nn.ReLU)


def test_paper_cnn_returns_logits_and_refuses_wrong_size() -> None:
    m = create_model("paper_cnn", image_size=32).eval()
    out = m(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 2)
    # logits, not probabilities: rows need not sum to 1
    assert not torch.allclose(out.sum(1), torch.ones(3))
    with pytest.raises(ValueError, match="32 px"):
        m(torch.randn(1, 3, 64, 64))


# --- forward shapes, any size ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shape(name: str) -> None:
    model = create_model(name, num_classes=2, image_size=SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, SMALL, SMALL))
    assert out.shape == (2, 2)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["paper_cnn", "stand_in_rao14", "stand_in_cnn15", "tiny_cnn", "resnet18"])
def test_in_channels_and_num_classes(name: str) -> None:
    model = create_model(name, num_classes=3, in_channels=1, image_size=48).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 48, 48))
    assert out.shape == (1, 3)


@pytest.mark.parametrize("name", ["densenet121", "efficientnet_b0"])
def test_in_channels_adapted_for_references(name: str) -> None:
    model = create_model(name, num_classes=3, in_channels=1, image_size=SMALL)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert last.out_features == 3


def test_none_kwargs_dropped() -> None:
    # An unknown keyword would reach the builder and fail; None must be dropped before that.
    model = create_model("tiny_cnn", image_size=None, drop_rate=None)
    assert isinstance(model, nn.Module)
    with pytest.raises(TypeError):
        create_model("tiny_cnn", drop_rate=0.1)


# --- Grad-CAM layers -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_cam_layer_resolves_and_is_used(name: str) -> None:
    model = create_model(name, image_size=SMALL).eval()
    layer = get_cam_layer(model, name)
    assert isinstance(layer, nn.Module)
    assert any(layer is m for m in model.modules())
    if name in {"resnet50", "densenet121", "densenet169"}:
        return  # one forward for the big references is enough (test_forward_shape)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        model(torch.randn(1, 3, SMALL, SMALL))
    handle.remove()
    assert len(seen) == 1 and seen[0].ndim == 4  # a spatial feature map


def test_cam_layer_choices() -> None:
    p = create_model("paper_cnn", image_size=32)
    assert get_cam_layer(p, "paper_cnn") is p.relu3
    r = create_model("resnet18", image_size=SMALL)
    assert get_cam_layer(r, "resnet18") is r.layer4[-1]
    d = create_model("densenet121", image_size=SMALL)
    assert get_cam_layer(d, "densenet121") is d.features[-1]


def test_cam_layer_bad_path() -> None:
    with pytest.raises(AttributeError):
        models._resolve(create_model("tiny_cnn"), "features.99")
    with pytest.raises(AttributeError):
        models._resolve(create_model("tiny_cnn"), "nope")


# --- weights ------------------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    src = create_model("tiny_cnn").eval()
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    torch.manual_seed(123)
    dst = create_model("tiny_cnn", weights=str(path)).eval()
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(src(x), dst(x))


def test_pt_round_trip_with_wrapped_checkpoint(tmp_path: Path) -> None:
    src = create_model("paper_cnn", image_size=32)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, path)
    dst = create_model("paper_cnn", image_size=32, weights=path)
    assert torch.equal(src.conv1.weight, dst.conv1.weight)


def test_mismatched_head_skipped_with_warning(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    src = create_model("tiny_cnn", num_classes=5)
    path = tmp_path / "five.safetensors"
    save_file(src.state_dict(), str(path))
    with pytest.warns(UserWarning, match=r"fc\.weight.*fc\.bias|fc\.bias.*fc\.weight"):
        dst = create_model("tiny_cnn", num_classes=2, weights=str(path))
    assert dst.fc.out_features == 2
    assert torch.equal(src.features[0].weight, dst.features[0].weight)  # the body still loaded


def test_weights_missing_or_unfitting(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        create_model("tiny_cnn", weights=tmp_path / "absent.safetensors")
    path = tmp_path / "other.pt"
    torch.save(create_model("stand_in_cnn15").state_dict(), path)
    # the heads differ (warned and skipped) and the bodies do not fit at all (refused)
    with pytest.raises(ValueError, match="do not fit"), pytest.warns(UserWarning, match="fc.weight"):
        create_model("tiny_cnn", weights=path)
    bad = tmp_path / "w.bin"
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported"):
        create_model("tiny_cnn", weights=bad)


# --- size and cost ------------------------------------------------------------------------------


def _paper_cnn_analytic_flops(s: int, num_classes: int = 2) -> int:
    """2 x multiply-adds of the convolutions and the linear layer (bias, BN, ReLU, pool excluded)."""
    h = s // 2
    macs = s * s * 12 * 3 * 9  # conv1 at full resolution
    macs += h * h * 20 * 12 * 9  # conv2 after pooling
    macs += h * h * 32 * 20 * 9  # conv3
    macs += 32 * h * h * num_classes  # fc
    return 2 * macs


def test_count_flops_paper_cnn() -> None:
    model = create_model("paper_cnn")
    model.train()
    flops = count_flops(model, 150)
    expected = _paper_cnn_analytic_flops(150)  # 104.4 MFLOPs
    assert flops > 0
    assert abs(flops - expected) / expected < 0.05
    assert model.training  # mode restored


def test_count_flops_scales_and_params() -> None:
    tiny = create_model("tiny_cnn")
    assert count_flops(tiny, 64) > count_flops(tiny, 32) > 0
    assert count_params(tiny) == sum(p.numel() for p in tiny.parameters())
    tiny.fc.weight.requires_grad_(False)
    assert count_params(tiny, trainable_only=True) == count_params(tiny) - tiny.fc.weight.numel()
