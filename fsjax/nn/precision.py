"""The precision policy: the dtype layers compute in and the dtype parameters are kept in.

One frozen object travels with a model's build options (`BlockOptions.policy`) and with the run
context, instead of a `dtype` and a `param_dtype` field on every module. `model.dtype` names it:

* `float32` (default): everything in float32.
* `bfloat16`: layers compute in bfloat16. Its exponent range is float32's, so no loss scaling
  is needed; it is the policy for TPUs and recent GPUs (their matrix units run it at many times
  the float32 rate).
* `float16`: Faceswap's `mixed_precision` (Keras's `mixed_float16`): layers compute in float16
  and the loss is scaled dynamically (`fsjax.optim.loss_scale`) so small gradients do not
  underflow.

What stays float32 under every policy, and why:

* Parameters and the optimizer state (master weights): an update of lr * g is far below a
  half-precision weight's resolution and would be lost. Layers cast the weights they read.
* Normalisation statistics (`fsjax.nn.normalization`): a mean and variance over thousands of
  values lose their low bits, or overflow float16, in half precision.
* The final activations, the sigmoids of the face and learned-mask outputs
  (`fsjax.nn.blocks.conv2d_output`, `fsjax.nn.layers.activation`): Faceswap builds them with
  `dtype="float32"` whatever the policy, so every loss sees float32 images and masks.
* Every loss, the loss collation and the gradients the optimizer reads: the losses are
  computed from those float32 outputs and float32 targets; gradients of float32 parameters are
  float32 (loss scaling unscales them before clipping, weight decay or accumulation see them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from fsjax.config import DTYPES as POLICIES


@dataclasses.dataclass(frozen=True)
class Policy:
    """Compute and parameter dtypes of a model's layers."""

    # dtype objects, not scalar types, so that Policy() == Policy.named("float32") hash alike
    compute_dtype: Any = jnp.dtype(jnp.float32)
    param_dtype: Any = jnp.dtype(jnp.float32)

    @classmethod
    def named(cls, name: str) -> Policy:
        """The policy `model.dtype = name` selects: layers compute in `name`, parameters float32."""
        if name not in POLICIES:
            raise ValueError(f"unknown precision policy {name!r}; expected one of {POLICIES}")
        return cls(compute_dtype=jnp.dtype(name), param_dtype=jnp.dtype(jnp.float32))

    @property
    def name(self) -> str:
        return jnp.dtype(self.compute_dtype).name

    @property
    def loss_scaling(self) -> bool:
        """Whether training scales the loss (float16's narrow exponent range needs it)."""
        return jnp.dtype(self.compute_dtype) == jnp.dtype(jnp.float16)

    def describe(self) -> str:
        """One line for `--summary` and the run's start."""
        line = (f"{self.name} compute, {jnp.dtype(self.param_dtype).name} parameters and "
                "optimizer state; normalisation, outputs and losses float32")
        return line + (", dynamic loss scaling" if self.loss_scaling else "")

    def layer_kwargs(self) -> dict[str, Any]:
        """`dtype` and `param_dtype` as a Flax layer takes them."""
        return {"dtype": self.compute_dtype, "param_dtype": self.param_dtype}
