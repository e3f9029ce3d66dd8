"""One decoder for every image fracbench reads: dataset files, demo uploads and predict inputs.

Everything comes out the same way: an ``(H, W)`` uint8 grayscale array in the X-ray convention
(bone bright), plus warnings about what was repaired on the way and the mode the file was stored
in. Anything that cannot be read raises :class:`DecodeError` and nothing else, so callers (dataset
scans turning bad files into faults, the demo answering an upload) catch exactly one exception.

Rules, in the order they are applied:

* DICOM is recognised by ``DICM`` at byte 128, or by a ``.dcm`` name (then read with
  ``force=True``). Pixels go through the modality LUT, then the VOI LUT (window), MONOCHROME1 is
  inverted, the first frame of a multi-frame object is used, colour becomes luminance, and the
  result is stretched from its min..max to 0..255.
* Everything else goes to Pillow, restricted to the raster formats in :data:`PILLOW_FORMATS` (so
  no Ghostscript for EPS, say). The size in the header is checked against :data:`MAX_PIXELS`
  before any pixel is decoded. EXIF orientation is applied. 8-bit ``L`` stays as it is; colour
  and palette images become ITU-R 601 luminance (alpha composited on black first); 16-bit,
  32-bit and float images are stretched from their min..max to 0..255 in float arithmetic.
* A truncated JPEG or PNG is decoded as far as it goes, with a warning starting "truncated".
"""

from __future__ import annotations

import functools
import io
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

MAX_PIXELS: int = 60_000_000
"""Images with more pixels (width * height, one frame) are refused as decompression bombs."""

PILLOW_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "DIB", "TIFF", "GIF", "WEBP", "PPM", "JPEG2000")
"""The Pillow formats :func:`decode_bytes` accepts ("JPEG" also opens phone photos stored as MPO).

Those missing from the installed Pillow are skipped."""

_UNIDENTIFIED = "not a recognised image (unknown or damaged header)"
# Advice only: each reason already says what is wrong, so the hint never repeats it.
_HINT_UNREADABLE = "re-export or re-download it"
_HINT_BOMB = f"images over {MAX_PIXELS:,} pixels are refused; downscale it before use"
_HINT_DICOM_CODEC = (
    "compressed DICOM needs a decoder plugin: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
)


class DecodeError(ValueError):
    """An image that cannot be read.

    ``path`` names the file (or the upload name), ``reason`` says what is wrong and ``hint`` what to
    do about it. ``str(e)`` is ``f"{path}: {reason}"`` followed by the hint in parentheses.
    """

    def __init__(self, path: str, reason: str, hint: str = _HINT_UNREADABLE) -> None:
        self.path = path
        self.reason = reason
        self.hint = hint
        message = f"{path}: {reason}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, tuple[str, str, str]]:
        # DataLoader workers pickle exceptions; the default reduce would call __init__(message).
        return (type(self), (self.path, self.reason, self.hint))


@dataclass(frozen=True)
class Decoded:
    """A decoded image: grayscale pixels, what was repaired, and how the file stored them."""

    pixels: np.ndarray  # (H, W) uint8 grayscale, X-ray convention: bone bright
    warnings: tuple[str, ...]  # e.g. ("truncated: decoded the part that was present",)
    original_mode: str  # e.g. "L", "RGB", "I;16", "DICOM MONOCHROME1"


def is_dicom_bytes(head: bytes) -> bool:
    """True when ``head`` (the first 132 bytes or more of a file) has the DICOM magic ``DICM`` at 128.

    A ``.dcm`` file without the 128-byte preamble is not recognised here; callers that know the
    name check its suffix as well (``decode_image`` and ``decode_bytes`` do).
    """
    return len(head) >= 132 and head[128:132] == b"DICM"


def decode_image(path: str | os.PathLike[str]) -> Decoded:
    """Decode the image file at ``path`` (see the module docstring for the rules)."""
    name = os.fspath(path)
    p = Path(name)
    try:
        if p.is_dir():
            raise DecodeError(name, "is a directory, not an image file", "pass the path of one image file")
        data = p.read_bytes()
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError(name, "file not found", "check the path; the data may have moved") from None
    except PermissionError:
        raise DecodeError(
            name, "permission denied", "check its permissions (chmod +r) or run as a user who can read it"
        ) from None
    except OSError as e:
        raise DecodeError(name, f"cannot read the file ({type(e).__name__}: {e})") from e
    return decode_bytes(data, name)


def decode_bytes(data: bytes, name: str = "<upload>") -> Decoded:
    """Decode an image held in memory, by the same rules as :func:`decode_image`.

    ``name`` is used in errors, and its suffix (``.dcm``) to recognise DICOM without a preamble.
    """
    try:
        return _decode(bytes(data), name)
    except DecodeError:
        raise
    except Exception as e:  # a bug or an exotic file: callers only ever catch DecodeError
        raise DecodeError(name, f"unexpected error while decoding ({type(e).__name__}: {e})") from e


def to_rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    """Repeat an ``(H, W)`` uint8 image into ``(H, W, 3)`` for display (a new, writable array)."""
    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 array, got shape {arr.shape} dtype {arr.dtype}")
    return np.repeat(arr[:, :, None], 3, axis=2)


# --------------------------------------------------------------------------------------------
# dispatch


def _decode(data: bytes, name: str) -> Decoded:
    if not data:
        raise DecodeError(name, "empty file (0 bytes)", "the file was not written completely; re-download it")
    if is_dicom_bytes(data[:132]):
        return _decode_dicom(data, name, force=False)
    if name.lower().endswith(".dcm"):
        # Named DICOM but without the preamble: a raw dataset, or a mislabelled PNG/JPEG.
        try:
            return _decode_dicom(data, name, force=True)
        except DecodeError as dicom_error:
            try:
                decoded = _decode_pillow(data, name)
            except DecodeError as pillow_error:
                if pillow_error.reason == _UNIDENTIFIED:
                    raise dicom_error from None  # neither: the DICOM reason is the more telling one
                raise  # a (damaged) PNG/JPEG/... that merely carries a .dcm name
            note = f"named .dcm but is a {decoded.original_mode} image, decoded as such"
            return Decoded(decoded.pixels, (*decoded.warnings, note), decoded.original_mode)
    return _decode_pillow(data, name)


# --------------------------------------------------------------------------------------------
# Pillow


class _TruncationGate:
    """Makes the temporary ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` invisible to other threads.

    Pillow reads that flag from a module global. Normal decodes hold the gate shared; a
    truncated-image retry holds it exclusively, sets the flag and restores it before letting normal
    decodes in again, so no other thread ever decodes a truncated file silently. Waiting retries
    block new normal decodes, so they cannot starve.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def normal(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def lenient(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_GATE = _TruncationGate()


def _is_truncation_error(error: BaseException) -> bool:
    return isinstance(error, (OSError, SyntaxError, ValueError)) and "truncated" in str(error).lower()


def _decode_pillow(data: bytes, name: str) -> Decoded:
    try:
        with _GATE.normal():
            return _pillow_once(data, name, [])
    except DecodeError:
        raise
    except Exception as e:
        if not _is_truncation_error(e):
            raise DecodeError(name, f"cannot decode the image ({type(e).__name__}: {e})") from e
        first = e
    try:
        with _GATE.lenient():
            return _pillow_once(data, name, [f"truncated: decoded the part that was present ({first})"])
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(
            name,
            f"truncated image, and not even the part present could be decoded ({type(e).__name__}: {e})",
        ) from e


@functools.cache
def _pillow_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in PILLOW_FORMATS if f in Image.OPEN)


def _open_checked(data: bytes, name: str) -> Image.Image:
    """Open lazily (header only) and refuse bombs before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_pillow_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(name, f"refused as a decompression bomb: {e}", _HINT_BOMB) from e
    except Image.UnidentifiedImageError:
        raise DecodeError(name, _UNIDENTIFIED) from None
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise DecodeError(
            name,
            f"refused as a decompression bomb: {width}x{height} = {width * height:,} pixels "
            f"(limit {MAX_PIXELS:,})",
            _HINT_BOMB,
        )
    if width == 0 or height == 0:
        im.close()
        raise DecodeError(name, f"image has no pixels ({width}x{height})")
    return im


def _pillow_once(data: bytes, name: str, notes: list[str]) -> Decoded:
    with _open_checked(data, name) as im:
        original_mode = im.mode
        im.load()
        try:
            ImageOps.exif_transpose(im, in_place=True)
        except Exception as e:  # unreadable EXIF must not cost an otherwise good image
            notes.append(f"ignored unreadable EXIF orientation ({type(e).__name__}: {e})")
        pixels = _pillow_to_gray(im, notes)
    return Decoded(pixels, tuple(notes), original_mode)


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _pillow_to_gray(im: Image.Image, notes: list[str]) -> np.ndarray:
    mode = im.mode
    if mode == "L":
        return np.array(im, dtype=np.uint8)
    if mode == "1":
        return np.array(im.convert("L"), dtype=np.uint8)
    if mode in ("I", "F") or mode.startswith("I;"):
        return _stretch_to_uint8(np.array(im), notes)
    if mode in _ALPHA_MODES or mode == "P":
        # Palette images go through RGBA so that a transparent palette entry is honoured.
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.array(Image.alpha_composite(black, rgba).convert("L"), dtype=np.uint8)
    rgb = im if mode == "RGB" else im.convert("RGB")  # CMYK, YCbCr, RGBX, ...
    return np.array(rgb.convert("L"), dtype=np.uint8)


_STRETCH_ROWS_BYTES = 8 << 20  # float64 working memory per block of rows in _stretch_to_uint8


def _stretch_to_uint8(values: np.ndarray, notes: list[str]) -> np.ndarray:
    """Map min..max linearly onto 0..255 in float64; a constant image becomes zeros.

    Non-finite values (float images) do not count towards min..max: NaN and -inf become 0,
    +inf becomes 255, with a warning.

    The float64 arithmetic runs over blocks of rows, so a 60-megapixel 16-bit image (a few
    hundred kB as a PNG) needs the output plus a few MB, not several float64 copies of itself
    (over 2 GB). Each pixel goes through exactly the same operations as a whole-array version.
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        arr = arr.astype(np.float64)
    all_finite = True
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        all_finite = bool(finite.all())
        if not all_finite:
            notes.append("non-finite pixel values: NaN and -inf shown as 0, +inf as 255")
            if not finite.any():
                return np.zeros(arr.shape, dtype=np.uint8)
            lo = float(np.min(arr, where=finite, initial=np.inf))
            hi = float(np.max(arr, where=finite, initial=-np.inf))
        del finite
    if all_finite:
        lo, hi = float(arr.min()), float(arr.max())
    out = np.zeros(arr.shape, dtype=np.uint8)
    if hi <= lo or arr.ndim == 0:
        return out
    scale = 255.0 / (hi - lo)
    step = max(1, _STRETCH_ROWS_BYTES // max(1, 8 * (arr.size // arr.shape[0])))
    for r in range(0, arr.shape[0], step):
        block = arr[r:r + step].astype(np.float64)  # always a copy: the caller's array is never changed
        if not all_finite:
            np.nan_to_num(block, copy=False, nan=lo, posinf=hi, neginf=lo)
        block -= lo
        block *= scale
        np.rint(block, out=block)
        np.clip(block, 0, 255, out=block)
        out[r:r + step] = block
    return out


# --------------------------------------------------------------------------------------------
# DICOM


@functools.cache
def _dicom_api() -> SimpleNamespace:
    """pydicom's pixel helpers: ``pydicom.pixels`` (3.x) or ``pixel_data_handlers.util`` (2.4)."""
    import pydicom

    try:
        from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
        from pydicom.pixels import pixel_array as first_frame_reader
    except ImportError:  # pydicom 2.4
        from pydicom.pixel_data_handlers.util import apply_color_lut, apply_modality_lut, apply_voi_lut

        first_frame_reader = None
    return SimpleNamespace(
        pydicom=pydicom,
        apply_color_lut=apply_color_lut,
        apply_modality_lut=apply_modality_lut,
        apply_voi_lut=apply_voi_lut,
        pixel_array=first_frame_reader,
        v3=first_frame_reader is not None,
    )


def _dicom_int(ds: Any, keyword: str, name: str, default: int | None = None) -> int:
    value = ds.get(keyword, None)
    if value is None or value == "":
        if default is not None:
            return default
        raise DecodeError(name, f"DICOM tag {keyword} is missing", "the DICOM header is incomplete")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DecodeError(
            name, f"DICOM tag {keyword} is not a number ({value!r})", "the DICOM header is damaged"
        ) from None


# Elements any DICOM image (or study object) has; garbage read with force=True has none of them.
_DICOM_LANDMARKS = (
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "Rows",
    "Columns",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "Modality",
)


def _decode_dicom(data: bytes, name: str, force: bool) -> Decoded:
    api = _dicom_api()
    try:
        ds = api.pydicom.dcmread(io.BytesIO(data), force=force)
    except Exception as e:
        raise DecodeError(name, f"not a readable DICOM file ({type(e).__name__}: {e})") from e
    try:
        return _dicom_pixels(ds, name, api, force)
    except DecodeError:
        raise
    except Exception as e:  # pydicom parses elements lazily: a damaged one fails on first access
        raise DecodeError(
            name,
            f"damaged DICOM header ({type(e).__name__}: {e})",
            "the DICOM file is damaged; re-export or re-download it",
        ) from e


def _dicom_pixels(ds: Any, name: str, api: SimpleNamespace, force: bool) -> Decoded:
    notes: list[str] = []
    if force and not any(k in ds for k in _DICOM_LANDMARKS):
        raise DecodeError(name, "not a DICOM file (no DICM marker, and no image or study elements found)")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DecodeError(
            name,
            "DICOM file has no pixel data (no PixelData element)",
            "it is a report or other non-image object, or the file is cut short; export the image itself",
        )
    rows = _dicom_int(ds, "Rows", name)
    cols = _dicom_int(ds, "Columns", name)
    frames = _dicom_int(ds, "NumberOfFrames", name, default=1)
    if rows <= 0 or cols <= 0:
        raise DecodeError(name, f"DICOM image has no pixels ({cols}x{rows})", "the DICOM header is damaged")
    if rows * cols > MAX_PIXELS:
        raise DecodeError(
            name,
            f"refused as a decompression bomb: {cols}x{rows} = {rows * cols:,} pixels (limit {MAX_PIXELS:,})",
            _HINT_BOMB,
        )
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        raise DecodeError(
            name, "DICOM tag PhotometricInterpretation is missing", "the DICOM header is incomplete"
        )
    _ensure_transfer_syntax(ds, api, notes)
    syntax = ds.file_meta.get("TransferSyntaxUID", None)
    syntax_name, compressed = _syntax_info(syntax)

    try:
        if api.v3:
            arr = api.pixel_array(ds, index=0)
        else:
            arr = ds.pixel_array
            if frames > 1:
                arr = arr[0]
    except Exception as e:
        raise DecodeError(
            name,
            f"cannot decode the DICOM pixel data (transfer syntax {syntax_name}; {type(e).__name__}: {e})",
            _HINT_DICOM_CODEC
            if compressed
            else "the DICOM pixel data is damaged or inconsistent with its header",
        ) from e
    if frames > 1:
        notes.append(f"multi-frame DICOM: used frame 1 of {frames}")

    try:
        gray = _dicom_to_gray(np.asarray(arr), ds, photometric, compressed, api)
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(
            name,
            f"cannot apply the DICOM {photometric} pixel transforms ({type(e).__name__}: {e})",
            "the DICOM LUT or window tags are damaged",
        ) from e
    if gray.ndim != 2:
        raise DecodeError(
            name, f"DICOM pixel data has unexpected shape {gray.shape}", "the DICOM header is damaged"
        )
    return Decoded(_stretch_to_uint8(gray, notes), tuple(notes), f"DICOM {photometric}")


def _ensure_transfer_syntax(ds: Any, api: SimpleNamespace, notes: list[str]) -> None:
    """A dataset read with force=True may lack file meta; infer the syntax from how it was read."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if meta.get("TransferSyntaxUID", None):
        return
    encoding = getattr(ds, "original_encoding", None)  # pydicom 3: (implicit_vr, little_endian)
    if encoding is None or encoding[0] is None:
        encoding = (getattr(ds, "is_implicit_VR", True), getattr(ds, "is_little_endian", True))
    implicit, little = encoding
    if implicit:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    meta.TransferSyntaxUID = syntax
    notes.append(f"DICOM without file meta: assumed transfer syntax {syntax.name}")


def _syntax_info(syntax: Any) -> tuple[str, bool]:
    """Name and compression of a transfer syntax UID; a damaged UID raises on these properties."""
    try:
        return str(syntax.name), bool(syntax.is_compressed)
    except Exception:
        return str(syntax), False


def _dicom_to_gray(
    arr: np.ndarray, ds: Any, photometric: str, compressed: bool, api: SimpleNamespace
) -> np.ndarray:
    """Modality LUT, VOI LUT and MONOCHROME1 inversion for gray; luminance for colour."""
    if photometric == "PALETTE COLOR":
        return _luminance(api.apply_color_lut(arr, ds))
    if arr.ndim == 3:
        if not api.v3 and photometric.startswith("YBR") and not compressed:
            # pydicom 2.4 leaves uncompressed YBR as it is stored; Y already is the luminance.
            return arr[..., 0].astype(np.float64)
        return _luminance(arr)  # pydicom 3 (and 2.4 for compressed data) hands out RGB
    values = api.apply_modality_lut(arr, ds)
    values = api.apply_voi_lut(values, ds, index=0)
    values = np.asarray(values, dtype=np.float64)
    if photometric == "MONOCHROME1":  # low values are bright: flip so that bone is bright
        values = -values
    return values


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luminance (as Pillow's convert("L")) of an (H, W, 3+) array, in float64."""
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise ValueError(f"expected an (H, W, 3) colour array, got shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])
