"""The benchmark registry: one YAML file per experiment in baselines/, loaded by name.

An experiment names a model, a protocol, hyperparameters, seeds, a citation, per-profile
reductions (smoke, cpu, full), and the numbers the paper reports for it, each with where in the
paper it stands. Adding an experiment is adding one YAML file.

``kind`` says how fracbench.runs.runner runs it (default "train": one fit per seed; others are the
runner functions registered in ``fracbench.runs.runner.EXPERIMENT_KINDS``, e.g. "leak_demo"). Settings
of a kind that are not training hyperparameters go under ``options``; a profile may change them
under its own ``options`` key; ``options.split`` picks one of the dataset's split modes (e.g.
multiregion's "published" or "grouped" manifest). ``datasets`` lists the datasets an experiment is
made for: a dataset that has such experiments runs only those under ``run --all`` (its own suite),
every other dataset runs the experiments that name none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fracbench.config import TrainConfig
from fracbench.paths import REPO_ROOT
from fracbench.registry import Registry

PROFILES = ("smoke", "cpu", "full")
CLAIMS_FILE = "claims.yaml"  # the paper's numeric claims live beside the experiments


@dataclass(frozen=True)
class PaperValue:
    """A number the paper reports, labelled as the paper's."""

    metric: str  # e.g. test_accuracy, train_loss, auroc, specificity
    value: float  # as a fraction for rates (99.8% -> 0.998)
    where: str  # e.g. "Table 1, epoch 25"
    epoch: int | None = None  # per-epoch values; None for a final value
    run: int | None = None  # Table 3 lists five runs of one configuration


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    model: str
    protocol: str
    config: dict[str, Any]
    seeds: tuple[int, ...]
    citation: str
    table: str = ""  # the paper table it reproduces: table1 | table2 | table3 | hparam | reference | audit
    notes: str = ""
    dataset: str | None = None  # a fixed dataset (the leak demo builds its own); None = the run's dataset
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    paper: tuple[PaperValue, ...] = ()
    path: str = ""
    kind: str = "train"  # how fracbench.runs.runner runs it: a name in fracbench.runs.runner.EXPERIMENT_KINDS
    options: dict[str, Any] = field(default_factory=dict)  # the kind's own settings (not TrainConfig)
    datasets: tuple[str, ...] = ()  # the datasets it is made for ("" = any); see applies_to

    @property
    def on_run_manifest(self) -> bool:
        """Whether it trains and tests on the run's own manifest (so its numbers share tables with the others'):
        not when it fixes a dataset, picks a split mode, or tests on another dataset."""
        return self.dataset is None and not self.options.get("split") and self.kind != "external"

    def applies_to(self, dataset: str) -> bool:
        """Whether ``run --all --dataset DATASET`` runs it: experiments made for named datasets run only there."""
        return not self.datasets or dataset in self.datasets

    def train_config(self, profile: str = "full", seed: int = 0, **overrides: Any) -> TrainConfig:
        """The resolved config of this experiment under ``profile`` for ``seed``."""
        cfg = {"model": self.model, "protocol": self.protocol, **self.config}
        red = {k: v for k, v in self.profiles.get(profile, {}).items() if k not in ("seeds", "options")}
        cfg.update(red)
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        cfg["seed"] = seed
        return TrainConfig.from_dict(cfg)

    def seeds_for(self, profile: str, n: int | None = None) -> tuple[int, ...]:
        seeds = tuple(self.profiles.get(profile, {}).get("seeds", self.seeds))
        return tuple(range(n)) if n else seeds

    def options_for(self, profile: str) -> dict[str, Any]:
        """The kind's options under ``profile``: the experiment's, updated by the profile's ``options``."""
        return {**self.options, **(self.profiles.get(profile, {}).get("options") or {})}

    def reduced(self, profile: str) -> dict[str, Any]:
        """What the profile changes from the paper's configuration (shown in the tables)."""
        return dict(self.profiles.get(profile, {}))


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def baselines_dir() -> Path:
    return Path(os.environ.get("FRACBENCH_BASELINES", REPO_ROOT / "baselines"))


def load_experiment(path: Path) -> Experiment:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    required = ("name", "model", "protocol", "config", "seeds", "citation")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    known = {"name", "title", "model", "protocol", "config", "seeds", "citation", "table", "notes", "dataset",
             "profiles", "paper", "kind", "options", "datasets"}
    extra = sorted(set(raw) - known)
    if extra:
        raise ValueError(f"{path}: unknown keys {extra}")
    bad_profiles = sorted(set(raw.get("profiles") or {}) - set(PROFILES))
    if bad_profiles:
        raise ValueError(f"{path}: unknown profiles {bad_profiles}; expected {PROFILES}")
    paper = tuple(PaperValue(**pv) for pv in raw.get("paper") or [])
    return Experiment(
        name=raw["name"], title=raw.get("title", raw["name"]), model=raw["model"], protocol=raw["protocol"],
        config=dict(raw["config"] or {}), seeds=tuple(raw["seeds"]), citation=raw["citation"],
        table=raw.get("table", ""), notes=raw.get("notes", ""), dataset=raw.get("dataset"),
        profiles={k: dict(v or {}) for k, v in (raw.get("profiles") or {}).items()}, paper=paper, path=str(path),
        kind=str(raw.get("kind") or "train"), options=dict(raw.get("options") or {}),
        datasets=tuple(raw.get("datasets") or ()),
    )


def load_all(directory: Path | None = None) -> Registry[Experiment]:
    """Load every baselines/*.yaml into the registry (once); a duplicate name is refused."""
    directory = directory or baselines_dir()
    if len(EXPERIMENTS) and directory == baselines_dir():
        return EXPERIMENTS
    reg = EXPERIMENTS if directory == baselines_dir() else Registry("experiment")
    for path in sorted(directory.glob("*.yaml")):
        if path.name == CLAIMS_FILE:
            continue
        exp = load_experiment(path)
        reg.add(exp.name, exp)
    return reg
