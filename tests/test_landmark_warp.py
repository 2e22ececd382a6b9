"""Warp-to-landmarks: neighbour selection, the warp's direction, hull pruning, griddata equality."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.interpolate import griddata

from fsjax.data import augment, landmark_warp
from fsjax.data.faces import SampleSpec, load_sample, scan_folder

SIZE = 64
WINDOW = slice(26, 38)  # central pixels that only shifted landmarks' triangles cover (64 px)


@pytest.fixture(scope="module")
def real_landmarks(data_dir) -> np.ndarray:
    """(8, 68, 2) float64 crop-space landmarks of the fixture faces at 64 px."""
    spec = SampleSpec(size=SIZE, mask_type="none", eye_mask=False, mouth_mask=False)
    metas = [meta for side in ("A", "B")
             for meta in scan_folder(data_dir / "faces" / side, min_faces=1)]
    return np.stack([load_sample(meta, spec)["landmarks"] for meta in metas]).astype(np.float64)


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """Random uint8 BGR texture: any shift of it is unambiguous."""
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def synthetic_faces(real: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` plausible faces: real ones with per-point noise and a small random shift."""
    rng = np.random.default_rng(seed)
    base = real[rng.integers(0, real.shape[0], count)]
    shift = rng.uniform(-3.0, 3.0, (count, 1, 2))
    return (base + shift + rng.normal(0.0, 1.0, base.shape)).astype(np.float32)


def brute_force_nearest(queries: np.ndarray, refs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest refs per query by explicit pairwise differences."""
    diff = queries[:, None].astype(np.float64) - refs[None].astype(np.float64)
    dist = (diff ** 2).sum(axis=(2, 3))
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


# --- nearest faces -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_elements", [None, 50])
def test_nearest_faces_matches_brute_force(real_landmarks, monkeypatch, chunk_elements):
    if chunk_elements is not None:  # force many small chunks through the chunked path
        monkeypatch.setattr(landmark_warp, "_CHUNK_ELEMENTS", chunk_elements)
    faces_a = synthetic_faces(real_landmarks, 37, seed=1)
    faces_b = synthetic_faces(real_landmarks, 23, seed=2)
    near_a, near_b = landmark_warp.nearest_faces(faces_a, faces_b, k=10)
    assert near_a.shape == (37, 10) and near_b.shape == (23, 10)
    assert near_a.dtype == np.int64 and near_b.dtype == np.int64
    np.testing.assert_array_equal(near_a, brute_force_nearest(faces_a, faces_b, 10))
    np.testing.assert_array_equal(near_b, brute_force_nearest(faces_b, faces_a, 10))


@pytest.mark.parametrize(("count_b", "expected_k"), [(5, 4), (10, 9), (11, 10)])
def test_nearest_faces_small_side(real_landmarks, count_b, expected_k):
    faces_a = synthetic_faces(real_landmarks, 30, seed=3)
    faces_b = synthetic_faces(real_landmarks, count_b, seed=4)
    near_a, near_b = landmark_warp.nearest_faces(faces_a, faces_b, k=10)
    assert near_a.shape == (30, expected_k) and near_b.shape == (count_b, expected_k)
    np.testing.assert_array_equal(near_a, brute_force_nearest(faces_a, faces_b, expected_k))
    np.testing.assert_array_equal(near_b, brute_force_nearest(faces_b, faces_a, expected_k))
    assert near_a.max() < count_b and near_b.max() < 30


def test_nearest_faces_rejects_bad_input(real_landmarks):
    faces = synthetic_faces(real_landmarks, 5, seed=5)
    with pytest.raises(ValueError, match="at least 2 faces"):
        landmark_warp.nearest_faces(faces, faces[:1])
    with pytest.raises(ValueError, match="at least 2 faces"):
        landmark_warp.nearest_faces(faces[:1], faces)
    with pytest.raises(ValueError, match="k must be"):
        landmark_warp.nearest_faces(faces, faces, k=0)
    with pytest.raises(ValueError, match="shape"):
        landmark_warp.nearest_faces(faces.reshape(5, -1), faces)
    with pytest.raises(ValueError, match="differ"):
        landmark_warp.nearest_faces(faces, faces[:, :51])


def test_choose_partner_draws_from_the_row():
    neighbours = np.array([[4, 7, 9], [1, 2, 3]])
    rng = np.random.default_rng(0)
    picks = {landmark_warp.choose_partner(rng, neighbours, 0) for _ in range(50)}
    assert picks == {4, 7, 9}
    again = [landmark_warp.choose_partner(np.random.default_rng(1), neighbours, 1)
             for _ in range(2)]
    assert again[0] == again[1]


# --- points --------------------------------------------------------------------------------------


def test_move_points_follows_the_image():
    matrix = augment.affine_matrix(SIZE, angle=8.0, scale=1.04, shift=np.array([2.5, -1.5]))
    image = np.zeros((SIZE, SIZE), np.float32)
    image[20, 41] = 1.0  # a dot at (x=41, y=20)
    for flip in (False, True):
        moved = augment.warp_affine(image, matrix)
        moved = moved[:, ::-1] if flip else moved
        ys, xs = np.nonzero(moved)
        centre = np.array([(xs * moved[ys, xs]).sum(), (ys * moved[ys, xs]).sum()])
        centre /= moved[ys, xs].sum()
        point = landmark_warp.move_points(np.array([[41.0, 20.0]]), matrix, flip=flip, size=SIZE)
        np.testing.assert_allclose(point[0], centre, atol=0.05)


def test_jitter_landmarks_scale_and_determinism():
    points = np.zeros((20000, 2))
    noisy = landmark_warp.jitter_landmarks(points, 256, np.random.default_rng(0))
    assert abs(noisy.std() - 2.0) < 0.05 and abs(noisy.mean()) < 0.05
    again = landmark_warp.jitter_landmarks(points, 256, np.random.default_rng(0))
    np.testing.assert_array_equal(noisy, again)


# --- the warp ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compat", [False, True])
def test_identity_when_src_equals_dst(real_landmarks, texture, compat):
    for face in real_landmarks[:4]:
        out = landmark_warp.warp_to_landmarks(texture, face, face, faceswap_compat=compat)
        assert out.dtype == np.uint8 and out.shape == texture.shape
        np.testing.assert_array_equal(out, texture)
        map_x, map_y = landmark_warp.warp_maps(face, face, SIZE, faceswap_compat=compat)
        assert map_x.dtype == np.float32 and map_x.shape == (SIZE, SIZE)
        ys, xs = np.mgrid[0:SIZE, 0:SIZE]
        np.testing.assert_allclose(map_x, xs, atol=1e-4)
        np.testing.assert_allclose(map_y, ys, atol=1e-4)


@pytest.mark.parametrize("face_index", [0, 5])
def test_shift_direction_correct_and_faceswap(real_landmarks, texture, face_index):
    dst = real_landmarks[face_index]
    src = dst + np.array([5.0, 0.0])  # every landmark's source lies 5 px to the right
    win = WINDOW
    right = slice(win.start + 5, win.stop + 5)

    out = landmark_warp.warp_to_landmarks(texture, src, dst)
    np.testing.assert_array_equal(out[win, win], texture[win, right])  # moved horizontally
    assert not np.array_equal(out[win, win], texture[right, win])

    out = landmark_warp.warp_to_landmarks(texture, src, dst, faceswap_compat=True)
    np.testing.assert_array_equal(out[win, win], texture[right, win])  # Faceswap: vertically
    assert not np.array_equal(out[win, win], texture[win, right])


def test_warp_keeps_the_border_and_moves_landmarks(real_landmarks):
    rng = np.random.default_rng(7)
    src = real_landmarks[1]
    dst = landmark_warp.jitter_landmarks(real_landmarks[6], SIZE, rng)
    map_x, map_y = landmark_warp.warp_maps(src, dst, SIZE)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    assert np.isfinite(map_x).all() and np.isfinite(map_y).all()
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):  # anchors pin the frame
        np.testing.assert_allclose(map_x[edge], xs[edge], atol=1e-4)
        np.testing.assert_allclose(map_y[edge], ys[edge], atol=1e-4)
    # Where a kept landmark's dst falls on a pixel (and no other point does) the field there
    # is that landmark's src.
    dst_on_grid = np.round(dst)
    src_pts, dst_pts = landmark_warp.warp_points(src, dst_on_grid, SIZE)
    field = landmark_warp.interpolate_linear(dst_pts, src_pts, SIZE)
    assert field.shape == (SIZE, SIZE, 2) and field.dtype == np.float64
    kept = np.setdiff1d(np.arange(68), landmark_warp.jaw_points_to_drop(src, dst_on_grid))
    _, first, counts = np.unique(dst_on_grid[kept], axis=0, return_index=True,
                                 return_counts=True)
    unique = kept[first[counts == 1]]
    assert len(unique) > 40
    cols, rows = dst_on_grid[unique].astype(int).T
    np.testing.assert_allclose(field[rows, cols], src[unique], atol=1e-6)


def test_interpolation_equals_griddata(real_landmarks):
    # Few cases: scipy's own barycentric transforms (LAPACK) can take ~1 s per call with a
    # multithreaded OpenBLAS on a busy host, which is why the module does not use them.
    rng = np.random.default_rng(11)
    for trial, sigma in enumerate((0.5, 4.0)):
        src = real_landmarks[trial]
        dst = real_landmarks[trial + 3] + rng.normal(0.0, sigma, (68, 2))
        dst += rng.uniform(-6.0, 6.0, 2)  # a shifted partner, so some points move a lot
        src_pts, dst_pts = landmark_warp.warp_points(src, dst, SIZE)
        ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
        expected = griddata(dst_pts, src_pts, (xs, ys), method="linear")
        got = landmark_warp.interpolate_linear(dst_pts, src_pts, SIZE)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_faceswap_compat_matches_the_reference_steps(real_landmarks):
    """Faceswap queries griddata with (row index, column index) as (x, y) and remaps with the
    interpolated y as map_x: reproduce that literally and compare whole images."""
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), (5, 5), 1.5)
    for trial in range(1):  # one case: see test_interpolation_equals_griddata on timing
        src = real_landmarks[trial]
        dst = landmark_warp.jitter_landmarks(real_landmarks[7 - trial], SIZE, rng)
        src_pts, dst_pts = landmark_warp.warp_points(src, dst, SIZE)
        rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
        field = griddata(dst_pts, src_pts, (rows, cols), method="linear").astype(np.float32)
        expected = cv2.remap(image, field[..., 1], field[..., 0], cv2.INTER_LINEAR,
                             dst=image.copy(), borderMode=cv2.BORDER_TRANSPARENT)
        got = landmark_warp.warp_to_landmarks(image, src, dst, faceswap_compat=True)
        np.testing.assert_array_equal(got, expected)
        assert not np.array_equal(got, landmark_warp.warp_to_landmarks(image, src, dst))


def test_closed_form_transforms_match_numpy_and_fill_scipys_cache(real_landmarks):
    rng = np.random.default_rng(5)
    points = landmark_warp.warp_points(real_landmarks[4],
                                       real_landmarks[4] + rng.normal(0.0, 1.0, (68, 2)),
                                       SIZE)[1]
    tri = landmark_warp._triangulate(points)
    assert tri._transform is not None  # the fast path is active with this scipy
    corners = points[tri.simplices]
    cols = np.stack([corners[:, 0] - corners[:, 2], corners[:, 1] - corners[:, 2]], axis=2)
    np.testing.assert_allclose(tri._transform[:, :2], np.linalg.inv(cols), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(tri._transform[:, 2], corners[:, 2])
    flat = np.array([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]])  # degenerate: NaN, as in scipy
    assert np.isnan(landmark_warp._barycentric_transforms(flat)[:, :2]).all()


# --- pruning of jaw points -----------------------------------------------------------------------


def test_jaw_point_inside_hull_is_dropped(real_landmarks):
    face = real_landmarks[0]
    base = set(landmark_warp.jaw_points_to_drop(face, face).tolist())
    assert base <= set(range(18)) and not base & {5, 8, 11}  # chin and cheeks stay normally

    src = face.copy()
    src[8] = face[30] + np.array([0.3, -0.2])  # chin moved next to the nose tip: inside the core
    assert set(landmark_warp.jaw_points_to_drop(src, face).tolist()) == base | {8}
    dst = face.copy()
    dst[5] = face[33] + 0.25  # only dst inside also drops it from both sets
    assert set(landmark_warp.jaw_points_to_drop(face, dst).tolist()) == base | {5}

    src_pts, dst_pts = landmark_warp.warp_points(src, face, SIZE)
    assert len(src_pts) == len(dst_pts) == 68 - len(base) - 1 + 8
    assert not (np.abs(src_pts - src[8]).sum(1) == 0).any()
    assert not (np.abs(dst_pts - face[8]).sum(1) == 0).any()


def test_jaw_point_on_hull_is_dropped_and_later_points_never_are(real_landmarks):
    face = real_landmarks[2]
    core = face[17:].astype(np.int32)
    vertex = cv2.convexHull(core)[0, 0].astype(np.float64)  # a corner of the core hull
    src = face.copy()
    src[11] = vertex  # exactly on the hull: dropped too
    assert 11 in landmark_warp.jaw_points_to_drop(src, face)
    assert landmark_warp.jaw_points_to_drop(src, face).max() < 18


def test_warp_rejects_bad_shapes(real_landmarks, texture):
    face = real_landmarks[0]
    with pytest.raises(ValueError, match="square"):
        landmark_warp.warp_to_landmarks(texture[:, :-1], face, face)
    with pytest.raises(ValueError, match="68, 2"):
        landmark_warp.warp_to_landmarks(texture, face[:51], face)


def test_edge_anchors_layout():
    anchors = landmark_warp.edge_anchors(64)
    assert anchors.shape == (8, 2)
    assert {tuple(p) for p in anchors.astype(int)} == {
        (0, 0), (0, 63), (63, 63), (63, 0), (31, 0), (31, 63), (63, 31), (0, 31)}
