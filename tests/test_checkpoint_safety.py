"""Tampered, damaged and hostile checkpoints: a CheckpointError naming the file, never a crash or code run.

A fracbench checkpoint is ``<name>.safetensors`` plus a ``<name>.json`` sidecar. Every way either
can be wrong ends in :class:`CheckpointError` whose message names the file at fault. Pickle files
are refused unless ``allow_pickle=True``, and even then are read with ``weights_only=True``: a
pickle carrying a ``__reduce__`` payload is refused, and the payload never runs.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fracbench.models import create_model
from fracbench.serving.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

SIZE = 32


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """A valid tiny_cnn checkpoint (weights + sidecar) in its own folder."""
    torch.manual_seed(0)
    model = create_model("tiny_cnn", image_size=SIZE)
    return save_checkpoint(tmp_path / "tiny", model, model_name="tiny_cnn", model_kwargs={}, image_size=SIZE,
                           channels=3, threshold=0.5)


def _refused(path: Path, names: Path | None = None, **kw: object) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kw)
    assert str(names or path) in str(info.value), str(info.value)
    return info.value


def test_good_checkpoint_loads(good: Path) -> None:
    ck = load_checkpoint(good)
    assert ck.meta["model"] == "tiny_cnn" and ck.image_size == SIZE
    assert not ck.model.training


# -------------------------------------------------------------------- the weights file


def test_random_bytes_instead_of_weights(good: Path) -> None:
    good.write_bytes(os.urandom(4096))
    err = _refused(good)
    assert "cannot read weights" in str(err)


def test_truncated_weights(good: Path) -> None:
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    err = _refused(good)
    assert "damaged or truncated" in str(err)


def test_empty_weights(good: Path) -> None:
    good.write_bytes(b"")
    _refused(good)


def test_header_claims_more_than_the_file_holds(good: Path) -> None:
    data = bytearray(good.read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")  # safetensors' header length: absurd
    good.write_bytes(bytes(data))
    _refused(good)


def test_wrong_shape_tensor(good: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(good))
    key = next(k for k, v in state.items() if v.ndim == 4)  # a conv kernel
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    save_file(state, str(good))
    err = _refused(good)
    assert "do not fit model 'tiny_cnn'" in str(err) and key in str(err)


def test_missing_and_extra_tensors(good: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(good))
    dropped = sorted(state)[0]
    del state[dropped]
    state["stowaway"] = torch.zeros(1)
    save_file(state, str(good))
    err = _refused(good)
    assert "do not fit" in str(err)


def test_weights_file_missing(good: Path) -> None:
    good.unlink()
    err = _refused(good)
    assert "no such checkpoint" in str(err)


# -------------------------------------------------------------------- the sidecar


def _edit_meta(good: Path, **changes: object) -> Path:
    sidecar = good.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta.update(changes)
    sidecar.write_text(json.dumps(meta))
    return sidecar


def test_sidecar_names_an_unknown_model(good: Path) -> None:
    sidecar = _edit_meta(good, model="resnet9000")
    err = _refused(good, names=sidecar)
    assert "resnet9000" in str(err)


def test_sidecar_missing(good: Path) -> None:
    sidecar = good.with_suffix(".json")
    sidecar.unlink()
    err = _refused(good, names=sidecar)
    assert "sidecar missing" in str(err)


@pytest.mark.parametrize("text", ["{not json", "", "\x00\x01\x02", '{"model": "tiny_cnn"', "\udcff"])
def test_sidecar_damaged(good: Path, text: str) -> None:
    sidecar = good.with_suffix(".json")
    sidecar.write_bytes(text.encode("utf-8", "surrogateescape"))
    err = _refused(good, names=sidecar)
    assert "damaged metadata" in str(err)


@pytest.mark.parametrize("text", ["42", "null", '"model preprocessing"', "[]", "[1, 2]"])
def test_sidecar_valid_json_but_not_an_object(good: Path, text: str) -> None:
    sidecar = good.with_suffix(".json")
    sidecar.write_text(text)
    _refused(good, names=sidecar)


@pytest.mark.parametrize("key", ["model", "preprocessing"])
def test_sidecar_lacks_a_key(good: Path, key: str) -> None:
    sidecar = good.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    del meta[key]
    sidecar.write_text(json.dumps(meta))
    err = _refused(good, names=sidecar)
    assert repr(key) in str(err)


@pytest.mark.parametrize("changes", [
    {"preprocessing": "32px"},
    {"preprocessing": {"image_size": "big", "channels": 3}},
    {"preprocessing": {"channels": 3}},
    {"preprocessing": {"image_size": 32, "channels": 0}},
    {"model_kwargs": {"no_such_argument": 1}},
    {"model_kwargs": [1, 2]},
    {"num_classes": "two"},
    {"model": ["tiny_cnn"]},
])
def test_sidecar_odd_values(good: Path, changes: dict[str, object]) -> None:
    sidecar = _edit_meta(good, **changes)
    _refused(good, names=sidecar)


def test_sidecar_with_other_channels_does_not_fit(good: Path) -> None:
    _edit_meta(good, preprocessing={"image_size": SIZE, "channels": 1})
    err = _refused(good)  # the weights are for 3 input channels: named as the weights file
    assert "do not fit" in str(err)


# -------------------------------------------------------------------- pickle


@pytest.fixture
def pickle_ckpt(good: Path) -> Path:
    """The same weights as a .pt state dict, with the sidecar beside it."""
    from safetensors.torch import load_file

    pt = good.with_suffix(".pt")
    torch.save(load_file(str(good)), pt)
    good.with_suffix(".json").rename(pt.with_suffix(".json"))
    good.unlink()
    return pt


def test_pickle_refused_by_default(pickle_ckpt: Path) -> None:
    err = _refused(pickle_ckpt)
    assert "pickle" in str(err) and "allow-pickle" in str(err)


def test_pickle_loads_when_allowed(pickle_ckpt: Path) -> None:
    ck = load_checkpoint(pickle_ckpt, allow_pickle=True)
    assert ck.meta["model"] == "tiny_cnn"


def test_pickle_read_with_weights_only(pickle_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    real = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(pickle_ckpt, allow_pickle=True)
    assert seen == [True]


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears if any code runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # our raw pickle.dump, as intended
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_never_runs(good: Path, tmp_path: Path, suffix: str, writer: str) -> None:
    marker = tmp_path / "pwned"
    evil = good.with_suffix(suffix)
    # a real-looking state dict with the payload tucked in
    state = {"features.0.weight": torch.zeros(1), "payload": _Payload(marker)}
    if writer == "torch.save":
        torch.save(state, evil)
    else:
        with open(evil, "wb") as fh:
            pickle.dump(state, fh)
    good.with_suffix(".json").rename(evil.with_suffix(".json"))  # the sidecar is there: unpickling is tried
    assert not marker.exists()

    err = _refused(evil)  # refused by default, not even opened
    assert "pickle" in str(err)
    assert not marker.exists()
    err = _refused(evil, allow_pickle=True)  # allowed: read with weights_only=True, which refuses `open`
    assert "cannot read weights" in str(err)
    assert not marker.exists()


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: the same payload does run under a plain unpickle, so the test above proves something."""
    marker = tmp_path / "pwned"
    torch.save({"payload": _Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_pickle_that_is_not_a_state_dict(pickle_ckpt: Path) -> None:
    torch.save([torch.zeros(3)], pickle_ckpt)
    _refused(pickle_ckpt, allow_pickle=True)


def test_export_checkpoint_carries_its_record(tmp_path):
    import json

    import torch

    from fracbench.models import create_model
    from fracbench.serving.checkpoint import (
        CheckpointError,
        export_checkpoint,
        load_checkpoint,
        save_checkpoint,
    )

    run = tmp_path / "runs" / "x" / "seed0"
    model = create_model("tiny_cnn", image_size=32)
    torch.manual_seed(0)
    ck = save_checkpoint(run / "checkpoints" / "best", model, model_name="tiny_cnn", model_kwargs={},
                         image_size=32, channels=3, threshold=0.3, record="../record.json")
    (run / "record.json").write_text(json.dumps({"experiment": "x"}))
    out = export_checkpoint(ck, tmp_path / "demo")
    assert json.loads((tmp_path / "demo" / "record.json").read_text()) == {"experiment": "x"}
    assert json.loads(out.with_suffix(".json").read_text())["record"] == "record.json"
    assert load_checkpoint(out).threshold == 0.3
    with pytest.raises(CheckpointError, match="limit"):
        export_checkpoint(ck, tmp_path / "small", max_bytes=10)
