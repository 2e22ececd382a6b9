"""The training preview image in Faceswap's layout (reference/data.md §8.1).

Columns `A | A > A | A > B | B | B > B | B > A`: each side's original, reconstruction and swap.
The rows are split into two halves placed side by side under a repeated header, so 14 faces per side
give 7 rows x 12 columns. Outside the mask the pixels are tinted with the mask colour at 30 %.
"""

from __future__ import annotations

import pathlib

import cv2
import numpy as np

HEADERS = ("A", "A > A", "A > B", "B", "B > B", "B > A")
MASK_COLOR_BGR = np.array([0.0, 0.0, 1.0], np.float32)  # Faceswap's default #ff0000
MASK_OPACITY = 0.3


def _overlay(images: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return images
    outside = MASK_OPACITY * (1.0 - mask)
    return images * (1.0 - outside) + MASK_COLOR_BGR * outside


def _header(size: int, columns: int) -> np.ndarray:
    height = int(size / 4.5)
    header = np.full((height, size * columns, 3), 255, np.uint8)
    scale = size / 140
    for i in range(columns):
        text = HEADERS[i % len(HEADERS)]
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        origin = (i * size + (size - w) // 2, (height + h) // 2)
        cv2.putText(header, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return header


def render_preview(
    columns: tuple[np.ndarray, ...], masks: tuple[np.ndarray | None, ...] = (None,) * 6
) -> np.ndarray:
    """Builds the preview image.

    Args:
        columns: six float arrays (n, S, S, 3) in [0, 1], BGR, in `HEADERS` order.
        masks: for each column, an optional (n, S, S, 1) mask to tint outside of.

    Returns:
        uint8 BGR image of `header + ceil(n/2)` rows by 12 columns of faces.
    """
    n, size = columns[0].shape[:2]
    tiles = [_overlay(np.asarray(c, np.float32), m) for c, m in zip(columns, masks, strict=True)]
    grid = np.concatenate([np.concatenate(list(t), axis=0) for t in tiles], axis=1)  # n*S x 6S
    half = (n + 1) // 2
    top, bottom = grid[: half * size], grid[half * size:]
    if bottom.shape[0] < top.shape[0]:
        bottom = np.pad(bottom, ((0, top.shape[0] - bottom.shape[0]), (0, 0), (0, 0)))
    body = np.concatenate([top, bottom], axis=1)
    body = np.clip(np.rint(body * 255.0), 0, 255).astype(np.uint8)
    return np.concatenate([_header(size, 12), body], axis=0)


def write_preview(path: pathlib.Path, image: np.ndarray) -> None:
    """Writes the PNG through a temporary file so a viewer never sees half an image."""
    path = pathlib.Path(path)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: could not encode the preview image")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.tobytes())
    tmp.replace(path)
