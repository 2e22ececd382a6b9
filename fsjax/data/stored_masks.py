"""Neural-network face masks stored in Faceswap face headers (bisenet-fp, vgg, unet-dfl, custom).

Extract saves these masks zlib-compressed at a small size (128 px by default) and at the
centering the mask model works in, which is often not the training centering. Training turns a
stored mask into a training mask by: dilate/erode, threshold, Gaussian blur (all in stored-mask
pixels), then cutting the training centering/coverage/vertical-offset window out of it and
resizing to the training size. The window arithmetic mirrors the image crop in `align.train_crop`
closely enough that the mask lands on the same face pixels (see tests/test_stored_masks.py).

Faceswap skips the window cut when the stored and training centerings match at 100 % coverage,
even with a vertical offset, so its mask then stays put while the image moves. fsjax applies the
offset by default; `faceswap_compat=True` keeps Faceswap's behaviour.
"""

from __future__ import annotations

import math
import os
import types
import zlib
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from fsjax.data.align import CENTERINGS, EXTRACT_RATIOS
from fsjax.data.header import FaceFileError

# The centering Faceswap's extract stores each mask at (bisenet-fp and custom: by name suffix).
MASK_CENTERINGS: Mapping[str, str] = types.MappingProxyType({
    "bisenet-fp_face": "face",
    "bisenet-fp_head": "head",
    "custom_face": "face",
    "custom_head": "head",
    "unet-dfl": "legacy",
    "vgg-clear": "face",
    "vgg-obstructed": "face",
})
# Stored masks Faceswap offers as `mask_type` (besides none/components/extended).
STORED_MASK_TYPES: tuple[str, ...] = tuple(sorted(MASK_CENTERINGS))
# Largest stored side accepted: Faceswap stores 64..1024 px (or a model's native size, <= 512).
MAX_STORED_SIZE = 4096


def decode_stored_mask(entry: Mapping[str, Any], *, path: str | os.PathLike,
                       name: str | None = None) -> np.ndarray:
    """Decompress one header mask entry to its (S, S) uint8 pixels, refusing anything malformed.

    Decompression stops one byte past S*S, so a stream that inflates to more than the declared
    size (a zip bomb included) costs at most S*S + 1 bytes of memory before it is refused.

    Args:
        entry: one value of the header's `alignments.mask` dict (needs "mask" and "stored_size").
        path: the face file, for error messages.
        name: the mask's key in the header, for error messages.

    Returns:
        A writable (S, S) uint8 array, S = stored_size.

    Raises:
        FaceFileError: missing keys, bad stored_size, corrupt/truncated stream, or a stream that
            does not inflate to exactly S*S bytes.
    """
    where = f"stored mask {name!r}" if name is not None else "stored mask"
    if not isinstance(entry, Mapping):
        raise FaceFileError(path, f"{where} is a {type(entry).__name__}, not a dict")
    data = entry.get("mask")
    if not isinstance(data, (bytes, bytearray)):
        raise FaceFileError(path, f"{where} has no compressed 'mask' bytes")
    size = entry.get("stored_size")
    if (not isinstance(size, (int, np.integer)) or isinstance(size, bool)
            or not 0 < size <= MAX_STORED_SIZE):
        raise FaceFileError(path, f"{where} stored_size {size!r} is not an int in "
                                  f"1..{MAX_STORED_SIZE}")
    size = int(size)
    expected = size * size
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(bytes(data), expected + 1)
    except zlib.error as err:
        raise FaceFileError(path, f"{where} data is not a valid zlib stream ({err})") from err
    if len(raw) > expected:
        raise FaceFileError(path, f"{where} inflates to more than stored_size^2 = {expected} "
                                  "bytes (refused)")
    if not inflater.eof:
        raise FaceFileError(path, f"{where} zlib stream is truncated ({len(raw)} of {expected} "
                                  "bytes before it stops)")
    if len(raw) != expected:
        raise FaceFileError(path, f"{where} holds {len(raw)} bytes; stored_size {size} needs "
                                  f"{expected}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(size, size).copy()


def stored_crop_window(stored_size: int, *, stored_centering: str, centering: str,
                       coverage: float, vertical_offset: float,
                       offsets: Mapping[str, np.ndarray],
                       faceswap_compat: bool = False) -> tuple[int, int, int] | None:
    """Window of a stored mask that covers the training crop, or None when it is the whole mask.

    Mirrors Faceswap's `get_sub_crop_size`/`get_adjusted_center`: the side is rounded to an even
    number of stored pixels, and the centre is the stored centre moved by the pose-offset
    difference (minus the vertical offset) in units of the stored core box (not rounded).

    Returns:
        (left, top, side) in stored-mask pixels (left/top may be negative or run past the edge),
        or None when no cut is needed.
    """
    for label, value in (("stored_centering", stored_centering), ("centering", centering)):
        if value not in EXTRACT_RATIOS:
            raise ValueError(f"{label} {value!r} is not one of {CENTERINGS}")
    for key in (stored_centering, centering):
        if key not in offsets:
            raise ValueError(f"offsets has no {key!r} pose offset")
    if not 0.0 < coverage <= 100.0:
        raise ValueError(f"coverage must be in (0, 100] percent, got {coverage}")
    ratio = coverage / 100.0
    y_off = vertical_offset / 100.0
    whole = stored_centering == centering and ratio == 1.0
    if whole and (faceswap_compat or y_off == 0.0):
        return None
    if whole:
        side = stored_size
    else:
        scale = (1.0 - EXTRACT_RATIOS[stored_centering]) / (1.0 - EXTRACT_RATIOS[centering])
        side = 2 * int(round(stored_size * scale * ratio / 2))
    if side < 2:
        raise ValueError(f"a {stored_size} px stored mask is too small for a {coverage}% "
                         f"{centering} crop")
    # Pose offsets are float32; Faceswap's y shift is a float64 list, so the sum is float64.
    shift = (np.asarray(offsets[centering]) - np.asarray(offsets[stored_centering])
             - np.array([0.0, y_off]))
    core = stored_size - stored_size * EXTRACT_RATIOS[stored_centering]
    centre = np.rint(shift * core + stored_size / 2).astype(np.int32)
    half = side // 2
    return int(centre[0]) - half, int(centre[1]) - half, side


def _cut(mask: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """`side`x`side` window at (left, top), zeros where it leaves the mask."""
    out = np.zeros((side, side), dtype=mask.dtype)
    height, width = mask.shape
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, width), min(top + side, height)
    if x0 < x1 and y0 < y1:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = mask[y0:y1, x0:x1]
    return out


def process_stored_mask(mask: np.ndarray, *, stored_centering: str, centering: str,
                        coverage: float, vertical_offset: float,
                        offsets: Mapping[str, np.ndarray], size: int, dilation: float,
                        blur_kernel: int, threshold: float,
                        faceswap_compat: bool = False) -> np.ndarray:
    """Turn a decoded stored mask into the training-crop mask, in Faceswap's order of steps.

    Dilation, threshold and blur act on the stored mask before the window is cut, so their sizes
    are in stored pixels (the blur kernel is "pixels of a 128 px mask" in Faceswap's config).

    Args:
        mask: (Sm, Sm) or (Sm, Sm, 1) uint8 from `decode_stored_mask`.
        stored_centering: the entry's `stored_centering`.
        centering: training centering ("face", "head" or "legacy").
        coverage: training coverage in percent.
        vertical_offset: training vertical offset in percent of the core face box.
        offsets: the face's pose offsets per centering (`align.pose_offsets`).
        size: training (process) size.
        dilation: percent of Sm; positive dilates, negative erodes (ellipse kernel of
            round(Sm*|dilation|/100) px, one pass; skipped if that rounds to 0, where
            Faceswap's OpenCV call fails).
        blur_kernel: Gaussian kernel in stored pixels, even values raised to odd; 0 or 1 is no
            blur (a 1x1 Gaussian is the identity).
        threshold: percent 0..50; values below t = threshold/100*255 become 0, above 255 - t
            become 255.
        faceswap_compat: ignore the vertical offset when the centerings match at 100 %
            coverage, as Faceswap does (its mask then no longer lines up with the image).

    Returns:
        (size, size) uint8 mask.
    """
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[0] != arr.shape[1] or not arr.size:
        raise ValueError(f"stored mask must be square uint8 (Sm, Sm), got {arr.dtype} "
                         f"{arr.shape}")
    if not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not math.isfinite(dilation):
        raise ValueError(f"dilation must be finite, got {dilation}")
    if not isinstance(blur_kernel, (int, np.integer)) or blur_kernel < 0:
        raise ValueError(f"blur_kernel must be an int >= 0, got {blur_kernel!r}")
    if not 0.0 <= threshold <= 50.0:
        raise ValueError(f"threshold must be in 0..50 percent, got {threshold}")
    stored = arr.shape[0]
    window = stored_crop_window(stored, stored_centering=stored_centering, centering=centering,
                                coverage=coverage, vertical_offset=vertical_offset,
                                offsets=offsets, faceswap_compat=faceswap_compat)
    out = np.array(arr, dtype=np.uint8, copy=True)

    kernel = int(round(stored * abs(dilation) / 100.0))  # Python round, as Faceswap
    if dilation != 0 and kernel > 0:
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
        morph = cv2.dilate if dilation > 0 else cv2.erode
        out = morph(out, element, iterations=1)

    cut_off = threshold / 100.0 * 255.0
    if cut_off:
        out[out < cut_off] = 0
        out[out > 255.0 - cut_off] = 255

    blur = int(blur_kernel) + (1 if blur_kernel and blur_kernel % 2 == 0 else 0)
    if blur > 1:
        out = cv2.GaussianBlur(out, (blur, blur), 0)

    if window is not None:
        out = _cut(out, *window)
    if out.shape[0] == size:
        return np.ascontiguousarray(out)
    # Faceswap picks the filter from the stored size, not the size of the cut window.
    interpolation = cv2.INTER_CUBIC if stored < size else cv2.INTER_AREA
    return cv2.resize(out, (int(size), int(size)), interpolation=interpolation)
