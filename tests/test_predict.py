"""Tests for fracbench.predict and `fracbench predict`: preprocessing, formats, folders, failures, CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from fracbench.checkpoint import load_checkpoint, save_checkpoint
from fracbench.cli import main
from fracbench.data.cache import resize_square
from fracbench.data.decode import decode_image
from fracbench.data.synthetic import render_case
from fracbench.loader import to_input
from fracbench.models import create_model
from fracbench.predict import best_checkpoint, find_checkpoints, predict_array, predict_paths, preprocess

SIZE = 64


@pytest.fixture(scope="session")
def ckpt_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("paper_cnn", image_size=SIZE)
    out = tmp_path_factory.mktemp("ckpt") / "paper"
    return save_checkpoint(out, model, model_name="paper_cnn", model_kwargs={}, image_size=SIZE, channels=3,
                           threshold=0.5)


@pytest.fixture(scope="session")
def ckpt(ckpt_path: Path):
    return load_checkpoint(ckpt_path)


def _xray(i: int = 0, size: int = 96) -> np.ndarray:
    return render_case(np.random.default_rng([5, i]), size, i % 2 == 0, 0.5).pixels


def _dicom(path: Path, pixels: np.ndarray) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (pixels.astype(np.uint16) * 16).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_preprocess_is_the_training_pipeline() -> None:
    px = _xray(0, 90)
    x = preprocess(px, SIZE, 3)
    assert x.shape == (1, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert torch.equal(x, to_input(torch.from_numpy(np.array(resize_square(px, SIZE)))[None], 3))
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert preprocess(px, SIZE, 1).shape == (1, 1, SIZE, SIZE)
    # colour input: reduced to luminance, as the decoder would
    assert torch.equal(preprocess(np.repeat(px[:, :, None], 3, axis=2), SIZE, 3), x)
    with pytest.raises(ValueError):
        preprocess(px.astype(np.float32), SIZE, 3)


def test_png_jpeg_dicom(tmp_path: Path, ckpt) -> None:
    px = _xray(1)
    Image.fromarray(px).save(tmp_path / "a.png")
    Image.fromarray(px).save(tmp_path / "b.jpg", quality=95)
    _dicom(tmp_path / "c.dcm", px)
    rows, failures = predict_paths(ckpt, [tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.dcm"])
    assert failures == []
    assert [Path(r["file"]).name for r in rows] == ["a.png", "b.jpg", "c.dcm"]
    for r in rows:
        assert 0.0 <= r["p_fracture"] <= 1.0
        assert r["decision"] == ("fractured" if r["p_fracture"] >= ckpt.threshold else "not fractured")
    assert rows[0]["p_fracture"] == pytest.approx(predict_array(ckpt, px), abs=1e-6)
    assert rows[0]["p_fracture"] == pytest.approx(predict_array(ckpt, decode_image(tmp_path / "a.png").pixels))
    # a 12-bit DICOM of the same pixels is stretched back to the same 8-bit image
    assert rows[2]["p_fracture"] == pytest.approx(rows[0]["p_fracture"], abs=1e-3)


def test_folder_with_broken_and_missing_files(tmp_path: Path, ckpt) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_xray(i)).save(folder / ("sub" if i == 2 else ".") / f"ok{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    rows, failures = predict_paths(ckpt, [folder, tmp_path / "missing.png"], batch_size=2)
    assert sorted(Path(r["file"]).name for r in rows) == ["ok0.png", "ok1.png", "ok2.png"]
    reasons = {Path(f["file"]).name: f["reason"] for f in failures}
    assert set(reasons) == {"broken.png", "empty.jpg", "missing.png"}
    assert "empty" in reasons["empty.jpg"] and "no such file" in reasons["missing.png"]
    empty = tmp_path / "nothing"
    empty.mkdir()
    rows, failures = predict_paths(ckpt, [empty])
    assert rows == [] and "no image files" in failures[0]["reason"]


def _fake_run(results: Path, exp: str, meta_auroc: float | None, record_auroc: float | None) -> Path:
    run = results / "runs" / exp / "seed0"
    extra = {"experiment": exp}
    if meta_auroc is not None:
        extra["val_auroc"] = meta_auroc
    path = save_checkpoint(run / "checkpoints" / "best", create_model("tiny_cnn", image_size=32),
                           model_name="tiny_cnn", model_kwargs={}, image_size=32, channels=3, threshold=0.4,
                           record=str(run / "record.json"), extra=extra)
    if record_auroc is not None:
        (run / "record.json").write_text(json.dumps({"metrics": {"val": {"auroc": record_auroc}}}))
    return path


def test_find_and_best_checkpoint(tmp_path: Path) -> None:
    assert best_checkpoint(tmp_path / "absent") is None
    assert best_checkpoint(tmp_path) is None
    a = _fake_run(tmp_path, "a", 0.61, None)
    b = _fake_run(tmp_path, "b", 0.83, 0.5)  # the sidecar wins over the record
    c = _fake_run(tmp_path, "c", None, 0.72)  # record only
    (tmp_path / "runs" / "junk.safetensors").write_bytes(b"no sidecar: not a fracbench checkpoint")
    found = find_checkpoints(tmp_path)
    assert [p for p, _ in found] == [a, b, c]
    assert found[0][1]["model"] == "tiny_cnn"
    assert best_checkpoint(tmp_path) == b
    d = _fake_run(tmp_path, "d", float("nan"), 0.9)  # nan in the sidecar: fall back to the record
    assert best_checkpoint(tmp_path) == d


def test_cli_predict_writes_csv_and_cams(tmp_path: Path, ckpt_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_xray(i)).save(folder / f"x{i}.png")
    (folder / "bad.jpg").write_bytes(b"garbage")
    out = tmp_path / "out" / "pred.csv"
    cams = tmp_path / "cams"
    code = main(["predict", str(folder), "--checkpoint", str(ckpt_path), "--csv", str(out), "--cam", str(cams),
                 "--quiet"])
    assert code == 0
    with out.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [Path(r["file"]).name for r in table] == ["x0.png", "x1.png", "bad.jpg"]
    assert all(0 <= float(r["p_fracture"]) <= 1 for r in table[:2])
    assert table[2]["p_fracture"] == "" and table[2]["error"]
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left behind
    pngs = sorted(p.name for p in cams.glob("*.png"))
    assert pngs == ["x0_cam.png", "x1_cam.png"]
    assert np.asarray(Image.open(cams / "x0_cam.png")).shape == (96, 96, 3)
    # nothing predicted: exit 1
    assert main(["predict", str(folder / "bad.jpg"), "--checkpoint", str(ckpt_path), "--quiet"]) == 1


def test_cli_predict_without_checkpoint(tmp_path: Path) -> None:
    assert main(["predict", str(tmp_path), "--results", str(tmp_path / "none"), "--quiet"]) == 2
    # a pickle checkpoint is refused unless --allow-pickle (CheckpointError -> exit 2)
    (tmp_path / "m.pt").write_bytes(b"")
    assert main(["predict", str(tmp_path), "--checkpoint", str(tmp_path / "m.pt"), "--quiet"]) == 2
