"""Shared pieces of the benchmark suite: mode flags, sizes, timing, targets and the training runners.

Two modes:

* full (the default): the FracAtlas dev copy at ``../shared/data/fracatlas``, the paper's sizes
  (150 px for paper_cnn, 224 px for resnet18). Targets are asserted only with
  ``FRACBENCH_BENCH_TARGETS=1``.
* smoke (``FRACBENCH_BENCH_SMOKE=1``): synthetic radiographs, 64 px, a batch or two, a few rounds.
  It proves the suite runs; its numbers mean nothing and no target is ever asserted.

Every benchmark times its own calls (``Timed``) inside ``benchmark.pedantic`` so that percentiles
and images/s come from the same rounds pytest-benchmark reports.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SMOKE = os.environ.get("FRACBENCH_BENCH_SMOKE") == "1"
TARGETS = os.environ.get("FRACBENCH_BENCH_TARGETS") == "1" and not SMOKE
REPO_ROOT = Path(__file__).resolve().parents[1]
# CI clones the repository with ../shared beside it; the data is read in place, never copied
FRACATLAS_DEV = (REPO_ROOT / ".." / "shared" / "data" / "fracatlas").resolve()
DEVICE = torch.device("cpu")  # the suite measures this machine's CPU pipeline


@dataclass(frozen=True)
class Sizes:
    image: int  # paper_cnn input side (the paper's 150 px)
    resnet_image: int  # resnet18 input side (its native 224 px)
    batch: int  # the paper's batch size
    train_batches: int  # paper_cnn: batches per timed round
    resnet_batches: int  # resnet18: batches per timed round
    rounds: int  # paper_cnn training rounds
    resnet_rounds: int  # resnet18 training rounds
    warmup: int  # untimed rounds before training rounds
    decode_rounds: int  # cold-decode epochs
    epoch_rounds: int  # cached epochs
    latency_rounds: int  # single-image predictions
    cam_rounds: int  # Grad-CAM calls
    demo_rounds: int  # demo round trips
    batch_files: int  # files per batch-throughput round
    matmul_n: int  # side of the square fp32 matmul
    matmul_reps: int
    memory_batches: int  # batches of the memory epoch; 0 = the whole training split


FULL_SIZES = Sizes(image=150, resnet_image=224, batch=32, train_batches=20, resnet_batches=3, rounds=3,
                   resnet_rounds=2, warmup=1, decode_rounds=3, epoch_rounds=10, latency_rounds=100,
                   cam_rounds=30, demo_rounds=30, batch_files=128, matmul_n=2048, matmul_reps=5,
                   memory_batches=0)
SMOKE_SIZES = Sizes(image=64, resnet_image=64, batch=32, train_batches=2, resnet_batches=1, rounds=1,
                    resnet_rounds=1, warmup=0, decode_rounds=1, epoch_rounds=2, latency_rounds=5,
                    cam_rounds=3, demo_rounds=3, batch_files=8, matmul_n=512, matmul_reps=3,
                    memory_batches=2)
SIZES = SMOKE_SIZES if SMOKE else FULL_SIZES


# --------------------------------------------------------------------------------------------
# timing


class Timed:
    """Wraps a callable and keeps the wall time (perf_counter) of each call."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.times: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.times.append(time.perf_counter() - t0)
        return out


def run_pedantic(benchmark, fn: Callable[[], Any], *, group: str, rounds: int, warmup: int = 0) -> list[float]:
    """Run ``fn`` under ``benchmark.pedantic`` and return the seconds of the timed rounds (warm-up excluded).

    The group must be set before the run: pytest-benchmark reads it when it makes the statistics.
    """
    benchmark.group = group
    timed = Timed(fn)
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=warmup, iterations=1)
    return timed.times[-rounds:] if len(timed.times) >= rounds else timed.times


def time_calls(fn: Callable[[], Any], *, rounds: int, warmup: int = 0) -> list[float]:
    """The same, outside pytest-benchmark (for a comparison side a deselected test did not measure)."""
    timed = Timed(fn)
    for _ in range(warmup):
        fn()
    for _ in range(rounds):
        timed()
    return timed.times


def percentiles_ms(times: list[float]) -> dict[str, float]:
    ms = np.asarray(times, dtype=np.float64) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "mean_ms": round(float(ms.mean()), 3), "n": int(ms.size)}


def median(times: list[float]) -> float:
    return float(statistics.median(times))


# --------------------------------------------------------------------------------------------
# reporting


def describe(benchmark, **extra: Any) -> None:
    """Record, next to the figure, what it was measured on."""
    benchmark.extra_info.update(mode="smoke" if SMOKE else "full", device=str(DEVICE), torch=torch.__version__,
                                torch_threads=torch.get_num_threads(), **extra)


def check_target(benchmark, name: str, value: float, target: float, *, at_least: bool, unit: str = "") -> None:
    """Record a target in extra_info; assert it only with FRACBENCH_BENCH_TARGETS=1 (never in smoke mode)."""
    met = bool(value >= target) if at_least else bool(value <= target)
    rel = ">=" if at_least else "<="
    benchmark.extra_info.setdefault("targets", {})[name] = {
        "value": round(float(value), 4), "target": f"{rel} {target:g}{unit}", "met": met, "asserted": TARGETS}
    if TARGETS:
        assert met, f"{name} = {value:.4g}{unit}; target {rel} {target:g}{unit}"


# --------------------------------------------------------------------------------------------
# memory


def current_rss_bytes() -> int | None:
    """Resident set size now (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def maxrss_bytes() -> int:
    """The process's lifetime peak RSS from getrusage (KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def hwm_bytes() -> int | None:
    """Peak RSS since the last reset (VmHWM, Linux), or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_bytes() -> int:
    """The process's lifetime peak RSS: the largest of getrusage's figure, VmHWM and the RSS now
    (the kernel updates the first two lazily, so they can trail the last by a page or two)."""
    return max(n for n in (maxrss_bytes(), hwm_bytes(), current_rss_bytes()) if n is not None)


def mib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


# --------------------------------------------------------------------------------------------
# training


def make_model(name: str, size: int, seed: int = 0) -> torch.nn.Module:
    from fracbench.models import create_model

    torch.manual_seed(seed)
    return create_model(name, num_classes=2, in_channels=3, image_size=size)


def fracbench_trainer(cache, rows: np.ndarray, model_name: str, *, channels_last: bool = False,
                      compile: bool = False, batch: int = 32, seed: int = 0) -> Callable[[], int]:
    """One call = one pass of fracbench's training loop over ``rows`` of the decode cache; returns images seen.

    The paper's settings: batch 32, Adam lr 1e-3 weight decay 1e-4, cross-entropy, random flip.
    """
    from torch import nn

    from fracbench.data.loader import BatchLoader, random_flip
    from fracbench.training.train import train_one_epoch

    model = make_model(model_name, cache.size, seed)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    loader = BatchLoader(cache, rows, batch, 3, shuffle=True, generator=torch.Generator().manual_seed(seed))
    g_aug = torch.Generator().manual_seed(seed + 1)
    train_model = torch.compile(model) if compile else model

    def run() -> int:
        return train_one_epoch(train_model, loader, opt, loss_fn, DEVICE, augment=random_flip, generator=g_aug,
                               channels_last=channels_last)["n"]

    return run


def matmul_gflops(n: int, reps: int) -> tuple[float, list[float]]:
    """Best fp32 GFLOP/s of ``torch.mm`` on n x n matrices over ``reps`` calls (after one warm-up)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    times = time_calls(lambda: torch.mm(a, b, out=out), rounds=reps, warmup=1)
    return 2.0 * n**3 / min(times) / 1e9, times
