"""``fracbench run --launcher submitit``: one job per trajectory (experiment x seed), the records of a local run.

A trajectory is what ``fracbench.runs.runner.run_unit`` runs: one experiment (or a group of protocol twins
sharing one fit) x one seed. The parent process (``run_jobs``) holds the results folder's lock,
prepares the dataset and fills the decode caches first (so jobs only read them), then submits one
job per trajectory through submitit: to SLURM when ``sbatch``/``srun`` are there, else to
submitit's local executor (subprocesses on this machine, ``max_parallel`` at a time). Each job
writes its records atomically into the run's results folder exactly as a sequential run would; a
job that fails or is killed gets failure records and resumes from its ``last.pt`` when the command
is run again (on SLURM a pre-empted or timed-out job requeues itself through ``checkpoint``).
Tables and the report are written once, by the caller, when every job is done.

submitit is imported lazily: a local sequential run never needs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fracbench.progress import console, say
from fracbench.runs.jobs import (  # noqa: F401  (re-exported: the launcher's options and helpers)
    LAUNCHERS,
    LaunchOptions,
    detect_cluster,
    devices_present,
    executor_parameters,
    file_lock,
    lock_path,
    parallel_wall,
    prepare_locked,
    resolve,
)


def make_executor(folder: Path, opts: LaunchOptions, name: str = "fracbench") -> Any:
    try:
        import submitit
    except ImportError:
        raise RuntimeError("--launcher submitit needs the submitit package: pip install 'submitit>=1.5'") from None

    executor = submitit.AutoExecutor(folder=str(folder), cluster=opts.cluster)
    executor.update_parameters(**executor_parameters(opts, name))
    return executor


def set_visible_gpus(executor: Any, gpus: Sequence[int]) -> None:
    """The GPUs the local executor's next job sees (CUDA_VISIBLE_DEVICES); AutoExecutor does not pass this on."""
    getattr(executor, "_executor", executor).update_parameters(visible_gpus=tuple(int(g) for g in gpus))


@dataclass(frozen=True)
class JobSpec:
    """One trajectory and what its process needs to rebuild the run's context."""

    group: tuple[Any, ...]  # fracbench.training.experiments.Experiment: one, or protocol twins sharing a fit
    seed: int
    dataset: str
    data_dir: str | None
    profile: str
    results: str
    manifest: str  # the run's manifest fingerprint (checked: the data must not change under the jobs)
    device: str | None = None
    precision: str = "fp32"
    external_data: dict[str, str] = field(default_factory=dict)
    split_seed: int = 0
    threads: int | None = None

    @property
    def label(self) -> str:
        return f"{' + '.join(e.name for e in self.group)} seed {self.seed}"


class JobLocked(RuntimeError):
    """The same trajectory is running in another job."""


class TrajectoryJob:
    """The callable submitit pickles: runs one ``JobSpec`` and returns its ``Outcome`` list.

    ``checkpoint`` makes a pre-empted or timed-out SLURM job requeue itself; the rerun resumes from
    the trajectory's ``last.pt``.
    """

    def __call__(self, spec: JobSpec) -> list[Any]:
        from fracbench import results as R
        from fracbench.progress import set_quiet
        from fracbench.runs.runner import RunContext, run_unit

        if spec.threads:
            import torch

            torch.set_num_threads(spec.threads)
        set_quiet(False)
        results = Path(spec.results)
        prepared = prepare_locked(spec.dataset, spec.data_dir, seed=spec.split_seed, progress=False)
        from fracbench.runs.runner import settled_manifest

        # the split the parent settled on (a committed manifest kept, or the fresh one): written before any job
        prepared.manifest = settled_manifest(prepared, results / "manifests" / f"{spec.dataset}.csv", prepared.manifest)
        if prepared.manifest.fingerprint != spec.manifest:
            raise RuntimeError(f"{spec.dataset}: manifest {prepared.manifest.fingerprint[:12]} differs from the run's "
                               f"{spec.manifest[:12]}: the data changed after the run started")
        ctx = RunContext(prepared, prepared.manifest, spec.profile, spec.device, results, R.code_version(), False,
                         precision=spec.precision, external_data=dict(spec.external_data), split_seed=spec.split_seed)
        lock = results / ".jobs" / (hashlib.sha256(spec.label.encode()).hexdigest()[:16] + ".lock")
        with _exclusive(lock, spec.label):
            return run_unit(ctx, list(spec.group), spec.seed)

    def checkpoint(self, spec: JobSpec) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec)


@contextlib.contextmanager
def _exclusive(path: Path, label: str) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobLocked(f"{label}: another job is running this trajectory ({path})") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------- the parent


def run_dirs(group: Sequence[Any], seed: int, results: Path) -> list[Path]:
    """The folders whose epochs.jsonl show a job's progress (one per fit it makes)."""
    from fracbench import results as R

    if group[0].kind == "leak_demo":
        from fracbench.claims import leak as L

        return [R.run_dir(results, L.variant_name(group[0].name, v), seed) for v in L.VARIANTS]
    return [R.run_dir(results, group[0].name, seed)]


def record_names(group: Sequence[Any]) -> list[tuple[Any, str]]:
    """(experiment, record name) of every record a job writes."""
    if group[0].kind == "leak_demo":
        from fracbench.claims import leak as L

        return [(group[0], L.variant_name(group[0].name, v)) for v in L.VARIANTS]
    return [(e, e.name) for e in group]


def _epochs_logged(dirs: Sequence[Path]) -> int:
    n = 0
    for d in dirs:
        try:
            n += sum(1 for line in (d / "epochs.jsonl").read_text().splitlines() if line.strip())
        except OSError:
            pass
    return n


def run_jobs(ctx: Any, units: Sequence[tuple[Sequence[Any], int]], opts: LaunchOptions, *, dataset: str,
             data_dir: str | None, n_seeds: int | None = None, job: TrajectoryJob | None = None,
             poll_s: float = 1.0) -> list[Any]:
    """Run each (group, seed) of ``units`` as one submitit job; return the outcomes in ``units``' order.

    ``ctx`` is the parent's ``RunContext`` (dataset prepared, results locked). The decode caches of
    every "train" trajectory are filled here first; the other kinds' derived data is built by the
    first job that needs it, under a lock (``RunContext.once``).
    """
    from fracbench import results as R
    from fracbench.runs.runner import Outcome, _failed

    opts = resolve(opts, ctx.device)
    job = job or TrajectoryJob()
    # the data is read by every job: prepare it once, here
    for group, _seed in units:
        exp = group[0]
        if exp.kind != "train":
            continue
        try:
            cfg = exp.train_config(ctx.profile, 0, **ctx.overrides())
            ctx.cache(cfg.image_size, ctx.manifest_for(exp))
        except Exception as exc:  # the job itself will fail and record why
            say(f"[yellow]{exp.name}: data not prepared ahead ({type(exc).__name__}: {exc})[/]")
    specs = [JobSpec(tuple(group), seed, dataset, data_dir, ctx.profile, str(ctx.results), ctx.manifest.fingerprint,
                     ctx.device, ctx.precision, dict(ctx.external_data), ctx.split_seed, opts.cpus_per_job)
             for group, seed in units]
    folder = Path(opts.folder) if opts.folder else ctx.results / ".submitit"
    executor = make_executor(folder, opts)
    say(f"{len(specs)} jobs through submitit ({opts.cluster}), {opts.max_parallel} at a time, "
        f"{opts.cpus_per_job} CPU(s) and {opts.gpus_per_job} GPU(s) each; logs in {folder}")
    estimates = _estimates(ctx, units, n_seeds)
    jobs: dict[int, Any] = {}
    pending = list(range(len(specs)))
    free_gpus = list(range(devices_present()[0])) if opts.cluster == "local" else []
    gpu_of: dict[int, list[int]] = {}

    def submit(i: int) -> None:
        if opts.cluster == "local" and opts.gpus_per_job and len(free_gpus) >= opts.gpus_per_job:
            gpu_of[i] = [free_gpus.pop(0) for _ in range(opts.gpus_per_job)]
            set_visible_gpus(executor, gpu_of[i])
        jobs[i] = executor.submit(job, specs[i])

    if opts.cluster == "slurm":  # one array; the scheduler keeps max_parallel running
        with executor.batch():
            for i in pending:
                jobs[i] = executor.submit(job, specs[i])
        pending = []
    done: dict[int, Any] = {}
    with _job_progress(specs, units, ctx, estimates) as show:
        while pending or len(done) < len(specs):
            running = [i for i in jobs if i not in done]
            while pending and len(running) < opts.max_parallel:
                i = pending.pop(0)
                submit(i)
                running.append(i)
            for i in running:
                if jobs[i].done():
                    done[i] = jobs[i]
                    free_gpus.extend(gpu_of.pop(i, []))
            show(jobs, done)
            if pending or len(done) < len(specs):
                time.sleep(poll_s)
        show(jobs, done)

    outcomes: list[Any] = []
    for i, spec in enumerate(specs):
        try:
            outcomes += jobs[i].result()
        except Exception as exc:  # killed, or failed outside the runner's own failure handling
            msg = _job_error(exc, jobs[i])
            console.print(f"[red]job {jobs[i].job_id} ({spec.label}) failed:[/] {msg}")
            for exp, name in record_names(spec.group):
                out = R.run_dir(ctx.results, name, spec.seed)
                rec = R.read_record(out) if (out / R.RECORD).exists() else None
                if rec and rec.get("status") == "complete":
                    outcomes.append(Outcome(name, spec.seed, "complete", rec))
                    continue
                outcomes.append(_failed(exp, spec.seed, ctx.profile, out, JobFailed(msg), name))
    return outcomes


class JobFailed(RuntimeError):
    """A job ended without returning its outcomes (killed, pre-empted for good, out of memory, ...)."""


def _job_error(exc: BaseException, job: Any) -> str:
    """One line: the job's own exception (the last line of its trace), or how it ended without a result."""
    from submitit.core.utils import FailedJobError

    lines = [line for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, FailedJobError):  # raised in the job: "... with trace:", dashes, the trace, dashes, ...
        dashes = [i for i, line in enumerate(lines) if set(line.strip()) == {"-"}]
        what = lines[dashes[1] - 1] if len(dashes) >= 2 else lines[-1]
    else:  # killed, out of memory, timed out for good: no result
        state = "unknown"
        with contextlib.suppress(Exception):
            state = job.state
        what = f"the job ended without a result (state {state}, killed?)"
    where = ""
    with contextlib.suppress(Exception):
        where = f" (log: {job.paths.stderr})"
    return f"{what.strip()[:300]}{where}; run the same command again to resume it"


def _estimates(ctx: Any, units: Sequence[tuple[Sequence[Any], int]], n_seeds: int | None) -> dict[Any, Any]:
    from fracbench.runs.plan import plan

    groups: list[Any] = []
    for group, _ in units:
        if list(group) not in groups:
            groups.append(list(group))
    try:
        rows = plan(groups, ctx.manifest, ctx.profile, n_seeds, ctx.overrides(), manifest_for=ctx.manifest_for)
    except Exception:
        return {}
    return {(r.experiments, r.seed): r for r in rows}


@contextlib.contextmanager
def _job_progress(specs: Sequence[JobSpec], units: Sequence[tuple[Sequence[Any], int]], ctx: Any,
                  estimates: dict[Any, Any]) -> Iterator[Any]:
    """One rich line per job (epochs logged of those planned, its state) and a total line; silent when quiet."""
    from fracbench.progress import is_quiet

    if not ctx.progress or is_quiet():
        yield lambda jobs, done: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    dirs = [run_dirs(spec.group, spec.seed, ctx.results) for spec in specs]
    totals = []
    for spec in specs:
        row = estimates.get((tuple(e.name for e in spec.group), spec.seed))
        totals.append(max(1, row.fits * row.epochs) if row else len(run_dirs(spec.group, spec.seed, ctx.results)))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[state]}"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        tasks = [bar.add_task(spec.label, total=t, state="queued", start=False) for spec, t in zip(specs, totals)]
        total = bar.add_task("[bold]total (jobs done)", total=len(specs), state="")
        started: set[int] = set()
        finished: set[int] = set()

        def show(jobs: dict[int, Any], done: dict[int, Any]) -> None:
            for i, task in enumerate(tasks):
                if i not in jobs or i in finished:
                    continue
                if i not in started:
                    bar.start_task(task)
                    started.add(i)
                if i in done:
                    state = done[i].state
                    ok = state in ("DONE", "FINISHED", "COMPLETED") and done[i].exception() is None
                    bar.update(task, completed=totals[i] if ok else min(_epochs_logged(dirs[i]), totals[i]),
                               state="[green]done[/]" if ok else f"[red]{state.lower()}[/]")
                    bar.stop_task(task)
                    finished.add(i)
                else:
                    bar.update(task, completed=min(_epochs_logged(dirs[i]), totals[i]),
                               state=f"job {jobs[i].job_id}: {str(jobs[i].state).lower()}")
            bar.update(total, completed=len(done), state=f"{len(jobs) - len(done)} running")

        yield show


def _register() -> None:
    from fracbench.runs.runner import EXECUTORS

    if "submitit" not in EXECUTORS:
        EXECUTORS.add("submitit", run_jobs)


_register()
