"""Faceswap's training augmentation, per sample, on the host (numpy + OpenCV, uint8 BGR).

Order (reference/data.md §3.1): colour on the image only, then one random affine on the image and
its masks, then a random horizontal flip of both; the result is the *target*. The *input* is the
target after a random grid warp. Input and target therefore share colour, geometry and flip.

All randomness comes from the `np.random.Generator` passed in (in the pipeline: the one grain
seeds from the pipeline seed and the sample's position). Every sample draws the same random
numbers in the same order whatever the switches say, so turning one augmentation off never
changes what the others do.

Differences from Faceswap, which augments a whole batch at once:
- Faceswap skips CLAHE for the whole batch when the only image drawn for it is index 0 (its
  `np.any(indices)` test); here each sample decides alone, so that quirk does not exist.
- Faceswap warps the image and masks as one (S, S, 3 + M) array. OpenCV's bilinear path for more
  than 4 channels is off by up to ~5 grey levels from exact bilinear, so the image and the masks
  are warped in separate calls here; pixels may differ from Faceswap's by a few levels.
- A flip happens when `rand < chance` (Faceswap: `<=`), so a chance of 0 really never flips.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from fsjax.config import AugmentConfig
from fsjax.data import landmark_warp

MASK_KEYS = ("mask_face", "mask_eye", "mask_mouth")
CLAHE_CLIP_LIMIT = 2.0
WARP_GRID = 5  # control points per axis of the random grid warp
WARP_SIGMA = 5.0 / 256.0  # grid noise, as a fraction of the size


@dataclasses.dataclass(frozen=True)
class AugmentDraw:
    """The random numbers of one sample, drawn before anything is applied."""

    lab_shift: np.ndarray
    """(3,) float32 relative L, a, b shifts in (-amount, amount)."""
    clahe_grid: int | None
    """CLAHE tile grid size, or None for no CLAHE."""
    angle: float
    """Rotation in degrees, counter-clockwise."""
    scale: float
    """Zoom factor about the centre."""
    shift: np.ndarray
    """(2,) float32 translation (x, y) in pixels."""
    flip: bool
    """Mirror horizontally."""
    warp_noise: np.ndarray
    """(2, 5, 5) float32 offsets in pixels of the x and y warp control grids."""
    partner: float
    """Uniform in [0, 1): which of its nearest other-side faces warp-to-landmarks uses."""
    landmark_noise: np.ndarray
    """(68, 2) float32 pixel noise on the partner's landmarks (warp-to-landmarks)."""


def clahe_grid_size(size: int, multiplier: int) -> int:
    """CLAHE tile grid for an image of `size`: a base grid grown by `multiplier` half-bases.

    The base grows with the image so tiles keep a similar pixel size (2 up to 255 px, 4 at 512).
    """
    base = max(2, size // 128)
    return multiplier * (base // 2) + base


def draw_augmentation(rng: np.random.Generator, cfg: AugmentConfig, size: int) -> AugmentDraw:
    """Draw every random number one sample needs, in a fixed order, from `rng`.

    Ranges are Faceswap's: lightness/ab in percent, rotation in degrees, zoom and shift in percent
    (shift of the size), flip and CLAHE chances in percent.
    """
    lab_amount = np.array(
        [cfg.color_lightness, cfg.color_ab, cfg.color_ab], dtype=np.float32) / 100.0
    lab_shift = rng.uniform(-lab_amount, lab_amount).astype(np.float32)
    clahe_on = rng.random() < cfg.color_clahe_chance / 100.0
    multiplier = int(rng.integers(0, cfg.color_clahe_max_size + 1))
    angle = float(rng.uniform(-cfg.rotation_range, cfg.rotation_range))
    zoom = cfg.zoom_amount / 100.0
    scale = float(rng.uniform(1.0 - zoom, 1.0 + zoom))
    shift_px = cfg.shift_range / 100.0 * size
    shift = rng.uniform(-shift_px, shift_px, size=2).astype(np.float32)
    flip = bool(rng.random() < cfg.flip_chance / 100.0)
    noise = rng.normal(0.0, WARP_SIGMA * size, size=(2, WARP_GRID, WARP_GRID))
    partner = float(rng.random())
    landmark_noise = rng.normal(0.0, landmark_warp.JITTER_SIGMA * size, size=(68, 2))
    return AugmentDraw(
        lab_shift=lab_shift,
        clahe_grid=clahe_grid_size(size, multiplier) if clahe_on else None,
        angle=angle,
        scale=scale,
        shift=shift,
        flip=flip,
        warp_noise=noise.astype(np.float32),
        partner=partner,
        landmark_noise=landmark_noise.astype(np.float32),
    )


# --- colour --------------------------------------------------------------------------------------


def shift_lab(lab: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Move each 8-bit L*a*b* channel toward 255 (shift >= 0) or toward 0 (shift < 0).

    A positive shift r maps x to x + (255 - x) r, a negative one to x (1 + r); the result is
    truncated back to uint8 as Faceswap's in-place assignment does. Note a and b are scaled toward
    0/255, not around their neutral 128.
    """
    # Every uint8 value maps the same way, so evaluate the float32 formula once per level and
    # look it up (bit-identical to evaluating it per pixel, and ~20x faster at 64 px).
    x = np.arange(256, dtype=np.float32)[:, None]
    r = np.asarray(shift, dtype=np.float32).reshape(1, 3)
    table = np.where(r >= 0, x + (255.0 - x) * r, x * (1.0 + r)).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(lab), table.reshape(256, 1, 3))


def clahe_lightness(lab: np.ndarray, grid: int) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of the L channel (clip limit 2.0)."""
    out = lab.copy()
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=(grid, grid))
    out[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return out


def color_augment(image: np.ndarray, lab_shift: np.ndarray, clahe_grid: int | None) -> np.ndarray:
    """Colour-augment uint8 BGR in OpenCV's 8-bit L*a*b*: channel shifts, then CLAHE on L."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    lab = shift_lab(lab, lab_shift)
    if clahe_grid is not None:
        lab = clahe_lightness(lab, clahe_grid)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


# --- geometry ------------------------------------------------------------------------------------


def affine_matrix(size: int, angle: float, scale: float, shift: np.ndarray) -> np.ndarray:
    """(2, 3) float32 rotation+zoom about the pixel centre ((S-1)/2), plus a translation.

    Same matrix as `cv2.getRotationMatrix2D` (positive angle = counter-clockwise on screen) with
    `shift` added to its last column; it maps source to destination pixel coordinates.
    """
    theta = np.deg2rad(angle)
    a, b = scale * np.cos(theta), scale * np.sin(theta)
    c = (size - 1) / 2.0
    return np.array(
        [[a, b, (1.0 - a) * c - b * c + shift[0]],
         [-b, a, b * c + (1.0 - a) * c + shift[1]]],
        dtype=np.float32,
    )


def warp_affine(array: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply `matrix` with bilinear sampling and replicated borders (up to 4 channels per call).

    Replicating the border avoids black wedges in the target that the model would have to learn.
    """
    size = array.shape[1], array.shape[0]
    out = cv2.warpAffine(array, matrix, size, flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(array.shape)


def grid_warp_maps(size: int, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense (S, S) float32 remap coordinates from a noisy 5x5 control grid.

    The control grid spans 0..S (not S-1); it is upsampled bilinearly to int(1.25 S) and the
    centre is cut out from P//10. With zero noise this is the identity plus 0.5 px whenever S is a
    multiple of 8, as in Faceswap. Faceswap's end index (-P//10) gives the wrong size for some S
    (e.g. 65); taking S pixels from the same start agrees with it everywhere it works.
    """
    pad = int(1.25 * size)
    start = pad // 10
    ramp = np.linspace(0.0, size, WARP_GRID, dtype=np.float32)
    base_x = np.broadcast_to(ramp, (WARP_GRID, WARP_GRID))
    maps = []
    for base, offsets in zip((base_x, base_x.T), noise, strict=True):
        dense = cv2.resize((base + offsets).astype(np.float32), (pad, pad),
                           interpolation=cv2.INTER_LINEAR)
        maps.append(np.ascontiguousarray(dense[start:start + size, start:start + size]))
    return maps[0], maps[1]


def grid_warp(image: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Randomly warp `image` by the grid `noise`; pixels sampled outside become black."""
    map_x, map_y = grid_warp_maps(image.shape[0], noise)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)


# --- one sample ----------------------------------------------------------------------------------


def apply_augmentation(
    sample: dict[str, np.ndarray], draw: AugmentDraw, cfg: AugmentConfig,
    partner_landmarks: np.ndarray | None = None, faceswap_compat: bool = False,
) -> dict[str, np.ndarray]:
    """Apply already-drawn augmentation to a loaded sample; see `augment_sample`."""
    image = np.asarray(sample["image"])
    size = image.shape[0]
    mask_keys = [key for key in MASK_KEYS if key in sample]
    masks = None
    if mask_keys:  # at most 3, so one OpenCV call warps them all (see the module docstring)
        masks = np.stack([np.asarray(sample[key]).reshape(size, size) for key in mask_keys], -1)

    if not cfg.no_augment_color:
        image = color_augment(image, draw.lab_shift, draw.clahe_grid)

    matrix = affine_matrix(size, draw.angle, draw.scale, draw.shift)
    image = warp_affine(image, matrix)
    if masks is not None:
        masks = warp_affine(masks, matrix)

    if draw.flip and not cfg.no_flip:
        image = image[:, ::-1]
        masks = masks[:, ::-1] if masks is not None else None

    target = np.ascontiguousarray(image)
    if cfg.no_warp:
        warped = target.copy()
    elif cfg.warp_to_landmarks:
        # Both point sets move with the sample's own geometry, then the partner's get noise.
        flip = draw.flip and not cfg.no_flip
        src = landmark_warp.move_points(sample["landmarks"], matrix, flip=flip, size=size)
        dst = landmark_warp.move_points(partner_landmarks, matrix, flip=flip, size=size)
        warped = landmark_warp.warp_to_landmarks(target, src, dst + draw.landmark_noise,
                                                 faceswap_compat=faceswap_compat)
    else:
        warped = grid_warp(target, draw.warp_noise)
    out = {"input": warped, "target": target}
    for i, key in enumerate(mask_keys):
        out[key] = np.ascontiguousarray(masks[..., i:i + 1])
    return out


def augment_sample(
    sample: dict[str, np.ndarray], rng: np.random.Generator, cfg: AugmentConfig,
    partner_landmarks: np.ndarray | None = None, faceswap_compat: bool = False,
) -> dict[str, np.ndarray]:
    """Augment one loaded training sample as Faceswap's collator does.

    Args:
        sample: "image" uint8 (S, S, 3) BGR and optional "mask_face" / "mask_eye" /
            "mask_mouth" uint8 (S, S) or (S, S, 1); other keys (landmarks) are ignored.
        rng: the only source of randomness.
        cfg: ranges and the no_augment_color / no_warp / no_flip / warp_to_landmarks switches.
        partner_landmarks: with warp_to_landmarks, the crop-space landmarks of the other-side
            face to warp towards (the caller picks it with `draw.partner`); "landmarks" must be
            in `sample`.
        faceswap_compat: reproduce Faceswap's transposed warp-to-landmarks field.

    Returns:
        "input" (warped) and "target" (not warped) uint8 (S, S, 3) BGR, and each mask present
        in `sample` as uint8 (S, S, 1), transformed and flipped with the target.
    """
    draw = draw_augmentation(rng, cfg, int(np.asarray(sample["image"]).shape[0]))
    return apply_augmentation(sample, draw, cfg, partner_landmarks, faceswap_compat)
