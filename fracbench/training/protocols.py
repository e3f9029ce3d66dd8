"""The two evaluation protocols, side by side.

``as_published`` is what the paper's tutorial code does:
  * the random horizontal flip of training is also applied to test images;
  * after every epoch the test set is scored and the checkpoint with the best *test* accuracy is
    kept and reported, so the test set chooses the model;
  * accuracy is ``correct / len(glob(test_path + '/**/*.jpg'))``: the denominator counts only
    files ending in ".jpg", so images of other types are scored but not counted;
  * the decision is the argmax of the two logits (threshold 0.5).
``honest`` chooses the checkpoint by validation AUROC, evaluates deterministically (no test-time
flip), chooses the threshold on validation (Youden's J), and scores the test set once at the end
with that checkpoint and threshold. Test metrics logged per epoch under ``honest`` feed the
learning curves only; nothing reads them to make a choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    select_on: str  # "val_auroc" or "test_accuracy"
    test_time_flip: bool
    jpg_denominator: bool
    threshold_from_val: bool


PROTOCOLS = {
    "as_published": Protocol("as_published", "test_accuracy", True, True, False),
    "honest": Protocol("honest", "val_auroc", False, False, True),
}


def jpg_count(paths: Sequence[str]) -> int:
    """What the tutorial's ``glob('**/*.jpg')`` counts: names ending in lower-case '.jpg' only."""
    return sum(1 for p in paths if p.endswith(".jpg"))
