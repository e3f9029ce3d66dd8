"""Typed, frozen training configuration (one for every model and experiment), YAML in and out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

PROTOCOLS = ("as_published", "honest")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "step", "cosine", "onecycle")
AUGMENTS = ("none", "flip", "radiograph")
# `fracbench run --precision`: the config fields each choice sets (fp32, the paper's, changes nothing)
PRECISIONS: dict[str, dict[str, bool]] = {"fp32": {}, "bf16": {"amp": True}, "channels_last": {"channels_last": True}}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. Defaults are the paper's (the tutorial's) choices."""

    model: str = "paper_cnn"  # a name from `fracbench models`
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra builder arguments
    weights: str | None = None  # local pretrained weights (safetensors/state dict); never downloaded
    image_size: int = 150  # the paper resizes to 150x150
    channels: int = 3  # grayscale replicated to 3 channels, as the tutorial's RGB ImageFolder sees it
    batch_size: int = 32  # the paper's choice
    epochs: int = 50  # the paper reports epochs 0..49
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3  # the paper's learning rate
    weight_decay: float = 1e-4  # the tutorial's Adam weight decay
    momentum: float = 0.9  # SGD only
    schedule: str = "none"  # none | step | cosine | onecycle
    class_weights: str = "none"  # none | balanced (inverse class frequency in the loss)
    augment: str = "flip"  # none | flip (the tutorial's random horizontal flip) | radiograph
    protocol: str = "honest"  # honest | as_published (see fracbench.training.protocols)
    early_stopping: int = 0  # patience in epochs on the selection metric; 0 = train all epochs
    max_train_images: int = 0  # subsample the training split (0 = all); profiles use it to fit a time budget
    seed: int = 0  # model init, batch order, augmentation
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = False  # bf16 autocast on CUDA and CPU (`fracbench run --precision bf16`)
    channels_last: bool = False  # NHWC memory format (`--precision channels_last`)
    compile: bool = False  # torch.compile the model
    threshold_method: str = "youden"  # how the decision threshold is chosen on validation
    n_boot: int = 1000  # bootstrap resamples for 95% CIs
    log_test_each_epoch: bool = True  # log test metrics per epoch for learning curves only; never used to choose

    def __post_init__(self) -> None:
        checks = {"protocol": PROTOCOLS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "augment": AUGMENTS}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"config {name}={getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        if self.class_weights not in ("none", "balanced"):
            raise ValueError(f"config class_weights={self.class_weights!r}: expected none or balanced")
        for name in ("image_size", "batch_size", "channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"config {name} must be positive")
        if self.epochs < 1:
            raise ValueError("config epochs must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            import difflib

            hints = [f"{u} (did you mean {difflib.get_close_matches(u, known, 1)[0]}?)"
                     if difflib.get_close_matches(u, known, 1) else u for u in unknown]
            raise ValueError(f"unknown config keys: {', '.join(hints)}")
        return cls(**d)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)
