"""The loss fixtures' inputs: `losses_*.npz` hold Faceswap's outputs and only checksums of the
inputs, which the tests redraw with `np.random.default_rng(0)` in the generator's order."""

import functools

import numpy as np


@functools.cache
def reference(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return dict(data)


@functools.cache
def inputs() -> dict[str, np.ndarray]:
    """Redraw the fixture's inputs: faces, then masks, then learned-mask tensors."""
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for size, suffix in ((64, ""), (128, ""), (64, "_b"), (128, "_b")):
        true = rng.random((2, size, size, 3), dtype=np.float32)
        noise = rng.normal(0.0, 0.05, true.shape).astype(np.float32)
        out[f"y_true{suffix}_{size}"] = true
        out[f"y_pred{suffix}_{size}"] = np.clip(true + noise, 0.0, 1.0)
    for size in (64, 128):
        for side in "ab":
            for kind in ("face", "eye", "mouth"):
                # Stored NCHW (2, 1, S, S) in the fixture; fsjax wants NHWC.
                mask = rng.random((2, 1, size, size), dtype=np.float32)
                out[f"mask_{kind}_{side}_{size}"] = mask.transpose(0, 2, 3, 1)
    for size, side in ((64, "a"), (64, "b"), (128, "a"), (128, "b")):
        target = rng.random((2, size, size, 1), dtype=np.float32)
        noise = rng.normal(0.0, 0.1, target.shape).astype(np.float32)
        out[f"mask_target_{side}_{size}"] = target
        out[f"mask_pred_{side}_{size}"] = np.clip(target + noise, 0.0, 1.0)
    return out
