"""LPIPS losses on synthetic weight files written here.

No real weights exist offline, so each test net has torchvision's layer layout with a few
channels, saved in torch's own formats (the zip archive and the pre-1.6 stream) by
`torch_save.write_pth`, which emits protocol-2 opcodes by hand, as torch's files spell them. The
JAX network is checked against an independent numpy (NCHW, float64) re-implementation that follows
torchvision's layer lists and Faceswap's steps, not fsjax's tables.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from torch_save import write_pth

import fsjax.losses as fl
from fsjax.config import ConfigError, LossConfig
from fsjax.interop import torch_file
from fsjax.losses import lpips, masking, registry

SIMPLE_TOL = 1e-5

# --- synthetic nets, laid out as torchvision's `features` ------------------------------------

# torchvision's layer lists (index = position in `features`): conv (k, stride, pad) + ReLU
# modules, max pools (k, stride, ceil) and squeezenet fire modules.
_TV_LAYERS = {
    "alex": ["c11,4,2", "r", "p3,2,0", "c5,1,2", "r", "p3,2,0", "c3,1,1", "r", "c3,1,1", "r",
             "c3,1,1", "r", "p3,2,0"],
    "squeeze": ["c3,2,0", "r", "p3,2,1", "f", "f", "p3,2,1", "f", "f", "p3,2,1", "f", "f", "f",
                "f"],
    "vgg16": sum(([*(["c3,1,1", "r"] * n), "p2,2,0"] for n in (2, 2, 3, 3, 3)), []),
}
_TV_TAPS = {"alex": (0, 3, 6, 8, 10), "squeeze": (0, 4, 7, 9, 10, 11, 12),
            "vgg16": (2, 7, 14, 21, 29)}
_TV_CROPS = {"alex": (2, 2, 1, 1, 1), "squeeze": (1,) * 7, "vgg16": (1,) * 5}


def _conv_weights(rng, out_ch: int, in_ch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    weight = rng.normal(0.0, 1.0 / np.sqrt(in_ch * k * k), (out_ch, in_ch, k, k))
    return weight.astype(np.float32), rng.normal(0.05, 0.1, out_ch).astype(np.float32)


def make_net(net: str, seed: int = 0) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Random torchvision-named trunk tensors (OIHW) and LPIPS linear weights (1, C, 1, 1)."""
    rng = np.random.default_rng(seed)
    tensors, channels, tap_channels = {}, 3, []
    for index, layer in enumerate(_TV_LAYERS[net]):
        name = f"features.{index}"
        if layer[0] == "c":
            out = int(rng.integers(3, 6))
            k = int(layer[1:].split(",")[0])
            tensors[f"{name}.weight"], tensors[f"{name}.bias"] = _conv_weights(rng, out, channels,
                                                                               k)
            channels = out
        elif layer == "f":
            squeeze, e1, e3 = 2, int(rng.integers(2, 4)), int(rng.integers(2, 4))
            parts = (("squeeze", (squeeze, channels, 1)), ("expand1x1", (e1, squeeze, 1)),
                     ("expand3x3", (e3, squeeze, 3)))
            for part, shape in parts:
                w, b = _conv_weights(rng, *shape)
                tensors[f"{name}.{part}.weight"], tensors[f"{name}.{part}.bias"] = w, b
            channels = e1 + e3
        # A tapped ReLU (vgg16 features.29) is counted at its conv.
        tapped = (layer == "f" and index in _TV_TAPS[net]) or (
            layer[0] == "c" and {index, index + 1} & set(_TV_TAPS[net]))
        if tapped:
            tap_channels.append(channels)
    # torchvision's files also hold the classifier, which LPIPS never reads.
    tensors["classifier.1.weight"] = rng.normal(size=(4, 6)).astype(np.float32)
    linear = [rng.uniform(0.0, 1.0, (1, c, 1, 1)).astype(np.float32) for c in tap_channels]
    return tensors, linear


# File names and formats vary per net so that both names and both formats get read.
_FILES = {
    "alex": ("alexnet-owt-7be5be79.pth", False, "alex.pth", True, "lin{}.model.1.weight"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", True, "squeeze.pth", False, "lin{}.model.1.weight"),
    "vgg16": ("vgg16_imagenet_no_top_v2.pth", False, "vgg16_lpips_v2.pth", False, "{}"),
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict:
    """Per net: (folder, trunk tensors, linear weights)."""
    out = {}
    for net, (trunk_name, trunk_legacy, lin_name, lin_legacy, key) in _FILES.items():
        folder = tmp_path_factory.mktemp(f"lpips_{net}")
        tensors, linear = make_net(net, seed=len(out))
        write_pth(folder / trunk_name, tensors, legacy=trunk_legacy)
        write_pth(folder / lin_name, {key.format(i): w for i, w in enumerate(linear)},
                  legacy=lin_legacy)
        out[net] = (folder, tensors, linear)
    return out


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    y_true = rng.random((2, 64, 64, 3), dtype=np.float32)
    y_pred = np.clip(y_true + rng.normal(0, 0.1, y_true.shape), 0, 1).astype(np.float32)
    return y_true, y_pred


# --- independent numpy reference (NCHW, float64, torch semantics) ----------------------------


def _np_conv(x, weight, bias, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = weight.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    return (np.einsum("nchwij,ocij->nohw", windows[:, :, ::stride, ::stride], weight)
            + bias[None, :, None, None])


def _np_pool(x, k, stride, ceil):
    def size(length):
        if not ceil:
            return (length - k) // stride + 1
        out = -(-(length - k) // stride) + 1
        return out - 1 if (out - 1) * stride >= length else out

    h, w = x.shape[2:]
    out = np.empty(x.shape[:2] + (size(h), size(w)))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            win = x[:, :, i * stride: i * stride + k, j * stride: j * stride + k]
            out[:, :, i, j] = win.max(axis=(2, 3))
    return out


def np_taps(tensors, x, net, truncate):
    """Tap outputs of torchvision's `features` with in-place ReLUs.

    truncate=True runs only up to the last tap, as Faceswap's feature extractor does, so a tapped
    conv whose ReLU is cut off stays raw; False runs every layer (LPIPS' own slicing).
    """
    t = {k: v.astype(np.float64) for k, v in tensors.items()}
    layers = _TV_LAYERS[net]
    last = max(_TV_TAPS[net]) if truncate else len(layers) - 1
    outputs = {}
    for index, layer in enumerate(layers[: last + 1]):
        name = f"features.{index}"
        if layer[0] == "c":
            k, stride, pad = (int(v) for v in layer[1:].split(","))
            x = _np_conv(x, t[f"{name}.weight"], t[f"{name}.bias"], stride, pad)
        elif layer == "r":
            x = np.maximum(x, 0.0, out=x)  # in place, like torch's ReLU(inplace=True)
        elif layer[0] == "p":
            k, stride, ceil = (int(v) for v in layer[1:].split(","))
            x = _np_pool(x, k, stride, bool(ceil))
        else:
            s = np.maximum(_np_conv(x, t[f"{name}.squeeze.weight"], t[f"{name}.squeeze.bias"],
                                    1, 0), 0)
            x = np.concatenate([
                np.maximum(_np_conv(s, t[f"{name}.expand1x1.weight"],
                                    t[f"{name}.expand1x1.bias"], 1, 0), 0),
                np.maximum(_np_conv(s, t[f"{name}.expand3x3.weight"],
                                    t[f"{name}.expand3x3.bias"], 1, 1), 0)], axis=1)
        outputs[index] = x
    return [outputs[i] for i in _TV_TAPS[net]]


def np_upsample(x, height, width):
    """torch.nn.Upsample(mode='bilinear', align_corners=False), written per output pixel."""
    def axis_weights(out_size, in_size):
        rows = []
        for o in range(out_size):
            src = max((o + 0.5) * in_size / out_size - 0.5, 0.0)
            i0 = int(src)
            i1 = i0 + (1 if i0 < in_size - 1 else 0)
            lam = src - i0
            row = np.zeros(in_size)
            row[i0] += 1.0 - lam
            row[i1] += lam
            rows.append(row)
        return np.array(rows)

    return np.einsum("Hh,nchw,Ww->ncHW", axis_weights(height, x.shape[2]), x,
                     axis_weights(width, x.shape[3]))


def np_lpips(tensors, linear, y_true, y_pred, net, *, truncate=False, crops=None):
    """Faceswap's LPIPSLoss.forward on NHWC BGR inputs; returns NHWC (N, H, W, 1)."""
    shift = np.array([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = np.array([0.458, 0.448, 0.450])[None, :, None, None]

    def prep(img):
        x = img.astype(np.float64).transpose(0, 3, 1, 2)[:, ::-1]  # NCHW, BGR -> RGB
        return (x * 2.0 - 1.0 - shift) / scale

    taps_true = np_taps(tensors, prep(y_true), net, truncate)
    taps_pred = np_taps(tensors, prep(y_pred), net, truncate)
    total = 0.0
    for a, b, w, crop in zip(taps_true, taps_pred, linear, crops or _TV_CROPS[net], strict=True):
        a = a / (np.sqrt(np.sum(a**2, axis=1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt(np.sum(b**2, axis=1, keepdims=True)) + 1e-10)
        d = (a - b) ** 2
        d = d[:, :, crop:-crop, crop:-crop] if crop else d
        layer = np.einsum("nchw,c->nhw", d, w.reshape(-1).astype(np.float64))[:, None]
        total = total + np_upsample(layer, *y_true.shape[1:3])
    return (0.1 * total).transpose(0, 2, 3, 1)


def _rel(ours, ref) -> float:
    return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / np.max(np.abs(ref)))


@functools.cache
def _jit_loss(folder, net: str, compat: bool = False, color_order: str = "bgr"):
    """One compiled loss per (weights, options), shared by the tests (compiling dominates)."""
    fn = lpips.loss_fn(f"lpips_{net}", folder)
    return jax.jit(functools.partial(fn, faceswap_compat=compat, color_order=color_order))


def _loss(weights, net, **kwargs):
    return _jit_loss(weights[net][0], net, **kwargs)


# --- (a) the network against numpy -----------------------------------------------------------


@pytest.mark.parametrize("net", ["alex", "squeeze", "vgg16"])
def test_taps_match_numpy(weights, images, net):
    _, tensors, _ = weights[net]
    params = lpips.load_params(net, weights[net][0])
    x = lpips.preprocess(jnp.asarray(images[0]))
    ours = jax.jit(lambda x: lpips.features(params, x, net))(x)
    ref_x = np.asarray(x, np.float64).transpose(0, 3, 1, 2)
    ref = np_taps(tensors, ref_x, net, truncate=False)
    assert len(ours) == len(ref) == len(lpips.NETS[net].taps)
    for tap, expected in zip(ours, ref, strict=True):
        assert tap.shape == expected.transpose(0, 2, 3, 1).shape
        assert _rel(tap, expected.transpose(0, 2, 3, 1)) <= SIMPLE_TOL


@pytest.mark.parametrize("net", ["alex", "squeeze", "vgg16"])
def test_loss_map_matches_numpy(weights, images, net):
    _, tensors, linear = weights[net]
    ours = _loss(weights, net)(*images)
    ref = np_lpips(tensors, linear, *images, net)
    assert ours.shape == (2, 64, 64, 1) and ours.dtype == jnp.float32
    assert _rel(ours, ref) <= SIMPLE_TOL


def test_registry_per_item(weights, images):
    """The same numbers through the registry's spec and per-item interface."""
    _, tensors, linear = weights["alex"]
    spec = fl.get("lpips_alex", lpips_weights=weights["alex"][0])
    per_item = jax.jit(functools.partial(registry.per_sample, spec))(*images)
    ref = np_lpips(tensors, linear, *images, "alex")
    np.testing.assert_allclose(per_item, ref.mean(axis=(1, 2, 3)), rtol=SIMPLE_TOL)


@pytest.mark.parametrize("net", ["alex", "squeeze", "vgg16"])
def test_faceswap_compat_taps(weights, images, net):
    """Faceswap's extractor stops at the last tap: only AlexNet's last conv loses its ReLU."""
    _, tensors, linear = weights[net]
    compat = _loss(weights, net, compat=True)(*images)
    ref = np_lpips(tensors, linear, *images, net, truncate=True)
    assert _rel(compat, ref) <= SIMPLE_TOL
    default = _loss(weights, net)(*images)
    if net == "alex":
        assert _rel(default, ref) > 1e-3
        assert registry.LOSSES["lpips_alex"].compat
    else:
        np.testing.assert_array_equal(compat, default)


def test_crop_and_scale_are_checked(weights, images):
    """The numpy comparison is sensitive to the crops and the 0.1 factor."""
    _, tensors, linear = weights["alex"]
    ours = _loss(weights, "alex")(*images)
    no_crop = np_lpips(tensors, linear, *images, "alex", crops=(0,) * 5)
    assert _rel(ours, no_crop) > 1e-2
    ref = np_lpips(tensors, linear, *images, "alex")
    assert _rel(ours, 10 * ref) > 0.5


def test_wrong_network_is_refused(tmp_path):
    folder = tmp_path
    tensors, linear = make_net("alex")
    tensors["features.3.weight"] = tensors["features.3.weight"][:, :, :3, :3]
    write_pth(folder / "alexnet-owt-7be5be79.pth", tensors)
    write_pth(folder / "alex.pth", {str(i): w for i, w in enumerate(linear)})
    with pytest.raises(torch_file.TorchFileError, match="features.3"):
        lpips.load_params("alex", folder)
    write_pth(folder / "alexnet-owt-7be5be79.pth", make_net("alex")[0])
    write_pth(folder / "alex.pth", {str(i): w for i, w in enumerate(linear[:4])})
    with pytest.raises(torch_file.TorchFileError, match="linear"):
        lpips.load_params("alex", folder)


# --- (c) configuration -----------------------------------------------------------------------


def test_config_without_files(tmp_path):
    with pytest.raises(ConfigError) as err:
        LossConfig(loss_function_2="lpips_alex")
    message = str(err.value)
    for needed in ("alexnet-owt-7be5be79.pth", "alex.pth", "lpips-weights", "not set"):
        assert needed in message
    write_pth(tmp_path / "vgg16-397923af.pth", {"a": np.ones(1)})
    with pytest.raises(ConfigError, match=r"lacks LPIPS v0.1's vgg.pth"):
        LossConfig(loss_function_3="lpips_vgg16", loss_weight_3=10, lpips_weights=tmp_path)
    with pytest.raises(ConfigError, match="squeezenet1_1-b8a52dc0.pth"):
        LossConfig(loss_function_4="lpips_squeeze", loss_weight_4=5,
                   lpips_weights=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="only as loss_function_2"):
        LossConfig(loss_function="lpips_alex")
    LossConfig(loss_function_3="lpips_alex", loss_weight_3=0)  # dropped: needs nothing


def test_config_with_files(weights):
    cfg = LossConfig(loss_function_2="lpips_vgg16", lpips_weights=weights["vgg16"][0])
    assert cfg.functions == {"ssim": 1.0, "lpips_vgg16": 1.0}
    spec = fl.get("lpips_vgg16", lpips_weights=cfg.lpips_weights)
    assert spec.spatial and not spec.compat


def test_registry_without_weights(images):
    with pytest.raises(ValueError, match="lpips_weights"):
        fl.compute("lpips_alex", *images)


# --- (d) gradients, jit, dtypes --------------------------------------------------------------


# Each compile of a gradient costs seconds on CPU: y_pred alone is checked on the cheapest net.
@pytest.mark.parametrize("net,argnums", [("alex", 1), ("alex", (0, 1)), ("squeeze", (0, 1)),
                                         ("vgg16", (0, 1))])
def test_finite_gradients_at_equal_inputs(weights, images, net, argnums):
    fn = lpips.loss_fn(f"lpips_{net}", weights[net][0])
    grad = jax.jit(jax.grad(lambda t, p: jnp.mean(fn(t, p)), argnums=argnums))
    flat = np.full_like(images[0], 0.5)  # a constant image: some tapped pixels are all zero
    for y in (images[0], flat):
        for g in jax.tree.leaves(grad(y, y)):
            assert g.shape == y.shape and bool(jnp.all(jnp.isfinite(g)))


def test_zero_features_have_finite_gradient():
    """At an all-zero pixel x / (||x|| + eps) has slope 1 / eps; the norm adds no NaN."""
    grad = jax.grad(lambda x: jnp.sum(lpips.unit_normalise(x)))(jnp.zeros((1, 2, 2, 3)))
    np.testing.assert_allclose(grad, 1.0 / lpips.EPSILON, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs(weights, images, dtype):
    fn = _loss(weights, "alex")
    low = [jnp.asarray(x, dtype) for x in images]
    out = fn(*low)
    assert out.dtype == jnp.float32
    same_inputs = fn(*(np.asarray(x, np.float32) for x in low))
    np.testing.assert_allclose(out, same_inputs, rtol=1e-6, atol=1e-9)
    full = fn(*images)
    assert float(jnp.mean(jnp.abs(out - full)) / jnp.mean(full)) < 0.05


def test_mask_broadcast(weights, images):
    """The (N, H, W, 1) map takes NHWC masks as Faceswap's (N, 1, H, W) map takes NCHW ones."""
    out = _loss(weights, "alex")(*images)
    mask = np.random.default_rng(4).random((2, 64, 64, 1)).astype(np.float32)
    masked = masking.weight_map(out, jnp.asarray(mask), None, None, 3.0, 2.0)
    np.testing.assert_allclose(masked, np.asarray(out) * mask, rtol=1e-6)


def test_too_small_input(weights):
    small = np.zeros((1, 48, 48, 3), np.float32)
    with pytest.raises(ValueError, match="larger images"):
        _loss(weights, "alex")(small, small)


# --- (e) structural facts --------------------------------------------------------------------


def test_structure():
    for net in ("alex", "squeeze", "vgg16"):
        assert lpips.NETS[net].taps == tuple(f"features.{i}" for i in _TV_TAPS[net])
        assert lpips.NETS[net].crops == _TV_CROPS[net]
    assert lpips.EPSILON == 1e-10 and lpips.OUTPUT_SCALE == 0.1
    assert lpips.SHIFT == (-0.030, -0.088, -0.188) and lpips.SCALE == (0.458, 0.448, 0.450)
    assert lpips.LOSS_NETS == {"lpips_alex": "alex", "lpips_squeeze": "squeeze",
                               "lpips_vgg16": "vgg16"}


def test_channel_normalisation_epsilon():
    x = jnp.asarray([[[[3e-10, 4e-10, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 4.0]]]])
    out = np.asarray(lpips.unit_normalise(x))[0, 0]
    np.testing.assert_allclose(out[0], [3e-10 / 6e-10, 4e-10 / 6e-10, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_allclose(out[2], [0.6, 0.0, 0.8], rtol=1e-6)


def test_preprocess_flips_and_normalises():
    bgr = jnp.asarray([[[[0.1, 0.5, 0.9]]]], jnp.float32)
    expected = [(2 * 0.9 - 1 + 0.030) / 0.458, (2 * 0.5 - 1 + 0.088) / 0.448,
                (2 * 0.1 - 1 + 0.188) / 0.450]
    np.testing.assert_allclose(lpips.preprocess(bgr)[0, 0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(lpips.preprocess(bgr[..., ::-1], "rgb")[0, 0, 0], expected,
                               rtol=1e-6)


def test_rgb_input_is_flipped_bgr(weights, images):
    bgr = _loss(weights, "alex")(*images)
    flipped = [x[..., ::-1] for x in images]
    rgb = _loss(weights, "alex", color_order="rgb")(*flipped)
    np.testing.assert_allclose(rgb, bgr, rtol=1e-6, atol=1e-9)
    assert _rel(_loss(weights, "alex")(*flipped), np.asarray(bgr)) > 1e-4


@pytest.mark.parametrize("out_size,in_size", [(64, 11), (64, 3), (64, 1), (128, 62), (7, 7)])
def test_bilinear_matches_torch_formula(out_size, in_size):
    x = np.random.default_rng(5).normal(size=(1, 1, in_size, in_size))
    ours = np.einsum("Hh,hw,Ww->HW", lpips.bilinear_matrix(out_size, in_size), x[0, 0],
                     lpips.bilinear_matrix(out_size, in_size))
    np.testing.assert_allclose(ours, np_upsample(x, out_size, out_size)[0, 0], rtol=1e-5,
                               atol=1e-6)
