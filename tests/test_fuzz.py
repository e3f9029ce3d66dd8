"""Fuzzing bad input end to end: bytes -> decode_bytes -> resize_square/to_input -> predict_array.

The only acceptable outcomes for any input are a probability in [0, 1] or a DecodeError: never
another exception, never a hang, never a decompression bomb decoded. Every example runs under a
hypothesis deadline and a per-example wall-clock guard (a worker thread joined with a timeout), so
a hang fails the test instead of stalling CI.

Two sizes of the same tests:

* default (CI): about 300 examples in all across the strategies below;
* ``longfuzz``: 10,000 examples per strategy, deselected unless asked for:
  ``pytest -m longfuzz tests/test_fuzz.py`` (takes a while; use ``-x`` to stop at the first find).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from fracbench.data.cache import resize_square
from fracbench.data.decode import MAX_PIXELS, DecodeError, decode_bytes
from fracbench.data.loader import to_input
from fracbench.models import create_model
from fracbench.serving.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fracbench.serving.predict import predict_array

SIZE = 32  # the tiny checkpoint's input size
GUARD_S = 30.0  # per-example wall-clock limit (a hang, not a slow example)
CI_DEADLINE = timedelta(seconds=10)  # generous: CI runners are shared and slow
LONG_EXAMPLES = 10_000

# strategy name -> examples in the default (CI) run; about 300 in all
CI_EXAMPLES = {
    "random_bytes": 50,
    "truncated": 50,
    "modes": 60,
    "exif": 40,
    "dicom": 70,
    "arrays": 30,
}


# --------------------------------------------------------------------------------------------
# the checkpoint and the check every example goes through


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    torch.manual_seed(0)
    model = create_model("tiny_cnn", image_size=SIZE)
    path = save_checkpoint(tmp_path_factory.mktemp("fuzz-ckpt") / "tiny", model, model_name="tiny_cnn",
                           model_kwargs={}, image_size=SIZE, channels=3, threshold=0.5)
    return load_checkpoint(path)


def guarded(fn: Callable[[], Any], limit: float = GUARD_S) -> Any:
    """Run ``fn`` in a daemon thread; fail (instead of hanging) if it has not returned within ``limit``."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        pytest.fail(f"no answer within {limit:.0f} s: the decoder or model hangs on this input")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def end_to_end(data: bytes, name: str, ck: Checkpoint) -> float | None:
    """The whole path for one input: a probability, or None after a DecodeError naming the input."""

    def run() -> float | None:
        try:
            decoded = decode_bytes(data, name)
        except DecodeError as e:
            assert str(e).startswith(f"{name}: "), str(e)
            assert e.reason
            return None
        px = decoded.pixels
        assert px.dtype == np.uint8 and px.ndim == 2 and px.size > 0
        assert px.size <= MAX_PIXELS
        # the training path: resize_square then to_input
        small = resize_square(px, SIZE)
        assert small.shape == (SIZE, SIZE) and small.dtype == np.uint8
        x = to_input(torch.from_numpy(np.array(small))[None], 3)
        assert x.shape == (1, 3, SIZE, SIZE) and torch.isfinite(x).all()
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        # the predict path (the same preprocessing, through the checkpoint)
        p = predict_array(ck, px)
        assert isinstance(p, float) and 0.0 <= p <= 1.0, p
        return p

    result = guarded(run)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # the truncation retry never leaks
    return result


# --------------------------------------------------------------------------------------------
# strategies


NAMES = st.sampled_from(["x.png", "x.jpg", "x.bmp", "x.tif", "x.dcm", "upload", "x.DCM", ""])


@functools.cache
def _supported() -> dict[str, tuple[str, ...]]:
    """Which of the odd modes each format can store, found by trying (Pillow versions differ)."""
    modes = ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK")
    out: dict[str, tuple[str, ...]] = {}
    for fmt in ("PNG", "JPEG", "BMP", "TIFF", "GIF"):
        ok = []
        for mode in modes:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. "Saving I mode images as PNG is deprecated"
                    Image.new(mode, (3, 2)).save(io.BytesIO(), fmt)
            except Exception:
                continue
            ok.append(mode)
        out[fmt] = tuple(ok)
    return out


def _pairs() -> list[tuple[str, str]]:
    return [(fmt, mode) for fmt, modes in _supported().items() for mode in modes]


SIDES = st.one_of(st.integers(1, 40), st.sampled_from([1, 2, 3, 255, 256, 257, 1000]))


@st.composite
def images(draw: st.DrawFn, formats: tuple[str, ...] | None = None) -> tuple[bytes, str]:
    """A valid image in an odd mode and size: 1x1, 1xN, Nx1, small, and long thin strips."""
    pairs = [p for p in _pairs() if formats is None or p[0] in formats]
    fmt, mode = draw(st.sampled_from(pairs))
    shape = draw(st.one_of(
        st.tuples(SIDES, SIDES),
        st.tuples(st.just(1), st.integers(1, 20_000)),  # 1xN
        st.tuples(st.integers(1, 20_000), st.just(1)),  # Nx1
    ))
    w, h = shape
    if fmt == "JPEG":
        w, h = min(w, 65_500), min(h, 65_500)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16), "I;16")
    elif mode == "I":
        lo, hi = draw(st.sampled_from([(0, 2), (-(2**31), 2**31 - 1), (0, 65536)]))
        im = Image.fromarray(rng.integers(lo, hi, (h, w), dtype=np.int64).astype(np.int32), "I")
    elif mode == "F":
        arr = rng.normal(size=(h, w)).astype(np.float32) * draw(st.sampled_from([1.0, 1e30, 1e-30]))
        specials = draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf, 0.0]), max_size=3))
        for k, v in enumerate(specials):
            arr.flat[(k * 7919) % arr.size] = v
        im = Image.fromarray(arr, "F")
    elif mode == "P":
        im = base.convert("RGB").quantize(colors=draw(st.integers(1, 256)))
        if draw(st.booleans()):
            im.info["transparency"] = draw(st.integers(0, 255))
    else:
        im = base.convert(mode)
    buf = io.BytesIO()
    try:
        im.save(buf, fmt)
    except (OSError, ValueError):  # e.g. a transparency index this palette cannot hold
        im.info.pop("transparency", None)
        buf = io.BytesIO()
        im.save(buf, fmt)
    name = draw(st.sampled_from([f"x.{fmt.lower()}", "upload", "x.dcm"]))
    return buf.getvalue(), name


@st.composite
def truncated(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid PNG/JPEG/BMP/TIFF cut anywhere, sometimes with a few bytes changed as well."""
    data, name = draw(images(formats=("PNG", "JPEG", "BMP", "TIFF")))
    buf = bytearray(data[: draw(st.integers(0, max(0, len(data) - 1)))])
    for _ in range(draw(st.integers(0, 3))):
        if buf:
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    return bytes(buf), name


@st.composite
def random_bytes(draw: st.DrawFn) -> tuple[bytes, str]:
    """Random bytes, bare or behind a real magic number so they reach a real decoder."""
    magic = draw(st.sampled_from([
        b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"GIF89a",
        b"\x00" * 128 + b"DICM", b"RIFF\x00\x00\x00\x00WEBP", b"P5\n", b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    ]))
    return magic + draw(st.binary(max_size=2000)), draw(NAMES)


@st.composite
def exif_images(draw: st.DrawFn) -> tuple[bytes, str]:
    """JPEG/PNG/TIFF with EXIF orientations 0..9 and odd ones, or with garbage EXIF bytes."""
    fmt = draw(st.sampled_from(["JPEG", "PNG", "TIFF"]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
    if draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.one_of(st.integers(0, 9), st.sampled_from([65535, 255, 2**31 - 1])))
        if draw(st.booleans()):
            exif[0x0112] = draw(st.sampled_from(["six", b"\x06", 6.5]))
        try:
            payload: bytes = exif.tobytes()
        except Exception:
            payload = b"Exif\x00\x00" + draw(st.binary(max_size=200))
    else:
        payload = draw(st.sampled_from([b"Exif\x00\x00", b"", b"II*\x00", b"MM\x00*"])) + draw(st.binary(max_size=400))
    buf = io.BytesIO()
    try:
        im.save(buf, fmt, exif=payload)
    except Exception:  # Pillow refused this payload on save: store it without
        buf = io.BytesIO()
        im.save(buf, fmt)
    return buf.getvalue(), f"x.{fmt.lower()}"


_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, JPEGBaseline8Bit, RLELossless]
_MISSING = object()


def _maybe(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Any:
    return draw(st.one_of(st.just(_MISSING), values))


@st.composite
def dicoms(draw: st.DrawFn) -> tuple[bytes, str]:
    """DICOM with missing, odd or inconsistent tags and pixel data of the wrong length."""
    rows = draw(st.one_of(st.integers(1, 24), st.sampled_from([0, 1, 30_000, 65_535])))
    cols = draw(st.one_of(st.integers(1, 24), st.sampled_from([0, 1, 30_000, 65_535])))
    bits = draw(st.sampled_from([8, 16, 32, 1, 12, 7, 0, 64, 24]))
    samples = draw(st.sampled_from([1, 1, 1, 3, 4, 0]))
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"  # fixed: hypothesis needs reproducible byte lengths
    ds.Modality = "DX"
    tags: dict[str, Any] = {
        "Rows": _maybe(draw, st.just(rows)),
        "Columns": _maybe(draw, st.just(cols)),
        "BitsAllocated": _maybe(draw, st.just(bits)),
        "BitsStored": _maybe(draw, st.sampled_from([bits, 12, 1, 0, 65])),
        "HighBit": _maybe(draw, st.sampled_from([max(bits - 1, 0), 11, 0, 70])),
        "PixelRepresentation": _maybe(draw, st.sampled_from([0, 1, 2])),
        "SamplesPerPixel": _maybe(draw, st.just(samples)),
        "PlanarConfiguration": _maybe(draw, st.sampled_from([0, 1, 7])),
        "PhotometricInterpretation": _maybe(draw, st.sampled_from(
            ["MONOCHROME2", "MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "CMYK", "HSV",
             "GARBAGE", "", "monochrome2"])),
        "NumberOfFrames": _maybe(draw, st.sampled_from(["1", "2", "0", "-1", "1000000", "abc"])),
        "RescaleSlope": _maybe(draw, st.sampled_from(["1", "-1", "0", "1e308", "nan", "x"])),
        "RescaleIntercept": _maybe(draw, st.sampled_from(["0", "-1024", "1e308"])),
        "WindowCenter": _maybe(draw, st.sampled_from(["40", "0", "-1e9", "nan"])),
        "WindowWidth": _maybe(draw, st.sampled_from(["400", "0", "-5", "1"])),
        "VOILUTFunction": _maybe(draw, st.sampled_from(["LINEAR", "SIGMOID", "LINEAR_EXACT", "WHAT"])),
    }
    for key, value in tags.items():
        if value is _MISSING:
            continue
        try:
            setattr(ds, key, value)
        except ValueError:  # a string pydicom will not store as IS/DS: store it as LO, read back as IS/DS
            ds.add_new(pydicom.datadict.tag_for_keyword(key), "LO", value)
    # pixel data: the right length for the header, or shorter, longer, empty or absent
    nbytes = max(rows, 0) * max(cols, 0) * max(samples, 1) * max(bits, 8) // 8
    nbytes = min(nbytes, 50_000)  # the header may claim far more than the file holds
    length = draw(st.sampled_from([nbytes, nbytes // 2, nbytes + 7, 0, 1, None]))
    if length is not None:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        data = rng.integers(0, 256, length + (length % 2), dtype=np.uint8).tobytes()
        ds.add_new(0x7FE00010, draw(st.sampled_from(["OB", "OW"])), data)
    syntax = draw(st.sampled_from(_SYNTAXES))
    preamble = draw(st.booleans())
    buf = io.BytesIO()
    try:
        if preamble:
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = syntax
            if syntax.is_compressed and "PixelData" in ds:
                # encapsulate whatever bytes we have (a valid-looking frame table, garbage frames)
                from pydicom.encaps import encapsulate

                ds.add_new(0x7FE00010, "OB", encapsulate([ds.PixelData or b"\x00\x00"]))
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        else:
            pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
    except Exception:
        # the header is too odd for pydicom to write; write it as a raw implicit dataset instead
        buf = io.BytesIO()
        ds.file_meta = FileMetaDataset()
        pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
        preamble = False
    data = buf.getvalue()
    if draw(st.booleans()) and len(data) > 140:  # and sometimes cut short
        data = data[: draw(st.integers(132, len(data)))]
    return data, "scan.dcm" if not preamble or draw(st.booleans()) else "scan"


ARRAYS = st.tuples(
    st.one_of(st.integers(1, 40), st.sampled_from([1, 2, 5000])),
    st.one_of(st.integers(1, 40), st.sampled_from([1, 2, 5000])),
    st.sampled_from([0, 3, 4]),
    st.integers(0, 2**32 - 1),
)

STRATEGIES: dict[str, st.SearchStrategy[tuple[bytes, str]]] = {
    "random_bytes": random_bytes(),
    "truncated": truncated(),
    "modes": images(),
    "exif": exif_images(),
    "dicom": dicoms(),
}


# --------------------------------------------------------------------------------------------
# the tests: the same bodies at two sizes


def _settings(n: int, deadline: timedelta | None) -> settings:
    return settings(max_examples=n, deadline=deadline, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def _fuzz_bytes(kind: str, ck: Checkpoint, n: int, deadline: timedelta | None) -> None:
    @_settings(n, deadline)
    @given(STRATEGIES[kind])
    def inner(case: tuple[bytes, str]) -> None:
        data, name = case
        end_to_end(data, name, ck)

    inner()


def _fuzz_arrays(ck: Checkpoint, n: int, deadline: timedelta | None) -> None:
    @_settings(n, deadline)
    @given(ARRAYS)
    def inner(case: tuple[int, int, int, int]) -> None:
        h, w, c, seed = case
        shape = (h, w) if c == 0 else (h, w, c)
        arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
        p = guarded(lambda: predict_array(ck, arr))
        assert 0.0 <= p <= 1.0

    inner()


pytestmark = pytest.mark.filterwarnings("ignore")  # Pillow and pydicom warn about the damage; that is the point


@pytest.fixture(autouse=True)
def _quiet_pydicom() -> Iterator[None]:
    """pydicom logs a warning for every odd tag value; thousands of them bury a real failure."""
    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.ERROR)
    yield
    log.setLevel(level)


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
def test_fuzz_bytes(kind: str, checkpoint: Checkpoint) -> None:
    _fuzz_bytes(kind, checkpoint, CI_EXAMPLES[kind], CI_DEADLINE)


def test_fuzz_arrays(checkpoint: Checkpoint) -> None:
    _fuzz_arrays(checkpoint, CI_EXAMPLES["arrays"], CI_DEADLINE)


@pytest.mark.longfuzz
@pytest.mark.parametrize("kind", sorted(STRATEGIES))
def test_longfuzz_bytes(kind: str, checkpoint: Checkpoint) -> None:
    _fuzz_bytes(kind, checkpoint, LONG_EXAMPLES, None)


@pytest.mark.longfuzz
def test_longfuzz_arrays(checkpoint: Checkpoint) -> None:
    _fuzz_arrays(checkpoint, LONG_EXAMPLES, None)


def test_ci_budget_is_about_300() -> None:
    assert 250 <= sum(CI_EXAMPLES.values()) <= 350


# --------------------------------------------------------------------------------------------
# fixed cases: every mode x format, the size extremes, every EXIF orientation


@pytest.mark.parametrize(("fmt", "mode"), _pairs())
@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1)])
def test_every_mode_and_tiny_size_predicts(fmt: str, mode: str, shape: tuple[int, int],
                                           checkpoint: Checkpoint) -> None:
    buf = io.BytesIO()
    Image.new(mode, shape).save(buf, fmt)
    assert end_to_end(buf.getvalue(), f"x.{fmt.lower()}", checkpoint) is not None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_predicts(orientation: int, checkpoint: Checkpoint) -> None:
    im = Image.fromarray(np.arange(6 * 10, dtype=np.uint8).reshape(6, 10), "L")
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    d = decode_bytes(buf.getvalue(), "o.jpg")
    assert d.pixels.shape == ((10, 6) if orientation >= 5 else (6, 10))
    assert end_to_end(buf.getvalue(), "o.jpg", checkpoint) is not None


@pytest.mark.slow
def test_large_but_allowed_image_predicts(checkpoint: Checkpoint) -> None:
    """Just under MAX_PIXELS, stored in a few kB: decoded (not refused) and scored."""
    side = int(MAX_PIXELS**0.5) - 1
    buf = io.BytesIO()
    Image.new("1", (side, side), 1).save(buf, "PNG")
    assert len(buf.getvalue()) < 200_000
    t0 = time.monotonic()
    p = end_to_end(buf.getvalue(), "big.png", checkpoint)
    assert p is not None and time.monotonic() - t0 < GUARD_S


_PEAK_SCRIPT = """
import resource, sys
from pathlib import Path
from fracbench.data.decode import decode_bytes
data = Path(sys.argv[1]).read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decode_bytes(data, "big16.png")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.slow
def test_large_16bit_image_decodes_in_bounded_memory(tmp_path: Path) -> None:
    """A 60-megapixel 16-bit gradient is ~130 kB as a PNG; decoding it must not take gigabytes.

    (Regression: the min..max stretch made several float64 copies of the whole image, over 2 GB of
    peak memory for one small upload; it now works in blocks of rows.)
    """
    side = int(MAX_PIXELS**0.5) - 1
    row = (np.arange(side) % 65536).astype(np.uint16)
    path = tmp_path / "big16.png"
    Image.frombytes("I;16", (side, side), np.ascontiguousarray(np.broadcast_to(row, (side, side))).tobytes()
                    ).save(path)
    assert path.stat().st_size < 1_000_000
    proc = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    grown_mb = int(proc.stdout.split()[-1]) // 1024
    pixels_mb = side * side // 2**20
    # Pillow's 16-bit image, numpy's copy of it and the 8-bit result: about 6 bytes a pixel (~350 MB)
    assert grown_mb < 10 * pixels_mb, f"decoding took {grown_mb} MB for a {pixels_mb}-megapixel image"


# --------------------------------------------------------------------------------------------
# decompression bombs: headers claiming 30000 x 30000 are refused fast, nothing allocated


BOMB = 30_000


def _png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def _jpeg_header(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)  # SOF0: precision, height, width
    return bytes(data)


def _bmp_header(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "BMP")
    data = bytearray(buf.getvalue())
    data[18:26] = struct.pack("<ii", w, h)
    return bytes(data)


def _tiff_header(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    for tag, value in ((256, w), (257, h)):  # ImageWidth, ImageLength as SHORT or LONG
        for typ in (3, 4):
            needle = struct.pack("<HHI", tag, typ, 1)
            at = data.find(needle)
            if at >= 0:
                data[at + 8:at + 12] = struct.pack("<I", value) if typ == 4 else struct.pack("<HH", value, 0)
    return bytes(data)


def _gif_header(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", w, h)
    return bytes(data)


def _dicom_header(w: int, h: int) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = b"\x00" * 64
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


BOMBS: dict[str, Callable[[int, int], bytes]] = {
    "bomb.png": _png_header, "bomb.jpg": _jpeg_header, "bomb.bmp": _bmp_header, "bomb.tif": _tiff_header,
    "bomb.gif": _gif_header, "bomb.dcm": _dicom_header,
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bomb_header_refused_fast_without_decoding(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = BOMBS[name](BOMB, BOMB)
    assert len(data) < 10_000

    def no_load(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    # a first refusal of this format imports its codec (pydicom, ...): not what is timed
    with pytest.raises(DecodeError):
        decode_bytes(BOMBS[name](BOMB, BOMB), name)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    # CPU time of this process (all threads), not wall time: on a loaded shared runner wall time
    # measures the neighbours; decoding 900 megapixels would take far more than this CPU time
    t0 = time.process_time()
    with pytest.raises(DecodeError) as info:
        guarded(lambda: decode_bytes(data, name), limit=60)
    assert time.process_time() - t0 < 2.0
    assert "decompression bomb" in info.value.reason, info.value.reason
    assert str(info.value).startswith(f"{name}: ")


_BOMB_SCRIPT = """
import resource, sys, time
from pathlib import Path
from fracbench.data.decode import DecodeError, decode_bytes
payloads = {p.name: p.read_bytes() for p in sorted(Path(sys.argv[1]).iterdir())}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.monotonic()
for name, data in payloads.items():
    try:
        decode_bytes(data, name)
    except DecodeError:
        pass
    else:
        sys.exit(f"{name}: decoded")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before, time.monotonic() - t0)
"""


def test_bomb_headers_allocate_nothing(tmp_path: Path) -> None:
    """In a fresh process, refusing every 30000 x 30000 header leaves peak RSS where it was."""
    for name, make in BOMBS.items():
        (tmp_path / name).write_bytes(make(BOMB, BOMB))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _BOMB_SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grown_kb, seconds = proc.stdout.split()
    assert int(grown_kb) < 50 * 1024, f"peak RSS grew by {int(grown_kb) // 1024} MB"  # 30000^2 would be 900 MB
    assert float(seconds) < 5.0


def test_guard_catches_a_hang() -> None:
    with pytest.raises(pytest.fail.Exception, match="no answer"):
        guarded(lambda: time.sleep(5), limit=0.2)
