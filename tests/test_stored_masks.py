"""Stored (neural-network) header masks: safe decoding, Faceswap's processing steps, alignment.

The alignment tests build a face whose stored mask marks exactly a known box of the head-centred
PNG, then check that the processed mask covers the same pixels as the image crop of that box.
"""

import itertools
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest

from fsjax.data import align, stored_masks
from fsjax.data.header import FaceFileError, encode_face_png, read_header

PNG = 256  # side of the fixture faces
RATIO = align.EXTRACT_RATIOS


@pytest.fixture(scope="module")
def face(data_dir):
    return read_header(data_dir / "faces" / "A" / "synth_A_0000_0.png")


def _entry(mask: np.ndarray, centering: str = "face") -> dict:
    return {"mask": zlib.compress(np.ascontiguousarray(mask).tobytes()),
            "affine_matrix": np.eye(3, dtype=np.float32), "interpolator": 1,
            "stored_size": int(mask.shape[0]), "stored_centering": centering}


def _plain(mask, **kw):
    """Process with no geometry change: same centering, full coverage, no offset, same size."""
    args = dict(stored_centering="face", centering="face", coverage=100.0, vertical_offset=0.0,
                offsets=_offsets(), size=mask.shape[0], dilation=0.0, blur_kernel=0,
                threshold=0.0)
    args.update(kw)
    return stored_masks.process_stored_mask(mask, **args)


def _offsets(head=(0.04, -0.3), face=(0.03, -0.16)) -> dict:
    # A slightly turned head, so that x offsets are exercised as well as y.
    return {"legacy": np.zeros(2, np.float32), "head": np.array(head, np.float32),
            "face": np.array(face, np.float32)}


# ------------------------------------------------------------------------------------ decoding

def test_names_and_centerings():
    assert stored_masks.STORED_MASK_TYPES == (
        "bisenet-fp_face", "bisenet-fp_head", "custom_face", "custom_head", "unet-dfl",
        "vgg-clear", "vgg-obstructed")
    assert dict(stored_masks.MASK_CENTERINGS) == {
        "bisenet-fp_face": "face", "bisenet-fp_head": "head", "custom_face": "face",
        "custom_head": "head", "unet-dfl": "legacy", "vgg-clear": "face",
        "vgg-obstructed": "face"}


def test_decode_roundtrip_through_a_png_header(face, tmp_path):
    mask = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    header = {key: face[key] for key in ("alignments", "source")}
    header["alignments"] = {**header["alignments"], "mask": {"vgg-clear": _entry(mask)}}
    path = tmp_path / "face.png"
    path.write_bytes(encode_face_png(np.zeros((PNG, PNG, 3), np.uint8), header))
    entry = read_header(path)["alignments"]["mask"]["vgg-clear"]
    out = stored_masks.decode_stored_mask(entry, path=path, name="vgg-clear")
    assert out.shape == (128, 128) and out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, mask)


@pytest.mark.parametrize("count", [128 * 128 - 1, 128 * 128 + 5, 64 * 64])
def test_decode_refuses_wrong_size(count):
    entry = {"mask": zlib.compress(bytes(count)), "stored_size": 128}
    with pytest.raises(FaceFileError, match=r"a\.png: stored mask 'vgg-clear'"):
        stored_masks.decode_stored_mask(entry, path="a.png", name="vgg-clear")


@pytest.mark.parametrize("size", [0, -4, True, 1.5, 10**6, None])
def test_decode_refuses_bad_stored_size(size):
    entry = {"mask": zlib.compress(bytes(16)), "stored_size": size}
    with pytest.raises(FaceFileError, match="stored_size"):
        stored_masks.decode_stored_mask(entry, path="a.png", name="unet-dfl")


def test_decode_refuses_corrupt_and_truncated_streams():
    good = zlib.compress(np.arange(128 * 128, dtype=np.uint32).astype(np.uint8).tobytes())
    cases = {"not zlib": b"\x00" * 40 + good[40:], "garbage": b"not a zlib stream at all",
             "bad data": good[:20] + bytes(b ^ 0x5A for b in good[20:60]) + good[60:],
             "truncated": good[:-10], "not bytes": "x\x9c"}
    for what, data in cases.items():
        with pytest.raises(FaceFileError, match=r"f\.png: stored mask 'm'") as err:
            stored_masks.decode_stored_mask({"mask": data, "stored_size": 128}, path="f.png",
                                            name="m")
        assert "zlib" in str(err.value) or "bytes" in str(err.value), what
    with pytest.raises(FaceFileError, match="truncated"):
        stored_masks.decode_stored_mask({"mask": good[:-10], "stored_size": 128}, path="f",
                                        name="m")


def test_decode_stops_a_zip_bomb_without_inflating_it():
    bomb = zlib.compress(bytes(16 * 1024 * 1024), 1)  # 16 MiB of zeros in ~70 KiB
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(FaceFileError, match="more than stored_size"):
            stored_masks.decode_stored_mask({"mask": bomb, "stored_size": 128}, path="b.png",
                                            name="bisenet-fp_face")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The bound is S*S + 1 = 16 KiB of output; a plain zlib.decompress would take 16 MiB.
    assert peak < 1024 * 1024, peak


# ---------------------------------------------------------------------- dilation / threshold

@pytest.mark.parametrize("dilation,kernel", [(2.0, 3), (3.5, 4), (5.0, 6), (-2.0, 3),
                                             (-5.0, 6), (1.953125, 2)])
def test_dilation_and_erosion_by_ellipse_of_stored_size(dilation, kernel):
    """Kernel = round(Sm * |d| / 100) in STORED pixels (Python round: 2.5 -> 2)."""
    side, stored = 40, 128
    mask = np.zeros((stored, stored), np.uint8)
    mask[30:30 + side, 50:50 + side] = 255
    full = _plain(mask, dilation=dilation)
    # The training size must not change the kernel: smaller output = the same mask, resized.
    small = _plain(mask, dilation=dilation, size=64)
    np.testing.assert_array_equal(small, cv2.resize(full, (64, 64), interpolation=cv2.INTER_AREA))
    grow = kernel - 1  # an ellipse kernel's middle row/column spans the full kernel width
    row, col = full[30 + side // 2], full[:, 50 + side // 2]
    if dilation > 0:
        assert (full >= mask).all()
        assert (row > 0).sum() == side + grow and (col > 0).sum() == side + grow
        # A square dilated by a convex kernel whose middle row and column are full is the
        # (L + k - 1)^2 square less, at its corners, exactly the kernel's empty pixels.
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
        assert (full > 0).sum() == (side + grow) ** 2 - (element == 0).sum()
        # ...which is within a pixel per corner of the continuous square + disc Minkowski sum.
        rad = grow / 2
        assert abs((full > 0).sum() - (side ** 2 + 4 * side * rad + np.pi * rad ** 2)) <= 4
    else:
        assert (full <= mask).all()
        # Eroding a square by any symmetric-extent kernel leaves a square: exact.
        assert (full > 0).sum() == (side - grow) ** 2
        assert (row > 0).sum() == side - grow and (col > 0).sum() == side - grow


def test_dilation_rounding_to_zero_is_a_no_op():
    mask = np.zeros((128, 128), np.uint8)
    mask[40:80, 40:80] = 255
    # 0.3 % of 128 rounds to 0 (Faceswap's OpenCV call would fail); 0.5 % rounds to 1: identity.
    np.testing.assert_array_equal(_plain(mask, dilation=0.3), mask)
    np.testing.assert_array_equal(_plain(mask, dilation=-0.5), mask)


def test_threshold():
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    out = _plain(ramp, threshold=4)[0]  # t = 10.2
    expected = np.arange(256)
    expected[:11] = 0
    expected[245:] = 255
    np.testing.assert_array_equal(out, expected)
    half = _plain(ramp, threshold=50)[0]  # t = 127.5: binary
    np.testing.assert_array_equal(half, np.where(np.arange(256) >= 128, 255, 0))
    np.testing.assert_array_equal(_plain(ramp, threshold=0), ramp)
    with pytest.raises(ValueError, match="threshold"):
        _plain(ramp, threshold=51)


def test_threshold_runs_after_dilation_and_before_blur():
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 255
    mask[10, 10] = 8  # below t = 10.2: gone before the blur could spread it
    out = _plain(mask, threshold=4, blur_kernel=3)
    assert out[8:13, 8:13].max() == 0
    assert out[20:40, 21].min() == 191  # blurred edge of the square survives (0.75 * 255)


@pytest.mark.parametrize("kernel", [0, 1, 2, 3])
def test_blur_on_a_step_edge(kernel):
    step = np.zeros((32, 32), np.uint8)
    step[:, 16:] = 255
    out = _plain(step, blur_kernel=kernel)
    if kernel <= 1:  # 0: off; 1: a 1x1 Gaussian is the identity
        np.testing.assert_array_equal(out, step)
        return
    # 2 is raised to 3; sigma 0 -> OpenCV's 3-tap kernel (1/4, 1/2, 1/4).
    np.testing.assert_array_equal(out[5, 12:20], [0, 0, 0, 64, 191, 255, 255, 255])
    assert (out == out[:1]).all()  # the same in every row (border replicated vertically)


def test_blur_acts_in_stored_pixels_before_the_cut():
    """A 62.5 % face crop upscales the stored mask ~2x: the 3-tap blur ramp becomes ~2x wider."""
    step = np.zeros((128, 128), np.uint8)
    step[:, 64:] = 255
    args = dict(stored_centering="face", centering="face", coverage=62.5, vertical_offset=0.0,
                offsets=_offsets(), size=128, dilation=0.0, threshold=0.0)
    blurred = stored_masks.process_stored_mask(step, blur_kernel=3, **args)
    pre = stored_masks.process_stored_mask(cv2.GaussianBlur(step, (3, 3), 0), blur_kernel=0,
                                           **args)
    np.testing.assert_array_equal(blurred, pre)
    ramp = ((blurred[64] > 10) & (blurred[64] < 245)).sum()
    assert 4 <= ramp <= 6, blurred[64]  # 2 px ramp at 128/80 = 1.6x zoom, plus cubic spread


# ---------------------------------------------------------------------------------- alignment

def _coverage(lo: float, hi: float, count: int) -> np.ndarray:
    """Fraction of each pixel (centred on integers) covered by the interval [lo, hi]."""
    centres = np.arange(count, dtype=np.float64)
    return np.clip(np.minimum(hi, centres + 0.5) - np.maximum(lo, centres - 0.5), 0.0, 1.0)


def _box(x0, x1, y0, y1, count) -> np.ndarray:
    """Anti-aliased box (exact pixel-area coverage) as uint8."""
    area = np.outer(_coverage(y0, y1, count), _coverage(x0, x1, count))
    return np.rint(area * 255).astype(np.uint8)


def _png_to_stored(stored_size: int, centering: str, offsets: dict) -> tuple[float, float]:
    """(scale, (tx, ty)) taking head-centred PNG pixels to stored-mask pixels.

    Both images are a centering matrix scaled by (size - 2 pad) plus pad, pad = round(size *
    ratio / 2), as extract writes them; the two centerings differ by their pose offsets.
    """
    pad_h = round(PNG * RATIO["head"] / 2)
    pad_s = round(stored_size * RATIO[centering] / 2)
    scale = (stored_size - 2 * pad_s) / (PNG - 2 * pad_h)
    shift = ((offsets["head"] - offsets[centering]).astype(np.float64) * (stored_size - 2 * pad_s)
             + pad_s - pad_h * scale)
    return scale, shift


def _edges(mask: np.ndarray) -> np.ndarray:
    """Sub-pixel (left, right, top, bottom) of a soft axis-aligned box, from its profiles."""
    out = []
    for axis in (0, 1):  # column profile -> x edges, row profile -> y edges
        prof = mask.astype(np.float64).sum(axis=axis)
        prof /= prof.max()
        width = prof.sum()
        centre = (prof * np.arange(prof.size)).sum() / width
        out += [centre - width / 2, centre + width / 2]
    return np.array(out)


def _aligned_pair(face, stored_c, train_c, coverage, voff, *, stored_size=128, size=128,
                  compat=False):
    """Processed stored mask, the image crop of the same PNG box, and an edge tolerance."""
    lms = face["alignments"]["landmarks_xy"]
    offs = _offsets()
    crop = align.train_crop(lms, PNG, train_c, coverage, voff, size, offsets=offs)
    scale, shift = _png_to_stored(stored_size, stored_c, offs)
    # The stored mask's footprint on the PNG, intersected with the training window (without
    # vertical offset, so that the box does not depend on it)...
    lo = (np.array([-0.5, -0.5]) - shift) / scale
    hi = (np.array([stored_size - 0.5] * 2) - shift) / scale
    still = align.train_crop(lms, PNG, train_c, coverage, 0.0, size, offsets=offs)
    wlo = np.array([still.left, still.top]) - 0.5
    whi = wlo + still.window
    rlo, rhi = np.maximum(lo, wlo), np.minimum(hi, whi)
    span = rhi - rlo
    assert (span > 0.3 * crop.window).all()
    # ... and an asymmetric box inside that, so that a flip or a shift cannot go unnoticed.
    blo = rlo + span * np.array([0.15, 0.22])
    bhi = rhi - span * np.array([0.27, 0.1])
    png_mask = _box(blo[0], bhi[0], blo[1], bhi[1], PNG)
    slo, shi = blo * scale + shift, bhi * scale + shift
    stored = _box(slo[0], shi[0], slo[1], shi[1], stored_size)
    got = stored_masks.process_stored_mask(
        stored, stored_centering=stored_c, centering=train_c, coverage=coverage,
        vertical_offset=voff, offsets=offs, size=size, dilation=0.0, blur_kernel=0,
        threshold=0.0, faceswap_compat=compat)
    want = align.crop_face(np.repeat(png_mask[:, :, None], 3, axis=2), crop)[:, :, 0]
    # Rounding budget per edge: the mask window's centre (rint, 0.5 stored px) and even side
    # (0.5 stored px per edge); the image window's corner (rint, 0.5 PNG px), even side (0.5 PNG
    # px per edge) and its even-rounded core box (< 0.5 PNG px at |offset| < 0.5).
    window = stored_masks.stored_crop_window(
        stored_size, stored_centering=stored_c, centering=train_c, coverage=coverage,
        vertical_offset=voff, offsets=offs)
    mask_side = stored_size if window is None else window[2]
    tol = 1.0 * size / mask_side + 1.5 * size / crop.window
    return got, want, tol


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Soft IoU. Guard only: the edge check above is the precise one. Within the rounding
    budget the 45..87 px boxes here measure 0.937..0.992; a box moved by a 10 % vertical offset
    (5..8 px) drops to about 0.85, a wrong centering far lower. 0.9 separates the two."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.minimum(a, b).sum() / np.maximum(a, b).sum())


MIN_IOU = 0.9


@pytest.mark.parametrize("stored_c,train_c,coverage", list(itertools.product(
    ("head", "face", "legacy"), ("face", "head", "legacy"), (62.5, 87.5, 100.0))))
def test_mask_lines_up_with_image_crop(face, stored_c, train_c, coverage):
    got, want, tol = _aligned_pair(face, stored_c, train_c, coverage, 0.0)
    err = np.abs(_edges(got) - _edges(want))
    assert err.max() <= tol, (err, tol)
    assert _iou(got, want) > MIN_IOU, _iou(got, want)


@pytest.mark.parametrize("stored_size,size", [(256, 64), (64, 128), (128, 96)])
def test_alignment_other_sizes(face, stored_size, size):
    for stored_c, train_c in (("legacy", "face"), ("head", "legacy"), ("face", "face")):
        got, want, tol = _aligned_pair(face, stored_c, train_c, 87.5, 5.0,
                                       stored_size=stored_size, size=size)
        err = np.abs(_edges(got) - _edges(want))
        assert err.max() <= tol, (stored_c, train_c, err, tol)


@pytest.mark.parametrize("centering", ["face", "head", "legacy"])
@pytest.mark.parametrize("voff", [10.0, -15.0])
def test_vertical_offset_same_centering_full_coverage(face, centering, voff):
    """The Faceswap quirk: its mask ignores the offset here; fsjax's moves with the image."""
    got, want, tol = _aligned_pair(face, centering, centering, 100.0, voff)
    err = np.abs(_edges(got) - _edges(want))
    assert err.max() <= tol, (err, tol)
    assert _iou(got, want) > MIN_IOU
    stuck, _, _ = _aligned_pair(face, centering, centering, 100.0, voff, compat=True)
    still, _, _ = _aligned_pair(face, centering, centering, 100.0, 0.0)
    pad = align.crop_padding(128, centering, 1.0)
    shift = voff / 100 * (128 - 2 * pad)  # the image's vertical shift in output pixels
    moved = _edges(got) - _edges(stuck)
    np.testing.assert_allclose(moved, [0, 0, shift, shift], atol=1.0)  # content moves down
    # Compat: the same mask as with no offset (the box stays where it was)...
    assert np.abs(_edges(stuck) - _edges(still)).max() <= 0.5
    # ...which is off the image crop by the whole offset.
    off = np.abs(_edges(stuck) - _edges(want))
    assert off[2:].min() > abs(shift) - tol
    assert _iou(stuck, want) < MIN_IOU


def test_compat_switch_changes_only_the_quirk_case():
    rng = np.random.default_rng(1)
    mask = cv2.GaussianBlur((rng.random((128, 128)) > 0.5).astype(np.uint8) * 255, (9, 9), 0)
    differ = []
    for stored_c, train_c, cov, voff in itertools.product(
            ("face", "head", "legacy"), ("face", "head", "legacy"), (62.5, 100.0),
            (0.0, 7.5, -20.0)):
        args = dict(stored_centering=stored_c, centering=train_c, coverage=cov,
                    vertical_offset=voff, offsets=_offsets(), size=96, dilation=1.0,
                    blur_kernel=3, threshold=4)
        ours = stored_masks.process_stored_mask(mask, **args)
        compat = stored_masks.process_stored_mask(mask, faceswap_compat=True, **args)
        if not np.array_equal(ours, compat):
            differ.append((stored_c, train_c, cov, voff))
    assert differ == [(c, c, 100.0, v) for c in ("face", "head", "legacy")
                      for v in (7.5, -20.0)]


def test_window_arithmetic_by_hand():
    """128 px face-stored mask, legacy training at 100 %: side 2 * round(128 * 0.5 / 0.625 / 2)
    = 102; centre = rint((legacy - face offset - (0, y)) * 128 * 0.5 + 64)."""
    geometry = dict(stored_centering="face", centering="legacy", coverage=100.0,
                    offsets=_offsets(face=(0.03, -0.16)))
    # (-0.03, 0.16) * 64 + 64 = (62.08, 74.24) -> (62, 74); corner = centre - 51
    assert stored_masks.stored_crop_window(128, vertical_offset=0.0, **geometry) == (11, 23, 102)
    # y: (0.16 - 0.10) * 64 + 64 = 67.84 -> 68
    assert stored_masks.stored_crop_window(128, vertical_offset=10.0, **geometry) == (11, 17, 102)
    # Same centering at 62.5 %: side 2 * round(128 * 0.625 / 2) = 80 around the centre (64, 64)
    assert stored_masks.stored_crop_window(
        128, stored_centering="head", centering="head", coverage=62.5, vertical_offset=0.0,
        offsets=_offsets()) == (24, 24, 80)
    # Same centering at 100 % with no offset: no cut; with one, only fsjax moves the window.
    same = dict(stored_centering="face", centering="face", coverage=100.0, offsets=_offsets())
    assert stored_masks.stored_crop_window(128, vertical_offset=0.0, **same) is None
    assert stored_masks.stored_crop_window(128, vertical_offset=-20.0, faceswap_compat=True,
                                           **same) is None
    # y: 0.20 * 64 + 64 = 76.8 -> 77; corner 77 - 64 = 13
    assert stored_masks.stored_crop_window(128, vertical_offset=-20.0, **same) == (0, 13, 128)


def test_resize_filter_follows_stored_size():
    """Faceswap picks area whenever the STORED mask is >= the training size, even when the cut
    window is smaller (an upscale); cubic only when the stored mask itself is smaller."""
    rng = np.random.default_rng(2)
    mask = rng.integers(0, 256, (128, 128), dtype=np.uint8)
    geometry = dict(stored_centering="head", centering="face", coverage=100.0,
                    vertical_offset=0.0, offsets=_offsets())
    left, top, side = stored_masks.stored_crop_window(128, **geometry)
    assert side == 96  # 128 * 0.375 / 0.5
    assert 0 <= left and left + side <= 128 and 0 <= top and top + side <= 128
    cut = mask[top:top + side, left:left + side]
    for size, flag in ((128, cv2.INTER_AREA), (64, cv2.INTER_AREA), (160, cv2.INTER_CUBIC)):
        out = stored_masks.process_stored_mask(mask, size=size, dilation=0.0, blur_kernel=0,
                                               threshold=0.0, **geometry)
        np.testing.assert_array_equal(out, cv2.resize(cut, (size, size), interpolation=flag))
    # 96 -> 128 is an upscale, yet area it is (cubic would differ).
    out = stored_masks.process_stored_mask(mask, size=128, dilation=0.0, blur_kernel=0,
                                           threshold=0.0, **geometry)
    assert not np.array_equal(out, cv2.resize(cut, (128, 128), interpolation=cv2.INTER_CUBIC))
    # A cut that already has the training size is returned as is.
    exact = stored_masks.process_stored_mask(mask, size=96, dilation=0.0, blur_kernel=0,
                                             threshold=0.0, **geometry)
    np.testing.assert_array_equal(exact, cut)


def test_zero_padding_outside_the_stored_mask():
    full = np.full((128, 128), 255, np.uint8)
    # head training at 100 % from a legacy-stored mask: the stored area is only ~60 % wide.
    out = stored_masks.process_stored_mask(
        full, stored_centering="legacy", centering="head", coverage=100.0, vertical_offset=0.0,
        offsets=_offsets(), size=128, dilation=0.0, blur_kernel=0, threshold=0.0)
    assert out[:, 0].max() == 0 and out[:, -1].max() == 0 and out[0].max() == 0
    # Blur runs before the cut: the all-white stored mask stays white, the padding edge sharp.
    blurred = stored_masks.process_stored_mask(
        full, stored_centering="legacy", centering="head", coverage=100.0, vertical_offset=0.0,
        offsets=_offsets(), size=128, dilation=0.0, blur_kernel=5, threshold=0.0)
    np.testing.assert_array_equal(blurred, out)
    assert out[90, 64] == 255
    frac = (out > 127).mean()
    assert abs(frac - 0.6 ** 2) < 0.02, frac  # (1 - 0.625) / (1 - 0.375) squared


def test_bad_arguments():
    mask = np.zeros((64, 64), np.uint8)
    with pytest.raises(ValueError, match="square uint8"):
        _plain(mask.astype(np.float32))
    with pytest.raises(ValueError, match="square uint8"):
        _plain(mask[:, :60])
    with pytest.raises(ValueError, match="centering"):
        _plain(mask, centering="chin")
    with pytest.raises(ValueError, match="coverage"):
        _plain(mask, coverage=0.0)
    with pytest.raises(ValueError, match="offsets"):
        _plain(mask, centering="head", offsets={"face": np.zeros(2, np.float32)})
    assert _plain(mask[:, :, None]).shape == (64, 64)
