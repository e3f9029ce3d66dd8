"""Out-of-distribution guard: does an input look like the radiographs the model was trained on?

A classifier answers every input: a flat grey square or a photo of a cat gets a P(fracture) like any
radiograph. The guard measures how far an image's features lie from the training images' features
and warns past a threshold calibrated on real radiographs.

Method (a pooled Mahalanobis detector, Lee et al., NeurIPS 2018, without their input perturbation):

* features: the model's Grad-CAM layer (its last convolutional map, registered for every model in
  :mod:`fracbench.models`), global-average-pooled, so the width is the layer's channel count
  (32 for ``paper_cnn``, 64 for ``stand_in_cnn15``). Wider layers are reduced to ``PCA_DIM``
  principal components so the reference stays small enough for the JSON sidecar;
* reference: mean and Ledoit-Wolf shrunk precision matrix of the training split's features
  (one pooled Gaussian: both classes are radiographs, and the class means are close);
* score: the Mahalanobis distance ``sqrt((f - mu)^T P (f - mu))``;
* threshold: the ``quantile`` (default 95th percentile) of the validation split's distances, so
  about 5% of real radiographs like the validation ones get a warning, by construction.

The reference lives in the checkpoint's sidecar under ``ood_reference``; a checkpoint without one
gets no warning and says "no OOD reference". :func:`validate_reference` refuses a damaged one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fracbench.serving.checkpoint import REFERENCE_VERSION, validate_reference  # noqa: F401  (the guard's API)

MAX_DIM = 64  # feature widths up to this are kept whole
PCA_DIM = 32  # wider features are projected onto this many principal components
QUANTILE = 0.95
MAX_FIT_IMAGES = 4000  # training images used for the mean and covariance (a random subset beyond this)
NO_REFERENCE = "no OOD reference"
SIG = 7  # significant digits kept in the JSON (the threshold is calibrated on the rounded reference)


@dataclass(frozen=True)
class OodResult:
    """The guard's answer for one image."""

    distance: float  # nan when the checkpoint has no reference
    threshold: float  # nan when the checkpoint has no reference
    flagged: bool

    @property
    def status(self) -> str:
        if math.isnan(self.threshold):
            return NO_REFERENCE
        return "out of distribution" if self.flagged else "in distribution"

    def message(self) -> str:
        """One sentence for a person (empty when the image looks like a training radiograph)."""
        if math.isnan(self.threshold):
            return f"This model has {NO_REFERENCE}, so unusual inputs are not detected."
        if not self.flagged:
            return ""
        return (f"This image does not look like the radiographs the model was trained on (feature distance "
                f"{self.distance:.1f}, warning above {self.threshold:.1f}); its prediction means little.")

    def columns(self) -> dict[str, Any]:
        """The fields a prediction row carries."""
        return {"ood": self.status, "ood_distance": self.distance}


# --------------------------------------------------------------------------------------------
# features


def _layer_name(model_name: str) -> str:
    from fracbench.models import MODELS

    return MODELS.get(model_name).cam_layer


@torch.no_grad()
def features(model: nn.Module, model_name: str, x: torch.Tensor) -> np.ndarray:
    """(B, C) global-average-pooled activations of the model's Grad-CAM layer for a preprocessed batch."""
    from fracbench.models import get_cam_layer

    layer = get_cam_layer(model, model_name)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(x.to(device))
    finally:
        handle.remove()
        model.train(was_training)
    act = seen[-1].float()
    pooled = act.mean(dim=(2, 3)) if act.ndim == 4 else act.flatten(1)
    return pooled.cpu().numpy().astype(np.float64)


def _batches_features(model: nn.Module, model_name: str, batches: Iterable[Any]) -> np.ndarray:
    out = []
    for b in batches:
        x = b[0] if isinstance(b, (tuple, list)) else b
        out.append(features(model, model_name, x))
    return np.concatenate(out) if out else np.zeros((0, 0))


def _cache_batches(cache: Any, rows: np.ndarray, channels: int, batch_size: int = 64) -> Iterable[torch.Tensor]:
    from fracbench.data.loader import to_input

    for start in range(0, len(rows), batch_size):
        idx = np.sort(rows[start:start + batch_size])
        yield to_input(torch.from_numpy(np.ascontiguousarray(cache.array[idx])), channels)


def _usable_rows(cache: Any, split: str) -> np.ndarray:
    rows = cache.indices(split)
    failed = set(getattr(cache, "failed", {}) or {})
    return np.array([r for r in rows if int(r) not in failed], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# the reference


def _round(a: np.ndarray) -> list:
    return np.vectorize(lambda v: float(f"{v:.{SIG}g}"), otypes=[float])(np.asarray(a, np.float64)).tolist()


def reference_from_features(train: np.ndarray, calib: np.ndarray, *, layer: str, quantile: float = QUANTILE,
                            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-ready reference from training features (mean, precision) and calibration features (threshold)."""
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train, np.float64)
    calib = np.asarray(calib, np.float64)
    if train.ndim != 2 or len(train) < 2:
        raise ValueError(f"need at least 2 training feature vectors, got shape {train.shape}")
    if calib.ndim != 2 or len(calib) < 1 or calib.shape[1] != train.shape[1]:
        raise ValueError(f"calibration features of shape {calib.shape} do not match training {train.shape}")
    d_in = train.shape[1]
    center = train.mean(axis=0)
    components = None
    z = train - center
    if d_in > MAX_DIM:
        k = min(PCA_DIM, len(train) - 1)
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        components = vt[:k]
        z = z @ components.T
    lw = LedoitWolf().fit(z)
    ref: dict[str, Any] = {
        "version": REFERENCE_VERSION,
        "method": "pooled Mahalanobis distance, Ledoit-Wolf shrunk precision",
        "layer": layer,
        "pool": "global average",
        "dim_in": d_in,
        "center": _round(center),
        "components": _round(components) if components is not None else None,
        "mean": _round(np.zeros(z.shape[1]) if components is None else z.mean(axis=0)),
        "precision": _round(lw.precision_),
        "shrinkage": float(lw.shrinkage_),
        "fit_images": int(len(train)),
        "calibration_images": int(len(calib)),
        "quantile": float(quantile),
        "threshold": 0.0,
        **(extra or {}),
    }
    validate_reference(ref)
    d = ood_score(ref, calib)
    ref["threshold"] = float(f"{float(np.quantile(d, quantile)):.{SIG}g}")
    ref["calibration_distance"] = {"median": float(np.median(d)), "max": float(d.max())}
    return ref


def fit_reference(model: Any, data: Any, calib: Iterable[Any] | None = None, *, model_name: str | None = None,
                  channels: int | None = None, fit_split: str = "train", calib_split: str = "val",
                  quantile: float = QUANTILE, max_fit: int = MAX_FIT_IMAGES, seed: int = 0) -> dict[str, Any]:
    """Fit the OOD reference of a model on its training data.

    ``model`` is a :class:`~fracbench.serving.checkpoint.Checkpoint` (name and channels from its sidecar) or an
    ``nn.Module`` with ``model_name`` and ``channels``. ``data`` is a
    :class:`~fracbench.data.cache.DecodedCache` (mean and precision from ``fit_split``, threshold from
    ``calib_split``, images that failed to decode left out) or an iterable of preprocessed batches
    (tensors, or ``(x, y, ...)`` tuples as :class:`~fracbench.data.loader.BatchLoader` yields) with
    ``calib`` a second such iterable. Returns the JSON-ready dict for the sidecar.
    """
    meta = getattr(model, "meta", None)
    module = getattr(model, "model", model)
    name = model_name or (meta or {}).get("model")
    if not name:
        raise ValueError("fit_reference needs model_name for a bare nn.Module")
    ch = channels or (int(meta["preprocessing"]["channels"]) if meta else None)
    layer = _layer_name(name)
    extra: dict[str, Any] = {}
    if hasattr(data, "array") and hasattr(data, "indices"):
        if ch is None:
            raise ValueError("fit_reference needs channels for a bare nn.Module")
        rows = _usable_rows(data, fit_split)
        if len(rows) > max_fit:
            rows = np.sort(np.random.default_rng(seed).choice(rows, max_fit, replace=False))
        crow = _usable_rows(data, calib_split)
        if len(crow) == 0:
            raise ValueError(f"no {calib_split!r} images to calibrate the OOD threshold on")
        train = _batches_features(module, name, _cache_batches(data, rows, ch))
        cal = _batches_features(module, name, _cache_batches(data, crow, ch))
        extra = {"fit_split": fit_split, "calibration_split": calib_split,
                 "manifest_sha256": data.manifest.fingerprint, "dataset": data.manifest.dataset}
    else:
        if calib is None:
            raise ValueError("fit_reference over batches needs `calib`, batches of held-out training-like images")
        train = _batches_features(module, name, data)
        cal = _batches_features(module, name, calib)
    return reference_from_features(train, cal, layer=layer, quantile=quantile, extra=extra)


def attach_reference(checkpoint_path: Any, cache: Any, **kwargs: Any) -> dict[str, Any]:
    """Fit the reference of the checkpoint at ``checkpoint_path`` on ``cache`` and write it into its sidecar.

    What ``fit()`` (or a command) calls once the best checkpoint is saved; returns the reference.
    """
    from fracbench.serving.checkpoint import load_checkpoint, write_ood_reference

    ck = load_checkpoint(checkpoint_path)
    ref = fit_reference(ck, cache, **kwargs)
    write_ood_reference(ck.path, ref)
    return ref


# --------------------------------------------------------------------------------------------
# scoring


def ood_score(ref: dict[str, Any], feats: np.ndarray) -> np.ndarray:
    """Mahalanobis distances of (N, dim_in) features from the reference."""
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or f.shape[1] != int(ref["dim_in"]):
        raise ValueError(f"features of shape {f.shape} do not fit a reference of width {ref['dim_in']}")
    z = f - np.asarray(ref["center"], np.float64)
    if ref.get("components") is not None:
        z = z @ np.asarray(ref["components"], np.float64).T
    z = z - np.asarray(ref["mean"], np.float64)
    q = np.einsum("ni,ij,nj->n", z, np.asarray(ref["precision"], np.float64), z)
    return np.sqrt(np.maximum(q, 0.0))


def reference_of(checkpoint: Any) -> dict[str, Any] | None:
    ref = (getattr(checkpoint, "meta", None) or {}).get("ood_reference")
    return ref if isinstance(ref, dict) else None


def check_batch(checkpoint: Any, x: torch.Tensor) -> list[OodResult]:
    """The guard's answer for each image of a preprocessed batch (NaNs when there is no reference)."""
    ref = reference_of(checkpoint)
    if ref is None:
        return [OodResult(float("nan"), float("nan"), False)] * int(x.shape[0])
    d = ood_score(ref, features(checkpoint.model, checkpoint.meta["model"], x))
    thr = float(ref["threshold"])
    return [OodResult(float(v), thr, bool(v > thr)) for v in d]


def check_pixels(checkpoint: Any, pixels: np.ndarray) -> OodResult:
    """The guard's answer for one decoded image ((H, W) or colour uint8), preprocessed as in training."""
    from fracbench.serving.preprocess import preprocess

    return check_batch(checkpoint, preprocess(pixels, checkpoint.image_size, checkpoint.channels))[0]


def ood_columns(checkpoint: Any, x: torch.Tensor) -> list[dict[str, Any]]:
    """Per-image ``{"ood", "ood_distance"}`` for prediction rows (the one call predict makes)."""
    return [r.columns() for r in check_batch(checkpoint, x)]
