"""Warp-to-landmarks (Faceswap's `-M`, the "dfaker" warp), per sample, on the host.

Instead of the random grid warp, the input image is warped so that its own 68 landmarks move
onto the landmarks of a similar face from the other side (reference/data.md §3.7). That needs:

1. once, before training: `nearest_faces` on every face's crop-space landmarks (both sides);
2. per sample: the sample's own landmarks (`src`) and one randomly chosen neighbour's (`dst`),
   both moved with the sample's affine and flip (`move_points`), then noise on `dst`
   (`jitter_landmarks`), then `warp_to_landmarks` on the target image.

The noise is the caller's job (not drawn inside `warp_to_landmarks`) so that the warp itself is
a pure function and every random number of a sample can be drawn up front, in a fixed order.

The piecewise-linear map is the one `scipy.interpolate.griddata(..., "linear")` gives, built on
a Delaunay triangulation whose barycentric transforms are computed in closed form rather than
by scipy's per-triangle LAPACK calls (see `_triangulate`): about 1 ms per 64 px face.

Differences from Faceswap:
- Faceswap feeds the grid's first (row) axis as x, so its displacement field is mirrored about
  the image diagonal: content that should move sideways moves up or down. By default the warp
  here is the intended one; `faceswap_compat=True` reproduces Faceswap's mapping.
- Faceswap's `cv2.remap(..., BORDER_TRANSPARENT)` is given no output array, so pixels whose
  source falls outside the image keep whatever memory OpenCV allocated. Here they keep the input
  pixel (the remap writes into a copy of the input), in both modes.
- Faceswap crashes when the smaller side has exactly `k` faces; see `nearest_faces`.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import Delaunay

NUM_CHOICES = 10  # Faceswap's neighbours cached per face
JITTER_SIGMA = 2.0 / 256.0  # std of the noise on dst, as a fraction of the size
CORE_START = 17  # landmarks from here on (brows, eyes, nose, mouth) form the core hull
OUTER_END = 18  # landmarks before this (jaw and first brow point) may be dropped
_CHUNK_ELEMENTS = 1 << 22  # float64 distances held at once in `nearest_faces` (32 MiB)


# --- nearest faces -------------------------------------------------------------------------------


def _flatten_sides(
    landmarks_a: np.ndarray, landmarks_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two (N, P, 2) landmark sets and return them as centred float64 (N, 2P) rows."""
    arrays = []
    for name, lms in (("landmarks_a", landmarks_a), ("landmarks_b", landmarks_b)):
        lms = np.asarray(lms)
        if lms.ndim != 3 or lms.shape[2] != 2:
            raise ValueError(f"{name} must have shape (N, 68, 2), got {lms.shape}")
        if lms.shape[0] < 2:
            raise ValueError(f"warp to landmarks needs at least 2 faces per side; {name} has "
                             f"{lms.shape[0]}")
        arrays.append(lms.reshape(lms.shape[0], -1).astype(np.float64))
    flat_a, flat_b = arrays
    if flat_a.shape[1] != flat_b.shape[1]:
        raise ValueError(f"landmark counts differ between sides: {flat_a.shape[1] // 2} vs "
                         f"{flat_b.shape[1] // 2}")
    # Distances do not change under a common shift; centring keeps the |a|^2 + |b|^2 - 2ab
    # expansion from cancelling large numbers.
    centre = np.concatenate([flat_a, flat_b]).mean(axis=0)
    return flat_a - centre, flat_b - centre


def _k_nearest(queries: np.ndarray, refs: np.ndarray, k: int) -> np.ndarray:
    """(Nq, k) indices of the k nearest `refs` rows for each query row, nearest first.

    Works through the queries in chunks so that at most `_CHUNK_ELEMENTS` distances exist at
    once (10k x 10k faces stay bounded in memory). Ties sort by the lower index.
    """
    ref_sq = np.einsum("ij,ij->i", refs, refs)
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    chunk = max(1, _CHUNK_ELEMENTS // refs.shape[0])
    for start in range(0, queries.shape[0], chunk):
        rows = queries[start:start + chunk]
        dist = rows @ refs.T  # in place from here on, to hold one chunk-sized array
        dist *= -2.0
        dist += ref_sq[None]
        dist += np.einsum("ij,ij->i", rows, rows)[:, None]
        np.maximum(dist, 0.0, out=dist)
        cand = np.argpartition(dist, k - 1, axis=1)[:, :k]
        cand_dist = np.take_along_axis(dist, cand, axis=1)
        order = np.lexsort((cand, cand_dist), axis=1)
        out[start:start + chunk] = np.take_along_axis(cand, order, axis=1)
    return out


def nearest_faces(
    landmarks_a: np.ndarray, landmarks_b: np.ndarray, k: int = NUM_CHOICES
) -> tuple[np.ndarray, np.ndarray]:
    """For each A face its k nearest B faces, and for each B face its k nearest A faces.

    Distance is the squared Euclidean distance of the flattened crop-space landmarks, as in
    Faceswap's LandmarkMatcher. Each warp then picks one of these neighbours at random, so the
    target shape stays plausible for the face being warped.

    Like Faceswap, when k is not below the smaller side's face count, both directions use
    min(count) - 1 neighbours (Faceswap only does so when k exceeds the count, and crashes when
    they are equal). Faceswap leaves each row unordered; here rows are sorted nearest first.

    Args:
        landmarks_a: (Na, 68, 2) crop-space landmarks of side A, at process size.
        landmarks_b: (Nb, 68, 2) the same for side B.
        k: neighbours wanted per face (Faceswap: 10).

    Returns:
        (Na, k') int64 indices into B and (Nb, k') int64 indices into A, k' = the k used.

    Raises:
        ValueError: bad shapes, k < 1, or a side with fewer than 2 faces.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    flat_a, flat_b = _flatten_sides(landmarks_a, landmarks_b)
    fewest = min(flat_a.shape[0], flat_b.shape[0])
    k = int(k) if k < fewest else fewest - 1
    return _k_nearest(flat_a, flat_b, k), _k_nearest(flat_b, flat_a, k)


def choose_partner(rng: np.random.Generator, neighbours: np.ndarray, index: int) -> int:
    """Draw uniformly one of face `index`'s cached neighbours (an index into the other side)."""
    row = neighbours[index]
    return int(row[rng.integers(row.shape[0])])


# --- per-sample points ---------------------------------------------------------------------------


def move_points(points: np.ndarray, matrix: np.ndarray, *, flip: bool, size: int) -> np.ndarray:
    """Move (N, 2) points with a sample's (2, 3) affine, then mirror x if the sample is flipped.

    Both the sample's own landmarks and its partner's go through this with the sample's own
    transform, so that they stay in the coordinates of the augmented image.
    """
    pts = np.asarray(points, dtype=np.float64)
    mat = np.asarray(matrix, dtype=np.float64)
    moved = pts @ mat[:, :2].T + mat[:, 2]
    if flip:
        moved[:, 0] = (size - 1) - moved[:, 0]
    return moved


def jitter_landmarks(points: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, 2/256 * size) px to every coordinate (Faceswap's noise on the partner's points).

    The noise keeps the warp from being the same each time a pair of faces meets.
    """
    pts = np.asarray(points, dtype=np.float64)
    return pts + rng.normal(0.0, JITTER_SIGMA * size, size=pts.shape)


# --- the warp ------------------------------------------------------------------------------------


def edge_anchors(size: int) -> np.ndarray:
    """(8, 2) fixed points on the image border (corners and near-middles of the edges).

    They pin the border in place and make the triangulation cover the whole image.
    """
    last, half = size - 1, size // 2 - 1
    return np.array([(0, 0), (0, last), (last, last), (last, 0),
                     (half, 0), (half, last), (last, half), (0, half)], dtype=np.float64)


def jaw_points_to_drop(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Indices among 0..17 whose src or dst point lies inside or on the core hull.

    The core hull is the convex hull of src[17:] and dst[17:] truncated to int32, as in
    Faceswap. A jaw point inside the face core would fold the warp over itself, so it is
    left out of both point sets.

    Returns:
        Sorted int64 indices.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    core = np.concatenate([src[CORE_START:], dst[CORE_START:]]).astype(np.int32)
    hull = cv2.convexHull(core)
    drop = [idx for idx in range(OUTER_END)
            if any(cv2.pointPolygonTest(hull, (float(pts[idx, 0]), float(pts[idx, 1])), False)
                   >= 0 for pts in (src, dst))]
    return np.array(drop, dtype=np.int64)


def warp_points(src: np.ndarray, dst: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The (M, 2) src and dst control points of the warp: landmarks minus dropped, plus anchors."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    keep = np.setdiff1d(np.arange(src.shape[0]), jaw_points_to_drop(src, dst))
    anchors = edge_anchors(size)
    return (np.concatenate([src[keep], anchors]), np.concatenate([dst[keep], anchors]))


def _barycentric_transforms(corners: np.ndarray) -> np.ndarray:
    """(T, 3, 2) barycentric transforms of triangles (T, 3, 2), laid out as `Delaunay.transform`.

    Rows 0-1: inverse of the 2x2 matrix whose columns are vertices 0 and 1 minus vertex 2;
    row 2: vertex 2. Ill-conditioned triangles (reciprocal 1-norm condition below machine
    epsilon) get NaN, as scipy gives them.
    """
    col0 = corners[:, 0] - corners[:, 2]
    col1 = corners[:, 1] - corners[:, 2]
    det = col0[:, 0] * col1[:, 1] - col1[:, 0] * col0[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.stack([np.stack([col1[:, 1], -col1[:, 0]], axis=1),
                        np.stack([-col0[:, 1], col0[:, 0]], axis=1)], axis=1) / det[:, None, None]
        norm = np.maximum(np.abs(col0).sum(axis=1), np.abs(col1).sum(axis=1))
        inv_norm = np.abs(inv).sum(axis=1).max(axis=1)
        well_posed = 1.0 / (norm * inv_norm) >= np.finfo(np.float64).eps
    inv[~well_posed] = np.nan
    return np.ascontiguousarray(np.concatenate([inv, corners[:, 2:3]], axis=1))


def _triangulate(points: np.ndarray) -> Delaunay:
    """Delaunay triangulation of (N, 2) points with its barycentric transforms filled in.

    scipy computes `Delaunay.transform` with a LAPACK call per triangle; with a multithreaded
    OpenBLAS on a busy host that costs 5-10x the whole interpolation. The closed-form 2x2
    inverses are put in scipy's (private) cache when it has the expected empty slot; otherwise
    scipy computes them itself, which is only slower. Either way griddata's numbers result.
    """
    tri = Delaunay(points)
    if getattr(tri, "_transform", False) is None:
        tri._transform = _barycentric_transforms(points[tri.simplices])
    return tri


def interpolate_linear(points: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Piecewise-linear interpolation of `values` at every integer (x, y) of a size x size grid.

    Equals `griddata(points, values, grid, "linear")` (NaN outside the hull of `points`) on the
    same triangulation, with the grid laid out as an image. (Rasterising the triangles with
    OpenCV and fixing up edge pixels in numpy was tried: slower than scipy's compiled walk.)

    Returns:
        (size, size, D) float64 indexed [y, x].
    """
    tri = _triangulate(np.ascontiguousarray(points, dtype=np.float64))
    interp = LinearNDInterpolator(tri, np.asarray(values, dtype=np.float64))
    axis = np.arange(size, dtype=np.float64)
    return interp(axis[None, :], axis[:, None])


def warp_maps(
    src: np.ndarray, dst: np.ndarray, size: int, *, faceswap_compat: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) float32 `cv2.remap` maps sending each dst landmark's pixel to its src landmark.

    With `faceswap_compat` the field is mirrored about the diagonal, as Faceswap's is
    (its grid rows are fed as x).
    """
    src_pts, dst_pts = warp_points(src, dst, size)
    field = interpolate_linear(dst_pts, src_pts, size)  # [y, x] -> source (x, y)
    if faceswap_compat:
        return (np.ascontiguousarray(field[..., 1].T, dtype=np.float32),
                np.ascontiguousarray(field[..., 0].T, dtype=np.float32))
    return (np.ascontiguousarray(field[..., 0], dtype=np.float32),
            np.ascontiguousarray(field[..., 1], dtype=np.float32))


def warp_to_landmarks(
    image: np.ndarray, src: np.ndarray, dst: np.ndarray, *, faceswap_compat: bool = False
) -> np.ndarray:
    """Warp `image` so that the content at its landmarks `src` moves to `dst`.

    Args:
        image: (S, S, C) uint8, already colour-augmented, transformed and flipped.
        src: (68, 2) the sample's own crop-space landmarks, moved like the image.
        dst: (68, 2) the partner face's landmarks, moved with the sample's transform and with
            the noise already added (`move_points`, then `jitter_landmarks`).
        faceswap_compat: reproduce Faceswap's diagonally mirrored displacement field.

    Returns:
        The warped (S, S, C) uint8 image. OpenCV's transparent border leaves a pixel whose
        source lies outside the image as it was in the input, and blends a pixel whose bilinear
        footprint is partly outside with the input's value at that pixel.
    """
    image = np.asarray(image)
    size = image.shape[0]
    if image.ndim not in (2, 3) or image.shape[1] != size:
        raise ValueError(f"image must be square (S, S[, C]), got {image.shape}")
    for name, pts in (("src", src), ("dst", dst)):
        if np.shape(pts) != (68, 2):
            raise ValueError(f"{name} must have shape (68, 2), got {np.shape(pts)}")
    map_x, map_y = warp_maps(src, dst, size, faceswap_compat=faceswap_compat)
    image = np.ascontiguousarray(image)
    out = image.copy()
    cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, dst=out,
              borderMode=cv2.BORDER_TRANSPARENT)
    return out
