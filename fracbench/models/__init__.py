"""Model registry: the paper's CNN, stand-ins for cited baselines, and torchvision references.

Modelled on timm: a builder function is registered with ``@register_model`` together with its
metadata (:class:`ModelInfo`), ``create_model(name, ...)`` builds it, ``list_models("resnet*")``
filters with wildcards. Every entry names its Grad-CAM target layer, so ``cam.py`` needs no
``if model == ...`` chains.

Nothing here ever downloads: torchvision models are built with ``weights=None`` (trained from
scratch, as the paper's CNN is), and ``create_model(weights=...)`` only reads a local file.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fracbench.registry import Registry

__all__ = [
    "MODELS",
    "ModelInfo",
    "count_flops",
    "count_params",
    "create_model",
    "get_cam_layer",
    "list_models",
    "load_weights",
    "register_model",
]


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: how to build it and what a report needs to know about it."""

    name: str
    builder: Callable[..., nn.Module]
    # Dotted attribute path of the Grad-CAM target layer; a numeric part indexes the children
    # ("layer4.-1" is the last block of layer4).
    cam_layer: str
    # Native input size in pixels (square): 150 for paper_cnn, 224 for the torchvision references.
    default_size: int
    description: str
    # True for the stand-ins of cited baselines whose code is unpublished: their numbers are not
    # the cited authors' models and reports must say so.
    stand_in: bool = False
    citation: str = ""


MODELS: Registry[ModelInfo] = Registry("model")


def register_model(
    name: str,
    *,
    cam_layer: str,
    default_size: int,
    description: str,
    stand_in: bool = False,
    citation: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``fn(num_classes, in_channels, image_size, **kw) -> nn.Module``.

    A duplicate name is refused (by :class:`~fracbench.registry.Registry`).
    """

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(
            name,
            ModelInfo(
                name=name,
                builder=builder,
                cam_layer=cam_layer,
                default_size=default_size,
                description=description,
                stand_in=stand_in,
                citation=citation,
            ),
        )
        return builder

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard, sorted."""
    return MODELS.list(pattern)


def create_model(
    name: str,
    num_classes: int = 2,
    in_channels: int = 3,
    image_size: int | None = None,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally loading a local state dict.

    ``image_size`` defaults to the model's native size; keyword arguments that are ``None`` are
    dropped (as in timm) so callers can pass optional config fields straight through.
    ``weights`` is a local path (``.safetensors``, ``.pt`` or ``.pth``); see :func:`load_weights`.
    """
    info = MODELS.get(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    size = info.default_size if image_size is None else int(image_size)
    extra = {k: v for k, v in kwargs.items() if v is not None}
    model = info.builder(num_classes=num_classes, in_channels=in_channels, image_size=size, **extra)
    if weights is not None:
        load_weights(model, weights)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix in (".pt", ".pth"):
        # weights_only: a checkpoint is data, never code to run.
        obj = torch.load(path, map_location="cpu", weights_only=True)
        # Training checkpoints often wrap the state dict next to optimiser state and config.
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in ("state_dict", "model"):
                if isinstance(obj.get(key), Mapping):
                    obj = obj[key]
                    break
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__})")
        return dict(obj)
    raise ValueError(f"unsupported weights file {path.name!r}: use .safetensors, .pt or .pth")


def load_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    """Load a local state dict into ``model`` in place and return it.

    Tensors whose shape differs from the model's (typically the classifier, when the number of
    classes changed) are skipped with a warning that lists them, so those layers keep their fresh
    initialisation. Any other missing or unexpected key is an error: a silently partial load would
    make a run irreproducible.
    """
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (fracbench never downloads weights)")
    state = _read_state_dict(path)
    own = model.state_dict()
    mismatched = sorted(k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape))
    if mismatched:
        warnings.warn(
            f"skipping {len(mismatched)} tensor(s) from {path.name} whose shape does not match the "
            f"model: {', '.join(mismatched)}",
            UserWarning,
            stacklevel=3,
        )
    filtered = {k: v for k, v in state.items() if k not in mismatched}
    result = model.load_state_dict(filtered, strict=False)
    missing = [k for k in result.missing_keys if k not in mismatched]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"weights {path.name} do not fit the model: missing {missing or 'none'}, "
            f"unexpected {list(result.unexpected_keys) or 'none'}"
        )
    return model


def _resolve(module: nn.Module, dotted: str) -> nn.Module:
    current = module
    for part in dotted.split("."):
        if part.lstrip("-").isdigit():
            # Index the children, so "-1" means the last one (nn.Sequential names them "0", "1", ...).
            children = list(current.children())
            try:
                current = children[int(part)]
            except IndexError:
                raise AttributeError(
                    f"{dotted!r}: index {part} out of range ({len(children)} children)"
                ) from None
        else:
            if not hasattr(current, part):
                raise AttributeError(f"{dotted!r}: {type(current).__name__} has no attribute {part!r}")
            current = getattr(current, part)
        if not isinstance(current, nn.Module):
            raise AttributeError(f"{dotted!r}: {part!r} is a {type(current).__name__}, not a module")
    return current


def get_cam_layer(model: nn.Module, name: str) -> nn.Module:
    """The Grad-CAM target layer of ``model``, built as the registered model ``name``."""
    return _resolve(model, MODELS.get(name).cam_layer)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, image_size: int, in_channels: int = 3) -> int:
    """Forward FLOPs for one image, counting a multiply-add as 2 (torch's FlopCounterMode).

    Only matrix products and convolutions are counted; normalisation, activations and pooling are
    not, which is the usual convention in model tables.
    """
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    x = torch.zeros(1, in_channels, image_size, image_size, device=device, dtype=dtype)
    was_training = model.training
    model.eval()  # eval: BatchNorm must not update running statistics during the count
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------------------------
# The paper's model
# --------------------------------------------------------------------------------------------


class ConvNet(nn.Module):
    """The paper's CNN: the public "CNN from scratch" PyTorch tutorial's ``ConvNet``, unchanged.

    Layers and attribute names are the tutorial's: conv1-bn1-relu1-pool, conv2-relu2 (no batch
    norm), conv3-bn3-relu3, then one linear layer over the flattened ``32 x s/2 x s/2`` map. At
    150 x 150 with 2 classes it has exactly 368,398 parameters.

    Output and loss: the paper's prose says "softmax output" and "binary cross-entropy", but the
    tutorial code it follows returns 2 logits trained with ``nn.CrossEntropyLoss``, i.e. softmax
    plus categorical cross-entropy, which for 2 classes equals binary cross-entropy on the softmax
    probability. fracbench follows the code: ``forward`` returns logits and softmax is applied only
    at inference.
    """

    def __init__(self, num_classes: int = 2, in_channels: int = 3, image_size: int = 150) -> None:
        super().__init__()
        if image_size < 2:
            raise ValueError(f"image_size must be >= 2, got {image_size}")
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, 12, kernel_size=3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(12)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=2)
        self.conv2 = nn.Conv2d(12, 20, kernel_size=3, stride=1, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(20, 32, kernel_size=3, stride=1, padding=1)
        self.bn3 = nn.BatchNorm2d(32)
        self.relu3 = nn.ReLU()
        half = image_size // 2
        self.flat_features = 32 * half * half  # 32 * 75 * 75 at the native 150 px
        self.fc = nn.Linear(self.flat_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The tutorial's view(-1, 32*75*75) would silently fold a wrongly sized input into the
        # batch dimension, so refuse it up front.
        if x.shape[-2] // 2 != self.image_size // 2 or x.shape[-1] // 2 != self.image_size // 2:
            raise ValueError(f"ConvNet was built for {self.image_size} px inputs, got {tuple(x.shape[-2:])}")
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(x)
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.bn3(self.conv3(x)))
        # The tutorial's view(-1, 32*75*75), generalised to the built image size; reshape, not
        # view, so a channels_last tensor (faster on CPU and GPU) flattens in the same NCHW order.
        x = x.reshape(-1, self.flat_features)
        return self.fc(x)


@register_model(
    "paper_cnn",
    # relu3 rather than conv3/bn3: it is the map the classifier actually reads, it is
    # non-negative (so the Grad-CAM weighted sum is not dominated by negative pre-activations the
    # network itself discards), and it keeps the full 75 x 75 resolution since no pooling follows.
    cam_layer="relu3",
    default_size=150,
    description="The paper's CNN: the 'CNN from scratch' PyTorch tutorial ConvNet (3 conv layers, 1 linear).",
    citation="The paper's own model; code follows the public 'CNN from scratch' PyTorch tutorial (class ConvNet).",
)
def paper_cnn(num_classes: int = 2, in_channels: int = 3, image_size: int = 150) -> nn.Module:
    return ConvNet(num_classes=num_classes, in_channels=in_channels, image_size=image_size)


# --------------------------------------------------------------------------------------------
# Stand-ins for cited baselines whose code is unpublished
# --------------------------------------------------------------------------------------------
# ReLUs in fracbench's own models are never in-place: Grad-CAM hooks the outputs of these layers,
# and an in-place op after a hooked output would overwrite what the hook saw.


class Rao14StandIn(nn.Module):
    """Stand-in for [14]: a plain custom CNN of the kind a PyTorch blog tutorial builds.

    Three blocks of conv 3x3 -> ReLU -> max-pool (16, 32, 64 channels), flatten, a 128-unit hidden
    layer with dropout 0.5, then the class logits. Not the cited author's network, whose exact
    architecture is not published in reachable form.
    """

    def __init__(self, num_classes: int = 2, in_channels: int = 3, image_size: int = 224) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 (three 2x poolings), got {image_size}")

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

        self.block1 = block(in_channels, 16)
        self.block2 = block(16, 32)
        self.block3 = block(32, 64)
        side = image_size // 2 // 2 // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.block3(self.block2(self.block1(x))))


@register_model(
    "stand_in_rao14",
    # The last ReLU before the final pooling: the deepest map at twice the pooled resolution.
    cam_layer="block3.1",
    default_size=224,
    description="stand-in for [14] (architecture unpublished): 3 conv blocks 16-32-64 + FC 128, dropout 0.5.",
    stand_in=True,
    citation=(
        "[14] V. R. Marellapudi, 'Building and Training a Custom Convolutional Neural Network with "
        "PyTorch' (blog tutorial); architecture not published in reachable form, so this is a stand-in."
    ),
)
def stand_in_rao14(num_classes: int = 2, in_channels: int = 3, image_size: int = 224) -> nn.Module:
    return Rao14StandIn(num_classes=num_classes, in_channels=in_channels, image_size=image_size)


class Cnn15StandIn(nn.Module):
    """Stand-in for [15]: a small batch-normalised CNN with global average pooling.

    Four blocks of conv 3x3 -> BatchNorm -> ReLU (32, 32, 64, 64 channels), max-pooling after the
    first three, global average pooling, dropout 0.5 and a linear classifier. Global pooling makes
    it independent of the input size. Not the cited authors' network, which is unpublished.
    """

    def __init__(self, num_classes: int = 2, in_channels: int = 3, image_size: int = 224) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: bool) -> nn.Sequential:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        self.block1 = block(in_channels, 32, pool=True)
        self.block2 = block(32, 32, pool=True)
        self.block3 = block(32, 64, pool=True)
        self.block4 = block(64, 64, pool=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


@register_model(
    "stand_in_cnn15",
    # The last conv block's (post-ReLU) output, which global pooling reads directly.
    cam_layer="block4",
    default_size=224,
    description="stand-in for [15] (architecture unpublished): 4 conv-BN blocks 32-32-64-64, GAP, dropout, FC.",
    stand_in=True,
    citation=(
        "[15] 'Bone Fracture Detection in X-ray Images using a Convolutional Network' (Table 3 of the "
        "paper); architecture unpublished, so this is a stand-in."
    ),
)
def stand_in_cnn15(num_classes: int = 2, in_channels: int = 3, image_size: int = 224) -> nn.Module:
    return Cnn15StandIn(num_classes=num_classes, in_channels=in_channels, image_size=image_size)


# --------------------------------------------------------------------------------------------
# torchvision references, trained from scratch
# --------------------------------------------------------------------------------------------
# Built with weights=None: the comparison with the paper's CNN is architecture against
# architecture under the same from-scratch protocol, and nothing here may touch the network.
# Grad-CAM layers follow pytorch-grad-cam's recommendations (resnet layer4[-1], densenet and
# efficientnet features[-1]). The torchvision builders accept any input of at least 32 px, since
# they end in adaptive average pooling.


def _replace_conv_in(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same convolution with a different number of input channels (fresh initialisation)."""
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
    )


def _resnet(arch: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    import torchvision.models as tvm

    model = getattr(tvm, arch)(weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        model.conv1 = _replace_conv_in(model.conv1, in_channels)
    return model


def _densenet(arch: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    import torchvision.models as tvm

    model = getattr(tvm, arch)(weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        model.features.conv0 = _replace_conv_in(model.features.conv0, in_channels)
    return model


_RESNET_CITATION = "K. He et al., 'Deep Residual Learning for Image Recognition', CVPR 2016."
_DENSENET_CITATION = "G. Huang et al., 'Densely Connected Convolutional Networks', CVPR 2017."


@register_model(
    "resnet18",
    cam_layer="layer4.-1",
    default_size=224,
    description="torchvision ResNet-18, trained from scratch (reference).",
    citation=_RESNET_CITATION,
)
def resnet18(num_classes: int = 2, in_channels: int = 3, image_size: int = 224, **kwargs: Any) -> nn.Module:
    return _resnet("resnet18", num_classes, in_channels, **kwargs)


@register_model(
    "resnet50",
    cam_layer="layer4.-1",
    default_size=224,
    description="torchvision ResNet-50, trained from scratch (reference).",
    citation=_RESNET_CITATION,
)
def resnet50(num_classes: int = 2, in_channels: int = 3, image_size: int = 224, **kwargs: Any) -> nn.Module:
    return _resnet("resnet50", num_classes, in_channels, **kwargs)


@register_model(
    "densenet121",
    cam_layer="features.-1",
    default_size=224,
    description="torchvision DenseNet-121, trained from scratch (reference).",
    citation=_DENSENET_CITATION,
)
def densenet121(
    num_classes: int = 2, in_channels: int = 3, image_size: int = 224, **kwargs: Any
) -> nn.Module:
    return _densenet("densenet121", num_classes, in_channels, **kwargs)


@register_model(
    "densenet169",
    cam_layer="features.-1",
    default_size=224,
    description="torchvision DenseNet-169, trained from scratch (reference; the MURA baseline architecture).",
    citation=(
        f"{_DENSENET_CITATION} Used as the MURA baseline in P. Rajpurkar et al., 'MURA: Large Dataset "
        "for Abnormality Detection in Musculoskeletal Radiographs', arXiv:1712.06957, 2017."
    ),
)
def densenet169(
    num_classes: int = 2, in_channels: int = 3, image_size: int = 224, **kwargs: Any
) -> nn.Module:
    return _densenet("densenet169", num_classes, in_channels, **kwargs)


@register_model(
    "efficientnet_b0",
    cam_layer="features.-1",
    default_size=224,
    description="torchvision EfficientNet-B0, trained from scratch (reference).",
    citation="M. Tan and Q. V. Le, 'EfficientNet: Rethinking Model Scaling for CNNs', ICML 2019.",
)
def efficientnet_b0(
    num_classes: int = 2, in_channels: int = 3, image_size: int = 224, **kwargs: Any
) -> nn.Module:
    import torchvision.models as tvm

    model = tvm.efficientnet_b0(weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        stem = model.features[0][0]
        model.features[0][0] = _replace_conv_in(stem, in_channels)
    return model


# --------------------------------------------------------------------------------------------
# Test model
# --------------------------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """A very small, fast CNN for tests: conv 8 -> pool -> conv 16 -> global pool -> linear."""

    def __init__(self, num_classes: int = 2, in_channels: int = 3, image_size: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model(
    "tiny_cnn",
    cam_layer="features.-1",
    default_size=32,
    description="Tiny 2-layer CNN for fast tests; not a benchmark model.",
)
def tiny_cnn(num_classes: int = 2, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return TinyCNN(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
