"""Procedural radiographs with known fractures: fracbench's embedded default dataset.

Every image shows one or more long bones (a hollow tube: bright cortex walls around a darker
medullary cavity, widening to condyles at the ends) at a random angle and position, inside a
smooth soft-tissue shadow on a dark background, under a random exposure, with blur, noise and
sometimes a bright "L"/"R" side marker. Fractured images add one of four fracture kinds
(transverse, oblique, comminuted, displaced) whose exact pixels are known, so Grad-CAM
localisation can be scored against true boxes.

Reproducibility: image ``i`` of a spec uses ``np.random.default_rng([seed, i])`` alone, so it does
not depend on ``count``. :func:`render_case` draws the same random numbers whether or not the case
is fractured, so two generators in the same state give the same scene with and without the
fracture (useful to check that a model looks at the fracture and nothing else).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from fracbench.data.base import DATASETS, Box, Dataset, Fault, ImageRecord, Listing
from fracbench.io import atomic_write_bytes, atomic_write_json, atomic_write_text

# Bump when the renderer changes what it draws: the cache folder name (SyntheticSpec.key) follows.
GENERATOR_VERSION = 2

PARTS = ("forearm", "tibia", "femur", "hand")
PART_WEIGHTS = (0.3, 0.25, 0.2, 0.25)
KINDS = ("transverse", "oblique", "comminuted", "displaced")
KIND_WEIGHTS = (0.3, 0.3, 0.15, 0.25)
# Fracture conspicuity at difficulty 0, 1 and 2 (linear in between): gap width in pixels of a
# 224 px image, share of bone missing in the gap, sideways shift of a displaced fragment in shaft
# radii; then detector blur (pixels of a 224 px image) and noise (share of full scale).
_GAP_WIDTH = (12.0, 7.0, 2.5)
_GAP_CONTRAST = (1.0, 0.95, 0.5)
_SHIFT = (1.2, 0.7, 0.2)
_BLUR = (0.5, 0.8, 1.0)
_NOISE = (0.01, 0.03, 0.05)
_TEXTURE = 0.45  # contrast of the trabecular texture
_PHYSIS_P = 0.15  # share of children (growth plates visible)
_CANAL_P = 0.2  # share of bones with a visible nutrient canal
LABEL_COLUMNS = ("id", "file", "label", "part", "kind", "boxes")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Equal specs give byte-identical datasets."""

    count: int = 600  # images
    size: int = 224  # square side in pixels
    prevalence: float = 0.35  # share of fractured images
    difficulty: float = 1.0  # 0 = trivially visible fractures, 1 = default, 2 = subtle
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if self.size < 32:
            raise ValueError(f"size must be >= 32 pixels, got {self.size}")
        if not 0.0 <= self.prevalence <= 1.0:
            raise ValueError(f"prevalence must lie in [0, 1], got {self.prevalence}")
        if self.difficulty < 0:
            raise ValueError(f"difficulty must be >= 0, got {self.difficulty}")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "generator_version": GENERATOR_VERSION}

    def key(self) -> str:
        """Short stable hash of the fields (and the generator version), used as folder name."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SyntheticSpec:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]


@dataclass(frozen=True)
class SyntheticCase:
    """One rendered radiograph and its ground truth."""

    pixels: np.ndarray  # (size, size) uint8, bone bright
    boxes: tuple[Box, ...]  # x, y, w, h of each fracture (empty if none)
    mask: np.ndarray  # (size, size) bool, fracture pixels
    part: str  # "forearm", "tibia", "femur", "hand"
    kind: str  # "none" | "transverse" | "oblique" | "comminuted" | "displaced"


# --------------------------------------------------------------------------------------------
# rendering


def _lerp3(d: float, at0: float, at1: float, at2: float) -> float:
    """Piecewise-linear in difficulty through (0, at0), (1, at1), (2, at2); held beyond 2."""
    d = min(max(d, 0.0), 2.0)
    return at0 + (at1 - at0) * d if d <= 1.0 else at1 + (at2 - at1) * (d - 1.0)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (edges repeated), cheaper than scipy for the small sigmas used here."""
    r = max(1, math.ceil(2.5 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    h, w = img.shape
    p = np.pad(img, r, mode="edge")
    t = p[:, r : r + w] * k[r]
    tmp = np.empty_like(t)
    for i in range(1, r + 1):
        np.add(p[:, r - i : r - i + w], p[:, r + i : r + i + w], out=tmp)
        tmp *= k[r + i]
        t += tmp
    out = t[r : r + h] * k[r]
    tmp = tmp[:h]
    for i in range(1, r + 1):
        np.add(t[r - i : r - i + h], t[r + i : r + i + h], out=tmp)
        tmp *= k[r + i]
        out += tmp
    return out


# Pointwise work runs on blocks of rows this many pixels big: numpy's temporaries then stay small
# enough for the allocator's heap (no fresh pages per operation), which is several times faster.
_BLOCK = 16384


def _row_blocks(win: tuple[slice, slice]) -> Iterator[tuple[slice, slice]]:
    ys, xs = win
    step = max(1, _BLOCK // max(1, xs.stop - xs.start))
    for y in range(ys.start, ys.stop, step):
        yield slice(y, min(y + step, ys.stop)), xs


Window = tuple[slice, slice]


@dataclass
class _Bone:
    cx: float  # centre, pixels
    cy: float
    angle: float  # axis direction, radians
    half: float  # half length of shaft plus metaphyses (the rounded caps extend beyond)
    r0: float  # shaft outer radius, pixels
    cortex: float  # cortex thickness as a share of r0
    flare_lo: float  # end radius / r0 at the u < 0 end
    flare_hi: float  # end radius / r0 at the u > 0 end
    end_len: float  # length of each flaring metaphysis
    density: float
    notch: bool  # intercondylar notch at the u > 0 end
    physis: float  # 0 for adults; else the contrast of the growth-plate lines near both ends
    canal: tuple[float, float, float]  # nutrient canal (u, tan of slant, contrast); contrast 0 = none

    def frame(self, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates -> (u along the axis, v across it), relative to the centre."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = xx - np.float32(self.cx), yy - np.float32(self.cy)
        return dx * np.float32(c) + dy * np.float32(s), dy * np.float32(c) - dx * np.float32(s)

    def point(self, u: float, v: float) -> tuple[float, float]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return self.cx + u * c - v * s, self.cy + u * s + v * c

    def local(self, x: float, y: float) -> tuple[float, float]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = x - self.cx, y - self.cy
        return dx * c + dy * s, dy * c - dx * s

    def radius_at(self, u: float) -> float:
        return self.r0 * (1.0 + 0.06 * (u / self.half) ** 2)

    def window(self, size: int, pad: float = 0.0) -> Window | None:
        """The pixel rectangle holding the bone (grown by ``pad``), or None when off the image."""
        flare = max(self.flare_lo, self.flare_hi)
        ru = self.half + 0.75 * self.r0 * flare + pad
        rv = self.r0 * flare * 1.05 + pad
        c, s = abs(math.cos(self.angle)), abs(math.sin(self.angle))
        ex, ey = ru * c + rv * s, ru * s + rv * c
        x0, x1 = max(0, math.floor(self.cx - ex)), min(size, math.ceil(self.cx + ex) + 1)
        y0, y1 = max(0, math.floor(self.cy - ey)), min(size, math.ceil(self.cy + ey) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        return slice(y0, y1), slice(x0, x1)

    def attenuation(self, u: np.ndarray, v: np.ndarray, texture: np.ndarray) -> np.ndarray:
        """Projected thickness of a hollow tube with flared, rounded ends (pixels of bone)."""
        a = np.abs(u)
        flare = np.float32(self.flare_lo) + np.float32(self.flare_hi - self.flare_lo) * (u > 0)
        t = np.clip((a - (self.half - self.end_len)) * np.float32(1.0 / self.end_len), 0.0, 1.0)
        ends = t * t * (3.0 - 2.0 * t)  # 0 along the shaft, 1 at the ends
        radius = np.float32(self.r0) * (1.0 + np.float32(0.06 / self.half**2) * (u * u)) * (1.0 + (flare - 1.0) * ends)
        cap = np.float32(0.75 * self.r0) * flare
        over = np.clip((a - np.float32(self.half)) / cap, 0.0, 1.0)
        radius *= np.sqrt(1.0 - over * over)
        inner = np.maximum(radius - np.float32(self.r0 * self.cortex) * (1.0 - 0.8 * ends), 0.0)
        v2 = v * v
        outer_chord = np.sqrt(np.maximum(radius * radius - v2, 0.0))
        inner_chord = np.sqrt(np.maximum(inner * inner - v2, 0.0))
        cortex = outer_chord - inner_chord
        u_c, slant, contrast = self.canal
        if contrast > 0:  # a nutrient canal: a thin dark slanted line through one cortex only
            d = np.abs(u - np.float32(u_c) - np.float32(slant) * v)
            cortex *= 1.0 - np.float32(contrast) * np.clip(1.1 - d, 0.0, 1.0) * (v > 0)
        marrow = inner_chord * (0.22 + 0.35 * ends) * (1.0 + _TEXTURE * texture)  # spongy bone at the ends
        att = cortex + marrow
        if self.notch:  # a darker notch between the two condyles of the u > 0 end
            cap_hi = 0.75 * self.r0 * self.flare_hi
            q = ((u - np.float32(self.half + 0.8 * cap_hi)) * np.float32(1 / (0.45 * cap_hi))) ** 2
            q += (v * np.float32(1 / (0.28 * self.r0 * self.flare_hi))) ** 2
            att *= 1.0 - 0.6 * np.exp(-q)
        if self.physis > 0:  # growth plates: thin dark wavy lines across both metaphyses
            wave = np.float32(0.1 * self.r0) * np.sin(v * np.float32(3.0 / self.r0))
            dist = np.abs(a - np.float32(self.half - 0.45 * self.end_len) - wave)
            att *= 1.0 - np.float32(self.physis) * np.clip(1.3 - dist, 0.0, 1.0)
        return np.float32(2.0 * self.density) * att


def _make_bones(rng: np.random.Generator, part: str, size: int) -> tuple[list[_Bone], float]:
    """The bones of one body part, and the soft-tissue radius around the limb."""
    s = float(size)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    cx = s * rng.uniform(0.38, 0.62)
    cy = s * rng.uniform(0.38, 0.62)
    physis = float(rng.uniform(0.25, 0.5)) if rng.random() < _PHYSIS_P else 0.0
    nx, ny = -math.sin(angle), math.cos(angle)  # across the limb

    def bone(off: float, d_angle: float, along: float, half: float, r0: float) -> _Bone:
        canal = (
            float(rng.uniform(-0.4, 0.4) * half),
            float(math.tan(rng.uniform(0.6, 1.2)) * rng.choice((-1, 1))),
            float(rng.uniform(0.2, 0.45) if rng.random() < _CANAL_P else 0.0),
        )
        return _Bone(
            cx=cx + off * nx + along * math.cos(angle),
            cy=cy + off * ny + along * math.sin(angle),
            angle=angle + d_angle,
            half=half,
            r0=r0,
            cortex=float(rng.uniform(0.28, 0.45)),
            flare_lo=float(rng.uniform(1.2, 1.8)),
            flare_hi=float(rng.uniform(1.3, 1.9)),
            end_len=float(rng.uniform(0.12, 0.2)) * 2 * half,
            density=float(rng.uniform(0.9, 1.1)),
            notch=bool(rng.random() < 0.5),
            physis=physis,
            canal=canal,
        )

    if part == "femur":
        r = s * rng.uniform(0.08, 0.1)
        half = s * rng.uniform(0.45, 0.65)
        bones = [bone(0.0, 0.0, rng.uniform(-0.15, 0.15) * s, half, r)]
        tissue = r * rng.uniform(2.8, 3.6)
    elif part in ("forearm", "tibia"):
        if part == "forearm":  # radius and ulna
            r_a, r_b = s * rng.uniform(0.05, 0.065), s * rng.uniform(0.042, 0.052)
        else:  # tibia and the slender fibula
            r_a, r_b = s * rng.uniform(0.07, 0.085), s * rng.uniform(0.03, 0.04)
        sep = (r_a + r_b) * rng.uniform(1.3, 1.7)
        half = s * rng.uniform(0.4, 0.6)
        along = rng.uniform(-0.12, 0.12) * s
        bones = [
            bone(-sep / 2, 0.0, along, half, r_a),
            bone(sep / 2, rng.uniform(-0.06, 0.06), along + rng.uniform(-0.05, 0.05) * s,
                 half * rng.uniform(0.9, 1.0), r_b),
        ]
        tissue = (sep / 2 + r_a) * rng.uniform(1.7, 2.2)
    else:  # hand: three or four metacarpals fanning out from the wrist
        n = 3 + int(rng.random() < 0.5)
        r = s * rng.uniform(0.033, 0.042)
        half = s * rng.uniform(0.2, 0.26)
        spread = rng.uniform(0.12, 0.2)
        pitch = r * rng.uniform(2.6, 3.2)
        bones = []
        for k in range(n):
            j = k - (n - 1) / 2
            bones.append(bone(j * pitch, j * spread, rng.uniform(-0.03, 0.03) * s, half * rng.uniform(0.85, 1.1), r))
        tissue = pitch * (n / 2) + r * rng.uniform(2.0, 3.0)
    return bones, tissue


@dataclass
class _Fracture:
    bone: int
    kind: str
    u: float  # position along the bone's axis
    slant: float  # tan of the fracture line's slant across the shaft
    width: float  # gap width, pixels
    contrast: float  # share of the bone's attenuation missing in the gap
    lines: list[tuple[float, float, float]]  # comminuted: extra lines (u offset, slant, width)
    jag: tuple[float, float, float, float, float, float]  # two ripples: amplitude, frequency, phase
    partial: float  # > 0 / < 0: the gap stops this share of the diameter short of one side
    shift_v: float  # displaced: sideways offset of the distal fragment, pixels
    shift_u: float  # displaced: overlap of the fragments along the axis (negative), pixels


def _pick_fracture(
    rng: np.random.Generator, bone: _Bone, which: int, kind: str, size: int, difficulty: float
) -> _Fracture:
    scale = size / 224.0
    shaft = bone.half - bone.end_len
    us = np.linspace(-shaft, shaft, 41)
    inside = []  # positions along the shaft that lie well inside the image
    for u in us:
        x, y = bone.point(float(u), 0.0)
        if 0.12 * size <= x <= 0.88 * size and 0.12 * size <= y <= 0.88 * size:
            inside.append(float(u))
    pick = int(rng.integers(max(1, len(inside))))
    jitter = rng.uniform(-0.5, 0.5) * (us[1] - us[0])
    if inside:
        u = inside[pick] + jitter
    else:  # the shaft leaves the image: break it where it comes closest to the centre
        u = float(us[int(np.argmin([math.dist(bone.point(float(u), 0.0), (size / 2, size / 2)) for u in us]))])
    width = scale * _lerp3(difficulty, *_GAP_WIDTH) * rng.uniform(0.75, 1.3)
    contrast = min(1.0, _lerp3(difficulty, *_GAP_CONTRAST) * rng.uniform(0.8, 1.15))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    slant = rng.uniform(-0.2, 0.2)
    if kind == "oblique":
        slant = math.tan(rng.uniform(0.5, 1.0)) * sign
    lines = []
    n_lines = 2 + int(rng.random() < 0.5)
    for _ in range(n_lines if kind == "comminuted" else 0):
        lines.append((
            float(rng.uniform(-1.0, 1.0) * bone.r0),
            float(math.tan(rng.uniform(0.4, 1.0)) * (1 if rng.random() < 0.5 else -1)),
            float(width * rng.uniform(0.6, 0.9)),
        ))
    amp = scale * rng.uniform(0.3, 1.0)
    jag = (
        float(amp), float(rng.uniform(2.0, 5.0) / bone.r0), float(rng.uniform(0, 2 * math.pi)),
        float(amp * rng.uniform(0.2, 0.6)), float(rng.uniform(6.0, 12.0) / bone.r0), float(rng.uniform(0, 2 * math.pi)),
    )
    partial = 0.0
    if kind in ("transverse", "oblique") and rng.random() < 0.15:
        partial = rng.uniform(0.2, 0.5) * sign
    shift_v = shift_u = 0.0
    if kind == "displaced":
        shift_v = bone.r0 * _lerp3(difficulty, *_SHIFT) * rng.uniform(0.7, 1.4) * sign
        shift_u = rng.uniform(-0.5, 0.3) * abs(shift_v)
        contrast = 1.0
    return _Fracture(which, kind, float(u), float(slant), float(width), float(contrast), lines, jag,
                     float(partial), float(shift_v), float(shift_u))


def _line_distance(u: np.ndarray, v: np.ndarray, f: _Fracture, u0: float, slant: float) -> np.ndarray:
    a1, f1, p1, a2, f2, p2 = (np.float32(x) for x in f.jag)
    return (u - np.float32(u0)) - np.float32(slant) * v + a1 * np.sin(f1 * v + p1) + a2 * np.sin(f2 * v + p2)


def _gap(d: np.ndarray, width: float) -> np.ndarray:
    """1 inside a gap of ``width`` around the line d = 0, with a one-pixel soft edge."""
    return np.clip(np.float32(width / 2 + 0.5) - np.abs(d), 0.0, 1.0)


def _break(
    bone: _Bone, f: _Fracture, u: np.ndarray, v: np.ndarray, texture: np.ndarray, att: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The fractured attenuation of ``bone`` and the fracture mask, on one window."""
    support = att > 0.05 * bone.r0
    d = _line_distance(u, v, f, f.u, f.slant)
    if f.kind == "displaced":  # the distal fragment slides sideways and rides over the other
        ud, vd = u - np.float32(f.shift_u), v - np.float32(f.shift_v)
        dd = _line_distance(ud, vd, f, f.u, f.slant)
        keep_near = np.clip(np.float32(0.5 - f.width / 2) - d, 0.0, 1.0)
        keep_far = np.clip(dd - np.float32(f.width / 2 - 0.5), 0.0, 1.0)
        moved = bone.attenuation(ud, vd, texture)
        reach = f.width / 2 + max(2.0, 0.5 * bone.r0) + abs(f.shift_u)
        mask = (support | (moved > 0.05 * bone.r0)) & (np.abs(d) <= reach)
        return att * keep_near + moved * keep_far, mask
    g = _gap(d, f.width * math.hypot(1.0, f.slant))  # width across the slanted line
    if f.partial:  # incomplete: the crack reaches across only part of the shaft
        r = bone.radius_at(f.u)
        limit = np.float32(r - 2 * r * abs(f.partial))
        g *= np.clip(limit - (v if f.partial > 0 else -v) + 0.5, 0.0, 1.0)
    for du, slant, width in f.lines:
        g = np.maximum(g, _gap(_line_distance(u, v, f, f.u + du, slant), width * math.hypot(1.0, slant)))
    return att * (1.0 - np.float32(f.contrast) * g), support & (g > 0.3)


_GLYPHS = {
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
}


def _marker(rng: np.random.Generator, size: int) -> tuple[int, int, np.ndarray] | None:
    """A bright lead side marker ("L" or "R") in a corner, or None. Independent of the label."""
    draws = rng.random(6)
    if draws[0] >= 0.6:
        return None
    letter = "L" if draws[1] < 0.5 else "R"
    cell = max(1, round(size / 224 * (1.6 + draws[2])))
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[letter]], dtype=np.float32)
    block = np.pad(np.kron(glyph, np.ones((cell, cell), dtype=np.float32)), cell)
    if draws[3] < 0.5:  # the plastic holder shows as a faint block
        block = np.maximum(block, 0.4)
    h, w = block.shape
    margin = max(2, size // 40)
    x = margin if draws[4] < 0.5 else size - margin - w
    y = margin if draws[5] < 0.5 else size - margin - h
    return x, y, block


def render_case(rng: np.random.Generator, size: int, fractured: bool, difficulty: float) -> SyntheticCase:
    """Draw one radiograph.

    ``rng`` advances by the same draws whether ``fractured`` or not (the fracture comes from a
    child generator), so equal generators give the same scene with and without the fracture.
    """
    s = float(size)
    scale = size / 224.0
    part = PARTS[int(rng.choice(len(PARTS), p=PART_WEIGHTS))]
    bones, tissue_r = _make_bones(rng, part, size)
    yy, xx = _grid(size)
    whole = (slice(0, size), slice(0, size))

    # soft tissue: a slightly wavy cylinder of flesh along the limb, with a denser skin rim
    axis = bones[len(bones) // 2] if part == "hand" else bones[0]
    if len(bones) == 2:
        axis = replace(axis, cx=0.5 * (bones[0].cx + bones[1].cx), cy=0.5 * (bones[0].cy + bones[1].cy))
    wave_f, wave_p = np.float32(1 / (s * rng.uniform(0.15, 0.3))), np.float32(rng.uniform(0, 2 * math.pi))
    flesh_k = np.float32(2 * rng.uniform(0.05, 0.08))
    frac_seed = int(rng.integers(2**63))

    # trabecular texture: smooth noise drawn at half resolution
    half = (size + 1) // 2
    texture = _blur(rng.standard_normal((half, half), dtype=np.float32), 0.6)
    texture = texture.repeat(2, axis=0).repeat(2, axis=1)[:size, :size]

    bone_att = np.zeros((size, size), dtype=np.float32)
    for b in bones:
        win = b.window(size, pad=0.3 * b.r0)
        for blk in _row_blocks(win) if win is not None else ():
            u, v = b.frame(xx[blk], yy[blk])
            bone_att[blk] += b.attenuation(u, v, texture[blk])

    # exposure: Beer-Lambert with a heel-effect gradient; ``expo`` holds the exponent
    mu = np.float32(rng.uniform(0.3, 0.5) / (0.05 * s))  # attenuation per pixel of bone
    heel_a = np.float32(rng.uniform(-0.15, 0.15) / s)
    heel_x, heel_y = np.float32(math.cos(rng.uniform(0, 2 * math.pi))), np.float32(rng.uniform(-1, 1))

    def gain(blk: Window) -> np.ndarray:  # -mu times the heel effect
        return ((xx[blk] * heel_x + yy[blk] * heel_y - np.float32(0.5 * s)) * heel_a + 1.0) * -mu

    expo = np.empty((size, size), dtype=np.float32)
    r2 = np.float32(tissue_r**2)
    for blk in _row_blocks(whole):
        tu, tv = axis.frame(xx[blk], yy[blk])
        tv += np.float32(tissue_r * 0.08) * np.sin(tu * wave_f + wave_p)
        flesh = np.sqrt(np.maximum(r2 - tv * tv, 0.0)) * flesh_k
        flesh += np.clip(np.float32(tissue_r * 1.1) - np.abs(tv), 0.0, np.float32(0.1 * tissue_r)) * np.float32(0.15)
        flesh += bone_att[blk]
        flesh *= gain(blk)
        expo[blk] = flesh
    # the display window comes from the intact scene, so a fracture changes nothing but its own pixels
    peak = 1.0 - math.exp(float(expo.min()))

    mask = np.zeros((size, size), dtype=bool)
    boxes: list[Box] = []
    kind = "none"
    if fractured:
        kind, fracs = _pick_fractures(np.random.default_rng(frac_seed), bones, size, difficulty)
        margin = max(2.0, round(3 * scale))
        for f in fracs:
            b = bones[f.bone]
            win = b.window(size, pad=0.3 * b.r0 + abs(f.shift_u) + abs(f.shift_v) + 2)
            changes = []
            for blk in _row_blocks(win) if win is not None else ():
                u, v = b.frame(xx[blk], yy[blk])
                att = b.attenuation(u, v, texture[blk])
                new, m = _break(b, f, u, v, texture[blk], att)
                changes.append((blk, new - att, m))
            hit = [(blk, m) for blk, _, m in changes if m.any()]
            if not hit:
                continue
            for blk, delta, m in changes:
                delta *= gain(blk)
                expo[blk] += delta
                mask[blk] |= m
            y0 = min(blk[0].start + int(np.flatnonzero(m.any(axis=1))[0]) for blk, m in hit)
            y1 = max(blk[0].start + int(np.flatnonzero(m.any(axis=1))[-1]) for blk, m in hit) + 1
            x0 = min(blk[1].start + int(np.flatnonzero(m.any(axis=0))[0]) for blk, m in hit)
            x1 = max(blk[1].start + int(np.flatnonzero(m.any(axis=0))[-1]) for blk, m in hit) + 1
            bx0, by0 = max(0.0, x0 - margin), max(0.0, y0 - margin)
            bx1, by1 = min(s, x1 + margin), min(s, y1 + margin)
            boxes.append((bx0, by0, bx1 - bx0, by1 - by0))
        if not boxes:  # the placement rules in _pick_fracture keep every fracture on the image
            raise RuntimeError("synthetic: a fracture fell outside the image; please report this as a bug")

    img = expo
    np.exp(img, out=img)
    np.subtract(1.0, img, out=img)
    img *= np.float32(rng.uniform(0.85, 1.0) / max(peak, 1e-6))
    np.minimum(img, np.float32(1.0), out=img)  # overlapping fragments may exceed the intact peak
    np.maximum(img, np.float32(1e-6), out=img)
    np.log(img, out=img)
    img *= np.float32(rng.uniform(0.75, 1.35))  # gamma
    np.exp(img, out=img)
    background = np.float32(rng.uniform(0.02, 0.1))
    img *= 1.0 - background
    img += background

    marker = _marker(rng, size)
    if marker is not None:
        x, y, block = marker
        h, w = block.shape
        np.maximum(img[y : y + h, x : x + w], np.float32(0.97) * block, out=img[y : y + h, x : x + w])

    img = _blur(img, scale * _lerp3(difficulty, *_BLUR) * rng.uniform(0.8, 1.2))
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise *= np.float32(_lerp3(difficulty, *_NOISE) * rng.uniform(0.7, 1.3) * 255.0)
    img *= np.float32(255.0)
    img += noise
    img += np.float32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    return SyntheticCase(pixels=img.astype(np.uint8), boxes=tuple(boxes), mask=mask, part=part, kind=kind)


def _pick_fractures(
    rng: np.random.Generator, bones: list[_Bone], size: int, difficulty: float
) -> tuple[str, list[_Fracture]]:
    """The kind and the fractures (one, or two at one level of a two-bone limb) of a fractured case."""
    kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
    if len(bones) == 2:
        which = 0 if rng.random() < 0.7 else 1
    else:
        which = int(rng.integers(len(bones)))
    fracs = [_pick_fracture(rng, bones[which], which, kind, size, difficulty)]
    if len(bones) == 2 and rng.random() < 0.25:
        other = 1 - which
        b = bones[other]
        f2 = _pick_fracture(rng, b, other, kind, size, difficulty)
        level = b.local(*bones[which].point(fracs[0].u, 0.0))[0] + rng.uniform(-0.05, 0.05) * size
        shaft = b.half - b.end_len
        x, y = b.point(level, 0.0)
        if -shaft <= level <= shaft and 0.05 * size <= x <= 0.95 * size and 0.05 * size <= y <= 0.95 * size:
            f2.u = float(level)
        fracs.append(f2)
    return kind, fracs


# --------------------------------------------------------------------------------------------
# writing a dataset


def case_label(spec: SyntheticSpec, index: int) -> int:
    """Label of image ``index`` of ``spec``: the first draw of its own generator, below prevalence."""
    return int(np.random.default_rng([spec.seed, index]).random() < spec.prevalence)


def render_index(spec: SyntheticSpec, index: int) -> tuple[int, SyntheticCase]:
    """Label and case of image ``index`` of ``spec`` (what :func:`generate` writes)."""
    rng = np.random.default_rng([spec.seed, index])
    label = int(rng.random() < spec.prevalence)
    return label, render_case(rng, spec.size, bool(label), spec.difficulty)


def format_boxes(boxes: tuple[Box, ...]) -> str:
    return ";".join(" ".join(f"{c:g}" for c in box) for box in boxes)


def parse_boxes(text: str) -> tuple[Box, ...]:
    out = []
    for part in text.split(";"):
        if part.strip():
            x, y, w, h = (float(c) for c in part.split())
            out.append((x, y, w, h))
    return tuple(out)


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def read_spec(out_dir: Path) -> SyntheticSpec | None:
    """The spec of a completely generated folder, or None."""
    path = Path(out_dir) / "spec.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("generator_version") != GENERATOR_VERSION:
        return None
    try:
        return SyntheticSpec.from_dict(data)
    except (TypeError, ValueError):
        return None


def generate(spec: SyntheticSpec, out_dir: Path, progress: bool = False) -> Path:
    """Write ``spec``'s images, labels.csv and, last, spec.json (the completion marker) to ``out_dir``.

    Does nothing when ``out_dir/spec.json`` already records the same spec. Every file is written
    atomically, so a run killed half way leaves no spec.json and the next call starts again.
    """
    out_dir = Path(out_dir)
    if read_spec(out_dir) == spec and (out_dir / "labels.csv").is_file():
        return out_dir
    (out_dir / "spec.json").unlink(missing_ok=True)  # incomplete from here on
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    from fracbench.progress import track

    rows = []
    for i in track(range(spec.count), "synthetic radiographs", total=spec.count, enabled=progress):
        label, case = render_index(spec, i)
        name = f"SYN{i:06d}"
        atomic_write_bytes(images / f"{name}.png", _png_bytes(case.pixels))
        rows.append((name, f"images/{name}.png", str(label), case.part, case.kind, format_boxes(case.boxes)))
    keep = {f"{r[0]}.png" for r in rows}
    for stale in images.glob("SYN*.png"):  # left by an earlier, larger spec in this folder
        if stale.name not in keep:
            stale.unlink()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(out_dir / "labels.csv", buf.getvalue())
    atomic_write_json(out_dir / "spec.json", spec.as_dict())
    return out_dir


@DATASETS.register("synthetic")
class Synthetic(Dataset):
    """Synthetic radiographs, generated by fracbench itself (see :mod:`fracbench.data.synthetic`).

    Procedural long-bone X-rays (forearm, tibia, femur, hand) with transverse, oblique, comminuted
    and displaced fractures whose boxes and masks are exact. Needing no download, it lets
    fracbench run and test offline and lets Grad-CAM localisation be scored against true boxes.
    License: the same as fracbench (MIT); it is drawn by code, so there is no patient data.
    """

    name = "synthetic"
    citation = "fracbench synthetic radiographs (generated; see fracbench.data.synthetic)"
    license = "MIT (same as fracbench); procedurally generated, no patient data"
    url = ""

    def scan(self) -> Listing:
        records: list[ImageRecord] = []
        faults: list[Fault] = []
        labels = self.root / "labels.csv"
        try:
            text = labels.read_text(encoding="utf-8")
        except OSError as exc:
            return Listing([], [Fault(str(labels), "missing_file", f"cannot read labels.csv: {exc}")])
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or not set(LABEL_COLUMNS) <= set(reader.fieldnames):
            return Listing([], [Fault(str(labels), "bad_metadata", f"columns {reader.fieldnames}, want {LABEL_COLUMNS}")])
        for n, row in enumerate(reader, start=2):
            try:
                label = int(row["label"])
                if label not in (0, 1):
                    raise ValueError(f"label {label} is not 0 or 1")
                boxes = parse_boxes(row["boxes"] or "")
                path = (self.root / row["file"]).resolve()
            except (TypeError, ValueError, AttributeError) as exc:
                faults.append(Fault(str(labels), "bad_metadata", f"line {n}: {exc}"))
                continue
            if not path.is_file():
                faults.append(Fault(str(path), "missing_file", f"listed in labels.csv line {n}"))
                continue
            records.append(
                ImageRecord(
                    id=row["id"],
                    path=str(path),
                    label=label,
                    group=row["id"],
                    source=self.name,
                    part=row["part"] or "",
                    boxes=boxes,
                )
            )
        return Listing(records, faults)

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        root = Path(root)
        return (root / "spec.json").is_file() and (root / "labels.csv").is_file()

    @classmethod
    def ensure(
        cls, spec: SyntheticSpec = SyntheticSpec(), root: Path | None = None, progress: bool = False
    ) -> Synthetic:
        """The dataset for ``spec``, generated first when needed (default root: the cache)."""
        if root is None:
            from fracbench.paths import cache_dir

            root = cache_dir() / "synthetic" / spec.key()
        generate(spec, Path(root), progress=progress)
        return cls(root)
