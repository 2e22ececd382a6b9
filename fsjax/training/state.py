"""The training state: arrays only, so orbax can save it and jit can donate it."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax

from fsjax.optim.loss_scale import LossScaleState


class TrainState(flax.struct.PyTreeNode):
    """Step counter, model parameters, optimizer state and the model's other variables.

    Attributes:
        step: total optimizer steps taken (Faceswap's total iteration count).
        params: the model's parameter tree (`encoder`, `decoder_a`, ...).
        opt_state: the optax state for the trainable part of `params` (frozen sub-models have
            none).
        model_state: non-trained variable collections (BatchNorm's `batch_stats`), `{}` for
            models without any.
        loss_scale: the dynamic loss scale and its count of finite steps
            (`fsjax.optim.loss_scale`); every policy carries it so that saves have one layout,
            only float16 uses it.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    model_state: Any = flax.struct.field(default_factory=dict)
    loss_scale: LossScaleState | None = None

    def variables(self) -> dict[str, Any]:
        """The variables `model.apply` takes."""
        return {"params": self.params, **self.model_state}


def split_frozen(params: dict[str, Any], frozen: tuple[str, ...]) -> tuple[dict, dict]:
    """`(trainable, frozen)` trees: frozen parts get no gradient, no update and no optimizer
    state. A frozen name is a sub-model (`encoder`) or a model nested in one
    (`encoder/efficientnetb0`, Phaze-A's pretrained network); `merge` puts the two back."""
    trainable: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    nested: dict[str, set[str]] = {}
    for name in frozen:
        sub, _, child = name.partition("/")
        if child:
            nested.setdefault(sub, set()).add(child)
    for sub, tree in params.items():
        if sub in frozen:
            fixed[sub] = tree
        elif sub in nested:
            trainable[sub] = {k: v for k, v in tree.items() if k not in nested[sub]}
            fixed[sub] = {k: v for k, v in tree.items() if k in nested[sub]}
        else:
            trainable[sub] = tree
    return trainable, fixed


def merge(trainable: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """The whole tree again from `split_frozen`'s two parts."""
    out = dict(trainable)
    for sub, tree in fixed.items():
        out[sub] = {**out[sub], **tree} if sub in out else tree
    return out


def keep_frozen(new: dict[str, Any], old: dict[str, Any], frozen: tuple[str, ...]) -> dict:
    """`new` with the frozen parts taken from `old` (a collection such as `batch_stats`)."""
    if not frozen:
        return new
    changed, _ = split_frozen(new, frozen)
    _, kept = split_frozen(old, frozen)
    return merge(changed, kept)
