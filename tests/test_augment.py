"""Faceswap's per-sample augmentation: colour, affine, flip, grid warp and their switches."""

import dataclasses

import cv2
import numpy as np
import pytest

from fsjax.config import AugmentConfig
from fsjax.data import augment

S = 64
STILL = AugmentConfig(
    zoom_amount=0, rotation_range=0, shift_range=0, flip_chance=0, color_lightness=0,
    color_ab=0, color_clahe_chance=0, no_warp=True, no_augment_color=True,
)


def _sample(seed: int = 0, size: int = S) -> dict[str, np.ndarray]:
    """A smooth random image (so interpolation errors stay small) with three distinct masks."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[:size, :size]
    face = ((xx - size * 0.4) ** 2 + (yy - size / 2) ** 2 < (size / 3) ** 2).astype(np.uint8) * 255
    eye = ((xx > size // 8) & (xx < size // 3) & (yy < size // 3)).astype(np.uint8) * 255
    return {"image": image, "mask_face": face, "mask_eye": eye,
            "mask_mouth": image[..., 0].copy(), "landmarks": np.zeros((68, 2), np.float32)}


def test_shapes_and_dtypes():
    out = augment.augment_sample(_sample(), np.random.default_rng(1), AugmentConfig())
    assert set(out) == {"input", "target", "mask_face", "mask_eye", "mask_mouth"}
    assert out["input"].shape == out["target"].shape == (S, S, 3)
    for key in augment.MASK_KEYS:
        assert out[key].shape == (S, S, 1)
    assert all(v.dtype == np.uint8 for v in out.values())
    only_image = augment.augment_sample({"image": _sample()["image"]}, np.random.default_rng(1),
                                        AugmentConfig())
    assert set(only_image) == {"input", "target"}


def test_zero_ranges_are_a_no_op():
    sample = _sample()
    out = augment.augment_sample(sample, np.random.default_rng(3), STILL)
    np.testing.assert_array_equal(out["target"], sample["image"])
    np.testing.assert_array_equal(out["input"], sample["image"])
    np.testing.assert_array_equal(out["mask_face"][..., 0], sample["mask_face"])
    # zero colour amounts and no CLAHE: only OpenCV's 8-bit LAB round trip remains
    colour = dataclasses.replace(STILL, no_augment_color=False)
    out = augment.augment_sample(sample, np.random.default_rng(3), colour)
    lab = cv2.cvtColor(sample["image"], cv2.COLOR_BGR2LAB)
    np.testing.assert_array_equal(out["target"], cv2.cvtColor(lab, cv2.COLOR_LAB2BGR))


def test_determinism_by_rng_seed():
    cfg = AugmentConfig()
    one = augment.augment_sample(_sample(), np.random.default_rng(7), cfg)
    two = augment.augment_sample(_sample(), np.random.default_rng(7), cfg)
    other = augment.augment_sample(_sample(), np.random.default_rng(8), cfg)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    assert not np.array_equal(one["input"], other["input"])


def test_lab_shift_formula_and_direction():
    lab = np.full((2, 2, 3), 100, np.uint8)
    up = augment.shift_lab(lab, np.array([0.3, 0.08, 0.0]))
    down = augment.shift_lab(lab, np.array([-0.3, -0.08, 0.0]))
    # x + (255 - x) r truncated: 146.5 -> 146, 112.4 -> 112; x (1 + r): 70, 92
    np.testing.assert_array_equal(up[0, 0], [146, 112, 100])
    np.testing.assert_array_equal(down[0, 0], [70, 92, 100])
    # a/b scale toward 0/255, not around the neutral 128
    neutral = augment.shift_lab(np.full((1, 1, 3), 128, np.uint8), np.array([0.0, 0.08, -0.08]))
    np.testing.assert_array_equal(neutral[0, 0], [128, 138, 117])
    image = _sample()["image"]
    brighter = augment.color_augment(image, np.array([0.3, 0.0, 0.0], np.float32), None)
    darker = augment.color_augment(image, np.array([-0.3, 0.0, 0.0], np.float32), None)
    assert brighter.mean() > image.mean() + 20
    assert darker.mean() < image.mean() - 20


def test_clahe_changes_lightness_only():
    image = _sample()["image"]
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    out = augment.clahe_lightness(lab, 4)
    np.testing.assert_array_equal(out[..., 1:], lab[..., 1:])
    assert not np.array_equal(out[..., 0], lab[..., 0])


def test_clahe_chance_and_grid_rule():
    def grids(cfg: AugmentConfig, size: int = S) -> list:
        return [augment.draw_augmentation(np.random.default_rng(i), cfg, size).clahe_grid
                for i in range(400)]

    half = grids(AugmentConfig(color_clahe_chance=50))
    share = np.mean([g is not None for g in half])
    assert 0.42 < share < 0.58
    assert {g for g in half if g is not None} == {2, 3, 4, 5, 6}  # base 2 below 256 px
    assert all(g is None for g in grids(AugmentConfig(color_clahe_chance=0)))
    assert {g for g in grids(AugmentConfig(), 512) if g is not None} == {4, 6, 8, 10, 12}
    assert augment.clahe_grid_size(64, 0) == 2 and augment.clahe_grid_size(1024, 8) == 40


def test_draw_ranges():
    cfg = AugmentConfig(rotation_range=10, zoom_amount=5, shift_range=5, flip_chance=50)
    draws = [augment.draw_augmentation(np.random.default_rng(i), cfg, S) for i in range(400)]
    angles = np.array([d.angle for d in draws])
    scales = np.array([d.scale for d in draws])
    shifts = np.stack([d.shift for d in draws])
    assert np.abs(angles).max() <= 10 and np.abs(angles).max() > 9
    assert np.abs(scales - 1).max() <= 0.05 and np.abs(scales - 1).max() > 0.045
    assert np.abs(shifts).max() <= 3.2 and np.abs(shifts).max() > 3.0  # 5 % of 64 px
    assert 0.42 < np.mean([d.flip for d in draws]) < 0.58
    noise = np.stack([d.warp_noise for d in draws])
    assert abs(noise.std() - 5 / 256 * S) < 0.05  # sigma 1.25 px at 64
    jitter = np.stack([d.landmark_noise for d in draws])  # warp-to-landmarks partner noise
    assert abs(jitter.std() - 2 / 256 * S) < 0.01  # sigma 0.5 px at 64
    partners = np.array([d.partner for d in draws])
    assert partners.min() >= 0 and partners.max() < 1 and 0.45 < partners.mean() < 0.55


def test_affine_matches_opencv_and_directions():
    matrix = augment.affine_matrix(S, 7.0, 1.03, np.array([2.0, -3.0]))
    ref = cv2.getRotationMatrix2D(((S - 1) / 2, (S - 1) / 2), 7.0, 1.03)
    ref[:, 2] += [2.0, -3.0]
    np.testing.assert_allclose(matrix, ref, atol=1e-5)
    image = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    # positive angle = counter-clockwise, as np.rot90
    rotated = augment.warp_affine(image, augment.affine_matrix(8, 90.0, 1.0, np.zeros(2)))
    np.testing.assert_array_equal(rotated, np.rot90(image))
    shifted = augment.warp_affine(image, augment.affine_matrix(8, 0.0, 1.0, np.array([2.0, 1.0])))
    np.testing.assert_array_equal(shifted[1:, 2:], image[:-1, :-2])
    np.testing.assert_array_equal(shifted[0, 2:], image[0, :-2])  # replicated border


def test_geometry_and_flip_shared_by_image_and_masks():
    sample = _sample()
    draw = augment.AugmentDraw(
        lab_shift=np.zeros(3, np.float32), clahe_grid=None, angle=8.0, scale=1.04,
        shift=np.array([1.5, -2.0], np.float32), flip=True,
        warp_noise=np.zeros((2, 5, 5), np.float32), partner=0.0,
        landmark_noise=np.zeros((68, 2), np.float32))
    out = augment.apply_augmentation(sample, draw, STILL)
    # mask_mouth was a copy of the blue channel: it must have moved exactly like the image
    np.testing.assert_array_equal(out["mask_mouth"][..., 0], out["target"][..., 0])
    matrix = augment.affine_matrix(S, 8.0, 1.04, draw.shift)
    expected = augment.warp_affine(sample["image"], matrix)[:, ::-1]
    np.testing.assert_array_equal(out["target"], expected)
    expected_face = augment.warp_affine(sample["mask_face"], matrix)[:, ::-1]
    np.testing.assert_array_equal(out["mask_face"][..., 0], expected_face)


def test_flip_mirrors_and_no_flip_switch():
    sample = _sample()
    draw = augment.draw_augmentation(np.random.default_rng(0), STILL, S)
    flipped = augment.apply_augmentation(sample, dataclasses.replace(draw, flip=True), STILL)
    np.testing.assert_array_equal(flipped["target"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(flipped["mask_eye"][..., 0], sample["mask_eye"][:, ::-1])
    no_flip = dataclasses.replace(STILL, no_flip=True)
    kept = augment.apply_augmentation(sample, dataclasses.replace(draw, flip=True), no_flip)
    np.testing.assert_array_equal(kept["target"], sample["image"])
    np.testing.assert_array_equal(kept["mask_eye"][..., 0], sample["mask_eye"])


@pytest.mark.parametrize("size", [64, 128, 256])
def test_grid_warp_without_noise_is_identity_plus_half_pixel(size):
    map_x, map_y = augment.grid_warp_maps(size, np.zeros((2, 5, 5), np.float32))
    j = np.arange(size, dtype=np.float32)
    np.testing.assert_allclose(map_x, np.broadcast_to(j + 0.5, (size, size)), atol=1e-4)
    np.testing.assert_allclose(map_y, np.broadcast_to((j + 0.5)[:, None], (size, size)), atol=1e-4)


def test_grid_warp_exact_identity_at_100_and_odd_sizes_keep_shape():
    map_x, _ = augment.grid_warp_maps(100, np.zeros((2, 5, 5), np.float32))
    np.testing.assert_allclose(map_x[0], np.arange(100), atol=1e-4)
    assert augment.grid_warp_maps(65, np.zeros((2, 5, 5), np.float32))[0].shape == (65, 65)


def test_grid_warp_samples_half_pixel_and_black_border():
    image = np.full((S, S, 3), 200, np.uint8)
    out = augment.grid_warp(image, np.zeros((2, 5, 5), np.float32))
    np.testing.assert_array_equal(out[:-1, :-1], image[:-1, :-1])
    # last row/column read half outside the image: constant-0 border halves them
    assert np.all(np.abs(out[-1, :-1].astype(int) - 100) <= 1)
    noisy = augment.grid_warp(_sample()["image"], np.full((2, 5, 5), 3.0, np.float32))
    assert noisy.shape == (S, S, 3) and noisy.dtype == np.uint8


def test_warp_only_touches_the_input():
    sample = _sample()
    warped = augment.augment_sample(sample, np.random.default_rng(5), AugmentConfig())
    unwarped = augment.augment_sample(sample, np.random.default_rng(5),
                                      AugmentConfig(no_warp=True))
    for key in ("target", *augment.MASK_KEYS):
        np.testing.assert_array_equal(warped[key], unwarped[key])
    np.testing.assert_array_equal(unwarped["input"], unwarped["target"])
    diff = np.abs(warped["input"].astype(int) - warped["target"].astype(int)).mean()
    assert diff > 1.0
    # the input is the target under the drawn grid warp, nothing else
    draw = augment.draw_augmentation(np.random.default_rng(5), AugmentConfig(), S)
    np.testing.assert_array_equal(
        warped["input"], augment.grid_warp(warped["target"], draw.warp_noise))


def test_no_augment_color_switch():
    sample = _sample()
    geometry_only = dataclasses.replace(STILL, no_augment_color=True, color_lightness=75,
                                        color_clahe_chance=75)
    out = augment.augment_sample(sample, np.random.default_rng(2), geometry_only)
    np.testing.assert_array_equal(out["target"], sample["image"])
    coloured = augment.augment_sample(sample, np.random.default_rng(2),
                                      dataclasses.replace(geometry_only, no_augment_color=False))
    assert np.abs(coloured["target"].astype(int) - sample["image"]).mean() > 3
    # colour never touches the masks
    np.testing.assert_array_equal(coloured["mask_mouth"][..., 0], sample["mask_mouth"])
