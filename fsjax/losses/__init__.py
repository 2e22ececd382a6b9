"""fsjax.losses: Faceswap's loss functions (NHWC, float32) and its per-side loss collator.

`compute(name, y_true, y_pred)` gives one function's per-item value; `collate(cfg, ...)` gives a
side's differentiable total and its logging terms, as Faceswap's `LossCollator` does.
"""

from fsjax.losses.collate import SideLoss, collate, side_losses, terms
from fsjax.losses.masking import area_resize
from fsjax.losses.pixel import mae, mse
from fsjax.losses.registry import LOSSES, LossSpec, compute, get
from fsjax.losses.structural import gaussian_filter, ssim

__all__ = [
    "LOSSES",
    "LossSpec",
    "SideLoss",
    "area_resize",
    "collate",
    "compute",
    "gaussian_filter",
    "get",
    "mae",
    "mse",
    "side_losses",
    "ssim",
    "terms",
]
