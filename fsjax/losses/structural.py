"""Structural losses: compare local image statistics rather than single pixels.

Faceswap's SSIM differs from the textbook/dm-pix one in one way that changes the numbers: the
Gaussian window is applied with reflect padding of half its size, so the SSIM map keeps the input's
H x W (dm-pix uses VALID filtering and shrinks it). The loss is 1 - SSIM per pixel and channel.
MS-SSIM and GMSD reuse the same reflect-padded filters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The sums below must be exact float32 even where XLA would otherwise use reduced-precision
# matmuls (TF32 on GPU, bf16 passes on TPU); the fixtures are matched to 1e-5.
_PRECISION = jax.lax.Precision.HIGHEST

MS_SSIM_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Per-scale exponents of MS-SSIM, full resolution first (Wang et al. 2003)."""

# Faceswap's 5x5 "modified Scharr" kernels have rank 2: vertical = sum of (difference along H)
# x (smoothing along W) for the two pairs below; horizontal is its transpose.
_SCHARR_SMOOTH = (
    np.array([0.0007, 0.0052, 0.0370, 0.0052, 0.0007]),
    np.array([0.0037, 0.1187, 0.2589, 0.1187, 0.0037]),
)
_SCHARR_DIFF = (np.array([1.0, 0.0, 0.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.0, -1.0, 0.0]))
_GMS_C = 0.0025


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """1-D normalised Gaussian taps.

    Faceswap normalises its 2-D window with a softmax over -r^2 / (2 sigma^2); that window is the
    outer product of this 1-D one with itself, which is what lets the filter run as two passes.
    """
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def filter_matrix(length: int, taps: np.ndarray, mode: str = "reflect") -> np.ndarray:
    """(length, length) float32 matrix doing pad + correlation with odd `taps` along one axis.

    `mode` is "reflect" (no repeated edge sample, torch/numpy "reflect") or "replicate". Folding
    the padding into a dense matrix turns each pass into one matmul, which on CPU was ~10x faster
    than a sum of shifted slices and ~40x faster than a depthwise conv at 64 px (and its gradient
    is just the transpose). Built with numpy at trace time, so it is a constant.
    """
    taps = np.asarray(taps, np.float64)
    pad = len(taps) // 2
    if mode == "reflect" and length <= pad:
        raise ValueError(f"reflect padding {pad} needs a size > {pad}, got {length}")
    src = np.arange(length)[:, None] + np.arange(len(taps))[None, :] - pad
    if mode == "reflect":
        src = np.where(src < 0, -src, src)
        src = np.where(src >= length, 2 * (length - 1) - src, src)
    elif mode == "replicate":
        src = np.clip(src, 0, length - 1)
    else:
        raise ValueError(f"unknown padding mode {mode!r}")
    matrix = np.zeros((length, length), np.float64)
    rows = np.broadcast_to(np.arange(length)[:, None], src.shape)
    np.add.at(matrix, (rows, src), np.broadcast_to(taps, src.shape))
    return matrix.astype(np.float32)


def _reflect_filter_matrix(length: int, size: int, sigma: float) -> np.ndarray:
    """Reflect-pad + Gaussian filter along one axis (see `filter_matrix`)."""
    return filter_matrix(length, gaussian_window(size, sigma))


def filter2d(images: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
    """Apply `rows` (H', H) along H and `cols` (W', W) along W of an NHWC batch."""
    n, h, w, c = images.shape
    rows, cols = jnp.asarray(rows), jnp.asarray(cols)
    # Flattening the untouched axes keeps both passes plain (batched) matmuls, no transposes.
    out = jnp.einsum("hk,nkm->nhm", rows, images.reshape(n, h, w * c), precision=_PRECISION)
    out = out.reshape(n * rows.shape[0], w, c)
    out = jnp.einsum("wk,bkc->bwc", cols, out, precision=_PRECISION)
    return out.reshape(n, rows.shape[0], cols.shape[0], c)


def gaussian_filter(images: jax.Array, size: int = 11, sigma: float = 1.5) -> jax.Array:
    """Same-size Gaussian blur of an NHWC batch with reflect padding, channel by channel."""
    _, h, w, _ = images.shape
    return filter2d(
        images, _reflect_filter_matrix(h, size, sigma), _reflect_filter_matrix(w, size, sigma)
    )


def _luminance_contrast(
    y_true: jax.Array,
    y_pred: jax.Array,
    blur: Callable[[jax.Array], jax.Array],
    c1: float,
    c2: float,
) -> tuple[jax.Array, jax.Array]:
    """SSIM's luminance and contrast-structure maps, each (N, H, W, C); `blur` gives local means.

    The variance term is clamped at zero before adding c2 (as Faceswap does) so rounding can never
    make the denominator smaller than c2.
    """
    # One filter call over all four statistics keeps it to two matmuls.
    stats = jnp.concatenate(
        [y_true, y_pred, y_true * y_pred, jnp.square(y_true) + jnp.square(y_pred)], axis=-1
    )
    mean_t, mean_p, mean_tp, mean_sq = jnp.split(blur(stats), 4, axis=-1)
    cross = 2.0 * mean_t * mean_p
    means_sq = jnp.square(mean_t) + jnp.square(mean_p)
    luminance = (cross + c1) / (means_sq + c1)
    contrast = (2.0 * mean_tp - cross + c2) / (jnp.maximum(mean_sq - means_sq, 0.0) + c2)
    return luminance, contrast


def ssim(
    y_true: jax.Array,
    y_pred: jax.Array,
    *,
    max_val: float = 1.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """Faceswap's SSIM loss map, 1 - luminance * contrast-structure, shape (N, H, W, C)."""
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    luminance, contrast = _luminance_contrast(
        y_true, y_pred, lambda x: gaussian_filter(x, filter_size, filter_sigma), c1, c2
    )
    return 1.0 - luminance * contrast


def ms_ssim_window(size: int, filter_size: int = 11, scales: int = 5) -> int:
    """Faceswap's MS-SSIM window for `size` px images: shrunk to fit the smallest scale.

    The smallest scale is `size` halved (rounding down) `scales - 1` times; a window larger than it
    becomes that size (made odd), so 64 px gets 3x3 and 128 px 7x7. Below 3 MS-SSIM is refused.
    """
    smallest = size >> (scales - 1)
    if smallest >= filter_size:
        return filter_size
    window = smallest - 1 if smallest % 2 == 0 else smallest
    if window < 3:
        raise ValueError(
            f"ms_ssim needs outputs of at least {3 << (scales - 1)} px, got {size}: use ssim"
        )
    return window


def _pool2(images: jax.Array) -> jax.Array:
    """2x2 average pool of an NHWC batch; odd sizes first repeat their last row/column.

    Summed in torch's order, ((a + b) + c) + d then / 4: MS-SSIM's coarse scales are so sensitive
    to rounding (see `_window_sum`) that the order shows at the fixtures' 1e-4.
    """
    _, h, w, _ = images.shape
    if h % 2 or w % 2:
        images = jnp.pad(images, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    total = images[:, 0::2, 0::2] + images[:, 0::2, 1::2]
    total = total + images[:, 1::2, 0::2]
    return (total + images[:, 1::2, 1::2]) / 4.0


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _window_sum(images: jax.Array, size: int, sigma: float) -> jax.Array:
    """Reflect-padded Gaussian filter summed tap by tap, row-major, like torch's direct conv.

    At MS-SSIM's coarse scales a local variance is ~1e-3 of the second moment it is taken from,
    so float32 rounding of the window sum reaches the loss at ~1e-4; summing in Faceswap's order
    reproduces most of that (the separable matmuls of `gaussian_filter` land up to 1.6e-4 away).
    The filter is linear, so its gradient is the transposed separable filter: two matmuls
    instead of differentiating size^2 padded slices, which compiled and ran several times slower.
    """
    taps = gaussian_window(size, sigma)
    kernel = np.outer(taps, taps).astype(np.float32)
    pad = size // 2
    _, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    # Without the barrier XLA fuses the statistics (and the pooling before them) into every tap.
    padded = jax.lax.optimization_barrier(padded)
    out = None
    for row in range(size):
        for col in range(size):
            term = padded[:, row : row + h, col : col + w] * kernel[row, col]
            out = term if out is None else out + term
    return out


def _window_sum_fwd(images: jax.Array, size: int, sigma: float) -> tuple[jax.Array, None]:
    return _window_sum(images, size, sigma), None


def _window_sum_bwd(size: int, sigma: float, _: None, grad: jax.Array) -> tuple[jax.Array]:
    rows, cols = (_reflect_filter_matrix(n, size, sigma).T for n in grad.shape[1:3])
    return (filter2d(grad, rows, cols),)


_window_sum.defvjp(_window_sum_fwd, _window_sum_bwd)


def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) bilinear resize weights, torch `interpolate(align_corners=False)` semantics."""
    pos = np.maximum((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5, 0.0)
    low = np.minimum(np.floor(pos).astype(np.int64), src - 1)
    high = np.minimum(low + 1, src - 1)
    frac = pos - low
    matrix = np.zeros((dst, src), np.float64)
    np.add.at(matrix, (np.arange(dst), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(dst), high), frac)
    return matrix.astype(np.float32)


def _safe_pow(x: jax.Array, power: float) -> jax.Array:
    """x ** power for x >= 0 whose gradient is 0 (not inf * 0 = NaN) where x == 0."""
    positive = x > 0
    return jnp.where(positive, jnp.where(positive, x, 1.0) ** power, 0.0)


def ms_ssim(
    y_true: jax.Array,
    y_pred: jax.Array,
    *,
    max_val: float = 1.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    power_factors: Sequence[float] = MS_SSIM_POWER_FACTORS,
    window: int | None = None,
) -> jax.Array:
    """Faceswap's multi-scale SSIM loss map, 1 - prod_s relu(term_s) ** p_s, shape (N, H, W, C).

    Scale s is the input 2x average-pooled s times; term_s is its contrast-structure map (its full
    SSIM map at the last scale), bilinearly resized back to H x W so the product stays a map that
    masks can weigh. Every scale uses the same reflect-padded Gaussian window, `window` px wide
    (default: `ms_ssim_window` of this output's size).
    """
    y_true = jnp.asarray(y_true, jnp.float32)
    y_pred = jnp.asarray(y_pred, jnp.float32)
    _, height, width, _ = y_true.shape
    if window is None:
        window = ms_ssim_window(min(height, width), filter_size, len(power_factors))
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    images = (y_true, y_pred)
    product = None
    for scale, power in enumerate(power_factors):
        if scale:
            images = tuple(_pool2(x) for x in images)
        # Rounding only matters where local variances are tiny: from the 1/4 scale on.
        blur = _window_sum if scale >= 2 else gaussian_filter
        luminance, contrast = _luminance_contrast(
            *images, lambda x, blur=blur: blur(x, window, filter_sigma), c1, c2
        )
        term = luminance * contrast if scale == len(power_factors) - 1 else contrast
        if term.shape[1:3] != (height, width):
            h, w = term.shape[1:3]
            term = filter2d(term, _bilinear_matrix(h, height), _bilinear_matrix(w, width))
        term = _safe_pow(jax.nn.relu(term), power)
        product = term if product is None else product * term
    return 1.0 - product


def _scharr_edges(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Vertical and horizontal responses of Faceswap's 5x5 edge kernels (reflect pad 2), NHWC."""
    _, h, w, _ = images.shape

    def rank2(rows: tuple[np.ndarray, ...], cols: tuple[np.ndarray, ...]) -> jax.Array:
        return sum(
            filter2d(images, filter_matrix(h, r), filter_matrix(w, c))
            for r, c in zip(rows, cols, strict=True)
        )

    return rank2(_SCHARR_DIFF, _SCHARR_SMOOTH), rank2(_SCHARR_SMOOTH, _SCHARR_DIFF)


def _gms_maps(y_true: jax.Array, y_pred: jax.Array, faceswap_compat: bool) -> jax.Array:
    """Gradient similarity (2 e_t e_p + c) / (e_t^2 + e_p^2 + c) per edge map, (N, H, W, 2C).

    Each colour channel gives one vertical and one horizontal signed response. Faceswap's kernel
    reshape instead hands map k the kernel k // C on channel k // 2: for RGB, two vertical maps of
    channel 0, one of each for channel 1, two horizontal maps of channel 2 (`faceswap_compat`).
    """
    y_true = jnp.asarray(y_true, jnp.float32)
    y_pred = jnp.asarray(y_pred, jnp.float32)
    channels = y_true.shape[-1]
    vertical, horizontal = _scharr_edges(jnp.concatenate([y_true, y_pred], axis=-1))
    edges = jnp.concatenate([vertical, horizontal], axis=-1)  # [v_t, v_p, h_t, h_p]
    if faceswap_compat:
        picks = [(2 * channels if k >= channels else 0) + k // 2 for k in range(2 * channels)]
    else:
        picks = [*range(channels), *range(2 * channels, 3 * channels)]
    picks = np.asarray(picks)
    true, pred = edges[..., picks], edges[..., picks + channels]
    return (2.0 * true * pred + _GMS_C) / (jnp.square(true) + jnp.square(pred) + _GMS_C)


def gmsd(y_true: jax.Array, y_pred: jax.Array, *, faceswap_compat: bool = False) -> jax.Array:
    """Faceswap's spatial GMSD loss, 1 - mean gradient similarity over the edge maps, (N, H, W, 1).

    As Faceswap (and its comment: unified magnitudes "don't work well" for training) this compares
    signed directional responses, not magnitudes, and returns 1 - mean similarity per pixel rather
    than the deviation, which has no spatial form for masks to weigh; see `gmsd_deviation`. Only
    the channel arrangement differs from Faceswap unless `faceswap_compat` (see `_gms_maps`).
    """
    gms = _gms_maps(y_true, y_pred, faceswap_compat)
    return 1.0 - jnp.mean(gms, axis=-1, keepdims=True)


def gmsd_deviation(
    y_true: jax.Array, y_pred: jax.Array, *, faceswap_compat: bool = False
) -> jax.Array:
    """Per-item standard deviation of the gradient similarity maps, (N,): the paper's GMSD.

    This is what Faceswap's TensorFlow-era GMSD returned (population std); it is not registered as
    a training loss because masks cannot weigh it.
    """
    return jnp.std(_gms_maps(y_true, y_pred, faceswap_compat), axis=(1, 2, 3))
