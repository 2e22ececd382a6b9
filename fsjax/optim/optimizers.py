"""The optimizer, built optax-style from Faceswap's `global.optimizer` options (models.md §3.3)."""

from __future__ import annotations

import optax

from fsjax.config import OptimizerConfig


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """Returns the optax transformation for `config`.

    The learning rate is injected as a hyper-parameter, so it lives in the optimizer state where the
    loop can read it (and a resumed run can set a changed value) instead of a baked-in constant.
    """
    if config.optimizer != "adam":  # validated in the config; guards callers that bypass it
        raise ValueError(f"optimizer {config.optimizer!r} is not implemented")
    return optax.inject_hyperparams(optax.adam)(
        learning_rate=config.learning_rate,
        b1=config.ada_beta_1,
        b2=config.ada_beta_2,
        eps=config.epsilon,
    )
