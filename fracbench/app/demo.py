"""The Gradio demo: upload an X-ray, get P(fracture), the decision at the model's threshold, and Grad-CAM.

Research software, not a medical device. Every upload goes through fracbench's own decoder (the
one training used), so PNG, JPEG, TIFF, BMP and DICOM all work and anything unreadable comes back
as a sentence on the page, never a stack trace. Examples are synthetic radiographs rendered at
start-up; no dataset image is shipped. Nothing is fetched from the network: analytics are off and
the default theme's fonts are served locally.
"""

from __future__ import annotations

import atexit
import contextlib
import html
import inspect
import io
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fracbench.serving.lookup import Lookup

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is first imported

TITLE = "fracbench: fracture detection demo"
DISCLAIMER = "Research software, not a medical device: do not use for diagnosis."
MAX_UPLOAD = "20mb"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DISPLAY_MAX_SIDE = 1024  # the overlay shown is at most this many pixels on its longer side
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"]
API_NAME = "predict"

log = logging.getLogger("fracbench.demo")


# --------------------------------------------------------------------------------------------
# the work behind the page (no gradio here, so it can be tested directly)


class DemoError(Exception):
    """A problem to show to the person using the page, as one sentence."""


class Analyzer:
    """Loads checkpoints on first use (thread-safe) and answers uploads."""

    def __init__(self, checkpoints: Sequence[str | os.PathLike[str]], default: str | os.PathLike[str] | None = None,
                 allow_pickle: bool = False) -> None:
        paths = [str(Path(p)) for p in checkpoints]
        if default is not None and str(Path(default)) not in paths:
            paths.insert(0, str(Path(default)))
        if not paths:
            raise ValueError("the demo needs at least one checkpoint")
        self.paths = paths
        self.default = str(Path(default)) if default is not None else paths[0]
        self.allow_pickle = allow_pickle
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ---- models
    def checkpoint(self, path: str | None):
        from fracbench.serving.checkpoint import CheckpointError, load_checkpoint

        key = str(Path(path)) if path else self.default
        if key not in self.paths:
            raise DemoError(f"unknown model {path!r}; pick one from the list")
        with self._lock:
            if key not in self._cache:
                try:
                    self._cache[key] = load_checkpoint(key, allow_pickle=self.allow_pickle)
                except CheckpointError as exc:
                    raise DemoError(f"the model could not be loaded: {exc}") from None
            return self._cache[key]

    def choices(self) -> list[tuple[str, str]]:
        from fracbench.serving.predict import _read_meta, checkpoint_dataset, checkpoint_split, val_auroc

        out = []
        for p in self.paths:
            meta = _read_meta(Path(p)) or {}
            out.append((checkpoint_label(Path(p), meta, val_auroc(p, meta) if meta else float("nan"),
                                         dataset=checkpoint_dataset(p, meta) if meta else "",
                                         split=checkpoint_split(p, meta) if meta else ""), p))
        return out

    def panel(self, path: str | None) -> str:
        try:
            ck = self.checkpoint(path)
        except DemoError as exc:
            return f"### Model\n\n{exc}"
        return model_panel(ck.path, ck.meta)

    # ---- uploads
    def analyse(self, file: str | None, model: str | None, opacity: float = 0.4) -> dict[str, Any]:
        """Decode, score and explain one upload; raises :class:`DemoError` with a readable reason."""
        from fracbench.data.decode import DecodeError, decode_bytes
        from fracbench.serving.cam import gradcam, overlay
        from fracbench.serving.predict import final_decision, implausible, implausible_warning

        if not file:
            raise DemoError("no file was uploaded")
        name = os.path.basename(str(file))
        try:
            size = os.path.getsize(file)
        except OSError as exc:
            raise DemoError(f"{name}: the upload could not be read ({exc.strerror or exc})") from None
        if size > MAX_UPLOAD_BYTES:
            raise DemoError(f"{name}: {size / 2**20:.1f} MB is over the {MAX_UPLOAD_BYTES // 2**20} MB upload limit")
        ck = self.checkpoint(model)
        try:
            decoded = decode_bytes(Path(file).read_bytes(), name)
        except DecodeError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            raise DemoError(f"{name}: {exc.reason}{hint}") from None
        except OSError as exc:
            raise DemoError(f"{name}: the upload could not be read ({exc.strerror or exc})") from None
        pixels = decoded.pixels
        shown = display_shape(pixels.shape)
        small = _resize_gray(pixels, shown)
        thr = ck.threshold
        why = implausible(pixels.shape)
        if why:  # not shown to the model at all: a warning and no decision
            warning = implausible_warning(pixels.shape)
            notes = [f"**⚠ {warning[:1].upper()}{warning[1:]}.**",
                     f"Read {name}: {pixels.shape[1]} x {pixels.shape[0]} pixels, stored as {decoded.original_mode}."]
            return {"p": None, "label": None, "decision": final_decision(None, thr, "", why),
                    "overlay": overlay(small, np.zeros(small.shape, np.float32), 0.0), "status": " ".join(notes),
                    "ood": None, "implausible": why, "warning": warning, "state": None}
        heat, p = gradcam(ck, pixels, out_shape=shown)
        from fracbench.serving.ood import check_pixels

        ood = check_pixels(ck, pixels)
        verdict = final_decision(p, thr, ood.status)
        sign = "≥" if p >= thr else "<"
        notes = [f"**⚠ {ood.message()}**"] if ood.flagged else []
        notes += [f"Read {name}: {pixels.shape[1]} x {pixels.shape[0]} pixels, stored as {decoded.original_mode}."]
        if not ood.flagged and ood.message():
            notes.append(ood.message())  # "no OOD reference": said plainly, not hidden
        notes += [f"Note: {w}." for w in decoded.warnings]
        mode = decoded.original_mode
        if mode in ("I", "F") or mode.startswith("I;"):
            notes.append("Note: a 16-bit or float image, stretched from its min..max to 8 bits as in training.")
        if mode in ("RGBA", "LA", "PA"):
            notes.append(f"Note: a {mode} image with transparency, composited on black and converted to grayscale.")
        elif mode in ("RGB", "P", "CMYK", "YCbCr"):
            notes.append(f"Note: a colour ({mode}) image, converted to grayscale luminance.")
        return {
            "p": p,
            "label": {"fractured": p, "not fractured": 1.0 - p},
            "decision": f"{verdict} (P(fracture) = {p:.3f} {sign} threshold {thr:.3f})" if not ood.flagged else
                        f"{verdict} (the model's P(fracture) = {p:.3f} is not acted on)",
            "overlay": overlay(small, heat, opacity),
            "status": " ".join(notes),
            "ood": ood,
            "implausible": "",
            "warning": ood.message() if ood.flagged else "",
            "state": {"pixels": small, "heat": heat},
        }


def display_shape(shape: tuple[int, ...], max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    h, w = int(shape[0]), int(shape[1])
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize_gray(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if pixels.shape == shape:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((shape[1], shape[0]), Image.Resampling.BILINEAR), np.uint8)


def checkpoint_label(path: Path, meta: dict[str, Any], auroc: float = float("nan"), *, dataset: str = "",
                     split: str = "") -> str:
    """The model picker's label: experiment and seed, model, dataset and split, validation AUROC.

    The split is the run's split mode (``published``, ``grouped``, ``naive``, ``external``) or "manifest
    split" (the dataset's own fracbench split); a validation AUROC is only comparable within one dataset."""
    in_run = path.parent.name == "checkpoints" and path.parent.parent.name.startswith("seed")
    seed = path.parent.parent.name if in_run else ""
    if meta.get("experiment"):
        parts = [f"{meta['experiment']} {seed}".strip()]
    elif in_run:  # results/runs/<experiment>/seed<k>/checkpoints/best.safetensors
        parts = [f"{path.parent.parent.parent.name} {seed}"]
    else:
        parts = [f"{path.parent.name}/{path.name}"]
    parts.append(str(meta.get("model", "?")))
    dataset = dataset or str(meta.get("dataset") or "")
    parts.append(f"{dataset or 'dataset ?'}, {f'{split} split' if split else 'manifest split'}")
    if not math.isnan(auroc):
        parts.append(f"val AUROC {auroc:.3f}")
    return " · ".join(parts)


def _fmt(m: dict[str, Any], key: str) -> str | None:
    v = m.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    ci = m.get(f"{key}_ci95")
    if ci and len(ci) == 2 and all(isinstance(c, (int, float)) and not math.isnan(c) for c in ci):
        return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{v:.3f}"


def _pointing(meta: dict[str, Any], rec: dict[str, Any]) -> str | None:
    for src in (meta.get("pointing_game"), rec.get("pointing_game"), (rec.get("metrics") or {}).get("pointing_game")):
        if isinstance(src, dict) and src.get("rate") is not None:
            where = f" on {src['images']}" if src.get("images") else ""
            count = f" ({src['hits']}/{src['n']})" if "hits" in src and "n" in src else ""
            return f"{float(src['rate']):.2f}{count}{where}"
        if isinstance(src, (int, float)):
            return f"{float(src):.2f}"
    return None


def model_panel(path: str | os.PathLike[str], meta: dict[str, Any]) -> str:
    """Markdown describing a checkpoint: model, data, protocol, threshold, test metrics with CIs."""
    from fracbench.models import MODELS
    from fracbench.serving.predict import run_record

    path = Path(path)
    rec = run_record(path, meta) or {}
    name = meta.get("model", "?")
    try:
        info = MODELS.get(name)
    except Exception:
        info = None
    pre = meta.get("preprocessing", {})
    lines = ["### Model", ""]
    desc = f" — {info.description}" if info else ""
    lines.append(f"- **Model:** `{name}`{desc}")
    if info and info.stand_in:
        lines.append("- **Stand-in:** a stand-in for a cited baseline whose code is unpublished, not the cited authors' model")
    lines.append(f"- **Input:** {pre.get('image_size', '?')} x {pre.get('image_size', '?')} px, "
                 f"{pre.get('channels', '?')} channels; Grad-CAM layer `{info.cam_layer if info else '?'}`")
    dataset = rec.get("dataset") or meta.get("dataset")
    protocol = rec.get("protocol") or meta.get("protocol")
    experiment = rec.get("experiment") or meta.get("experiment")
    if dataset or protocol or experiment:
        seed = f", seed {rec['seed']}" if "seed" in rec else ""
        lines.append(f"- **Trained on:** {dataset or '?'}; protocol `{protocol or '?'}`; experiment `{experiment or '?'}`{seed}")
    thr = float(meta.get("threshold", 0.5))
    src = rec.get("threshold_source")
    lines.append(f"- **Decision threshold:** {thr:.3f}" + (f" (from {src})" if src else ""))
    test = (rec.get("metrics") or {}).get("test") or {}
    if test:
        parts = []
        for key, label in (("auroc", "AUROC"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
                           ("specificity", "specificity")):
            s = _fmt(test, key)
            if s:
                parts.append(f"{label} {s}")
        maj = test.get("majority_accuracy")
        n = test.get("n")
        head = f"- **Test metrics** (n = {n}, 95% bootstrap CI): " if n else "- **Test metrics** (95% bootstrap CI): "
        lines.append(head + "; ".join(parts) + (f"; majority-class accuracy {maj:.3f}" if maj is not None else ""))
        if protocol == "as_published":
            lines.append("- **Caution:** under `as_published` the test set chose the checkpoint, so these test "
                         "numbers are optimistic")
    else:
        lines.append("- **Test metrics:** no run record found for this checkpoint")
    pg = _pointing(meta, rec)
    lines.append(f"- **Pointing game** (Grad-CAM peak inside a true fracture box): {pg or 'not measured'}")
    lines.append(f"- **Checkpoint:** `{html.escape(str(path))}`")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# examples and the fallback model


def make_examples(out_dir: str | os.PathLike[str] | None = None, n: int = 4, size: int = 256,
                  seed: int = 2024) -> list[tuple[str, str]]:
    """Render ``n`` synthetic radiographs (alternately fractured) to PNG: ``[(path, caption)]``."""
    from PIL import Image

    from fracbench.data.synthetic import render_case

    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="fracbench-demo-examples-")
        atexit.register(shutil.rmtree, out_dir, True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    examples = []
    for i in range(n):
        fractured = i % 2 == 0
        case = render_case(np.random.default_rng([seed, i]), size, fractured, 0.5)
        truth = f"fractured ({case.kind})" if case.boxes else "not fractured"
        path = out / f"synthetic_{i + 1}_{case.part}_{'fractured' if case.boxes else 'normal'}.png"
        Image.fromarray(case.pixels).save(path)
        examples.append((str(path), f"synthetic {case.part}, {truth}"))
    return examples


def train_fallback(results: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """Train a tiny paper_cnn on synthetic data (2 epochs, 64 px) and return its checkpoint.

    Also measures its pointing game on 24 freshly rendered fractured images (not in the dataset)
    and writes it to the checkpoint's sidecar, so the model panel can show it.
    """
    from fracbench import results as R
    from fracbench.config import TrainConfig
    from fracbench.data import prepare
    from fracbench.data.cache import build_cache
    from fracbench.data.synthetic import render_case
    from fracbench.io import atomic_write_json
    from fracbench.serving.cam import pointing_game
    from fracbench.serving.checkpoint import load_checkpoint
    from fracbench.training.train import fit

    if results is None:
        results = tempfile.mkdtemp(prefix="fracbench-demo-model-")
        atexit.register(shutil.rmtree, results, True)
    cfg = TrainConfig(model="paper_cnn", epochs=2, image_size=64, max_train_images=200, n_boot=50)
    prepared = prepare("synthetic", progress=progress)
    cache = build_cache(prepared.manifest, cfg.image_size, progress=progress)
    name = "demo_quick_paper_cnn"
    out = R.run_dir(results, name, cfg.seed)
    fit(cfg, cache, out, experiment=name, progress=progress)
    path = out / "checkpoints" / "best.safetensors"
    ck = load_checkpoint(path)
    cases = [render_case(np.random.default_rng([777, i]), 224, True, 1.0) for i in range(24)]
    pg = pointing_game(ck, cases)
    meta = dict(ck.meta, pointing_game={**pg, "images": "24 freshly rendered synthetic fractured images"})
    atomic_write_json(path.with_suffix(".json"), meta)
    return path


# --------------------------------------------------------------------------------------------
# the findings tab: result tables and the training-set lookup

LOOKUP_COLUMNS = ("match", "split", "label", "transform", "hash bits differing", "thumbnail diff", "image")


def results_tables(results: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``[(title, markdown)]`` for every ``*.md`` table under ``results/*/tables/`` and ``results/tables/``.

    Titled by file name relative to ``results``; claims and leak tables first. Unreadable files are skipped.
    """
    root = Path(results)
    files = sorted(set(root.glob("*/tables/*.md")) | set(root.glob("tables/*.md")))

    def order(p: Path) -> tuple[int, str]:
        return (0 if p.stem.startswith(("claims", "leak")) else 1, str(p))

    out = []
    for f in sorted(files, key=order):
        try:
            out.append((f.relative_to(root).as_posix(), f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("demo: skipping table %s (%s)", f, exc)
    return out


LOCAL_RUN = "local run (not committed)"

# the findings tab at 1400 px: words wrap at spaces only (never mid-word), wide tables scroll inside their box
FINDINGS_CSS = """
#findings-tab .findings-table, #findings-tab .findings-table *, #headline, #headline * {
  word-break: normal !important; overflow-wrap: normal !important; hyphens: none !important;
}
#findings-tab .findings-table table {
  display: block; max-width: 100%; overflow-x: auto; font-size: 0.85em; border-collapse: collapse;
}
#findings-tab .findings-table th, #findings-tab .findings-table td {
  padding: 2px 6px; vertical-align: top; min-width: 6ch; max-width: 48ch;
}
"""


def committed(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is tracked by git and unchanged from the checked-out commit (False when git cannot tell)."""
    import subprocess

    p = Path(path).resolve()
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "--", p.name], cwd=p.parent,
                                 capture_output=True, timeout=10)
        if tracked.returncode != 0:
            return False
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", p.name], cwd=p.parent,
                                 capture_output=True, timeout=10)
        return changed.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def provenance(path: str | os.PathLike[str]) -> str:
    """"committed" or "local run (not committed)": what the findings tab says beside each table."""
    return "committed" if committed(path) else LOCAL_RUN


def headline_markdown(results: str | os.PathLike[str] | None) -> str:
    """The one-line verdict on the paper's 99.8% claim, from the claims table the report's tables are (see
    :mod:`fracbench.claims.tables.headline`), labelled when it comes from a local run."""
    from fracbench.claims.tables.headline import headline_verdict

    h = headline_verdict(results) if results is not None else None
    if h is None:
        return ("**The paper's 99.8% test accuracy: no verdict here**: no claims table was found "
                "(run `fracbench run` then `fracbench tables`).")
    label = "" if committed(h.source) else f" *({LOCAL_RUN}: {h.source.name})*"
    return f"**{h.line}**{label}"


def lookup_upload(lookup: Lookup | None, file: str | None, nearest: int = 5) -> tuple[str, list[list], list]:
    """(verdict in Markdown, table rows, gallery of thumbnails) for one uploaded file."""
    from fracbench.data.decode import DecodeError, decode_bytes

    if lookup is None:
        raise DemoError("no dataset is loaded for lookup")
    if not file:
        return "Upload an image to look it up.", [], []
    name = os.path.basename(str(file))
    try:
        data = Path(file).read_bytes()
        pixels = decode_bytes(data, name).pixels
    except DecodeError as exc:
        raise DemoError(f"{name}: {exc.reason}" + (f" ({exc.hint})" if exc.hint else "")) from None
    except OSError as exc:
        raise DemoError(f"{name}: the upload could not be read ({exc.strerror or exc})") from None
    matches = lookup.query(pixels, data, nearest=nearest)
    copies = [m for m in matches if m.kind != "similar (not a copy)"]
    labels = {0: "not fractured", 1: "fractured"}
    rows = [[m.kind, m.split, labels.get(m.label, str(m.label)), m.transform, m.hash_distance,
             round(m.pixel_diff, 2), m.path] for m in matches]
    gallery = [(_thumb_rgb(m.thumb), f"{m.kind}: {m.split}, {labels.get(m.label, m.label)}") for m in matches]
    if copies:
        splits = sorted({m.split for m in copies})
        verdict = (f"**{name} is in the {lookup.dataset} dataset: {len(copies)} cop{'y' if len(copies) == 1 else 'ies'}"
                   f"** (splits: {', '.join(splits)}).")
    else:
        verdict = (f"**No copy of {name} found** among {lookup.searched()}; the most similar images are shown, "
                   "none close enough to be a copy.")
    if lookup.manifest_note:
        verdict += f" ({lookup.manifest_note}.)"
    return verdict, rows, gallery


def _thumb_rgb(thumb: np.ndarray, side: int = 128) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(thumb).resize((side, side), Image.Resampling.NEAREST).convert("RGB"))


# --------------------------------------------------------------------------------------------
# the page


def build_demo(checkpoints: Sequence[str | os.PathLike[str]], default: str | os.PathLike[str] | None = None, *,
               notice: str | None = None, examples: list[tuple[str, str]] | None = None,
               allow_pickle: bool = False, analyzer: Analyzer | None = None,
               results: str | os.PathLike[str] | None = None, lookup: Lookup | None = None):
    """The Blocks page (queued, at most 16 waiting). ``default`` is added to ``checkpoints`` if missing.

    Two tabs: the predictor, and the findings (the Markdown tables under ``results``) with an
    "is this image in the training set?" lookup against ``lookup`` (see :mod:`fracbench.serving.lookup`).
    """
    import gradio as gr

    app = analyzer or Analyzer(checkpoints, default, allow_pickle=allow_pickle)
    if examples is None:
        examples = make_examples()

    def fail(message: str) -> tuple:
        gr.Warning(message)
        return None, "", None, f"**Could not analyse this file.** {message}", None

    def on_upload(file: str | None, model: str | None, opacity: float) -> tuple:
        if not file:
            return None, "", None, "Upload an X-ray (PNG, JPEG, TIFF, BMP or DICOM), or pick an example.", None
        try:
            r = app.analyse(file, model, opacity)
        except DemoError as exc:
            return fail(str(exc))
        except Exception as exc:  # a bug must still come back as a sentence, with the trace in the server log
            log.exception("demo: analysing %s failed", file)
            return fail(f"unexpected error ({type(exc).__name__}: {exc}); the server log has details")
        if r["warning"]:
            gr.Warning(r["warning"])
        return r["label"], r["decision"], r["overlay"], r["status"], r["state"]

    def on_opacity(state: dict | None, opacity: float):
        from fracbench.serving.cam import overlay

        if not state:
            return gr.skip()
        return overlay(state["pixels"], state["heat"], opacity)

    def on_model(file: str | None, model: str | None, opacity: float) -> tuple:
        return (*on_upload(file, model, opacity), app.panel(model))

    def on_lookup(file: str | None) -> tuple:
        try:
            return lookup_upload(lookup, file)
        except DemoError as exc:
            return f"**Could not look this file up.** {exc}", [], []
        except Exception as exc:  # as on_upload: a sentence on the page, the trace in the log
            log.exception("demo: looking up %s failed", file)
            return f"**Could not look this file up.** unexpected error ({type(exc).__name__}: {exc})", [], []

    tables = results_tables(results) if results is not None else []
    choices = app.choices()
    headline = headline_markdown(results)
    with gr.Blocks(title="fracbench demo", analytics_enabled=False) as demo:
        gr.Markdown(headline, elem_id="headline")
        gr.Markdown(f"# {TITLE}\n\nUpload a radiograph to get the model's probability of a fracture, its "
                    "decision at the threshold chosen when it was trained, and a Grad-CAM heatmap of the regions "
                    "that raised the fracture score.")
        gr.Markdown(f"**⚠ {DISCLAIMER}**", elem_id="disclaimer")
        if notice:
            gr.Markdown(notice, elem_id="notice")
        with gr.Tabs():
            with gr.Tab("Predict", id="predict"):
                with gr.Row():
                    with gr.Column():
                        file_in = gr.File(label="X-ray image: PNG, JPEG, TIFF, BMP or DICOM (.dcm), up to 20 MB",
                                          file_types=UPLOAD_TYPES, type="filepath", elem_id="upload")
                        model_in = gr.Dropdown(choices=choices, value=app.default, label="Model", elem_id="model")
                        opacity_in = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="Heatmap opacity", elem_id="opacity")
                        if examples:
                            gr.Examples(examples=[[p] for p, _ in examples], inputs=[file_in],
                                        example_labels=[c for _, c in examples],
                                        label="Synthetic examples (rendered at start-up; no patient data)")
                    with gr.Column():
                        # no heading: it would name the argmax class, which differs from the decision at a threshold != 0.5
                        label_out = gr.Label(num_top_classes=2, label="P(fracture)", show_heading=False, elem_id="p-fracture")
                        decision_out = gr.Textbox(label="Decision at the model's threshold", interactive=False,
                                                  elem_id="decision")
                        cam_out = gr.Image(label="Grad-CAM: regions that raise the fracture score", type="numpy",
                                           format="png", interactive=False, buttons=["download", "fullscreen"],
                                           elem_id="gradcam")
                        status_out = gr.Markdown(label="status", elem_id="status")
                panel_out = gr.Markdown(app.panel(app.default), elem_id="model-panel")
            with gr.Tab("Findings and training-set lookup", id="findings", elem_id="findings-tab"):
                gr.Markdown("## Is this image in the training set?\n\n" + (
                    f"Upload an image to match it against the **{lookup.dataset}** dataset ({len(lookup)} images): "
                    "exact copies by file and decoded-pixel SHA-256, near copies (rotated, flipped, re-encoded) "
                    "by perceptual hashes of the eight rotations/flips confirmed on thumbnails. A test image "
                    "found in train is a leak." if lookup is not None else
                    "No dataset is loaded for lookup; start the demo with `--lookup-data DATASET[:PATH]`."))
                if lookup is not None:
                    lookup_in = gr.File(label="Image to look up", file_types=UPLOAD_TYPES, type="filepath",
                                        elem_id="lookup-upload")
                    lookup_status = gr.Markdown(elem_id="lookup-status")
                    lookup_table = gr.Dataframe(headers=list(LOOKUP_COLUMNS), interactive=False,
                                                elem_id="lookup-table", label="Matches in the dataset")
                    lookup_gallery = gr.Gallery(label="Thumbnails from the dataset index", columns=6, height="auto",
                                                elem_id="lookup-gallery")
                    lookup_in.change(on_lookup, [lookup_in], [lookup_status, lookup_table, lookup_gallery],
                                     api_name="lookup")
                gr.Markdown("## Findings: tables from the committed results\n\n" + headline + "\n\n" + (
                    f"A table not committed to the repository is marked \"{LOCAL_RUN}\"." if tables else
                    "No result tables were found (run `fracbench run` then `fracbench tables`)."),
                    elem_id="findings-intro")
                root = Path(results) if results is not None else Path(".")
                for title, text in tables:
                    where = provenance(root / title)
                    label = title if where == "committed" else f"{title} — {where}"
                    with gr.Accordion(label, open=title.endswith(("claims.md", "leak.md"))):
                        gr.Markdown(text, elem_classes=["findings-table"])
        state = gr.State(None)
        outputs = [label_out, decision_out, cam_out, status_out, state]
        file_in.change(on_upload, [file_in, model_in, opacity_in], outputs, api_name=API_NAME)
        model_in.change(on_model, [file_in, model_in, opacity_in], [*outputs, panel_out],
                        api_visibility="undocumented")
        opacity_in.change(on_opacity, [state, opacity_in], cam_out, show_progress="hidden",
                          api_visibility="undocumented")
    demo.queue(max_size=16)
    demo.fracbench_analyzer = app  # for tests and embedding
    return demo


def _parse_auth(auth: str | tuple[str, str] | None) -> tuple[str, str] | None:
    if auth is None or isinstance(auth, tuple):
        return auth
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth takes user:password (both non-empty)")
    return user, password


def _launch_kwargs(demo, **wanted: Any) -> dict[str, Any]:
    """Only the launch() options the installed Gradio knows (max_file_size, footer_links, ...)."""
    params = inspect.signature(demo.launch).parameters
    return {k: v for k, v in wanted.items() if k in params}


def prepare(checkpoint: str | os.PathLike[str] | None = None, *, results: str | os.PathLike[str] | None = None,
            allow_pickle: bool = False, progress: bool = True, echo=print, lookup_data: str | None = None,
            dataset: str | None = None):
    """Find the checkpoints under ``results`` (training a tiny one when there is none) and build the page.

    The default model is :func:`~fracbench.serving.predict.best_checkpoint` within ``dataset`` (FracAtlas when it
    has one); the picker offers every checkpoint found, each labelled with its dataset and split.

    ``lookup_data`` (``DATASET[:PATH]``) indexes that dataset for the "is this image in the training
    set?" lookup on the second tab.
    """
    from fracbench.paths import default_results_dir
    from fracbench.serving.checkpoint import load_checkpoint
    from fracbench.serving.predict import best_checkpoint, find_checkpoints

    results_dir = Path(results) if results else default_results_dir()
    found = [p for p, _ in find_checkpoints(results_dir)]
    notice = None
    if checkpoint is not None:
        default = Path(checkpoint)
        load_checkpoint(default, allow_pickle=allow_pickle)  # fail now, with the checkpoint's own message
    else:
        default = best_checkpoint(results_dir, dataset)
        if default is None:
            echo(f"No checkpoint under {results_dir}: training a tiny paper_cnn on synthetic data first "
                 "(2 epochs at 64 px, about a minute on a CPU) ...")
            default = train_fallback(progress=progress)
            notice = ("**No trained model was found**, so this demo trained a tiny `paper_cnn` on synthetic "
                      "radiographs for 2 epochs at 64 px. Expect weak predictions; run `fracbench run` or "
                      "`fracbench train` and restart the demo for a real model.")
            echo(f"trained {default}")
    lookup = None
    if lookup_data:
        from fracbench.serving.lookup import checkpoint_manifest_sha, load_lookup

        lookup = load_lookup(lookup_data, results_dir, progress=progress, manifest_sha=checkpoint_manifest_sha(default))
        echo(f"lookup: {len(lookup)} images of {lookup.dataset} indexed")
    demo = build_demo(found, default, notice=notice, allow_pickle=allow_pickle, results=results_dir, lookup=lookup)
    demo.fracbench_default = default
    return demo


def launch(checkpoint: str | os.PathLike[str] | None = None, *, share: bool = False,
           auth: str | tuple[str, str] | None = None, host: str = "127.0.0.1", port: int | None = 7860,
           results: str | os.PathLike[str] | None = None, allow_pickle: bool = False,
           prevent_thread_lock: bool = False, progress: bool = True, echo=print, lookup_data: str | None = None,
           dataset: str | None = None):
    """Find (or train) a model, build the page and serve it; returns the Blocks.

    Blocks until interrupted unless ``prevent_thread_lock`` (then call ``demo.close()``).
    ``share`` tries a public gradio.live link; when that fails (no network) it says so in one
    line and keeps serving locally.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    auth_t = _parse_auth(auth)
    demo = prepare(checkpoint, results=results, allow_pickle=allow_pickle, progress=progress, echo=echo,
                   lookup_data=lookup_data, dataset=dataset)
    if share and not auth_t:
        echo("--share without --auth: anyone with the link can use this demo; consider --auth user:password")
    kwargs = _launch_kwargs(demo, server_name=host, server_port=port, share=share, auth=auth_t,
                            max_file_size=MAX_UPLOAD, prevent_thread_lock=True, quiet=True, show_error=False,
                            footer_links=["api", "settings"], run_history=False, ssr_mode=False, css=FINDINGS_CSS)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):  # Gradio prints several lines when sharing fails
            demo.launch(**kwargs)
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
    if getattr(demo, "_is_running_in_reload_thread", False):  # `gradio gradio_app.py` re-ran the script
        return demo
    echo(f"fracbench demo at {demo.local_url} (model: {demo.fracbench_default}); {DISCLAIMER}")
    if share:
        if getattr(demo, "share_url", None):
            echo(f"public link: {demo.share_url}")
        else:
            echo("could not create a public share link (no network?); serving locally only")
    if not prevent_thread_lock:
        demo.block_thread()
    return demo
