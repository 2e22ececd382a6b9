"""Structural losses: compare local image statistics rather than single pixels.

Faceswap's SSIM differs from the textbook/dm-pix one in one way that changes the numbers: the
Gaussian window is applied with reflect padding of half its size, so the SSIM map keeps the input's
H x W (dm-pix uses VALID filtering and shrinks it). The loss is 1 - SSIM per pixel and channel.
MS-SSIM and GMSD reuse the same reflect-padded filters.
"""

from __future__ import annotations

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
    """2x2 average pool of an NHWC batch; odd sizes first repeat their last row/column."""
    _, h, w, _ = images.shape
    if h % 2 or w % 2:
        images = jnp.pad(images, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    total = images[:, 0::2, 0::2] + images[:, 0::2, 1::2] + images[:, 1::2, 0::2]
    return (total + images[:, 1::2, 1::2]) / 4.0


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


def _ssim_deficits(
    y_true: jax.Array, y_pred: jax.Array, size: int, sigma: float, c1: float, c2: float
) -> tuple[jax.Array, jax.Array]:
    """1 - luminance and 1 - contrast-structure, (N, H, W, C) each, without cancellation.

    Faceswap's formula takes a local variance as E[x^2] - E[x]^2. From MS-SSIM's 1/4 scale on,
    averaging has shrunk the variance to ~1e-3 of E[x^2], so float32 loses three digits there,
    and 1 - prod(terms) loses two more (the terms are ~0.99): Faceswap's own float32 value is up
    to 1.1e-4 from its formula evaluated in float64. The same formula, rearranged:

        1 - cs = var(t - p) / (var(t) + var(p) + c2)
        1 - l = (mu_t - mu_p)^2 / (mu_t^2 + mu_p^2 + c1)

    `var(t - p)` is taken from the difference image (small, centred on ~0) and the denominator's
    variances from the images less their mean (which no variance depends on), so every quantity
    keeps float32's relative precision.
    """
    shift = jax.lax.stop_gradient(jnp.mean(y_true, axis=(1, 2), keepdims=True))
    true, pred = y_true - shift, y_pred - shift
    diff = y_true - y_pred
    stats = jnp.concatenate([true, pred, diff, jnp.square(diff),
                             jnp.square(true) + jnp.square(pred)], axis=-1)
    mean_t, mean_p, mean_d, mean_dd, mean_sq = jnp.split(
        gaussian_filter(stats, size, sigma), 5, axis=-1)
    mu_t, mu_p = mean_t + shift, mean_p + shift
    variances = jnp.maximum(mean_sq - jnp.square(mean_t) - jnp.square(mean_p), 0.0)
    var_diff = jnp.maximum(mean_dd - jnp.square(mean_d), 0.0)
    luminance = jnp.square(mean_d) / (jnp.square(mu_t) + jnp.square(mu_p) + c1)
    return luminance, var_diff / (variances + c2)


def ms_ssim_deficits(
    y_true: jax.Array,
    y_pred: jax.Array,
    *,
    max_val: float = 1.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    scales: int = len(MS_SSIM_POWER_FACTORS),
    window: int | None = None,
) -> list[jax.Array]:
    """Per scale, 1 - its MS-SSIM term at the input's H x W: 1 - contrast-structure, and at the
    last scale 1 - SSIM (see `ms_ssim`). Values above 1 are Faceswap's negative terms."""
    y_true = jnp.asarray(y_true, jnp.float32)
    y_pred = jnp.asarray(y_pred, jnp.float32)
    _, height, width, _ = y_true.shape
    if window is None:
        window = ms_ssim_window(min(height, width), filter_size, scales)
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    images = (y_true, y_pred)
    out = []
    for scale in range(scales):
        if scale:
            images = tuple(_pool2(x) for x in images)
        lum, con = _ssim_deficits(*images, window, filter_sigma, c1, c2)
        deficit = lum + con - lum * con if scale == scales - 1 else con
        if deficit.shape[1:3] != (height, width):
            # Bilinear weights sum to one, so resizing 1 - term is 1 - (resized term).
            h, w = deficit.shape[1:3]
            deficit = filter2d(deficit, _bilinear_matrix(h, height), _bilinear_matrix(w, width))
        out.append(deficit)
    return out


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
    (default: `ms_ssim_window` of this output's size). Computed as -expm1(sum_s p_s log1p(-d_s))
    from the deficits d_s = 1 - term_s (`ms_ssim_deficits`), which is the same value without the
    cancellation of 1 - prod at terms near 1.
    """
    deficits = ms_ssim_deficits(y_true, y_pred, max_val=max_val, filter_size=filter_size,
                                filter_sigma=filter_sigma, k1=k1, k2=k2,
                                scales=len(power_factors), window=window)
    log_product, gone = 0.0, False
    for deficit, power in zip(deficits, power_factors, strict=True):
        if power == 0:
            continue  # x ** 0 is 1, as in Faceswap (even where relu made the term 0)
        zero = deficit >= 1.0  # relu(term) == 0: the product is 0 (gradient 0 there)
        safe = jnp.where(zero, 0.0, deficit)
        log_product = log_product + power * jnp.log1p(-safe)
        gone = gone | zero
    return jnp.where(gone, 1.0, -jnp.expm1(log_product))


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
