"""fracbench run --launcher submitit: one job per trajectory, the same records and tables as a sequential run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fracbench import results as R
from fracbench.app.launch import LaunchOptions, TrajectoryJob, executor_parameters, parallel_wall, resolve
from fracbench.runs.runner import run_experiments
from fracbench.training.experiments import Experiment

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# what differs between two runs of the same fits: when, how long, where and with how many threads
VOLATILE = frozenset({"created", "train_seconds", "images_per_second", "seconds", "torch_threads", "host",
                      "hostname", "pid", "cpu_count", "platform"})


def strip_volatile(obj):
    """``obj`` (a record, an epochs.jsonl entry) without its timing, host and process fields, at any depth."""
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def neutralise_timing(results: Path) -> None:
    """Give every record under ``results/runs`` the same timing fields (the leaderboard shows train seconds
    and images/s), so that tables built from two runs can be compared byte for byte."""
    for path in (results / "runs").rglob(R.RECORD):
        rec = json.loads(path.read_text())
        rec.update({k: 0 for k in ("train_seconds", "images_per_second") if k in rec})
        path.write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")


def _comparable(path: Path) -> bytes:
    """A results file as compared between runs: JSON (records, epoch logs) without volatile fields, else bytes."""
    if path.suffix == ".json":
        return json.dumps(strip_volatile(json.loads(path.read_text())), sort_keys=True).encode()
    if path.suffix == ".jsonl":
        return "\n".join(json.dumps(strip_volatile(json.loads(line)), sort_keys=True)
                         for line in path.read_text().splitlines() if line.strip()).encode()
    return path.read_bytes()


def tree(root: Path, *folders: str) -> dict[str, bytes]:
    """Every file under ``root/<folder>`` (comparable form), by relative path."""
    out = {}
    for folder in folders:
        for p in sorted((root / folder).rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                out[p.relative_to(root).as_posix()] = _comparable(p)
    return out


def test_strip_volatile_keeps_results_and_drops_timing():
    rec = {"metrics": {"test": {"auroc": 0.7}}, "train_seconds": 3.2, "created": "x", "epochs": [{"seconds": 1}]}
    assert strip_volatile(rec) == {"metrics": {"test": {"auroc": 0.7}}, "epochs": [{}]}


def _exp(name: str, **config) -> Experiment:
    cfg = {"image_size": 32, "epochs": 2, "batch_size": 16, "n_boot": 20, **config}
    return Experiment(name=name, title=name, model="tiny_cnn", protocol="honest", config=cfg, seeds=(0, 1),
                      citation="test", table="table2", profiles={"smoke": {}})


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    from fracbench.data.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("syn") / "data"
    generate(SyntheticSpec(count=80, size=48, seed=1), root)
    return root


@pytest.fixture
def child_path(monkeypatch):
    """Jobs are new processes: they import this checkout's fracbench (and this test module, for its jobs)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS)]))


def _local(k: int = 2) -> LaunchOptions:
    # one torch thread per job and per sequential run: the same arithmetic on both sides
    return LaunchOptions("submitit", cluster="local", max_parallel=k, cpus_per_job=1, timeout_min=20)


@pytest.mark.slow
def test_four_jobs_give_the_sequential_records_and_tables(syn, tmp_path, child_path):
    import torch

    from fracbench.claims.tables import write_tables

    exps = [_exp("alpha"), _exp("beta", lr=3e-3)]
    kw = dict(dataset="synthetic", data_dir=str(syn), profile="smoke", progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq = run_experiments(exps, results=tmp_path / "seq", **kw)
    finally:
        torch.set_num_threads(threads)
    jobs = run_experiments(exps, results=tmp_path / "jobs", launch=_local(2), **kw)
    assert [(o.experiment, o.seed, o.status) for o in jobs] == [(o.experiment, o.seed, o.status) for o in seq] == [
        ("alpha", 0, "complete"), ("alpha", 1, "complete"), ("beta", 0, "complete"), ("beta", 1, "complete")]
    # four real jobs, run by submitit in processes other than this one
    logs = sorted((tmp_path / "jobs" / ".submitit").glob("*_result.pkl"))
    assert len(logs) == 4
    a, b = tree(tmp_path / "seq", "runs", "manifests"), tree(tmp_path / "jobs", "runs", "manifests")
    assert a.keys() == b.keys() and len(a) > 20
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, differ
    # the tables, byte for byte, once the leaderboard's timing columns have the same input on both sides
    for side in ("seq", "jobs"):
        neutralise_timing(tmp_path / side)
        write_tables(tmp_path / side)
    a, b = tree(tmp_path / "seq", "tables"), tree(tmp_path / "jobs", "tables")
    assert a.keys() == b.keys() and any(k.endswith("leaderboard.csv") for k in a)
    assert [k for k in a if a[k] != b[k]] == []


class DyingJob(TrajectoryJob):
    """Seed 0's job is SIGKILLed right after its first resume state (last.pt) is written; other jobs run as usual."""

    def __call__(self, spec):
        if spec.seed == 0:
            import signal

            from conftest import die_after_saves

            die_after_saves(pytest.MonkeyPatch(), 1)
            try:
                return super().__call__(spec)
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(spec)


@pytest.mark.slow
def test_killed_job_resumes_on_resubmission_to_the_same_record(syn, tmp_path, child_path, monkeypatch):
    import torch

    import fracbench.app.launch as Lm

    exps = [_exp("gamma", epochs=3)]
    kw = dict(dataset="synthetic", data_dir=str(syn), profile="smoke", progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_experiments(exps, results=tmp_path / "ref", **kw)
    finally:
        torch.set_num_threads(threads)
    res = tmp_path / "jobs"
    monkeypatch.setattr(Lm, "TrajectoryJob", DyingJob)
    first = run_experiments(exps, results=res, launch=_local(2), **kw)
    monkeypatch.setattr(Lm, "TrajectoryJob", TrajectoryJob)
    # one job killed mid-fit; the other ran to the end all the same
    assert [(o.seed, o.status) for o in first] == [(0, "failed"), (1, "complete")]
    failed = json.loads((R.run_dir(res, "gamma", 0) / R.RECORD).read_text())
    assert failed["status"] == "failed" and "run the same command again" in failed["error"]
    assert (R.run_dir(res, "gamma", 0) / "checkpoints" / "last.pt").exists() or \
        any(R.run_dir(res, "gamma", 0).rglob("last.pt"))
    second = run_experiments(exps, results=res, launch=_local(2), **kw)
    assert [(o.seed, o.status) for o in second] == [(0, "complete"), (1, "skipped")]
    err = "".join(p.read_text() for p in (res / ".submitit").glob("*_log.err"))
    assert "resuming" in err  # from its last.pt, not from scratch
    for seed in (0, 1):
        a, b = R.run_dir(tmp_path / "ref", "gamma", seed), R.run_dir(res, "gamma", seed)
        for name in (R.RECORD, "epochs.jsonl", "predictions.csv"):
            assert _comparable(a / name) == _comparable(b / name), (seed, name)


_PREPARE = """
import json, sys, time
import fracbench.data as D
real = D.prepare
def timed(*a, **k):
    t0 = time.time()
    p = real(*a, **k)
    print(json.dumps({"t0": t0, "t1": time.time(), "fp": p.manifest.fingerprint, "n": len(p.manifest.rows)}))
    return p
D.prepare = timed
start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.005)
from fracbench.app.launch import prepare_locked
prepare_locked("synthetic", None, progress=False)
"""


@pytest.mark.slow
def test_two_processes_prepare_one_dataset_one_at_a_time(fresh_cache):
    env = {**os.environ, "PYTHONPATH": str(REPO), "FRACBENCH_CACHE": str(fresh_cache)}
    start = time.time() + 3.0  # both past their imports, then both ask at once
    procs = [subprocess.Popen([sys.executable, "-c", _PREPARE, str(start)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    (a, b) = sorted((json.loads(o[0].strip().splitlines()[-1]) for o in outs), key=lambda r: r["t0"])
    assert a["fp"] == b["fp"] and a["n"] == b["n"] > 0
    assert b["t0"] >= a["t1"] - 0.05, "the two preparations overlapped: no lock"
    # and what they left is whole: a third preparation reads the same manifest from the caches
    third = subprocess.run([sys.executable, "-c", _PREPARE, "0"], env=env, capture_output=True, text=True, timeout=600)
    assert json.loads(third.stdout.strip().splitlines()[-1])["fp"] == a["fp"]


def test_slurm_sbatch_parameters(tmp_path, monkeypatch):
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    from fracbench.app.launch import make_executor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # as if srun were installed
    opts = resolve(LaunchOptions("submitit", cluster="slurm", partition="gpu-a100", gpus_per_job=2, cpus_per_job=6,
                                 timeout_min=90, max_parallel=3))
    assert executor_parameters(opts) == {
        "name": "fracbench", "timeout_min": 90, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 6,
        "gpus_per_node": 2, "slurm_array_parallelism": 3, "slurm_signal_delay_s": 120, "slurm_partition": "gpu-a100"}
    ex = make_executor(tmp_path, opts)
    assert isinstance(ex, submitit.AutoExecutor) and ex.cluster == "slurm"
    inner = ex._executor
    assert inner.parameters["partition"] == "gpu-a100" and inner.parameters["array_parallelism"] == 3
    inner.parameters["map_count"] = 8  # as an array of 8 jobs
    text = inner._make_submission_file_text("python -m submitit.core._submit X", "uid")
    for line in ("#SBATCH --partition=gpu-a100", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=6",
                 "#SBATCH --time=90", "#SBATCH --array=0-7%3", "#SBATCH --nodes=1", "#SBATCH --job-name=fracbench",
                 "#SBATCH --signal=USR2@120"):
        assert line in text, (line, text)


def test_cli_run_arguments_reach_launch_options():
    from fracbench.cli import _launch_options, build_parser

    args = build_parser().parse_args(["run", "--all", "--launcher", "submitit", "--slurm-partition", "p",
                                      "--gpus-per-job", "1", "--cpus-per-job", "4", "--timeout-min", "30",
                                      "--max-parallel", "5"])
    assert _launch_options(args) == LaunchOptions("submitit", partition="p", gpus_per_job=1, cpus_per_job=4,
                                                  timeout_min=30, max_parallel=5)
    assert _launch_options(build_parser().parse_args(["run", "--all"])).launcher == "local"


def test_defaults_follow_devices_and_cores(monkeypatch):
    import fracbench.runs.jobs as Lm

    monkeypatch.setattr(Lm, "devices_present", lambda: (0, 8))
    opts = resolve(LaunchOptions("submitit", cluster="local"))
    assert (opts.max_parallel, opts.cpus_per_job, opts.gpus_per_job) == (4, 2, 0)
    monkeypatch.setattr(Lm, "devices_present", lambda: (4, 32))
    opts = resolve(LaunchOptions("submitit", cluster="local"))
    assert (opts.max_parallel, opts.cpus_per_job, opts.gpus_per_job) == (4, 8, 1)
    assert resolve(LaunchOptions("submitit", cluster="local"), device="cpu").gpus_per_job == 0


def test_a_failed_job_is_reported_by_its_own_exception():
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from fracbench.app.launch import _job_error

    class Job:
        state = "FAILED"

    raised = FailedJobError("Job (task=0) failed during processing with trace:\n----------------------\nTraceback:\n"
                            "  File x\nJobLocked: a seed 0: another job is running this trajectory\n"
                            "----------------------\nYou can check full logs with ...")
    assert _job_error(raised, Job()).startswith("JobLocked: a seed 0: another job is running this trajectory")
    killed = _job_error(UncompletedJobError("Job 1 has not produced any output (state: FAILED)\nlast line"), Job())
    assert killed.startswith("the job ended without a result (state FAILED") and "run the same command again" in killed


def test_local_jobs_get_their_own_gpus(tmp_path):
    from fracbench.app.launch import make_executor, set_visible_gpus

    ex = make_executor(tmp_path, LaunchOptions("submitit", cluster="local", gpus_per_job=1, cpus_per_job=4,
                                               max_parallel=2))
    set_visible_gpus(ex, [1])
    assert ex._executor.parameters["visible_gpus"] == (1,) and ex._executor.parameters["gpus_per_node"] == 1


def test_parallel_wall():
    assert parallel_wall([10, 10, 10, 10], 2) == 20
    assert parallel_wall([30, 10, 10, 10], 2) == 30
    assert parallel_wall([5, 5], 1) == 10


def test_plan_shows_the_wall_time_at_k_jobs(tmp_path, monkeypatch, capsys, fresh_cache):
    import re

    from fracbench.cli import main
    from fracbench.data.synthetic import SyntheticSpec, generate
    from fracbench.progress import console
    from fracbench.runs import plan as P

    generate(SyntheticSpec(count=40, size=48, seed=2), tmp_path / "data")
    monkeypatch.setattr(P, "measure_rates", lambda cfg: P.Rates(train=50.0, eval=200.0))
    monkeypatch.setattr(console, "width", 200)
    args = ["run", "paper_cnn_*", "hparam_lr_*", "--plan", "--profile", "smoke", "--dataset", "synthetic",
            "--data-dir", str(tmp_path / "data"), "--results", str(tmp_path / "res")]
    assert main(args + ["--launcher", "submitit", "--max-parallel", "3"]) == 0
    out = capsys.readouterr().out
    jobs = [line.split("\t") for line in out.splitlines() if "\t" in line][1:-1]
    assert len(jobs) == 3  # one row per job: the protocol twins and two hparam experiments, seed 0
    wall = re.search(r"wall time at 3 jobs in parallel (\d+)m(\d+)s \(sequential (\d+)m(\d+)s\)", out)
    assert wall, out
    m = [int(x) for x in wall.groups()]
    seconds = [int(a) * 60 + int(b) for a, b in (re.fullmatch(r"(\d+)m(\d+)s", r[-1]).groups() for r in jobs)]
    assert abs((m[0] * 60 + m[1]) - max(seconds)) <= 1 and abs((m[2] * 60 + m[3]) - sum(seconds)) <= 2
    assert main(args) == 0 and "in parallel" not in capsys.readouterr().out  # the local launcher: no such line


_CACHE = """
import json, sys, time
from pathlib import Path
import numpy as np
import fracbench.data.cache as C
real = C.build_cache
def timed(*a, **k):
    t0 = time.time()
    c = real(*a, **k)
    print(json.dumps({"t0": t0, "t1": time.time(), "decoded": c.decoded_now, "sum": int(np.asarray(c.array).sum())}))
    return c
C.build_cache = timed
from fracbench.app.launch import prepare_locked
from fracbench.runs.runner import RunContext
prepared = prepare_locked("synthetic", sys.argv[2], progress=False)
ctx = RunContext(prepared, prepared.manifest, "smoke", "cpu", Path(sys.argv[3]), "test", False)
start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.005)
ctx.cache(40)
"""


@pytest.mark.slow
def test_two_jobs_fill_one_decode_cache_one_at_a_time(syn, tmp_path, fresh_cache):
    env = {**os.environ, "PYTHONPATH": str(REPO), "FRACBENCH_CACHE": str(fresh_cache)}
    start = time.time() + 4.0
    procs = [subprocess.Popen([sys.executable, "-c", _CACHE, str(start), str(syn), str(tmp_path / "res")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    a, b = sorted((json.loads(o[0].strip().splitlines()[-1]) for o in outs), key=lambda r: r["t0"])
    assert b["t0"] >= a["t1"] - 0.05, "the two fills overlapped: no lock"
    assert a["decoded"] == 80 and b["decoded"] == 0 and a["sum"] == b["sum"] > 0  # the second read the first's


def test_a_preempted_job_requeues_itself_with_the_same_trajectory():
    from fracbench.app.launch import JobSpec

    spec = JobSpec((_exp("delta"),), 1, "synthetic", None, "smoke", "/tmp/r", "abc")
    job = TrajectoryJob()
    again = job.checkpoint(spec)
    assert again.function is job and again.args == (spec,)
