"""What a run needs to know about launching, below the runner: launcher options, the executors' parameters, file
locks, the dataset prepared under a lock, and the wall time of K jobs in parallel.

``fracbench.app.launch`` (above the runner) runs trajectories as submitit jobs with these; the runner
(``fracbench.runs.runner``) reads only this module, so imports flow one way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

LAUNCHERS = ("local", "submitit")


@dataclass(frozen=True)
class LaunchOptions:
    """How ``fracbench run`` runs its trajectories: in this process (local) or as submitit jobs."""

    launcher: str = "local"
    partition: str | None = None  # SLURM partition
    gpus_per_job: int | None = None  # default: 1 when CUDA is present, else 0
    cpus_per_job: int | None = None  # default: the cores present / max_parallel (local), 8 (SLURM)
    timeout_min: int = 24 * 60
    max_parallel: int | None = None  # default: GPUs / gpus_per_job, else cores / 2 (at least 1)
    cluster: str | None = None  # "slurm" or "local"; default: slurm when srun is found
    folder: str | None = None  # submitit's logs and pickles; default <results>/.submitit


def detect_cluster() -> str:
    import shutil

    return "slurm" if shutil.which("srun") and shutil.which("sbatch") else "local"


def devices_present() -> tuple[int, int]:
    """(CUDA devices, CPU cores usable by this process)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        gpus = 0
    return gpus, cores


def resolve(opts: LaunchOptions, device: str | None = None) -> LaunchOptions:
    """``opts`` with every default filled from the devices and cores present (and the cluster)."""
    if opts.launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {opts.launcher!r}; expected one of {', '.join(LAUNCHERS)}")
    cluster = opts.cluster or detect_cluster()
    gpus, cores = devices_present()
    if device == "cpu":
        gpus = 0
    if opts.gpus_per_job is not None:
        gpj = opts.gpus_per_job
    elif cluster == "slurm":  # the submitting node may have none; the jobs' nodes do unless told cpu
        gpj = 0 if device == "cpu" else 1
    else:
        gpj = 1 if gpus else 0
    if opts.max_parallel is not None:
        k = opts.max_parallel
    elif cluster == "slurm":
        k = 64  # the scheduler queues the rest
    elif gpj and gpus:
        k = max(1, gpus // gpj)
    else:
        k = max(1, cores // 2)
    if k < 1:
        raise ValueError("--max-parallel must be at least 1")
    cpj = opts.cpus_per_job if opts.cpus_per_job is not None else (8 if cluster == "slurm" else max(1, cores // k))
    return replace(opts, cluster=cluster, gpus_per_job=gpj, cpus_per_job=cpj, max_parallel=k)


def executor_parameters(opts: LaunchOptions, name: str = "fracbench") -> dict[str, Any]:
    """What ``AutoExecutor.update_parameters`` gets for ``opts`` (resolved): sbatch's fields on SLURM."""
    params: dict[str, Any] = {"name": name, "timeout_min": int(opts.timeout_min), "nodes": 1, "tasks_per_node": 1,
                              "cpus_per_task": int(opts.cpus_per_job or 1), "gpus_per_node": int(opts.gpus_per_job or 0)}
    if opts.cluster == "slurm":
        params["slurm_array_parallelism"] = int(opts.max_parallel or 1)
        params["slurm_signal_delay_s"] = 120  # time for checkpoint() to requeue before a timeout's kill
        if opts.partition:
            params["slurm_partition"] = opts.partition
    return params


# ---------------------------------------------------------------------------------- locks and preparation


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """A blocking, exclusive lock on ``path`` (created), released on exit or when the process ends."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_path(*key: Any) -> Path:
    """A lock file in the cache for ``key`` (shared by every process using this cache)."""
    from fracbench.paths import cache_dir

    return cache_dir() / "locks" / (hashlib.sha256(repr(key).encode()).hexdigest()[:20] + ".lock")


def prepare_locked(name: str, data_dir: str | None = None, seed: int = 0, progress: bool = True) -> Any:
    """``fracbench.data.prepare`` under a lock per dataset, so two processes never write its caches at once
    (the second waits and then reads what the first wrote)."""
    from fracbench import data

    key = ("prepare", name, str(Path(data_dir).resolve()) if data_dir else None)
    with file_lock(lock_path(*key)):
        return data.prepare(name, data_dir, seed=seed, progress=progress)


# ---------------------------------------------------------------------------------- one job


def parallel_wall(seconds: Sequence[float], k: int) -> float:
    """Wall time of jobs taking ``seconds``, started in order, ``k`` at a time (each on the next free slot)."""
    slots = [0.0] * max(1, k)
    for s in seconds:
        i = min(range(len(slots)), key=slots.__getitem__)
        slots[i] += s
    return max(slots)
