"""The built-in demo faces: two synthetic cartoon identities in Faceswap's extracted-face format.

A user without face folders still gets a real run: cartoon faces are drawn procedurally into a
frame together with their 68 landmarks, extracted exactly as `faceswap extract` does (head-centred
crop, `faceswap` PNG header) and then read back through the same loader as user data. Nothing
here shows a real person.

Faces are drawn in "face units": x runs 0..1 across the brows and y runs from the brows (~0) to
the chin (~1.2), as in Faceswap's mean face. Every point also has a depth z so that a small yaw
turns the head believably before the similarity transform places it in the frame.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import time

import cv2
import numpy as np

from fsjax.config import cache_root
from fsjax.data import align, header

MARKER = "demo_faces.json"
"""Written last into a complete set; records what was generated."""

GENERATOR_VERSION = 2
"""Bump when the drawing changes, so that cached sets are regenerated."""

_STALE_TMP_S = 3600.0  # a temporary folder untouched this long belongs to a dead run


@dataclasses.dataclass(frozen=True)
class Identity:
    """What makes one cartoon person recognisable (colours BGR, lengths in face units)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    brow: tuple[int, int, int]
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    long_hair: bool
    face_width: float  # half-width of the jaw at ear level
    chin: float  # ear level to chin
    squareness: float  # superellipse exponent of the jaw: 2 is an oval, larger is squarer
    chin_taper: float  # narrows the lower jaw towards a pointed chin
    brow_thickness: tuple[float, float]  # inner end, outer end
    brow_arch: float
    eye_width: float  # half-width
    eye_height: float  # upper lid above the corners when fully open
    eye_tilt: float  # outer corners raised by this much
    nose_length: float
    nose_width: float
    mouth_width: float  # half-width
    lip_thickness: tuple[float, float]  # upper, lower
    blush: bool
    stubble: bool


IDENTITIES = (
    # A: fair, long auburn hair, thin arched brows, big round blue eyes, oval face, full lips.
    Identity(skin=(165, 195, 238), hair=(35, 75, 160), brow=(40, 70, 130), iris=(175, 120, 45),
             lips=(95, 80, 205), long_hair=True, face_width=0.56, chin=0.97, squareness=2.0,
             chin_taper=0.18, brow_thickness=(0.016, 0.007), brow_arch=0.05, eye_width=0.125,
             eye_height=0.08, eye_tilt=0.0, nose_length=0.34, nose_width=0.1,
             mouth_width=0.22, lip_thickness=(0.06, 0.075), blush=True, stubble=False),
    # B: brown skin, short black hair, thick straight brows, narrow dark eyes, square jaw.
    Identity(skin=(75, 112, 160), hair=(28, 26, 30), brow=(25, 25, 30), iris=(30, 45, 70),
             lips=(75, 68, 150), long_hair=False, face_width=0.63, chin=0.93, squareness=3.2,
             chin_taper=0.0, brow_thickness=(0.034, 0.022), brow_arch=0.012, eye_width=0.11,
             eye_height=0.045, eye_tilt=0.015, nose_length=0.4, nose_width=0.14,
             mouth_width=0.27, lip_thickness=(0.04, 0.05), blush=False, stubble=True),
)

_EAR_Y = 0.2  # where the jaw line starts, at the height of the eyes
_CROWN = 0.8  # skull height above ear level


def _depth(x: np.ndarray) -> np.ndarray:
    """Depth of the face surface: the middle stands out, the sides fall back."""
    return 0.36 - (x - 0.5) ** 2


def _jaw(p: Identity, width: float, length: float) -> np.ndarray:
    t = np.linspace(0.0, np.pi, 17)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / p.squareness
    x = 0.5 - width * np.sign(c) * np.abs(c) ** e
    y = _EAR_Y + length * np.abs(s) ** e
    x = 0.5 + (x - 0.5) * (1.0 - p.chin_taper * s**4)
    return np.stack([x, y], axis=1)


def _brows(p: Identity, raise_: float) -> np.ndarray:
    u = np.linspace(0.0, 1.0, 5)  # outer end to inner end
    x = 0.03 + 0.37 * u
    y = 0.1 - raise_ - p.brow_arch * np.sin(np.pi * (0.3 + 0.6 * u)) - 0.04 * np.sin(np.pi * u)
    return np.concatenate([np.stack([x, y], axis=1), np.stack([1.0 - x[::-1], y[::-1]], axis=1)])


def _eye(p: Identity, cx: float, side: int, openness: float) -> np.ndarray:
    """Six eye points from the image-left corner, clockwise; side -1 image-left, +1 right."""
    w, up, low, cy = p.eye_width, p.eye_height * openness, 0.55 * p.eye_height * openness, 0.215
    left_y, right_y = (cy - p.eye_tilt, cy) if side < 0 else (cy, cy - p.eye_tilt)  # outer lifts
    return np.array([(cx - w, left_y), (cx - w / 3, cy - up), (cx + w / 3, cy - up),
                     (cx + w, right_y), (cx + w / 3, cy + low), (cx - w / 3, cy + low)])


def _nose(p: Identity) -> np.ndarray:
    tip = 0.2 + p.nose_length
    bridge = [(0.5, 0.2 + p.nose_length * f) for f in (0.0, 0.33, 0.66, 1.0)]
    w = p.nose_width
    base = [(0.5 - w, tip + 0.06), (0.5 - w / 2, tip + 0.09), (0.5, tip + 0.1),
            (0.5 + w / 2, tip + 0.09), (0.5 + w, tip + 0.06)]
    return np.array(bridge + base)


def _mouth(p: Identity, width: float, gap: float, smile: float) -> np.ndarray:
    """Outer lips 48-59 then inner lips 60-67; `gap` opens the jaw, `smile` lifts the corners."""
    up, low, w = *p.lip_thickness, width
    outer = [(-w, -smile), (-0.6 * w, -0.8 * up), (-0.2 * w, -up), (0.0, -0.75 * up),
             (0.2 * w, -up), (0.6 * w, -0.8 * up), (w, -smile),
             (0.6 * w, gap + 0.8 * low), (0.25 * w, gap + low), (0.0, gap + low),
             (-0.25 * w, gap + low), (-0.6 * w, gap + 0.8 * low)]
    lift = 0.85 * smile
    inner = [(-0.85 * w, -lift), (-0.35 * w, -0.1 * up), (0.0, -0.08 * up),
             (0.35 * w, -0.1 * up), (0.85 * w, -lift),
             (0.35 * w, gap - 0.1 * up), (0.0, gap - 0.08 * up), (-0.35 * w, gap - 0.1 * up)]
    return np.array(outer + inner) + (0.5, 0.8)


def _landmarks(p: Identity, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """The 68 iBUG points (x, y) in face units for one random expression of `p`."""
    width = p.face_width * rng.uniform(0.97, 1.03)
    length = p.chin * rng.uniform(0.97, 1.03)
    blink = rng.random() < 0.1
    expr = {"openness": rng.uniform(0.12, 0.3) if blink else rng.uniform(0.7, 1.15),
            "gap": rng.uniform(0.025, 0.09) if rng.random() < 0.45 else 0.0,
            "smile": rng.uniform(-0.01, 0.035), "gaze": rng.uniform(-0.35, 0.35),
            "width": width}
    points = np.concatenate([
        _jaw(p, width, length + 0.6 * expr["gap"]),
        _brows(p, rng.uniform(-0.015, 0.03)),
        _nose(p),
        _eye(p, 0.24, -1, expr["openness"]),
        _eye(p, 0.76, 1, expr["openness"]),
        _mouth(p, p.mouth_width * rng.uniform(0.95, 1.05), expr["gap"], expr["smile"]),
    ])
    return points, expr


class _Placer:
    """Face units (with depth) to frame pixels: yaw about the vertical axis, then similarity."""

    def __init__(self, rng: np.random.Generator, frame_size: int) -> None:
        self.unit = rng.uniform(0.28, 0.35) * frame_size  # pixels per face unit
        self.yaw = np.deg2rad(rng.uniform(-10.0, 10.0))
        angle = np.deg2rad(rng.uniform(-15.0, 15.0))
        centre = frame_size * (0.5 + rng.uniform(-0.05, 0.05, 2)) + (0.0, 0.06 * frame_size)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        self.linear = rot * self.unit
        self.offset = centre - self.linear @ (0.5, 0.55)

    def __call__(self, xy: np.ndarray, z: np.ndarray | float | None = None) -> np.ndarray:
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        z = _depth(xy[:, 0]) if z is None else z
        x = 0.5 + (xy[:, 0] - 0.5) * np.cos(self.yaw) + z * np.sin(self.yaw)
        return np.stack([x, xy[:, 1]], axis=1) @ self.linear.T + self.offset


def _ellipse(cx: float, cy: float, ax: float, ay: float, start: float = 0.0,
             end: float = 360.0, n: int = 48) -> np.ndarray:
    t = np.deg2rad(np.linspace(start, end, n))
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], axis=1)


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts) * 16).astype(np.int32)  # 4 fractional bits for cv2 `shift`


def _fill(canvas: np.ndarray, pts: np.ndarray, color) -> None:
    cv2.fillPoly(canvas, [_fixed(pts)], tuple(int(c) for c in color), cv2.LINE_AA, shift=4)


def _stroke(canvas: np.ndarray, pts: np.ndarray, color, width: float,
            closed: bool = False) -> None:
    cv2.polylines(canvas, [_fixed(pts)], closed, tuple(int(c) for c in color),
                  max(1, round(width)), cv2.LINE_AA, shift=4)


def _fill_inside(canvas: np.ndarray, clip: np.ndarray, shapes: list[tuple[np.ndarray, tuple]]
                 ) -> None:
    """Fills `shapes` but only where they fall inside the polygon `clip` (irises, teeth)."""
    x0, y0 = np.floor(clip.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(clip.max(axis=0)).astype(int) + 2
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    roi = canvas[y0:y1, x0:x1]
    layer = roi.copy()
    for pts, color in shapes:
        _fill(layer, pts - (x0, y0), color)
    alpha = np.zeros(roi.shape[:2], np.uint8)
    _fill(alpha, clip - (x0, y0), (255,))
    a = alpha[..., None].astype(np.float32) / 255.0
    roi[:] = (layer * a + roi * (1.0 - a) + 0.5).astype(np.uint8)


def _shade(color, factor: float) -> tuple[int, ...]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    top, bottom = rng.integers(30, 230, (2, 3)).astype(np.float32)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    frame = np.empty((size, size, 3), np.uint8)
    frame[:] = (top * (1.0 - ramp) + bottom * ramp).astype(np.uint8)
    for _ in range(3):  # a few soft blobs so backgrounds are not plain gradients
        centre = rng.uniform(0, size, 2)
        radius = rng.uniform(0.05, 0.25) * size
        tint = np.clip(bottom + rng.uniform(-40, 40, 3), 0, 255)
        _fill(frame, _ellipse(*centre, radius, radius), tint)
    return frame


def _jitter(rng: np.random.Generator, color, amount: float = 8.0) -> tuple[int, ...]:
    return tuple(int(c) for c in np.clip(np.asarray(color) + rng.uniform(-amount, amount, 3),
                                         0, 255))


def draw_face(rng: np.random.Generator, identity: int,
              frame_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Draws one cartoon face of `identity` (0 or 1) at a random pose and expression.

    Returns:
        The frame (uint8 BGR, frame_size x frame_size) and its 68 landmarks (float32 (68, 2),
        frame pixels, iBUG-68 order), which follow the drawn jaw, brows, nose, eyes and lips.
    """
    p = IDENTITIES[identity]
    skin, hair = _jitter(rng, p.skin), _jitter(rng, p.hair, 5)
    lm, expr = _landmarks(p, rng)
    place = _Placer(rng, frame_size)
    frame = _background(rng, frame_size)
    width = expr["width"]
    unit = place.unit

    # Back layer: hair behind the head, shirt and neck, ears.
    crown = _ellipse(0.5, _EAR_Y, width + 0.07, _CROWN + 0.08, 180, 360, 32)
    if p.long_hair:
        back = np.concatenate([[(0.5 - width - 0.16, 1.45)], crown, [(0.5 + width + 0.16, 1.45)]])
        _fill(frame, place(back, 0.0), _shade(hair, 0.8))
    shirt = _jitter(rng, rng.integers(40, 220, 3), 0)
    _fill(frame, place(_ellipse(0.5, 1.95, 1.1, 0.5, 180, 360, 32), 0.0), shirt)
    neck = [(0.5 - 0.26, 0.9), (0.5 - 0.28, 1.55), (0.5 + 0.28, 1.55), (0.5 + 0.26, 0.9)]
    _fill(frame, place(np.array(neck), -0.2), _shade(skin, 0.78))
    for side in (-1, 1):
        ear = _ellipse(0.5 + side * (width + 0.015), 0.32, 0.06, 0.13)
        _fill(frame, place(ear, -0.25), _shade(skin, 0.9))

    # The face: jaw landmarks closed over the top of the skull.
    skull = _ellipse(0.5, _EAR_Y, width, _CROWN, 180, 360, 32)[::-1][1:-1]
    _fill(frame, np.concatenate([place(lm[:17]), place(skull, 0.0)]), skin)
    if p.stubble:
        beard = np.concatenate([lm[3:14], [(0.5 + 0.3, 0.68), (0.5, 0.7), (0.5 - 0.3, 0.68)]])
        _fill(frame, place(beard), _shade(skin, 0.8))
    if p.blush:
        for cx in (0.2, 0.8):
            _fill(frame, place(_ellipse(cx, 0.58, 0.08, 0.045)), (130, 140, 235))
    _stroke(frame, place(lm[:17]), _shade(skin, 0.75), 0.012 * unit)

    # Front hair: it must stay above the brows so that landmarks are never covered.
    top = _ellipse(0.5, _EAR_Y, width + 0.04, _CROWN + 0.05, 180, 360, 32)
    if p.long_hair:  # a fringe swept to one side
        line = [(0.5 + width + 0.05, 0.15), (0.5 + width - 0.02, -0.05), (0.75, -0.13),
                (0.45, -0.1), (0.2, -0.16), (0.5 - width + 0.02, -0.02),
                (0.5 - width - 0.05, 0.2)]
    else:  # a short crop with a straight hairline and sideburns
        line = [(0.5 + width + 0.02, 0.28), (0.5 + width - 0.03, 0.1), (0.5 + width - 0.06, -0.2),
                (0.5, -0.24), (0.5 - width + 0.06, -0.2), (0.5 - width + 0.03, 0.1),
                (0.5 - width - 0.02, 0.28)]
    _fill(frame, np.concatenate([place(top, 0.0), place(np.array(line), 0.05)]), hair)

    # Brows: the brow points with a thickness that tapers towards the outer ends.
    brow = _jitter(rng, p.brow, 4)
    for ends in ((0, 5), (5, 10)):
        pts = lm[17 + ends[0]:17 + ends[1]]
        th = np.linspace(*p.brow_thickness, 5)
        th = th if ends[0] == 5 else th[::-1]
        outline = np.concatenate([pts - np.outer(th, (0, 1)), (pts + np.outer(th, (0, 1)))[::-1]])
        _fill(frame, place(outline), brow)

    # Eyes: white, then iris and pupil clipped to the lids, then the lid line.
    for first in (36, 42):
        eye = lm[first:first + 6]
        centre = eye.mean(axis=0) + (expr["gaze"] * p.eye_width * 0.45, 0.0)
        r = 0.55 * p.eye_width
        outline = place(eye)
        _fill(frame, outline, (238, 242, 245))
        _fill_inside(frame, outline, [(place(_ellipse(*centre, r, r)), p.iris),
                                      (place(_ellipse(*centre, 0.45 * r, 0.45 * r)), (15, 15, 20))])
        lid = (0.016 if p.long_hair else 0.01) * unit
        _stroke(frame, outline[:4], (35, 30, 30), lid)
        _stroke(frame, outline[3:].tolist() + [outline[0]], _shade(skin, 0.6), 0.006 * unit)

    # Nose: a faint bridge, the base curve and two nostrils.
    nose_line = _shade(skin, 0.68)
    _stroke(frame, place(lm[27:31]), _shade(skin, 0.85), 0.01 * unit)
    _stroke(frame, place(lm[31:36]), nose_line, 0.012 * unit)
    for i in (32, 34):
        _fill(frame, place(_ellipse(lm[i, 0], lm[i, 1] - 0.02, 0.018, 0.009)),
              _shade(skin, 0.55))

    # Mouth: lips, then the open mouth with its upper teeth, or the line between closed lips.
    lips = _jitter(rng, p.lips, 6)
    _fill(frame, place(lm[48:60]), lips)
    upper = np.concatenate([lm[48:55], lm[60:65][::-1]])
    _fill(frame, place(upper), _shade(lips, 0.85))
    inner = place(lm[60:68])
    if expr["gap"] > 0:
        _fill(frame, inner, (45, 30, 70))
        teeth = np.concatenate([lm[60:65], lm[60:65][::-1] + (0.0, 0.35 * expr["gap"])])
        _fill_inside(frame, inner, [(place(teeth), (225, 235, 240))])
    _stroke(frame, inner[:5], _shade(lips, 0.5), 0.008 * unit)

    # Light from a random side, and a random overall exposure.
    light = rng.uniform(-0.3, 0.3, 2)
    ramp = np.linspace(-0.5, 0.5, frame_size, dtype=np.float32)
    gain = 1.0 + rng.uniform(-0.12, 0.12) + light[0] * ramp[None, :] + light[1] * ramp[:, None]
    frame = np.clip(frame * gain[..., None], 0, 255).astype(np.uint8)
    return frame, place(lm).astype(np.float32)


def face_rng(seed: int, identity: int, index: int) -> np.random.Generator:
    """The generator that draws face `index` of `identity`: each face is reproducible alone."""
    return np.random.default_rng([seed, identity, index])


def _face_header(landmarks: np.ndarray, name: str, frame_name: str, frame_size: int) -> dict:
    # Faceswap stores the detector's box; the landmarks' bounding box stands in for it.
    x0, y0 = np.floor(landmarks.min(axis=0)).astype(int)
    x1, y1 = np.ceil(landmarks.max(axis=0)).astype(int)
    return {
        "alignments": {"x": int(x0), "y": int(y0), "w": int(x1 - x0), "h": int(y1 - y0),
                       "landmarks_xy": landmarks.tolist(), "mask": {}, "identity": {}},
        "source": {"alignments_version": 2.4, "original_filename": name, "face_index": 0,
                   "source_filename": frame_name, "source_is_video": False,
                   "source_frame_dims": (frame_size, frame_size)},
    }


def default_demo_dir() -> pathlib.Path:
    """`$FSJAX_CACHE/demo_faces`, else `~/.cache/fsjax/demo_faces`."""
    return cache_root() / "demo_faces"


def _is_complete(root: pathlib.Path, wanted: dict) -> bool:
    try:
        recorded = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return recorded == wanted and all(
        len(list((root / side).glob("*.png"))) == wanted["count"] for side in "AB")


def _sweep_stale(root: pathlib.Path) -> None:
    """Removes temporary folders left by runs that were killed before they could clean up."""
    for old in root.parent.glob(f".{root.name}.tmp-*"):
        try:
            if time.time() - old.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass  # another run removed it first


def write_demo_faces(root: pathlib.Path, *, count: int = 64, size: int = 256,
                     seed: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes (or reuses) `count` demo faces per identity under `root/A` and `root/B`.

    The set is built in a temporary sibling folder, its marker file written last, and then
    renamed into place, so an interrupted run never leaves a half set that looks complete. A set
    made with another count, size, seed or drawing version is replaced.

    Returns:
        The A and B face folders.
    """
    root = pathlib.Path(root)
    wanted = {"count": count, "size": size, "seed": seed, "version": GENERATOR_VERSION}
    if _is_complete(root, wanted):
        return root / "A", root / "B"
    root.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(root)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for identity, side in enumerate("AB"):
            (tmp / side).mkdir()
            for i in range(count):
                frame, landmarks = draw_face(face_rng(seed, identity, i), identity)
                name = f"demo_{side}_{i:04d}_0.png"
                face = align.extract_face(frame, landmarks, size)
                meta = _face_header(landmarks, name, f"demo_{side}_{i:04d}.png", frame.shape[0])
                (tmp / side / name).write_bytes(header.encode_face_png(face, meta))
        (tmp / MARKER).write_text(json.dumps(wanted))
        if root.exists():  # an outdated or broken set: move it aside, then drop it
            old = root.with_name(f".{root.name}.tmp-old-{os.getpid()}-{time.time_ns()}")
            root.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            tmp.rename(root)
        except OSError:
            if not _is_complete(root, wanted):  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "A", root / "B"
