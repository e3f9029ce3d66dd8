"""Checkpoints: safetensors weights plus a JSON sidecar with everything needed to use them alone.

``<name>.safetensors`` holds only tensors (no code can run on load); ``<name>.json`` holds the
model name and kwargs, preprocessing, class names, decision threshold and a pointer to the run
record. Pickle files are refused unless the caller allows them explicitly, and are then read
with ``torch.load(weights_only=True)``. Training-resume state (optimizer, RNG) is a separate
``last.pt`` that fracbench itself wrote, also read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fracbench.io import atomic_write_bytes, atomic_write_json

FORMAT_VERSION = 1
CLASS_NAMES = ("not fractured", "fractured")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


@dataclass
class Checkpoint:
    model: nn.Module
    meta: dict[str, Any]
    path: Path

    @property
    def image_size(self) -> int:
        return int(self.meta["preprocessing"]["image_size"])

    @property
    def channels(self) -> int:
        return int(self.meta["preprocessing"]["channels"])

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))


def save_checkpoint(path: str | Path, model: nn.Module, *, model_name: str, model_kwargs: dict[str, Any],
                    image_size: int, channels: int, threshold: float, record: str | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar atomically."""
    from safetensors.torch import save

    path = Path(path).with_suffix(".safetensors")
    module = model.module if hasattr(model, "module") else model
    module = getattr(module, "_orig_mod", module)  # torch.compile wrapper
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "model_kwargs": model_kwargs,
        "num_classes": 2,
        "class_names": list(CLASS_NAMES),
        "preprocessing": {"image_size": image_size, "channels": channels, "resize": "square, bilinear",
                          "normalize": "(x/255 - 0.5) / 0.5", "grayscale": "luminance, replicated to channels"},
        "threshold": float(threshold),
        "record": record,
        **(extra or {}),
    }
    _write_if_changed(path, save(tensors, metadata={"fracbench": json.dumps({"model": model_name})}))
    sidecar = path.with_suffix(".json")
    try:
        unchanged = json.loads(sidecar.read_text(encoding="utf-8")) == json.loads(json.dumps(meta))
    except (OSError, ValueError):
        unchanged = False
    if not unchanged:
        atomic_write_json(sidecar, meta)
    return path


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically unless the file already holds exactly those bytes (the final
    record step re-saves the chosen weights with their threshold: the weights file is then left alone)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_bytes(path, data)
    return True


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", allow_pickle: bool = False) -> Checkpoint:
    """Rebuild the model from a checkpoint; errors name the file and the fix."""
    from fracbench.models import create_model

    path = Path(path)
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin", ".model"):
        if not allow_pickle:
            raise CheckpointError(f"{path}: a pickle checkpoint; fracbench does not unpickle files by default. "
                                  "Convert it to safetensors, or pass --allow-pickle if you trust its source "
                                  "(it is then read with weights_only=True).")
        sidecar = path.with_suffix(".json")
    else:
        path = path.with_suffix(".safetensors")
        sidecar = path.with_suffix(".json")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint. Train one with `fracbench train` or `fracbench run`.")
    try:
        meta = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{sidecar}: metadata sidecar missing; a fracbench checkpoint is a .safetensors "
                              "file with a .json beside it") from None
    except ValueError as exc:
        raise CheckpointError(f"{sidecar}: damaged metadata ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{sidecar}: cannot read metadata ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{sidecar}: damaged metadata (a JSON {type(meta).__name__}, not an object); "
                              "not a fracbench checkpoint")
    for key in ("model", "preprocessing"):
        if key not in meta:
            raise CheckpointError(f"{sidecar}: metadata lacks {key!r}; not a fracbench checkpoint")
    _check_ood_reference(meta, sidecar)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors raises its own error types for truncation and corruption
        raise CheckpointError(f"{path}: cannot read weights ({type(exc).__name__}: {exc}); the file is damaged "
                              "or truncated: retrain or copy it again") from None
    try:
        model = create_model(meta["model"], num_classes=int(meta.get("num_classes", 2)),
                             in_channels=int(meta["preprocessing"]["channels"]),
                             image_size=int(meta["preprocessing"]["image_size"]), **meta.get("model_kwargs", {}))
    except KeyError as exc:  # an unknown model name (with close matches) or a missing preprocessing field
        raise CheckpointError(f"{sidecar}: {exc.args[0] if exc.args else exc}") from None
    except Exception as exc:  # odd values written by hand or by another tool: wrong types, bad kwargs
        raise CheckpointError(f"{sidecar}: cannot build model {meta.get('model')!r} from this metadata "
                              f"({type(exc).__name__}: {exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:  # TypeError: not a state dict
        first = str(exc).splitlines()[:3]
        raise CheckpointError(f"{path}: weights do not fit model {meta['model']!r}: {' '.join(first)}") from None
    model.eval().to(device)
    return Checkpoint(model, meta, path)


def _check_ood_reference(meta: dict[str, Any], sidecar: Path) -> None:
    """Refuse a sidecar whose OOD reference is damaged (a wrong shape would give wrong warnings silently)."""
    if meta.get("ood_reference") is None:
        return  # an older checkpoint: predictions carry "no OOD reference"
    try:
        validate_reference(meta["ood_reference"])
    except ValueError as exc:
        raise CheckpointError(f"{sidecar}: damaged OOD reference: {exc}. Refit it with "
                              "fracbench.serving.ood.attach_reference, or delete the 'ood_reference' key") from None


def write_ood_reference(path: str | Path, reference: dict[str, Any]) -> Path:
    """Add (or replace) the OOD reference in a checkpoint's sidecar, atomically; returns the sidecar."""
    sidecar = Path(path).with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{sidecar}: cannot read metadata ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{sidecar}: damaged metadata; not a fracbench checkpoint")
    meta["ood_reference"] = reference
    _check_ood_reference(meta, sidecar)
    return atomic_write_json(sidecar, meta)


def export_checkpoint(src: str | Path, dest_dir: str | Path, max_bytes: int = 5 * 1024 * 1024) -> Path:
    """Copy a run's checkpoint and its run record into ``dest_dir`` so they travel together.

    Used to ship the demo's small checkpoint in the repository: the sidecar's record pointer is
    rewritten to the copied ``record.json`` beside it. Refuses weights larger than ``max_bytes``.
    """
    src = Path(src).with_suffix(".safetensors")
    ck = load_checkpoint(src)  # validates before anything is copied
    size = src.stat().st_size
    if size > max_bytes:
        raise CheckpointError(f"{src}: {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit for a "
                              "checkpoint kept in the repository")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    atomic_write_bytes(dest, src.read_bytes())
    meta = dict(ck.meta)
    record_src = src.parent.parent / "record.json"  # runs/<exp>/seed<k>/checkpoints/best.*
    if record_src.exists():
        atomic_write_bytes(dest_dir / "record.json", record_src.read_bytes())
        meta["record"] = "record.json"
    atomic_write_json(dest.with_suffix(".json"), meta)
    return dest


# the OOD reference a sidecar carries (fitted and used by fracbench.serving.ood): its format is the checkpoint's
REFERENCE_VERSION = 1


def validate_reference(ref: Any) -> None:
    """Raise ValueError naming what is wrong with a reference (shapes, values); the caller adds the file."""
    if not isinstance(ref, dict):
        raise ValueError(f"ood_reference is a JSON {type(ref).__name__}, not an object")
    if ref.get("version") != REFERENCE_VERSION:
        raise ValueError(f"ood_reference version {ref.get('version')!r} is not {REFERENCE_VERSION}")
    try:
        d_in = int(ref["dim_in"])
        center = np.asarray(ref["center"], np.float64)
        mean = np.asarray(ref["mean"], np.float64)
        prec = np.asarray(ref["precision"], np.float64)
        comp = None if ref.get("components") is None else np.asarray(ref["components"], np.float64)
        thr = float(ref["threshold"])
    except KeyError as exc:
        raise ValueError(f"ood_reference lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ood_reference holds non-numeric or ragged values ({exc})") from None
    k = d_in if comp is None else comp.shape[0] if comp.ndim == 2 else -1
    if center.shape != (d_in,):
        raise ValueError(f"ood_reference center has shape {center.shape}, expected ({d_in},)")
    if comp is not None and comp.shape != (k, d_in):
        raise ValueError(f"ood_reference components have shape {comp.shape}, expected (k, {d_in})")
    if mean.shape != (k,) or prec.shape != (k, k):
        raise ValueError(f"ood_reference mean {mean.shape} / precision {prec.shape} do not fit width {k}")
    arrays = [center, mean, prec] + ([comp] if comp is not None else [])
    if not all(np.isfinite(a).all() for a in arrays) or not math.isfinite(thr) or thr < 0:
        raise ValueError("ood_reference holds non-finite values or a negative threshold")
