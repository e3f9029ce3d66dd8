"""One ``fit(config)`` for every model and experiment: train, select, evaluate, record.

The middle is pure computation (``train_one_epoch``, ``evaluate`` return dicts); files are
written only through fracbench.results and fracbench.serving.checkpoint. Runs resume from the last
finished epoch (``last.pt``) and end with the same record as an uninterrupted run. Under
``torchrun`` the same code trains with DistributedDataParallel (gloo on CPU, nccl on CUDA);
rank 0 evaluates and writes. Configs that differ only in ``protocol`` can share one training
trajectory (``fit_shared``): trained once, evaluated under each protocol, one record each.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fracbench import results as R
from fracbench.config import TrainConfig
from fracbench.data.cache import DecodedCache
from fracbench.data.loader import AUGMENTS, BatchLoader, random_flip
from fracbench.io import atomic_write_bytes
from fracbench.metrics import CI_METHOD, binary_metrics, choose_threshold, metrics_with_ci, n_groups
from fracbench.progress import console, is_quiet
from fracbench.serving.checkpoint import save_checkpoint
from fracbench.training.protocols import PROTOCOLS, Protocol, jpg_count

LAST = "last.pt"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def _autocast(device: torch.device, amp: bool):
    """bf16 autocast when ``amp`` (``--precision bf16``): on CUDA, and on CPU (fast with AVX512-BF16/AMX)."""
    if amp and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# The evaluation batch: no gradients and no optimizer state, so an accelerator takes 4x the training batch in
# one forward. On the CPU a larger forward is slower, not faster (an ad-hoc check of paper_cnn at 150 px on
# 2 shared cores, 2026-12-07: 122, 127, 112 and 99 images/s at batches of 32, 64, 128 and 256), so there it
# stays at max(batch, 64) and each pass's batch is forwarded on its own.
EVAL_BATCH_FACTOR = 4
CPU_EVAL_BATCH = 64


def eval_batch_size(cfg: TrainConfig, device: torch.device | str | None = None) -> int:
    """Images per evaluation batch (and, on the CPU, per forward) for ``cfg`` on ``device``."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cpu":
        return max(cfg.batch_size, CPU_EVAL_BATCH)
    return EVAL_BATCH_FACTOR * cfg.batch_size


def evaluate(model: nn.Module, loader: BatchLoader, device: torch.device, *, flip_generator: torch.Generator | None = None,
             amp: bool = False, channels_last: bool = False) -> dict[str, Any]:
    """Score every image of ``loader``: mean loss, accuracy at argmax, AUROC, and per-image scores.

    ``flip_generator`` applies the tutorial's random flip at test time (the as_published protocol).
    """
    return evaluate_passes(model, loader, device, [flip_generator], amp=amp, channels_last=channels_last)[0]


@torch.inference_mode()
def evaluate_passes(model: nn.Module, loader: BatchLoader, device: torch.device,
                    flips: Sequence[torch.Generator | None], *, amp: bool = False, channels_last: bool = False,
                    forward_batch: int | None = None) -> list[dict[str, Any]]:
    """Several passes over ``loader`` in one: each batch is read once and each pass's view of it (as it is,
    or flipped at random with that pass's generator, which advances exactly as in a pass of its own) goes
    through the model in one forward on the stacked batch. Returns one :func:`evaluate` result per pass.

    ``forward_batch`` caps the images of one forward (default: unlimited on an accelerator, the
    loader's batch on the CPU, where larger forwards are slower); the scores do not depend on it.
    """
    model.eval()
    k = len(flips)
    if forward_batch is None and device.type == "cpu":
        forward_batch = loader.batch_size
    losses = [0.0] * k
    correct = [0] * k
    scores: list[list[np.ndarray]] = [[] for _ in range(k)]
    labels, rows = [], []
    for x, y, idx in loader:
        views = [x if g is None else random_flip(x, g) for g in flips]
        if forward_batch and k > 1 and len(x) >= forward_batch:
            stacks = views  # each view is a forward of its own already: no copy into one stack
        else:
            stacks = [views[0] if k == 1 else torch.cat(views)]
        outs = []
        for xb in stacks:
            xb = xb.to(device, non_blocking=True)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with _autocast(device, amp):
                chunks = xb.split(forward_batch) if forward_batch and len(xb) > forward_batch else (xb,)
                outs += [model(c) for c in chunks]
        logits = (outs[0] if len(outs) == 1 else torch.cat(outs)).float()
        yd = y.to(device)
        for i, lg in enumerate(logits.split(len(y))):
            losses[i] += F.cross_entropy(lg, yd, reduction="sum").item()
            correct[i] += int((lg.argmax(1) == yd).sum())
            scores[i].append(lg.softmax(1)[:, 1].cpu().numpy())
        labels.append(y.numpy())
        rows.append(idx)
    label = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    out = []
    for i in range(k):
        score = np.concatenate(scores[i]) if scores[i] else np.zeros(0)
        n = len(score)
        auroc = binary_metrics(label, score)["auroc"] if n else float("nan")
        out.append({"loss": losses[i] / max(n, 1), "correct": correct[i], "n": n, "accuracy": correct[i] / max(n, 1),
                    "auroc": auroc, "scores": score, "labels": label, "rows": row})
    return out


def train_one_epoch(model: nn.Module, loader: BatchLoader, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                    device: torch.device, *, augment=None, generator: torch.Generator | None = None,
                    batch_scheduler=None, amp: bool = False, channels_last: bool = False,
                    on_batch=None) -> dict[str, float]:
    """One pass over the training rows; returns summed loss, correct count and image count."""
    model.train()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y, _ in loader:
        if augment is not None:
            x = augment(x, generator)
        x, y = x.to(device, non_blocking=True), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        # as the tutorial: loss weighted by batch size, accuracy from argmax
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
        if on_batch:
            on_batch()
    return {"loss_sum": loss_sum, "correct": correct, "n": n}


def _optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, nesterov=True)


def _schedulers(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """(per-epoch scheduler, per-batch scheduler); at most one is not None."""
    S = torch.optim.lr_scheduler
    if cfg.schedule == "step":
        return S.StepLR(opt, step_size=max(1, cfg.epochs // 3), gamma=0.1), None
    if cfg.schedule == "cosine":
        return S.CosineAnnealingLR(opt, T_max=cfg.epochs), None
    if cfg.schedule == "onecycle":
        return None, S.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * max(1, steps_per_epoch))
    return None, None


def _gen(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


def train_rows(cfg: TrainConfig, cache: DecodedCache) -> np.ndarray:
    return _subsample(cfg, cache.indices("train"), cache.labels)


def _subsample(cfg: TrainConfig, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if cfg.max_train_images and len(rows) > cfg.max_train_images:
        # a stratified, seed-independent subsample: the same images for every seed and experiment
        rng = np.random.default_rng(12345)
        keep = []
        for label in (0, 1):
            lab = rows[labels[rows] == label]
            k = round(cfg.max_train_images * len(lab) / len(rows))
            keep.append(np.sort(rng.choice(lab, size=min(k, len(lab)), replace=False)))
        rows = np.sort(np.concatenate(keep))
    return rows


def _denominators(protocol, paths: list[str], rows_train: np.ndarray, rows_test: np.ndarray) -> tuple[int, int, str]:
    """Accuracy denominators: the tutorial's .jpg count under as_published, the image count otherwise.

    With no .jpg file at all the tutorial divides by zero and stops; fracbench counts every image
    instead and says so in the record.
    """
    if not protocol.jpg_denominator:
        return len(rows_train), len(rows_test), "image count"
    train_jpg = jpg_count([paths[i] for i in rows_train])
    test_jpg = jpg_count([paths[i] for i in rows_test])
    if train_jpg == 0 or test_jpg == 0:
        return len(rows_train), len(rows_test), ("no .jpg files: the tutorial's glob would count 0 and divide by "
                                                 "zero; every image counted instead")
    note = ".jpg files only (the tutorial's glob)"
    if train_jpg != len(rows_train) or test_jpg != len(rows_test):
        note += f": {len(rows_test) - test_jpg} test images of other types scored but not counted"
    return train_jpg, test_jpg, note


@dataclass(frozen=True)
class RunSpec:
    """One record to write from a training trajectory: its config, folder, experiment name and extra fields."""

    cfg: TrainConfig
    out_dir: Path
    experiment: str = ""
    extra: dict[str, Any] | None = None


@dataclass
class _View:
    """One protocol's reading of a trajectory: its selection, its TTA generator, its checkpoint and record.

    Each view holds exactly what a separate run of its config would: its own test-time-flip
    generator (seeded as that run's), denominators, selection state and run folder.
    """

    spec: RunSpec
    protocol: Protocol
    g_tta: torch.Generator
    train_count: int
    test_count: int
    denominator_note: str
    state: dict[str, Any]

    @property
    def ckpt_dir(self) -> Path:
        return Path(self.spec.out_dir) / "checkpoints"

    @property
    def active(self) -> bool:
        return not self.state.get("stopped", False)


def shares_trajectory(a: TrainConfig, b: TrainConfig) -> bool:
    """True when ``a`` and ``b`` train identically: they differ in ``protocol`` alone.

    The protocols differ in evaluation and checkpoint choice, never in training (same seed, same
    batch order, same augmentation draws), so such configs can be trained once and read twice.
    """
    return a.protocol != b.protocol and a.replace(protocol=b.protocol) == b


def fit(cfg: TrainConfig, cache: DecodedCache, out_dir: str | Path, *, experiment: str = "",
        resume: bool = False, progress: bool = True, extra: dict[str, Any] | None = None,
        on_epoch=None) -> dict[str, Any]:
    """Train ``cfg.model`` on the cache's train rows under ``cfg.protocol``; write and return the record.

    ``on_epoch(model, epoch) -> dict``, when given, is called after each epoch's evaluation (on the
    main process) and what it returns is added to that epoch's log entry; it chooses nothing.
    """
    return fit_shared([RunSpec(cfg, Path(out_dir), experiment, extra)], cache, resume=resume, progress=progress,
                      on_epoch=on_epoch)[0]


def fit_shared(specs: Sequence[RunSpec], cache: DecodedCache, *, resume: bool = False, progress: bool = True,
               on_epoch=None) -> list[dict[str, Any]]:
    """Train once and write one record per spec, each exactly as a separate ``fit`` of its config would.

    Every spec's config must differ from the first only in ``protocol`` (``shares_trajectory``).
    The validation pass and the unflipped test pass are computed once per epoch and shared; each
    as_published view scores the test set with its own test-time-flip generator, as its own run
    would. The resume file (``last.pt``) of a shared trajectory lives in the first spec's folder.
    """
    from fracbench.models import count_flops, count_params, create_model

    specs = _checked_specs(specs)
    cfg = specs[0].cfg
    device, dist = _device_and_dist(cfg)
    show = progress and dist.main and not is_quiet()
    label = specs[0].experiment or cfg.model
    if len(specs) > 1:
        label = " + ".join(s.experiment or s.cfg.protocol for s in specs)

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=2, in_channels=cfg.channels, image_size=cfg.image_size,
                         weights=cfg.weights, **cfg.model_kwargs)
    params = count_params(model)
    flops = count_flops(model, cfg.image_size, cfg.channels)
    model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    g_shuffle, g_aug = _gen(cfg.seed, 1), _gen(cfg.seed, 2)
    rows_train = train_rows(cfg, cache)
    train_loader = BatchLoader(cache, rows_train, cfg.batch_size, cfg.channels, shuffle=True,
                               generator=g_shuffle, rank=dist.rank, world_size=dist.world_size)
    eval_bs = eval_batch_size(cfg, device)
    # evaluation sets are read and converted once, then reused every epoch (keep=True)
    val_loader = BatchLoader(cache, cache.indices("val"), eval_bs, cfg.channels, keep=True)
    test_loader = BatchLoader(cache, cache.indices("test"), eval_bs, cfg.channels, keep=True)
    paths = [r.path for r in cache.manifest.rows]
    views = []
    for s in specs:
        protocol = PROTOCOLS[s.cfg.protocol]
        views.append(_View(s, protocol, _gen(cfg.seed, 3), *_denominators(protocol, paths, rows_train,
                                                                          test_loader.rows), _new_state()))

    loss_fn = _loss_fn(cfg, cache.labels[rows_train], device)
    opt = _optimizer(cfg, model.parameters())
    epoch_sched, batch_sched = _schedulers(cfg, opt, len(train_loader))

    train_model: nn.Module = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    last_path = views[0].ckpt_dir / LAST
    key = _resume_key([s.cfg for s in specs])
    if resume and last_path.exists():
        _restore_last(last_path, key, cache, model, opt, epoch_sched, batch_sched, g_shuffle, g_aug, views)
        if show:
            console.print(f"resuming {label} after epoch {max(v.state['epoch'] for v in views)}")

    augment = AUGMENTS[cfg.augment]
    start_epoch = max(v.state["epoch"] for v in views) + 1
    progress_ctx = _progress(show)
    with progress_ctx as bar:
        ep_task = bar.add_task(f"{label} epochs", total=cfg.epochs, completed=start_epoch) if bar else None
        b_task = bar.add_task("batches", total=len(train_loader)) if bar else None
        for epoch in range(start_epoch, cfg.epochs):
            if not any(v.active for v in views):
                break  # every view stopped early (also after a resume from the stopping epoch)
            if bar:
                bar.reset(b_task, total=len(train_loader))
            t0 = time.perf_counter()
            tr = train_one_epoch(train_model, train_loader, opt, loss_fn, device, augment=augment, generator=g_aug,
                                 batch_scheduler=batch_sched, amp=cfg.amp, channels_last=cfg.channels_last,
                                 on_batch=(lambda: bar.advance(b_task)) if bar else None)
            if dist.world_size > 1:
                tr = _all_reduce_counts(tr)
            seconds = time.perf_counter() - t0
            lr = opt.param_groups[0]["lr"]
            if epoch_sched is not None:
                epoch_sched.step()
            if dist.main:
                active = [v for v in views if v.active]
                entries = _end_epoch(active, model, device, epoch, tr, seconds, lr, val_loader, test_loader)
                hooked = on_epoch(model, epoch) if on_epoch is not None else {}
                for v, entry in zip(active, entries):
                    entry.update(hooked)
                    v.state["epochs"].append(entry)
                    v.state["epoch"] = epoch
                    v.state["train_seconds"] += seconds
                    v.state["train_images"] += tr["n"]
                _save_last(last_path, key, cache, model, opt, epoch_sched, batch_sched, g_shuffle, g_aug,
                           [v.g_tta for v in views], [v.state for v in views])
                for v in active:
                    R.write_epochs(v.spec.out_dir, v.state["epochs"])
            stop = not any(v.active for v in views)
            if dist.world_size > 1:
                import torch.distributed as tdist

                flag = torch.tensor([1 if stop else 0])
                tdist.broadcast(flag, 0)
                stop = bool(flag.item())
            if bar:
                bar.advance(ep_task)
                e = views[0].state["epochs"][-1] if views[0].state["epochs"] else {}
                bar.update(ep_task, description=f"{label} epoch {epoch}: train acc "
                                                f"{e.get('train_accuracy', 0):.3f} val AUROC {e.get('val_auroc', float('nan')):.3f}")
            if stop:
                break

    records = _write_records(views, model, device, val_loader, test_loader, cache, params, flops) if dist.main \
        else []
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
    return records or [{} for _ in specs]


def fit_inputs(cfg: TrainConfig, manifest: Any) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(id, label) of the images a fit of ``cfg`` on ``manifest`` trains on, in training order, and of
    its validation images: with the config and seed, all that decides the trajectory and its selection."""
    labels = np.asarray([r.label for r in manifest.rows], dtype=np.int64)
    splits = np.asarray([r.split for r in manifest.rows])
    train = _subsample(cfg, np.flatnonzero(splits == "train"), labels)
    val = np.flatnonzero(splits == "val")
    return ([(manifest.rows[i].id, int(labels[i])) for i in train],
            [(manifest.rows[i].id, int(labels[i])) for i in val])


def score_fit(spec: RunSpec, cache: DecodedCache, source_dir: str | Path, source_manifest: Any) -> dict[str, Any]:
    """Write ``spec``'s record from a finished fit of the same config on the same training and validation
    images (``source_dir``, on ``source_manifest``): its selected checkpoint scored once on ``cache``'s
    test set. What a separate ``fit`` would write (the trajectory and the val-chosen epoch and threshold
    are the same), without training again; the record says whose fit it read (``trained_by``).

    Only for protocols that choose on validation (the test set must play no part in the fit). Raises
    ``ValueError`` naming what differs when the fit cannot stand in for one of ``spec``: another config,
    other training or validation images, a protocol that looks at the test set, a missing checkpoint,
    or a checkpoint whose validation scores do not match its record. The per-epoch log keeps the
    fit's training and validation entries; its test entries were of another test set and are dropped.
    """
    import shutil

    from fracbench.models import count_flops, count_params, create_model

    cfg, source_dir = spec.cfg, Path(source_dir)
    protocol = PROTOCOLS[cfg.protocol]
    if protocol.select_on == "test_accuracy" or protocol.test_time_flip:
        raise ValueError(f"the {cfg.protocol} protocol looks at the test set during the fit: it cannot be "
                         f"scored on another test set; train it")
    src = R.read_record(source_dir)
    if not src or src.get("status") != "complete":
        raise ValueError(f"{source_dir}: no complete record to score")
    if src.get("config") != cfg.to_dict():
        diff = sorted(k for k in set(src.get("config", {})) | set(cfg.to_dict())
                      if src.get("config", {}).get(k) != cfg.to_dict().get(k))
        raise ValueError(f"{source_dir}: trained with another config ({', '.join(diff)} differ)")
    if src.get("manifest_sha256") != source_manifest.fingerprint:
        raise ValueError(f"{source_dir}: trained on manifest {str(src.get('manifest_sha256'))[:12]}, "
                         f"not {source_manifest.fingerprint[:12]}")
    mine, theirs = fit_inputs(cfg, cache.manifest), fit_inputs(cfg, source_manifest)
    for what, a, b in (("training", mine[0], theirs[0]), ("validation", mine[1], theirs[1])):
        if a != b:
            raise ValueError(f"{source_dir}: trained with other {what} images ({len(b)} vs {len(a)} here, "
                             f"or another order)")
    best = source_dir / "checkpoints" / "best.safetensors"
    if not best.exists():
        raise ValueError(f"{best}: the fit's checkpoint is missing (checkpoints are not committed); train it")

    device = resolve_device(cfg.device)
    ckpt_dir = Path(spec.out_dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, ckpt_dir / "best.safetensors")
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=2, in_channels=cfg.channels, image_size=cfg.image_size,
                         weights=None, **cfg.model_kwargs)
    params, flops = count_params(model), count_flops(model, cfg.image_size, cfg.channels)
    eval_bs = eval_batch_size(cfg, device)
    val_loader = BatchLoader(cache, cache.indices("val"), eval_bs, cfg.channels, keep=True)
    test_loader = BatchLoader(cache, cache.indices("test"), eval_bs, cfg.channels, keep=True)
    # the checkpoint must be the fit's own: its validation scores are recomputed and must match the ones
    # its fit wrote (predictions.csv), image by image
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(best)))
    model.to(device)
    try:
        theirs = {p["id"]: p["score"] for p in R.read_predictions(source_dir) if p["split"] == "val"}
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{source_dir}: its predictions cannot be read ({exc}); train it") from None
    if len(val_loader.rows):
        v = evaluate(model, val_loader, device, amp=cfg.amp, channels_last=cfg.channels_last)
        ids = [cache.manifest.rows[i].id for i in v["rows"]]
        off = [i for i, s in zip(ids, v["scores"]) if i not in theirs or not math.isclose(s, theirs[i], abs_tol=1e-5)]
        if off:
            (ckpt_dir / "best.safetensors").unlink(missing_ok=True)
            raise ValueError(f"{best}: {len(off)} of {len(ids)} validation scores differ from its fit's "
                             f"predictions (e.g. {off[0]}): not the fit's checkpoint")
    epochs = [{k: v for k, v in e.items() if not k.startswith("test_")} for e in R.read_epochs(source_dir)]
    seconds = float(src.get("train_seconds", 0.0))
    state = {**_new_state(), "epoch": int(src["epochs_run"]) - 1, "best_epoch": int(src["selected_epoch"]),
             "epochs": epochs, "train_seconds": seconds,
             "train_images": float(src.get("images_per_second", 0.0)) * seconds}
    _, test_count, note = _denominators(protocol, [r.path for r in cache.manifest.rows], train_rows(cfg, cache),
                                        test_loader.rows)
    extra = {"accuracy_denominator": note, **(spec.extra or {}),
             "trained_by": {"experiment": src.get("experiment"), "seed": src.get("seed"),
                            "manifest_sha256": src.get("manifest_sha256"), "code_version": src.get("code_version"),
                            "git_commit": src.get("git_commit"), "created": src.get("created"),
                            "note": "the same config on the same training and validation images: its "
                                    "val-chosen checkpoint scored once on this test set"}}
    record = _finish(cfg, protocol, model, device, state, val_loader, test_loader, test_count, cache,
                     Path(spec.out_dir), ckpt_dir, spec.experiment, params, flops, extra)
    R.write_epochs(Path(spec.out_dir), epochs)
    return record


def _checked_specs(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """The specs, refused unless every config differs from the first only in ``protocol``."""
    specs = list(specs)
    if not specs:
        raise ValueError("fit_shared: no run to write")
    for s in specs[1:]:
        if not shares_trajectory(specs[0].cfg, s.cfg):
            raise ValueError(f"{s.experiment or s.out_dir}: config differs from {specs[0].experiment or 'the first'}'s "
                             "in more than the protocol; they cannot share one training trajectory")
    return specs


def _device_and_dist(cfg: TrainConfig) -> tuple[torch.device, Dist]:
    """The device, and the torchrun process group when there is one (each rank on its own GPU)."""
    device = resolve_device(cfg.device)
    dist = init_distributed(device)
    if device.type == "cuda" and dist.world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device, dist


def _loss_fn(cfg: TrainConfig, train_labels: np.ndarray, device: torch.device) -> nn.Module:
    """Cross-entropy, weighted by inverse class frequency when ``class_weights`` is "balanced"."""
    weight = None
    if cfg.class_weights == "balanced":
        counts = np.bincount(train_labels, minlength=2).astype(np.float64)
        weight = torch.tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weight)


def _restore_last(last_path: Path, key, cache, model, opt, epoch_sched, batch_sched, g_shuffle, g_aug,
                  views) -> None:
    """Load the resume state written by ``_save_last`` into the model, optimizer, schedulers, generators
    and each view's selection state; refuse one saved for another config or manifest."""
    saved = torch.load(last_path, map_location="cpu", weights_only=True)
    if saved.get("config") != key or saved.get("manifest") != cache.manifest.fingerprint:
        raise ValueError(f"{last_path}: saved for another config or manifest; delete it or run without --resume")
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    for sch, k in ((epoch_sched, "epoch_sched"), (batch_sched, "batch_sched")):
        if sch is not None:
            sch.load_state_dict(saved[k])
    g_shuffle.set_state(saved["g_shuffle"])
    g_aug.set_state(saved["g_aug"])
    # one run saves its own state and TTA generator; a shared trajectory saves one of each per view
    many = len(views) > 1
    for i, v in enumerate(views):
        v.g_tta.set_state(saved["g_tta"][i] if many else saved["g_tta"])
        v.state = saved["state"][i] if many else saved["state"]
    # the global generators drive dropout (and stochastic depth): without them a resumed run diverges
    if saved.get("torch_rng") is not None:
        torch.set_rng_state(saved["torch_rng"])
    if saved.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])


def _all_reduce_counts(tr: dict[str, float]) -> dict[str, float]:
    """Sum one epoch's loss, correct and image counts over the torchrun ranks."""
    import torch.distributed as tdist

    t = torch.tensor([tr["loss_sum"], tr["correct"], tr["n"]], dtype=torch.float64)
    tdist.all_reduce(t)
    return {"loss_sum": t[0].item(), "correct": int(t[1].item()), "n": int(t[2].item())}


def _write_records(views, model, device, val_loader, test_loader, cache, params, flops) -> list[dict[str, Any]]:
    """Each view's record, as a separate run of its config would write it; then drop the resume state."""
    records = []
    for v in views:
        extra = {"accuracy_denominator": v.denominator_note, **(v.spec.extra or {})}
        if len(views) > 1:
            # the record is what a separate run would write; this says it was read off a shared trajectory
            extra["trajectory_shared_with"] = [w.spec.experiment or w.spec.cfg.protocol for w in views if w is not v]
        records.append(_finish(v.spec.cfg, v.protocol, model, device, v.state, val_loader, test_loader,
                               v.test_count, cache, Path(v.spec.out_dir), v.ckpt_dir, v.spec.experiment,
                               params, flops, extra))
    # every record is written: the resume state is no longer needed (best.safetensors stays)
    for v in views:
        (v.ckpt_dir / LAST).unlink(missing_ok=True)
    return records


def _new_state() -> dict[str, Any]:
    return {"epoch": -1, "best_value": -math.inf, "best_epoch": -1, "stale": 0, "epochs": [],
            "train_seconds": 0.0, "train_images": 0, "best_scores": {}, "stopped": False}


def _resume_key(cfgs: Sequence[TrainConfig]) -> Any:
    """What a resume file must have been saved for: one config, or the list of a shared trajectory's."""
    if len(cfgs) == 1:
        return cfgs[0].to_dict()
    return {"shared_trajectory": [c.to_dict() for c in cfgs]}


def resumable(out_dir: str | Path, cfg: TrainConfig | Sequence[TrainConfig], manifest_fingerprint: str) -> bool:
    """True when ``out_dir`` holds an interrupted run of exactly this config (or shared trajectory) and manifest."""
    path = Path(out_dir) / "checkpoints" / LAST
    if not path.exists():
        return False
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged resume file: start again rather than fail
        return False
    cfgs = [cfg] if isinstance(cfg, TrainConfig) else list(cfg)
    return saved.get("config") == _resume_key(cfgs) and saved.get("manifest") == manifest_fingerprint


_BORROWED: list[Any] = []  # a Progress lent by the runner (its ETA bar): fit adds its bars to it


@contextmanager
def borrowed_progress(bar: Any):
    """While active, ``fit`` shows its bars inside ``bar`` (rich allows one live display at a time)."""
    _BORROWED.append(bar)
    try:
        yield bar
    finally:
        _BORROWED.remove(bar)


class _Borrowed:
    """Lends the runner's Progress to one fit; removes the fit's tasks when it ends."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def __enter__(self):
        self.before = {t.id for t in self.bar.tasks}
        return self.bar

    def __exit__(self, *exc: Any) -> bool:
        for t in list(self.bar.tasks):
            if t.id not in self.before:
                self.bar.remove_task(t.id)
        return False


def _progress(show: bool):
    if show and _BORROWED:
        return _Borrowed(_BORROWED[-1])
    if not show:
        class _Null:
            def __enter__(self):
                return None

            def __exit__(self, *a):
                return False
        return _Null()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)


def _end_epoch(views: Sequence[_View], model, device, epoch, tr, seconds, lr, val_loader,
               test_loader) -> list[dict[str, Any]]:
    """Evaluate the epoch for every active view; update each view's selection; return their log entries.

    The validation pass and the unflipped test pass use no generator, so one of each serves every
    view. A view with the test-time flip scores the test set with its own generator, which advances
    exactly as in a separate run of its config.
    """
    cfg = views[0].spec.cfg
    val = evaluate(model, val_loader, device, amp=cfg.amp, channels_last=cfg.channels_last) \
        if len(val_loader.rows) else None
    # the test passes of the epoch in one pass over the test set: the unflipped one (shared by every view
    # without the flip) and one flipped pass per view with the flip, each with that view's own generator
    flips: list[torch.Generator | None] = []
    pass_of: dict[int, int] = {}  # id(view) -> its pass
    for v in views:
        if not (v.spec.cfg.log_test_each_epoch or v.protocol.select_on == "test_accuracy"):
            continue
        if v.protocol.test_time_flip:
            flips.append(v.g_tta)
            pass_of[id(v)] = len(flips) - 1
        else:
            if not any(g is None for g in flips):
                flips.append(None)
            pass_of[id(v)] = next(i for i, g in enumerate(flips) if g is None)
    passes = evaluate_passes(model, test_loader, device, flips, amp=cfg.amp, channels_last=cfg.channels_last) \
        if flips else []
    return [_select(v, model, epoch, tr, seconds, lr, val, passes[pass_of[id(v)]] if id(v) in pass_of else None)
            for v in views]


def _select(view: _View, model, epoch, tr, seconds, lr, val, test) -> dict[str, Any]:
    """One view's log entry for the epoch; keeps its best checkpoint and marks it stopped on patience."""
    cfg, protocol, state = view.spec.cfg, view.protocol, view.state
    train_count, test_count = view.train_count, view.test_count
    entry: dict[str, Any] = {
        "epoch": epoch,
        # the tutorial divides by its .jpg count under as_published; by the image count otherwise
        "train_loss": tr["loss_sum"] / max(train_count, 1),
        "train_accuracy": tr["correct"] / max(train_count, 1),
        "lr": lr,
        "seconds": round(seconds, 3),
        "images_per_second": round(tr["n"] / max(seconds, 1e-9), 2),
    }
    if val is not None:
        entry.update(val_loss=val["loss"], val_accuracy=val["accuracy"], val_auroc=val["auroc"])
    if test is not None:
        entry.update(test_loss=test["loss"], test_accuracy=test["correct"] / max(test_count, 1),
                     test_auroc=test["auroc"])
    if protocol.select_on == "test_accuracy":
        value = entry["test_accuracy"]
    else:
        value = entry.get("val_auroc", float("nan"))
        if value != value:  # no val split or one class only: fall back to negative val loss
            value = -entry.get("val_loss", 0.0)
    improved = value > state["best_value"]  # strict, as the tutorial's `if test_accuracy > best_accuracy`
    if improved:
        state["best_value"], state["best_epoch"], state["stale"] = value, epoch, 0
        save_checkpoint(view.ckpt_dir / "best", model, model_name=cfg.model, model_kwargs=cfg.model_kwargs,
                        image_size=cfg.image_size, channels=cfg.channels, threshold=0.5)
        if protocol.select_on == "test_accuracy":
            # keep the chosen epoch's own (flipped) test scores: that is what the tutorial reports
            state["best_scores"] = {"test": test["scores"].tolist(), "test_rows": test["rows"].tolist()}
    else:
        state["stale"] += 1
    if cfg.early_stopping and state["stale"] >= cfg.early_stopping:
        state["stopped"] = True
    return entry


def _save_last(path: Path, key, cache, model, opt, epoch_sched, batch_sched, g_shuffle, g_aug, g_ttas,
               states) -> None:
    """Everything a resumed run needs, atomically. One run keeps the original single-run layout."""
    many = len(states) > 1
    payload = {
        "config": key, "manifest": cache.manifest.fingerprint,
        "model": model.state_dict(), "optimizer": opt.state_dict(),
        "epoch_sched": epoch_sched.state_dict() if epoch_sched else None,
        "batch_sched": batch_sched.state_dict() if batch_sched else None,
        "g_shuffle": g_shuffle.get_state(), "g_aug": g_aug.get_state(),
        "g_tta": [g.get_state() for g in g_ttas] if many else g_ttas[0].get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "state": list(states) if many else states[0],
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _finish(cfg, protocol, model, device, state, val_loader, test_loader, test_count, cache, out_dir, ckpt_dir,
            experiment, params, flops, extra) -> dict[str, Any]:
    from safetensors.torch import load_file

    best_path = ckpt_dir / "best.safetensors"
    model.load_state_dict(load_file(str(best_path)))
    model.to(device)
    ids = [r.id for r in cache.manifest.rows]
    val = evaluate(model, val_loader, device, amp=cfg.amp, channels_last=cfg.channels_last) \
        if len(val_loader.rows) else None
    if protocol.select_on == "test_accuracy":
        test_scores = np.asarray(state["best_scores"]["test"])
        test_rows = np.asarray(state["best_scores"]["test_rows"], dtype=np.int64)
    else:
        # the one and only use of the test set for the reported numbers
        t = evaluate(model, test_loader, device, amp=cfg.amp, channels_last=cfg.channels_last)
        test_scores, test_rows = t["scores"], t["rows"]
    test_labels = cache.labels[test_rows]
    if protocol.threshold_from_val and val is not None and len(np.unique(val["labels"])) == 2:
        threshold = float(choose_threshold(val["labels"], val["scores"], method=cfg.threshold_method))
        threshold_source = f"validation ({cfg.threshold_method})"
    else:
        threshold, threshold_source = 0.5, "argmax of the two logits (0.5)"
    # copies of one image are one unit of evidence: CIs resample the manifest's duplicate groups
    test_groups = [cache.manifest.rows[i].group for i in test_rows]
    metrics: dict[str, Any] = {"test": metrics_with_ci(test_labels, test_scores, threshold=threshold,
                                                       n_boot=cfg.n_boot, seed=cfg.seed, groups=test_groups)}
    if val is not None:
        metrics["val"] = binary_metrics(val["labels"], val["scores"], threshold=threshold)
    correct = int(((test_scores >= 0.5).astype(int) == test_labels).sum())
    metrics["test"]["accuracy_as_counted"] = correct / max(test_count, 1)
    metrics["test"]["accuracy_at_0.5"] = correct / max(len(test_labels), 1)

    preds = []
    if val is not None:
        preds += [(ids[i], "val", cache.labels[i], s) for i, s in zip(val["rows"], val["scores"])]
    preds += [(ids[i], "test", cache.labels[i], s) for i, s in zip(test_rows, test_scores)]
    R.write_predictions(out_dir, preds)

    env = R.environment(str(device))
    record = {
        "experiment": experiment or cfg.model,
        "model": cfg.model,
        "protocol": cfg.protocol,
        "dataset": cache.manifest.dataset,
        "manifest_sha256": cache.manifest.fingerprint,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "status": "complete",
        "epochs_run": state["epoch"] + 1,
        "selected_epoch": state["best_epoch"],
        "selected_on": protocol.select_on,
        "threshold": threshold,
        "threshold_source": threshold_source,
        "metrics": metrics,
        "ci_method": CI_METHOD,  # how metrics.test.*_ci95 were drawn (absent: image-level bootstrap)
        "counts": {"train": int(len(train_rows(cfg, cache))), "val": int(len(val_loader.rows)),
                   "test": int(len(test_rows)), "test_denominator": int(test_count),
                   "test_groups": n_groups(test_groups, len(test_groups))},

        "params": int(params),
        "flops_per_image": int(flops),
        "train_seconds": round(state["train_seconds"], 2),
        "images_per_second": round(state["train_images"] / max(state["train_seconds"], 1e-9), 2),
        "code_version": R.code_version(),
        "created": R.now_iso(),
        "checkpoint": "checkpoints/best.safetensors",  # relative to the record's folder
        **env,
        **extra,
    }
    save_checkpoint(ckpt_dir / "best", model, model_name=cfg.model, model_kwargs=cfg.model_kwargs,
                    image_size=cfg.image_size, channels=cfg.channels, threshold=threshold,
                    record=f"../{R.RECORD}",  # relative to the checkpoint's folder
                    extra={"experiment": record["experiment"], "dataset": record["dataset"],
                           "protocol": cfg.protocol, "test_auroc": metrics["test"].get("auroc"),
                           "val_auroc": (metrics.get("val") or {}).get("auroc")})
    record["ood_reference"] = _attach_ood_reference(ckpt_dir / "best.safetensors", cache)
    R.write_config(out_dir, cfg.to_yaml())
    R.write_record(out_dir, record)
    return record


def _attach_ood_reference(checkpoint: Path, cache: DecodedCache) -> str:
    """Give the best checkpoint its out-of-distribution reference (fracbench.serving.ood); say what happened."""
    from fracbench.serving.ood import attach_reference

    if not len(cache.indices("val")):
        return "none: no validation split to calibrate it on"
    try:
        ref = attach_reference(checkpoint, cache)
    except (ValueError, RuntimeError) as exc:  # the model still works; predict says it has no reference
        return f"none: {exc}"
    return f"fitted on {ref['fit_images']} train images, threshold from {ref['calibration_images']} val images"
