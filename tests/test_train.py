"""fit(): determinism, resume after a kill, both protocols, records and checkpoints, DDP under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import die_after_saves

from fracbench import results as R
from fracbench.config import TrainConfig
from fracbench.data import prepare
from fracbench.data.cache import build_cache
from fracbench.data.synthetic import SyntheticSpec, generate
from fracbench.serving.checkpoint import load_checkpoint
from fracbench.training import train as T

VOLATILE = {"seconds", "images_per_second"}


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    os.environ.setdefault("FRACBENCH_CACHE", str(root / "cache"))
    generate(SyntheticSpec(count=160, size=64, seed=3), root / "data")
    p = prepare("synthetic", root / "data", progress=False)
    return build_cache(p.manifest, 48, progress=False)


def _cfg(**kw) -> TrainConfig:
    base = dict(model="tiny_cnn", image_size=48, epochs=3, batch_size=16, n_boot=50, protocol="honest")
    base.update(kw)
    return TrainConfig(**base)


def _stable(epochs: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in epochs]


def test_same_seed_same_result(small_cache, tmp_path):
    a = T.fit(_cfg(), small_cache, tmp_path / "a", progress=False)
    b = T.fit(_cfg(), small_cache, tmp_path / "b", progress=False)
    assert json.dumps(a["metrics"]) == json.dumps(b["metrics"])  # as JSON: a nan equals itself
    assert _stable(R.read_epochs(tmp_path / "a")) == _stable(R.read_epochs(tmp_path / "b"))
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (tmp_path / "b" / "predictions.csv").read_bytes()


def test_record_files_and_checkpoint(small_cache, tmp_path):
    rec = T.fit(_cfg(protocol="as_published"), small_cache, tmp_path, experiment="x", progress=False)
    for name in (R.RECORD, R.EPOCHS, R.PREDICTIONS, R.CONFIG):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / R.RECORD).read_text())
    assert saved["schema_version"] == R.SCHEMA_VERSION
    # the returned record is what was written, less the schema stamp write_record adds
    assert {k: v for k, v in saved.items() if k != "schema_version"} == json.loads(json.dumps(rec))
    for key in ("experiment", "model", "dataset", "manifest_sha256", "protocol", "config", "metrics", "threshold",
                "params", "flops_per_image", "train_seconds", "images_per_second", "git_commit", "torch",
                "device_name", "created"):
        assert key in saved, key
    test = saved["metrics"]["test"]
    assert 0 <= test["auroc"] <= 1 and len(test["auroc_ci95"]) == 2
    assert saved["selected_on"] == "test_accuracy" and saved["threshold"] == 0.5
    epochs = R.read_epochs(tmp_path)
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert {"train_loss", "train_accuracy", "val_auroc", "test_accuracy", "lr"} <= set(epochs[0])
    ck = load_checkpoint(tmp_path / "checkpoints" / "best.safetensors")
    assert ck.image_size == 48 and ck.meta["model"] == "tiny_cnn" and ck.meta["record"]


def test_honest_selects_on_validation(small_cache, tmp_path):
    rec = T.fit(_cfg(), small_cache, tmp_path, progress=False)
    assert rec["selected_on"] == "val_auroc"
    assert rec["threshold_source"].startswith("validation")
    epochs = R.read_epochs(tmp_path)
    best = max(range(len(epochs)), key=lambda i: (epochs[i]["val_auroc"], -i))
    assert rec["selected_epoch"] == epochs[best]["epoch"]


def test_resume_after_kill_matches_uninterrupted(small_cache, tmp_path, monkeypatch):
    full = T.fit(_cfg(epochs=4), small_cache, tmp_path / "full", progress=False)

    die_after_saves(monkeypatch, 2)  # killed right after epoch 1 was saved
    with pytest.raises(KeyboardInterrupt):
        T.fit(_cfg(epochs=4), small_cache, tmp_path / "cut", progress=False)
    assert not (tmp_path / "cut" / R.RECORD).exists()
    monkeypatch.undo()  # the real _save_last again
    resumed = T.fit(_cfg(epochs=4), small_cache, tmp_path / "cut", resume=True, progress=False)
    assert json.dumps(resumed["metrics"]) == json.dumps(full["metrics"])  # as JSON: a nan equals itself
    assert resumed["selected_epoch"] == full["selected_epoch"]
    assert _stable(R.read_epochs(tmp_path / "cut")) == _stable(R.read_epochs(tmp_path / "full"))


def test_resume_refuses_other_config(small_cache, tmp_path, monkeypatch):
    real_save = T._save_last

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "_save_last", dying_save)
    with pytest.raises(KeyboardInterrupt):
        T.fit(_cfg(epochs=2), small_cache, tmp_path, progress=False)
    monkeypatch.undo()  # the real _save_last again
    assert T.resumable(tmp_path, _cfg(epochs=2), small_cache.manifest.fingerprint)
    assert not T.resumable(tmp_path, _cfg(epochs=2, lr=0.01), small_cache.manifest.fingerprint)
    with pytest.raises(ValueError, match="another config"):
        T.fit(_cfg(epochs=2, lr=0.01), small_cache, tmp_path, resume=True, progress=False)
    T.fit(_cfg(epochs=2), small_cache, tmp_path, resume=True, progress=False)
    assert not (tmp_path / "checkpoints" / T.LAST).exists()  # a finished run drops its resume state


class _LabelsOnly:
    """The two things train_rows reads from a cache: the train indices and the labels."""

    def __init__(self, labels, split):
        import numpy as np

        self.labels = np.asarray(labels)
        self._split = np.asarray(split)

    def indices(self, split):
        import numpy as np

        return np.flatnonzero(self._split == split)


@pytest.mark.parametrize("n_train, n_pos, keep", [(1000, 100, 100), (1000, 100, 37), (500, 400, 60), (333, 17, 50)])
def test_max_train_images_is_stratified_and_fixed(n_train, n_pos, keep):
    """Each class keeps its share of the train split, exactly; the same rows for every seed; train rows only."""
    import numpy as np

    rng = np.random.default_rng(n_train + n_pos)
    labels = np.zeros(n_train + 50, np.int64)
    labels[rng.choice(n_train, n_pos, replace=False)] = 1
    split = np.array(["train"] * n_train + ["test"] * 50)
    labels[n_train:] = 1
    cache = _LabelsOnly(labels, split)
    rows_a = T.train_rows(_cfg(max_train_images=keep), cache)
    rows_b = T.train_rows(_cfg(max_train_images=keep, seed=5), cache)
    assert (rows_a == rows_b).all() and len(set(rows_a.tolist())) == len(rows_a)
    assert rows_a.max() < n_train  # never a test row
    pos = int(labels[rows_a].sum())
    assert pos == round(keep * n_pos / n_train)
    assert len(rows_a) - pos == round(keep * (n_train - n_pos) / n_train)


def test_max_train_images_on_a_real_cache(small_cache):
    rows_a = T.train_rows(_cfg(max_train_images=40), small_cache)
    rows_b = T.train_rows(_cfg(max_train_images=40, seed=5), small_cache)
    assert len(rows_a) == 40 and (rows_a == rows_b).all()
    assert set(rows_a.tolist()) <= set(small_cache.indices("train").tolist())


@pytest.mark.slow
def test_ddp_two_cpu_processes(small_cache, tmp_path):
    """torchrun, 2 processes, gloo: trains, and rank 0 alone writes one sane record.

    The script wraps train_one_epoch (what each rank saw) and _end_epoch (the all-reduced totals the
    epoch is logged with) to log image counts, so the test can check that each training image is
    counted once per epoch across the ranks, not once per rank.
    """
    script = tmp_path / "ddp_main.py"
    log = tmp_path / "counts"
    script.write_text(
        "import json, os, sys\n"
        "import fracbench.training.train as T\n"
        "from fracbench.data.manifest import Manifest\n"
        "from fracbench.data.cache import build_cache\n"
        "from fracbench.config import TrainConfig\n"
        "log = sys.argv[4] + '.' + os.environ['RANK']\n"
        "def note(kind, n):\n"
        "    with open(log, 'a') as fh: fh.write(json.dumps([kind, n]) + '\\n')\n"
        "real_one, real_end = T.train_one_epoch, T._end_epoch\n"
        "def one(*a, **k):\n"
        "    tr = real_one(*a, **k); note('rank', tr['n']); return tr\n"
        "def end(views, model, device, epoch, tr, *a):\n"
        "    note('reduced', tr['n']); return real_end(views, model, device, epoch, tr, *a)\n"
        "T.train_one_epoch, T._end_epoch = one, end\n"
        "m = Manifest.read(sys.argv[1], 'synthetic', sys.argv[2])\n"
        "c = build_cache(m, 48, progress=False)\n"
        "T.fit(TrainConfig(model='tiny_cnn', image_size=48, epochs=2, batch_size=16, n_boot=20, device='cpu'),"
        " c, sys.argv[3], experiment='ddp', progress=False)\n"
    )
    manifest = tmp_path / "m.csv"
    small_cache.manifest.write(manifest)
    out = tmp_path / "ddp"
    # this checkout's fracbench, not whichever one is installed
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(manifest), str(small_cache.manifest.root), str(out), str(log)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((out / R.RECORD).read_text())
    assert rec["status"] == "complete" and rec["epochs_run"] == 2
    assert 0 <= rec["metrics"]["test"]["auroc"] <= 1
    assert len(R.read_epochs(out)) == 2
    assert len(list(out.glob("record*.json"))) == 1
    # the train split's size, read from the manifest file itself
    import csv
    import math

    with manifest.open(newline="") as fh:
        n_train = sum(1 for r in csv.DictReader(fh) if r["split"] == "train")
    per_rank = math.ceil(n_train / 2)  # DistributedSampler's padding: both ranks see the same number of rows
    logs = {rank: [json.loads(line) for line in (tmp_path / f"counts.{rank}").read_text().splitlines()]
            for rank in (0, 1)}
    assert [n for kind, n in logs[0] if kind == "rank"] == [per_rank] * 2
    assert [n for kind, n in logs[1] if kind == "rank"] == [per_rank] * 2
    # each epoch is logged (on rank 0) with every rank's images, counted once: not per_rank, not 4 * per_rank
    assert [n for kind, n in logs[0] if kind == "reduced"] == [2 * per_rank] * 2
    assert not [n for kind, n in logs[1] if kind == "reduced"]  # rank 1 neither evaluates nor writes


def test_as_published_counts_only_jpg_like_the_tutorial():
    import numpy as np

    from fracbench.training.protocols import PROTOCOLS

    paths = ["a.jpg", "b.png", "c.jpg", "d.JPG", "e.jpg", "f.png"]
    rows_train, rows_test = np.array([0, 1, 2]), np.array([3, 4, 5])
    tr, te, note = T._denominators(PROTOCOLS["as_published"], paths, rows_train, rows_test)
    assert (tr, te) == (2, 1)  # "d.JPG" and the .png files are scored but not counted
    assert "not counted" in note
    assert T._denominators(PROTOCOLS["honest"], paths, rows_train, rows_test)[:2] == (3, 3)
    # no .jpg at all: the tutorial divides by zero; fracbench counts every image and says so
    tr, te, note = T._denominators(PROTOCOLS["as_published"], ["a.png", "b.png"], np.array([0]), np.array([1]))
    assert (tr, te) == (1, 1) and "divide by zero" in note


def test_honest_checkpoint_carries_the_validation_threshold(small_cache, tmp_path):
    """The sidecar's threshold is Youden's on the validation predictions (recomputed here), not 0.5."""
    import numpy as np

    rec = T.fit(_cfg(), small_cache, tmp_path, progress=False)
    val = [p for p in R.read_predictions(tmp_path) if p["split"] == "val"]
    y = np.array([p["label"] for p in val])
    s = np.array([p["score"] for p in val])

    def youden(t):
        pred = s >= t
        return pred[y == 1].mean() - pred[y == 0].mean()

    best = max(sorted(set(s.tolist()), reverse=True), key=youden)  # first maximum: the largest threshold
    assert rec["threshold"] == best and rec["threshold_source"] == "validation (youden)"
    ck = load_checkpoint(tmp_path / "checkpoints" / "best.safetensors")
    assert ck.threshold == best != 0.5
    assert ck.meta["record"] == "../record.json"


def test_as_published_jpg_denominator_through_fit(tmp_path):
    """Accuracy "as counted" = correct test images / the test folder's .jpg files (counted here from the folder)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    exts = [".jpg", ".png", ".jpeg", ".JPG"]
    for split, n in (("train", 12), ("val", 6), ("test", 10)):
        for label, cls in ((1, "fractured"), (0, "not fractured")):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                px = (rng.random((40, 40)) * 80 + 120 * label).astype(np.uint8)
                Image.fromarray(px).save(tmp_path / "data" / split / cls / f"{i}{exts[i % len(exts)]}",
                                         format="PNG" if exts[i % len(exts)] == ".png" else "JPEG")
    test_files = [p for p in (tmp_path / "data" / "test").rglob("*") if p.is_file()]
    jpg = sum(p.name.endswith(".jpg") for p in test_files)
    assert 0 < jpg < len(test_files) == 20
    cache = build_cache(prepare("imagefolder", tmp_path / "data", progress=False).manifest, 32, progress=False)
    rec = T.fit(_cfg(protocol="as_published", image_size=32, epochs=2), cache, tmp_path / "run", progress=False)
    test = [p for p in R.read_predictions(tmp_path / "run") if p["split"] == "test"]
    correct = sum((p["score"] >= 0.5) == (p["label"] == 1) for p in test)
    assert len(test) == 20 and rec["counts"]["test_denominator"] == jpg
    assert rec["metrics"]["test"]["accuracy_as_counted"] == correct / jpg
    assert rec["metrics"]["test"]["accuracy_at_0.5"] == correct / 20
    assert f"{20 - jpg} test images of other types scored but not counted" in rec["accuracy_denominator"]


@pytest.mark.parametrize("cut_after", [1, 2])
def test_resume_as_published_matches_uninterrupted(small_cache, tmp_path, monkeypatch, cut_after):
    """Test-time flips (their generator) and the kept best-epoch test scores survive an interruption."""
    cfg = _cfg(protocol="as_published", epochs=4, augment="flip")
    full = T.fit(cfg, small_cache, tmp_path / "full", progress=False)
    real_save = T._save_last
    calls = {"n": 0}

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == cut_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "_save_last", dying_save)
    with pytest.raises(KeyboardInterrupt):
        T.fit(cfg, small_cache, tmp_path / "cut", progress=False)
    monkeypatch.undo()  # the real _save_last again
    import torch

    torch.manual_seed(999)  # the global generator's state at resume must not matter
    resumed = T.fit(cfg, small_cache, tmp_path / "cut", resume=True, progress=False)
    # as JSON: a nan (e.g. precision with no positive call) equals itself there, exactly as written
    assert json.dumps(resumed["metrics"]) == json.dumps(full["metrics"])
    assert resumed["selected_epoch"] == full["selected_epoch"]
    assert _stable(R.read_epochs(tmp_path / "cut")) == _stable(R.read_epochs(tmp_path / "full"))
    # the flipped test scores of the chosen epoch, byte for byte
    assert (tmp_path / "cut" / R.PREDICTIONS).read_bytes() == (tmp_path / "full" / R.PREDICTIONS).read_bytes()


def test_best_checkpoint_written_only_when_it_changes(small_cache, tmp_path, monkeypatch):
    """best.safetensors is written once per epoch that improved the selection, and not again at the end (the
    final step re-saves the same weights with their threshold: only the sidecar changes)."""
    import fracbench.serving.checkpoint as C

    writes: list[str] = []
    real = C.atomic_write_bytes

    def counting(path, data):
        writes.append(Path(path).name)
        return real(path, data)

    monkeypatch.setattr(C, "atomic_write_bytes", counting)
    rec = T.fit(_cfg(epochs=4), small_cache, tmp_path / "run", progress=False)
    auroc = [e["val_auroc"] for e in R.read_epochs(tmp_path / "run")]
    improved = sum(1 for i, v in enumerate(auroc) if v > max(auroc[:i], default=float("-inf")))
    assert writes.count("best.safetensors") == improved
    assert rec["selected_epoch"] == max(range(len(auroc)), key=lambda i: (auroc[i], -i))
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert ck.threshold == pytest.approx(rec["threshold"])  # the sidecar has the final threshold


def test_batched_passes_equal_separate_passes(small_cache):
    """One pass over the test set with the plain and two flipped views stacked in one forward scores exactly
    what three separate evaluations do, and leaves each flip generator where its own pass would."""
    import torch

    from fracbench.data.loader import BatchLoader
    from fracbench.models import create_model

    torch.manual_seed(0)
    model = create_model("tiny_cnn", num_classes=2, in_channels=3, image_size=48)
    rows = small_cache.indices("test")
    dev = torch.device("cpu")

    def gens():
        return [torch.Generator().manual_seed(11), torch.Generator().manual_seed(12)]

    sep_g, one_g = gens(), gens()
    loader = BatchLoader(small_cache, rows, 8, 3)
    separate = [T.evaluate(model, loader, dev)] + [T.evaluate(model, loader, dev, flip_generator=g) for g in sep_g]
    kept = BatchLoader(small_cache, rows, 8, 3, keep=True)
    together = T.evaluate_passes(model, kept, dev, [None, *one_g], forward_batch=10_000)
    for a, b in zip(separate, together, strict=True):
        assert (a["scores"] == b["scores"]).all() and a["correct"] == b["correct"] and a["loss"] == b["loss"]
        assert (a["rows"] == b["rows"]).all()
    for a, b in zip(sep_g, one_g, strict=True):
        assert torch.equal(a.get_state(), b.get_state())
    # the CPU's way: each view forwarded on its own, in chunks (3 images) smaller than the batch
    for cap in (8, 3):
        chunked = T.evaluate_passes(model, kept, dev, [None, *gens()], forward_batch=cap)
        for a, b in zip(separate, chunked, strict=True):
            assert (a["scores"] == b["scores"]).all() and a["correct"] == b["correct"]
    # the kept loader reads the cache once: a second pass reuses its batches
    kept._read = None  # type: ignore[method-assign]
    again = T.evaluate(model, kept, dev)
    assert (again["scores"] == separate[0]["scores"]).all()
