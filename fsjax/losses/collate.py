"""One side's training loss, exactly as Faceswap's `LossCollator` + `BatchLoss` compute it.

For every face output (small to large) each configured function gives a per-item value:

* spatial functions: the loss map is multiplied by the face mask (penalized mask loss), boosted in
  the eye and mouth areas (multipliers > 1 only), then averaged over (H, W, C). The average is over
  the whole image, not the mask area, so masked losses are smaller than unmasked ones.
* non-spatial functions: the function is run on the face-masked inputs, plus `multiplier x` the
  function on the eye-masked and mouth-masked inputs.

weighted = unweighted * weight; the side total is the sum over outputs and functions of the batch
means, plus the batch mean of the learned-mask loss. The training objective is total_A + total_B,
which the caller adds. Everything here is traceable, so it runs inside the jitted train step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fsjax.config import LossConfig
from fsjax.losses import masking, registry

MaskArg = jax.Array | Sequence[jax.Array] | None
"""One mask (N, H, W, 1) at the largest output size, resized per output; or one per output."""


class SideLoss(NamedTuple):
    """Per-item losses of one side, the layout of Faceswap's `BatchLoss`.

    Attributes:
        unweighted: Per face output, loss name -> (N,) value before weighting.
        weighted: Per face output, loss name -> (N,) value times the function's weight.
        mask: (N,) learned-mask loss, or None when the model learns no mask.
    """

    unweighted: tuple[dict[str, jax.Array], ...]
    weighted: tuple[dict[str, jax.Array], ...]
    mask: jax.Array | None

    def total(self) -> jax.Array:
        """Scalar objective of this side: sum of batch means of every weighted term + mask."""
        total = jnp.zeros((), jnp.float32)
        for per_output in self.weighted:
            for value in per_output.values():
                total = total + jnp.mean(value)
        if self.mask is not None:
            total = total + jnp.mean(self.mask)
        return total


def _f32(x: jax.Array) -> jax.Array:
    # Models may compute in bf16/fp16; losses and their reductions always run in float32.
    return jnp.asarray(x, jnp.float32)


def _mask_f32(name: str, mask: jax.Array) -> jax.Array:
    # The loader's masks are uint8 0..255; taking them as-is would scale the loss by up to 255.
    if not jnp.issubdtype(jnp.asarray(mask).dtype, jnp.floating):
        raise ValueError(f"{name} must be float in [0, 1] (divide the loader's uint8 by 255)")
    return _f32(mask)


def _masks_per_output(
    name: str, mask: jax.Array | Sequence[jax.Array], sizes: list[tuple[int, int]]
) -> list[jax.Array]:
    """Resolve a mask argument to one float32 (N, h, w, 1) array per output size."""
    if isinstance(mask, (list, tuple)):
        if len(mask) != len(sizes):
            raise ValueError(f"{name}: got {len(mask)} masks for {len(sizes)} outputs")
        masks = [_mask_f32(name, m) for m in mask]
    else:
        masks = [masking.area_resize(_mask_f32(name, mask), h, w) for h, w in sizes]
    for mask_, size in zip(masks, sizes, strict=True):
        if mask_.ndim != 4 or mask_.shape[1:3] != size or mask_.shape[3] != 1:
            raise ValueError(f"{name}: mask shape {mask_.shape} does not fit output size {size}")
    return masks


class _OutputMasks(NamedTuple):
    """Masks in use for one output size; None where a mask is switched off."""

    face: jax.Array | None
    eye: jax.Array | None
    mouth: jax.Array | None


def _resolve_masks(
    cfg: LossConfig, sizes: list[tuple[int, int]], face: MaskArg, eye: MaskArg, mouth: MaskArg
) -> list[_OutputMasks]:
    """Pick the masks the config uses (by name, never by position) and size them per output.

    Faceswap only builds eye/mouth masks with penalized mask loss on and a multiplier above 1,
    so the same conditions switch them on here. Faceswap then hands the masks over by position:
    with the eye multiplier at 1 the mouth mask lands in the eye slot, where a multiplier of 1
    ignores it, and the mouth weighting is lost. `cfg.faceswap_compat` reproduces that.
    """
    mouth_lost = cfg.faceswap_compat and cfg.eye_multiplier <= 1
    wanted = {
        "mask_face": (cfg.penalized_mask_loss, face),
        "mask_eye": (cfg.penalized_mask_loss and cfg.eye_multiplier > 1, eye),
        "mask_mouth": (cfg.penalized_mask_loss and cfg.mouth_multiplier > 1 and not mouth_lost,
                       mouth),
    }
    resolved = {}
    for name, (use, mask) in wanted.items():
        if use and mask is None:
            raise ValueError(f"{name} is required by the loss config but was not given")
        resolved[name] = _masks_per_output(name, mask, sizes) if use else None
    return [
        _OutputMasks(*(None if m is None else m[idx] for m in resolved.values()))
        for idx in range(len(sizes))
    ]


def _output_losses(
    cfg: LossConfig,
    specs: dict[str, registry.LossSpec],
    target: jax.Array,
    pred: jax.Array,
    masks: _OutputMasks,
) -> dict[str, jax.Array]:
    """Unweighted (N,) value of every function for one face output."""
    compat = cfg.faceswap_compat
    # Non-spatial losses can only see masks through their inputs, weighted by the multipliers.
    input_masks = [
        (mask, weight)
        for mask, weight in (
            (masks.face, 1.0),
            (masks.eye, cfg.eye_multiplier),
            (masks.mouth, cfg.mouth_multiplier),
        )
        if mask is not None
    ]
    values: dict[str, jax.Array] = {}
    for name, spec in specs.items():
        if spec.spatial:
            loss_map = spec(target, pred, faceswap_compat=compat)
            loss_map = masking.weight_map(
                loss_map, *masks, cfg.eye_multiplier, cfg.mouth_multiplier
            )
            values[name] = jnp.mean(loss_map, axis=tuple(range(1, loss_map.ndim)))
        elif masks.face is None:
            values[name] = spec(target, pred, faceswap_compat=compat)
        else:
            values[name] = sum(
                weight * spec(target * mask, pred * mask, faceswap_compat=compat)
                for mask, weight in input_masks
            )
    return values


def side_losses(
    cfg: LossConfig,
    targets: Sequence[jax.Array],
    predictions: Sequence[jax.Array],
    *,
    mask_face: MaskArg = None,
    mask_eye: MaskArg = None,
    mask_mouth: MaskArg = None,
    mask_prediction: jax.Array | None = None,
    mask_target: jax.Array | None = None,
) -> SideLoss:
    """Per-item losses of one side (see the module docstring for the rules).

    Args:
        cfg: Loss options; `cfg.functions` gives the functions and weights.
        targets: Face targets, one NHWC float array per output, small to large.
        predictions: Face predictions matching `targets`.
        mask_face: Face mask; needed when `cfg.penalized_mask_loss` (or as the default
            learned-mask target).
        mask_eye: Eye mask; needed when penalized and `cfg.eye_multiplier > 1`.
        mask_mouth: Mouth mask; needed when penalized and `cfg.mouth_multiplier > 1`.
        mask_prediction: Learned mask (N, h, w, 1); required exactly when `cfg.learn_mask`.
        mask_target: Its target; defaults to the face mask at the prediction's size.

    Returns:
        The per-item losses; `.total()` is the side's scalar objective.
    """
    if not targets or len(targets) != len(predictions):
        raise ValueError(
            f"need matching targets/predictions, got {len(targets)}/{len(predictions)}"
        )
    for target, pred in zip(targets, predictions, strict=True):
        if target.shape != pred.shape or target.ndim != 4 or target.shape[-1] == 1:
            raise ValueError(
                f"face target {target.shape} / prediction {pred.shape} must be "
                "equal NHWC shapes with colour channels"
            )
    if (mask_prediction is not None) != cfg.learn_mask:
        raise ValueError(
            f"learn_mask={cfg.learn_mask} but mask_prediction was "
            f"{'given' if mask_prediction is not None else 'not given'}"
        )
    sizes = [tuple(t.shape[1:3]) for t in targets]
    masks = _resolve_masks(cfg, sizes, mask_face, mask_eye, mask_mouth)
    weights = cfg.functions
    specs = {name: registry.get(name, lpips_weights=cfg.lpips_weights) for name in weights}
    unweighted = tuple(
        _output_losses(cfg, specs, _f32(target), _f32(pred), out_masks)
        for target, pred, out_masks in zip(targets, predictions, masks, strict=True)
    )
    weighted = tuple({k: v * weights[k] for k, v in out.items()} for out in unweighted)
    mask_loss = None
    if mask_prediction is not None:
        mask_loss = _learned_mask_loss(cfg, _f32(mask_prediction), mask_target, mask_face)
    return SideLoss(unweighted, weighted, mask_loss)


def _learned_mask_loss(
    cfg: LossConfig, prediction: jax.Array, target: jax.Array | None, mask_face: MaskArg
) -> jax.Array:
    """(N,) mask loss: unmasked, unweighted, mean over (H, W, 1)."""
    size = tuple(prediction.shape[1:3])
    if target is None:
        if mask_face is None:
            raise ValueError("learn_mask needs mask_target or mask_face")
        if isinstance(mask_face, (list, tuple)):
            matches = [m for m in mask_face if tuple(m.shape[1:3]) == size]
            if not matches:
                raise ValueError(f"no face mask of the learned mask's size {size}")
            target = matches[-1]
        else:
            target = masking.area_resize(_mask_f32("mask_face", mask_face), *size)
    target = _mask_f32("mask_target", target)
    if target.shape != prediction.shape:
        raise ValueError(f"mask target {target.shape} != mask prediction {prediction.shape}")
    loss_map = registry.get(cfg.mask_loss_function)(target, prediction)
    return jnp.mean(loss_map, axis=(1, 2, 3))


def terms(loss: SideLoss, side: str) -> dict[str, jax.Array]:
    """Batch-mean scalars under Faceswap's TensorBoard names, e.g. `face_A`, `weighted_A/ssim`.

    With several face outputs the output index joins the side label (`face_A_0`, `face_A_1`).
    """
    out: dict[str, jax.Array] = {}
    several = len(loss.weighted) > 1
    for idx, (weighted, unweighted) in enumerate(zip(loss.weighted, loss.unweighted, strict=True)):
        key = f"{side}_{idx}" if several else side
        w_means = {k: jnp.mean(v) for k, v in weighted.items()}
        out[f"face_{key}"] = sum(w_means.values(), jnp.zeros((), jnp.float32))
        out.update({f"weighted_{key}/{k}": v for k, v in w_means.items()})
        out.update({f"unweighted_{key}/{k}": jnp.mean(v) for k, v in unweighted.items()})
    if loss.mask is not None:
        out[f"mask_{side}"] = jnp.mean(loss.mask)
    return out


def collate(
    cfg: LossConfig,
    targets: Sequence[jax.Array],
    predictions: Sequence[jax.Array],
    *,
    side: str,
    mask_face: MaskArg = None,
    mask_eye: MaskArg = None,
    mask_mouth: MaskArg = None,
    mask_prediction: jax.Array | None = None,
    mask_target: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Scalar loss of one side and its logging terms; arguments as for `side_losses`.

    Returns:
        (total, terms): the float32 scalar to differentiate, and the scalars named as in
        Faceswap's logs with `side` as the label (`face_A`, `weighted_A/mse`, `mask_A`, ...).
    """
    loss = side_losses(
        cfg,
        targets,
        predictions,
        mask_face=mask_face,
        mask_eye=mask_eye,
        mask_mouth=mask_mouth,
        mask_prediction=mask_prediction,
        mask_target=mask_target,
    )
    return loss.total(), terms(loss, side)
