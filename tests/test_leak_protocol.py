"""The leak demonstration and protocol inflation: derived manifests, runner kinds, records and tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracbench import results as R
from fracbench.claims.inflation import build_mixed_tree, protocol_effects
from fracbench.claims.leak import VARIANTS, build_leak_set, leak_stats, select_sources
from fracbench.data import prepare
from fracbench.data.cache import build_cache
from fracbench.data.synthetic import SyntheticSpec, generate
from fracbench.runs.runner import EXPERIMENT_KINDS, run_experiments
from fracbench.training.experiments import Experiment, load_all


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "data"
    generate(SyntheticSpec(count=80, size=64), root)
    return root


@pytest.fixture(scope="module")
def prepared(syn):
    return prepare("synthetic", syn, progress=False)


def _sources_by_split(manifest) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in manifest.rows:
        out.setdefault(r.group, set()).add(r.split)
    return out


def test_leak_manifests_group_or_leak(prepared, tmp_path) -> None:
    cache = build_cache(prepared.manifest, 32, progress=False)
    ls = build_leak_set(prepared.manifest, cache.array, size=32, sources=40, balance=True, root=tmp_path / "copies")
    assert ls.copies == ("identity", "rot90", "hflip", "rot270") and ls.sources == 40
    for m in (ls.naive, ls.grouped):
        assert len(m.rows) == 160 and {r.split for r in m.rows} == {"train", "val", "test"}
    # (b): no source has copies in two splits; (a): copies of one source do cross
    assert all(len(s) == 1 for s in _sources_by_split(ls.grouped).values())
    assert sum(len(s) > 1 for s in _sources_by_split(ls.naive).values()) > 10
    assert leak_stats(ls.grouped)["test_images_with_a_copy_in_train"] == 0
    assert leak_stats(ls.naive)["test_share_with_a_copy_in_train"] > 0.5
    # the copies are the named transforms of the decoded source, stored losslessly
    src = next(i for i, r in enumerate(prepared.manifest.rows) if f"{r.id}__rot90" in {x.id for x in ls.naive.rows})
    row = {r.id: r for r in ls.naive.rows}[f"{prepared.manifest.rows[src].id}__rot90"]
    got = np.asarray(Image.open(ls.naive.abspath(row)))
    assert np.array_equal(got, np.rot90(np.asarray(cache.array[src])))
    assert row.sha256 and row.path.endswith(".png")
    # balanced draw of the sources; the same draw every time
    assert select_sources(prepared.manifest.rows, 40, True) == select_sources(prepared.manifest.rows, 40, True)
    labels = [prepared.manifest.rows[i].label for i in select_sources(prepared.manifest.rows, 40, True)]
    assert sum(labels) == 20
    # the same request reuses the files
    again = build_leak_set(prepared.manifest, cache.array, size=32, sources=40, balance=True, root=tmp_path / "copies")
    assert again.naive.fingerprint == ls.naive.fingerprint and again.grouped.fingerprint == ls.grouped.fingerprint


def test_protocol_effects_from_logs() -> None:
    epochs = [{"epoch": 0, "test_accuracy": 0.70, "test_accuracy_flip": 0.71, "val_auroc": 0.60},
              {"epoch": 1, "test_accuracy": 0.80, "test_accuracy_flip": 0.78, "val_auroc": 0.75},
              {"epoch": 2, "test_accuracy": 0.85, "test_accuracy_flip": 0.86, "val_auroc": 0.70},
              {"epoch": 3, "test_accuracy": 0.85, "test_accuracy_flip": 0.90, "val_auroc": 0.65}]
    fx = protocol_effects(epochs, selected_epoch=1, mixed={"n": 30, "jpg": 20, "correct": 18})
    assert fx["test_selected_epoch"] == 2  # the first best, as the tutorial's strict '>'
    assert fx["test_selection"] == pytest.approx(0.05)
    assert fx["test_time_flip"] == pytest.approx(-0.02)
    assert fx["selection_and_flip"] == pytest.approx(0.10)
    assert fx["mixed_accuracy"] == pytest.approx(0.6) and fx["mixed_accuracy_as_counted"] == pytest.approx(0.9)
    assert fx["jpg_denominator"] == pytest.approx(0.3)


def test_mixed_tree_has_a_third_png(prepared, tmp_path) -> None:
    tree = build_mixed_tree(prepared.manifest, 1 / 3, root=tmp_path / "mix")
    test = [r for r in prepared.manifest.rows if r.split == "test"]
    assert len(tree.rows) == len(test)
    n_png = sum(r.path.endswith(".png") for r in tree.rows)
    assert n_png == round(len(test) / 3) and sum(r.path.endswith(".jpg") for r in tree.rows) == len(test) - n_png
    assert all(tree.abspath(r).exists() for r in tree.rows)
    assert {r.split for r in tree.rows} == {"test"}


def test_every_registered_experiment_has_a_runner_kind() -> None:
    reg = load_all()
    for name in reg:
        assert reg.get(name).kind in EXPERIMENT_KINDS, name
    assert reg.get("leak_demo").kind == "leak_demo"
    assert reg.get("protocol_inflation").kind == "protocol_inflation"
    assert reg.get("paper_cnn_honest").kind == "train"
    leak = reg.get("leak_demo")
    assert leak.options_for("full")["sources"] == 0 and leak.options_for("smoke")["sources"] == 60
    assert "options" not in leak.train_config("smoke").to_dict()
    assert len(reg.get("protocol_inflation").seeds_for("cpu")) >= 5


def test_unknown_kind_is_recorded_as_failed(syn, tmp_path) -> None:
    exp = Experiment(name="odd", title="odd", model="tiny_cnn", protocol="honest", config={"epochs": 1},
                     seeds=(0,), citation="test", kind="no_such_kind")
    out = run_experiments([exp], dataset="synthetic", data_dir=str(syn), profile="smoke", results=tmp_path,
                          progress=False)
    assert out[0].status == "failed" and "no_such_kind" in out[0].error
    assert json.loads((R.run_dir(tmp_path, "odd", 0) / R.RECORD).read_text())["status"] == "failed"


@pytest.mark.slow
def test_leak_demo_runner_records_and_table(syn, tmp_path) -> None:
    import dataclasses

    # the registered experiment, made lighter still than its smoke profile: 4 fits must stay quick
    exp = dataclasses.replace(load_all().get("leak_demo"), model="tiny_cnn", profiles={
        "smoke": {"epochs": 1, "image_size": 32, "n_boot": 20, "seeds": [0], "options": {"sources": 32,
                                                                                       "balance": True}}})
    out = run_experiments([exp], dataset="synthetic", data_dir=str(syn), profile="smoke", results=tmp_path,
                          progress=False)
    assert sorted(o.experiment for o in out) == sorted(f"leak_demo__{v}" for v in VARIANTS)
    assert {o.status for o in out} == {"complete"}
    for variant, (split, protocol) in VARIANTS.items():
        rec = json.loads((R.run_dir(tmp_path, f"leak_demo__{variant}", 0) / R.RECORD).read_text())
        assert rec["protocol"] == protocol and rec["leak"]["split"] == split
        assert rec["dataset"] == "synthetic+4copies" and rec["kind"] == "leak_demo" and rec["parent"] == "leak_demo"
        if split == "grouped":
            assert rec["leak"]["sources_crossing_splits"] == 0
        else:
            assert rec["leak"]["sources_crossing_splits"] > 0
        # its manifest is committed beside the run's: the group-bootstrap intervals recompute from files
        assert R.manifest_rows(R.run_dir(tmp_path, f"leak_demo__{variant}", 0), rec["manifest_sha256"]) is not None
    from fracbench.claims.tables import leaderboard, leak_table, load_experiments, load_runs, write_tables

    runs, exps = load_runs(tmp_path), load_experiments()
    t = leak_table(runs, exps)
    assert "majority-class" in " ".join(t.columns) and "balanced" in " ".join(t.columns)
    assert [r[1] for r in t.rows[:4]] == ["(a) image-level random"] * 2 + ["(b) grouped by source image"] * 2
    assert all(r[6] not in ("not run", "failed") for r in t.rows[:4])
    # a smoke run's few test images are no evidence of a leak effect either way (issue 14)
    assert t.rows[4][1].startswith("(a) − (b)") and t.rows[4][6].startswith("no evidence (")
    lb = leaderboard(runs, exps)
    assert {f"leak_demo__{v}" for v in VARIANTS} <= {r[0] for r in lb.rows}
    paths = write_tables(tmp_path)
    assert tmp_path / "tables" / "leak.md" in paths
    claims = (tmp_path / "tables" / "claims.md").read_text()
    assert "image-level split of rotated/flipped copies" in claims
    # a second run finds every record current
    again = run_experiments([exp], dataset="synthetic", data_dir=str(syn), profile="smoke", results=tmp_path,
                            progress=False)
    assert {o.status for o in again} == {"skipped"}


def test_protocol_inflation_runner_records_and_table(syn, tmp_path) -> None:
    exp = load_all().get("protocol_inflation")
    out = run_experiments([exp], dataset="synthetic", data_dir=str(syn), profile="smoke", results=tmp_path,
                          progress=False)
    assert [(o.experiment, o.status) for o in out] == [("protocol_inflation", "complete")]
    d = R.run_dir(tmp_path, "protocol_inflation", 0)
    epochs = R.read_epochs(d)
    assert all({"test_accuracy", "test_accuracy_flip", "val_auroc"} <= set(e) for e in epochs)
    rec = json.loads((d / R.RECORD).read_text())
    fx = rec["protocol_effects"]
    assert fx["val_selected_epoch"] == rec["selected_epoch"]
    assert fx["mixed_png"] == round(fx["mixed_images"] / 3) and fx["mixed_jpg"] + fx["mixed_png"] == fx["mixed_images"]
    # the tutorial's denominator overstates: correct / jpg count > correct / n whenever anything is correct
    assert fx["jpg_denominator"] == pytest.approx(fx["mixed_correct"] / fx["mixed_jpg"]
                                                  - fx["mixed_correct"] / fx["mixed_images"])
    from fracbench.claims.tables import claims_table, load_claims, load_experiments, load_runs, protocol_table

    runs, exps = load_runs(tmp_path), load_experiments()
    t = protocol_table(runs, exps)
    summary = next(r for r in t.rows if r[1] == "effect over seeds")
    assert "fracbench majority-class acc" in t.columns
    assert summary[t.columns.index("(i) choosing on test (both changes)")].startswith("no evidence (1 seed(s)")
    claims = claims_table(runs, exps, load_claims())
    effect_rows = {r[0]: r for r in claims.rows if r[7] == "protocol effect"}
    assert {"effect_checkpoint_chosen_on_test", "effect_test_time_flip"} <= set(effect_rows)
    # the .jpg effect is measured on real folders from as-published records; none ran here
    jpg = next(r for r in claims.rows if r[0] == "effect_jpg_denominator")
    assert jpg[7] == "not comparable" and "as-published record" in jpg[8]
    again = run_experiments([exp], dataset="synthetic", data_dir=str(syn), profile="smoke", results=tmp_path,
                            progress=False)
    assert again[0].status == "skipped"


def _interrupted_then_resumed(exp, syn: Path, results: Path, monkeypatch, cut_at: int, total_epochs: int) -> None:
    """Run ``exp``, killed (KeyboardInterrupt) right after the ``cut_at``-th epoch's resume state is saved; rerun.

    The rerun must train only the epochs not yet saved (it resumes, rather than starting again).
    """
    from fracbench.training import train as T

    real_save = T._save_last
    calls = {"n": 0}

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == cut_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "_save_last", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run_experiments([exp], dataset="synthetic", data_dir=str(syn), profile="smoke", results=results, progress=False)
    monkeypatch.setattr(T, "_save_last", real_save)
    real_epoch = T.train_one_epoch
    trained = {"n": 0}

    def counted_epoch(*args, **kwargs):
        trained["n"] += 1
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(T, "train_one_epoch", counted_epoch)
    out = run_experiments([exp], dataset="synthetic", data_dir=str(syn), profile="smoke", results=results,
                          progress=False)
    assert {o.status for o in out} <= {"complete", "skipped"} and "complete" in {o.status for o in out}
    assert trained["n"] == total_epochs - cut_at


def _same_run(a: Path, b: Path) -> None:
    ra, rb = R.read_record(a), R.read_record(b)
    assert ra is not None and rb is not None
    for key in ("metrics", "selected_epoch", "epochs_run", "threshold", "counts", "leak", "protocol_effects"):
        assert json.dumps(ra.get(key), sort_keys=True) == json.dumps(rb.get(key), sort_keys=True), (a, key)
    volatile = {"seconds", "images_per_second"}
    assert [{k: v for k, v in e.items() if k not in volatile} for e in R.read_epochs(a)] == \
        [{k: v for k, v in e.items() if k not in volatile} for e in R.read_epochs(b)]
    assert (a / R.PREDICTIONS).read_bytes() == (b / R.PREDICTIONS).read_bytes()


@pytest.mark.slow
def test_leak_demo_resumes_to_the_uninterrupted_records(syn, tmp_path, monkeypatch) -> None:
    import dataclasses

    exp = dataclasses.replace(load_all().get("leak_demo"), model="tiny_cnn", profiles={
        "smoke": {"epochs": 2, "image_size": 32, "n_boot": 20, "seeds": [0], "options": {"sources": 24,
                                                                                       "balance": True}}})
    run_experiments([exp], dataset="synthetic", data_dir=str(syn), profile="smoke", results=tmp_path / "full",
                    progress=False)
    # 2 epochs per variant: the 3rd save is epoch 0 of the second variant (naive, honest)
    _interrupted_then_resumed(exp, syn, tmp_path / "cut", monkeypatch, cut_at=3, total_epochs=8)
    for v in VARIANTS:
        _same_run(R.run_dir(tmp_path / "full", f"leak_demo__{v}", 0), R.run_dir(tmp_path / "cut", f"leak_demo__{v}", 0))


@pytest.mark.slow
def test_protocol_inflation_resumes_to_the_uninterrupted_record(syn, tmp_path, monkeypatch) -> None:
    import dataclasses

    exp = dataclasses.replace(load_all().get("protocol_inflation"), model="tiny_cnn", profiles={
        "smoke": {"epochs": 3, "image_size": 32, "n_boot": 20, "seeds": [0]}})
    run_experiments([exp], dataset="synthetic", data_dir=str(syn), profile="smoke", results=tmp_path / "full",
                    progress=False)
    _interrupted_then_resumed(exp, syn, tmp_path / "cut", monkeypatch, cut_at=1, total_epochs=3)
    _same_run(R.run_dir(tmp_path / "full", "protocol_inflation", 0), R.run_dir(tmp_path / "cut", "protocol_inflation", 0))
