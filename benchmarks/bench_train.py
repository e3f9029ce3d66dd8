"""Training throughput: fracbench's pipeline against the tutorial's, same model, same images, same run.

Each timed round trains a fixed number of batches of 32 (paper_cnn at 150 px: 20 batches;
resnet18 at 224 px: 3 batches) over the same training images:

* reference (benchmarks/tutorial_reference.py): ImageFolder over symlinks to those images, PIL
  decode + Resize + flip + ToTensor + Normalize per image in every epoch, DataLoader(32, shuffle);
* fracbench: BatchLoader over the decode cache + ``train_one_epoch`` (batch flip);
* fracbench variants: channels_last memory format, and ``torch.compile`` (skipped, with the
  reason, where it does not work on this machine; always skipped in smoke mode).

images/s of each and the ratio to the reference are in extra_info. The ratio target (>= 4x) is
for paper_cnn with fracbench's default settings; resnet18's ratio is recorded for context (its
compute dwarfs decoding, so no data pipeline can speed it up much).
"""

from __future__ import annotations

import time

import pytest
from _benchlib import (
    DEVICE,
    SIZES,
    SMOKE,
    check_target,
    describe,
    fracbench_trainer,
    make_model,
    median,
    run_pedantic,
    time_calls,
)
from tutorial_reference import TutorialPipeline, build_folder

RATIO_TARGET = 4.0


def _workload(model: str) -> tuple[int, int, int]:
    """(image size, batches per round, rounds)."""
    if model == "paper_cnn":
        return SIZES.image, SIZES.train_batches, SIZES.rounds
    return SIZES.resnet_image, SIZES.resnet_batches, SIZES.resnet_rounds


@pytest.fixture(scope="module")
def workloads(bench_data):
    """Per model: the training rows of a round, their decode cache, and the tutorial's folder of them."""
    built = {}

    def get(model: str):
        if model not in built:
            size, batches, _ = _workload(model)
            rows = bench_data.rows[: batches * SIZES.batch]
            cache, cache_rows = bench_data.cache_for(size, rows)
            folder = build_folder(((bench_data.path(r), bench_data.label(r)) for r in rows),
                                  bench_data.workdir / f"imagefolder-{model}-{len(rows)}")
            built[model] = (rows, cache, cache_rows, folder)
        return built[model]

    return get


def _reference(model: str, folder, size: int):
    pipe = TutorialPipeline(folder, make_model(model, size), size=size, batch_size=SIZES.batch)
    return pipe.train


@pytest.mark.parametrize("model", ["paper_cnn", "resnet18"])
def test_train_reference(benchmark, model, workloads, measured, bench_data) -> None:
    size, _, rounds = _workload(model)
    rows, _, _, folder = workloads(model)
    times = run_pedantic(benchmark, _reference(model, folder, size), group=f"train-{model}", rounds=rounds,
                         warmup=SIZES.warmup)
    rate = len(rows) / median(times)
    measured[("reference", model)] = rate
    describe(benchmark, data=bench_data.source, pipeline="tutorial (ImageFolder + DataLoader)",
             model=model, image_size=size, images_per_round=len(rows), images_per_s=round(rate, 2))


VARIANTS = [("paper_cnn", "plain"), ("paper_cnn", "channels_last"), ("paper_cnn", "compile"),
            ("resnet18", "plain"), ("resnet18", "channels_last")]


@pytest.mark.parametrize("model, variant", VARIANTS, ids=[f"{m}-{v}" for m, v in VARIANTS])
def test_train_fracbench(benchmark, model, variant, workloads, measured, bench_data) -> None:
    size, _, rounds = _workload(model)
    rows, cache, cache_rows, folder = workloads(model)
    extra = {}
    if variant == "compile" and SMOKE:
        pytest.skip("smoke mode: compiling the training step takes longer than a smoke test may; "
                    "the full suite measures it")
    run = fracbench_trainer(cache, cache_rows, model, channels_last=variant == "channels_last",
                            compile=variant == "compile", batch=SIZES.batch)
    if variant == "compile":
        t0 = time.perf_counter()
        try:
            run()  # the first call compiles
        except Exception as exc:  # no C++ compiler, unsupported platform, ...: record why
            pytest.skip(f"torch.compile does not work on this machine: {type(exc).__name__}: {str(exc)[:300]}")
        extra["compile_and_first_round_s"] = round(time.perf_counter() - t0, 2)
    times = run_pedantic(benchmark, run, group=f"train-{model}", rounds=rounds, warmup=SIZES.warmup)
    rate = len(rows) / median(times)
    ref = measured.get(("reference", model))
    if ref is None:  # test_train_reference deselected: measure the tutorial here
        ref = len(rows) / median(time_calls(_reference(model, folder, size), rounds=rounds, warmup=SIZES.warmup))
        measured[("reference", model)] = ref
    ratio = rate / ref
    measured[("fracbench", model, variant)] = rate
    describe(benchmark, data=bench_data.source, pipeline=f"fracbench ({variant})", model=model,
             image_size=size, images_per_round=len(rows), images_per_s=round(rate, 2),
             reference_images_per_s=round(ref, 2), ratio_to_reference=round(ratio, 2), **extra)
    if variant != "plain":
        plain = measured.get(("fracbench", model, "plain"))
        if plain:
            benchmark.extra_info["ratio_to_plain"] = round(rate / plain, 3)
    if model == "paper_cnn" and variant == "plain":
        check_target(benchmark, "fracbench/tutorial images/s", ratio, RATIO_TARGET, at_least=True, unit="x")


PIPELINE_TARGET = 0.9  # the pipeline's epoch (training + evaluation) vs the bare model steps of the same work


def _bare_epoch(model_name: str, size: int, cache, train_rows, eval_cache, eval_rows, batch: int):
    """The limit: the same training steps and evaluation forwards on resident batches (no data loading).

    The batches are the round's own images and labels, converted to input tensors once and kept in
    memory, so the bare steps do the pipeline's arithmetic on the pipeline's data. (An earlier
    version repeated one random batch: Adam overfits it within a round, and tiny gradients can hit
    slow denormal arithmetic, which made the "limit" slower than the pipeline under load.)
    """
    import torch

    from fracbench.data.loader import BatchLoader

    model = make_model(model_name, size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    train = [(x, y) for x, y, _ in BatchLoader(cache, train_rows, batch, 3)]
    evals = [x for x, _, _ in BatchLoader(eval_cache, eval_rows, max(batch, 64), 3)]
    n_train = sum(len(y) for _, y in train)

    def run() -> int:
        model.train()
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for x in evals:
                model(x)
        return n_train

    return run


def _pipeline_epoch(model_name: str, size: int, cache, train_rows, eval_cache, eval_rows, batch: int):
    """fracbench's epoch: BatchLoader + flip + ``train_one_epoch``, then ``evaluate`` over the eval rows."""
    import torch

    from fracbench.data.loader import AUGMENTS, BatchLoader
    from fracbench.training.train import evaluate, train_one_epoch

    model = make_model(model_name, size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    loader = BatchLoader(cache, train_rows, batch, 3, shuffle=True, generator=g)
    evals = BatchLoader(eval_cache, eval_rows, max(batch, 64), 3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run() -> int:
        tr = train_one_epoch(model, loader, opt, loss_fn, DEVICE, augment=AUGMENTS["flip"], generator=g)
        evaluate(model, evals, DEVICE)
        return tr["n"]

    return run


def test_train_pipeline_vs_bare_step(benchmark, workloads, measured, bench_data) -> None:
    """paper_cnn: the whole epoch (training + an evaluation pass) against bare model steps of the same work.

    The bare steps are the limit for any pipeline on this machine; rounds alternate the two so that
    other work on the machine slows both alike.
    """
    model = "paper_cnn"
    size, batches, rounds = _workload(model)
    rows, cache, cache_rows, folder = workloads(model)
    n_eval = min(len(bench_data.test_rows), batches * SIZES.batch // 2)
    eval_rows = bench_data.test_rows[:n_eval]
    eval_cache, eval_cache_rows = bench_data.cache_for(size, eval_rows)
    bare = _bare_epoch(model, size, cache, cache_rows, eval_cache, eval_cache_rows, SIZES.batch)
    pipe = _pipeline_epoch(model, size, cache, cache_rows, eval_cache, eval_cache_rows, SIZES.batch)
    for _ in range(SIZES.warmup):
        bare(), pipe()
    bare_times: list[float] = []

    def interleaved() -> int:
        t0 = time.perf_counter()
        bare()
        bare_times.append(time.perf_counter() - t0)
        return pipe()

    pipe_times = run_pedantic(benchmark, interleaved, group="train-bound", rounds=rounds, warmup=0)
    pipe_times = [t - b for t, b in zip(pipe_times, bare_times)]  # each round timed both; keep the pipeline's
    ratio = median(bare_times) / median(pipe_times)
    ref = measured.get(("reference", model))
    if ref is None:
        ref = len(rows) / median(time_calls(_reference(model, folder, size), rounds=rounds, warmup=SIZES.warmup))
        measured[("reference", model)] = ref
    describe(benchmark, data=bench_data.source, model=model, image_size=size, train_images=len(rows),
             eval_images=n_eval, bare_epoch_s=round(median(bare_times), 3),
             pipeline_epoch_s=round(median(pipe_times), 3), pipeline_to_bare=round(ratio, 3),
             bare_train_images_per_s=round(len(rows) / median(bare_times), 2),
             pipeline_images_per_s=round(len(rows) / median(pipe_times), 2),
             tutorial_images_per_s=round(ref, 2),
             pipeline_to_tutorial_train_only=round(len(rows) / median(pipe_times) / ref, 2))
    check_target(benchmark, "fracbench epoch / bare model steps (training + evaluation)", ratio, PIPELINE_TARGET,
                 at_least=True, unit="x")


EVAL_TARGET = 2.0  # the evaluation pass's images/s over the training step's (issue: faster epochs, measured)


def _eval_setup(model_name: str, size: int, eval_cache, eval_rows, batch: int):
    """fracbench's per-epoch test evaluation as ``fit`` runs it (kept loader at ``eval_batch_size``, inference
    mode, the plain and the test-time-flip pass of one batch stacked in one forward), and the bare reference:
    the old way, ``torch.no_grad()`` forwards of the training batch on resident tensors."""
    import torch

    from fracbench.config import TrainConfig
    from fracbench.data.loader import BatchLoader
    from fracbench.training.train import eval_batch_size, evaluate_passes

    model = make_model(model_name, size)
    model.eval()
    cfg = TrainConfig(model=model_name, image_size=size, batch_size=batch)
    loader = BatchLoader(eval_cache, eval_rows, eval_batch_size(cfg, DEVICE), 3, keep=True)
    g = torch.Generator().manual_seed(0)
    resident = [x for x, _, _ in BatchLoader(eval_cache, eval_rows, batch, 3)]

    def passes() -> int:
        return sum(r["n"] for r in evaluate_passes(model, loader, DEVICE, [None, g]))

    def bare() -> int:
        with torch.no_grad():
            for x in resident:
                model(x)
        return len(eval_rows)

    return passes, bare, eval_batch_size(cfg, DEVICE)


def test_eval_pass_vs_bare_forward_and_train_step(benchmark, workloads, bench_data) -> None:
    """paper_cnn: images/s of fracbench's evaluation (plain + flipped test pass, as an as-published/honest
    trajectory runs it every epoch) against bare no-grad forwards of the same images and the training step.

    Rounds interleave the three so that other work on the machine slows them alike; the ratios are taken
    within this run.
    """
    model = "paper_cnn"
    size, batches, rounds = _workload(model)
    rows, cache, cache_rows, _ = workloads(model)
    n_eval = min(len(bench_data.test_rows), batches * SIZES.batch // 2)
    eval_rows = bench_data.test_rows[:n_eval]
    eval_cache, eval_cache_rows = bench_data.cache_for(size, eval_rows)
    passes, bare, eval_bs = _eval_setup(model, size, eval_cache, eval_cache_rows, SIZES.batch)
    train = fracbench_trainer(cache, cache_rows, model, batch=SIZES.batch)
    for _ in range(SIZES.warmup):
        passes(), bare(), train()
    bare_times: list[float] = []
    train_times: list[float] = []

    def interleaved() -> int:
        t0 = time.perf_counter()
        bare()
        t1 = time.perf_counter()
        train()
        t2 = time.perf_counter()
        bare_times.append(t1 - t0)
        train_times.append(t2 - t1)
        return passes()

    times = run_pedantic(benchmark, interleaved, group="eval", rounds=rounds, warmup=0)
    eval_times = [t - b - tr for t, b, tr in zip(times, bare_times, train_times)]
    eval_rate = 2 * n_eval / median(eval_times)  # two passes (plain and flipped) over n_eval images
    bare_rate = n_eval / median(bare_times)
    train_rate = len(rows) / median(train_times)
    describe(benchmark, data=bench_data.source, model=model, image_size=size, eval_images=n_eval,
             eval_batch=eval_bs, train_batch=SIZES.batch, eval_images_per_s=round(eval_rate, 2),
             bare_no_grad_images_per_s=round(bare_rate, 2), train_images_per_s=round(train_rate, 2),
             eval_to_bare=round(eval_rate / bare_rate, 3), eval_to_train=round(eval_rate / train_rate, 3))
    check_target(benchmark, "evaluation images/s / training images/s", eval_rate / train_rate, EVAL_TARGET,
                 at_least=True, unit="x")
