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
- A test claim judged on fewer than :data:`MIN_TEST_GROUPS` independent test groups reads "no evidence".
  Copies of one radiograph are one unit of evidence: 200 images in 5 duplicate groups are 5, not 200.
- A match that needs an artefact of the evaluation is not a reproduction: when the paper's value is
  inside the interval only because accuracy is divided by the number of ``.jpg`` test files (the
  interval over every test image misses it), because the checkpoint was chosen on the test set, or
  because the split holds copies of test images in train, the verdict names it ("reached only through
  the .jpg denominator", ... :data:`ARTEFACT_VERDICTS`), never "reproduced".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fracbench.metrics import wilson_ci  # noqa: F401  (this module's API; the statistic lives with the metrics)

__all__ = [
    "LOSS_RELATIVE_TOLERANCE",
    "MIN_TEST_GROUPS",
    "MIN_TEST_IMAGES",
    "ARTEFACT_VERDICTS",
    "ONE_SIDED_MARGIN",
    "REDUCED_BUDGET",
    "TRAIN_FIT_METRICS",
    "REACHED_COPIES_OPEN",
    "SPLIT_VERDICTS",
    "Evidence",
    "Verdict",
    "VERDICTS",
    "judge",
    "judge_splits",
    "reaches",
    "scale_to_jpg_count",
    "too_few",
    "wilson_ci",
    "with_budget",
]

# Fewer independent test groups than this and a test-set number is no evidence either way (a 95% interval
# on 100 independent images is still about ±8 points wide at 50%). A group is a duplicate group of the
# manifest (an image and its exact or near copies); copies add images, not evidence.
MIN_TEST_GROUPS = 100
MIN_TEST_IMAGES = MIN_TEST_GROUPS  # the old name; it always meant independent images, i.e. groups
# A loss matches when it is within this fraction of the paper's loss (0.2: 0.0062 matches 0.0050-0.0074).
LOSS_RELATIVE_TOLERANCE = 0.2
# sensitivity/specificity: reproduced only if balanced accuracy is not more than this below the paper's rate
ONE_SIDED_MARGIN = 0.01
TRAIN_FIT_METRICS: tuple[str, ...] = ("train_loss", "train_accuracy")
_ACCURACIES = ("accuracy", "test_accuracy")

# artefact of the evaluation -> the verdict of a match that needs it (in this order when several do: the
# verdict then names them all, e.g. "reached only through the .jpg denominator and test-set selection")
ARTEFACT_VERDICTS: dict[str, str] = {
    "jpg_denominator": "reached only through the .jpg denominator",
    "leaked_split": "reached only through a leaked split",
    "test_selection": "reached only through test-set selection",
}
_ARTEFACT_REASONS: dict[str, str] = {
    "jpg_denominator": "inside the interval only as the tutorial counts it (correct / number of .jpg test files); "
                       "over every test image {all_images} it is not",
    "leaked_split": "the split holds copies of test images in train (a leaked split)",
    "test_selection": "the checkpoint was chosen on test accuracy, so the test set picked this number",
}

# category -> the verdicts it may carry (the claims table counts them per category)
VERDICTS: dict[str, tuple[str, ...]] = {
    "test": ("reproduced", *ARTEFACT_VERDICTS.values(), "not reproduced", "no evidence", "not comparable"),
    "train fit": ("train fit matches", "train fit differs", "not comparable"),
}
# what the published split, the grouped split (no copy across train/test) and their difference say about
# a headline accuracy claim of the paper (judge_splits)
REACHED_COPIES_OPEN = "reached on the published split (without copies: no evidence)"
SPLIT_VERDICTS: tuple[str, ...] = ("reached only with train/test copies", "reached without copies",
                                   REACHED_COPIES_OPEN, "reached only on test images with a copy in train",
                                   "not reached on any split", "no evidence", "not run")


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
    n_groups: int | None = None  # distinct duplicate groups behind the number (None: n_images, no copies known)
    # when ``interval`` counts correct / number of .jpg test files: the interval over every test image
    all_images_interval: tuple[float, float] | None = None
    # artefacts of the evaluation the number depends on: "test_selection" (checkpoint chosen on test),
    # "leaked_split" (test images with copies in train); see ARTEFACT_VERDICTS
    artefacts: tuple[str, ...] = ()
    # what ran when it is not the paper's configuration, e.g. "8/50 epochs, 96 px, 1/5 seeds" ("" = the paper's)
    budget: str = ""


# verdicts that are not a judgement (nothing was compared): no budget clause
_NO_JUDGEMENT = ("not comparable", "no evidence", "not run")
REDUCED_BUDGET = "at a reduced budget"


@dataclass(frozen=True)
class Verdict:
    category: str  # "test" or "train fit"
    verdict: str  # one of VERDICTS[category]
    reason: str
    budget: str = ""  # what ran when it is not the paper's configuration (Evidence.budget)

    @property
    def shown(self) -> str:
        """The verdict as a table states it: with "at a reduced budget (...)" when the records are not the
        paper's configuration, so that "not reproduced" is never said of a shortened run bare."""
        return with_budget(self.verdict, self.budget)


UNDECIDED = "undecided"  # what a negative verdict over reduced-budget records is shown as
_NEGATIVE = ("not reproduced", "not reached on any split")


def with_budget(verdict: str, budget: str) -> str:
    """``verdict`` followed by the budget clause when ``budget`` says the run was not the paper's configuration.

    A run shorter than the paper's that does reach a claim shows that the claim can be reached; one that does
    not shows nothing about the paper's configuration: its negative verdict is shown as "undecided", never as
    "not reached" or "not reproduced" (that would read as a property of the claim, not of the budget)."""
    import re

    if not budget or verdict in _NO_JUDGEMENT:
        return verdict
    # one budget, or several splits' ("label: budget; ..."): the paper's configuration when each is seeds only
    parts = [p.strip().rsplit(": ", 1)[-1] for p in budget.split("; ")]
    if all(p == "the full profile" or re.fullmatch(r"\d+/\d+ seeds?", p) for p in parts):
        # the paper's epochs and image size, fewer seeds than fracbench's full profile: the paper's own
        # configuration (the paper reports one run), so the verdict stands, with the seeds said
        return f"{verdict} (the paper's configuration, {budget})"
    if verdict in _NEGATIVE:
        return f"{UNDECIDED} {REDUCED_BUDGET} ({budget}): the paper's configuration not run"
    return f"{verdict} {REDUCED_BUDGET} ({budget})"


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


def too_few(ev: Evidence) -> str:
    """Why ``ev``'s test set is too small to be evidence ("" when it is not): fewer than
    :data:`MIN_TEST_GROUPS` distinct groups (its images when no groups are known)."""
    groups = ev.n_groups if ev.n_groups is not None else ev.n_images
    if groups is None or groups >= MIN_TEST_GROUPS:
        return ""
    if ev.n_images is not None and ev.n_images != groups:
        return f"only {groups} independent test groups in {ev.n_images} images (fewer than {MIN_TEST_GROUPS} groups)"
    return f"only {groups} test images (fewer than {MIN_TEST_GROUPS})"


def judge(metric: str, paper: float, ev: Evidence) -> Verdict:
    """The verdict on a model_result claim (``metric`` as in claims.yaml) given fracbench's evidence.

    A test claim that would read "reproduced" but needs an artefact of the evaluation (the ``.jpg``
    denominator, test-set selection, a leaked split) reads "reached only through ..." instead.
    """
    v = replace(_judge(metric, paper, ev), budget=ev.budget)
    if v.category != "test" or v.verdict != "reproduced":
        return v
    needs = []
    lo_hi = ev.all_images_interval
    if lo_hi is not None and not lo_hi[0] <= paper <= lo_hi[1]:
        needs.append("jpg_denominator")
    needs += [a for a in ARTEFACT_VERDICTS if a in ev.artefacts and a != "jpg_denominator"]
    unknown = sorted(set(ev.artefacts) - set(ARTEFACT_VERDICTS))
    if unknown:
        raise ValueError(f"unknown artefact(s) {unknown}; known: {list(ARTEFACT_VERDICTS)}")
    if not needs:
        return v
    names = [ARTEFACT_VERDICTS[a].removeprefix("reached only through ") for a in needs]
    verdict = "reached only through " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])
    shown = f"[{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]" if lo_hi is not None else ""
    why = "; ".join(_ARTEFACT_REASONS[a].format(all_images=shown) for a in needs)
    return Verdict(v.category, verdict, f"{why}; not a reproduction ({v.reason})", ev.budget)


def _judge(metric: str, paper: float, ev: Evidence) -> Verdict:
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
    if too_few(ev):
        return Verdict(category, "no evidence", f"{too_few(ev)}: fracbench {ev.value:.4f} says nothing either way")
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


def _usable(ev: Evidence) -> str:
    """Why ``ev`` cannot say whether a split reaches a value ("" when it can)."""
    if ev.value is None:
        return ev.problem or "not run"
    if too_few(ev):
        return too_few(ev)
    if ev.interval is None:
        return "no 95% interval"
    if ev.balanced is None or ev.majority is None:
        return "balanced or majority-class accuracy unknown, so a majority-class answer cannot be ruled out"
    return ""


def reaches(paper: float, ev: Evidence) -> bool | None:
    """Whether a split's test accuracy reaches the paper's value: the value is inside the run's 95% interval
    or below it (the run does at least as well). None when the evidence cannot say (:func:`_usable`)."""
    if _usable(ev):
        return None
    assert ev.interval is not None
    return paper <= ev.interval[1]


def _shown(label: str, paper: float, ev: Evidence) -> str:
    assert ev.value is not None and ev.interval is not None
    lo, hi = ev.interval
    where = "inside" if lo <= paper <= hi else "below" if paper < lo else "above"
    return (f"{label} {ev.value:.4f} [{lo:.4f}, {hi:.4f}] (paper's {paper:.4f} {where} it; balanced "
            f"{ev.balanced:.3f}, majority-class {ev.majority:.3f})")


def judge_splits(paper: float, published: Evidence, grouped: Sequence[tuple[str, Evidence]],
                 copies: Evidence | None = None) -> Verdict:
    """Does a headline accuracy claim need train/test copies? See :func:`_judge_splits`; the verdict carries
    the budget of the splits that ran (:attr:`Evidence.budget`), shown as "... at a reduced budget (...)"."""
    # the copies' evidence is the published split's own runs: its budget is the published one
    budget = split_budgets([("published split", published.budget)]
                           + [(label, ev.budget) for label, ev in grouped if ev.value is not None])
    return replace(_judge_splits(paper, published, grouped, copies), budget=budget)


def split_budgets(labelled: Sequence[tuple[str, str]]) -> str:
    """The budgets of several splits as one clause: the budget alone when every split ran the same, else each
    budget with the splits that ran it ("published split: 3/5 seeds; grouped split, honest: 1/5 seeds")."""
    by: dict[str, list[str]] = {}
    for label, b in labelled:
        by.setdefault(b, []).append(label)
    if len(by) <= 1:
        return next(iter(by), "")
    return "; ".join(f"{' and '.join(labels)}: {b or 'the full profile'}" for b, labels in by.items())


def _judge_splits(paper: float, published: Evidence, grouped: Sequence[tuple[str, Evidence]],
                  copies: Evidence | None = None) -> Verdict:
    """Does a headline accuracy claim need train/test copies? Pure rule over the splits' evidence.

    ``published``: the release's own split, scored as the paper scores (copies of test images sit in
    train). ``grouped``: (label, evidence) of the re-split where no exact or near copy crosses train and
    test, under one or more protocols. A split "reaches" the claim per :func:`reaches`.

    - "reached without copies": some grouped split reaches it;
    - "reached only with train/test copies": the published split reaches it and no grouped split does
      (each grouped one usable);
    - "reached only on test images with a copy in train": neither does, but ``copies`` (the published
      split's test images that have an exact or near copy in train) does: a test set made of copies;
    - "not reached on any split": neither does (the grouped ones that were run);
    - "reached on the published split (without copies: no evidence)": the published split reaches it, and no
      grouped split that could say whether it is reached without copies was run (too few groups, or none);
    - "no evidence": the published split has too few images or no interval;
    - "not run": the published split was not run.
    """
    if published.value is None:
        return Verdict("split", "not run", published.problem or "the published split was not run")
    why = _usable(published)
    if why:
        return Verdict("split", "no evidence", f"published split: {why}")
    pub = reaches(paper, published)
    ran = [(label, ev) for label, ev in grouped if ev.value is not None]
    usable = [(label, ev) for label, ev in ran if not _usable(ev)]
    text = "; ".join([_shown("published", paper, published), *(_shown(label, paper, ev) for label, ev in usable)])
    hit = [label for label, ev in usable if reaches(paper, ev)]
    if hit:
        return Verdict("split", "reached without copies", f"{', '.join(hit)} reaches it with no copy across "
                                                          f"train and test: {text}")
    unusable = [f"{label}: {_usable(ev)}" for label, ev in ran if _usable(ev)]
    share = ""
    if copies is not None and copies.n_images and published.n_images:
        share = (f" ({copies.n_images} of its {published.n_images} test images, "
                 f"{copies.n_images / published.n_images:.1%}, have an exact or near copy in train)")
    if pub:
        if not ran:
            return Verdict("split", REACHED_COPIES_OPEN, f"the published split reaches it{share} but no grouped split "
                                                         f"was run, so whether copies are needed is unknown: {text}")
        if unusable:
            return Verdict("split", REACHED_COPIES_OPEN, f"the published split reaches it{share}; whether it needs the "
                                                         f"copies is not known: {'; '.join(unusable)}: {text}")
        return Verdict("split", "reached only with train/test copies",
                       f"the published split reaches it{share}, the grouped split (no copy across train and test) does "
                       f"not: {text}")
    missing = "" if ran else " (no grouped split was run)"
    missing += f" ({'; '.join(unusable)})" if unusable else ""
    if copies is not None and copies.value is not None and not _usable(copies):
        shown = _shown("published split's test images with a copy in train", paper, copies)
        if reaches(paper, copies):
            return Verdict("split", "reached only on test images with a copy in train",
                           f"no whole split reaches it{missing}, its test images that have a copy in train do: "
                           f"{shown}; {text}")
        text = f"{text}; {shown}"
    return Verdict("split", "not reached on any split", f"no split that was run reaches it{missing}: {text}")
