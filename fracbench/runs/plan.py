"""``fracbench run --plan``: how long each experiment x seed will take on this machine, before training.

The estimate is arithmetic on measured rates: a short calibration times a few training steps and
an evaluation batch of each model at its image size, batch size and precision on random tensors
(the model step does not depend on pixel values) and caches the rates in the user cache dir. Data
decoding (the first time a dataset is used at a size) is not included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fracbench.config import TrainConfig
from fracbench.io import atomic_write_json
from fracbench.training.protocols import PROTOCOLS

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Rates:
    """Measured images per second of a model's training step and of its evaluation forward pass."""

    train: float
    eval: float


@dataclass(frozen=True)
class FitShape:
    """What one fit processes: epochs, split sizes, and how many test passes it makes."""

    epochs: int
    train: int
    val: int
    test: int
    protocols: tuple[str, ...]  # one view per protocol (two when a trajectory is shared)
    log_test: bool = True
    extra_test_passes: int = 0  # per epoch, e.g. protocol_inflation's flipped-test logger


def eval_images(shape: FitShape) -> tuple[int, int]:
    """(images evaluated per epoch, images evaluated once at the end) by a fit of ``shape``.

    Per epoch: validation once; the unflipped test pass once if any view needs it; one flipped
    test pass per view with the test-time flip. At the end: each view scores validation with its
    chosen checkpoint, and test too unless it kept its chosen epoch's test scores.
    """
    plain, flipped, final = False, 0, 0
    for name in shape.protocols:
        p = PROTOCOLS[name]
        if shape.log_test or p.select_on == "test_accuracy":
            if p.test_time_flip:
                flipped += 1
            else:
                plain = True
        final += shape.val + (0 if p.select_on == "test_accuracy" else shape.test)
    per_epoch = shape.val + shape.test * (int(plain) + flipped + shape.extra_test_passes)
    return per_epoch, final


def fit_seconds(epochs: int, train_images: int, eval_per_epoch: int, eval_final: int, rates: Rates) -> float:
    """Estimated wall seconds of a fit: epochs x (train + per-epoch evaluation) + the final evaluation."""
    if rates.train <= 0 or rates.eval <= 0:
        raise ValueError("rates must be positive images per second")
    return epochs * (train_images / rates.train + eval_per_epoch / rates.eval) + eval_final / rates.eval


def shape_seconds(shape: FitShape, rates: Rates) -> float:
    per_epoch, final = eval_images(shape)
    return fit_seconds(shape.epochs, shape.train, per_epoch, final, rates)


# ---------------------------------------------------------------------------------- calibration


def _calibration_key(cfg: TrainConfig) -> str:
    import platform

    import torch

    return json.dumps([cfg.model, cfg.model_kwargs, cfg.image_size, cfg.batch_size, cfg.channels, cfg.amp,
                       cfg.channels_last, cfg.device, torch.__version__, torch.get_num_threads(), platform.node()],
                      sort_keys=True)


def measure_rates(cfg: TrainConfig, steps: int = 3) -> Rates:
    """Time ``steps`` training steps (after one warm-up) and two evaluation batches of ``cfg``'s model."""
    import torch

    from fracbench.models import create_model
    from fracbench.training.train import _autocast, _optimizer, eval_batch_size, resolve_device

    device = resolve_device(cfg.device)
    torch.manual_seed(0)
    model = create_model(cfg.model, num_classes=2, in_channels=cfg.channels, image_size=cfg.image_size,
                         **cfg.model_kwargs).to(device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = _optimizer(cfg, model.parameters())
    x = torch.rand(cfg.batch_size, cfg.channels, cfg.image_size, cfg.image_size, device=device)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (cfg.batch_size,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        with _autocast(device, cfg.amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    train = steps * cfg.batch_size / (time.perf_counter() - t0)
    model.eval()
    xe = torch.rand(eval_batch_size(cfg, device), cfg.channels, cfg.image_size, cfg.image_size,
                    device=device).contiguous(memory_format=fmt)
    with torch.inference_mode(), _autocast(device, cfg.amp):
        model(xe)
        sync()
        t0 = time.perf_counter()
        for _ in range(2):
            model(xe)
        sync()
    return Rates(train=train, eval=2 * len(xe) / (time.perf_counter() - t0))


def cached_rates(cfg: TrainConfig, measure: Callable[[TrainConfig], Rates] | None = None) -> Rates:
    """The calibration of ``cfg``'s model step on this machine, measured once and kept in the user cache."""
    from fracbench.paths import cache_dir

    measure = measure or measure_rates

    path = cache_dir() / CALIBRATION_FILE
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    key = _calibration_key(cfg)
    if key not in table:
        r = measure(cfg)
        table[key] = {"train": r.train, "eval": r.eval, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(path, table)
    return Rates(float(table[key]["train"]), float(table[key]["eval"]))


# ---------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlanRow:
    experiments: tuple[str, ...]  # two names when they share one trajectory
    seed: int
    fits: int
    epochs: int
    train_images: int
    seconds: float


def _split_counts(manifest: Any) -> dict[str, int]:
    return {s: sum(v.values()) for s, v in manifest.counts().items()}


def _leak_shapes(exp: Any, cfg: TrainConfig, counts: dict[str, int], opts: dict[str, Any]) -> list[FitShape]:
    from fracbench.claims import leak as L

    n = int(opts.get("sources", 0)) or sum(counts.values())
    total = n * len(opts.get("copies", L.DEFAULT_COPIES))
    fr = L.DEFAULT_FRACTIONS
    train, val = round(total * fr[0]), round(total * fr[1])
    return [FitShape(cfg.epochs, _capped(cfg, train), val, total - train - val, (protocol,), cfg.log_test_each_epoch)
            for _, protocol in L.VARIANTS.values()]


def _capped(cfg: TrainConfig, n: int) -> int:
    return min(n, cfg.max_train_images) if cfg.max_train_images else n


def unit_shapes(exps: Sequence[Any], cfg: TrainConfig, counts: dict[str, int], opts: dict[str, Any]) -> list[FitShape]:
    """The fits one experiment x seed (or one shared group x seed) makes, by the experiment's kind."""
    kind = exps[0].kind
    if kind == "leak_demo":
        return _leak_shapes(exps[0], cfg, counts, opts)
    base = FitShape(cfg.epochs, _capped(cfg, counts.get("train", 0)), counts.get("val", 0), counts.get("test", 0),
                    tuple(e.protocol for e in exps), cfg.log_test_each_epoch)
    if kind == "protocol_inflation":  # honest, plus the flipped-test logger every epoch
        return [FitShape(base.epochs, base.train, base.val, base.test, ("honest",), True, extra_test_passes=1)]
    return [base]


def _fit_key(cfg: TrainConfig, opts: dict[str, Any]) -> str:
    return json.dumps([cfg.to_dict(), opts.get("split")], sort_keys=True, default=repr)


def plan(groups: Sequence[Sequence[Any]], manifest: Any, profile: str, n_seeds: int | None,
         overrides: dict[str, Any], rates_for: Callable[[TrainConfig], Rates] = cached_rates,
         manifest_for: Callable[[Any], Any] | None = None) -> list[PlanRow]:
    """One row per experiment (or shared group) x seed with its estimated wall seconds.

    ``manifest_for(exp)`` gives the manifest an experiment trains on when it is not the run's (a split
    mode such as multiregion's "grouped"); without it every experiment is counted on ``manifest``.
    An external test set is counted as the training manifest's test split (its real size is known
    only once the overlap with the training dataset is removed).
    """
    rows = []
    fitted = set()  # (config, split) of every "train" experiment planned: an external test scores its fit
    for group in groups:
        for exp in group:
            if exp.kind == "train":
                try:
                    fitted.add(_fit_key(exp.train_config(profile, 0, **overrides), exp.options_for(profile)))
                except Exception:
                    pass
    for group in groups:
        exp = group[0]
        try:
            cfg = exp.train_config(profile, 0, **overrides)
            own = manifest_for(exp) if manifest_for is not None else manifest
        except Exception:  # a bad experiment: it will fail at once when run
            continue
        shapes = unit_shapes(group, cfg, _split_counts(own), exp.options_for(profile))
        if exp.kind == "external" and _fit_key(cfg, exp.options_for(profile)) in fitted:
            # fracbench.runs.runner.run_external scores that fit's checkpoint: no training, one evaluation
            shapes = [FitShape(0, 0, s.val, s.test, s.protocols, False) for s in shapes]
        seconds = sum(shape_seconds(s, rates_for(cfg)) for s in shapes)
        fits = sum(s.epochs > 0 for s in shapes)
        for seed in exp.seeds_for(profile, n_seeds):
            rows.append(PlanRow(tuple(e.name for e in group), seed, fits, cfg.epochs if fits else 0,
                                sum(s.train for s in shapes), seconds))
    return rows


def print_plan(rows: Sequence[PlanRow], title: str) -> None:
    """The plan as data on stdout (a table on a terminal, TSV in a pipe; names never cut), the note on stderr."""
    from fracbench.output import print_table
    from fracbench.paths import cache_dir
    from fracbench.progress import console

    body = [[" + ".join(r.experiments), str(r.seed), str(r.fits), str(r.epochs), str(r.train_images), _hms(r.seconds)]
            for r in rows]
    body.append(["total", "", str(sum(r.fits for r in rows)), "", "", _hms(sum(r.seconds for r in rows))])
    print_table(["experiment", "seed", "fits", "epochs", "train images", "estimated"], body, title=title)
    console.print("Estimated from a calibration of each model's step on this machine, cached in "
                  f"{cache_dir() / CALIBRATION_FILE} (delete it to measure again, e.g. after a calibration made while "
                  "the machine was busy). Decoding images the first time is not included.")


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
