"""Claim verdicts: pure rules that say what fracbench's evidence says about one number of the paper.

No files, no formatting of tables: :func:`judge` takes the paper's value and the evidence of fracbench's
runs (:class:`Evidence`) and returns a :class:`Verdict`. The table modules gather the evidence from
records and render the verdict.

Rules (each is a reviewer's objection made into code):

- A rate (accuracy, sensitivity, ...) is reproduced only when the paper's value lies inside the run's 95%
  interval: the bootstrap CI of the record, or for a per-epoch value (no bootstrap) the Wilson interval
  of that proportion on the run's image count. Over several seeds the envelope of the seeds' intervals.
  A fixed absolute tolerance is not used: "within one point" means nothing on 30 images and too much on
  9,000.
- A loss is matched relatively (:data:`LOSS_RELATIVE_TOLERANCE`): with an absolute 0.01, any train loss
  below 0.02 "matched" the paper's 0.004-0.010.
- Train-set fit (train loss, train accuracy) is its own category: a model can fit its training set
  perfectly and be useless on test data, so such a claim is never evidence about a test claim.
- An accuracy is never called reproduced unless the same run's balanced accuracy and majority-class
  accuracy are known (they stand beside it in the table); a sensitivity or specificity is not reproduced
  when the other rate is far below the paper's (a model that never calls "fractured" has specificity 1).
- A test claim judged on fewer than :data:`MIN_TEST_IMAGES` test images reads "no evidence".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "LOSS_RELATIVE_TOLERANCE",
    "MIN_TEST_IMAGES",
    "ONE_SIDED_MARGIN",
    "TRAIN_FIT_METRICS",
    "Evidence",
    "Verdict",
    "VERDICTS",
    "judge",
    "scale_to_jpg_count",
    "wilson_ci",
]

# Fewer test images than this and a test-set number is no evidence either way (a 95% interval on 100
# images is still about ±8 points wide at 50%).
MIN_TEST_IMAGES = 100
# A loss matches when it is within this fraction of the paper's loss (0.2: 0.0062 matches 0.0050-0.0074).
LOSS_RELATIVE_TOLERANCE = 0.2
# sensitivity/specificity: reproduced only if balanced accuracy is not more than this below the paper's rate
ONE_SIDED_MARGIN = 0.01
TRAIN_FIT_METRICS: tuple[str, ...] = ("train_loss", "train_accuracy")
_ACCURACIES = ("accuracy", "test_accuracy")

# category -> the verdicts it may carry (the claims table counts them per category)
VERDICTS: dict[str, tuple[str, ...]] = {
    "test": ("reproduced", "not reproduced", "no evidence", "not comparable"),
    "train fit": ("train fit matches", "train fit differs", "not comparable"),
}


@dataclass(frozen=True)
class Evidence:
    """What fracbench's runs say about one metric (mean over seeds, its 95% interval, its test size)."""

    value: float | None = None
    interval: tuple[float, float] | None = None
    interval_kind: str = ""  # e.g. "95% bootstrap CI", "95% Wilson CI", "seed range"
    n_images: int | None = None  # images behind the number (smallest over seeds)
    balanced: float | None = None  # balanced accuracy of the same checkpoint (mean over seeds)
    majority: float | None = None  # majority-class accuracy of the same test split
    problem: str = ""  # why there is no value


@dataclass(frozen=True)
class Verdict:
    category: str  # "test" or "train fit"
    verdict: str  # one of VERDICTS[category]
    reason: str


def wilson_ci(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes/n (95% by default); (0, 1) for n = 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def scale_to_jpg_count(interval: tuple[float, float], n_images: int, jpg_count: int) -> tuple[float, float]:
    """An accuracy interval over every test image rescaled to the tutorial's count (correct / .jpg files).

    correct / n lies in [lo, hi] exactly when correct / jpg lies in [lo * n / jpg, hi * n / jpg].
    """
    if jpg_count <= 0:
        raise ValueError("no .jpg files: the tutorial's accuracy is undefined (division by zero)")
    s = n_images / jpg_count
    return (interval[0] * s, interval[1] * s)


def _is_loss(metric: str) -> bool:
    return metric.endswith("loss")


def _diff(metric: str, diff: float) -> str:
    """A rate's difference in percentage points; a loss's relative to the paper's."""
    if _is_loss(metric):
        return f"{diff:+.4f}"
    return f"{diff * 100:+.2f} points"


def _loss_matches(value: float, paper: float, interval: tuple[float, float] | None) -> bool:
    if interval is not None and interval[0] <= paper <= interval[1]:
        return True
    return abs(value - paper) <= LOSS_RELATIVE_TOLERANCE * abs(paper) + 1e-12


def judge(metric: str, paper: float, ev: Evidence) -> Verdict:
    """The verdict on a model_result claim (``metric`` as in claims.yaml) given fracbench's evidence."""
    train = metric in TRAIN_FIT_METRICS
    category = "train fit" if train else "test"
    if ev.value is None:
        return Verdict(category, "not comparable", ev.problem or "no experiment reproduces it")
    diff = ev.value - paper
    if train:
        tag = "train-set fit: no evidence about test performance"
        if _is_loss(metric):
            ok = _loss_matches(ev.value, paper, ev.interval)
            how = f"within {LOSS_RELATIVE_TOLERANCE:.0%} of the paper's loss" if ok else \
                f"fracbench {_diff(metric, diff)} ({diff / paper:+.0%} of the paper's)"
        elif ev.interval is None:
            return Verdict(category, "not comparable", f"no interval for {metric}; {tag}")
        else:
            ok = ev.interval[0] <= paper <= ev.interval[1]
            how = f"inside fracbench's {ev.interval_kind}" if ok else \
                f"fracbench {_diff(metric, diff)}, outside the {ev.interval_kind}"
        return Verdict(category, "train fit matches" if ok else "train fit differs", f"{how}; {tag}")
    if ev.n_images is not None and ev.n_images < MIN_TEST_IMAGES:
        return Verdict(category, "no evidence", f"only {ev.n_images} test images (fewer than {MIN_TEST_IMAGES}): "
                                                f"fracbench {ev.value:.4f} says nothing either way")
    if _is_loss(metric):
        if _loss_matches(ev.value, paper, ev.interval):
            return Verdict(category, "reproduced", f"within {LOSS_RELATIVE_TOLERANCE:.0%} of the paper's loss")
        return Verdict(category, "not reproduced", f"fracbench {_diff(metric, diff)} ({diff / paper:+.0%} of the "
                                                   "paper's)")
    if ev.interval is None:
        return Verdict(category, "no evidence", f"no interval for {metric}, so no test of the difference "
                                                f"({_diff(metric, diff)})")
    inside = ev.interval[0] <= paper <= ev.interval[1]
    if not inside:
        return Verdict(category, "not reproduced", f"fracbench {_diff(metric, diff)} from the paper, outside the "
                                                   f"{ev.interval_kind}")
    if metric in _ACCURACIES:
        if ev.balanced is None or ev.majority is None:
            return Verdict(category, "no evidence", "accuracy inside the interval, but the balanced accuracy of that "
                                                    "checkpoint is not logged, so a majority-class answer cannot be "
                                                    "ruled out")
        return Verdict(category, "reproduced", f"inside fracbench's {ev.interval_kind}; balanced accuracy "
                                               f"{ev.balanced:.3f}, majority-class accuracy {ev.majority:.3f}")
    if metric in ("sensitivity", "specificity") and ev.balanced is not None and ev.balanced < paper - ONE_SIDED_MARGIN:
        # a specificity of 1.0 from a model that never calls "fractured" reproduces nothing: the paper
        # claims sensitivity and specificity together
        return Verdict(category, "not reproduced", f"{metric} alone matches, but balanced accuracy is only "
                                                   f"{ev.balanced:.3f}: the other rate is far below the paper's")
    return Verdict(category, "reproduced", f"inside fracbench's {ev.interval_kind}")
