"""The demo's default checkpoint never comes from the leak demonstration.

The leak demo's naive split puts rotated copies of one image in train and validation, so its
validation AUROC is the best under results/ by construction; the demo must pick the best honest
checkpoint instead. The checkpoints and records are written here as ``fit()`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fracbench.models import create_model
from fracbench.serving.checkpoint import save_checkpoint
from fracbench.serving.predict import best_checkpoint


def _run(results: Path, experiment: str, dataset: str, val_auroc: float, *, kind: str = "train",
         sidecar_dataset: bool = True, leak: dict | None = None) -> Path:
    run = results / "runs" / experiment / "seed0"
    run.mkdir(parents=True)
    record = {"schema_version": 1, "experiment": experiment, "dataset": dataset, "kind": kind, "status": "complete",
              "protocol": "honest", "metrics": {"val": {"auroc": val_auroc}, "test": {"auroc": val_auroc - 0.05}}}
    if kind == "leak_demo":
        record["leak"] = {"split": "naive", "sources_crossing_splits": 12}
    if leak is not None:
        record["leak"] = leak
    (run / "record.json").write_text(json.dumps(record))
    extra = {"experiment": experiment, "protocol": "honest", "test_auroc": val_auroc - 0.05, "val_auroc": val_auroc}
    if sidecar_dataset:
        extra["dataset"] = dataset
    torch.manual_seed(0)
    return save_checkpoint(run / "checkpoints" / "best", create_model("tiny_cnn", image_size=32), model_name="tiny_cnn",
                           model_kwargs={}, image_size=32, channels=3, threshold=0.3, record="../record.json",
                           extra=extra)


def test_the_leaked_best_validation_auroc_is_not_chosen(tmp_path: Path) -> None:
    honest = _run(tmp_path, "paper_cnn_honest", "synthetic", 0.70)
    other = _run(tmp_path, "ref_resnet18", "synthetic", 0.66)
    leaked = _run(tmp_path, "leak_demo__naive_honest", "synthetic+4copies", 0.99, kind="leak_demo")
    assert best_checkpoint(tmp_path) == honest
    assert leaked.exists() and other.exists()
    # and the honest choice does follow validation AUROC: a better honest run wins
    better = _run(tmp_path, "stand_in_rao14", "synthetic", 0.80)
    assert best_checkpoint(tmp_path) == better


def test_only_leak_demo_checkpoints_means_none(tmp_path: Path) -> None:
    _run(tmp_path, "leak_demo__naive_honest", "synthetic+4copies", 0.99, kind="leak_demo")
    _run(tmp_path, "leak_demo__grouped_honest", "synthetic+4copies", 0.60, kind="leak_demo")
    assert best_checkpoint(tmp_path) is None  # the demo then trains its own small model and says so


def test_a_leak_demo_record_without_a_sidecar_dataset_is_not_chosen(tmp_path: Path) -> None:
    honest = _run(tmp_path, "paper_cnn_honest", "synthetic", 0.70)
    _run(tmp_path, "leak_demo__naive_honest", "synthetic+4copies", 0.99, kind="leak_demo", sidecar_dataset=False)
    assert best_checkpoint(tmp_path) == honest


def test_a_split_with_copies_across_it_is_never_chosen(tmp_path: Path) -> None:
    """multiregion's published split: val and test hold copies of training images, so its val AUROC leaks."""
    honest = _run(tmp_path, "multiregion_grouped_honest", "multiregion", 0.70)
    leaky = _run(tmp_path, "multiregion_published_honest", "multiregion", 0.99)
    rec_path = leaky.parent.parent / "record.json"
    rec = json.loads(rec_path.read_text())
    rec["leak"] = {"split": "published", "test_near_in_train": 400, "test_images": 496}
    rec_path.write_text(json.dumps(rec))
    assert best_checkpoint(tmp_path) == honest
    # a split-mode experiment is never the default, even where no copy was counted: the published split
    # holds copies across train/test by construction
    rec["leak"]["test_near_in_train"] = 0
    rec_path.write_text(json.dumps(rec))
    assert best_checkpoint(tmp_path) == honest


def test_the_default_is_chosen_within_fracatlas_never_across_datasets(tmp_path: Path) -> None:
    """multiregion's grouped and published splits and its external test have higher validation AUROCs than any
    FracAtlas model (a set of copies is easy); AUROCs of different datasets are never compared."""
    fa_low = _run(tmp_path / "fracatlas", "ref_resnet18", "fracatlas", 0.68)
    fa_best = _run(tmp_path / "fracatlas", "paper_cnn_honest", "fracatlas", 0.71)
    mr = tmp_path / "multiregion"
    _run(mr, "multiregion_published_honest", "multiregion", 0.99,
         leak={"split": "published", "test_near_in_train": 400, "test_images": 496})
    grouped = _run(mr, "multiregion_grouped_honest", "multiregion", 0.85,
                   leak={"split": "grouped", "test_near_in_train": 0, "test_images": 496})
    _run(mr, "multiregion_external", "multiregion", 0.90, kind="external",
         leak={"split": "external", "test_near_in_train": 0})
    mr_plain = _run(mr, "paper_cnn_honest", "multiregion", 0.95)
    assert best_checkpoint(tmp_path) == fa_best
    assert best_checkpoint(tmp_path, "fracatlas") == fa_best
    assert best_checkpoint(tmp_path, "multiregion") == mr_plain  # asked for: that dataset's own best
    assert fa_low.exists() and grouped.exists()


def test_without_fracatlas_the_external_and_split_mode_runs_are_still_not_chosen(tmp_path: Path) -> None:
    _run(tmp_path, "multiregion_grouped_honest", "multiregion", 0.85,
         leak={"split": "grouped", "test_near_in_train": 0, "test_images": 496})
    # an external-test record may name the dataset it was tested on; it was trained elsewhere
    _run(tmp_path, "multiregion_external", "fracatlas", 0.90, kind="external")
    assert best_checkpoint(tmp_path) is None


def test_the_picker_offers_every_model_labelled_with_dataset_and_split(tmp_path: Path) -> None:
    from fracbench.app.demo import Analyzer
    from fracbench.serving.predict import find_checkpoints

    fa = _run(tmp_path / "fracatlas", "paper_cnn_honest", "fracatlas", 0.71)
    pub = _run(tmp_path / "multiregion", "multiregion_published_honest", "multiregion", 0.99,
               leak={"split": "published", "test_near_in_train": 400})
    labels = dict((p, label) for label, p in Analyzer([p for p, _ in find_checkpoints(tmp_path)], fa).choices())
    assert set(labels) == {str(fa), str(pub)}
    assert "fracatlas, manifest split" in labels[str(fa)]
    assert "multiregion, published split" in labels[str(pub)]
