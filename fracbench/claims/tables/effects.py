"""Effects (differences of a rate between two conditions) as the tables state them: with a CI, or "no evidence".

An effect over seeds is the mean ± sd of the per-seed differences with a 95% t-interval of the mean.
It reads "no evidence" (and shows no point estimate as a finding) when the interval includes zero, when
fewer than :data:`MIN_SEEDS` seeds were run, or when the test set behind it has fewer than
:data:`~fracbench.claims.tables.claims.MIN_TEST_GROUPS` independent groups (copies of one image count once).
One effect rule for one seed per arm: two runs whose test sets share images are compared by a joint
cluster bootstrap (the same duplicate groups drawn for both arms in each resample, the difference taken
per resample; :func:`joint_effect`, numbers from :func:`fracbench.metrics.joint_bootstrap_diff`). Disjoint
test sets (a grouped split against an external one) cannot be paired: :func:`independent_effect` takes
the difference of the two independent estimates with a normal-approximation interval built from their two
95% intervals. Where neither is possible, :func:`pair_effect` judges from whether the two runs' own 95%
intervals overlap. An accuracy difference between test sets whose class balance differs is not an effect
of anything but the balance (:func:`balance_differs`): the tables show the AUROC difference instead.
Pure: numbers in, a verdict and a cell out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from fracbench.claims.tables.claims import MIN_TEST_GROUPS

__all__ = ["BALANCE_TOLERANCE", "MIN_SEEDS", "Effect", "balance_differs", "independent_effect", "joint_effect",
           "pair_effect", "seed_effect", "t975"]

MIN_SEEDS = 3  # fewer seeds: the sd (and so the interval) of the seed-to-seed spread is not estimable
# two-sided 95% quantiles of Student's t by degrees of freedom (scipy.stats.t.ppf(0.975, df)); normal beyond
_T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.3060, 9: 2.2622,
         10: 2.2281, 12: 2.1788, 15: 2.1314, 20: 2.0860, 30: 2.0423}


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (conservative between tabled values)."""
    if df < 1:
        raise ValueError("t needs at least one degree of freedom")
    if df > 30:
        return 1.96
    return _T975[min(k for k in _T975 if k >= df)] if df not in _T975 else _T975[df]


@dataclass(frozen=True)
class Effect:
    """An effect in rate units (0.01 = one point): mean, sd, number of seeds, its 95% CI and the verdict."""

    mean: float | None
    sd: float | None
    n: int
    ci: tuple[float, float] | None
    evidence: bool
    why: str  # why there is no evidence ("" when there is)

    def cell(self, unit: str = "points") -> str:
        """'+4.10 ± 1.20 points [95% CI +2.61, +5.59]' or 'no evidence (...)'."""
        if self.mean is None:
            return "—"
        s = f"{self.mean * 100:+.2f}"
        if self.sd is not None:
            s += f" ± {self.sd * 100:.2f}"
        s += f" {unit}"
        if self.ci is not None:
            s += f" [95% CI {self.ci[0] * 100:+.2f}, {self.ci[1] * 100:+.2f}]"
        return s if self.evidence else f"no evidence ({self.why}; measured {s})"


# fractured shares further apart than this: accuracies of the two test sets are not comparable
BALANCE_TOLERANCE = 0.05


def _small(n_groups: int | None) -> bool:
    return n_groups is not None and n_groups < MIN_TEST_GROUPS


def _too_few(n_groups: int | None) -> str:
    return f"{n_groups} test groups, at least {MIN_TEST_GROUPS} needed"


def balance_differs(prevalence_a: float | None, prevalence_b: float | None) -> str:
    """Why an accuracy difference between two test sets is not shown ("" when it may be): their fractured
    shares differ by more than :data:`BALANCE_TOLERANCE`, so accuracy moves with the balance alone."""
    if prevalence_a is None or prevalence_b is None or abs(prevalence_a - prevalence_b) <= BALANCE_TOLERANCE:
        return ""
    return (f"class balance differs: {prevalence_a:.2f} vs {prevalence_b:.2f} fractured; accuracy not comparable, "
            "see AUROC")


def joint_effect(d: float, ci: Sequence[float] | None, n_groups: int | None) -> Effect:
    """One seed per arm on shared test images: a - b with the joint cluster bootstrap's 95% CI."""
    if ci is None or len(ci) != 2 or not all(math.isfinite(c) for c in ci):
        return Effect(d, None, 1, None, False, "no interval")
    interval = (float(ci[0]), float(ci[1]))
    if _small(n_groups):
        return Effect(d, None, 1, interval, False, _too_few(n_groups))
    if interval[0] <= 0 <= interval[1]:
        return Effect(d, None, 1, interval, False, "the CI includes zero")
    return Effect(d, None, 1, interval, True, "")


def seed_effect(values: Sequence[float | None], n_groups: int | None = None) -> Effect:
    """Per-seed differences -> mean ± sd with a 95% t-interval; "no evidence" per the module's rules."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return Effect(None, None, 0, None, False, "not measured")
    mean = statistics.fmean(vals)
    if len(vals) < MIN_SEEDS:
        return Effect(mean, None, len(vals), None, False, f"{len(vals)} seed(s), at least {MIN_SEEDS} needed")
    sd = statistics.stdev(vals)
    half = t975(len(vals) - 1) * sd / math.sqrt(len(vals))
    ci = (mean - half, mean + half)
    if _small(n_groups):
        return Effect(mean, sd, len(vals), ci, False, _too_few(n_groups))
    if ci[0] <= 0 <= ci[1]:
        return Effect(mean, sd, len(vals), ci, False, "the CI includes zero")
    return Effect(mean, sd, len(vals), ci, True, "")


def pair_effect(a: float, a_ci: Sequence[float] | None, b: float, b_ci: Sequence[float] | None,
                n_groups: int | None) -> Effect:
    """One seed: a - b, evidence only when the two runs' 95% intervals do not overlap (and enough groups)."""
    d = a - b
    if _small(n_groups):
        return Effect(d, None, 1, None, False, _too_few(n_groups))
    if a_ci is None or b_ci is None or len(a_ci) != 2 or len(b_ci) != 2:
        return Effect(d, None, 1, None, False, "one seed and no interval")
    overlap = a_ci[0] <= b_ci[1] and b_ci[0] <= a_ci[1]
    if overlap:
        return Effect(d, None, 1, None, False, "one seed; the two runs' 95% CIs overlap")
    return Effect(d, None, 1, None, True, "")


_Z975 = 1.959963984540054


def independent_effect(a: float, a_ci: Sequence[float] | None, b: float, b_ci: Sequence[float] | None,
                       n_groups: int | None) -> Effect:
    """a - b of two independent estimates (different test sets) with a normal-approximation 95% CI.

    Each estimate's standard error is read off its own 95% interval as (hi - lo) / (2 * 1.96); the
    difference's is the root of their squared sum (independent samples), and its CI d ± 1.96 * se.
    "no evidence" when the CI includes zero, an interval is missing, or ``n_groups`` (the smaller of the
    two test sets' independent groups) is under MIN_TEST_GROUPS.
    """
    d = a - b
    if a_ci is None or b_ci is None or len(a_ci) != 2 or len(b_ci) != 2:
        return Effect(d, None, 1, None, False, "no interval")
    se = math.hypot((a_ci[1] - a_ci[0]) / (2 * _Z975), (b_ci[1] - b_ci[0]) / (2 * _Z975))
    ci = (d - _Z975 * se, d + _Z975 * se)
    if _small(n_groups):
        return Effect(d, None, 1, ci, False, _too_few(n_groups))
    if ci[0] <= 0 <= ci[1]:
        return Effect(d, None, 1, ci, False, "the CI includes zero")
    return Effect(d, None, 1, ci, True, "")
