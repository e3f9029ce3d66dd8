"""fp32 vs channels_last vs bf16 autocast: bare training-step speed and the effect on a short run's metrics.

Usage (writes one JSON file; nothing under results/):

    nice -n 10 python benchmarks/precision_run.py --out /tmp/precision.json \
        [--data-dir ../shared/data/fracatlas] [--size 150] [--run-size 112] [--epochs 3] [--max-train 800]

The bare step is paper_cnn's fwd+bwd+Adam on resident batches of 32 (no data loading): the
limit for any training pipeline at that precision. The short run is ``fit`` under the honest
protocol on FracAtlas (same seed, same images) once per precision.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fracbench.config import PRECISIONS, TrainConfig  # noqa: E402
from fracbench.models import create_model  # noqa: E402
from fracbench.training.train import _autocast  # noqa: E402


def bare_step_rate(precision: str, size: int, batch: int = 32, steps: int = 16, warmup: int = 2,
                   n_batches: int = 8) -> dict:
    """images/s of paper_cnn's training step on resident batches under ``precision`` (median of steps)."""
    flags = PRECISIONS[precision]
    torch.manual_seed(0)
    model = create_model("paper_cnn", num_classes=2, in_channels=3, image_size=size)
    # several resident batches, cycled: one repeated batch is overfitted within a few steps, and tiny
    # gradients can fall into slow denormal arithmetic, which would understate the limit
    fmt = torch.channels_last if flags.get("channels_last") else torch.contiguous_format
    data = [(torch.rand(batch, 3, size, size).contiguous(memory_format=fmt), torch.randint(0, 2, (batch,)))
            for _ in range(n_batches)]
    if flags.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    model.train()
    for i in range(warmup + steps):
        x, y = data[i % n_batches]
        t0 = time.perf_counter()
        with _autocast(torch.device("cpu"), bool(flags.get("amp"))):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"images_per_s": round(batch / med, 1), "step_ms_median": round(med * 1000, 1),
            "step_ms_min": round(min(times) * 1000, 1), "steps": steps}


def short_run(precision: str, data_dir: str, size: int, epochs: int, max_train: int, out: Path) -> dict:
    from fracbench.data import prepare
    from fracbench.data.cache import build_cache
    from fracbench.training.train import fit

    prepared = prepare("fracatlas", data_dir, progress=False)
    cache = build_cache(prepared.manifest, size, progress=False)
    cfg = TrainConfig(image_size=size, epochs=epochs, max_train_images=max_train, device="cpu", n_boot=200,
                      protocol="honest", **PRECISIONS[precision])
    rec = fit(cfg, cache, out / precision, experiment=f"precision_{precision}", progress=False)
    t = rec["metrics"]["test"]
    return {"test_auroc": t["auroc"], "test_auroc_ci95": t["auroc_ci95"],
            "val_auroc": (rec["metrics"].get("val") or {}).get("auroc"), "selected_epoch": rec["selected_epoch"],
            "train_seconds": rec["train_seconds"], "images_per_second": rec["images_per_second"]}


def paired_auroc_difference(work: Path, other: str, base: str = "fp32", n_boot: int = 2000) -> dict:
    """Test AUROC of ``other`` minus ``base`` on the same test images, with a paired bootstrap 95% CI."""
    import csv

    import numpy as np
    from sklearn.metrics import roc_auc_score

    def load(p: str) -> dict[str, tuple[int, float]]:
        with open(work / p / "predictions.csv", newline="") as fh:
            return {r["id"]: (int(r["label"]), float(r["score"])) for r in csv.DictReader(fh) if r["split"] == "test"}

    a, b = load(base), load(other)
    ids = sorted(a)
    y = np.array([a[i][0] for i in ids])
    s0, s1 = np.array([a[i][1] for i in ids]), np.array([b[i][1] for i in ids])
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(n_boot):
        k = rng.integers(0, len(y), len(y))
        if len(set(y[k])) == 2:
            diffs.append(roc_auc_score(y[k], s1[k]) - roc_auc_score(y[k], s0[k]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"minus": base, "test_images": len(ids), "auroc_difference": float(roc_auc_score(y, s1) - roc_auc_score(y, s0)),
            "ci95": [float(lo), float(hi)], "max_abs_score_difference": float(np.abs(s1 - s0).max())}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fracatlas"))
    p.add_argument("--size", type=int, default=150)
    p.add_argument("--run-size", type=int, default=150)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-train", type=int, default=0)
    p.add_argument("--skip-run", action="store_true")
    p.add_argument("--compare-only", action="store_true",
                   help="add the paired AUROC differences to an existing --out file from its run folders")
    a = p.parse_args()
    if a.compare_only:
        report = json.loads(Path(a.out).read_text())
        work = Path(a.out).with_suffix("")
        report["paired_vs_fp32"] = {pr: paired_auroc_difference(work, pr) for pr in PRECISIONS if pr != "fp32"}
        Path(a.out).write_text(json.dumps(report, indent=1))
        print(json.dumps(report["paired_vs_fp32"], indent=1))
        return
    from fracbench.results import environment

    report: dict = {**environment("cpu"), "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                    "threads": torch.get_num_threads(), "bare_step": {}, "short_run": {},
                    "short_run_setup": {"image_size": a.run_size, "epochs": a.epochs, "max_train_images": a.max_train,
                                        "protocol": "honest", "model": "paper_cnn", "seed": 0}}
    for prec in PRECISIONS:
        report["bare_step"][prec] = bare_step_rate(prec, a.size)
        print(prec, report["bare_step"][prec], flush=True)
    if not a.skip_run:
        work = Path(a.out).with_suffix("")
        for prec in PRECISIONS:
            report["short_run"][prec] = short_run(prec, a.data_dir, a.run_size, a.epochs, a.max_train, work)
            print(prec, report["short_run"][prec], flush=True)
        report["paired_vs_fp32"] = {pr: paired_auroc_difference(work, pr) for pr in PRECISIONS if pr != "fp32"}
    Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
