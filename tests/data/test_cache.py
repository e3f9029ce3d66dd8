"""The decode cache: each image decoded once per (manifest, size); resumable fills; epochs decode nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from _trees import save, smooth

import fracbench.data.cache as C
from fracbench.data import prepare
from fracbench.data.cache import DECODE_COUNTER, build_cache, cache_key
from fracbench.data.loader import BatchLoader

pytestmark = pytest.mark.usefixtures("fresh_cache")

N_IMAGES = 14
_REAL_DECODE = C._decode_row


@pytest.fixture
def manifest(tmp_path: Path):
    root = tmp_path / "imgs"
    for k in range(N_IMAGES):
        cls = "fractured" if k % 3 == 0 else "normal"
        save(root / cls / f"i{k:02d}.png", smooth(200 + k, (40 + k, 50)))
    return prepare("imagefolder", root, progress=False).manifest


class Interrupt(Exception):
    pass


def _fail_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the n+1-th decode of this fill raise, as a kill part way through would stop it."""
    real = C._decode_row
    lock = threading.Lock()
    calls = [0]

    def decode(path: Path, size: int):
        with lock:
            calls[0] += 1
            if calls[0] > n:
                raise Interrupt(f"stopped after {n} images")
        return real(path, size)

    monkeypatch.setattr(C, "_decode_row", decode)


def test_second_build_decodes_nothing(manifest) -> None:
    before = DECODE_COUNTER["n"]
    first = build_cache(manifest, 32, progress=False)
    assert first.decoded_now == N_IMAGES and DECODE_COUNTER["n"] == before + N_IMAGES
    assert first.array.shape == (N_IMAGES, 32, 32) and first.array.dtype == np.uint8
    assert first.array.reshape(N_IMAGES, -1).max(axis=1).min() > 0  # every row was filled
    assert first.failed == {}
    assert list(first.labels) == [r.label for r in manifest.rows]
    assert list(first.splits) == [r.split for r in manifest.rows]
    assert first.path.parent.parent == C.cache_dir() and first.path.name == f"{cache_key(manifest, 32)}.u8"

    mid = DECODE_COUNTER["n"]
    second = build_cache(manifest, 32, progress=False)
    assert second.decoded_now == 0 and DECODE_COUNTER["n"] == mid
    assert second.path == first.path
    assert np.array_equal(np.asarray(second.array), np.asarray(first.array))
    for split in ("train", "val", "test"):
        assert list(second.indices(split)) == [i for i, r in enumerate(manifest.rows) if r.split == split]


def test_other_size_is_another_cache(manifest) -> None:
    a = build_cache(manifest, 32, progress=False)
    b = build_cache(manifest, 24, progress=False)
    assert b.path != a.path and b.decoded_now == N_IMAGES and b.array.shape == (N_IMAGES, 24, 24)
    assert build_cache(manifest, 32, progress=False).decoded_now == 0  # the first one is still there


def test_interrupted_fill_resumes_to_identical_bytes(manifest, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    whole = build_cache(manifest, 32, root=tmp_path / "whole", progress=False)
    monkeypatch.setattr(C, "CHUNK", 4)  # the done bitmap is saved every 4 rows
    _fail_after(monkeypatch, 6)
    with pytest.raises(Interrupt):
        build_cache(manifest, 32, root=tmp_path / "cut", progress=False, workers=1)
    done = np.load(tmp_path / "cut" / f"{cache_key(manifest, 32)}.done.npy")
    assert done.sum() == 4  # the first chunk was saved, the broken one was not
    monkeypatch.setattr(C, "_decode_row", _REAL_DECODE)  # the restarted process
    before = DECODE_COUNTER["n"]
    resumed = build_cache(manifest, 32, root=tmp_path / "cut", progress=False)
    assert resumed.decoded_now == N_IMAGES - 4 and DECODE_COUNTER["n"] == before + N_IMAGES - 4
    assert resumed.path.read_bytes() == whole.path.read_bytes()
    assert np.asarray(resumed.array).tobytes() == np.asarray(whole.array).tobytes()
    assert build_cache(manifest, 32, root=tmp_path / "cut", progress=False).decoded_now == 0


def test_lost_progress_rows_are_decoded_again(manifest, tmp_path: Path) -> None:
    whole = build_cache(manifest, 32, progress=False)
    reference = whole.path.read_bytes()
    done_path = whole.path.with_name(f"{cache_key(manifest, 32)}.done.npy")
    done = np.load(done_path)
    done[[1, 5, 9]] = False
    np.save(done_path, done)
    with open(whole.path, "r+b") as fh:  # and scribble over one of those rows
        fh.seek(5 * 32 * 32)
        fh.write(b"\xff" * 32 * 32)
    again = build_cache(manifest, 32, progress=False)
    assert again.decoded_now == 3
    assert again.path.read_bytes() == reference


def test_failed_rows_survive_an_interrupted_fill(manifest, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # a file damaged after the manifest was made decodes as zeros and is listed in .failed
    victim = manifest.abspath(manifest.rows[1])
    original = victim.read_bytes()
    victim.write_bytes(b"garbage, not an image")
    monkeypatch.setattr(C, "CHUNK", 4)
    _fail_after(monkeypatch, 6)
    with pytest.raises(Interrupt):
        build_cache(manifest, 32, root=tmp_path / "c", progress=False, workers=1)
    monkeypatch.setattr(C, "_decode_row", _REAL_DECODE)
    resumed = build_cache(manifest, 32, root=tmp_path / "c", progress=False)
    assert resumed.decoded_now == N_IMAGES - 4
    assert set(resumed.failed) == {1}
    assert not np.asarray(resumed.array[1]).any()
    assert set(build_cache(manifest, 32, root=tmp_path / "c", progress=False).failed) == {1}

    # repaired, and its row redone: no longer listed as failed
    victim.write_bytes(original)
    done_path = tmp_path / "c" / f"{cache_key(manifest, 32)}.done.npy"
    done = np.load(done_path)
    done[1] = False
    np.save(done_path, done)
    repaired = build_cache(manifest, 32, root=tmp_path / "c", progress=False)
    assert repaired.decoded_now == 1 and repaired.failed == {}
    assert build_cache(manifest, 32, root=tmp_path / "c", progress=False).failed == {}
    whole = build_cache(manifest, 32, root=tmp_path / "whole", progress=False)
    assert repaired.path.read_bytes() == whole.path.read_bytes()


def test_two_epochs_of_batches_decode_no_image(manifest) -> None:
    cache = build_cache(manifest, 32, progress=False)
    before = DECODE_COUNTER["n"]
    rows = np.arange(N_IMAGES)
    loader = BatchLoader(cache, rows, batch_size=4, channels=3, shuffle=True,
                         generator=torch.Generator().manual_seed(0))
    assert len(loader) == 4
    epochs = []
    for _ in range(2):
        seen = []
        for x, y, idx in loader:
            assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
            assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
            expect = torch.from_numpy(np.asarray(cache.array[idx])).float() / 127.5 - 1.0
            assert torch.allclose(x[:, 0], expect) and torch.equal(x[:, 0], x[:, 2])
            assert y.tolist() == [manifest.rows[i].label for i in idx]
            seen.extend(idx.tolist())
        assert sorted(seen) == rows.tolist()
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # shuffled anew, yet read from the cache
    assert DECODE_COUNTER["n"] == before  # the second epoch (and the first) decoded no image
    # a later process's view: the same cache, still no decode
    assert build_cache(manifest, 32, progress=False).decoded_now == 0 and DECODE_COUNTER["n"] == before
