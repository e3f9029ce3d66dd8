"""FLOPs and the hardware limit: how much of this machine's fp32 matmul rate training actually uses.

* FLOPs per model: ``count_flops`` (torch's FlopCounterMode; convolutions and matrix products,
  a multiply-add counted as 2) for one image at the model's benchmark size; a training step is
  taken as 3x the forward pass (forward, plus gradients for inputs and for weights).
* the limit: the best fp32 GFLOP/s of ``torch.mm`` on 2048 x 2048 matrices (a few repetitions).
* achieved: images/s of fracbench's training loop x training FLOPs per image, as a fraction of
  the limit. Target >= 50% for paper_cnn (asserted only with FRACBENCH_BENCH_TARGETS=1).
"""

from __future__ import annotations

import pytest
from _benchlib import (
    SIZES,
    SMOKE,
    check_target,
    describe,
    fracbench_trainer,
    make_model,
    matmul_gflops,
    median,
    run_pedantic,
)

from fracbench.models import count_flops, count_params, list_models

FRACTION_TARGET = 0.5
TRAIN_FACTOR = 3  # training step ~ 3 x forward

# every registered model at its native size (paper_cnn at 150 px), tiny_cnn (a test model) aside;
# smoke mode: the two benchmark models at 64 px
FLOP_MODELS = ["paper_cnn", "resnet18"] if SMOKE else [m for m in list_models() if m != "tiny_cnn"]


def _size(model: str) -> int:
    from fracbench.models import MODELS

    if SMOKE:
        return SIZES.image
    return SIZES.image if model == "paper_cnn" else MODELS.get(model).default_size


@pytest.mark.parametrize("model", FLOP_MODELS)
def test_flops_per_model(benchmark, model) -> None:
    size = _size(model)
    net = make_model(model, size)
    counted: list[int] = []
    times = run_pedantic(benchmark, lambda: counted.append(count_flops(net, size, 3)), group="flops", rounds=1)
    flops = counted[-1]
    describe(benchmark, model=model, image_size=size, params=count_params(net),
             forward_gflops_per_image=round(flops / 1e9, 4),
             train_gflops_per_image=round(TRAIN_FACTOR * flops / 1e9, 4), count_seconds=round(times[0], 3))


def _peak(measured) -> float:
    if "matmul_gflops" not in measured:
        measured["matmul_gflops"] = matmul_gflops(SIZES.matmul_n, SIZES.matmul_reps)[0]
    return measured["matmul_gflops"]


def test_matmul_peak(benchmark, measured) -> None:
    import torch

    n = SIZES.matmul_n
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    times = run_pedantic(benchmark, lambda: torch.mm(a, b, out=out), group="flops", rounds=SIZES.matmul_reps,
                         warmup=1)
    best = 2.0 * n**3 / min(times) / 1e9
    measured["matmul_gflops"] = best
    describe(benchmark, matmul=f"fp32 {n}x{n} torch.mm", best_gflops_per_s=round(best, 2),
             median_gflops_per_s=round(2.0 * n**3 / median(times) / 1e9, 2))


@pytest.mark.parametrize("model", ["paper_cnn", "resnet18"])
def test_train_gflops_fraction(benchmark, model, bench_data, measured) -> None:
    size = SIZES.image if model == "paper_cnn" else SIZES.resnet_image
    batches = SIZES.train_batches if model == "paper_cnn" else SIZES.resnet_batches
    rounds = SIZES.rounds if model == "paper_cnn" else SIZES.resnet_rounds
    rows = bench_data.rows[: batches * SIZES.batch]
    cache, cache_rows = bench_data.cache_for(size, rows)
    run = fracbench_trainer(cache, cache_rows, model, batch=SIZES.batch)
    times = run_pedantic(benchmark, run, group="flops", rounds=rounds, warmup=SIZES.warmup)
    rate = len(rows) / median(times)
    flops = count_flops(make_model(model, size), size, 3)
    achieved = rate * TRAIN_FACTOR * flops / 1e9
    peak = _peak(measured)
    fraction = achieved / peak
    describe(benchmark, data=bench_data.source, model=model, image_size=size, images_per_s=round(rate, 2),
             train_gflops_per_image=round(TRAIN_FACTOR * flops / 1e9, 4), achieved_gflops_per_s=round(achieved, 2),
             matmul_gflops_per_s=round(peak, 2), fraction_of_matmul=round(fraction, 4))
    if model == "paper_cnn":
        check_target(benchmark, "achieved/matmul GFLOP/s", fraction, FRACTION_TARGET, at_least=True)
