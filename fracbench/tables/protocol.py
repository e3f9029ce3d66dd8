"""The protocol-inflation table: what each habit of the tutorial adds to test accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fracbench.tables.inputs import (
    Run,
    _by_experiment,
    _complete,
    _experiments,
    _failed_notes,
    _provenance,
    _used_runs,
    check_manifests,
)
from fracbench.tables.render import DASH, Table, _mean_sd, _points, _split_value


def protocol_table(runs: Sequence[Run], experiments: Any) -> Table:
    """Per seed and mean ± sd: what choosing on test, the test-time flip and the .jpg denominator add."""
    runs, failed = _complete(runs)
    exps = _experiments(experiments)
    by_exp = _by_experiment(runs)
    pexps = sorted((e for e in exps.values() if e.kind == "protocol_inflation"), key=lambda e: e.name)
    check_manifests(_used_runs(by_exp, pexps), "protocol")
    columns = ["experiment", "seed", "epochs", "epoch chosen on val AUROC", "epoch with best test acc",
               "test acc (val-chosen)", "test acc (test-chosen)", "(i) choosing on test",
               "flipped test acc (val-chosen)", "(ii) test-time flip", "(i)+(ii) best flipped over epochs",
               "mixed folder images (.jpg/.png)", "acc over all images", "acc over .jpg count",
               "(iii) .jpg denominator", "fracbench balanced acc", "fracbench majority-class acc"]
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
            rows.append([e.name, str(r.seed), str(fx(r, "epochs")), str(fx(r, "val_selected_epoch")),
                         str(fx(r, "test_selected_epoch")), _mean_sd([fx(r, "accuracy_val_selected")]),
                         _mean_sd([fx(r, "accuracy_test_selected")]), _points([fx(r, "test_selection")]),
                         _mean_sd([fx(r, "accuracy_flip_val_selected")]), _points([fx(r, "test_time_flip")]),
                         _points([fx(r, "selection_and_flip")]),
                         f"{fx(r, 'mixed_images')} ({fx(r, 'mixed_jpg')}/{fx(r, 'mixed_png')})",
                         _mean_sd([fx(r, "mixed_accuracy")]), _mean_sd([fx(r, "mixed_accuracy_as_counted")]),
                         _points([fx(r, "jpg_denominator")]), _mean_sd([r.test.get("balanced_accuracy")]),
                         _mean_sd([r.test.get("majority_accuracy")])])

        def ms(key: str, rs: list[Run] = rs) -> str:
            return _mean_sd([r.record["protocol_effects"].get(key) for r in rs])

        def mp(key: str, rs: list[Run] = rs) -> str:
            return _points([r.record["protocol_effects"].get(key) for r in rs])

        rows.append([e.name, "mean ± sd", DASH, DASH, DASH, ms("accuracy_val_selected"), ms("accuracy_test_selected"),
                     mp("test_selection"), ms("accuracy_flip_val_selected"), mp("test_time_flip"),
                     mp("selection_and_flip"), DASH, ms("mixed_accuracy"), ms("mixed_accuracy_as_counted"),
                     mp("jpg_denominator"), _mean_sd([r.test.get("balanced_accuracy") for r in rs]),
                     _split_value([r.test.get("majority_accuracy") for r in rs])])
        notes.append(_provenance(e, rs))
    notes = ["One honest training run per seed; per epoch the test set is scored with and without the tutorial's "
             "random flip (logged only; nothing is chosen on it). Accuracies here are at argmax (0.5), as the "
             "tutorial counts.",
             "(i) test accuracy at the first epoch with the best test accuracy minus at the epoch chosen on "
             "validation AUROC; (ii) flipped minus unflipped test accuracy of the validation-chosen checkpoint; "
             "(i)+(ii) the best flipped test accuracy over epochs (what the tutorial reports) minus the honest one; "
             "(iii) on a copy of the test folder with a third of the images stored as PNG: number correct over the "
             ".jpg count minus number correct over every image (the tutorial's glob counts '*.jpg' only).",
             "Balanced accuracy and majority-class accuracy: the validation-chosen checkpoint at its validation "
             "threshold on the test split."] + notes
    notes += _failed_notes(failed, [e.name for e in pexps])
    return Table("protocol", "Protocol inflation: what each habit of the tutorial adds to test accuracy (fracbench)",
                 columns, rows, notes)


