"""Tests for fracbench.app.demo: every bad upload becomes a sentence; the served page answers gradio_client."""

from __future__ import annotations

import json
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fracbench.app import demo as demo_module  # sets GRADIO_ANALYTICS_ENABLED=False before gradio loads
from fracbench.app.demo import DISCLAIMER, Analyzer, DemoError, launch, make_examples, model_panel, prepare
from fracbench.data.synthetic import render_case
from fracbench.models import create_model
from fracbench.serving.checkpoint import save_checkpoint

SIZE = 64


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder holding one run: checkpoint, sidecar and record (with test CIs and pointing game)."""
    root = tmp_path_factory.mktemp("results")
    run = root / "runs" / "paper_honest" / "seed0"
    torch.manual_seed(0)
    save_checkpoint(run / "checkpoints" / "best", create_model("paper_cnn", image_size=SIZE), model_name="paper_cnn",
                    model_kwargs={}, image_size=SIZE, channels=3, threshold=0.42, record=str(run / "record.json"),
                    extra={"experiment": "paper_honest", "dataset": "synthetic", "protocol": "honest",
                           "val_auroc": 0.71})
    record = {"experiment": "paper_honest", "model": "paper_cnn", "protocol": "honest", "dataset": "synthetic",
              "seed": 0, "threshold": 0.42, "threshold_source": "validation (youden)",
              "pointing_game": {"hits": 7, "n": 20, "rate": 0.35},
              "metrics": {"test": {"auroc": 0.712, "auroc_ci95": [0.65, 0.77], "accuracy": 0.7,
                                   "accuracy_ci95": [0.64, 0.76], "sensitivity": 0.6, "sensitivity_ci95": [0.5, 0.7],
                                   "specificity": 0.75, "specificity_ci95": [0.7, 0.8],
                                   "majority_accuracy": 0.65, "n": 90},
                          "val": {"auroc": 0.71}}}
    (run / "record.json").write_text(json.dumps(record))
    return root


@pytest.fixture(scope="session")
def ckpt_path(results_dir: Path) -> Path:
    return results_dir / "runs" / "paper_honest" / "seed0" / "checkpoints" / "best.safetensors"


@pytest.fixture(scope="session")
def analyzer(ckpt_path: Path) -> Analyzer:
    return Analyzer([ckpt_path], ckpt_path)


def _png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def _xray(size: int = 96) -> np.ndarray:
    return render_case(np.random.default_rng([9, 0]), size, True, 0.5).pixels


def _dicom(path: Path, pixels: np.ndarray) -> Path:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.PhotometricInterpretation = "OT", "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels (no pixel data): what a decompression bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_analyse_png(tmp_path: Path, analyzer: Analyzer) -> None:
    r = analyzer.analyse(str(_png(tmp_path / "x.png", _xray())), None, 0.4)
    assert set(r["label"]) == {"fractured", "not fractured"}
    assert r["label"]["fractured"] == pytest.approx(1 - r["label"]["not fractured"])
    assert r["overlay"].shape == (96, 96, 3) and r["overlay"].dtype == np.uint8
    assert "threshold 0.420" in r["decision"]


def test_decision_on_both_sides_of_the_threshold(tmp_path: Path, ckpt_path: Path) -> None:
    """The same weights with the threshold at P(fracture) of an image, and one float above it."""
    from fracbench.serving.checkpoint import load_checkpoint

    image = str(_png(tmp_path / "x.png", _xray()))
    p = Analyzer([ckpt_path], ckpt_path).analyse(image, None, 0.4)["p"]
    ck = load_checkpoint(ckpt_path)
    at = save_checkpoint(tmp_path / "at" / "best", ck.model, model_name="paper_cnn", model_kwargs={}, image_size=SIZE,
                         channels=3, threshold=p)
    above = save_checkpoint(tmp_path / "above" / "best", ck.model, model_name="paper_cnn", model_kwargs={},
                            image_size=SIZE, channels=3, threshold=float(np.nextafter(p, 1.0)))
    a = Analyzer([at, above], at)
    r_at, r_above = a.analyse(image, str(at), 0.4), a.analyse(image, str(above), 0.4)
    assert r_at["p"] == r_above["p"] == p  # the same model, the same score
    assert r_at["decision"].startswith("fractured (") and "≥ threshold" in r_at["decision"]  # p >= threshold
    assert r_above["decision"].startswith("not fractured (") and "< threshold" in r_above["decision"]


def test_analyse_large_image_is_shown_downscaled(tmp_path: Path, analyzer: Analyzer) -> None:
    px = np.zeros((1500, 3000), np.uint8)
    px[600:900, 1000:2000] = 200
    r = analyzer.analyse(str(_png(tmp_path / "wide.png", px)), None, 0.4)
    assert r["overlay"].shape == (512, 1024, 3)


@pytest.mark.parametrize("kind, expected", [
    ("garbage", "not a recognised image"),
    ("empty", "empty file"),
    ("bomb", "decompression bomb"),
    ("dicom", "DICOM"),
    ("toolarge", "upload limit"),
    ("missing", "could not be read"),
])
def test_bad_uploads_raise_demo_error(tmp_path: Path, analyzer: Analyzer, kind: str, expected: str) -> None:
    path = tmp_path / f"{kind}.png"
    if kind == "garbage":
        path.write_bytes(b"this is a text file, renamed")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "bomb":
        _png_header_only(path, 10_000, 10_000)
    elif kind == "dicom":
        path = _dicom(tmp_path / "broken.dcm", _xray())
        path.write_bytes(path.read_bytes()[:-5000])  # pixel data cut short
    elif kind == "toolarge":
        with path.open("wb") as fh:  # sparse: no 21 MB actually written
            fh.truncate(21 * 1024 * 1024)
    with pytest.raises(DemoError, match=expected) as info:
        analyzer.analyse(str(path), None, 0.4)
    assert "Traceback" not in str(info.value)
    assert str(info.value).startswith(path.name)


def test_unusual_but_valid_uploads_are_explained(tmp_path: Path, analyzer: Analyzer) -> None:
    px = _xray().copy()
    # 16-bit images are stretched from their min to max: span 0..255 so both files hold one picture
    px.flat[0], px.flat[-1] = 0, 255
    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(px.astype(np.uint16) * 257).save(sixteen)
    r = analyzer.analyse(str(sixteen), None, 0.4)
    assert "16-bit" in r["status"] and r["overlay"].shape == (96, 96, 3)
    rgba = np.dstack([px, px, px, np.full_like(px, 255)])
    r2 = analyzer.analyse(str(_png(tmp_path / "rgba.png", rgba)), None, 0.4)
    assert "transparency" in r2["status"]
    assert r2["p"] == pytest.approx(r["p"], abs=1e-6)  # the same picture underneath


def test_unknown_model_is_refused(tmp_path: Path, analyzer: Analyzer) -> None:
    with pytest.raises(DemoError, match="unknown model"):
        analyzer.analyse(str(_png(tmp_path / "x.png", _xray())), "/elsewhere/model.safetensors", 0.4)


def test_model_panel(ckpt_path: Path, tmp_path: Path) -> None:
    meta = json.loads(ckpt_path.with_suffix(".json").read_text())
    md = model_panel(ckpt_path, meta)
    for text in ("paper_cnn", "synthetic", "`honest`", "0.420", "validation (youden)", "AUROC 0.712 [0.650, 0.770]",
                 "n = 90", "majority-class accuracy 0.650", "0.35 (7/20)"):
        assert text in md, text
    bare = model_panel(tmp_path / "loose.safetensors", {"model": "tiny_cnn", "preprocessing": {"image_size": 32, "channels": 3},
                                   "record": "/nowhere/record.json"})
    assert "no run record" in bare and "not measured" in bare


def test_examples_are_synthetic_pngs(tmp_path: Path) -> None:
    ex = make_examples(tmp_path, n=2, size=128)
    assert len(ex) == 2 and "fractured" in ex[0][1]
    assert Image.open(ex[0][0]).size == (128, 128)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*:Warning:gradio.queueing")
def test_served_demo_with_gradio_client(tmp_path: Path, results_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gradio import networking
    from gradio_client import Client, handle_file

    def no_tunnel(*a, **k):
        raise RuntimeError("no network in tests")

    monkeypatch.setattr(networking, "setup_tunnel", no_tunnel)  # --share must fail here, never reach out
    lines: list[str] = []
    demo = launch(results=results_dir, port=_free_port(), share=True, prevent_thread_lock=True, progress=False,
                  echo=lines.append)
    try:
        assert any("--auth" in line for line in lines)  # share without auth: recommend it
        assert any("could not create a public share link" in line for line in lines)
        assert any(DISCLAIMER in line for line in lines)
        client = Client(demo.local_url, verbose=False)
        label, decision, heatmap, status = client.predict(handle_file(str(_png(tmp_path / "x.png", _xray()))),
                                                          api_name="/predict")
        assert label["label"] in ("fractured", "not fractured")
        assert {c["label"] for c in label["confidences"]} == {"fractured", "not fractured"}
        assert "threshold 0.420" in decision
        assert np.asarray(Image.open(heatmap)).shape == (96, 96, 3)
        assert "x.png" in status
        garbage = tmp_path / "garbage.png"
        garbage.write_bytes(b"definitely not a PNG")
        label, decision, heatmap, status = client.predict(handle_file(str(garbage)), api_name="/predict")
        assert heatmap is None and decision == ""
        assert "Could not analyse this file" in status and "not a recognised image" in status
        client.close()
    finally:
        demo.close()


def test_launch_rejects_bad_auth(results_dir: Path) -> None:
    with pytest.raises(ValueError, match="user:password"):
        launch(results=results_dir, auth="nopassword", prevent_thread_lock=True)


@pytest.mark.slow
def test_no_checkpoint_trains_a_fallback_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real fallback (paper_cnn, 2 epochs, 64 px, 200 images): a usable checkpoint with its record."""
    from fracbench.serving.checkpoint import load_checkpoint

    calls: list[Path] = []
    real = demo_module.train_fallback

    def counted(progress: bool = True) -> Path:
        calls.append(real(results=tmp_path / "fallback", progress=progress))
        return calls[-1]

    monkeypatch.setattr(demo_module, "train_fallback", counted)
    lines: list[str] = []
    demo = prepare(results=tmp_path / "empty", progress=False, echo=lines.append)
    assert len(calls) == 1 and demo.fracbench_default == calls[0]
    ck = load_checkpoint(calls[0])
    assert (ck.meta["model"], ck.image_size) == ("paper_cnn", 64)
    record = json.loads((calls[0].parent.parent / "record.json").read_text())
    assert record["status"] == "complete" and record["epochs_run"] == 2 and record["counts"]["train"] == 200
    assert ck.threshold == record["threshold"]
    assert ck.meta["pointing_game"]["n"] == 24
    assert any("training a tiny paper_cnn" in line for line in lines)
    notices = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "notice"]
    assert notices and "No trained model was found" in notices[0].value


# --------------------------------------------------------------------------------------------
# the OOD guard on the page, and the findings tab (tables and the training-set lookup)


def _copy_checkpoint(ckpt_path: Path, dest: Path) -> Path:
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(ckpt_path.with_suffix(suffix), (dest / "best").with_suffix(suffix))
    return dest / "best.safetensors"


def test_analyse_reports_the_ood_guard(tmp_path: Path, ckpt_path: Path) -> None:
    from fracbench.serving.checkpoint import write_ood_reference
    from fracbench.serving.ood import ood_score

    xray = str(_png(tmp_path / "x.png", _xray()))
    bare = Analyzer([ckpt_path], ckpt_path).analyse(xray, None, 0.4)
    assert "no OOD reference" in bare["status"] and not bare["ood"].flagged
    # a reference whose threshold sits just under this image's distance (and one just above): the page
    # must warn exactly when the guard says so
    guarded = _copy_checkpoint(ckpt_path, tmp_path / "guarded")
    ref = {"version": 1, "dim_in": 32, "center": [0.0] * 32, "components": None, "mean": [0.0] * 32,
           "precision": np.eye(32).tolist(), "threshold": 0.0}
    write_ood_reference(guarded, ref)
    from fracbench.serving.checkpoint import load_checkpoint
    from fracbench.serving.ood import features
    from fracbench.serving.predict import preprocess

    ck = load_checkpoint(guarded)
    dist = float(ood_score(ref, features(ck.model, "paper_cnn", preprocess(_xray(), SIZE, 3)))[0])
    for thr, warned in ((dist * 0.99, True), (dist * 1.01, False)):
        write_ood_reference(guarded, {**ref, "threshold": thr})
        r = Analyzer([guarded], guarded).analyse(xray, None, 0.4)
        assert r["ood"].flagged is warned
        assert ("does not look like the radiographs" in r["status"]) is warned
        assert "no OOD reference" not in r["status"]


def test_results_tables_are_found_and_titled(tmp_path: Path) -> None:
    from fracbench.app.demo import results_tables

    assert results_tables(tmp_path) == []  # none: robust, no error
    (tmp_path / "fracatlas" / "tables").mkdir(parents=True)
    (tmp_path / "fracatlas" / "tables" / "table1.md").write_text("| a |\n|---|\n| 1 |\n")
    (tmp_path / "fracatlas" / "tables" / "claims.md").write_text("| claim |\n|---|\n| 99.8% |\n")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "leak.md").write_text("| leak |\n|---|\n| 12% |\n")
    (tmp_path / "fracatlas" / "tables" / "table1.csv").write_text("a\n1\n")
    titles = [t for t, _ in results_tables(tmp_path)]
    assert titles == ["fracatlas/tables/claims.md", "tables/leak.md", "fracatlas/tables/table1.md"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*:Warning:gradio.queueing")
def test_served_lookup_finds_planted_copies(tmp_path: Path, ckpt_path: Path) -> None:
    from gradio_client import Client, handle_file
    from test_lookup import make_leaky_folder

    results = tmp_path / "results"
    _copy_checkpoint(ckpt_path, results / "runs" / "paper_honest" / "seed0" / "checkpoints")
    (results / "synthetic" / "tables").mkdir(parents=True)
    (results / "synthetic" / "tables" / "claims.md").write_text("| claim | ours |\n|---|---|\n| 99.8% | 71% |\n")
    planted = make_leaky_folder(tmp_path / "leaky")
    lines: list[str] = []
    demo = launch(results=results, port=_free_port(), prevent_thread_lock=True, progress=False, echo=lines.append,
                  lookup_data=f"imagefolder:{tmp_path / 'leaky'}")
    try:
        assert any("13 images of imagefolder indexed" in line for line in lines)
        tables = [b.value for b in demo.blocks.values() if "findings-table" in (getattr(b, "elem_classes", None) or [])]
        assert [t.strip() for t in tables] == ["| claim | ours |\n|---|---|\n| 99.8% | 71% |"]
        client = Client(demo.local_url, verbose=False)
        verdict, table, gallery = client.predict(handle_file(str(planted["exact"])), api_name="/lookup")
        rows = {r[-1].split("/")[-1]: r for r in table["data"]}
        assert "is in the imagefolder dataset: 2 copies" in verdict
        assert (rows["tr2.png"][0], rows["tr2.png"][2]) == ("exact file", "fractured")
        assert rows["tr2.png"][1].startswith("train")  # the leak: the uploaded test image is a train image
        assert len(gallery) == len(table["data"])
        verdict, table, _ = client.predict(handle_file(str(planted["turned"])), api_name="/lookup")
        rows = {r[-1].split("/")[-1]: r for r in table["data"]}
        assert rows["tr3.png"][0] == "near duplicate" and rows["tr3.png"][3] != "identity"
        assert rows["tr3.png"][1].startswith("train")
        fresh = _png(tmp_path / "fresh.png", render_case(np.random.default_rng([77, 1]), 96, True, 0.5).pixels)
        verdict, table, _ = client.predict(handle_file(str(fresh)), api_name="/lookup")
        assert "No copy of fresh.png" in verdict
        assert {r[0] for r in table["data"]} == {"similar (not a copy)"}
        client.close()
    finally:
        demo.close()


@pytest.mark.parametrize("shape, why", [((1, 1), "image too small"), ((10, 4800), "extreme aspect ratio")])
def test_implausible_upload_gets_a_warning_and_no_decision(tmp_path: Path, analyzer: Analyzer, shape, why) -> None:
    r = analyzer.analyse(str(_png(tmp_path / "odd.png", np.full(shape, 128, np.uint8))), None, 0.4)
    assert r["decision"] == f"no decision: {why}"
    assert r["p"] is None and r["label"] is None and r["warning"] and "no decision" in r["status"]


def test_out_of_distribution_upload_gets_no_decision(tmp_path: Path, ckpt_path: Path) -> None:
    from fracbench.serving.checkpoint import write_ood_reference

    guarded = _copy_checkpoint(ckpt_path, tmp_path / "guarded")
    write_ood_reference(guarded, {"version": 1, "dim_in": 32, "center": [0.0] * 32, "components": None,
                                  "mean": [0.0] * 32, "precision": np.eye(32).tolist(), "threshold": 0.0})
    r = Analyzer([guarded], guarded).analyse(str(_png(tmp_path / "x.png", _xray())), None, 0.4)
    assert r["ood"].flagged and r["decision"].startswith("no decision: out of distribution")
    assert "fractured" not in r["decision"].replace("P(fracture)", "")


# --------------------------------------------------------------------------------------------
# the headline verdict and the findings tab's provenance and layout

REPO_RESULTS = Path(__file__).resolve().parents[1] / "results"


def _claims_row(path: Path) -> dict[str, str]:
    import csv

    return next(r for r in csv.DictReader(path.open(encoding="utf-8")) if r["claim"] == "experiment_test_accuracy")


def test_headline_is_the_committed_claims_tables_verdict() -> None:
    """One line, read from results/tables/claims.csv (what `fracbench tables` wrote and the report shows)."""
    from fracbench.app.demo import LOCAL_RUN, headline_markdown
    from fracbench.claims.tables.headline import headline_verdict

    h = headline_verdict(REPO_RESULTS)
    assert h is not None and h.source == REPO_RESULTS / "tables" / "claims.csv"
    row = _claims_row(h.source)
    assert "\n" not in h.line and h.line.startswith("The paper's 99.8% test accuracy: ")
    assert row["verdict on fracatlas"] in h.line and row["verdict across multiregion splits"] in h.line
    assert row["fracbench on fracatlas"] in h.line
    md = headline_markdown(REPO_RESULTS)
    assert md.startswith(f"**{h.line}**")
    assert (LOCAL_RUN in md) is not demo_module.committed(h.source)


def test_headline_from_a_local_claims_table_is_labelled(tmp_path: Path) -> None:
    from fracbench.app.demo import LOCAL_RUN, headline_markdown

    (tmp_path / "synthetic" / "tables").mkdir(parents=True)
    (tmp_path / "synthetic" / "tables" / "claims.csv").write_text(
        "claim,paper,fracbench,fracbench balanced acc,verdict,reason\n"
        "abstract_accuracy_epoch26,0.9983,0.7,0.6,not reproduced on synthetic,x\n"
        "experiment_test_accuracy,0.9980,\"0.7100 [0.6, 0.8]\",0.61,not reproduced on synthetic,y\n")
    md = headline_markdown(tmp_path)
    assert md == (f"**The paper's 99.8% test accuracy: not reproduced on synthetic (fracbench 0.7100 [0.6, 0.8]).** "
                  f"*({LOCAL_RUN}: claims.csv)*")
    assert "no verdict here" in headline_markdown(tmp_path / "empty")


def test_page_opens_with_the_headline_and_labels_local_tables(ckpt_path: Path, tmp_path: Path) -> None:
    import gradio as gr

    from fracbench.app.demo import LOCAL_RUN, build_demo

    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "claims.csv").write_text(
        "claim,paper,fracbench,verdict\nexperiment_test_accuracy,0.998,0.5,not reproduced on synthetic\n")
    (tmp_path / "tables" / "claims.md").write_text("| claim | ours |\n|---|---|\n| 99.8% | 50% |\n")
    demo = build_demo([ckpt_path], ckpt_path, examples=[], results=tmp_path)
    markdowns = [b for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    first = min(markdowns, key=lambda b: b._id)
    assert first.elem_id == "headline" and "99.8% test accuracy: not reproduced on synthetic" in first.value
    accordions = [b.label for b in demo.blocks.values() if isinstance(b, gr.Accordion)]
    assert accordions == [f"tables/claims.md — {LOCAL_RUN}"]


def test_committed_tables_are_not_labelled_local() -> None:
    from fracbench.app.demo import LOCAL_RUN, committed, provenance

    claims = REPO_RESULTS / "tables" / "claims.md"
    if not committed(claims):
        pytest.skip("results/tables/claims.md is modified or untracked in this checkout")
    assert provenance(claims) == "committed" and provenance(claims.with_name("nope.md")) == LOCAL_RUN


def test_findings_css_never_breaks_words_and_scrolls_tables() -> None:
    from fracbench.app.demo import FINDINGS_CSS, _launch_kwargs

    for rule in ("word-break: normal", "overflow-wrap: normal", "hyphens: none", "overflow-x: auto"):
        assert rule in FINDINGS_CSS
    assert "break-all" not in FINDINGS_CSS and "anywhere" not in FINDINGS_CSS

    class Fake:
        def launch(self, css=None, server_port=None): ...

    assert _launch_kwargs(Fake(), css=FINDINGS_CSS, share=False) == {"css": FINDINGS_CSS}
