"""Faceswap's MS-SSIM formula (lib/model/losses/perceptual_loss.py, MSSIMLoss, spatial output)
evaluated plainly in float64 NumPy: the yardstick for fsjax's float32 `ms_ssim`.

Per scale: 2x2 average pool (odd sizes repeat their last row/column first), reflect-padded
Gaussian local means, luminance (2 m_t m_p + c1) / (m_t^2 + m_p^2 + c1) and contrast-structure
(2 E[tp] - 2 m_t m_p + c2) / (max(E[t^2 + p^2] - m_t^2 - m_p^2, 0) + c2), bilinear resize back
(align_corners=False), relu; the loss is 1 - prod_s term_s ** power_s with term = cs, and
luminance * cs at the last scale. Written from the formula, not from fsjax's code.
"""

import numpy as np

POWERS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian(size: int, sigma: float) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2.0
    taps = np.exp(-np.square(offsets) / (2.0 * sigma**2))
    return np.outer(taps, taps) / np.outer(taps, taps).sum()


def _local_mean(x: np.ndarray, size: int, sigma: float) -> np.ndarray:
    kernel, pad = _gaussian(size, sigma), size // 2
    _, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = np.zeros_like(x)
    for i in range(size):
        for j in range(size):
            out += kernel[i, j] * padded[:, i:i + h, j:j + w]
    return out


def _pool(x: np.ndarray) -> np.ndarray:
    _, h, w, _ = x.shape
    x = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return (x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) / 4.0


def _resize_weights(src: int, dst: int) -> np.ndarray:
    weights = np.zeros((dst, src))
    for out in range(dst):
        pos = max((out + 0.5) * src / dst - 0.5, 0.0)
        low = min(int(pos), src - 1)
        frac = pos - low
        weights[out, low] += 1.0 - frac
        weights[out, min(low + 1, src - 1)] += frac
    return weights


def window(size: int, filter_size: int = 11, scales: int = len(POWERS)) -> int:
    """Faceswap shrinks the window to the smallest scale (made odd)."""
    smallest = size >> (scales - 1)
    if smallest >= filter_size:
        return filter_size
    return smallest - 1 if smallest % 2 == 0 else smallest


def ms_ssim(y_true, y_pred, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03):
    """(loss map (N, H, W, C), [term_s at H x W before relu, per scale]) in float64."""
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    _, height, width, _ = t.shape
    size, c1, c2 = window(min(height, width)), k1**2, k2**2
    terms = []
    for scale in range(len(POWERS)):
        if scale:
            t, p = _pool(t), _pool(p)
        m_t, m_p = _local_mean(t, size, sigma), _local_mean(p, size, sigma)
        luminance = (2 * m_t * m_p + c1) / (m_t**2 + m_p**2 + c1)
        variances = _local_mean(t * t + p * p, size, sigma) - m_t**2 - m_p**2
        contrast = ((2 * _local_mean(t * p, size, sigma) - 2 * m_t * m_p + c2)
                    / (np.maximum(variances, 0.0) + c2))
        term = luminance * contrast if scale == len(POWERS) - 1 else contrast
        rows, cols = _resize_weights(term.shape[1], height), _resize_weights(term.shape[2], width)
        terms.append(np.einsum("ah,nhwc,bw->nabc", rows, term, cols))
    product = np.ones_like(terms[0])
    for term, power in zip(terms, POWERS, strict=True):
        product = product * np.maximum(term, 0.0) ** power
    return 1.0 - product, terms


def draw(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A pair drawn as the loss fixtures' generator draws its first one (seed 0 is the fixture's
    y_true_S / y_pred_S at S = 64): uniform faces, prediction = clip(true + N(0, 0.05))."""
    rng = np.random.default_rng(seed)
    true = rng.random((2, size, size, 3), dtype=np.float32)
    noise = rng.normal(0.0, 0.05, true.shape).astype(np.float32)
    return true, np.clip(true + noise, 0.0, 1.0)
