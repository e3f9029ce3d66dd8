"""The embedded synthetic dataset: determinism, ground truth, atomic generation, scanning."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracbench.data import synthetic as syn
from fracbench.data.base import DATASETS
from fracbench.data.synthetic import (
    KINDS,
    PARTS,
    Synthetic,
    SyntheticCase,
    SyntheticSpec,
    case_label,
    generate,
    render_case,
)

SMALL = SyntheticSpec(count=12, size=96, prevalence=0.5, seed=3)


def _pixels(path: Path, side: int | None = None) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.resize((side, side), Image.BILINEAR) if side else im)


def _fractured_cases(n: int, size: int = 128, difficulty: float = 1.0, seed: int = 0) -> list[SyntheticCase]:
    return [render_case(np.random.default_rng([seed, i]), size, True, difficulty) for i in range(n)]


# --------------------------------------------------------------------------------------------
# spec


def test_spec_key_is_short_stable_and_follows_every_field():
    spec = SyntheticSpec()
    assert spec.key() == SyntheticSpec().key()
    assert len(spec.key()) == 12 and spec.key().isalnum()
    changed = [
        SyntheticSpec(count=601),
        SyntheticSpec(size=128),
        SyntheticSpec(prevalence=0.3),
        SyntheticSpec(difficulty=1.5),
        SyntheticSpec(seed=1),
    ]
    assert len({spec.key(), *(s.key() for s in changed)}) == 6


@pytest.mark.parametrize(
    "kwargs", [{"count": -1}, {"size": 8}, {"prevalence": 1.5}, {"prevalence": -0.1}, {"difficulty": -1}]
)
def test_spec_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        SyntheticSpec(**kwargs)


# --------------------------------------------------------------------------------------------
# render_case


def test_unfractured_case_has_no_ground_truth():
    case = render_case(np.random.default_rng(1), 128, False, 1.0)
    assert case.pixels.shape == (128, 128) and case.pixels.dtype == np.uint8
    assert case.mask.shape == (128, 128) and case.mask.dtype == bool
    assert case.boxes == () and not case.mask.any()
    assert case.kind == "none" and case.part in PARTS
    assert case.pixels.std() > 10  # an image, not a flat field


def test_render_case_is_deterministic():
    a = render_case(np.random.default_rng([5, 5]), 128, True, 1.0)
    b = render_case(np.random.default_rng([5, 5]), 128, True, 1.0)
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.mask, b.mask)
    assert a.boxes == b.boxes and a.kind == b.kind and a.part == b.part


def test_boxes_lie_inside_the_image_and_cover_the_mask():
    size = 128
    cases = _fractured_cases(40, size)
    assert {c.kind for c in cases} == set(KINDS)
    assert {c.part for c in cases} == set(PARTS)
    for c in cases:
        assert c.kind in KINDS and c.boxes and c.mask.any()
        covered = np.zeros_like(c.mask)
        for x, y, w, h in c.boxes:
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= size and y + h <= size
            x0, y0, x1, y1 = int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h))
            assert c.mask[y0:y1, x0:x1].any()  # every box holds fracture pixels
            covered[y0:y1, x0:x1] = True
        assert not (c.mask & ~covered).any()  # every fracture pixel lies in a box
        rows, cols = np.flatnonzero(c.mask.any(1)), np.flatnonzero(c.mask.any(0))
        tight = (cols[-1] - cols[0] + 1 + 8) * (rows[-1] - rows[0] + 1 + 8)
        assert sum(w * h for _, _, w, h in c.boxes) <= 2 * tight  # tight boxes, a few px of margin


def test_fracture_changes_the_image_only_near_its_boxes():
    """Equal generators give the same scene with and without the fracture (see render_case)."""
    size = 128
    seen = set()
    for i in range(30):
        broken = render_case(np.random.default_rng([9, i]), size, True, 1.0)
        intact = render_case(np.random.default_rng([9, i]), size, False, 1.0)
        assert broken.part == intact.part
        diff = np.abs(broken.pixels.astype(int) - intact.pixels.astype(int))
        inside = np.zeros((size, size), dtype=bool)
        for x, y, w, h in broken.boxes:
            inside[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = True
        assert diff[inside].mean() > 8  # the fracture is visible in its box
        assert diff[broken.mask].mean() > 10
        if broken.kind == "displaced":  # the distal fragment moves along its whole length
            assert diff[~inside].mean() < diff[inside].mean()
        else:
            assert diff[~inside].max() <= 3  # elsewhere the image is unchanged
        # the fracture sits in bone: brighter than the image median before it broke
        assert np.median(intact.pixels[broken.mask]) > np.median(intact.pixels)
        seen.add(broken.kind)
    assert seen == set(KINDS)


def test_difficulty_makes_fractures_less_conspicuous():
    def contrast(difficulty: float) -> float:
        out = []
        for i in range(30):
            broken = render_case(np.random.default_rng([4, i]), 128, True, difficulty)
            intact = render_case(np.random.default_rng([4, i]), 128, False, difficulty)
            out.append(np.abs(broken.pixels.astype(int) - intact.pixels.astype(int))[broken.mask].mean())
        return float(np.mean(out))

    easy, default, subtle = contrast(0.0), contrast(1.0), contrast(2.0)
    assert easy > default > subtle


# --------------------------------------------------------------------------------------------
# generate


def test_prevalence_is_respected():
    spec = SyntheticSpec(count=2000, prevalence=0.35, seed=11)
    share = np.mean([case_label(spec, i) for i in range(spec.count)])
    assert abs(share - 0.35) < 0.035


def test_generate_writes_images_labels_and_spec(tmp_path):
    root = generate(SMALL, tmp_path / "s")
    assert root == tmp_path / "s"
    assert json.loads((root / "spec.json").read_text())["seed"] == SMALL.seed
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [f"SYN{i:06d}" for i in range(SMALL.count)]
    assert {r["label"] for r in rows} == {"0", "1"}
    for i, r in enumerate(rows):
        assert r["file"] == f"images/{r['id']}.png"
        assert int(r["label"]) == case_label(SMALL, i)
        assert (r["kind"] == "none") == (r["label"] == "0") == (r["boxes"] == "")
        assert r["part"] in PARTS
        px = _pixels(root / r["file"])
        assert px.shape == (SMALL.size, SMALL.size) and px.dtype == np.uint8


def test_generate_is_deterministic(tmp_path):
    a = generate(SMALL, tmp_path / "a")
    b = generate(SMALL, tmp_path / "b")
    assert (a / "labels.csv").read_bytes() == (b / "labels.csv").read_bytes()
    for i in range(SMALL.count):
        name = f"images/SYN{i:06d}.png"
        assert np.array_equal(_pixels(a / name), _pixels(b / name))


def test_image_i_does_not_depend_on_count(tmp_path):
    short = generate(SyntheticSpec(count=10, size=96, seed=2), tmp_path / "short")
    long = generate(SyntheticSpec(count=20, size=96, seed=2), tmp_path / "long")
    rows_short = (short / "labels.csv").read_text().splitlines()
    rows_long = (long / "labels.csv").read_text().splitlines()
    assert rows_long[: len(rows_short)] == rows_short
    for i in range(10):
        name = f"images/SYN{i:06d}.png"
        assert np.array_equal(_pixels(short / name), _pixels(long / name))


def test_generate_is_idempotent(tmp_path, monkeypatch):
    root = generate(SMALL, tmp_path / "s")
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}

    def boom(*args, **kwargs):
        raise AssertionError("generate redid finished work")

    monkeypatch.setattr(syn, "render_case", boom)
    monkeypatch.setattr(syn, "atomic_write_bytes", boom)
    assert generate(SMALL, root) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps


def test_generate_writes_spec_json_last(tmp_path, monkeypatch):
    order: list[str] = []
    for name in ("atomic_write_bytes", "atomic_write_text", "atomic_write_json"):
        real = getattr(syn, name)

        def spy(path, data, _real=real):
            order.append(Path(path).name)
            return _real(path, data)

        monkeypatch.setattr(syn, name, spy)
    generate(SMALL, tmp_path / "s")
    assert order[-1] == "spec.json" and order[-2] == "labels.csv"
    assert order.count("spec.json") == 1 and len(order) == SMALL.count + 2


def test_interrupted_generate_leaves_no_marker_and_is_redone(tmp_path, monkeypatch):
    root = tmp_path / "s"
    real = syn.atomic_write_bytes
    written = []

    def dies_after_three(path, data):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        return real(path, data)

    monkeypatch.setattr(syn, "atomic_write_bytes", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        generate(SMALL, root)
    assert not (root / "spec.json").exists() and not (root / "labels.csv").exists()
    assert not Synthetic.looks_like(root)
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]  # no half-written files

    monkeypatch.setattr(syn, "atomic_write_bytes", real)
    generate(SMALL, root)
    assert Synthetic.looks_like(root)
    assert len(Synthetic(root).scan().records) == SMALL.count


def test_generate_replaces_another_spec_in_the_same_folder(tmp_path):
    root = tmp_path / "s"
    generate(SyntheticSpec(count=8, size=96, seed=1), root)
    generate(SyntheticSpec(count=5, size=96, seed=2), root)
    assert json.loads((root / "spec.json").read_text())["seed"] == 2
    assert len(list((root / "images").glob("*.png"))) == 5
    fresh = generate(SyntheticSpec(count=5, size=96, seed=2), tmp_path / "fresh")
    assert (root / "labels.csv").read_bytes() == (fresh / "labels.csv").read_bytes()


# --------------------------------------------------------------------------------------------
# the Dataset


def test_scan_lists_every_image_with_its_boxes(tmp_path):
    root = generate(SMALL, tmp_path / "s")
    listing = Synthetic(root).scan()
    assert listing.faults == []
    assert len(listing.records) == SMALL.count
    for i, rec in enumerate(listing.records):
        assert rec.id == f"SYN{i:06d}" and rec.group == rec.id
        assert rec.source == "synthetic" and rec.part in PARTS and rec.split == ""
        assert Path(rec.path).is_absolute() and Path(rec.path).is_file()
        assert rec.label == case_label(SMALL, i)
        assert bool(rec.boxes) == (rec.label == 1)
        _, case = syn.render_index(SMALL, i)
        assert rec.boxes == case.boxes  # boxes survive the CSV round trip exactly


def test_scan_reports_faults_instead_of_failing(tmp_path):
    root = generate(SMALL, tmp_path / "s")
    (root / "images" / "SYN000001.png").unlink()
    lines = (root / "labels.csv").read_text().splitlines()
    assert lines[3].startswith("SYN000002,")
    lines[3] = "SYN000002,images/SYN000002.png,7,hand,none,"  # a label that is not 0 or 1
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    listing = Synthetic(root).scan()
    assert len(listing.records) == SMALL.count - 2
    assert sorted(f.kind for f in listing.faults) == ["bad_metadata", "missing_file"]

    (root / "labels.csv").unlink()
    listing = Synthetic(root).scan()
    assert listing.records == [] and listing.faults[0].kind == "missing_file"


def test_registered_and_recognised(tmp_path):
    assert DATASETS.get("synthetic") is Synthetic
    assert "synthetic" in DATASETS.list()
    assert Synthetic.name == "synthetic"
    assert "no patient data" in (Synthetic.__doc__ or "") and "fracbench" in Synthetic.license
    assert not Synthetic.looks_like(tmp_path)
    generate(SMALL, tmp_path / "s")
    assert Synthetic.looks_like(tmp_path / "s")


def test_ensure_generates_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FRACBENCH_CACHE", str(tmp_path / "cache"))
    ds = Synthetic.ensure(SMALL)
    assert ds.root == (tmp_path / "cache" / "synthetic" / SMALL.key()).resolve()
    assert Synthetic.looks_like(ds.root)
    monkeypatch.setattr(syn, "render_case", lambda *a, **k: pytest.fail("regenerated"))
    again = Synthetic.ensure(SMALL)
    assert again.root == ds.root and len(again.scan().records) == SMALL.count
    monkeypatch.undo()
    elsewhere = Synthetic.ensure(SMALL, root=tmp_path / "elsewhere")
    assert elsewhere.root == (tmp_path / "elsewhere").resolve() and Synthetic.looks_like(elsewhere.root)


# --------------------------------------------------------------------------------------------
# calibration: at the default difficulty a tiny CNN is good but not perfect


def tiny_cnn_accuracy(root: Path, epochs: int = 30, seed: int = 0) -> float:
    """Train a three-layer CNN on 64 px copies of the first 400 images; accuracy on the rest."""
    import torch
    from torch import nn

    records = Synthetic(root).scan().records
    x = np.stack([_pixels(Path(r.path), side=64) for r in records])
    xs = torch.from_numpy(x.astype(np.float32) / 255.0)[:, None]
    xs = (xs - xs.mean()) / xs.std()
    ys = torch.tensor([r.label for r in records], dtype=torch.float32)
    x_tr, y_tr, x_te, y_te = xs[:400], ys[:400], xs[400:], ys[400:]

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

    torch.manual_seed(seed)
    model = nn.Sequential(
        *block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 1), nn.Flatten(0),
    )
    batch = 16
    steps = epochs * -(-len(x_tr) // batch)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_tr), generator=gen)
        for k in range(0, len(x_tr), batch):
            idx = order[k : k + batch]
            xb = x_tr[idx]
            if torch.rand(1, generator=gen).item() < 0.5:  # the eight flips and quarter turns
                xb = xb.flip(3)
            xb = torch.rot90(xb, int(torch.randint(4, (1,), generator=gen)), (2, 3))
            loss = nn.functional.binary_cross_entropy_with_logits(model(xb), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        return float(((model(x_te) > 0).float() == y_te).float().mean())


@pytest.mark.slow
def test_tiny_cnn_learns_the_default_difficulty_but_not_perfectly(tmp_path):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        root = generate(SyntheticSpec(count=600, prevalence=0.5, seed=0), tmp_path / "s")
        accuracy = tiny_cnn_accuracy(root)
    finally:
        torch.set_num_threads(threads)
    assert 0.65 < accuracy < 1.0, accuracy
