"""``fracbench run --plan``: the estimate's arithmetic, the calibration cache, and that planning trains nothing."""

from __future__ import annotations

import pytest

from fracbench.config import TrainConfig
from fracbench.runs import plan as P


def test_fit_seconds_is_epochs_times_train_and_eval_plus_final():
    r = P.Rates(train=10.0, eval=25.0)
    # 2 epochs x (100 train images / 10 + 50 eval images / 25) + 30 final eval images / 25
    assert P.fit_seconds(2, 100, 50, 30, r) == pytest.approx(2 * (10 + 2) + 1.2)
    assert P.fit_seconds(4, 100, 50, 30, r) > P.fit_seconds(2, 100, 50, 30, r)
    with pytest.raises(ValueError, match="positive"):
        P.fit_seconds(1, 1, 1, 1, P.Rates(0.0, 1.0))


@pytest.mark.parametrize("protocols, log_test, per_epoch, final", [
    # honest: val + unflipped test each epoch (learning curves); at the end val and test with the chosen model
    (("honest",), True, 10 + 100, 10 + 100),
    (("honest",), False, 10, 10 + 100),
    # as_published: val + flipped test each epoch (it selects on test); at the end val only (test scores kept)
    (("as_published",), True, 10 + 100, 10),
    (("as_published",), False, 10 + 100, 10),
    # both from one trajectory: val once, the unflipped and the flipped test pass; each view's final pass
    (("as_published", "honest"), True, 10 + 2 * 100, 10 + (10 + 100)),
])
def test_eval_images_follow_the_protocols(protocols, log_test, per_epoch, final):
    shape = P.FitShape(epochs=3, train=50, val=10, test=100, protocols=protocols, log_test=log_test)
    assert P.eval_images(shape) == (per_epoch, final)


def test_shared_trajectory_costs_less_than_two_runs():
    r = P.Rates(train=100.0, eval=300.0)
    one = [P.shape_seconds(P.FitShape(5, 1000, 100, 200, (p,)), r) for p in ("as_published", "honest")]
    both = P.shape_seconds(P.FitShape(5, 1000, 100, 200, ("as_published", "honest")), r)
    # training (5 x 1000 / 100 = 50 s) and the validation passes are paid once instead of twice
    assert sum(one) - both == pytest.approx(50 + 5 * 100 / 300)


def test_calibration_is_measured_once_and_cached(fresh_cache):
    calls = []

    def fake(cfg: TrainConfig) -> P.Rates:
        calls.append(cfg.model)
        return P.Rates(train=7.0, eval=21.0)

    cfg = TrainConfig(model="tiny_cnn", image_size=32)
    assert P.cached_rates(cfg, fake) == P.Rates(7.0, 21.0)
    assert P.cached_rates(cfg, fake) == P.Rates(7.0, 21.0)
    assert calls == ["tiny_cnn"]
    assert (fresh_cache / P.CALIBRATION_FILE).exists()
    P.cached_rates(cfg.replace(image_size=48), fake)  # another size is another calibration
    P.cached_rates(cfg.replace(amp=True), fake)  # and so is another precision
    assert len(calls) == 3


def test_measure_rates_on_a_tiny_model():
    r = P.measure_rates(TrainConfig(model="tiny_cnn", image_size=32, batch_size=8, device="cpu"), steps=1)
    assert r.train > 0 and r.eval > 0


def test_cli_plan_trains_nothing(tmp_path, monkeypatch, capsys, fresh_cache):
    from fracbench.cli import main
    from fracbench.data.synthetic import SyntheticSpec, generate
    from fracbench.training import train as T

    generate(SyntheticSpec(count=40, size=48, seed=2), tmp_path / "data")
    monkeypatch.setattr(P, "measure_rates", lambda cfg: P.Rates(train=50.0, eval=200.0))

    def no_training(*a, **k):
        raise AssertionError("--plan trained")

    monkeypatch.setattr(T, "train_one_epoch", no_training)
    monkeypatch.setattr(T, "fit_shared", no_training)
    from fracbench.progress import console

    monkeypatch.setattr(console, "width", 200)  # one table row per line
    res = tmp_path / "res"
    code = main(["run", "paper_cnn_*", "--plan", "--profile", "smoke", "--dataset", "synthetic", "--data-dir",
                 str(tmp_path / "data"), "--results", str(res)])
    assert code == 0
    out = capsys.readouterr().out  # the plan is data: stdout (TSV when piped), whole names
    rows = [line.split("\t") for line in out.splitlines()]
    names = [r[0] for r in rows[1:]]
    assert "paper_cnn_as_published + paper_cnn_honest" in names and "total" in names
    assert "paper_cnn_honest" not in names  # the twins are one row, not two
    assert not res.exists()  # no record, manifest, lock or table written
    # --all plans the dataset's suite: nothing made for multiregion on synthetic data
    assert main(["run", "--all", "--plan", "--profile", "smoke", "--dataset", "synthetic", "--data-dir",
                 str(tmp_path / "data"), "--results", str(res)]) == 0
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert any(n.startswith("stand_in") for n in names) and not any(n.startswith("multiregion") for n in names)


class _Counts:
    """A manifest stand-in: plan() reads only counts() and fingerprint."""

    def __init__(self, fingerprint: str, train: int, val: int, test: int) -> None:
        self.fingerprint = fingerprint
        self._c = {"train": {"0": train}, "val": {"0": val}, "test": {"0": test}}

    def counts(self) -> dict[str, dict[str, int]]:
        return self._c


def test_split_mode_experiments_are_planned_on_their_own_manifest():
    from fracbench.training.experiments import baselines_dir, load_experiment

    run_m = _Counts("published", train=1000, val=100, test=500)
    grouped = _Counts("grouped", train=400, val=100, test=200)
    exps = [load_experiment(baselines_dir() / f"multiregion_{m}_honest.yaml") for m in ("published", "grouped")]
    rates = lambda cfg: P.Rates(train=100.0, eval=100.0)  # noqa: E731

    def manifest_for(exp):
        return grouped if exp.options_for("cpu").get("split") == "grouped" else run_m

    rows = P.plan([[e] for e in exps], run_m, "cpu", 1, {}, rates_for=rates, manifest_for=manifest_for)
    assert [r.train_images for r in rows] == [1000, 400]
    epochs = rows[0].epochs
    # honest with the per-epoch test pass: epochs x (train + val + test) + the final val + test, at 100 img/s
    assert rows[1].seconds == pytest.approx((epochs * (400 + 100 + 200) + 100 + 200) / 100)
    # without manifest_for every experiment is counted on the run's manifest (the old, wrong estimate)
    flat = P.plan([[e] for e in exps], run_m, "cpu", 1, {}, rates_for=rates)
    assert [r.train_images for r in flat] == [1000, 1000]


def test_an_external_test_of_a_planned_fit_is_planned_as_one_evaluation():
    """multiregion_external trains what multiregion_grouped_honest trains: the run scores that fit instead."""
    from fracbench.runs.runner import run_order
    from fracbench.training.experiments import baselines_dir, load_experiment

    grouped = _Counts("grouped", train=400, val=100, test=200)
    names = ("external", "grouped_as_published", "grouped_honest")
    exps = {n: load_experiment(baselines_dir() / f"multiregion_{n}.yaml") for n in names}
    rates = lambda cfg: P.Rates(train=100.0, eval=100.0)  # noqa: E731
    # the external test alone trains: epochs x (train + val + test) + the final val + test
    alone = P.plan([[exps["external"]]], grouped, "cpu", 1, {}, rates_for=rates)
    epochs = alone[0].epochs
    assert alone[0].fits == 1 and alone[0].seconds == pytest.approx((epochs * 700 + 300) / 100)
    # with the grouped honest run in the plan: no fit, one evaluation of val and test, and it runs after it
    order = run_order([exps[n] for n in names])
    assert order[-1].name == "multiregion_external"
    rows = P.plan([[e] for e in order], grouped, "cpu", 1, {}, rates_for=rates)
    ext = rows[-1]
    assert ext.experiments == ("multiregion_external",)
    assert ext.fits == 0 and ext.train_images == 0 and ext.seconds == pytest.approx((100 + 200) / 100)
    # only a fit of the same config counts: the grouped run at another learning rate does not
    other = exps["grouped_honest"]
    import dataclasses

    changed = dataclasses.replace(other, config={**other.config, "lr": 0.01})
    rows = P.plan([[changed], [exps["external"]]], grouped, "cpu", 1, {}, rates_for=rates)
    assert rows[-1].fits == 1
