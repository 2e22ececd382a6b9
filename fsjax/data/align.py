"""Face geometry: the normalised "legacy" alignment, head pose, and Faceswap's crops.

Every extracted face PNG is a head-centred crop of a frame. Training does not warp the frame
again: it cuts an axis-aligned window out of the PNG (the window depends on the training
centering, coverage and vertical offset) and resizes it. The window position comes from a 3D
head pose fitted to the frame-space landmarks stored in the PNG header.

The arithmetic below deliberately follows the dtypes Faceswap ends up with (float32 landmarks,
float64 matrices, float32 pose offsets) because crop corners are `rint`-ed: a different rounding
path would move a crop by a pixel on some faces.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Literal

import cv2
import numpy as np

Centering = Literal["face", "head", "legacy"]
CENTERINGS: tuple[str, ...] = ("face", "head", "legacy")


def _frozen(values: list[list[float]]) -> np.ndarray:
    arr = np.array(values, dtype=np.float64)
    arr.setflags(write=False)
    return arr


# Fraction of a crop that is padding around the core face box, per centering.
EXTRACT_RATIOS: Mapping[str, float] = types.MappingProxyType(
    {"legacy": 0.375, "face": 0.5, "head": 0.625})

# Mean positions (normalised 0..1) of 68-point landmarks 17..67 (Faceswap's LM_2D_51 table).
MEAN_FACE_2D_51 = _frozen([
    [0.010086, 0.106454], [0.085135, 0.038915], [0.191003, 0.018748], [0.300643, 0.034489],
    [0.403270, 0.077391], [0.596729, 0.077391], [0.699356, 0.034489], [0.808997, 0.018748],
    [0.914864, 0.038915], [0.989913, 0.106454], [0.500000, 0.203352], [0.500000, 0.307009],
    [0.500000, 0.409805], [0.500000, 0.515625], [0.376753, 0.587326], [0.435909, 0.609345],
    [0.500000, 0.628106], [0.564090, 0.609345], [0.623246, 0.587326], [0.131610, 0.216423],
    [0.196995, 0.178758], [0.275698, 0.179852], [0.344479, 0.231733], [0.270791, 0.245099],
    [0.192616, 0.244077], [0.655520, 0.231733], [0.724301, 0.179852], [0.803005, 0.178758],
    [0.868389, 0.216423], [0.807383, 0.244077], [0.729208, 0.245099], [0.264022, 0.780233],
    [0.350858, 0.745405], [0.438731, 0.727388], [0.500000, 0.742578], [0.561268, 0.727388],
    [0.649141, 0.745405], [0.735977, 0.780233], [0.652032, 0.864805], [0.566594, 0.902192],
    [0.500000, 0.909281], [0.433405, 0.902192], [0.347967, 0.864805], [0.300252, 0.784792],
    [0.437969, 0.778746], [0.500000, 0.785343], [0.562030, 0.778746], [0.699747, 0.784792],
    [0.563237, 0.824182], [0.500000, 0.831803], [0.436763, 0.824182]])

# A 26-point mean head in 3D, matched to the 68-point indices in POSE_LANDMARKS.
MEAN_HEAD_3D_26 = _frozen([
    [4.056931, -11.432347, 1.636229], [1.833492, -12.542305, 4.061275],
    [0.0, -12.901019, 4.070434], [-1.833492, -12.542305, 4.061275],
    [-4.056931, -11.432347, 1.636229], [6.825897, 1.275284, 4.402142],
    [1.330353, 1.636816, 6.903745], [-1.330353, 1.636816, 6.903745],
    [-6.825897, 1.275284, 4.402142], [1.930245, -5.060977, 5.914376],
    [0.746313, -5.136947, 6.263227], [0.0, -5.485328, 6.76343],
    [-0.746313, -5.136947, 6.263227], [-1.930245, -5.060977, 5.914376],
    [5.311432, 0.0, 3.987654], [1.78993, -0.091703, 4.413414],
    [-1.78993, -0.091703, 4.413414], [-5.311432, 0.0, 3.987654],
    [2.774015, -7.566103, 5.048531], [0.509714, -7.056507, 6.566167],
    [0.0, -7.131772, 6.704956], [-0.509714, -7.056507, 6.566167],
    [-2.774015, -7.566103, 5.048531], [-0.589441, -8.443925, 6.109526],
    [0.0, -8.601736, 6.097667], [0.589441, -8.443925, 6.109526]])

POSE_LANDMARKS: tuple[int, ...] = (6, 7, 8, 9, 10, 17, 21, 22, 26, 31, 32, 33, 34, 35, 36, 39,
                                   42, 45, 48, 50, 51, 52, 54, 56, 57, 58)

# 3D points (head model space) that each centering puts at the middle of its crop.
_CENTRE_POINTS_3D: Mapping[str, tuple[float, float, float]] = types.MappingProxyType(
    {"head": (0.0, 0.0, -2.3), "face": (0.0, -1.5, 4.2)})


def _camera_matrix() -> np.ndarray:
    # Focal length 4 in normalised (0..1) image units, principal point at the centre.
    return np.array([[4.0, 0.0, 0.5], [0.0, 4.0, 0.5], [0.0, 0.0, 1.0]], dtype=np.float64)


def umeyama(source: np.ndarray, target: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """Least-squares similarity transform taking `source` points onto `target` points.

    Umeyama (PAMI 1991). The source keeps its own dtype for the means and variance (Faceswap feeds
    float32 landmarks), which keeps the result bit-compatible with Faceswap's alignment.

    Args:
        source: (N, D) points.
        target: (N, D) points.
        estimate_scale: fit a uniform scale as well as rotation and translation.

    Returns:
        (D+1, D+1) homogeneous float64 matrix; all NaN if the problem is degenerate.
    """
    count, dim = source.shape
    src_centre = source.mean(axis=0)
    dst_centre = target.mean(axis=0)
    src_dev = source - src_centre
    dst_dev = target - dst_centre
    cross = dst_dev.T @ src_dev / count

    signs = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(cross) < 0:
        signs[-1] = -1.0
    u_mat, singular, v_t = np.linalg.svd(cross)
    rank = np.linalg.matrix_rank(cross)
    out = np.eye(dim + 1, dtype=np.float64)
    if rank == 0:
        return out * np.nan
    if rank == dim - 1:
        # One degenerate direction: pick the reflection-free solution explicitly.
        if np.linalg.det(u_mat) * np.linalg.det(v_t) > 0:
            rotation = u_mat @ v_t
        else:
            flip = signs.copy()
            flip[-1] = -1.0
            rotation = u_mat @ np.diag(flip) @ v_t
    else:
        rotation = u_mat @ np.diag(signs) @ v_t
    scale = 1.0 / src_dev.var(axis=0).sum() * (singular @ signs) if estimate_scale else 1.0
    out[:dim, dim] = dst_centre - scale * (rotation @ src_centre.T)
    out[:dim, :dim] = rotation * scale
    return out


def _check_68(landmarks: np.ndarray) -> np.ndarray:
    lms = np.asarray(landmarks)
    if lms.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got shape {lms.shape}")
    return lms


def legacy_matrix(landmarks68: np.ndarray) -> np.ndarray:
    """(2, 3) frame -> normalised "legacy" space (core face box roughly in [0, 1]^2)."""
    lms = _check_68(landmarks68)
    return umeyama(lms[17:], MEAN_FACE_2D_51, True)[:2]


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to (N, 2) points; output keeps the points' float dtype (cv2 rule)."""
    pts = np.ascontiguousarray(points)
    if pts.dtype not in (np.float32, np.float64):
        pts = pts.astype(np.float32)
    return cv2.transform(pts[:, None, :], np.asarray(matrix, np.float64))[:, 0, :]


def _solve_pose(normalised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    points = np.ascontiguousarray(normalised[list(POSE_LANDMARKS)])
    _, rvec, tvec = cv2.solvePnP(np.asarray(MEAN_HEAD_3D_26), points, _camera_matrix(),
                                 np.zeros((4, 1), np.float32), flags=cv2.SOLVEPNP_ITERATIVE)
    return rvec, tvec


def pose_offsets(landmarks68: np.ndarray,
                 matrix: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per centering, how far its centre sits from the legacy centre in normalised units.

    The head pose comes from solvePnP of 26 legacy-space landmarks against a mean 3D head; the
    offset of a centering is where its 3D centre projects, minus (0.5, 0.5).

    Args:
        landmarks68: (68, 2) frame-space landmarks (float32 as stored in the header).
        matrix: the legacy matrix, if already computed.

    Returns:
        {"legacy": (0, 0), "face": (x, y), "head": (x, y)}, float32 arrays of shape (2,).
    """
    lms = _check_68(landmarks68)
    mat = legacy_matrix(lms) if matrix is None else matrix
    normalised = np.nan_to_num(transform_points(lms, mat))
    rvec, tvec = _solve_pose(normalised)
    offsets = {"legacy": np.zeros((2,), np.float32)}
    no_distortion = np.zeros((4, 1), np.float32)
    for name, point in _CENTRE_POINTS_3D.items():
        projected = cv2.projectPoints(np.array([point], np.float32), rvec, tvec,
                                      _camera_matrix(), no_distortion)[0]
        offsets[name] = projected.reshape(2).astype(np.float32) - np.float32(0.5)
    return offsets


def centering_matrix(matrix: np.ndarray, offsets: Mapping[str, np.ndarray],
                     centering: str) -> np.ndarray:
    """Legacy matrix re-centred on `centering` (its translation moved by the pose offset)."""
    out = np.array(matrix, dtype=np.float64)
    out[:, 2] -= offsets[centering]
    return out


def crop_padding(size: int, centering: str, coverage_ratio: float) -> int:
    """Pixels of padding around the core face box in a crop of `size` at this coverage."""
    ratio = EXTRACT_RATIOS[centering]
    return round(size * (ratio + coverage_ratio - 1) / (2 * coverage_ratio))


def extract_face(frame_bgr: np.ndarray, landmarks_frame: np.ndarray,
                 size: int = 256) -> np.ndarray:
    """The head-centred face `faceswap extract` saves for these frame landmarks.

    The frame is warped with the head-centred matrix scaled to `size` with head padding. Like
    Faceswap's extract writer, bilinear is used when the face is enlarged and bicubic when it is
    shrunk, with black outside the frame.

    Args:
        frame_bgr: (H, W, 3) uint8 frame.
        landmarks_frame: (68, 2) frame-space landmarks.
        size: output side in pixels.

    Returns:
        (size, size, 3) uint8 BGR face.
    """
    lms = _check_68(landmarks_frame).astype(np.float32)
    mat = legacy_matrix(lms)
    offsets = pose_offsets(lms, mat)
    padding = round(size * EXTRACT_RATIOS["head"] / 2)
    warp = centering_matrix(mat, offsets, "head") * (size - 2 * padding)
    warp[:, 2] += padding
    interpolation = cv2.INTER_LINEAR if np.hypot(warp[0, 0], warp[1, 0]) > 1.0 else cv2.INTER_CUBIC
    return cv2.warpAffine(frame_bgr, warp, (size, size), flags=interpolation)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainCrop:
    """Where a training crop sits in a head-centred PNG, and its landmarks.

    Attributes:
        left: x of the window's top-left corner in PNG pixels (may be negative).
        top: y of the window's top-left corner in PNG pixels (may be negative).
        window: side of the square window in PNG pixels.
        size: side of the output crop.
        padding: pixels of padding around the core face box in the output crop.
        matrix: (2, 3) frame -> output-crop pixels, vertical offset included.
        landmarks: (68, 2) float32 landmarks in output-crop pixels.
    """

    left: int
    top: int
    window: int
    size: int
    padding: int
    matrix: np.ndarray
    landmarks: np.ndarray


def train_crop(landmarks68: np.ndarray, png_size: int, centering: str, coverage: float,
               vertical_offset: float, size: int, *, matrix: np.ndarray | None = None,
               offsets: Mapping[str, np.ndarray] | None = None) -> TrainCrop:
    """Geometry of Faceswap's training crop (TrainSet, no augmentation) for one face.

    Args:
        landmarks68: (68, 2) float32 frame-space landmarks from the PNG header.
        png_size: side of the head-centred PNG.
        centering: "face", "head" or "legacy".
        coverage: percent of the centering's full crop to keep (Faceswap 62.5..100).
        vertical_offset: percent of the core box to shift the crop down (Faceswap -25..25).
        size: output side (the process size).
        matrix: precomputed legacy matrix (saves an Umeyama per sample).
        offsets: precomputed pose offsets (saves a solvePnP per sample).

    Returns:
        The crop window and crop-space landmarks.
    """
    if centering not in EXTRACT_RATIOS:
        raise ValueError(f"unknown centering {centering!r}; expected one of {CENTERINGS}")
    lms = _check_68(landmarks68)
    size = int(size)
    mat = legacy_matrix(lms) if matrix is None else matrix
    offs = pose_offsets(lms, mat) if offsets is None else offsets
    ratio = coverage / 100.0
    y_off = vertical_offset / 100.0

    # Window in the PNG. Sizes are kept even so the window stays centred on whole pixels.
    head_core = 1.0 - EXTRACT_RATIOS["head"]
    if centering == "head" and ratio == 1.0:
        window = png_size
    else:
        scale = head_core / (1.0 - EXTRACT_RATIOS[centering]) * ratio
        window = 2 * int(round(png_size * scale / 2))
    base = 2 * int(round(png_size * head_core / 2))
    delta = offs[centering] - offs["head"]  # float32, as in Faceswap
    if y_off:
        delta[1] -= y_off
    corner = np.rint(delta * base + (png_size - window) / 2).astype(np.int32)

    padding = crop_padding(size, centering, ratio)
    crop_mat = centering_matrix(mat, offs, centering) * (size - 2 * padding)
    crop_mat[:, 2] += padding
    if y_off:
        crop_mat[1, 2] += y_off * (size - 2 * padding)
    landmarks = transform_points(lms, crop_mat)
    return TrainCrop(left=int(corner[0]), top=int(corner[1]), window=window, size=size,
                     padding=padding, matrix=crop_mat, landmarks=landmarks)


def crop_face(png_image: np.ndarray, crop: TrainCrop) -> np.ndarray:
    """Cut `crop`'s window from the PNG image (black outside it) and resize to `crop.size`.

    Bicubic when enlarging, area averaging when shrinking, as Faceswap's training loader.
    """
    height, width = png_image.shape[:2]
    x0, y0, side = crop.left, crop.top, crop.window
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, width), min(y0 + side, height)
    if (sx0, sy0, sx1, sy1) == (x0, y0, x0 + side, y0 + side):
        out = png_image[y0:y0 + side, x0:x0 + side]  # inside the image: a view is enough
    else:
        out = np.zeros((side, side) + png_image.shape[2:], dtype=png_image.dtype)
        if sx0 < sx1 and sy0 < sy1:
            out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = png_image[sy0:sy1, sx0:sx1]
    if side == crop.size:
        return np.ascontiguousarray(out)
    interpolation = cv2.INTER_CUBIC if side < crop.size else cv2.INTER_AREA
    return cv2.resize(out, (crop.size, crop.size), interpolation=interpolation)
