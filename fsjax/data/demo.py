"""The built-in demo faces: two synthetic cartoon identities in Faceswap's extracted-face format.

A user without face folders still gets a real run: faces are drawn procedurally in a frame with
their 68 landmarks, extracted exactly as `faceswap extract` does (head-centred crop, `faceswap`
PNG header), and then read back through the same loader as user data. No real person is shown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil

import cv2
import numpy as np

from fsjax.data import align, header

MARKER = "demo_faces.json"
"""Written last into a complete set; records what was generated."""


@dataclasses.dataclass(frozen=True)
class Identity:
    """What makes one cartoon person recognisable (colours BGR, shapes in face units)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    brow_thickness: float
    face_width: float  # jaw width scale
    chin: float  # jaw length scale
    eye_scale: float
    mouth_width: float
    nose_length: float
    fringe: str  # "side" or "spiky"


IDENTITIES = (
    Identity(skin=(150, 185, 230), hair=(30, 60, 140), iris=(160, 110, 40), lips=(90, 90, 200),
             brow_thickness=0.022, face_width=1.0, chin=1.0, eye_scale=1.15, mouth_width=0.9,
             nose_length=0.9, fringe="side"),
    Identity(skin=(80, 120, 170), hair=(25, 25, 30), iris=(40, 70, 60), lips=(70, 70, 140),
             brow_thickness=0.04, face_width=1.12, chin=1.1, eye_scale=0.85, mouth_width=1.15,
             nose_length=1.15, fringe="spiky"),
)


def _template(person: Identity, rng: np.random.Generator) -> np.ndarray:
    """68 landmarks in Faceswap's normalised face space for one expression of `person`."""
    phi = np.linspace(0.0, np.pi, 17)
    jaw = np.stack([0.5 - 0.58 * person.face_width * np.cos(phi),
                    0.22 + 0.94 * person.chin * np.sin(phi)], axis=1)
    inner = np.array(align.MEAN_FACE_2D_51, np.float64)  # landmarks 17..67
    points = np.concatenate([jaw, inner])

    def scale(idx: slice, sx: float, sy: float) -> None:
        centre = points[idx].mean(axis=0)
        points[idx] = centre + (points[idx] - centre) * (sx, sy)

    openness = rng.uniform(0.5, 1.3)
    for eye in (slice(36, 42), slice(42, 48)):
        scale(eye, person.eye_scale, person.eye_scale * openness)
    nose = slice(27, 36)
    points[nose, 1] = 0.23 + (points[nose, 1] - 0.23) * person.nose_length
    scale(slice(48, 68), person.mouth_width, 1.0)
    gap = rng.uniform(0.0, 0.07)  # mouth opening: lower lip and inner lower lip drop
    points[[55, 56, 57, 58, 59, 65, 66, 67], 1] += gap
    points[[54, 64], 1] += gap / 2
    points[[48, 60], 1] += gap / 2
    return points


def _to_frame(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _poly(canvas: np.ndarray, pts: np.ndarray, color: tuple[int, ...]) -> None:
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, shift=4)


def _line(canvas: np.ndarray, pts: np.ndarray, color: tuple[int, ...], width: float,
          closed: bool = False) -> None:
    cv2.polylines(canvas, [np.round(pts * 16).astype(np.int32)], closed, color,
                  max(1, round(width)), cv2.LINE_AA, shift=4)


def _ellipse_points(centre: tuple[float, float], axes: tuple[float, float], start: float = 0,
                    end: float = 360, n: int = 40) -> np.ndarray:
    t = np.deg2rad(np.linspace(start, end, n))
    return np.stack([centre[0] + axes[0] * np.cos(t), centre[1] + axes[1] * np.sin(t)], axis=1)


def draw_face(rng: np.random.Generator, identity: int,
              frame_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Draws one face of `identity` (0 or 1) at a random pose.

    Returns:
        The frame (uint8 BGR, frame_size x frame_size) and its 68 landmarks (float32, frame pixels,
        iBUG-68 order), consistent with what is drawn.
    """
    person = IDENTITIES[identity]
    template = _template(person, rng)
    unit = rng.uniform(0.3, 0.4) * frame_size  # pixels per face unit
    angle = np.deg2rad(rng.uniform(-15, 15))
    centre = frame_size / 2 + rng.uniform(-0.08, 0.08, 2) * frame_size
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * unit
    matrix = np.concatenate([rot, (centre - rot @ (0.5, 0.55))[:, None]], axis=1)
    yaw = rng.uniform(-0.12, 0.12)  # squeeze one side a little, as a turned head would look
    template[:, 0] = 0.5 + (template[:, 0] - 0.5) * (1 + yaw * (template[:, 0] - 0.5))

    bg = rng.integers(40, 220, 3)
    frame = np.empty((frame_size, frame_size, 3), np.uint8)
    ramp = np.linspace(0.7, 1.1, frame_size)[:, None, None]
    frame[:] = np.clip(bg * ramp, 0, 255).astype(np.uint8)

    def pts(p: np.ndarray) -> np.ndarray:
        return _to_frame(np.asarray(p, np.float64), matrix)

    jaw = template[:17]
    _poly(frame, pts(_ellipse_points((0.5, 0.25), (0.68 * person.face_width, 0.72))), person.hair)
    head = np.concatenate([jaw, _ellipse_points((0.5, 0.22), (0.58 * person.face_width, 0.5),
                                                180, 360, 20)[1:-1]])
    _poly(frame, pts(head), person.skin)
    if person.fringe == "side":
        fringe = [(-0.05, 0.12), (0.1, -0.22), (0.5, -0.3), (0.95, -0.18), (1.05, 0.15),
                  (0.8, 0.02), (0.4, 0.08)]
    else:
        fringe = [(-0.1, 0.1)] + [(0.05 + 0.1 * i, -0.05 if i % 2 else -0.35) for i in range(11)]
        fringe += [(1.1, 0.1), (0.5, -0.1)]
    _poly(frame, pts(fringe), person.hair)
    shade = tuple(int(c * 0.8) for c in person.skin)
    _line(frame, pts(jaw), shade, 0.012 * unit)
    brow = tuple(int(c * 0.6) for c in person.hair)
    for idx in (slice(17, 22), slice(22, 27)):
        _line(frame, pts(template[idx]), brow, person.brow_thickness * unit)
    for idx in (slice(36, 42), slice(42, 48)):
        eye = template[idx]
        _poly(frame, pts(eye), (245, 245, 245))
        iris_r = 0.35 * (eye[:, 0].max() - eye[:, 0].min())
        iris_ry = min(iris_r, np.ptp(eye[:, 1]) / 2)
        iris = _ellipse_points(tuple(eye.mean(axis=0)), (iris_r, iris_ry))
        _poly(frame, pts(iris), person.iris)
        _line(frame, pts(eye), (40, 40, 40), 0.008 * unit, closed=True)
    _line(frame, pts(template[27:31]), shade, 0.012 * unit)
    _line(frame, pts(template[31:36]), shade, 0.012 * unit)
    _poly(frame, pts(template[48:60]), person.lips)
    _poly(frame, pts(template[60:68]), (40, 30, 60))

    # Soft directional light, different for every picture.
    light = rng.uniform(-0.25, 0.25, 2)
    yy, xx = np.mgrid[0:frame_size, 0:frame_size] / frame_size - 0.5
    gain = 1.0 + light[0] * xx + light[1] * yy + rng.uniform(-0.1, 0.1)
    frame = np.clip(frame * gain[..., None], 0, 255).astype(np.uint8)
    return frame, pts(template).astype(np.float32)


def _face_header(landmarks: np.ndarray, name: str, frame_name: str,
                 frame_size: int) -> dict:
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
    root = os.environ.get("FSJAX_CACHE")
    base = pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "fsjax"
    return base / "demo_faces"


def write_demo_faces(root: pathlib.Path, *, count: int = 64, size: int = 256,
                     seed: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes (or reuses) `count` faces per identity under `root/A` and `root/B`.

    The set is built in a temporary sibling folder and renamed into place with its marker file
    written last, so an interrupted first run never leaves a half set that looks complete.
    """
    root = pathlib.Path(root)
    wanted = {"count": count, "size": size, "seed": seed, "version": 1}
    marker = root / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == wanted:
                return root / "A", root / "B"
        except ValueError:
            pass  # unreadable marker: regenerate
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for identity, side in enumerate("AB"):
        folder = tmp / side
        folder.mkdir(parents=True)
        for i in range(count):
            frame, landmarks = draw_face(rng, identity)
            name = f"demo_{side}_{i:04d}_0.png"
            face = align.extract_face(frame, landmarks, size)
            meta = _face_header(landmarks, name, f"demo_{side}_{i:04d}.png", frame.shape[0])
            (folder / name).write_bytes(header.encode_face_png(face, meta))
    (tmp / MARKER).write_text(json.dumps(wanted))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root / "A", root / "B"
