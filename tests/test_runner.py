"""fracbench run: skip current records, record failures and go on, lock, default dataset message."""

from __future__ import annotations

import json

import pytest

from fracbench import results as R
from fracbench.data.synthetic import SyntheticSpec, generate
from fracbench.runs.runner import ResultsLocked, results_lock, run_experiments
from fracbench.training.experiments import Experiment


def _exp(name: str, model: str = "tiny_cnn", **config) -> Experiment:
    cfg = {"image_size": 32, "epochs": 1, "batch_size": 16, "n_boot": 20, **config}
    return Experiment(name=name, title=name, model=model, protocol="honest", config=cfg, seeds=(0,),
                      citation="test", profiles={"smoke": {}})


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "data"
    generate(SyntheticSpec(count=80, size=48, seed=1), root)
    return root


def test_run_skips_current_records_and_records_failures(syn, tmp_path):
    exps = [_exp("ok_one"), _exp("broken", model="tiny_cnn", lr=-1.0)]
    out = run_experiments(exps, dataset="synthetic", data_dir=str(syn), profile="smoke", results=tmp_path,
                          progress=False)
    status = {o.experiment: o.status for o in out}
    assert status == {"ok_one": "complete", "broken": "failed"}
    failed = json.loads((R.run_dir(tmp_path, "broken", 0) / R.RECORD).read_text())
    assert failed["status"] == "failed" and failed["error"]
    assert (tmp_path / "manifests" / "synthetic.csv").exists()
    assert (tmp_path / "data" / "synthetic.json").exists()
    again = run_experiments(exps[:1], dataset="synthetic", data_dir=str(syn), profile="smoke", results=tmp_path,
                            progress=False)
    assert again[0].status == "skipped"
    # a changed config is not current: it reruns
    rerun = run_experiments([_exp("ok_one", epochs=2)], dataset="synthetic", data_dir=str(syn), profile="smoke",
                            results=tmp_path, progress=False)
    assert rerun[0].status == "complete" and rerun[0].record["epochs_run"] == 2


def test_lock_refuses_a_second_writer(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    # flock locks are per open file description: a second process must be refused while we hold it
    code = ("import sys; from pathlib import Path; from fracbench.runs.runner import results_lock, ResultsLocked\n"
            "try:\n  ctx = results_lock(Path(sys.argv[1])); ctx.__enter__(); print('got it')\n"
            "except ResultsLocked as e: print('locked:', e)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # this checkout's fracbench

    def second_writer() -> str:
        return subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                              timeout=60, env=env).stdout

    with results_lock(tmp_path):
        out = second_writer()
        assert "locked:" in out and "another `fracbench run`" in out and "got it" not in out
        # in this process too: a second results_lock opens its own file description and is refused
        with pytest.raises(ResultsLocked, match="another `fracbench run`"):
            with results_lock(tmp_path):
                pass
    # released: another process can take it now, and so can we
    out = second_writer()
    assert "got it" in out and "locked:" not in out
    with results_lock(tmp_path):
        pass


@pytest.mark.slow
def test_cli_run_smoke_on_given_synthetic(syn, tmp_path, capsys):
    from fracbench.cli import main

    code = main(["run", "paper_cnn_honest", "--profile", "smoke", "--dataset", "synthetic", "--data-dir", str(syn),
                 "--results", str(tmp_path), "--quiet"])
    assert code == 0
    assert (R.run_dir(tmp_path, "paper_cnn_honest", 0) / R.RECORD).exists()
    assert (tmp_path / "tables" / "table1.md").exists()


def test_unknown_experiment_suggests(capsys):
    from fracbench.cli import main

    assert main(["run", "paper_cnn_honst", "--quiet"]) == 2
    assert "paper_cnn_honest" in capsys.readouterr().err


@pytest.mark.slow
def test_run_all_smoke_profile(tmp_path, monkeypatch):
    """The CI-sized main job: every registered experiment, smoke profile, embedded synthetic data."""
    from fracbench.cli import main
    from fracbench.training.experiments import load_all

    monkeypatch.setenv("FRACBENCH_DATA", str(tmp_path / "no-data"))  # nothing downloaded: synthetic default
    assert main(["run", "--all", "--profile", "smoke", "--results", str(tmp_path / "res"), "--quiet"]) == 0
    from fracbench.runs.runner import suite

    ran = {p.parent.name for p in (tmp_path / "res" / "runs").glob("*/seed0")}
    reg = load_all()
    expected = suite([reg.get(n) for n in reg.list()], "synthetic")
    # every experiment made for no particular dataset ran; those made for one (multiregion's) did not
    assert expected and all(not e.datasets for e in expected)
    for exp in expected:
        assert any(r == exp.name or r.startswith(exp.name + "__") for r in ran), exp.name
    assert not any(r.startswith("multiregion_") for r in ran)
    assert (tmp_path / "res" / "tables" / "claims.md").exists()


def _pair(name: str, protocol: str, **config) -> Experiment:
    cfg = {"image_size": 32, "epochs": 1, "batch_size": 16, "n_boot": 20, **config}
    return Experiment(name=name, title=name, model="tiny_cnn", protocol=protocol, config=cfg, seeds=(0,),
                      citation="test", profiles={"smoke": {}})


def test_shared_groups_pair_only_protocol_twins():
    from fracbench.runs.runner import shared_groups

    a, h = _pair("a", "as_published"), _pair("h", "honest")
    other_lr = _pair("h_lr", "honest", lr=0.01)
    twin = _pair("h2", "honest")  # same config and protocol as h: a duplicate, not a twin of it
    names = [[e.name for e in g] for g in shared_groups([a, other_lr, h, twin], "smoke")]
    assert names == [["a", "h"], ["h_lr"], ["h2"]]
    opts = Experiment(**{**a.__dict__, "name": "a_opt", "options": {"split": "grouped"}})
    kind = Experiment(**{**h.__dict__, "name": "h_kind", "kind": "protocol_inflation"})
    assert [[e.name for e in g] for g in shared_groups([opts, h, kind], "smoke")] == [["a_opt"], ["h"], ["h_kind"]]
    seeds = Experiment(**{**h.__dict__, "name": "h_seeds", "seeds": (0, 1)})
    assert [[e.name for e in g] for g in shared_groups([a, seeds], "smoke")] == [["a"], ["h_seeds"]]


def test_run_trains_protocol_twins_once(syn, tmp_path, monkeypatch):
    from fracbench.training import train as T

    calls = {"n": 0}
    real = T.train_one_epoch

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "train_one_epoch", counting)
    exps = [_pair("twin_pub", "as_published"), _pair("twin_hon", "honest")]
    kw = dict(dataset="synthetic", data_dir=str(syn), profile="smoke", results=tmp_path, progress=False)
    out = run_experiments(exps, **kw)
    assert [(o.experiment, o.status) for o in out] == [("twin_pub", "complete"), ("twin_hon", "complete")]
    assert calls["n"] == 1  # one epoch, trained once for both records
    recs = {o.experiment: json.loads((R.run_dir(tmp_path, o.experiment, 0) / R.RECORD).read_text()) for o in out}
    assert recs["twin_pub"]["trajectory_shared_with"] == ["twin_hon"]
    assert recs["twin_hon"]["trajectory_shared_with"] == ["twin_pub"]
    assert recs["twin_pub"]["protocol"] == "as_published" and recs["twin_hon"]["protocol"] == "honest"
    assert recs["twin_hon"]["table"] == "" and recs["twin_hon"]["profile"] == "smoke"
    # both current: nothing trains; one missing: it runs alone
    assert [o.status for o in run_experiments(exps, **kw)] == ["skipped", "skipped"]
    (R.run_dir(tmp_path, "twin_hon", 0) / R.RECORD).unlink()
    again = run_experiments(exps, **kw)
    assert [o.status for o in again] == ["skipped", "complete"] and calls["n"] == 2
    assert "trajectory_shared_with" not in again[1].record


def test_an_external_test_finds_only_a_finished_fit_of_its_config_and_manifest(tmp_path):
    """run_external scores a run folder's fit only when its record is complete, of the same config and
    manifest, not itself a scored fit, and its checkpoint is there."""
    from types import SimpleNamespace

    from fracbench.config import TrainConfig
    from fracbench.runs.runner import _finished_fit

    cfg = TrainConfig(model="tiny_cnn", image_size=32, protocol="honest", device="cpu")
    manifest = SimpleNamespace(fingerprint="m" * 64)
    ctx = SimpleNamespace(results=tmp_path)

    def put(name: str, seed: int = 0, checkpoint: bool = True, **rec) -> None:
        out = R.run_dir(tmp_path, name, seed)
        out.mkdir(parents=True)
        base = {"schema_version": R.SCHEMA_VERSION, "status": "complete", "manifest_sha256": manifest.fingerprint,
                "config": cfg.to_dict()}
        (out / R.RECORD).write_text(json.dumps({**base, **rec}))
        if checkpoint:
            (out / "checkpoints").mkdir()
            (out / "checkpoints" / "best.safetensors").write_bytes(b"x")

    assert _finished_fit(ctx, cfg, manifest, 0) is None
    put("a_other_lr", config=cfg.replace(lr=0.5).to_dict())
    put("b_other_manifest", manifest_sha256="n" * 64)
    put("c_failed", status="failed")
    put("d_no_checkpoint", checkpoint=False)
    put("e_scored", trained_by={"experiment": "x"})
    put("f_other_seed", seed=1)
    assert _finished_fit(ctx, cfg, manifest, 0) is None
    put("g_the_fit")
    assert _finished_fit(ctx, cfg, manifest, 0) == R.run_dir(tmp_path, "g_the_fit", 0)
    assert _finished_fit(ctx, cfg, manifest, 1) == R.run_dir(tmp_path, "f_other_seed", 1)
