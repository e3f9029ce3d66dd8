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
from fracbench import train as T
from fracbench.checkpoint import load_checkpoint, save_checkpoint
from fracbench.config import TrainConfig
from fracbench.data import prepare
from fracbench.data.cache import DecodedCache, build_cache
from fracbench.data.manifest import Manifest
from fracbench.data.synthetic import SyntheticSpec, generate
from fracbench.models import create_model

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
    assert resumed["metrics"] == full["metrics"]
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
    assert resumed["metrics"] == full["metrics"]
    assert _stable(R.read_epochs(tmp_path / "cut")) == _stable(R.read_epochs(tmp_path / "full"))


# -------------------------------------------------------------------- SIGKILL and resume

# One training process: reads the manifest, opens the (already built) decode cache, prints
# "training" and fits with resume=True. One thread, so every process computes bit-identically.
_TRAIN = """
import json, sys, torch
torch.set_num_threads(1)
from fracbench.config import TrainConfig
from fracbench.data.cache import build_cache
from fracbench.data.manifest import Manifest
from fracbench.train import fit
manifest, root, out, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
cache = build_cache(Manifest.read(manifest, "synthetic", root), cfg["image_size"], progress=False)
print("training", flush=True)
fit(TrainConfig(**cfg), cache, out, resume=True, progress=False)
print("done", flush=True)
"""

KILL_CFG = dict(model="tiny_cnn", image_size=SIZE, epochs=8, batch_size=8, n_boot=50, augment="radiograph",
                schedule="cosine", protocol="honest", device="cpu")
START_TIMEOUT = 120.0  # seconds for a process to import torch and open the cache (a loaded CI runner)


class _Trainer:
    """A training subprocess; ``started`` is set when it prints "training" (imports done)."""

    def __init__(self, manifest: Path, root: Path, out: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TRAIN, str(manifest), str(root), str(out), json.dumps(KILL_CFG)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.started = threading.Event()
        self.started_at = 0.0
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.strip() == "training":
                self.started_at = time.monotonic()
                self.started.set()

    def wait_started(self) -> None:
        if not self.started.wait(START_TIMEOUT):
            self.proc.kill()
            pytest.fail(f"training process did not start: {self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}")

    def finish(self, timeout: float = 300) -> int:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            pytest.fail("training process did not finish in time")
        self.stderr = err
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
    manifest = tmp_path / "manifest.csv"
    cache.manifest.write(manifest)

    # the uninterrupted run, timed from the end of start-up
    ref = _Trainer(manifest, syn_root, tmp_path / "ref")
    ref.wait_started()
    assert ref.finish() == 0, ref.stderr[-3000:]
    train_time = time.monotonic() - ref.started_at

    out = tmp_path / "killed"
    rng = random.Random(20240607)  # the kill points are random but the same on every run of the test
    kills = 0
    for _ in range(3):
        delay = rng.uniform(0.1, 0.9) * train_time
        t = _Trainer(manifest, syn_root, out)
        t.wait_started()
        time.sleep(max(0.0, delay - (time.monotonic() - t.started_at)))
        if t.proc.poll() is None:
            t.proc.send_signal(signal.SIGKILL)
        rc = t.finish()
        if rc == -signal.SIGKILL:
            kills += 1
            assert "done" not in t.lines
            _check_intact(out)
        else:
            assert rc == 0, t.stderr[-3000:]  # finished before the kill landed: nothing more to resume
            break
    print(f"\nuninterrupted training {train_time:.1f} s; killed {kills} time(s)")
    assert kills >= 1, "no kill landed during training: the run is too short for the test to mean anything"

    last = _Trainer(manifest, syn_root, out)  # resume until complete
    last.wait_started()
    assert last.finish() == 0, last.stderr[-3000:]

    a, b = R.read_record(tmp_path / "ref"), R.read_record(out)
    assert a is not None and b is not None and b["status"] == "complete"
    assert b["metrics"] == a["metrics"]  # exactly, not approximately
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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "fracbench.cli", "run", *_SMOKE, "--data-dir", str(syn_root), "--results", str(results)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lock = results / ".lock"
        deadline = time.monotonic() + START_TIMEOUT
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):  # the pid is written once locked
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)

        assert first.poll() is None  # still running: the second run really is concurrent
        capsys.readouterr()
        rc = main(["run", *_SMOKE, "--data-dir", str(syn_root), "--results", str(results)])
        err = capsys.readouterr().err
        assert rc == 2
        assert "another `fracbench run` is writing here" in err and str(results) in " ".join(err.split())
        assert first.poll() is None  # the refusal did not disturb the first run

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
