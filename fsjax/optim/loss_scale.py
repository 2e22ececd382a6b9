"""Dynamic loss scaling for float16 training (Faceswap's `mixed_precision`).

float16 keeps 5 exponent bits: gradients smaller than about 6e-8 flush to zero on the way back
through the layers. The loss is multiplied by a large scale before differentiation so the
backward pass stays in float16's range, and the gradients are divided by it again before
anything reads them. The scale adapts as Keras's `LossScaleOptimizer` does (Faceswap 2 wraps
its optimizer in it; Faceswap 3 uses torch's `GradScaler`, which follows the same rule):

* it starts at 2**15 (Keras 2 and 3; torch starts at 2**16);
* a step whose unscaled gradients are not all finite is skipped (nothing is updated) and the
  scale halves (Keras 2 never goes below 1, which fsjax keeps);
* after 2000 consecutive finite steps the scale doubles and the count starts again.

The state is two arrays carried in the train state and saved with the model, so a resumed run
continues the schedule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fsjax.config import ExperimentConfig


class LossScaleState(NamedTuple):
    """The current scale and the finite steps taken since it last changed."""

    scale: jax.Array  # float32 scalar
    good_steps: jax.Array  # int32 scalar


@dataclasses.dataclass(frozen=True)
class DynamicLossScale:
    """Keras's dynamic loss scale rule, with its defaults."""

    initial: float = 2.0**15
    growth_steps: int = 2000
    factor: float = 2.0
    minimum: float = 1.0

    @classmethod
    def configured(cls, config: ExperimentConfig) -> DynamicLossScale:
        """The rule `model.loss_scale` and `model.loss_scale_growth_steps` ask for (every policy
        carries the state; only float16 applies it)."""
        return cls(initial=config.model.loss_scale,
                   growth_steps=config.model.loss_scale_growth_steps)

    def init(self) -> LossScaleState:
        return LossScaleState(jnp.asarray(self.initial, jnp.float32), jnp.zeros((), jnp.int32))

    @staticmethod
    def scale(loss: jax.Array, state: LossScaleState) -> jax.Array:
        return loss * state.scale.astype(loss.dtype)

    @staticmethod
    def unscale(grads: Any, state: LossScaleState) -> Any:
        """Gradients of the scaled loss -> gradients of the loss, in float32."""
        inverse = 1.0 / state.scale
        return jax.tree.map(lambda g: g.astype(jnp.float32) * inverse, grads)

    def adjust(self, state: LossScaleState, finite: jax.Array) -> LossScaleState:
        """The state after a step whose gradients were (not) all finite."""
        grow = finite & (state.good_steps + 1 >= self.growth_steps)
        scale = jnp.where(finite, jnp.where(grow, state.scale * self.factor, state.scale),
                          jnp.maximum(state.scale / self.factor, self.minimum))
        good = jnp.where(finite & ~grow, state.good_steps + 1, 0)
        return LossScaleState(scale.astype(jnp.float32), good.astype(jnp.int32))


def all_finite(tree: Any) -> jax.Array:
    """One boolean: every element of every leaf is finite."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.stack([jnp.isfinite(leaf).all() for leaf in leaves]).all()


def select(finite: jax.Array, new: Any, old: Any) -> Any:
    """`new` where the step was finite, else `old` (a skipped step changes nothing)."""
    return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
