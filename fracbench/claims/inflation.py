"""Protocol inflation: how much each habit of the tutorial's evaluation adds to its accuracy.

For one training run (honest protocol, test metrics logged per epoch for the learning curve and
nothing else) three effects are read off, per seed:

(i)   selection on test: test accuracy at the epoch with the best test accuracy minus test accuracy
      at the epoch fracbench chose on validation AUROC (no test-time flip in either);
(ii)  test-time flip: the accuracy of the validation-chosen checkpoint on randomly flipped test
      images minus its accuracy on the images as they are;
(iii) the .jpg denominator: on a copy of the test folder where a share of the images is stored as
      PNG, the tutorial's ``correct / len(glob('**/*.jpg'))`` minus ``correct / number of images``.

``epoch_flip_logger`` is the hook fit() calls after every epoch, ``build_mixed_tree`` writes the
mixed folder (the edge), ``protocol_effects`` is the pure computation from the logs.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fracbench.data.manifest import Manifest, ManifestRow
from fracbench.training.protocols import jpg_count

MIX_VERSION = 1
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe")


def epoch_flip_logger(cache, rows: np.ndarray, batch_size: int, channels: int, seed: int,
                      amp: bool = False, channels_last: bool = False) -> Callable[[Any, int], dict[str, Any]]:
    """fit()'s ``on_epoch`` hook: test accuracy with the tutorial's random flip at test time.

    The flips of epoch e come from a generator seeded by (seed, e), so a resumed run logs the same.
    """
    import torch

    from fracbench.data.loader import BatchLoader
    from fracbench.training.train import evaluate

    loader = BatchLoader(cache, rows, batch_size, channels)

    def hook(model, epoch: int) -> dict[str, Any]:
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(seed * 1_000_003 + 10_000 + epoch)
        r = evaluate(model, loader, device, flip_generator=g, amp=amp, channels_last=channels_last)
        return {"test_accuracy_flip": r["correct"] / max(r["n"], 1), "test_correct_flip": int(r["correct"])}

    return hook


def _first_argmax(values: Sequence[float]) -> int:
    """The first epoch reaching the maximum (the tutorial's strict ``>`` keeps the first)."""
    best, arg = -np.inf, -1
    for i, v in enumerate(values):
        if v == v and v > best:
            best, arg = v, i
    return arg


def protocol_effects(epochs: Sequence[dict[str, Any]], selected_epoch: int,
                     mixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The three effects of one run from its per-epoch log (and its score on the mixed folder)."""
    by_epoch = {int(e["epoch"]): e for e in epochs}
    order = sorted(by_epoch)
    acc = [float(by_epoch[k].get("test_accuracy", float("nan"))) for k in order]
    flip = [float(by_epoch[k].get("test_accuracy_flip", float("nan"))) for k in order]
    if selected_epoch not in by_epoch:
        raise ValueError(f"selected epoch {selected_epoch} is not in the log")
    pos_val = order.index(selected_epoch)
    pos_test = _first_argmax(acc)
    pos_test_flip = _first_argmax(flip)
    out: dict[str, Any] = {
        "epochs": len(order),
        "val_selected_epoch": selected_epoch,
        "test_selected_epoch": order[pos_test],
        "test_flip_selected_epoch": order[pos_test_flip] if pos_test_flip >= 0 else None,
        "accuracy_val_selected": acc[pos_val],
        "accuracy_test_selected": acc[pos_test],
        "accuracy_flip_val_selected": flip[pos_val],
        "test_selection": acc[pos_test] - acc[pos_val],
        "test_time_flip": flip[pos_val] - acc[pos_val],
        # the tutorial does both: best flipped test accuracy over epochs against the honest number
        "selection_and_flip": (flip[pos_test_flip] - acc[pos_val]) if pos_test_flip >= 0 else float("nan"),
    }
    if mixed is not None:
        n, jpg, correct = int(mixed["n"]), int(mixed["jpg"]), int(mixed["correct"])
        out.update(
            mixed_images=n, mixed_jpg=jpg, mixed_png=n - jpg, mixed_correct=correct,
            mixed_accuracy=correct / n if n else float("nan"),
            mixed_accuracy_as_counted=correct / jpg if jpg else float("nan"),
            jpg_denominator=(correct / jpg - correct / n) if jpg and n else float("nan"),
        )
    return out


def selection_decomposition(epochs: Sequence[dict[str, Any]], selected_epoch: int) -> dict[str, Any]:
    """Effect (i), choosing the checkpoint on test, split into its two changes (pure, from epochs.jsonl).

    The tutorial changes two things at once: the data that chooses (test instead of validation) and the
    criterion (accuracy instead of AUROC). With the same criterion, accuracy, chosen on validation vs on
    test, the difference is what using test data adds (``selection_data``); on validation data, choosing
    on accuracy instead of AUROC gives ``selection_criterion``. The two add up to ``test_selection``.
    """
    by_epoch = {int(e["epoch"]): e for e in epochs}
    order = sorted(by_epoch)
    if selected_epoch not in by_epoch:
        raise ValueError(f"selected epoch {selected_epoch} is not in the log")
    test_acc = [float(by_epoch[k].get("test_accuracy", float("nan"))) for k in order]
    val_acc = [float(by_epoch[k].get("val_accuracy", float("nan"))) for k in order]
    pos_auroc = order.index(selected_epoch)
    pos_val_acc = _first_argmax(val_acc)
    pos_test_acc = _first_argmax(test_acc)
    if pos_val_acc < 0 or pos_test_acc < 0:
        nan = float("nan")
        return {"val_accuracy_selected_epoch": None, "accuracy_val_accuracy_selected": nan, "selection_data": nan,
                "selection_criterion": nan}
    return {
        "val_accuracy_selected_epoch": order[pos_val_acc],
        "accuracy_val_accuracy_selected": test_acc[pos_val_acc],
        "selection_data": test_acc[pos_test_acc] - test_acc[pos_val_acc],
        "selection_criterion": test_acc[pos_val_acc] - test_acc[pos_auroc],
    }


def jpg_denominator_effect(test: dict[str, Any]) -> float | None:
    """What the tutorial's .jpg denominator adds on a real folder: correct/.jpg count minus correct/images.

    From an as_published record's test metrics (``accuracy_as_counted`` and ``accuracy_at_0.5``); 0 where
    every test file is a .jpg, None when the record lacks either value.
    """
    a, b = test.get("accuracy_as_counted"), test.get("accuracy_at_0.5")
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    return float(a) - float(b)


def build_mixed_tree(manifest: Manifest, png_share: float = 1 / 3, seed: int = 0,
                     root: Path | None = None) -> Manifest:
    """A copy of the test split as a class-folder tree where ``png_share`` of the images are PNG files.

    The rest are .jpg files: JPEG sources are copied byte for byte; other sources are encoded as
    JPEG (quality 95). PNGs hold the decoded pixels losslessly. Written under
    ``<cache>/jpgmix/<key>/`` (reused when complete); returns a manifest whose rows are all "test".
    """
    from PIL import Image

    from fracbench.data.decode import DecodeError, decode_image
    from fracbench.io import atomic_write_bytes, completed_files, mark_completed
    from fracbench.paths import cache_dir

    test = [r for r in manifest.rows if r.split == "test"]
    rng = np.random.default_rng(seed)
    k = round(png_share * len(test))
    as_png = set(rng.choice(len(test), size=k, replace=False).tolist()) if k else set()
    key = hashlib.sha256(f"{manifest.fingerprint}|{png_share}|{seed}|v{MIX_VERSION}".encode()).hexdigest()[:16]
    root = Path(root) if root else cache_dir() / "jpgmix" / key
    plan = []
    for j, r in enumerate(test):
        cls = "fractured" if r.label else "not_fractured"
        stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in r.id)
        plan.append((r, j in as_png, f"{cls}/{stem}{'.png' if j in as_png else '.jpg'}"))
    files = [p for _, _, p in plan]
    rows: list[ManifestRow] = []
    done = completed_files(root, files, MIX_VERSION)
    complete = done is not None
    written = set(done or [])
    for r, png, rel in plan:
        src = manifest.abspath(r)
        if complete:
            if rel not in written:
                continue  # was unreadable when the tree was made
            data = (root / rel).read_bytes()
        else:
            if not png and src.suffix.lower() in JPEG_SUFFIXES:
                data = src.read_bytes()
            else:
                try:
                    px = decode_image(src).pixels
                except DecodeError:
                    continue  # unreadable now: left out of the tree
                buf = io.BytesIO()
                if png:
                    Image.fromarray(px).save(buf, format="PNG", compress_level=1)
                else:
                    Image.fromarray(px).save(buf, format="JPEG", quality=95)
                data = buf.getvalue()
            atomic_write_bytes(root / rel, data)
        rows.append(ManifestRow(r.id, rel, r.label, r.group, r.part, "test", hashlib.sha256(data).hexdigest()))
    if not complete:
        mark_completed(root, files, [r.path for r in rows], MIX_VERSION)
    return Manifest(f"{manifest.dataset}-jpgmix", root, rows)


def score_mixed_tree(model_dir: Path, tree: Manifest, image_size: int, device: str = "cpu",
                     progress: bool = False) -> dict[str, Any]:
    """The run's reported (validation-chosen) checkpoint on the mixed folder: correct, n and the .jpg count."""
    from fracbench.data.cache import build_cache
    from fracbench.data.loader import BatchLoader
    from fracbench.serving.checkpoint import load_checkpoint
    from fracbench.training.train import evaluate, resolve_device

    dev = resolve_device(device)
    ck = load_checkpoint(Path(model_dir) / "checkpoints" / "best.safetensors", device=dev)
    cache = build_cache(tree, image_size, progress=progress)
    loader = BatchLoader(cache, cache.indices("test"), 64, ck.channels)
    r = evaluate(ck.model, loader, dev)
    paths = [tree.rows[i].path for i in r["rows"]]
    return {"n": int(r["n"]), "correct": int(r["correct"]), "jpg": jpg_count(paths),
            "png": sum(1 for p in paths if p.endswith(".png"))}
