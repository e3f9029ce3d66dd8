"""Tests for fracbench.serving.predict and `fracbench predict`: preprocessing, formats, folders, failures, CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from fracbench.cli import main
from fracbench.data.cache import resize_square
from fracbench.data.decode import decode_image
from fracbench.data.loader import to_input
from fracbench.data.synthetic import render_case
from fracbench.models import create_model
from fracbench.serving.checkpoint import load_checkpoint, save_checkpoint
from fracbench.serving.predict import (
    PREDICTED,
    SKIPPED,
    TRUNCATED_WARNING,
    best_checkpoint,
    describe_error,
    find_checkpoints,
    predict_array,
    predict_files,
    predict_paths,
    preprocess,
)

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


def test_every_file_in_a_folder_is_accounted_for(tmp_path: Path, ckpt) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD.png").write_bytes(b"inside a hidden folder")
    for i in range(3):
        Image.fromarray(_xray(i)).save(folder / ("sub" if i == 2 else ".") / f"ok{i}.png")
    Image.fromarray(_xray(3)).save(folder / "scan.gif")
    Image.fromarray(_xray(4)).save(folder / "scan.webp", lossless=True)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    (folder / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    results = predict_files(ckpt, [folder, tmp_path / "missing.png"], batch_size=2)
    got = {Path(r.file).relative_to(tmp_path).as_posix(): r for r in results}
    # every entry given comes back exactly once, in order (folders in name order, depth first)
    assert list(got) == ["in/.DS_Store", "in/.git", "in/broken.png", "in/drawing.svg", "in/empty.jpg",
                         "in/notes.txt", "in/ok0.png", "in/ok1.png", "in/scan.gif", "in/scan.webp",
                         "in/sub/ok2.png", "missing.png"]
    predicted = {k for k, r in got.items() if r.status == PREDICTED}
    assert predicted == {"in/ok0.png", "in/ok1.png", "in/scan.gif", "in/scan.webp", "in/sub/ok2.png"}
    for r in got.values():
        if r.status == PREDICTED:
            assert 0.0 <= r.p_fracture <= 1.0 and r.warning == "" and r.reason == ""
        else:
            assert r.status == SKIPPED and r.p_fracture is None and r.reason
    # lossless WebP and the GIF hold the same gray pixels as a PNG would: the same score
    assert got["in/scan.webp"].p_fracture == pytest.approx(predict_array(ckpt, _xray(4)), abs=1e-6)
    assert got["in/scan.gif"].p_fracture == pytest.approx(predict_array(ckpt, _xray(3)), abs=1e-6)
    assert got["in/notes.txt"].reason == "not an image: .txt"
    assert got["in/drawing.svg"].reason == "SVG is a vector format: export it to PNG"
    assert got["in/.DS_Store"].reason == "hidden file (name starts with '.'); pass it by name to include it"
    assert got["in/.git"].reason == "hidden folder, not searched; pass it by name to include it"
    assert got["in/empty.jpg"].reason == "empty file (0 bytes); the file was not written completely; re-download it"
    assert got["in/broken.png"].reason.endswith("; re-export or re-download it")
    assert got["missing.png"].reason == "no such file or folder"
    # the old two-list API still splits the same results
    rows, failures = predict_paths(ckpt, [folder])
    assert len(rows) == 5 and len(failures) == 6
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert [(r.status, r.reason) for r in predict_files(ckpt, [empty])] == [(SKIPPED, "empty folder: no files in it")]


def test_gif_first_frame_and_image_content_without_suffix(tmp_path: Path, ckpt) -> None:
    first, second = _xray(0), 255 - _xray(0)
    frames = [Image.fromarray(first), Image.fromarray(second)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(first).save(tmp_path / "no_suffix", format="PNG")
    Image.fromarray(first).save(tmp_path / "named.txt", format="PNG")  # content wins over a wrong suffix
    results = predict_files(ckpt, [tmp_path / "anim.gif", tmp_path / "no_suffix", tmp_path / "named.txt"])
    assert [r.status for r in results] == [PREDICTED] * 3
    expected = predict_array(ckpt, first)
    assert all(r.p_fracture == pytest.approx(expected, abs=1e-6) for r in results)
    assert predict_array(ckpt, second) != pytest.approx(expected, abs=1e-6)  # the frames do differ


def _truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(_xray(2, 128)).save(buf, format="JPEG", quality=95)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    return path


def test_truncated_file_is_predicted_with_a_warning(tmp_path: Path, ckpt) -> None:
    (r,) = predict_files(ckpt, [_truncated_jpeg(tmp_path / "cut.jpg")])
    assert r.status == PREDICTED and 0.0 <= r.p_fracture <= 1.0
    assert r.warning == TRUNCATED_WARNING
    assert r.warning.endswith("re-export or re-download it")


def test_unreadable_file_says_permissions(tmp_path: Path, ckpt, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked.png"
    Image.fromarray(_xray(0)).save(locked)
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:  # chmod 000 does not stop root (CI containers), so simulate it
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    (r,) = predict_files(ckpt, [locked])
    assert (r.status, r.reason) == (
        SKIPPED, "permission denied; check its permissions (chmod +r) or run as a user who can read it")


def test_reason_is_given_once() -> None:
    from fracbench.data.decode import DecodeError, decode_bytes

    with pytest.raises(DecodeError) as info:
        decode_bytes(b"just some text, not an image", "notes.png")
    line = describe_error(info.value)
    assert line == "not a recognised image (unknown or damaged header); re-export or re-download it"
    assert line.count("not") == 1 and line.count("damaged") == 1


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
    assert [Path(r["file"]).name for r in table] == ["bad.jpg", "x0.png", "x1.png"]
    assert list(table[0]) == ["file", "status", "p_fracture", "decision", "warning", "reason", "ood", "ood_distance"]
    assert all(r["status"] == "predicted" and 0 <= float(r["p_fracture"]) <= 1 for r in table[1:])
    assert table[0]["status"] == "skipped" and table[0]["p_fracture"] == "" and table[0]["reason"]
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left behind
    pngs = sorted(p.name for p in cams.glob("*.png"))
    assert pngs == ["x0_cam.png", "x1_cam.png"]
    assert np.asarray(Image.open(cams / "x0_cam.png")).shape == (96, 96, 3)
    # nothing predicted: exit 1
    assert main(["predict", str(folder / "bad.jpg"), "--checkpoint", str(ckpt_path), "--quiet"]) == 1


def test_cli_predict_output(tmp_path: Path, ckpt_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "a folder with a long name for the narrow terminal test"
    folder.mkdir()
    Image.fromarray(_xray(0)).save(folder / "x0.png")
    _truncated_jpeg(folder / "cut.jpg")
    (folder / "readme.txt").write_text("hello")
    capsys.readouterr()
    assert main(["predict", str(folder), "--checkpoint", str(ckpt_path), "--json", "--quiet"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)  # stdout holds the JSON and nothing else
    assert (summary["files"], summary["predicted"], summary["with_warning"], summary["skipped"]) == (3, 2, 1, 1)
    by_name = {Path(r["file"]).name: r for r in summary["results"]}
    assert by_name["cut.jpg"]["warning"] == TRUNCATED_WARNING
    assert by_name["readme.txt"] == {"file": str(folder / "readme.txt"), "status": "skipped", "p_fracture": None,
                                     "decision": "", "warning": "", "reason": "not an image: .txt",
                                     "ood": "", "ood_distance": None}
    err = " ".join(out.err.split())
    assert f"warning: {folder / 'cut.jpg'}: {TRUNCATED_WARNING}" in err  # visible, even with --json
    assert "3 files: 2 predicted (1 with a warning), 1 skipped" in err
    # without --json, stdout (not a terminal here) is TSV: a header, then one full line per file
    assert main(["predict", str(folder), "--checkpoint", str(ckpt_path), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["file", "status", "p_fracture", "decision", "warning", "reason", "ood",
                                      "ood_distance"]
    assert [line.split("\t")[:2] for line in lines[1:]] == [
        [str(folder / "cut.jpg"), "predicted"], [str(folder / "readme.txt"), "skipped"],
        [str(folder / "x0.png"), "predicted"]]


def test_cli_predict_without_checkpoint(tmp_path: Path) -> None:
    assert main(["predict", str(tmp_path), "--results", str(tmp_path / "none"), "--quiet"]) == 2
    # a pickle checkpoint is refused unless --allow-pickle (CheckpointError -> exit 2)
    (tmp_path / "m.pt").write_bytes(b"")
    assert main(["predict", str(tmp_path), "--checkpoint", str(tmp_path / "m.pt"), "--quiet"]) == 2


@pytest.mark.parametrize("shape, why", [((1, 1), "image too small"), ((20, 100), "image too small"),
                                        ((10, 4800), "extreme aspect ratio"), ((600, 64), "extreme aspect ratio")])
def test_implausible_images_get_a_warning_and_no_decision(tmp_path: Path, ckpt_path: Path, shape, why: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A 1x1 PNG used to get "in distribution", p = 0.67; a 4800x10 strip a class: neither is a radiograph."""
    Image.fromarray(np.full(shape, 128, np.uint8)).save(tmp_path / "odd.png")
    Image.fromarray(_xray(0)).save(tmp_path / "x0.png")
    out = tmp_path / "pred.csv"
    capsys.readouterr()
    assert main(["predict", str(tmp_path), "--checkpoint", str(ckpt_path), "--json", "--csv", str(out),
                 "--quiet"]) == 0
    res = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)["results"]}
    odd = res["odd.png"]
    assert odd["status"] == "predicted" and odd["decision"] == f"no decision: {why}"
    assert odd["p_fracture"] is None and "no decision" in odd["warning"]
    assert res["x0.png"]["decision"] in ("fractured", "not fractured")  # a plausible image still gets one
    with out.open(newline="") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    assert rows["odd.png"]["decision"] == f"no decision: {why}" and rows["odd.png"]["p_fracture"] == ""


def test_sizes_at_the_limits_are_plausible() -> None:
    from fracbench.serving.predict import MAX_ASPECT, MIN_SIDE, implausible

    assert implausible((MIN_SIDE, MIN_SIDE)) == ""
    assert implausible((MIN_SIDE, int(MIN_SIDE * MAX_ASPECT))) == ""
    assert implausible((MIN_SIDE - 1, 100)) == "image too small"
    assert implausible((MIN_SIDE, int(MIN_SIDE * MAX_ASPECT) + 1)) == "extreme aspect ratio"


def test_out_of_distribution_means_no_decision(tmp_path: Path, ckpt_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A flagged image keeps its p_fracture but its decision column is no class, in the table, CSV and JSON."""
    import shutil

    from fracbench.serving.checkpoint import write_ood_reference

    guarded = tmp_path / "ck" / "best.safetensors"
    guarded.parent.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(ckpt_path.with_suffix(suffix), guarded.with_suffix(suffix))
    write_ood_reference(guarded, {"version": 1, "dim_in": 32, "center": [0.0] * 32, "components": None,
                                  "mean": [0.0] * 32, "precision": np.eye(32).tolist(), "threshold": 0.0})
    Image.fromarray(_xray(0)).save(tmp_path / "x0.png")
    out = tmp_path / "pred.csv"
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "x0.png"), "--checkpoint", str(guarded), "--json", "--csv", str(out),
                 "--quiet"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert r["ood"] == "out of distribution" and r["decision"] == "no decision: out of distribution"
    assert 0 <= r["p_fracture"] <= 1
    with out.open(newline="") as fh:
        assert next(csv.DictReader(fh))["decision"] == "no decision: out of distribution"
    assert main(["predict", str(tmp_path / "x0.png"), "--checkpoint", str(guarded), "--quiet"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    row = dict(zip(header.split("\t"), line.split("\t"), strict=True))
    assert row["decision"] == "no decision: out of distribution"
    # printed numbers are rounded: 3 decimals, not 6.879825991861045
    assert row["ood_distance"] == f"{r['ood_distance']:.3f}" and row["p_fracture"] == f"{r['p_fracture']:.3f}"
