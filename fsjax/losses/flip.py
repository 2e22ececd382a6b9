"""NVIDIA's LDR-FLIP (Andersson et al. 2020) as a per-pixel loss map, the way Faceswap uses it.

FLIP models what a viewer notices when flipping between two images: a colour difference after
the eye's contrast sensitivity blurs each opponent channel, raised to a power that grows where
edges or points differ. Faceswap offers it only as a secondary loss (alone it leaves a grid on
the output). Inputs are BGR, as Faceswap's models train; all filters run as padded matrices.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from fsjax.losses.structural import filter2d, filter_matrix

_PRECISION = jax.lax.Precision.HIGHEST

PIXELS_PER_DEGREE = 0.7 * 3840 / 0.7 * np.pi / 180
"""A 0.7 m wide 4K screen seen from 0.7 m (FLIP's and Faceswap's default observer)."""

_RGB_TO_XYZ = np.array(
    [
        [10135552 / 24577794, 8788810 / 24577794, 4435075 / 24577794],
        [2613072 / 12288897, 8788810 / 12288897, 887015 / 12288897],
        [1425312 / 73733382, 8788810 / 73733382, 70074185 / 73733382],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ).astype(np.float32)
_RGB_TO_XYZ = _RGB_TO_XYZ.astype(np.float32)
_WHITE = np.array([0.950428545, 1.0, 1.088900371], np.float32)  # D65 reference white
_INV_WHITE = np.float32(1.0) / _WHITE

# Contrast sensitivity of the achromatic, red-green and blue-yellow channels: sums of
# a * sqrt(pi / b) * exp(-pi^2 r^2 / b) Gaussians (r in degrees).
_CSF = (((1.0, 0.0047),), ((1.0, 0.0053),), ((34.1, 0.04), (13.5, 0.025)))
_FEATURE_WIDTH = 0.082  # degrees; peak-to-trough of the edge detector


def _mix(image: jax.Array, matrix: np.ndarray) -> jax.Array:
    """Per-pixel 3x3 colour transform of an NHWC image."""
    return jnp.einsum("nhwc,dc->nhwd", image, jnp.asarray(matrix), precision=_PRECISION)


def _srgb_to_ycxcz(image: jax.Array) -> jax.Array:
    limit = 0.04045
    linear = jnp.where(
        image > limit, ((jnp.maximum(image, limit) + 0.055) / 1.055) ** 2.4, image / 12.92
    )
    return _xyz_to_ycxcz(_mix(linear, _RGB_TO_XYZ))


def _xyz_to_ycxcz(xyz: jax.Array) -> jax.Array:
    x, y, z = jnp.split(xyz * _INV_WHITE, 3, axis=-1)
    return jnp.concatenate([116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)], axis=-1)


def _ycxcz_to_linear_rgb(ycxcz: jax.Array) -> jax.Array:
    lum, cx, cz = jnp.split(ycxcz, 3, axis=-1)
    y = (lum + 16.0) / 116.0
    xyz = jnp.concatenate([y + cx / 500.0, y, y - cz / 200.0], axis=-1) * _WHITE
    return _mix(xyz, _XYZ_TO_RGB)


def _linear_rgb_to_lab(rgb: jax.Array) -> jax.Array:
    delta = 6.0 / 29.0
    xyz = _mix(rgb, _RGB_TO_XYZ) * _INV_WHITE
    # The clamp keeps the cube root's gradient finite on the branch that is not taken.
    cube_root = jnp.maximum(xyz, delta**3) ** (1.0 / 3.0)
    f = jnp.where(xyz > delta**3, cube_root, xyz * (1.0 / (3.0 * delta**2)) + 4.0 / 29.0)
    fx, fy, fz = jnp.split(f, 3, axis=-1)
    return jnp.concatenate([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def _hunt(lab: jax.Array) -> jax.Array:
    """Hunt effect: chroma counts less in dark colours (a, b scaled by L / 100)."""
    lightness = lab[..., :1]
    return jnp.concatenate([lightness, lab[..., 1:] * (lightness * 0.01)], axis=-1)


def _safe_norm(x: jax.Array) -> jax.Array:
    """L2 norm over the last axis, keepdims, with gradient 0 (not NaN) at the origin."""
    square = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    positive = square > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, square, 1.0)), 0.0)


def _hyab(lab_true: jax.Array, lab_pred: jax.Array, epsilon: float) -> jax.Array:
    """HyAB distance |dL| + ||(da, db)||, with |dL| floored at sqrt(epsilon) as in FLIP."""
    delta = lab_true - lab_pred
    return jnp.sqrt(jnp.maximum(jnp.square(delta[..., :1]), epsilon)) + _safe_norm(delta[..., 1:])


def _csf_filter(ycxcz: jax.Array, pixels_per_degree: float) -> jax.Array:
    """Blur Y, Cx, Cz with their contrast-sensitivity kernels (replicate padding)."""
    _, h, w, _ = ycxcz.shape
    largest = max(b for terms in _CSF for _, b in terms)
    radius = int(np.ceil(3 * np.sqrt(largest / (2 * np.pi**2)) * pixels_per_degree))
    dist_sq = (np.arange(-radius, radius + 1) / pixels_per_degree) ** 2
    channels = []
    for index, terms in enumerate(_CSF):
        # Each term is a separable Gaussian; the kernel is normalised over its full 2-D sum.
        gaussians = [(a * np.sqrt(np.pi / b), np.exp(-(np.pi**2) * dist_sq / b)) for a, b in terms]
        total = sum(scale * g.sum() ** 2 for scale, g in gaussians)
        image = ycxcz[..., index : index + 1]
        channels.append(
            sum(
                filter2d(
                    image,
                    filter_matrix(h, g * (scale / total), "replicate"),
                    filter_matrix(w, g, "replicate"),
                )
                for scale, g in gaussians
            )
        )
    return jnp.concatenate(channels, axis=-1)


def _feature_taps(pixels_per_degree: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D factors (smoothing, edge, point) of FLIP's separable feature detectors.

    The 2-D kernels are g(y) * f(x) with f = -x g (edge) or (x^2 / s^2 - 1) g (point); their
    positive and negative weights are normalised to sum to 1 and -1, which factorises too.
    """
    std = 0.5 * _FEATURE_WIDTH * pixels_per_degree
    radius = int(np.ceil(3 * std))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    gauss = np.exp(-(x**2) / (2 * std**2))

    def signed_normalise(f: np.ndarray) -> np.ndarray:
        return np.where(f < 0, f / -f[f < 0].sum(), f / f[f > 0].sum())

    edge = signed_normalise(-x * gauss)
    point = signed_normalise((x**2 / std**2 - 1) * gauss)
    return gauss / gauss.sum(), edge, point


def _feature_difference(
    ycxcz_true: jax.Array, ycxcz_pred: jax.Array, pixels_per_degree: float, epsilon: float
) -> jax.Array:
    """Largest edge or point strength difference on normalised luminance, (N, H, W, 1)."""
    _, h, w, _ = ycxcz_true.shape
    smooth, edge, point = _feature_taps(pixels_per_degree)
    lum = (jnp.concatenate([ycxcz_true[..., :1], ycxcz_pred[..., :1]], axis=-1) + 16.0) / 116.0

    def response(taps: np.ndarray) -> jax.Array:
        """Per-pixel (x, y) response norm for [true, pred]: (N, H, W, 2)."""
        along_x = filter2d(
            lum, filter_matrix(h, smooth, "replicate"), filter_matrix(w, taps, "replicate")
        )
        along_y = filter2d(
            lum, filter_matrix(h, taps, "replicate"), filter_matrix(w, smooth, "replicate")
        )
        both = jnp.stack([along_x, along_y], axis=-1)
        return _safe_norm(both)[..., 0]

    edges, points = response(edge), response(point)
    delta = jnp.maximum(
        jnp.abs(edges[..., :1] - edges[..., 1:]), jnp.abs(points[..., 1:] - points[..., :1])
    )
    return jnp.maximum(delta, epsilon)


def ldr_flip(
    y_true: jax.Array,
    y_pred: jax.Array,
    *,
    color_order: Literal["bgr", "rgb"] = "bgr",
    computed_distance_exponent: float = 0.7,
    feature_exponent: float = 0.5,
    lower_threshold_exponent: float = 0.4,
    upper_threshold_exponent: float = 0.95,
    epsilon: float = 1e-15,
    pixels_per_degree: float = PIXELS_PER_DEGREE,
) -> jax.Array:
    """LDR-FLIP error map in [0, 1], shape (N, H, W, 1).

    Args:
        y_true: Target batch, NHWC in [0, 1] (clipped), channels in `color_order`.
        y_pred: Predicted batch, same shape.
        color_order: "bgr" (Faceswap's models) or "rgb".
        computed_distance_exponent: qc, applied to the HyAB colour distance.
        feature_exponent: qf, applied to the feature difference.
        lower_threshold_exponent: pc, where the colour error map changes slope.
        upper_threshold_exponent: pt, the error value at that point.
        epsilon: Floor of the squared lightness difference and of the feature difference.
        pixels_per_degree: Observer's resolution; sets the filter widths.

    Returns:
        float32 map: colour error ** (1 - feature error).
    """
    if color_order not in ("bgr", "rgb"):
        raise ValueError(f"color_order must be 'bgr' or 'rgb', got {color_order!r}")
    y_true = jnp.clip(jnp.asarray(y_true, jnp.float32), 0.0, 1.0)
    y_pred = jnp.clip(jnp.asarray(y_pred, jnp.float32), 0.0, 1.0)
    if color_order == "bgr":
        y_true, y_pred = y_true[..., ::-1], y_pred[..., ::-1]
    ycxcz_true, ycxcz_pred = _srgb_to_ycxcz(y_true), _srgb_to_ycxcz(y_pred)

    # Colour pipeline: CSF-filtered opponent colours -> Hunt-adjusted L*a*b* -> HyAB ** qc,
    # mapped to [0, 1] against the largest distance (green vs blue) in two linear pieces.
    def perceived(ycxcz: jax.Array) -> jax.Array:
        filtered = _csf_filter(ycxcz, pixels_per_degree)
        return _hunt(_linear_rgb_to_lab(jnp.clip(_ycxcz_to_linear_rgb(filtered), 0.0, 1.0)))

    primaries = jnp.asarray(np.eye(3, dtype=np.float32)[1:].reshape(2, 1, 1, 3))  # green, blue
    green, blue = jnp.split(_hunt(_linear_rgb_to_lab(primaries)), 2, axis=0)
    c_max = _hyab(green, blue, epsilon)[0, 0, 0, 0] ** computed_distance_exponent
    colour = _hyab(perceived(ycxcz_true), perceived(ycxcz_pred), epsilon)
    colour = colour**computed_distance_exponent
    pcc_max = lower_threshold_exponent * c_max
    pt = upper_threshold_exponent
    colour = jnp.where(
        colour < pcc_max,
        (pt / pcc_max) * colour,
        pt + (colour - pcc_max) / (c_max - pcc_max) * (1.0 - pt),
    )

    features = _feature_difference(ycxcz_true, ycxcz_pred, pixels_per_degree, epsilon)
    features = (features * (1.0 / np.sqrt(2.0))) ** feature_exponent
    return colour ** (1.0 - features)
