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
    """`(trainable, frozen)` sub-model dicts: frozen sub-models get no gradient, no update and no
    optimizer state."""
    return ({k: v for k, v in params.items() if k not in frozen},
            {k: v for k, v in params.items() if k in frozen})
