"""How well the OOD guard separates real radiographs from things that are not radiographs.

In-distribution: a dataset's test split (never used to fit or calibrate the reference).
Out-of-distribution: procedurally generated images, nothing downloaded: gradients, noise, extreme
strips, text, flat images, and photo-like colour scenes and 1/f colour noise (the spectrum of
natural photographs). Reports AUROC (distance as the score, OOD = positive), the false-warning rate
on the real test radiographs with a Wilson 95% CI, and the warning rate per probe family.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ProbeFn = Callable[[np.random.Generator], np.ndarray]


# --------------------------------------------------------------------------------------------
# probes (uint8, grayscale (H, W) or colour (H, W, 3))


def _gradient(rng: np.random.Generator) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(200, 900, 2))
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == 0:
        g = xx / max(w - 1, 1)
    elif kind == 1:
        g = yy / max(h - 1, 1)
    else:
        g = np.hypot(yy - h / 2, xx - w / 2) / math.hypot(h / 2, w / 2)
    if rng.random() < 0.5:
        g = 1 - g
    return (g * 255).astype(np.uint8)


def _gray_noise(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, tuple(int(v) for v in rng.integers(100, 700, 2)), dtype=np.uint8)


def _colour_noise(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (*(int(v) for v in rng.integers(100, 700, 2)), 3), dtype=np.uint8)


def _strip(rng: np.random.Generator) -> np.ndarray:
    long, short = int(rng.integers(2000, 5000)), int(rng.integers(5, 20))
    base = np.linspace(0, 255, long)[None, :] * np.ones((short, 1))
    base = base + rng.normal(0, 20, base.shape)
    px = np.clip(base, 0, 255).astype(np.uint8)
    return px if rng.random() < 0.5 else px.T.copy()


def _text(rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw

    w, h = int(rng.integers(300, 800)), int(rng.integers(200, 600))
    bg = int(rng.integers(200, 256))
    im = Image.new("L", (w, h), bg)
    d = ImageDraw.Draw(im)
    words = ["invoice", "fracture", "hello", "total", "meeting", "cat", "radiograph", "lorem", "ipsum", "2024"]
    y = 10
    while y < h - 20:
        line = " ".join(rng.choice(words, int(rng.integers(3, 9))))
        d.text((10, y), line, fill=int(rng.integers(0, 80)))
        y += int(rng.integers(14, 30))
    return np.asarray(im, np.uint8)


def _flat(rng: np.random.Generator) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(64, 800, 2))
    return np.full((h, w), int(rng.integers(0, 256)), np.uint8)


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A colourful outdoor scene drawn with PIL: sky, sun, ground, houses, trees, a cat-like blob."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = int(rng.integers(400, 900)), int(rng.integers(300, 700))
    sky = np.linspace(rng.integers(80, 160, 3), rng.integers(180, 255, 3), h)
    arr = np.broadcast_to(sky[:, None, :], (h, w, 3)).astype(np.uint8).copy()
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    horizon = int(h * rng.uniform(0.45, 0.7))
    d.rectangle([0, horizon, w, h], fill=tuple(int(v) for v in rng.integers((20, 90, 10), (90, 180, 70))))
    r = int(rng.integers(20, 60))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, horizon // 2 + r + 1))
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 220, int(rng.integers(0, 120))))
    for _ in range(int(rng.integers(3, 12))):
        x0 = int(rng.integers(0, w - 40))
        bw, bh = int(rng.integers(30, 120)), int(rng.integers(30, 150))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:  # a house with a roof
            d.rectangle([x0, horizon - bh, x0 + bw, horizon], fill=colour)
            d.polygon([(x0 - 5, horizon - bh), (x0 + bw // 2, horizon - bh - bw // 2), (x0 + bw + 5, horizon - bh)],
                      fill=(150, 40, 30))
        elif kind == 1:  # a tree
            d.rectangle([x0 + bw // 2 - 5, horizon - bh, x0 + bw // 2 + 5, horizon], fill=(90, 60, 30))
            d.ellipse([x0, horizon - bh - bw, x0 + bw, horizon - bh + 10], fill=(30, int(rng.integers(100, 200)), 40))
        else:  # an animal-ish blob with ears
            y0 = int(rng.integers(horizon, h - 30))
            d.ellipse([x0, y0, x0 + bw, y0 + bw // 2], fill=colour)
            d.polygon([(x0 + bw - 20, y0), (x0 + bw - 10, y0 - 20), (x0 + bw, y0)], fill=colour)
    return np.asarray(im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5)))), np.uint8)


def _pink_noise(rng: np.random.Generator) -> np.ndarray:
    """Colour noise with a 1/f amplitude spectrum, as natural photographs have."""
    h, w = (int(v) for v in rng.integers(200, 600, 2))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))
    chans = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, amp.shape)
        img = np.fft.irfft2(amp * np.exp(1j * phase), s=(h, w))
        img = (img - img.mean()) / (img.std() + 1e-9)
        chans.append(img)
    mix = rng.normal(0, 1, (3, 3)) * 0.5 + np.eye(3)  # correlated channels, as in photos
    arr = np.einsum("chw,dc->hwd", np.stack(chans), mix)
    arr = (arr - arr.min()) / (np.ptp(arr) + 1e-9)
    return (arr * 255).astype(np.uint8)


PROBES: dict[str, ProbeFn] = {
    "gradient": _gradient,
    "gray noise": _gray_noise,
    "colour noise": _colour_noise,
    "strip (extreme aspect)": _strip,
    "text": _text,
    "flat": _flat,
    "photo-like scene": _scene,
    "1/f colour noise": _pink_noise,
}


def make_probes(per_family: int = 40, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """``per_family`` procedurally generated non-radiographs of each family (deterministic in ``seed``)."""
    return {name: [fn(np.random.default_rng([seed, i, k])) for k in range(per_family)]
            for i, (name, fn) in enumerate(PROBES.items())}


# --------------------------------------------------------------------------------------------
# the evaluation


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _pixel_distances(ck: Any, images: list[np.ndarray], batch: int = 64) -> np.ndarray:
    import torch

    from fracbench.ood import features, ood_score, reference_of
    from fracbench.predict import preprocess

    out = []
    for start in range(0, len(images), batch):
        x = torch.cat([preprocess(p, ck.image_size, ck.channels) for p in images[start:start + batch]])
        out.append(ood_score(reference_of(ck), features(ck.model, ck.meta["model"], x)))
    return np.concatenate(out) if out else np.zeros(0)


def _portable(path: str | os.PathLike[str]) -> str:
    from fracbench.paths import REPO_ROOT

    p = Path(path).resolve()
    try:
        return p.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return p.name


def evaluate(checkpoint: str | os.PathLike[str], dataset: str, manifest: str | os.PathLike[str],
             data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] = "results/ood",
             per_family: int = 40, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Evaluate the guard of ``checkpoint`` on ``dataset``'s test split against the probes.

    Uses the sidecar's reference when it has one; otherwise fits one on the manifest's train split
    and calibrates it on its val split (said in the output, the sidecar is left alone). Writes
    ``out_dir/ood_eval.json`` and ``out_dir/ood_distances.png``; returns the JSON's content.
    """
    from sklearn.metrics import roc_auc_score

    from fracbench.checkpoint import load_checkpoint
    from fracbench.data.cache import build_cache
    from fracbench.data.manifest import Manifest
    from fracbench.io import atomic_write_json
    from fracbench.ood import _batches_features, _cache_batches, _usable_rows, fit_reference, ood_score

    ck = load_checkpoint(checkpoint)
    man = Manifest.read(manifest, dataset, data_dir)
    cache = build_cache(man, ck.image_size, progress=progress)
    source = "checkpoint sidecar"
    if ck.meta.get("ood_reference") is None:
        ck.meta["ood_reference"] = fit_reference(ck, cache, seed=seed)
        source = "fitted for this evaluation on the manifest's train split, calibrated on its val split"
    ref = ck.meta["ood_reference"]
    rows = _usable_rows(cache, "test")
    d_test = ood_score(ref, _batches_features(ck.model, ck.meta["model"], _cache_batches(cache, rows, ck.channels)))
    probes = make_probes(per_family, seed)
    d_probe = {name: _pixel_distances(ck, imgs) for name, imgs in probes.items()}
    thr = float(ref["threshold"])
    all_probe = np.concatenate(list(d_probe.values()))
    y = np.r_[np.zeros(len(d_test)), np.ones(len(all_probe))]
    s = np.r_[d_test, all_probe]
    k_false = int((d_test > thr).sum())
    per = {}
    for name, d in d_probe.items():
        k = int((d > thr).sum())
        per[name] = {"n": len(d), "warned": k, "warning_rate": k / len(d), "warning_rate_ci95": list(wilson(k, len(d))),
                     "auroc_vs_test": float(roc_auc_score(np.r_[np.zeros(len(d_test)), np.ones(len(d))],
                                                          np.r_[d_test, d])),
                     "median_distance": float(np.median(d))}
    k_all = int((all_probe > thr).sum())
    result = {
        "checkpoint": _portable(checkpoint),  # relative to the repository when inside it: no local paths
        "model": ck.meta["model"],
        "dataset": dataset,
        "manifest": _portable(manifest),
        "manifest_sha256": man.fingerprint,
        "reference_source": source,
        "reference": {k: ref.get(k) for k in ("method", "layer", "pool", "dim_in", "fit_images", "calibration_images",
                                              "quantile", "threshold", "shrinkage", "manifest_sha256")},
        "counts": {"test_radiographs": len(d_test), "probes": len(all_probe), "per_family": per_family,
                   "test_failed_to_decode": int(len(cache.indices("test")) - len(rows))},
        "auroc": float(roc_auc_score(y, s)),
        "false_warning_rate": k_false / len(d_test),
        "false_warning_rate_ci95": list(wilson(k_false, len(d_test))),
        "false_warnings": k_false,
        "probe_warning_rate": k_all / len(all_probe),
        "probe_warning_rate_ci95": list(wilson(k_all, len(all_probe))),
        "families": per,
        "test_distance": {"median": float(np.median(d_test)), "p95": float(np.quantile(d_test, 0.95))},
        "seed": seed,
    }
    out = Path(out_dir)
    from fracbench import results as R

    result["environment"] = {**R.environment("cpu"), "created": R.now_iso()}  # commit, clean tree, hardware
    atomic_write_json(out / "ood_eval.json", result)
    _figure(out / "ood_distances.png", d_test, d_probe, thr, dataset)
    return result


def _figure(path: Path, d_test: np.ndarray, d_probe: dict[str, np.ndarray], thr: float, dataset: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fracbench.io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [(f"{dataset} test radiographs", d_test)] + list(d_probe.items())
    data = [np.log10(np.maximum(d, 1e-3)) for _, d in groups]
    ax.boxplot(data, vert=False, tick_labels=[n for n, _ in groups], showfliers=True)
    ax.axvline(math.log10(max(thr, 1e-3)), color="red", linestyle="--", label=f"warning threshold {thr:.1f}")
    ax.set_xlabel("log10 Mahalanobis distance of pooled features")
    ax.set_title("OOD guard: feature distance from the training radiographs")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
