"""fsjax.losses: Faceswap's loss functions (NHWC, float32) and its per-side loss collator.

`compute(name, y_true, y_pred)` gives one function's per-item value; `collate(cfg, ...)` gives a
side's differentiable total and its logging terms, as Faceswap's `LossCollator` does.
"""

from fsjax.losses.collate import SideLoss, collate, side_losses, terms
from fsjax.losses.flip import ldr_flip
from fsjax.losses.frequency import ffl
from fsjax.losses.gradient import laploss, pixel_gradient_diff
from fsjax.losses.lpips import lpips_loss
from fsjax.losses.masking import area_resize
from fsjax.losses.pixel import l_inf_norm, logcosh, mae, mse, smooth_loss
from fsjax.losses.registry import LOSSES, LossSpec, compute, get
from fsjax.losses.structural import gaussian_filter, gmsd, gmsd_deviation, ms_ssim, ssim

__all__ = [
    "LOSSES",
    "LossSpec",
    "SideLoss",
    "area_resize",
    "collate",
    "compute",
    "ffl",
    "gaussian_filter",
    "get",
    "gmsd",
    "gmsd_deviation",
    "l_inf_norm",
    "laploss",
    "ldr_flip",
    "logcosh",
    "lpips_loss",
    "mae",
    "ms_ssim",
    "mse",
    "pixel_gradient_diff",
    "side_losses",
    "smooth_loss",
    "ssim",
    "terms",
]
