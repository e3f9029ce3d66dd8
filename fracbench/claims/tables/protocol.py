"""The protocol-inflation table: what each habit of the tutorial adds to test accuracy.

Effect (i), choosing the checkpoint on test, is shown split into its two changes (fracbench.claims.inflation.
selection_decomposition): (i-a) test instead of validation data with the same criterion (accuracy) and
(i-b) accuracy instead of AUROC as the criterion on validation data. Effect (iii), the .jpg denominator,
is measured on each dataset's real test folder from the as-published records (0 where every test file
is a .jpg); the synthetic 1/3-PNG copy of the folder stays as a labelled illustration only. Summary
rows state each effect with its 95% CI over seeds or "no evidence" (fracbench.claims.tables.effects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fracbench.claims.inflation import jpg_denominator_effect, selection_decomposition
from fracbench.claims.tables.effects import seed_effect
from fracbench.claims.tables.inputs import (
    Run,
    _by_experiment,
    _complete,
    _experiments,
    _failed_notes,
    _provenance,
    _used_runs,
    check_manifests,
    min_test_groups,
)
from fracbench.claims.tables.render import DASH, Table, _mean_sd, _points, _split_value

_JPG_COLUMN = "(iii) .jpg denominator on the real test folder"


def _decomposed(r: Run) -> dict[str, Any]:
    try:
        return selection_decomposition(r.epochs, int(r.record["protocol_effects"]["val_selected_epoch"]))
    except (KeyError, ValueError, TypeError):
        return {}


def _n_test(rs: Sequence[Run]) -> int | None:
    """The fewest independent test groups over the runs (what MIN_TEST_GROUPS counts)."""
    return min_test_groups(rs)


def protocol_table(runs: Sequence[Run], experiments: Any) -> Table:
    """Per seed, then each effect with its 95% CI over seeds (or "no evidence"), beside majority-class accuracy."""
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    by_exp = _by_experiment(runs)
    pexps = sorted((e for e in exps.values() if e.kind == "protocol_inflation"), key=lambda e: e.name)
    check_manifests(_used_runs(by_exp, pexps), "protocol")
    columns = ["experiment", "seed", "epochs", "epoch chosen on val AUROC", "epoch chosen on val acc",
               "epoch with best test acc", "test acc (val-AUROC-chosen)", "test acc (val-acc-chosen)",
               "test acc (test-chosen)", "(i-a) test instead of val data (criterion: accuracy)",
               "(i-b) accuracy instead of AUROC (on val data)", "(i) choosing on test (both changes)",
               "flipped test acc (val-chosen)", "(ii) test-time flip", "(i)+(ii) best flipped over epochs",
               "illustration: synthetic 1/3-PNG folder (.jpg/.png)", "illustration: .jpg denominator there",
               _JPG_COLUMN, "fracbench balanced acc", "fracbench majority-class acc"]
    rows = []
    notes = []
    for e in pexps:
        rs = [r for r in by_exp.get(e.name, []) if isinstance(r.record.get("protocol_effects"), dict)]
        if not rs:
            state = "failed" if any(r.experiment == e.name for r in failed) else "not run"
            rows.append([e.name, "none", *[state] * (len(columns) - 2)])
            continue

        def fx(r: Run, key: str) -> Any:
            return r.record["protocol_effects"].get(key)

        for r in rs:
            dec = _decomposed(r)
            rows.append([e.name, str(r.seed), str(fx(r, "epochs")), str(fx(r, "val_selected_epoch")),
                         str(dec.get("val_accuracy_selected_epoch", DASH)), str(fx(r, "test_selected_epoch")),
                         _mean_sd([fx(r, "accuracy_val_selected")]),
                         _mean_sd([dec.get("accuracy_val_accuracy_selected")]),
                         _mean_sd([fx(r, "accuracy_test_selected")]), _points([dec.get("selection_data")]),
                         _points([dec.get("selection_criterion")]), _points([fx(r, "test_selection")]),
                         _mean_sd([fx(r, "accuracy_flip_val_selected")]), _points([fx(r, "test_time_flip")]),
                         _points([fx(r, "selection_and_flip")]),
                         f"{fx(r, 'mixed_images')} ({fx(r, 'mixed_jpg')}/{fx(r, 'mixed_png')})",
                         _points([fx(r, "jpg_denominator")]), DASH, _mean_sd([r.test.get("balanced_accuracy")]),
                         _mean_sd([r.test.get("majority_accuracy")])])

        n = _n_test(rs)

        def ms(key: str, rs: list[Run] = rs) -> str:
            return _mean_sd([r.record["protocol_effects"].get(key) for r in rs])

        def eff(key: str, rs: list[Run] = rs, n: int | None = n) -> str:
            return seed_effect([r.record["protocol_effects"].get(key) for r in rs], n).cell()

        def deff(key: str, rs: list[Run] = rs, n: int | None = n) -> str:
            return seed_effect([_decomposed(r).get(key) for r in rs], n).cell()

        rows.append([e.name, "effect over seeds", DASH, DASH, DASH, DASH, ms("accuracy_val_selected"),
                     _mean_sd([_decomposed(r).get("accuracy_val_accuracy_selected") for r in rs]),
                     ms("accuracy_test_selected"), deff("selection_data"), deff("selection_criterion"),
                     eff("test_selection"), ms("accuracy_flip_val_selected"), eff("test_time_flip"),
                     eff("selection_and_flip"), DASH, "illustration only (not a measurement on real data)", DASH,
                     _mean_sd([r.test.get("balanced_accuracy") for r in rs]),
                     _split_value([r.test.get("majority_accuracy") for r in rs])])
        notes.append(_provenance(e, rs))
    rows += _jpg_rows(runs, columns)
    notes = ["One honest training run per seed; per epoch the test set is scored with and without the tutorial's "
             "random flip (logged only; nothing is chosen on it). Accuracies here are at argmax (0.5), as the "
             "tutorial counts.",
             "(i) test accuracy at the first epoch with the best test accuracy minus at the epoch chosen on "
             "validation AUROC. It mixes two changes, shown apart: (i-a) the same criterion, accuracy, chosen on "
             "test minus chosen on validation (what using test data adds); (i-b) on validation data, accuracy "
             "minus AUROC as the criterion. (i-a) + (i-b) = (i). (ii) flipped minus unflipped test accuracy of the "
             "validation-chosen checkpoint; (i)+(ii) the best flipped test accuracy over epochs (what the tutorial "
             "reports) minus the honest one.",
             "Effect over seeds: mean ± sd of the per-seed differences in points with a 95% t-interval of the "
             "mean; 'no evidence' when the interval includes zero, fewer than 3 seeds ran, or the test set has "
             "fewer than 100 independent test groups (copies of one image count once). Majority-class accuracy (always answering the commoner class) stands beside.",
             "(iii) the .jpg denominator, per dataset: rows '.jpg denominator on <dataset>' take every as-published "
             "record's correct/.jpg count minus correct/images on that dataset's real test folder (0 where every "
             "test file is a .jpg). The illustration columns score a synthetic copy of the test folder with a "
             "third of the images re-saved as PNG: arithmetic on an invented format mix, not a property of any "
             "dataset.",
             "Balanced accuracy and majority-class accuracy: the validation-chosen checkpoint at its validation "
             "threshold on the test split."] + notes
    notes += _failed_notes(failed, [e.name for e in pexps])
    return Table("protocol", "Protocol inflation: what each habit of the tutorial adds to test accuracy (fracbench)",
                 columns, rows, notes)


def _jpg_rows(runs: Sequence[Run], columns: Sequence[str]) -> list[list[str]]:
    """(iii) on real folders: one row per dataset from its as-published records (records' own counts)."""
    by_ds: dict[str, list[Run]] = {}
    for r in runs:
        if r.record.get("protocol") == "as_published" and jpg_denominator_effect(r.test) is not None:
            by_ds.setdefault(str(r.record.get("dataset", "?")), []).append(r)
    rows = []
    for ds, rs in sorted(by_ds.items()):
        counts = sorted({(int((r.record.get("counts") or {}).get("test", 0)),
                          int((r.record.get("counts") or {}).get("test_denominator", 0))) for r in rs})
        effects = sorted({round(jpg_denominator_effect(r.test) or 0.0, 12) for r in rs})
        cell = _points(effects[:1]) if len(effects) == 1 else f"{_points(effects[:1])} to {_points(effects[-1:])}"
        if all(n == d for n, d in counts):
            cell = "0 (the .jpg count is the image count)"
        row = [f".jpg denominator on {ds}", f"{len(rs)} as-published record(s)",
               "; ".join(f"{n} test images, {d} .jpg" for n, d in counts), *[DASH] * (len(columns) - 3)]
        row[columns.index(_JPG_COLUMN)] = cell
        rows.append(row)
    return rows
