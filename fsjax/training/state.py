"""The training state: arrays only, so orbax can save it and jit can donate it."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax


class TrainState(flax.struct.PyTreeNode):
    """Step counter, model parameters, optimizer state and the model's other variables.

    Attributes:
        step: total optimizer steps taken (Faceswap's total iteration count).
        params: the model's parameter tree (`encoder`, `decoder_a`, ...).
        opt_state: the optax state for `params`.
        model_state: non-trained variable collections (BatchNorm's `batch_stats`), `{}` for
            models without any.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    model_state: Any = flax.struct.field(default_factory=dict)

    def variables(self) -> dict[str, Any]:
        """The variables `model.apply` takes."""
        return {"params": self.params, **self.model_state}
