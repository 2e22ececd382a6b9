"""Update rules of Faceswap's torch optimizers that optax lacks, as optax `scale_by_*` transforms.

Each returns the update *direction*: the step is `-learning_rate * direction`, so they compose
with `optax.scale_by_learning_rate` like optax's own `scale_by_adam`. Powers `1 - b**t` are formed
as `-expm1(t * log b)`: for b = 0.999 the naive float32 difference loses about five digits, which
both the bias corrections and RAdam's rectification length are sensitive to.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def _check_beta(name: str, value: float) -> None:
    # torch's optimizers refuse these too; b = 1 would divide by zero in the bias corrections.
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value!r} must be in [0, 1)")


def _one_minus_power(b: float, t: jax.Array) -> jax.Array:
    """1 - b**t for float t >= 1, accurate when b is close to 1."""
    if b == 0.0:
        return jnp.ones_like(t)
    return -jnp.expm1(t * math.log(b))


def _sma_length(b2: float, t: jax.Array) -> jax.Array:
    """RAdam's length of the approximated simple moving average, rho_t.

    rho_t = rho_inf - 2 t b2^t / (1 - b2^t) subtracts two numbers near 2 / (1 - b2) (about 2000)
    early on, so in float32 it is off by ~1e-2 there. With L = -log b2 and s = t L the early part
    (s < 1) is rewritten as (2/(1-b2) - 2/L - 1) + t - (2/L) f(s), f(s) = s/expm1(s) - 1 + s/2,
    with the constant formed in float64 and f a short Bernoulli series: no cancellation is left.
    """
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    if b2 == 0.0:  # rho_inf = 1: the moving average never gets long enough to adapt
        return jnp.full_like(t, rho_inf)
    log_b2 = -math.log(b2)
    const = 2.0 / (1.0 - b2) - 2.0 / log_b2 - 1.0
    s = t * log_b2
    small = jnp.minimum(s, 1.0)
    s2 = small * small
    # s/(e^s - 1) = 1 - s/2 + s^2/12 - s^4/720 + s^6/30240 - s^8/1209600 + s^10/47900160 - ...
    f = s2 * (1 / 12 - s2 * (1 / 720 - s2 * (1 / 30240 - s2 * (1 / 1209600 - s2 / 47900160))))
    early = const + t - (2.0 / log_b2) * f
    late = rho_inf - 2.0 * t / jnp.expm1(jnp.maximum(s, 1.0))  # expm1 -> inf: rho_inf
    return jnp.where(s < 1.0, early, late)


class ScaleByRectifiedBeliefState(NamedTuple):
    """State of `scale_by_rectified_belief`.

    Attributes:
      count: optimizer steps taken (int32).
      mu: moving average of the gradients.
      nu: moving average of (gradient - mu)^2, with eps added after every step.
      nu_max: running maximum of `nu` (amsgrad only, else None).
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None


def scale_by_rectified_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    amsgrad: bool = False,
    rectify: bool = True,
) -> optax.GradientTransformation:
    """AdaBelief as Faceswap runs it: RAdam rectification, SGD while the variance is unreliable.

    Differs from `optax.scale_by_belief` in three ways that change the trajectory: eps is added to
    the stored second moment every step (it accumulates); while RAdam's length rho_t < 5 (the
    first five steps for b2 = 0.999) the direction is the bias-corrected momentum alone; after
    that it is r_t * sqrt(1 - b2^t) / (1 - b1^t) * mu / (sqrt(nu) + eps), with no bias
    correction inside the square root. As in Faceswap, the amsgrad maximum is only used by the
    non-rectified rule; with rectification it is tracked but does not affect the step.

    Args:
      b1: decay of the gradient average.
      b2: decay of the squared prediction-error average.
      eps: added to the second moment every step and to the denominator.
      amsgrad: keep the running maximum of the second moment.
      rectify: False gives the plain AdaBelief rule (as `optax.scale_by_belief` with
        `eps_root=eps`), which Faceswap never uses; kept for testing against optax.

    Returns:
      The transformation; multiply its output by `-learning_rate`.

    References:
      Zhuang et al., AdaBelief Optimizer, NeurIPS 2020 (arXiv:2010.07468);
      Liu et al., On the Variance of the Adaptive Learning Rate and Beyond (RAdam), 2019.
    """
    _check_beta("b1", b1)
    _check_beta("b2", b2)
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    # The constant part of r_t; only reached when rho_t >= 5, which needs rho_inf > 5.
    rho_const = rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0)) if rho_inf > 4.0 else 0.0

    def init_fn(params: optax.Params) -> ScaleByRectifiedBeliefState:
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return ScaleByRectifiedBeliefState(
            count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros(),
            nu_max=zeros() if amsgrad else None)

    def update_fn(updates, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        mu = jax.tree.map(lambda g, m: b1 * m + (1.0 - b1) * g, updates, state.mu)
        nu = jax.tree.map(lambda g, m, v: b2 * v + (1.0 - b2) * jnp.square(g - m) + eps,
                          updates, mu, state.nu)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
        bc1 = _one_minus_power(b1, t)
        bc2 = _one_minus_power(b2, t)
        if rectify:
            rho = _sma_length(b2, t)
            adaptive = rho >= 5.0
            # Clamped so the unused branch stays finite while rho < 4.
            r = jnp.sqrt(bc2 * jnp.maximum(rho - 4.0, 0.0) * (rho - 2.0) / rho * rho_const)
            adaptive_size = r / bc1
            sgd_size = 1.0 / bc1
            out = jax.tree.map(
                lambda m, v: jnp.where(adaptive, adaptive_size * m / (jnp.sqrt(v) + eps),
                                       sgd_size * m),
                mu, nu)
        else:
            denom_nu = nu_max if amsgrad else nu
            out = jax.tree.map(lambda m, v: (m / bc1) / (jnp.sqrt(v / bc2) + eps), mu, denom_nu)
        return out, ScaleByRectifiedBeliefState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByTorchNadamState(NamedTuple):
    """State of `scale_by_torch_nadam`.

    Attributes:
      count: optimizer steps taken (int32).
      mu_product: product of the momentum coefficients mu_1..mu_t (f32[]).
      mu: moving average of the gradients.
      nu: moving average of the squared gradients.
    """

    count: jax.Array
    mu_product: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_torch_nadam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    momentum_decay: float = 0.004,
) -> optax.GradientTransformation:
    """NAdam as `torch.optim.NAdam` computes it (Dozat's momentum schedule, eps outside the root).

    optax's `nadam` uses a constant momentum b1; torch warms it up as
    mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay)) (about b1 / 2 at the start) and bias-corrects
    with the running product of the mu_t. The direction is
    (1 - mu_t) / (1 - prod_t) * g / d + mu_{t+1} / (1 - prod_t mu_{t+1}) * m / d,
    d = sqrt(nu / (1 - b2^t)) + eps. A very large `momentum_decay` makes mu_t = b1 and the rule
    becomes optax's `scale_by_adam(nesterov=True)`.

    Args:
      b1: decay of the gradient average, the limit of the momentum schedule.
      b2: decay of the squared-gradient average.
      eps: added to the denominator, outside the square root.
      momentum_decay: how fast mu_t approaches b1 (torch's psi, default 0.004).

    Returns:
      The transformation; multiply its output by `-learning_rate`.

    References:
      Dozat, Incorporating Nesterov Momentum into Adam, ICLR 2016 workshop;
      the `torch.optim.NAdam` documentation.
    """
    _check_beta("b1", b1)
    _check_beta("b2", b2)
    log_96 = math.log(0.96)

    def momentum(t: jax.Array) -> jax.Array:
        return b1 * (1.0 - 0.5 * jnp.exp(t * momentum_decay * log_96))

    def init_fn(params: optax.Params) -> ScaleByTorchNadamState:
        return ScaleByTorchNadamState(
            count=jnp.zeros([], jnp.int32), mu_product=jnp.ones([], jnp.float32),
            mu=jax.tree.map(jnp.zeros_like, params), nu=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        mom, mom_next = momentum(t), momentum(t + 1.0)
        mu_product = state.mu_product * mom
        mu = jax.tree.map(lambda g, m: b1 * m + (1.0 - b1) * g, updates, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1.0 - b2) * jnp.square(g), updates, state.nu)
        bc2 = _one_minus_power(b2, t)
        grad_size = (1.0 - mom) / (1.0 - mu_product)
        momentum_size = mom_next / (1.0 - mu_product * mom_next)
        out = jax.tree.map(
            lambda g, m, v: (grad_size * g + momentum_size * m) / (jnp.sqrt(v / bc2) + eps),
            updates, mu, nu)
        return out, ScaleByTorchNadamState(count=count, mu_product=mu_product, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_torch_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                           ) -> optax.GradientTransformation:
    """Adam's AMSGrad variant as `torch.optim.Adam(amsgrad=True)` computes it.

    torch keeps the running maximum of the raw second moment and bias-corrects that maximum with
    the current step, m_hat / (sqrt(max_s nu_s) / sqrt(1 - b2^t) + eps); optax's
    `scale_by_amsgrad` takes the maximum of the bias-corrected moments instead, which keeps the
    large early corrections alive while gradients shrink. The state is optax's
    `ScaleByAmsgradState`, so both lay out the same arrays.

    Args:
      b1: decay of the gradient average.
      b2: decay of the squared-gradient average.
      eps: added to the denominator, outside the square root.

    Returns:
      The transformation; multiply its output by `-learning_rate`.
    """
    _check_beta("b1", b1)
    _check_beta("b2", b2)

    def init_fn(params: optax.Params) -> optax.ScaleByAmsgradState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return optax.ScaleByAmsgradState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros,
                                         nu_max=zeros)

    def update_fn(updates, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        mu = jax.tree.map(lambda g, m: b1 * m + (1.0 - b1) * g, updates, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1.0 - b2) * jnp.square(g), updates, state.nu)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
        bc1, bc2 = _one_minus_power(b1, t), _one_minus_power(b2, t)
        out = jax.tree.map(lambda m, v: (m / bc1) / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps),
                           mu, nu_max)
        return out, optax.ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return optax.GradientTransformation(init_fn, update_fn)
