"""The training state: arrays only, so orbax can save it and jit can donate it."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax


class TrainState(flax.struct.PyTreeNode):
    """Step counter, model parameters and optimizer state.

    Attributes:
        step: total optimizer steps taken (Faceswap's total iteration count).
        params: the model's parameter tree (`encoder`, `decoder_a`, ...).
        opt_state: the optax state for `params`.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
