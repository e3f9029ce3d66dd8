"""fracbench localise: pointing-game rates written beside the checkpoint and into its metadata."""

from __future__ import annotations

import json

from fracbench.checkpoint import save_checkpoint
from fracbench.cli import main
from fracbench.data.synthetic import SyntheticSpec, generate
from fracbench.models import create_model


def test_localise_writes_rates(tmp_path):
    data = generate(SyntheticSpec(count=40, size=64, seed=2), tmp_path / "syn")
    ck = save_checkpoint(tmp_path / "ck" / "best", create_model("tiny_cnn", image_size=32), model_name="tiny_cnn",
                         model_kwargs={}, image_size=32, channels=3, threshold=0.5)
    assert main(["localise", str(ck), "--dataset", "synthetic", "--data-dir", str(data), "--split", "train",
                 "--synthetic", "4", "--quiet"]) == 0
    out = json.loads((ck.parent / "pointing_game.json").read_text())
    assert out["synthetic"]["n"] == 4 and 0 <= out["synthetic"]["rate"] <= 1
    assert out["synthetic"]["hits"] <= out["synthetic"]["n"]
    assert out["synthetic"]["n"] > 0 and out["synthetic"]["rate"] == out["synthetic"]["hits"] / out["synthetic"]["n"]
    assert out["synthetic"] and out["synthetic"] is not None
    meta = json.loads(ck.with_suffix(".json").read_text())
    assert meta["pointing_game"]["n"] > 0  # the train split of the generated set has fractured images
