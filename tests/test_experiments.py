"""Schema test: every baselines/*.yaml loads, names a known model and resolves for every profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fracbench.models  # noqa: F401  (registers the models)
from fracbench.claims.tables import CLAIMS_FILE, KNOWN_METRICS, load_experiments
from fracbench.config import PROTOCOLS, TrainConfig
from fracbench.models import MODELS, create_model
from fracbench.training.experiments import PROFILES, baselines_dir, load_experiment

TABLES = ("table1", "table2", "table3", "hparam", "reference", "audit", "anatomy")
FILES = sorted(p for p in baselines_dir().glob("*.yaml") if p.name != CLAIMS_FILE)


def test_there_are_experiments() -> None:
    names = {p.stem for p in FILES}
    assert {"paper_cnn_as_published", "paper_cnn_honest", "stand_in_rao14", "stand_in_cnn15_e10_b10",
            "stand_in_cnn15_e20_b32", "hparam_lr_3e-4", "hparam_lr_3e-3", "hparam_bs_16", "hparam_bs_64",
            "ref_resnet18", "ref_densenet169", "ref_efficientnet_b0"} <= names
    assert len(load_experiments()) == len(FILES)  # unique names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_experiment_schema(path: Path) -> None:
    exp = load_experiment(path)
    assert exp.name == path.stem
    assert exp.model in MODELS, f"{path.name}: unknown model {exp.model}"
    assert exp.protocol in PROTOCOLS
    assert exp.table in TABLES
    assert exp.citation.strip() and exp.title.strip()
    # a split mode or a dataset an experiment names must exist (a typo would otherwise only fail at run time)
    from fracbench.data import DATASETS

    for name in exp.datasets:
        assert name in DATASETS.list(), f"{path.name}: unknown dataset {name}"
    split = exp.options.get("split")
    if split:
        assert exp.datasets and all(split in DATASETS.get(d).split_modes for d in exp.datasets), \
            f"{path.name}: split mode {split!r} is not offered by {exp.datasets}"
    assert set(exp.profiles) == set(PROFILES), f"{path.name}: profiles must be {PROFILES}"
    full = exp.train_config("full", seed=0)
    for profile in PROFILES:
        seeds = exp.seeds_for(profile)
        assert seeds, f"{path.name}: profile {profile} has no seeds"
        for seed in seeds:
            cfg = exp.train_config(profile, seed=seed)
            assert isinstance(cfg, TrainConfig) and cfg.seed == seed
            assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    # full means the experiment's own configuration, unchanged
    assert exp.profiles["full"] == {}
    assert full == TrainConfig.from_dict({"model": exp.model, "protocol": exp.protocol, **exp.config, "seed": 0})
    for pv in exp.paper:
        assert pv.metric in KNOWN_METRICS, f"{path.name}: unknown metric {pv.metric}"
        assert pv.where.strip()
        if pv.metric != "count" and not pv.metric.endswith("loss"):
            assert 0.0 <= pv.value <= 1.0, f"{path.name}: {pv.metric}={pv.value} is not a fraction"
        if pv.epoch is not None:
            assert pv.epoch < full.epochs, f"{path.name}: paper epoch {pv.epoch} is beyond the full run"
        if pv.run is not None:
            assert pv.run < len(exp.seeds), f"{path.name}: paper run {pv.run} has no seed"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_smoke_profile_is_tiny(path: Path) -> None:
    exp = load_experiment(path)
    smoke = exp.profiles["smoke"]
    cfg = exp.train_config("smoke")
    assert 1 <= cfg.epochs <= 2
    assert cfg.image_size == (32 if exp.model == "densenet169" else 64)  # DenseNet-169: see its YAML
    assert 64 <= cfg.max_train_images <= 96
    assert cfg.n_boot <= 100
    assert tuple(smoke.get("seeds", ())) == (0,)
    # the model builds and runs at the smoke size
    torch.manual_seed(0)
    model = create_model(cfg.model, num_classes=2, in_channels=cfg.channels, image_size=cfg.image_size).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size))
    assert out.shape == (1, 2)


def test_multiregion_cpu_profile_is_the_papers_size_past_epoch_14() -> None:
    """The claim-anatomy suite's cpu profile trains at the paper's 150 px and past the paper's epoch-14 point
    (abstract: 99.82% at epoch 14), so a cpu run can be read beside that claim."""
    from fracbench.training.experiments import baselines_dir, load_experiment

    paths = sorted(baselines_dir().glob("multiregion_*.yaml"))
    assert len(paths) == 5
    for path in paths:
        exp = load_experiment(path)
        cfg = exp.train_config("cpu")
        assert cfg.image_size == exp.config["image_size"] == 150, path.name
        assert cfg.epochs == 15 and cfg.epochs - 1 >= 14, path.name
        assert cfg.max_train_images == 0, path.name  # every training image
