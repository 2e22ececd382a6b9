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


def scale_image(image: np.ndarray, percent: int) -> np.ndarray:
    """The preview at `percent` of its size (Faceswap's preview scale): area-averaged down,
    cubic up."""
    if percent == 100:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * percent / 100)), max(1, round(height * percent / 100)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if percent < 100
                      else cv2.INTER_CUBIC)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n,S,S,C) -> float32 (n,size,size,C) in [0, 1], box-averaged like INTER_AREA."""
    x = np.asarray(images, np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    factor = x.shape[1] // size
    if factor > 1:
        n, h, w, c = x.shape
        x = x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
    return x


class PreviewWriter:
    """Renders `training_preview.png` for the same preview faces at every save."""

    def __init__(self, batch: dict, spec_model) -> None:
        from fsjax.training.step import make_predict_fn  # jax is only needed once previews are

        size, out = spec_model.input_size, spec_model.output_sizes[-1]
        self._faces = {}
        for s in "ab":
            mask = batch[s].get("mask_face")
            self._faces[s] = {"feed": _resize(batch[s]["input"], size),
                              "target": _resize(batch[s]["target"], out),
                              "mask": None if mask is None else _resize(mask, out)}
        self._predict = make_predict_fn(spec_model.module)

    def render(self, variables) -> np.ndarray:
        """The preview image of the model `variables` (uint8 BGR)."""
        import jax

        a, b = self._faces["a"], self._faces["b"]
        same = jax.device_get(self._predict(variables, a["feed"], b["feed"]))
        # Swapped inputs: out["b"] is decoder_b on A faces (A > B), out["a"] decoder_a on B faces.
        swap = jax.device_get(self._predict(variables, b["feed"], a["feed"]))
        columns = (a["target"], same["a"]["faces"][-1], swap["b"]["faces"][-1],
                   b["target"], same["b"]["faces"][-1], swap["a"]["faces"][-1])
        # Prediction columns are tinted with the learned mask when the model has one.
        masks = (a["mask"], same["a"].get("mask", a["mask"]), swap["b"].get("mask", a["mask"]),
                 b["mask"], same["b"].get("mask", b["mask"]), swap["a"].get("mask", b["mask"]))
        return render_preview(tuple(np.asarray(c, np.float32) for c in columns), masks)
