"""One training trajectory, both protocols: ``fit_shared`` writes the records two separate runs would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import die_after_saves

from fracbench import results as R
from fracbench.config import TrainConfig
from fracbench.data import prepare
from fracbench.data.cache import build_cache
from fracbench.data.synthetic import SyntheticSpec, generate
from fracbench.training import train as T

# what differs between two runs of one config by nature (clocks) or by design (the sibling's name)
VOLATILE_RECORD = {"created", "train_seconds", "images_per_second", "trajectory_shared_with"}
VOLATILE_EPOCH = {"seconds", "images_per_second"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("traj")
    generate(SyntheticSpec(count=120, size=48, seed=5), root / "data")
    p = prepare("synthetic", root / "data", progress=False)
    return build_cache(p.manifest, 32, progress=False)


def _cfg(protocol: str, **kw) -> TrainConfig:
    base = dict(model="tiny_cnn", image_size=32, epochs=4, batch_size=16, n_boot=30, device="cpu",
                protocol=protocol)
    base.update(kw)
    return TrainConfig(**base)


def _specs(root: Path, **kw) -> list[T.RunSpec]:
    return [T.RunSpec(_cfg(p, **kw), root / p, f"exp_{p}", {"table": "t"}) for p in ("as_published", "honest")]


def _separate(root: Path, cache, **kw) -> list[dict]:
    return [T.fit(s.cfg, cache, s.out_dir, experiment=s.experiment, extra=s.extra, progress=False)
            for s in _specs(root, **kw)]


def _same(a, b) -> bool:
    """Equal, with NaN equal to NaN (an undefined PPV on a tiny test set is NaN in both runs)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _comparable(out: Path) -> str:
    """A run folder's record, epoch log (both without clock fields), predictions and config, as one string."""
    rec = json.loads((out / R.RECORD).read_text())
    epochs = [{k: v for k, v in e.items() if k not in VOLATILE_EPOCH} for e in R.read_epochs(out)]
    return json.dumps([{k: v for k, v in rec.items() if k not in VOLATILE_RECORD}, epochs,
                       (out / R.PREDICTIONS).read_text(), (out / R.CONFIG).read_text()], sort_keys=True)


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{}, {"early_stopping": 1, "epochs": 5}, {"log_test_each_epoch": False}],
                         ids=["default", "early-stopping", "no-test-log"])
def test_shared_trajectory_equals_two_separate_runs(cache, tmp_path, kw):
    separate = _separate(tmp_path / "sep", cache, **kw)
    shared = T.fit_shared(_specs(tmp_path / "joint", **kw), cache, progress=False)
    for sep, joint, p in zip(separate, shared, ("as_published", "honest")):
        assert joint["protocol"] == p
        for key in ("metrics", "selected_epoch", "threshold", "epochs_run", "counts"):
            assert _same(joint[key], sep[key]), (p, key)
        assert _comparable(tmp_path / "joint" / p) == _comparable(tmp_path / "sep" / p), p
        # the selected checkpoints hold the same weights
        a = (tmp_path / "joint" / p / "checkpoints" / "best.safetensors")
        b = (tmp_path / "sep" / p / "checkpoints" / "best.safetensors")
        from safetensors.torch import load_file

        wa, wb = load_file(str(a)), load_file(str(b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), p
        assert not (tmp_path / "joint" / p / "checkpoints" / T.LAST).exists()
    assert shared[0]["trajectory_shared_with"] == ["exp_honest"]
    assert shared[1]["trajectory_shared_with"] == ["exp_as_published"]
    assert "trajectory_shared_with" not in separate[0]


def test_shared_trajectory_resumes_after_a_kill(cache, tmp_path, monkeypatch):
    full = T.fit_shared(_specs(tmp_path / "full"), cache, progress=False)
    die_after_saves(monkeypatch, 2)  # killed right after epoch 1 was saved
    specs = _specs(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        T.fit_shared(specs, cache, progress=False)
    monkeypatch.undo()  # the real _save_last again
    fp = cache.manifest.fingerprint
    first = specs[0].out_dir
    assert T.resumable(first, [s.cfg for s in specs], fp)
    assert not T.resumable(first, specs[0].cfg, fp)  # a joint resume file is not a single run's
    with pytest.raises(ValueError, match="another config"):
        T.fit(specs[0].cfg, cache, first, resume=True, progress=False)
    torch.manual_seed(999)  # whatever the global generator holds now must not matter
    resumed = T.fit_shared(specs, cache, resume=True, progress=False)
    for a, b, p in zip(full, resumed, ("as_published", "honest")):
        assert _same(a["metrics"], b["metrics"]) and a["selected_epoch"] == b["selected_epoch"]
        assert _comparable(tmp_path / "full" / p) == _comparable(tmp_path / "cut" / p), p
    assert not (first / "checkpoints" / T.LAST).exists()


def test_shares_trajectory_only_when_protocol_alone_differs(cache, tmp_path):
    assert T.shares_trajectory(_cfg("as_published"), _cfg("honest"))
    assert not T.shares_trajectory(_cfg("honest"), _cfg("honest"))
    assert not T.shares_trajectory(_cfg("as_published"), _cfg("honest", lr=0.01))
    assert not T.shares_trajectory(_cfg("as_published"), _cfg("honest", seed=1))
    bad = [T.RunSpec(_cfg("as_published"), tmp_path / "a"), T.RunSpec(_cfg("honest", epochs=2), tmp_path / "b")]
    with pytest.raises(ValueError, match="more than the protocol"):
        T.fit_shared(bad, cache, progress=False)
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------ score_fit: another test set, no training


def _other_test_set(cache):
    """The cache's train and val rows with only the even test rows: another test set, the same fit inputs."""
    from fracbench.data.manifest import Manifest

    m = cache.manifest
    tests = [r for r in m.rows if r.split == "test"]
    rows = [r for r in m.rows if r.split != "test"] + tests[::2]
    other = Manifest(m.dataset, m.root, rows)
    assert other.fingerprint != m.fingerprint and len(tests[::2]) < len(tests)
    return build_cache(other, cache.size, progress=False)


@pytest.mark.slow
def test_score_fit_writes_what_a_separate_fit_on_the_other_test_set_writes(cache, tmp_path):
    other = _other_test_set(cache)
    cfg = _cfg("honest")
    # the reference: a fit of its own on the other test set (trained again from scratch)
    sep = T.fit(cfg, other, tmp_path / "sep", experiment="ext", extra={"table": "t"}, progress=False)
    T.fit(cfg, cache, tmp_path / "src", experiment="grouped", progress=False)
    got = T.score_fit(T.RunSpec(cfg, tmp_path / "scored", "ext", {"table": "t"}), other, tmp_path / "src",
                      cache.manifest)
    for key in ("metrics", "selected_epoch", "threshold", "epochs_run", "counts", "manifest_sha256", "config"):
        assert _same(got[key], sep[key]), key
    assert (tmp_path / "scored" / R.PREDICTIONS).read_text() == (tmp_path / "sep" / R.PREDICTIONS).read_text()
    assert got["trained_by"]["experiment"] == "grouped" and "trained_by" not in sep
    # the epoch log is the fit's training and validation record; the other test set's per-epoch scores were
    # never computed, so none are claimed
    strip = lambda es: [{k: v for k, v in e.items() if k not in VOLATILE_EPOCH and not k.startswith("test_")}  # noqa: E731
                        for e in es]
    scored_epochs = R.read_epochs(tmp_path / "scored")
    assert strip(scored_epochs) == strip(R.read_epochs(tmp_path / "sep"))
    assert not any(k.startswith("test_") for e in scored_epochs for k in e)


@pytest.mark.slow
def test_score_fit_refuses_a_fit_that_cannot_stand_in(cache, tmp_path):
    from safetensors.torch import load_file, save_file

    from fracbench.data.manifest import Manifest

    other = _other_test_set(cache)
    cfg = _cfg("honest")
    T.fit(cfg, cache, tmp_path / "src", experiment="grouped", progress=False)
    spec = lambda c=cfg: T.RunSpec(c, tmp_path / "out", "ext")  # noqa: E731
    with pytest.raises(ValueError, match="another config"):
        T.score_fit(spec(cfg.replace(lr=cfg.lr * 2)), other, tmp_path / "src", cache.manifest)
    with pytest.raises(ValueError, match="looks at the test set"):
        T.score_fit(spec(cfg.replace(protocol="as_published")), other, tmp_path / "src", cache.manifest)
    # one training image fewer: another trajectory
    m = other.manifest
    first_train = next(i for i, r in enumerate(m.rows) if r.split == "train")
    fewer = build_cache(Manifest(m.dataset, m.root, m.rows[:first_train] + m.rows[first_train + 1:]), cache.size,
                        progress=False)
    with pytest.raises(ValueError, match="other training images"):
        T.score_fit(spec(), fewer, tmp_path / "src", cache.manifest)
    # a checkpoint that is not the fit's own (its validation scores differ from the record's)
    best = tmp_path / "src" / "checkpoints" / "best.safetensors"
    w = load_file(str(best))
    k = next(k for k in w if w[k].is_floating_point() and w[k].numel() > 1)
    w[k] = w[k] + torch.randn_like(w[k])
    save_file(w, str(best))
    with pytest.raises(ValueError, match="not the fit's checkpoint"):
        T.score_fit(spec(), other, tmp_path / "src", cache.manifest)
    assert not (tmp_path / "out" / R.RECORD).exists()
    best.unlink()
    with pytest.raises(ValueError, match="checkpoint is missing"):
        T.score_fit(spec(), other, tmp_path / "src", cache.manifest)
