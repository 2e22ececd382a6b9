"""The precision policy: the dtype layers compute in and the dtype parameters are kept in.

One frozen object travels with a model's build options (`BlockOptions.policy`) and with the run
context, instead of a `dtype` and a `param_dtype` field on every module. Parameters stay float32
under every policy (master weights); only the layers' arithmetic changes.
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

    def layer_kwargs(self) -> dict[str, Any]:
        """`dtype` and `param_dtype` as a Flax layer takes them."""
        return {"dtype": self.compute_dtype, "param_dtype": self.param_dtype}
