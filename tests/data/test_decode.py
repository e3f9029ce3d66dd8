"""Tests for fracbench.data.decode: every image source decodes to (H, W) uint8, or DecodeError."""

from __future__ import annotations

import io
import pickle
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from fracbench.data import decode as dec
from fracbench.data.decode import (
    MAX_PIXELS,
    Decoded,
    DecodeError,
    decode_bytes,
    decode_image,
    is_dicom_bytes,
    to_rgb_uint8,
)

PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3


def _ramp(h: int = 32, w: int = 48) -> np.ndarray:
    return (np.arange(h * w, dtype=np.float64).reshape(h, w) * 255 / (h * w - 1)).astype(np.uint8)


def _save(tmp_path: Path, name: str, im: Image.Image, **kw: object) -> Path:
    path = tmp_path / name
    im.save(path, **kw)
    return path


def _check(d: Decoded) -> np.ndarray:
    assert isinstance(d, Decoded)
    assert d.pixels.dtype == np.uint8 and d.pixels.ndim == 2
    assert d.pixels.flags.writeable and d.pixels.flags.c_contiguous
    return d.pixels


# ------------------------------------------------------------------ Pillow modes


def test_l_png_is_unchanged(tmp_path: Path) -> None:
    a = _ramp()
    d = decode_image(_save(tmp_path, "l.png", Image.fromarray(a, "L")))
    assert np.array_equal(_check(d), a)
    assert d.original_mode == "L" and d.warnings == ()


def test_rgb_jpeg_becomes_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    d = decode_image(_save(tmp_path, "c.jpg", Image.fromarray(rgb, "RGB"), quality=95))
    px = _check(d)
    assert px.shape == (40, 60) and d.original_mode == "RGB"
    expected = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert abs(float(px.mean()) - expected) < 3


def test_rgba_png_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :10, 3] = 255
    rgba[:, 10:, 3] = 128
    rgba[0, 0, 3] = 0
    d = decode_image(_save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")))
    px = _check(d)
    lum = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert d.original_mode == "RGBA"
    assert abs(int(px[5, 5]) - lum) <= 1
    assert abs(int(px[5, 15]) - lum * 128 / 255) <= 2
    assert px[0, 0] == 0


def test_la_png_is_composited_on_black(tmp_path: Path) -> None:
    la = Image.merge("LA", (Image.new("L", (8, 8), 200), Image.new("L", (8, 8), 64)))
    d = decode_image(_save(tmp_path, "la.png", la))
    assert abs(int(_check(d)[0, 0]) - 200 * 64 / 255) <= 1


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (6, 4), 0)
    im.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0] + [0] * (256 * 3 - 9))
    im.putpixel((1, 0), 1)
    im.putpixel((2, 0), 2)
    im.putpixel((3, 0), 1)
    d = decode_image(_save(tmp_path, "p.png", im, transparency=bytes([255, 255, 255]) + bytes([255, 0])))
    px = _check(d)
    assert d.original_mode == "P"
    assert px[0, 1] == 255  # white entry, opaque
    assert abs(int(px[0, 2]) - round(0.299 * 255)) <= 1  # red entry -> luminance
    # entry 3 is not used; entry 1 appears twice
    assert px[0, 3] == 255


def test_palette_transparent_entry_is_black(tmp_path: Path) -> None:
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 255, 255, 255] + [0] * (254 * 3))
    d = decode_image(_save(tmp_path, "pt.png", im, transparency=1))
    assert int(_check(d).max()) == 0


def test_16bit_png_is_stretched_min_to_max(tmp_path: Path) -> None:
    a = np.linspace(1000, 5000, 64 * 32).reshape(32, 64).astype(np.uint16)
    path = tmp_path / "i16.png"
    Image.fromarray(a).save(path)
    d = decode_image(path)
    assert d.original_mode.startswith("I")
    expected = np.rint((a.astype(np.float64) - 1000) * (255 / 4000)).astype(np.uint8)
    px = _check(d)
    assert np.array_equal(px, expected)
    assert px.min() == 0 and px.max() == 255


def test_constant_16bit_is_zeros(tmp_path: Path) -> None:
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(path)
    assert not _check(decode_image(path)).any()


def test_float_tiff_with_nan_is_stretched(tmp_path: Path) -> None:
    a = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(4, 4)
    a[0, 0] = np.nan
    path = tmp_path / "f.tif"
    Image.fromarray(a, "F").save(path)
    d = decode_image(path)
    px = _check(d)
    assert d.original_mode == "F"
    lo = float(a[0, 1])  # the smallest finite value
    expected = np.rint((a.astype(np.float64) - lo) * 255 / (1.0 - lo))
    assert px[0, 0] == 0 and px[-1, -1] == 255
    assert np.array_equal(px.ravel()[1:], expected.ravel()[1:].astype(np.uint8))
    assert any("non-finite" in w for w in d.warnings)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    a = np.zeros((20, 40), np.uint8)
    a[:, :5] = 255  # a bright band on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    d = decode_image(_save(tmp_path, "rot.jpg", Image.fromarray(a, "L"), exif=exif, quality=95))
    px = _check(d)
    assert px.shape == (40, 20)
    assert px[:5].mean() > 200 and px[-5:].mean() < 50  # the left band is now on top


# ------------------------------------------------------------------ damage


def _noise_jpeg(size: int = 128) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_decodes_with_warning(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(_ramp(64, 64)).save(buf, fmt)
    data = buf.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) * 2 // 3])
    d = decode_image(path)
    assert _check(d).shape == (64, 64)
    assert d.warnings and d.warnings[0].startswith("truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never left set


def test_truncated_jpeg_keeps_the_part_present(tmp_path: Path) -> None:
    data = _noise_jpeg()
    whole = decode_bytes(data).pixels
    cut = decode_bytes(data[: len(data) // 2], "cut.jpg").pixels
    assert np.array_equal(cut[:16], whole[:16])


def test_header_only_fragment_is_an_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode_bytes(_noise_jpeg()[:200], "stub.jpg")
    assert "stub.jpg" in str(info.value)


def test_garbage_empty_missing_and_directory(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all" * 10)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    for path, word in [
        (garbage, "not a recognised image"),
        (empty, "empty"),
        (missing, "not found"),
        (tmp_path, "directory"),
    ]:
        with pytest.raises(DecodeError) as info:
            decode_image(path)
        e = info.value
        assert str(e).startswith(f"{path}: {e.reason}")
        assert e.path == str(path) and word in e.reason
        assert isinstance(e, ValueError)


def test_decode_error_pickles() -> None:
    e = DecodeError("x.png", "broken", "fix it")
    back = pickle.loads(pickle.dumps(e))
    assert (back.path, back.reason, back.hint, str(back)) == ("x.png", "broken", "fix it", str(e))
    assert str(e) == "x.png: broken (fix it)"


@pytest.mark.parametrize(
    ("side", "size_text"),
    [
        (7900, "7900x7900"),  # over MAX_PIXELS, under Pillow's own limits: our header check
        (10000, "100000000"),  # over Pillow's warning limit: the warning becomes the error
        (20000, "400000000"),  # over Pillow's error limit
    ],
)
def test_bomb_header_refused_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int, size_text: str
) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(path)  # tens of millions of pixels, a few kB on disk
    assert path.stat().st_size < 200_000

    def no_load(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    with pytest.raises(DecodeError) as info:
        decode_image(path)
    assert "decompression bomb" in info.value.reason and size_text in info.value.reason
    assert str(path) in str(info.value)
    assert Image.MAX_IMAGE_PIXELS == before  # Pillow's limit is never changed


def test_eps_is_not_handed_to_ghostscript() -> None:
    with pytest.raises(DecodeError):
        decode_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "x.eps")


# ------------------------------------------------------------------ DICOM


def _dicom(
    arr: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    preamble: bool = True,
    **tags: object,
) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    if arr is not None:
        ds.Rows, ds.Columns = arr.shape[-2:] if arr.ndim == 2 else arr.shape[:2]
        ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
        if arr.ndim == 3:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        bits = arr.dtype.itemsize * 8
        ds.BitsAllocated = ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    if preamble:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if PYDICOM_3:
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        else:
            pydicom.dcmwrite(buf, ds, write_like_original=False)
    else:
        if PYDICOM_3:
            pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
        else:
            ds.is_implicit_VR, ds.is_little_endian = True, True
            pydicom.dcmwrite(buf, ds)
    return buf.getvalue()


def _u16(h: int = 16, w: int = 24) -> np.ndarray:
    return np.linspace(100, 3100, h * w).reshape(h, w).astype(np.uint16)


def test_dicom_monochrome2_16bit(tmp_path: Path) -> None:
    a = _u16()
    data = _dicom(a)
    assert is_dicom_bytes(data[:132]) and not is_dicom_bytes(data[:100])
    path = tmp_path / "img"  # no suffix: recognised by the magic alone
    path.write_bytes(data)
    d = decode_image(path)
    px = _check(d)
    assert d.original_mode == "DICOM MONOCHROME2"
    expected = np.rint((a.astype(np.float64) - 100) * (255 / 3000)).astype(np.uint8)
    assert np.array_equal(px, expected)


def test_dicom_monochrome1_is_inverted() -> None:
    a = _u16()
    m2 = decode_bytes(_dicom(a), "m2.dcm").pixels
    d1 = decode_bytes(_dicom(a, "MONOCHROME1"), "m1.dcm")
    assert d1.original_mode == "DICOM MONOCHROME1"
    assert np.abs(d1.pixels.astype(int) - (255 - m2.astype(int))).max() <= 1  # rounding of .5 ties
    assert d1.pixels[0, 0] == 255 and d1.pixels[-1, -1] == 0  # low stored value = bright


def test_dicom_window_is_applied() -> None:
    a = _u16()
    d = decode_bytes(_dicom(a, WindowCenter=1100, WindowWidth=1000), "w.dcm")
    px = _check(d)
    assert px[a < 550].max() == 0 and px[a > 1650].min() == 255
    assert 0 < px[a == a[(a > 900) & (a < 1300)][0]][0] < 255


def test_dicom_rescale_slope_negative_flips() -> None:
    a = _u16()
    d = decode_bytes(_dicom(a, RescaleSlope=-1, RescaleIntercept=0), "s.dcm")
    assert d.pixels[0, 0] == 255 and d.pixels[-1, -1] == 0


def test_dicom_multiframe_uses_first_frame() -> None:
    frames = np.stack([_u16(), _u16()[::-1]])
    ds_bytes = _dicom(frames[0], NumberOfFrames=2)
    ds = pydicom.dcmread(io.BytesIO(ds_bytes))
    ds.PixelData = frames.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf)
    d = decode_bytes(buf.getvalue(), "mf.dcm")
    assert np.array_equal(d.pixels, decode_bytes(_dicom(frames[0]), "one.dcm").pixels)
    assert any("frame 1 of 2" in w for w in d.warnings)


def test_dicom_rgb_becomes_luminance() -> None:
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:, :5] = (255, 0, 0)
    rgb[:, 5:] = (0, 255, 0)
    d = decode_bytes(_dicom(rgb, "RGB"), "rgb.dcm")
    px = _check(d)
    assert d.original_mode == "DICOM RGB"
    assert px[0, 0] == 0 and px[0, 9] == 255  # red is darker than green, stretched


def test_dicom_without_pixel_data_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "report.dcm"
    path.write_bytes(_dicom(None))
    with pytest.raises(DecodeError) as info:
        decode_image(path)
    assert "no pixel data" in info.value.reason and str(path) in str(info.value)


def test_dicom_odd_tags_are_decode_errors() -> None:
    data = _dicom(_u16())
    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.Rows
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(DecodeError, match="Rows"):
        decode_bytes(buf.getvalue(), "norows.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows = 5000  # pixel data far too short for the header
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(DecodeError, match="pixel data"):
        decode_bytes(buf.getvalue(), "short.dcm")


def test_dicom_bomb_refused() -> None:
    ds = pydicom.dcmread(io.BytesIO(_dicom(_u16())))
    ds.Rows = ds.Columns = 10_000
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_bytes(buf.getvalue(), "huge.dcm")


def test_dcm_suffix_without_preamble() -> None:
    a = _u16()
    raw = _dicom(a, preamble=False)
    assert not is_dicom_bytes(raw)
    d = decode_bytes(raw, "raw.dcm")
    assert np.array_equal(d.pixels, decode_bytes(_dicom(a)).pixels)
    with pytest.raises(DecodeError):  # without the suffix nothing says it is DICOM
        decode_bytes(raw, "raw.bin")


def test_garbage_named_dcm_says_not_dicom() -> None:
    with pytest.raises(DecodeError, match="not a DICOM file") as info:
        decode_bytes(b"\x00\x01 just some bytes, neither DICOM nor an image" * 8, "scan.dcm")
    assert str(info.value).startswith("scan.dcm: ")


def test_damaged_png_named_dcm_reports_the_png_problem() -> None:
    buf = io.BytesIO()
    Image.fromarray(_ramp()).save(buf, "PNG")
    data = buf.getvalue()
    start = data.index(b"IDAT") + 6  # keep the zlib header, wreck the compressed stream
    broken = data[:start] + b"\xff" * (len(data) - start - 12) + data[-12:]
    with pytest.raises(DecodeError) as info:
        decode_bytes(broken, "broken.dcm")
    assert "cannot decode the image" in info.value.reason and "DICOM" not in info.value.reason


def test_png_named_dcm_still_decodes() -> None:
    buf = io.BytesIO()
    Image.fromarray(_ramp()).save(buf, "PNG")
    d = decode_bytes(buf.getvalue(), "mislabelled.dcm")
    assert np.array_equal(d.pixels, _ramp()) and any(".dcm" in w for w in d.warnings)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pixel_data_handlers is deprecated in 3.x
def test_dicom_pydicom_24_code_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pydicom 2.4 branch (pixel_data_handlers.util, ds.pixel_array) gives the same pixels."""
    from types import SimpleNamespace

    util = pytest.importorskip("pydicom.pixel_data_handlers.util")

    a = _u16()
    frames = np.stack([a, a[::-1]])
    ds = pydicom.dcmread(
        io.BytesIO(_dicom(a, "MONOCHROME1", NumberOfFrames=2, WindowCenter=1600, WindowWidth=2000))
    )
    ds.PixelData = frames.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf)
    cases = [_dicom(a), buf.getvalue(), _dicom(np.dstack([a.astype(np.uint8)] * 3), "RGB")]
    expected = [decode_bytes(c, "v3.dcm") for c in cases]
    old = SimpleNamespace(
        pydicom=pydicom,
        apply_color_lut=util.apply_color_lut,
        apply_modality_lut=util.apply_modality_lut,
        apply_voi_lut=util.apply_voi_lut,
        pixel_array=None,
        v3=False,
    )
    monkeypatch.setattr(dec, "_dicom_api", lambda: old)
    for case, want in zip(cases, expected, strict=True):
        got = decode_bytes(case, "v2.dcm")
        assert np.array_equal(got.pixels, want.pixels) and got.warnings == want.warnings


# ------------------------------------------------------------------ API


def test_decode_bytes_equals_decode_image(tmp_path: Path) -> None:
    paths = [
        _save(tmp_path, "a.png", Image.fromarray(_ramp())),
        _save(tmp_path, "b.jpg", Image.fromarray(_ramp()).convert("RGB")),
    ]
    dcm = tmp_path / "c.dcm"
    dcm.write_bytes(_dicom(_u16()))
    for path in [*paths, dcm]:
        a, b = decode_image(path), decode_bytes(path.read_bytes(), path.name)
        assert np.array_equal(a.pixels, b.pixels)
        assert (a.warnings, a.original_mode) == (b.warnings, b.original_mode)
    with pytest.raises(DecodeError, match="<upload>"):
        decode_bytes(b"")


def test_to_rgb_uint8() -> None:
    a = _ramp()
    rgb = to_rgb_uint8(a)
    assert rgb.shape == (*a.shape, 3) and rgb.dtype == np.uint8 and rgb.flags.writeable
    assert all(np.array_equal(rgb[..., i], a) for i in range(3))
    with pytest.raises(ValueError):
        to_rgb_uint8(a.astype(np.float32))


def test_truncated_retry_is_invisible_to_other_threads() -> None:
    """While one thread retries a truncated file, others still see truncation as truncation."""
    data = _noise_jpeg(256)
    cut = data[: len(data) // 2]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(15):
                d = decode_bytes(cut, "cut.jpg")
                assert d.warnings and d.warnings[0].startswith("truncated")
                decode_bytes(data, "whole.jpg")
        except BaseException as e:  # reported to the main thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and ImageFile.LOAD_TRUNCATED_IMAGES is False


# ------------------------------------------------------------------ fuzz


def _seeds() -> list[bytes]:
    out = []
    for fmt in ("PNG", "JPEG", "BMP", "TIFF", "GIF"):
        buf = io.BytesIO()
        Image.fromarray(_ramp(8, 8)).save(buf, fmt)
        out.append(buf.getvalue())
    out.append(_dicom(_u16(4, 4)))
    return out


_SEEDS = _seeds()


@st.composite
def _mangled(draw: st.DrawFn) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["random", "mutated"]))
    name = draw(st.sampled_from(["x.png", "x.jpg", "x.dcm", "upload"]))
    if kind == "random":
        return draw(st.binary(max_size=600)), name
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut] if draw(st.booleans()) else data), name


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow and pydicom complain about the damage
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mangled())
def test_random_bytes_decode_or_raise_decode_error(case: tuple[bytes, str]) -> None:
    data, name = case
    try:
        d = decode_bytes(data, name)
    except DecodeError as e:
        assert str(e).startswith(f"{name}: ")
    else:
        assert d.pixels.dtype == np.uint8 and d.pixels.ndim == 2
        assert d.pixels.size <= MAX_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
