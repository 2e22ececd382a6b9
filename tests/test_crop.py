"""Crop geometry, pose and landmark masks against Faceswap's own TrainSet output (crops.npz).

tests/data/crops_subset.npz holds, for the first 4 faces of faces/A: crop windows, crop-space
landmarks and matrices for every tag; pixels and masks for faces 0-1 at the 64 px tags plus the
two bicubic (upscaling) 128 px tags. Everything below matched Faceswap exactly when written.
"""

import cv2
import numpy as np
import pytest

from fsjax.data import align, masks
from fsjax.data.header import decode_image

TAGS = ["legacy_62.5_64", "legacy_62.5_128", "legacy_87.5_64", "legacy_87.5_128",
        "legacy_100_64", "legacy_100_128", "face_62.5_64", "face_62.5_128", "face_87.5_64",
        "face_87.5_128", "face_100_64", "face_100_128", "head_62.5_64", "head_62.5_128",
        "head_87.5_64", "head_87.5_128", "head_100_64", "head_100_128", "face_100_64_voff10"]
PIXEL_TAGS = [t for t in TAGS if "_64" in t] + ["legacy_62.5_128", "face_62.5_128"]
MASKS = {"extended": lambda lms, s: masks.extended_mask(lms, s),
         "components": lambda lms, s: masks.components_mask(lms, s),
         "eye": masks.eye_mask, "mouth": masks.mouth_mask}


@pytest.fixture(scope="module")
def ref(data_dir):
    return dict(np.load(data_dir / "crops_subset.npz"))


@pytest.fixture(scope="module")
def pngs(data_dir):
    return [decode_image(data_dir / "faces" / "A" / f"synth_A_000{i}_0.png") for i in range(4)]


def _crop(ref, tag, face, faceswaps_pose=False):
    coverage, size, voff = ref[f"{tag}.params"]
    offsets = None
    if faceswaps_pose:
        offsets = {"legacy": np.zeros((2,), np.float32),
                   **{name: ref[f"pose_offset.{name}"][face] for name in ("face", "head")}}
    return align.train_crop(ref["src.landmarks_xy"][face], 256, tag.split("_")[0], coverage,
                            voff, int(size), offsets=offsets)


def test_pose_offsets_match_faceswap(ref):
    for face in range(4):
        offsets = align.pose_offsets(ref["src.landmarks_xy"][face])
        assert set(offsets) == {"legacy", "face", "head"}
        np.testing.assert_array_equal(offsets["legacy"], [0, 0])
        for name in ("face", "head"):
            assert offsets[name].dtype == np.float32
            np.testing.assert_allclose(offsets[name], ref[f"pose_offset.{name}"][face],
                                       rtol=0, atol=1e-6)


@pytest.mark.parametrize("tag", TAGS)
def test_window_landmarks_and_matrix(ref, tag):
    for face in range(4):
        crop = _crop(ref, tag, face)
        left, top, window, padding = ref[f"{tag}.window"][face]
        assert (crop.left, crop.top, crop.window, crop.padding) == (left, top, window, padding)
        assert crop.landmarks.dtype == np.float32
        np.testing.assert_allclose(crop.landmarks, ref[f"{tag}.landmarks"][face], rtol=0,
                                   atol=1e-4)
        expected = ref[f"{tag}.adjusted_matrix"][face].copy()
        # Faceswap's adjusted_matrix excludes the vertical offset; ours includes it.
        scale = crop.size - 2 * crop.padding
        expected[1, 2] += ref[f"{tag}.params"][2] / 100 * scale
        # From Faceswap's own pose offsets the matrix is Faceswap's to float64 rounding.
        exact = _crop(ref, tag, face, faceswaps_pose=True)
        np.testing.assert_allclose(exact.matrix, expected, rtol=0, atol=1e-9)
        # From ours, solvePnP's float32 result may differ by an ulp or two on another CPU
        # (test_pose_offsets_match_faceswap bounds it at 1e-6); the matrix scales it by `scale`.
        np.testing.assert_allclose(crop.matrix, expected, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("tag", PIXEL_TAGS)
def test_crop_pixels_match_faceswap(ref, pngs, tag):
    for face in ref["pixel_faces"]:
        image = align.crop_face(pngs[face], _crop(ref, tag, face))
        assert image.dtype == np.uint8 and image.flags.c_contiguous
        np.testing.assert_array_equal(image, ref[f"{tag}.image"][face])


@pytest.mark.parametrize("tag", PIXEL_TAGS)
def test_landmark_masks_match_faceswap(ref, tag):
    size = int(ref[f"{tag}.params"][1])
    for face in ref["pixel_faces"]:
        lms = _crop(ref, tag, face).landmarks
        for name, func in MASKS.items():
            mask = func(lms, size)
            assert mask.shape == (size, size) and mask.dtype == np.uint8
            np.testing.assert_array_equal(mask, ref[f"{tag}.mask_{name}"][face], err_msg=name)


def test_crop_zero_pads_outside_png():
    png = np.full((64, 64, 3), 200, np.uint8)
    crop = align.TrainCrop(left=-16, top=48, window=32, size=32, padding=0,
                           matrix=np.eye(2, 3), landmarks=np.zeros((68, 2), np.float32))
    out = align.crop_face(png, crop)
    assert (out[:16, 16:] == 200).all()
    assert (out[:, :16] == 0).all() and (out[16:] == 0).all()
    gone = align.TrainCrop(left=100, top=0, window=32, size=16, padding=0,
                           matrix=np.eye(2, 3), landmarks=np.zeros((68, 2), np.float32))
    assert not align.crop_face(png, gone).any()


def test_mask_dilation(ref):
    lms = _crop(ref, "face_100_64", 0).landmarks
    plain = masks.extended_mask(lms, 64)
    grown = masks.extended_mask(lms, 64, dilation=5.0)
    shrunk = masks.extended_mask(lms, 64, dilation=-5.0)
    assert (grown >= plain).all() and (shrunk <= plain).all()
    assert (grown > 0).sum() > (plain > 0).sum() + 50 > (shrunk > 0).sum() + 100
    # 1 % of 64 px rounds to a 1 px kernel: no change (Faceswap would crash on a 0 px one)
    np.testing.assert_array_equal(masks.components_mask(lms, 64, dilation=1.0),
                                  masks.components_mask(lms, 64))
    with pytest.raises(ValueError, match="unknown landmark mask type"):
        masks.face_mask("bisenet-fp_face", lms, 64)


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 1, (51, 2))
    angle, scale, shift = 0.4, 2.5, np.array([7.0, -3.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    mat = align.umeyama(src, dst)
    np.testing.assert_allclose(mat[:2, :2], scale * rot, atol=1e-12)
    np.testing.assert_allclose(mat[:2, 2], shift, atol=1e-12)
    np.testing.assert_allclose(mat[2], [0, 0, 1])
    assert np.isnan(align.umeyama(np.zeros((5, 2)), np.zeros((5, 2)))).all()


def test_extract_face_inverts_a_frame_placement(ref, pngs):
    """Put a real face into a bigger frame with a similarity, extract it again."""
    face = pngs[0]
    head = align.train_crop(ref["src.landmarks_xy"][0], 256, "head", 100, 0, 256)
    np.testing.assert_allclose(head.landmarks[30], [127.9, 154.2], atol=0.5)  # nose tip
    # PNG -> frame: rotate 12 degrees about the PNG centre, scale 1.3, move into a 512 frame.
    place = cv2.getRotationMatrix2D((128.0, 128.0), 12.0, 1.3)
    place[:, 2] += [128.0, 100.0]
    frame = cv2.warpAffine(face, place, (512, 512), flags=cv2.INTER_CUBIC)
    frame_lms = align.transform_points(head.landmarks, place)
    out = align.extract_face(frame, frame_lms, 256)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    inner = (slice(40, 216), slice(40, 216))  # the frame holds all of it here
    diff = np.abs(out[inner].astype(int) - face[inner])
    assert diff.mean() < 0.4, diff.mean()  # measured 0.21 (two resamplings)
    assert np.percentile(diff, 99) <= 5  # measured 3
    # With the PNG itself as the frame the warp is the identity to ~1e-6: same pixels.
    np.testing.assert_array_equal(align.extract_face(face, head.landmarks, 256), face)
