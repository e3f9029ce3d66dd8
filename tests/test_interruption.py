"""Interruption: crashes mid-write lose nothing, SIGKILLed training resumes to the same record, one writer.

* Every file fracbench writes goes through fracbench.io's temp-file-then-rename: a crash at the
  rename (simulated by making ``os.replace`` raise) leaves the old file byte for byte, no partial
  file and no temp file.
* A training run SIGKILLed at seeded random moments and resumed with ``fit(resume=True)`` ends with
  the same record (metrics, selected epoch, threshold), the same epochs.jsonl (minus timings), the
  same predictions and the same weights as a run never interrupted.
* Two ``fracbench run`` on one results folder: the second is refused (ResultsLocked, exit 2, a
  clear message) and the first completes uncorrupted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fracbench import io as fio
from fracbench import results as R
from fracbench.config import TrainConfig
from fracbench.data import prepare
from fracbench.data.cache import DecodedCache, build_cache
from fracbench.data.manifest import Manifest
from fracbench.data.synthetic import SyntheticSpec, generate
from fracbench.models import create_model
from fracbench.serving.checkpoint import load_checkpoint, save_checkpoint
from fracbench.training import train as T

SIZE = 32
VOLATILE = {"seconds", "images_per_second"}  # timing fields of epochs.jsonl


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "data"
    generate(SyntheticSpec(count=80, size=48), root)
    return root


@pytest.fixture(scope="module")
def cache(syn_root: Path) -> DecodedCache:
    return build_cache(prepare("synthetic", syn_root, progress=False).manifest, SIZE, progress=False)


def _stable(epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in epochs]


# -------------------------------------------------------------------- atomic writes


def _manifest_writer(path: Path, version: int) -> None:
    from fracbench.data.manifest import ManifestRow

    rows = [ManifestRow(f"id{i}", f"img{i}.png", i % 2, f"g{i}", "", "train", "0" * 64) for i in range(version + 3)]
    Manifest("synthetic", path.parent, rows).write(path)


WRITERS: dict[str, tuple[str, Callable[[Path, int], Any]]] = {
    "record": (R.RECORD, lambda p, v: R.write_record(p.parent, {"status": "complete", "version": v})),
    "epochs": (R.EPOCHS, lambda p, v: R.write_epochs(p.parent, [{"epoch": e} for e in range(v + 1)])),
    "predictions": (R.PREDICTIONS, lambda p, v: R.write_predictions(p.parent, [("a", "test", 1, 0.1 * v)])),
    "config": (R.CONFIG, lambda p, v: R.write_config(p.parent, f"epochs: {v}\n")),
    "manifest": ("manifest.csv", _manifest_writer),
    "json": ("data.json", lambda p, v: fio.atomic_write_json(p, {"v": v, "pad": "x" * 100_000})),
}


class _Crash(OSError):
    pass


def _crash_on_replace(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []

    def boom(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        calls.append((os.fspath(src), os.fspath(dst)))
        # the new content is complete in the temp file at this point; the crash is at the rename
        assert Path(src).exists()
        raise _Crash("simulated crash at rename")

    monkeypatch.setattr(os, "replace", boom)
    return calls


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_crash_at_rename_keeps_the_old_file(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, write = WRITERS[kind]
    path = tmp_path / name
    write(path, 1)
    old = path.read_bytes()
    before = sorted(p.name for p in tmp_path.iterdir())
    calls = _crash_on_replace(monkeypatch)
    with pytest.raises(_Crash):
        write(path, 2)
    assert calls and Path(calls[0][1]) == path
    assert path.read_bytes() == old  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial file, no temp file left
    monkeypatch.undo()
    write(path, 2)  # and the next write goes through
    assert path.read_bytes() != old


def test_crash_at_rename_of_a_new_file_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _crash_on_replace(monkeypatch)
    with pytest.raises(_Crash):
        R.write_record(tmp_path, {"status": "complete"})
    assert list(tmp_path.iterdir()) == []


def test_crash_while_writing_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure before the rename (disk full at fsync) also leaves the old file and no temp file."""
    path = tmp_path / R.RECORD
    R.write_record(tmp_path, {"v": 1})
    old = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        R.write_record(tmp_path, {"v": 2})
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == [R.RECORD]


def test_crash_while_saving_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    first = create_model("tiny_cnn", image_size=SIZE)
    path = save_checkpoint(tmp_path / "best", first, model_name="tiny_cnn", model_kwargs={}, image_size=SIZE,
                           channels=3, threshold=0.5)
    weights, sidecar = path.read_bytes(), path.with_suffix(".json").read_bytes()
    second = create_model("tiny_cnn", image_size=SIZE)
    _crash_on_replace(monkeypatch)
    with pytest.raises(_Crash):
        save_checkpoint(tmp_path / "best", second, model_name="tiny_cnn", model_kwargs={}, image_size=SIZE,
                        channels=3, threshold=0.7)
    monkeypatch.undo()
    assert path.read_bytes() == weights and path.with_suffix(".json").read_bytes() == sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]
    ck = load_checkpoint(path)  # still a usable checkpoint, the first one
    assert all(torch.equal(a, b) for a, b in zip(ck.model.state_dict().values(), first.state_dict().values()))


def test_crash_while_saving_resume_state_keeps_the_previous_epoch(cache: DecodedCache, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename of last.pt fails at epoch 1: last.pt still holds epoch 0, and a resume finishes the run."""
    cfg = TrainConfig(model="tiny_cnn", image_size=SIZE, epochs=3, batch_size=16, n_boot=20)
    full = T.fit(cfg, cache, tmp_path / "full", progress=False)
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == T.LAST and torch.load(src, weights_only=True)["state"]["epoch"] == 1:
            raise _Crash("simulated crash at rename of last.pt")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Crash):
        T.fit(cfg, cache, tmp_path / "cut", progress=False)
    monkeypatch.undo()
    ckpts = tmp_path / "cut" / "checkpoints"
    assert torch.load(ckpts / T.LAST, weights_only=True)["state"]["epoch"] == 0
    assert not [p for p in ckpts.iterdir() if p.name.endswith(".tmp")]
    resumed = T.fit(cfg, cache, tmp_path / "cut", resume=True, progress=False)
    assert json.dumps(resumed["metrics"]) == json.dumps(full["metrics"])  # as JSON: a nan equals itself
    assert _stable(R.read_epochs(tmp_path / "cut")) == _stable(R.read_epochs(tmp_path / "full"))


def test_resume_with_dropout_matches_uninterrupted(cache: DecodedCache, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropout draws from torch's global generator: last.pt saves it, so a resumed run does not diverge.

    (Regression: before, only the shuffle/augment/TTA generators were saved and a resumed
    stand_in_rao14 or efficientnet run trained differently from epoch 1 on.)
    """
    cfg = TrainConfig(model="stand_in_rao14", image_size=SIZE, epochs=2, batch_size=16, n_boot=20)
    full = T.fit(cfg, cache, tmp_path / "full", progress=False)
    real_save = T._save_last

    def dying_save(*args: Any, **kwargs: Any) -> None:
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after epoch 0 was saved

    monkeypatch.setattr(T, "_save_last", dying_save)
    with pytest.raises(KeyboardInterrupt):
        T.fit(cfg, cache, tmp_path / "cut", progress=False)
    monkeypatch.undo()
    torch.manual_seed(1234)  # whatever the global generator holds now must not matter
    resumed = T.fit(cfg, cache, tmp_path / "cut", resume=True, progress=False)
    assert json.dumps(resumed["metrics"]) == json.dumps(full["metrics"])  # as JSON: a nan equals itself
    assert _stable(R.read_epochs(tmp_path / "cut")) == _stable(R.read_epochs(tmp_path / "full"))


# -------------------------------------------------------------------- SIGKILL and resume

# One training process: reads the manifest, opens the (already built) decode cache, prints
# "training" and fits with resume=True. One thread, so every process computes bit-identically.
# A pause point (argv[5], JSON) makes the process stop at a chosen moment, print "paused" and block
# on stdin until the test SIGKILLs it, so the kill lands exactly there, whatever the machine's load:
#   {"epoch": e, "batch": b}: after the optimizer step of batch b (1-based) of epoch e;
#   {"saved": e}: right after epoch e's resume state (last.pt) is written, before epochs.jsonl is.
_TRAIN = """
import json, sys, torch
torch.set_num_threads(1)
import fracbench.training.train as T
from fracbench.config import TrainConfig
from fracbench.data.cache import build_cache
from fracbench.data.manifest import Manifest
manifest, root, out, cfg, pause = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
cache = build_cache(Manifest.read(manifest, "synthetic", root), cfg["image_size"], progress=False)

def stop_here():
    print("paused", flush=True)
    sys.stdin.read()  # the test never writes: blocked until it kills this process
    raise SystemExit("stdin closed while paused")

last = __import__("pathlib").Path(out) / "checkpoints" / T.LAST
epoch = [torch.load(last, weights_only=True)["state"]["epoch"] + 1 if last.exists() else 0]
real_one, real_save = T.train_one_epoch, T._save_last

def one_epoch(*a, **k):
    done = [0]
    def on_batch():
        done[0] += 1
        if pause and pause.get("epoch") == epoch[0] and pause.get("batch") == done[0]:
            stop_here()
    k["on_batch"] = on_batch
    result = real_one(*a, **k)
    epoch[0] += 1
    return result

def save_last(*a, **k):
    real_save(*a, **k)
    states = a[-1]  # one state per protocol sharing the trajectory (a single run has one)
    if pause and pause.get("saved") == states[0]["epoch"]:
        stop_here()

T.train_one_epoch, T._save_last = one_epoch, save_last
print("training", flush=True)
T.fit(TrainConfig(**cfg), cache, out, resume=True, progress=False)
print("done", flush=True)
"""

KILL_CFG = dict(model="tiny_cnn", image_size=SIZE, epochs=8, batch_size=8, n_boot=50, augment="radiograph",
                schedule="cosine", protocol="honest", device="cpu")
START_TIMEOUT = 120.0  # seconds for a process to import torch and open the cache (a loaded CI runner)
STEP_TIMEOUT = 600.0  # seconds to reach a pause point or finish: generous, it only bounds a hang


class _Trainer:
    """A training subprocess; ``started`` is set when it prints "training" (imports done), ``paused`` when it
    stopped at its pause point and waits to be killed."""

    def __init__(self, manifest: Path, root: Path, out: Path, pause: dict[str, int] | None = None) -> None:
        # this checkout's fracbench, whichever one is installed
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TRAIN, str(manifest), str(root), str(out), json.dumps(KILL_CFG), json.dumps(pause)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.started = threading.Event()
        self.paused = threading.Event()
        self.ended = threading.Event()
        self.lines: list[str] = []
        self._err: list[str] = []
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()
        # stderr drained by its own thread: one reader per pipe (two readers of stdout could lose a line)
        self._err_thread = threading.Thread(target=lambda: self._err.extend(self.proc.stderr or []), daemon=True)
        self._err_thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.strip() == "training":
                self.started.set()
            if line.strip() == "paused":
                self.paused.set()
        self.ended.set()  # stdout closed: the process exited (or was killed)

    def wait_started(self) -> None:
        if not self.started.wait(START_TIMEOUT):
            self.proc.kill()
            self._err_thread.join(timeout=10)
            pytest.fail(f"training process did not start: {''.join(self._err)[-2000:]}")

    def kill_at_pause(self) -> None:
        """Wait for the pause point (or the process's end, which fails the test) and SIGKILL it there."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while not (self.paused.is_set() or self.ended.is_set()):  # events, not sleeps: no timing assumption
            self.paused.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail("training process neither paused nor ended in time")
        if not self.paused.is_set():
            rc = self.finish()
            pytest.fail(f"training ended (rc {rc}) before its pause point; lines {self.lines}; {self.stderr[-2000:]}")
        self.proc.send_signal(signal.SIGKILL)

    def finish(self, timeout: float = STEP_TIMEOUT) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("training process did not finish in time")
        self.ended.wait()  # every stdout line read by the reader thread (the pipe is at EOF once it exits)
        self._err_thread.join()
        self.stderr = "".join(self._err)
        return self.proc.returncode


def _check_intact(out: Path) -> None:
    """Whatever a killed run left behind parses: no half-written record, epochs file, or resume state."""
    if (out / R.RECORD).exists():
        json.loads((out / R.RECORD).read_text())
    epochs = R.read_epochs(out) if (out / R.EPOCHS).exists() else []
    assert [e["epoch"] for e in epochs] == list(range(len(epochs)))
    last = out / "checkpoints" / T.LAST
    if last.exists():
        saved = torch.load(last, map_location="cpu", weights_only=True)
        # last.pt is written just before epochs.jsonl: the file may lag by the one epoch in between
        assert saved["state"]["epoch"] + 1 - len(epochs) in (0, 1)
    best = out / "checkpoints" / "best.safetensors"
    if best.exists() and best.with_suffix(".json").exists():
        load_checkpoint(best)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_matches_uninterrupted(cache: DecodedCache, syn_root: Path,
                                                                    tmp_path: Path) -> None:
    """Three SIGKILLs at seeded random points (mid-epoch, between last.pt and epochs.jsonl, mid-epoch), then resume.

    Each killed process stops at its point and waits to be killed, so where the kill lands does not
    depend on the machine's speed or load.
    """
    import math

    manifest = tmp_path / "manifest.csv"
    cache.manifest.write(manifest)
    batches = math.ceil(len(cache.indices("train")) / KILL_CFG["batch_size"])
    rng = random.Random(20240607)  # the kill points are random but the same on every run of the test
    e1, e2, e3 = sorted(rng.sample(range(KILL_CFG["epochs"]), 3))
    points = [{"epoch": e1, "batch": rng.randint(1, batches)}, {"saved": e2},
              {"epoch": e3, "batch": rng.randint(1, batches)}]

    ref = _Trainer(manifest, syn_root, tmp_path / "ref")  # the uninterrupted run
    ref.wait_started()
    assert ref.finish() == 0, ref.stderr[-3000:]
    assert "done" in ref.lines and "paused" not in ref.lines

    out = tmp_path / "killed"
    for point in points:
        t = _Trainer(manifest, syn_root, out, point)
        t.wait_started()
        t.kill_at_pause()
        assert t.finish() == -signal.SIGKILL
        assert "done" not in t.lines
        _check_intact(out)
        assert not (out / R.RECORD).exists()  # killed before the end: no record yet
        last_pt = out / "checkpoints" / T.LAST
        saved = torch.load(last_pt, map_location="cpu", weights_only=True)["state"]["epoch"] if last_pt.exists() else -1
        # where it stopped: mid-epoch e keeps epochs before e; after last.pt of epoch e, epoch e itself
        assert saved == (point["saved"] if "saved" in point else point["epoch"] - 1), (point, saved)
        if "saved" in point:
            assert len(R.read_epochs(out)) == point["saved"]  # epochs.jsonl one epoch behind last.pt

    last = _Trainer(manifest, syn_root, out)  # resume until complete
    last.wait_started()
    assert last.finish() == 0, last.stderr[-3000:]

    a, b = R.read_record(tmp_path / "ref"), R.read_record(out)
    assert a is not None and b is not None and b["status"] == "complete"
    assert json.dumps(b["metrics"]) == json.dumps(a["metrics"])  # exactly (as JSON, where a nan equals itself)
    for key in ("selected_epoch", "epochs_run", "threshold", "threshold_source", "counts", "config"):
        assert b[key] == a[key], key
    assert _stable(R.read_epochs(out)) == _stable(R.read_epochs(tmp_path / "ref"))
    assert (out / R.PREDICTIONS).read_bytes() == (tmp_path / "ref" / R.PREDICTIONS).read_bytes()
    wa = load_checkpoint(tmp_path / "ref" / "checkpoints" / "best.safetensors").model.state_dict()
    wb = load_checkpoint(out / "checkpoints" / "best.safetensors").model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (out / "checkpoints" / T.LAST).exists()


# -------------------------------------------------------------------- one writer per results folder


_SMOKE = ["paper_cnn_honest", "--profile", "smoke", "--dataset", "synthetic", "--no-tables", "--quiet"]


@pytest.mark.slow
def test_second_run_on_the_same_results_is_refused(syn_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from fracbench.cli import main

    results = tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # the first run stops after its first epoch's resume state is saved (so it holds the lock and is mid-run),
    # prints "paused" and waits for a line on stdin: the second run is concurrent by construction, not by timing
    first_code = (
        "import sys\nimport fracbench.training.train as T\nfrom fracbench.cli import main\nreal = T._save_last\n"
        "def save(*a, **k):\n    real(*a, **k)\n    if a[-1][0]['epoch'] == 0:\n"
        "        print('paused', flush=True); sys.stdin.readline()\n"
        "T._save_last = save\nsys.exit(main(sys.argv[1:]))\n")
    first = subprocess.Popen(
        [sys.executable, "-c", first_code, "run", *_SMOKE, "--data-dir", str(syn_root), "--results", str(results)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert first.stdout is not None and first.stdin is not None
        for line in first.stdout:  # blocks until the child pauses, or ends (EOF): no sleeps, no deadline
            if line.strip() == "paused":
                break
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert (results / ".lock").read_text().strip() == str(first.pid)  # it holds the lock

        capsys.readouterr()
        rc = main(["run", *_SMOKE, "--data-dir", str(syn_root), "--results", str(results)])
        err = capsys.readouterr().err
        assert rc == 2
        assert "another `fracbench run` is writing here" in err and str(results) in " ".join(err.split())
        assert first.poll() is None  # the refusal did not disturb the first run

        first.stdin.write("go\n")
        first.stdin.flush()
        _, first_err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, first_err[-3000:]
    out = R.run_dir(results, "paper_cnn_honest", 0)
    record = R.read_record(out)
    assert record is not None and record["status"] == "complete"
    assert len(R.read_epochs(out)) == record["epochs_run"]
    assert len(R.read_predictions(out)) == record["counts"]["val"] + record["counts"]["test"]
    load_checkpoint(out / "checkpoints" / "best.safetensors")
    json.loads((results / "data" / "synthetic.json").read_text())
    Manifest.read(results / "manifests" / "synthetic.csv", "synthetic", syn_root)
    assert not [p for p in results.rglob("*.tmp")]  # nothing half-written anywhere
    # and once the first is done, the folder is free again: a rerun finds the record current
    assert main(["run", *_SMOKE, "--data-dir", str(syn_root), "--results", str(results)]) == 0
