"""Table inputs: run records, experiment YAMLs, the paper's claims, and provenance footnotes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fracbench import results as R
from fracbench.claims.tables.render import DASH
from fracbench.metrics import METRIC_NAMES
from fracbench.training.experiments import Experiment, baselines_dir, load_experiment

CLAIMS_FILE = "claims.yaml"
TABLE_NAMES = ("table1", "table2", "table3", "leaderboard", "claims", "leak", "protocol", "leak_splits", "subgroups")
# written once for several results folders, into results/tables/
CROSS_TABLE_NAMES = ("claims", "leak_splits")
# Test-set metrics of the reported checkpoint, as in record["metrics"]["test"].
RECORD_METRICS: tuple[str, ...] = (*METRIC_NAMES, "kappa")
# Per-epoch values, as in epochs.jsonl.
EPOCH_METRICS: tuple[str, ...] = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auroc",
                                  "test_loss", "test_accuracy", "test_auroc")
# "count": a number of images; "unnamed": the paper gives a number without saying what it measures.
KNOWN_METRICS: frozenset[str] = frozenset((*RECORD_METRICS, *EPOCH_METRICS, "count", "unnamed"))
# protocol_effect: a habit of the paper's evaluation (or data) whose effect on its accuracy fracbench measures
CLAIM_KINDS = ("model_result", "dataset_fact", "citation", "protocol_effect")
PROTOCOL_EFFECTS = ("test_selection", "test_time_flip", "jpg_denominator", "selection_and_flip", "leak")
# The paper's headline numbers, read from baselines/claims.yaml by id (never typed here).
HEADLINE_TEST_CLAIM = "experiment_test_accuracy"  # "the test Accuracy was 0.998"
HEADLINE_TRAIN_CLAIM = "experiment_train_accuracy"  # "the training accuracy was 0.999"
# Keys that change how a run executes, not what it computes; ignored when matching a record to a profile.
_RUNTIME_KEYS = ("device", "amp", "channels_last", "compile", "seed")
_TABLE_ORDER = ("table1", "table2", "table3", "hparam", "reference", "anatomy", "audit")


class MixedManifestError(ValueError):
    """Records made on different manifests (splits) were given to one table."""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One finished run: its folder, record.json and epochs.jsonl."""

    dir: Path
    record: dict[str, Any]
    epochs: list[dict[str, Any]]

    @property
    def experiment(self) -> str:
        return str(self.record.get("experiment", ""))

    @property
    def seed(self) -> int:
        return int(self.record.get("seed", 0))

    def epoch(self, n: int) -> dict[str, Any] | None:
        for e in self.epochs:
            if e.get("epoch") == n:
                return e
        return None

    @property
    def test(self) -> dict[str, Any]:
        return (self.record.get("metrics") or {}).get("test") or {}


def test_groups(r: Run) -> int | None:
    """Distinct duplicate groups among a run's test images, the units of evidence (claims.MIN_TEST_GROUPS):
    the record's ``counts.test_groups``; for older records, counted from its manifest and predictions.csv;
    else its test image count (no copies known: every image its own group)."""
    counts = r.record.get("counts") or {}
    if isinstance(counts.get("test_groups"), int):
        return int(counts["test_groups"])
    groups = R.prediction_groups(r.dir, r.record) if r.dir is not None else None
    if groups is not None:
        return len(set(groups))
    n = counts.get("test")
    return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None


def min_test_groups(runs: Iterable[Run]) -> int | None:
    """The fewest test groups over ``runs`` (None when none is known)."""
    return min((n for r in runs if (n := test_groups(r)) is not None), default=None)


def load_runs(results: Path) -> list[Run]:
    """Every run under ``results/runs``, sorted by experiment then seed."""
    return [Run(d, rec, R.read_epochs(d)) for d, rec in R.find_records(results)]


def load_experiments(directory: Path | None = None) -> dict[str, Experiment]:
    """Every experiment YAML of ``directory`` (default: baselines/), skipping claims.yaml."""
    directory = Path(directory or baselines_dir())
    out: dict[str, Experiment] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name == CLAIMS_FILE:
            continue
        exp = load_experiment(path)
        if exp.name in out:
            raise ValueError(f"{path}: experiment {exp.name!r} is also defined in {out[exp.name].path}")
        out[exp.name] = exp
    return out


@dataclass(frozen=True)
class Claim:
    """One number the paper states (see the header of baselines/claims.yaml)."""

    id: str
    text: str
    where: str
    value: float
    metric: str
    kind: str
    experiment: str | None = None
    epoch: int | None = None
    run: int | None = None
    note: str = ""
    effect: str = ""  # protocol_effect claims: which effect (PROTOCOL_EFFECTS)
    # a headline test-accuracy claim (the "99.8%" kind): also judged across the multiregion splits
    headline: bool = False


def load_claims(path: Path | None = None) -> list[Claim]:
    """baselines/claims.yaml, validated: unique ids, known metrics and kinds."""
    path = Path(path or baselines_dir() / CLAIMS_FILE)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = raw.get("claims") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a top-level 'claims:' list")
    claims, seen = [], set()
    for i, c in enumerate(entries):
        try:
            claim = Claim(**{k: ("" if k == "note" and v is None else v) for k, v in c.items()})
        except TypeError as exc:
            raise ValueError(f"{path}: claim {i + 1}: {exc}") from None
        if claim.id in seen:
            raise ValueError(f"{path}: duplicate claim id {claim.id!r}")
        seen.add(claim.id)
        if claim.metric not in KNOWN_METRICS:
            raise ValueError(f"{path}: claim {claim.id}: unknown metric {claim.metric!r}")
        if claim.kind not in CLAIM_KINDS:
            raise ValueError(f"{path}: claim {claim.id}: kind {claim.kind!r}, expected one of {CLAIM_KINDS}")
        if (claim.kind == "protocol_effect") != bool(claim.effect) or (claim.effect and claim.effect not in
                                                                        PROTOCOL_EFFECTS):
            raise ValueError(f"{path}: claim {claim.id}: a protocol_effect claim names one effect of "
                             f"{PROTOCOL_EFFECTS}, and only it")
        if claim.headline is not False and (claim.headline is not True or claim.kind != "model_result"
                                            or claim.metric not in ("accuracy", "test_accuracy")):
            raise ValueError(f"{path}: claim {claim.id}: headline: true marks a model_result accuracy claim "
                             "(metric accuracy or test_accuracy); remove it or fix the claim")
        claims.append(claim)
    return claims


def _experiments(experiments: Any) -> dict[str, Experiment]:
    """A name -> Experiment mapping from a Registry, a mapping or an iterable of experiments."""
    if isinstance(experiments, Mapping):
        return dict(experiments)
    if hasattr(experiments, "get") and hasattr(experiments, "list"):  # fracbench.registry.Registry
        return {n: experiments.get(n) for n in experiments}
    return {e.name: e for e in experiments}


def _by_experiment(runs: Iterable[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in sorted(runs, key=lambda r: (r.experiment, r.seed)):
        out.setdefault(r.experiment, []).append(r)
    return out


def _complete(runs: Iterable[Run]) -> tuple[list[Run], list[Run]]:
    """(finished runs, runs that failed): a failed run's record has no metrics and no manifest."""
    done, failed = [], []
    for r in runs:
        (done if r.record.get("status", "complete") == "complete" else failed).append(r)
    return done, failed


def _failed_notes(failed: Sequence[Run], names: Iterable[str] | None = None) -> list[str]:
    keep = None if names is None else set(names)
    return [f"{r.experiment} seed {r.seed} {r.record.get('status')}: "
            f"{str(r.record.get('error', ''))[:120]} (not shown; rerun it)."
            for r in failed if keep is None or r.experiment in keep]


def check_manifests(runs: Sequence[Run], table: str) -> None:
    """Refuse runs made on more than one manifest, naming each manifest and its runs."""
    groups: dict[str, list[str]] = {}
    for r in runs:
        key = str(r.record.get("manifest_sha256", "unknown"))
        groups.setdefault(key, []).append(f"{r.experiment}/seed{r.seed} ({r.record.get('dataset', '?')})")
    if len(groups) > 1:
        parts = [f"manifest {k[:16]}: {', '.join(v)}" for k, v in sorted(groups.items())]
        raise MixedManifestError(f"{table}: records from {len(groups)} different manifests cannot share a table; "
                                 f"rerun them on one split or move the others out of results/runs. "
                                 + "; ".join(parts))



def _epoch_values(runs: Sequence[Run], epoch: int, key: str) -> list[Any]:
    out = []
    for r in runs:
        e = r.epoch(epoch)
        if e is not None and key in e:
            out.append(e[key])
    return out


def _selected_values(runs: Sequence[Run], key: str) -> list[Any]:
    """A per-epoch value at each run's reported (selected) epoch."""
    out = []
    for r in runs:
        e = r.epoch(int(r.record.get("selected_epoch", -1)))
        if e is not None and key in e:
            out.append(e[key])
    return out


def _accuracy_as_reported(r: Run) -> float | None:
    """The test accuracy the run's protocol reports: the tutorial's .jpg-denominator count under as_published."""
    if r.record.get("protocol") == "as_published":
        v = r.test.get("accuracy_as_counted")
        return None if v is None else float(v)
    v = r.test.get("accuracy")
    return None if v is None else float(v)


# --------------------------------------------------------------------------------------------
# Provenance footnotes
# --------------------------------------------------------------------------------------------


def _profile_of(run: Run, exp: Experiment | None) -> str:
    """The profile a record was made under: the record's own field, else the profile whose config matches."""
    if run.record.get("profile"):
        return str(run.record["profile"])
    if exp is None:
        return "unknown"
    have = {k: v for k, v in (run.record.get("config") or {}).items() if k not in _RUNTIME_KEYS}
    for profile in ("full", "cpu", "smoke"):
        try:
            want = exp.train_config(profile, seed=run.seed).to_dict()
        except (ValueError, TypeError):
            continue
        if {k: v for k, v in want.items() if k not in _RUNTIME_KEYS} == have:
            return profile
    return "custom"


def _profiles(runs: Sequence[Run], exp: Experiment | None) -> str:
    return ", ".join(sorted({_profile_of(r, exp) for r in runs})) or DASH


def _provenance(exp: Experiment, runs: Sequence[Run]) -> str:
    if not runs:
        return f"{exp.name}: not run."
    profiles = sorted({_profile_of(r, exp) for r in runs})
    epochs = sorted({int(r.record.get("epochs_run", len(r.epochs))) for r in runs})
    seeds = ", ".join(str(r.seed) for r in runs)
    datasets = ", ".join(sorted({str(r.record.get("dataset", "?")) for r in runs}))
    ep = f"epochs 0..{epochs[0] - 1}" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]} epochs"
    # what each record says its profile changed (so a profile edited since leaves its old records described truly);
    # records without it: the experiment's profile as it stands
    pairs = []
    for r in runs:
        recorded = r.record.get("profile_changes")
        reduced = recorded if isinstance(recorded, dict) else exp.reduced(_profile_of(r, exp))
        pairs += sorted(reduced.items())
    changes = list(dict.fromkeys(f"{k}={v}" for k, v in pairs if k != "seeds"))
    changed = f"; changed from the paper's configuration: {', '.join(changes)}" if changes else ""
    return (f"{exp.name}: profile {', '.join(profiles)}, {ep}, seeds {seeds} ({len(runs)} of "
            f"{len(exp.seeds)} in the full run), dataset {datasets}{changed}.")


def provenance_notes(runs: Sequence[Run], experiments: Any, names: Iterable[str]) -> list[str]:
    """The provenance footnote (:func:`_provenance`) of each experiment in ``names`` over its runs in ``runs``,
    as the per-dataset tables write it; an experiment absent from the registry is skipped."""
    exps = _experiments(experiments)
    by_exp = _by_experiment(runs)
    seen: list[str] = []
    for n in names:
        if n in exps and n not in seen:
            seen.append(n)
    return [_provenance(exps[n], by_exp.get(n, [])) for n in seen]


def _run_setting(run: Run, exp: Experiment | None, key: str) -> Any:
    """A training setting of a record: its own config, else the experiment's under the record's profile."""
    cfg = run.record.get("config")
    if isinstance(cfg, dict) and key in cfg:
        return cfg[key]
    changes = run.record.get("profile_changes")
    if isinstance(changes, dict) and key in changes:
        return changes[key]
    if exp is None:
        return None
    profile = str(run.record.get("profile") or "full")
    return exp.reduced(profile).get(key, exp.config.get(key))


def budget(runs: Sequence[Run], exp: Experiment | None) -> str:
    """What the runs trained when it is not the paper's configuration ("" when it is, or nothing ran).

    The paper's configuration is the experiment's own YAML config and seeds (its ``full`` profile); a
    profile may shorten epochs, shrink the images, subsample the training set or run fewer seeds. E.g.
    "8/50 epochs, 96 px, 1/5 seeds". A verdict over such records says so (claims.Verdict.shown).
    """
    if not runs or exp is None:
        return ""
    parts = []
    want_epochs = exp.config.get("epochs")
    epochs = sorted({int(v) for r in runs if isinstance(v := r.record.get("epochs_run", _run_setting(r, exp, "epochs")),
                                                        (int, float))})
    if isinstance(want_epochs, int) and epochs and epochs[0] < want_epochs:
        shown = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
        parts.append(f"{shown}/{want_epochs} epochs")
    want_px = exp.config.get("image_size")
    pxs = sorted({int(v) for r in runs if isinstance(v := _run_setting(r, exp, "image_size"), (int, float))})
    if isinstance(want_px, int) and pxs and pxs != [want_px]:
        parts.append(f"{'/'.join(map(str, pxs))} px (paper {want_px})")
    caps = sorted({int(v) for r in runs if isinstance(v := _run_setting(r, exp, "max_train_images"), (int, float))
                   and v > 0})
    if caps:
        parts.append(f"{caps[-1]} training images at most")
    seeds = len({r.seed for r in runs})
    if seeds < len(exp.seeds):
        parts.append(f"{seeds}/{len(exp.seeds)} seed" + ("s" if len(exp.seeds) > 1 else ""))
    return ", ".join(parts)


def _jpg_warnings(runs: Sequence[Run]) -> list[str]:
    """Footnotes for as-published runs whose .jpg count is not the number of test images."""
    out = []
    for name, rs in sorted(_by_experiment(r for r in runs if r.record.get("protocol") == "as_published").items()):
        odd = sorted({(int((r.record.get("counts") or {}).get("test_denominator", -1)),
                       int((r.record.get("counts") or {}).get("test", -1))) for r in rs})
        odd = [(d, n) for d, n in odd if d != n]
        if odd:
            d, n = odd[0]
            out.append(f"{name}: the tutorial's .jpg count finds {d} of {n} test images, and as-published accuracies "
                       f"(train and test) divide by that count" + (", so they exceed 1 here: this dataset has no "
                                                                   ".jpg files." if d == 0 else "."))
    return out


def _protocol_label(exp: Experiment) -> str:
    return exp.protocol.replace("_", " ")


def _paper_value(exp: Experiment, metric: str, epoch: int | None = None, run: int | None = None) -> float | None:
    for pv in exp.paper:
        if pv.metric == metric and pv.epoch == epoch and pv.run == run:
            return pv.value
    return None


def _table_experiments(exps: Mapping[str, Experiment], table: str) -> list[Experiment]:
    order = {"as_published": 0, "honest": 1}
    return sorted((e for e in exps.values() if e.table == table), key=lambda e: (order.get(e.protocol, 2), e.name))


def _used_runs(by_exp: Mapping[str, list[Run]], exps: Iterable[Experiment]) -> list[Run]:
    return [r for e in exps for r in by_exp.get(e.name, [])]




def paper_claim(claim_id: str, claims: Sequence[Claim] | None = None) -> Claim:
    """The claim ``claim_id``: from ``claims`` when they hold it, else from baselines/claims.yaml.

    A clear error when neither has it (the tables read the paper's headline numbers from there).
    """
    for c in [*(claims or ()), *load_claims()]:
        if c.id == claim_id:
            return c
    raise ValueError(f"{baselines_dir() / CLAIMS_FILE}: no claim with id {claim_id!r}; the tables read the paper's "
                     "headline numbers from it (restore the entry)")


MACHINERY_BANNER = ("SMOKE / SYNTHETIC: this run tests the machinery, not the paper ({what}); "
                    "no claim is judged by them.")


def machinery_banner(runs: Sequence[Run]) -> str:
    """The banner for tables built from smoke-profile runs or synthetic data ("" when there are none)."""
    what = []
    smoke = sorted({r.experiment for r in runs if str(r.record.get("profile", "")) == "smoke"})
    synthetic = sorted({str(r.record.get("dataset")) for r in runs
                        if str(r.record.get("dataset", "")).startswith("synthetic")})
    if smoke:
        what.append(f"smoke profile: {len(smoke)} experiment(s)")
    if synthetic:
        what.append(f"synthetic data: {', '.join(synthetic)}")
    return MACHINERY_BANNER.format(what="; ".join(what)) if what else ""
