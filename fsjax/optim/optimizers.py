"""The optimizer built from Faceswap's `global.optimizer` options (models.md §3.3, §5.1).

Layout of the state (checkpoints, `fsjax.checkpoint.graft` and the helpers below rely on it):

    [MultiStepsState(inner_opt_state=...)]        only when gradient_accumulation > 1
      {"clipping": <clip state>,
       "optimizer": InjectStatefulHyperparamsState(count, hyperparams={"learning_rate"}, ...,
                                                   inner_state=<chain of the update rule>)}

The learning rate is the only injected hyper-parameter and is always a schedule, so the value
in the state is recomputed at every update from the transform that runs it: a resumed run with a
changed rate uses the new rate, never one stored in the checkpoint.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from fsjax.config import OptimizerConfig
from fsjax.optim.clipping import AutoClipState, make_clipping
from fsjax.optim.transforms import (
    scale_by_rectified_belief,
    scale_by_torch_amsgrad,
    scale_by_torch_nadam,
)

# Faceswap passes weight decay to torch as coupled L2 (added to the gradient) for these, and the
# others decay the weights directly (decoupled, scaled by the learning rate).
_COUPLED = ("adam", "adamax", "nadam", "rms-prop")
# torch.optim.RMSprop's default smoothing constant (alpha), which Faceswap keeps.
_RMSPROP_DECAY = 0.99


def decay_mask(params: optax.Params) -> Any:
    """True for the leaves Faceswap decays: more than one dimension and a name not ending "bias"."""
    def keep(path, leaf):
        name = jax.tree_util.keystr(path[-1:], simple=True)
        return jnp.ndim(leaf) > 1 and not name.endswith("bias")

    return jax.tree_util.tree_map_with_path(keep, params)


def _scale_rule(config: OptimizerConfig) -> optax.GradientTransformation:
    """The update direction of `config.optimizer`, before weight decay and learning rate."""
    b1, b2, eps = config.ada_beta_1, config.ada_beta_2, config.epsilon
    name = config.optimizer
    if name in ("adam", "adamw"):
        if config.ada_amsgrad:
            return scale_by_torch_amsgrad(b1=b1, b2=b2, eps=eps)
        return optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    if name == "adamax":
        return optax.scale_by_adamax(b1=b1, b2=b2, eps=eps)
    if name == "nadam":
        return scale_by_torch_nadam(b1=b1, b2=b2, eps=eps)
    if name == "rms-prop":
        return optax.scale_by_rms(decay=_RMSPROP_DECAY, eps=eps, eps_in_sqrt=False,
                                  initial_scale=0.0)
    if name == "adabelief":
        return scale_by_rectified_belief(b1=b1, b2=b2, eps=eps, amsgrad=config.ada_amsgrad)
    if name == "lion":
        # Faceswap hands Lion (ada_beta_1, ada_beta_2) = (0.9, 0.999), not Lion's own 0.99.
        return optax.scale_by_lion(b1=b1, b2=b2)
    raise ValueError(f"optimizer {name!r} is not one of adabelief, adam, adamax, adamw, lion, "
                     "nadam, rms-prop")


def _update_rule(config: OptimizerConfig, learning_rate: Any) -> optax.GradientTransformation:
    """Direction, weight decay and learning rate, with every setting but the rate static."""
    parts = [_scale_rule(config)]
    if config.weight_decay > 0:
        decay = optax.add_decayed_weights(config.weight_decay, mask=decay_mask)
        # Coupled decay joins the gradient before the moments; decoupled acts on the step.
        parts.insert(0 if config.optimizer in _COUPLED else 1, decay)
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def make_optimizer(config: OptimizerConfig,
                   learning_rate: float | optax.Schedule | None = None,
                   ) -> optax.GradientTransformation:
    """Clipping, then the configured optimizer, optionally accumulating gradients.

    Args:
      config: Faceswap's optimizer options.
      learning_rate: a rate or a schedule over optimizer steps; None uses
        `config.learning_rate`.

    Returns:
      The transformation; its update needs `params` (weight decay reads them).
    """
    rate = config.learning_rate if learning_rate is None else learning_rate
    schedule = rate if callable(rate) else optax.constant_schedule(rate)
    core = optax.inject_hyperparams(
        lambda learning_rate: _update_rule(config, learning_rate))(learning_rate=schedule)
    tx: optax.GradientTransformation = optax.named_chain(
        ("clipping", make_clipping(config)), ("optimizer", core))
    if config.gradient_accumulation > 1:
        # Averages the micro-batch gradients; clipping and the optimizer run on every N-th call.
        tx = optax.MultiSteps(tx, every_k_schedule=config.gradient_accumulation
                              ).gradient_transformation()
    return tx


def _chain_state(opt_state: Any) -> dict[str, Any] | None:
    """The named chain inside `opt_state`; None for a state `make_optimizer` did not build."""
    if isinstance(opt_state, optax.MultiStepsState):
        opt_state = opt_state.inner_opt_state
    return opt_state if isinstance(opt_state, dict) and "optimizer" in opt_state else None


def current_learning_rate(opt_state: Any) -> jax.Array | None:
    """The learning rate of the latest optimizer step (the schedule at step 0 before any)."""
    chain = _chain_state(opt_state)
    return None if chain is None else chain["optimizer"].hyperparams["learning_rate"]


def clip_threshold(opt_state: Any) -> jax.Array | None:
    """AutoClip's latest threshold, or None when AutoClip is not the clipping method."""
    chain = _chain_state(opt_state)
    state = None if chain is None else chain["clipping"]
    return state.threshold if isinstance(state, AutoClipState) else None


def optimizer_steps(opt_state: Any) -> jax.Array:
    """Optimizer steps taken: with gradient accumulation, real steps, not micro-batches."""
    return _chain_state(opt_state)["optimizer"].count
