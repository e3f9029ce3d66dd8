"""The leak demonstration table: copies split at image level vs by source image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fracbench.claims.tables.effects import pair_effect, seed_effect
from fracbench.claims.tables.inputs import (
    HEADLINE_TEST_CLAIM,
    Claim,
    Run,
    _accuracy_as_reported,
    _by_experiment,
    _complete,
    _experiments,
    _failed_notes,
    _provenance,
    min_test_groups,
    paper_claim,
)
from fracbench.claims.tables.paired import accuracy_balance_note, one_seed_effect
from fracbench.claims.tables.render import DASH, Table, _finite, _mean_sd, _paper, _points, _split_value

# --------------------------------------------------------------------------------------------
# The leak demonstration and the protocol effects
# --------------------------------------------------------------------------------------------

_LEAK_VARIANTS = (("naive", "as_published"), ("naive", "honest"), ("grouped", "as_published"), ("grouped", "honest"))
_SPLIT_TITLE = {"naive": "(a) image-level random", "grouped": "(b) grouped by source image"}




def _leak_runs(exp_name: str, by_exp: Mapping[str, list[Run]], split: str, protocol: str) -> list[Run]:
    return by_exp.get(f"{exp_name}__{split}_{protocol}", [])


def _by_seed_diff(a: Sequence[Run], b: Sequence[Run], value) -> list[float]:
    """value(run a) - value(run b) for each seed present in both."""
    bs = {r.seed: r for r in b}
    out = []
    for r in a:
        if r.seed in bs:
            va, vb = value(r), value(bs[r.seed])
            if _finite([va, vb]) == [va, vb]:
                out.append(float(va) - float(vb))
    return out




def leak_table(runs: Sequence[Run], experiments: Any, claims: Sequence[Claim] | None = None) -> Table:
    """The leak demonstration: test metrics of (a) image-level and (b) grouped splits of copies, both protocols."""
    PAPER_TEST_ACCURACY = paper_claim(HEADLINE_TEST_CLAIM, claims).value  # noqa: N806 (the paper's number)
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    by_exp = _by_experiment(runs)
    leak_exps = sorted((e for e in exps.values() if e.kind == "leak_demo"), key=lambda e: e.name)
    columns = ["experiment", "split", "protocol", "seeds", "test images", "test images with a copy in train",
               "fracbench test accuracy", "fracbench balanced acc", "fracbench majority-class acc",
               "fracbench AUROC", "paper test accuracy"]
    rows = []
    notes = []
    for e in leak_exps:
        for split, protocol in _LEAK_VARIANTS:
            rs = _leak_runs(e.name, by_exp, split, protocol)
            name = f"{e.name}__{split}_{protocol}"
            if not rs:
                state = "failed" if any(r.experiment == name for r in failed) else "not run"
                rows.append([e.name, _SPLIT_TITLE[split], protocol.replace("_", " "), "none", DASH, DASH, state,
                             state, state, state, _paper(PAPER_TEST_ACCURACY)])
                continue
            info = [r.record.get("leak") or {} for r in rs]
            shares = _finite(i.get("test_share_with_a_copy_in_train") for i in info)
            leaked = sorted({int(i.get("test_images_with_a_copy_in_train", 0)) for i in info})
            n_test = sorted({int((r.record.get("counts") or {}).get("test", 0)) for r in rs})
            rows.append([e.name, _SPLIT_TITLE[split], protocol.replace("_", " "), ", ".join(str(r.seed) for r in rs),
                         ", ".join(map(str, n_test)),
                         ", ".join(map(str, leaked)) + (f" ({100 * shares[0]:.1f}%)" if shares else ""),
                         _mean_sd([_accuracy_as_reported(r) for r in rs]),
                         _mean_sd([r.test.get("balanced_accuracy") for r in rs]),
                         _split_value([r.test.get("majority_accuracy") for r in rs]),
                         _mean_sd([r.test.get("auroc") for r in rs]), _paper(PAPER_TEST_ACCURACY)])
        for protocol in ("as_published", "honest"):
            a = _leak_runs(e.name, by_exp, "naive", protocol)
            b = _leak_runs(e.name, by_exp, "grouped", protocol)
            rows.append([e.name, "(a) − (b): inflation by the leak", protocol.replace("_", " "),
                         ", ".join(sorted({str(r.seed) for r in a} & {str(r.seed) for r in b})) or "none", DASH, DASH,
                         leak_effect(a, b, "accuracy"), leak_effect(a, b, "balanced_accuracy"), DASH,
                         leak_effect(a, b, "auroc"), DASH])
        a = _leak_runs(e.name, by_exp, "naive", "as_published")
        gap = [PAPER_TEST_ACCURACY - v for v in _finite(_accuracy_as_reported(r) for r in a)]
        rows.append([e.name, f"paper − (a): gap left to {100 * PAPER_TEST_ACCURACY:.1f}%", "as published", ", ".join(str(r.seed) for r in a)
                     or "none", DASH, DASH, _points(gap), DASH, DASH, DASH, _paper(PAPER_TEST_ACCURACY)])
        some = next((r for s, p in _LEAK_VARIANTS for r in _leak_runs(e.name, by_exp, s, p)), None)
        if some is not None:
            info = some.record.get("leak") or {}
            notes.append(f"{e.name}: {info.get('source_images', '?')} source images of {info.get('source_dataset', '?')}"
                         f", {len(info.get('copies', []))} copies of each ({', '.join(info.get('copies', []))}; rot90 "
                         f"and rot270 turn counter-clockwise, hflip mirrors left-right), written as PNGs at "
                         f"{(some.record.get('config') or {}).get('image_size', '?')} px; dataset "
                         f"{some.record.get('dataset', '?')}.")
        ran = next((rs for s, p in _LEAK_VARIANTS if (rs := _leak_runs(e.name, by_exp, s, p))), [])
        notes.append("Each variant: " + _provenance(e, ran))
    notes = ["(a): every copy is dealt to train/val/test at random on its own (70/15/15), as a naive random split of "
             "the folder does, so copies of one radiograph sit on both sides; (b): all copies of a source image (and "
             "of its duplicates) go to one split. Same images, same model, same epochs.",
             "Test accuracy is what the protocol reports: as published, at argmax with the checkpoint chosen on test "
             "accuracy and test-time flip (the copies are PNG files, so the tutorial's .jpg count finds none and "
             "every image is counted); honest, at the validation threshold with the checkpoint chosen on validation "
             "AUROC. Balanced accuracy and majority-class accuracy (always answering the commoner class) stand "
             "beside it.",
             "(a) − (b): mean ± sd over seeds of the per-seed differences in percentage points with a 95% t-interval; one seed: a joint bootstrap over duplicate groups where the two test sets share images, else whether the two runs' 95% bootstrap CIs overlap; no accuracy difference where the fractured shares differ by more than 0.05 (see AUROC). 'no evidence' when the interval includes zero, the CIs overlap, fewer than 3 seeds ran (with no CIs) or the test set has fewer than 100 independent groups (copies of one source image count once). paper − (a): how far the leaky "
             f"split still is from the paper's {PAPER_TEST_ACCURACY}."] + notes
    notes += _failed_notes(failed, [f"{e.name}__{s}_{p}" for e in leak_exps for s, p in _LEAK_VARIANTS])
    return Table("leak", "Leak demonstration: rotated copies split at image level vs by source image (fracbench)",
                 columns, rows, notes)




def _metric(r: Run, metric: str) -> float | None:
    v = _accuracy_as_reported(r) if metric == "accuracy" else r.test.get(metric)
    return None if v is None else float(v)


def leak_effect(a: Sequence[Run], b: Sequence[Run], metric: str) -> str:
    """(a) − (b) for ``metric``: over seeds with a 95% CI, or for one seed from the runs' own CIs; else no evidence."""
    n_test = min_test_groups([*a, *b])  # independent groups, not images: copies count once
    if metric == "accuracy" and (why := accuracy_balance_note(a, b)):
        return why
    diffs = _by_seed_diff(a, b, lambda r: _metric(r, metric))
    if len(diffs) == 1:
        ra = a[0] if len(a) == 1 else next(r for r in a if r.seed in {x.seed for x in b})
        rb = next(r for r in b if r.seed == ra.seed)
        va, vb = _metric(ra, metric), _metric(rb, metric)
        if va is not None and vb is not None:
            ci_key = f"{metric}_ci95"
            # the accuracy CI is over every image; as-published counts may differ (see the jpg note)
            return one_seed_effect(ra, rb, metric, n_test, lambda: pair_effect(
                va, ra.test.get(ci_key), vb, rb.test.get(ci_key), n_test)).cell()
    return seed_effect(diffs, n_test).cell()
