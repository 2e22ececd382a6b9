"""Landmark masks drawn in training-crop space (Faceswap's `components`, `extended`, eye, mouth).

Each mask is the union of filled convex hulls of landmark groups, drawn anti-aliased into a
uint8 (S, S) canvas. Face masks take the training dilation and no blur (Faceswap forces blur off
for them); eye and mouth masks take a fixed 2.5 % dilation and a Gaussian blur of about S/16.
"""

from __future__ import annotations

import cv2
import numpy as np

# 68-point index groups whose hulls make up the `components` face mask.
_FACE_PARTS: tuple[tuple[int, ...], ...] = (
    (*range(0, 9), 17),                            # right jaw
    (*range(8, 17), 26),                           # left jaw
    (17, 18, 19, 8),                               # right cheek
    (24, 25, 26, 8),                               # left cheek
    (*range(19, 25), 8),                           # nose ridge
    (*range(17, 22), 27, *range(31, 36), 8),       # right eye region
    (*range(22, 27), 27, *range(31, 36), 8),       # left eye region
    tuple(range(27, 36)),                          # nose
)
_EYE_PARTS: tuple[tuple[int, ...], ...] = (tuple(range(36, 42)), tuple(range(42, 48)))
_MOUTH_PARTS: tuple[tuple[int, ...], ...] = (tuple(range(48, 60)),)

AREA_DILATION = 2.5  # percent of S, for eye and mouth masks


def _check(landmarks: np.ndarray, size: int) -> np.ndarray:
    lms = np.asarray(landmarks)
    if lms.shape != (68, 2):
        raise ValueError(f"landmark masks need (68, 2) landmarks, got shape {lms.shape}")
    if size <= 0:
        raise ValueError(f"mask size must be positive, got {size}")
    return lms


def _draw(landmarks: np.ndarray, parts: tuple[tuple[int, ...], ...], size: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    points = np.rint(landmarks).astype(np.int32)
    for part in parts:
        hull = cv2.convexHull(points[list(part)])
        cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA)
    return mask


def _dilate(mask: np.ndarray, percent: float) -> np.ndarray:
    """Dilate (or erode if negative) with an ellipse of `percent` of the mask size."""
    if percent == 0:
        return mask
    # Python's round (half to even) as Faceswap. A kernel under 2 px cannot change the mask
    # (cv2 rejects 0, where Faceswap would crash), so it is skipped.
    kernel = int(round(mask.shape[0] * abs(percent / 100.0), 0))
    if kernel < 2:
        return mask
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    func = cv2.erode if percent < 0 else cv2.dilate
    return func(mask, element, iterations=1)


def _area_mask(landmarks: np.ndarray, parts: tuple[tuple[int, ...], ...],
               size: int) -> np.ndarray:
    mask = _dilate(_draw(landmarks, parts, size), AREA_DILATION)
    kernel = size // 16
    if kernel == 0:
        return mask
    kernel += 1 - kernel % 2  # GaussianBlur needs an odd kernel
    return cv2.GaussianBlur(mask, (kernel, kernel), 0)


def _raise_brows(landmarks: np.ndarray) -> np.ndarray:
    """Move each eyebrow point half its distance further from the eye below it.

    Floor division on the float landmarks is Faceswap's; it shifts points by up to a pixel and
    so changes which pixels the hull covers.
    """
    lms = landmarks
    # Reference points under the brows: a point between the jaw edge and the eye corner, then
    # the upper eyelid.
    left_side = (lms[36] + lms[0]) // 2
    right_side = (lms[16] + lms[45]) // 2
    left_ref = np.stack([(lms[36] + left_side) // 2, lms[36], lms[37], lms[38], lms[39]])
    right_ref = np.stack([lms[42], lms[43], lms[44], lms[45], (lms[45] + right_side) // 2])
    out = lms.copy()
    out[17:22] = lms[17:22] + (lms[17:22] - left_ref) // 2
    out[22:27] = lms[22:27] + (lms[22:27] - right_ref) // 2
    return out


def components_mask(landmarks: np.ndarray, size: int, dilation: float = 0.0) -> np.ndarray:
    """Face mask from jaw, cheek, eye-region and nose hulls; `dilation` in percent of `size`."""
    lms = _check(landmarks, size)
    return _dilate(_draw(lms, _FACE_PARTS, size), dilation)


def extended_mask(landmarks: np.ndarray, size: int, dilation: float = 0.0) -> np.ndarray:
    """As `components_mask` but with the eyebrows raised so the forehead is covered."""
    lms = _check(landmarks, size)
    return _dilate(_draw(_raise_brows(lms), _FACE_PARTS, size), dilation)


def eye_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Both eyes, dilated 2.5 % and Gaussian-blurred (kernel size//16 made odd)."""
    return _area_mask(_check(landmarks, size), _EYE_PARTS, size)


def mouth_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Outer lip contour, dilated 2.5 % and Gaussian-blurred (kernel size//16 made odd)."""
    return _area_mask(_check(landmarks, size), _MOUTH_PARTS, size)


def face_mask(mask_type: str, landmarks: np.ndarray, size: int,
              dilation: float = 0.0) -> np.ndarray:
    """The face mask named by a `mask_type` setting ("components" or "extended")."""
    if mask_type == "components":
        return components_mask(landmarks, size, dilation)
    if mask_type == "extended":
        return extended_mask(landmarks, size, dilation)
    raise ValueError(f"unknown landmark mask type {mask_type!r}; expected 'components' or "
                     "'extended'")
