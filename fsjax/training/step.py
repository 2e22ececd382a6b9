"""The train step: one pure function, jitted once with explicit shardings and a donated state."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fsjax.config import LossConfig
from fsjax.losses.collate import collate
from fsjax.losses.masking import area_resize
from fsjax.optim.loss_scale import DynamicLossScale, all_finite, select
from fsjax.optim.optimizers import clip_threshold, current_learning_rate
from fsjax.training.runtime import Runtime
from fsjax.training.state import TrainState, keep_frozen, merge, split_frozen

Batch = dict[str, dict[str, jax.Array]]
SIDES = ("a", "b")
FINITE = "finite"
"""The metric that says whether all the others are finite (NaN protection reads it)."""
LOSS_SCALE = "loss_scale"
"""float16 only: the loss scale after the step."""
SKIPPED = "skipped"
"""float16 only: 1.0 where the step's gradients overflowed and nothing was updated, else 0.0."""


def to_unit(x: jax.Array) -> jax.Array:
    """uint8 pixels from the loader -> float32 in [0, 1] (the conversion happens on device)."""
    return x.astype(jnp.float32) / 255.0


def side_loss(
    outputs: dict[str, Any], side_batch: dict[str, jax.Array], loss_config: LossConfig, side: str
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Faceswap's loss collation for one side: every face output, masks, the learned mask."""
    target = to_unit(side_batch["target"])
    masks = {k: to_unit(v) for k, v in side_batch.items() if k.startswith("mask_")}
    sizes = [face.shape[1:3] for face in outputs["faces"]]
    largest = max(sizes)
    targets = [area_resize(target, *size) for size in sizes]  # no-op at the same size
    masks = {k: area_resize(v, *largest) for k, v in masks.items()}
    mask_prediction = outputs.get("mask")
    return collate(
        loss_config,
        targets,
        list(outputs["faces"]),
        side=side.upper(),
        mask_face=masks.get("mask_face"),
        mask_eye=masks.get("mask_eye"),
        mask_mouth=masks.get("mask_mouth"),
        mask_prediction=mask_prediction,
        mask_target=masks.get("mask_face") if mask_prediction is not None else None,
    )


def train_step(
    state: TrainState,
    batch: Batch,
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss_config: LossConfig,
    input_size: int | None = None,
    frozen: tuple[str, ...] = (),
    loss_scale: DynamicLossScale | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One training iteration on a batch of both sides (an optimizer step, or one part of it
    when gradients are accumulated).

    Args:
        state: parameters, optimizer state and step counter (donated).
        batch: `{"a": {"input", "target", "mask_*"}, "b": {...}}` uint8 arrays, batch-sharded.
        rng: the run's training key; this step's randomness is `fold_in(rng, state.step)`.
        input_size: the model's input size, when smaller than the loader's process size (the
            input is then area-resized, as Faceswap does before feeding the model).
        frozen: sub-models (top-level parameter names, or `encoder/<model>` for a model nested
            in one) that are not trained.
        loss_scale: the float16 policy's dynamic loss scale rule; None (float32, bfloat16)
            leaves the loss unscaled.

    Returns:
        The new state and scalar metrics named as Faceswap logs them (`total`, `face_A`, ...),
        plus `grad_norm`, `learning_rate`, with AutoClip `clip_threshold`, and `finite`: whether
        every other metric is finite (NaN protection reads it with the rest, no extra sync).
        With loss scaling also `loss_scale` and `skipped`: a step whose gradients overflowed
        changes nothing but the scale, and is not judged by NaN protection unless its loss
        itself is not finite (its `grad_norm` is then not finite, and not judged).
    """
    step_rng = jax.random.fold_in(rng, state.step)
    trainable, fixed = split_frozen(state.params, frozen)

    def loss_fn(trainable: Any) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
        params = merge(trainable, fixed)
        faces = [to_unit(batch[side]["input"]) for side in SIDES]
        if input_size is not None:
            faces = [area_resize(face, input_size, input_size) for face in faces]
        variables = {"params": params, **state.model_state}
        # Training mode: dropout/noise draw from this step's key, BatchNorm uses and updates
        # batch statistics.
        outputs, model_state = model.apply(variables, *faces, rngs={"dropout": step_rng},
                                           mutable=list(state.model_state))
        total = jnp.zeros((), jnp.float32)
        metrics: dict[str, jax.Array] = {}
        for side in SIDES:
            side_total, terms = side_loss(outputs[side], batch[side], loss_config, side)
            total = total + side_total
            metrics[f"loss_{side}"] = side_total
            metrics.update(terms)
        metrics["total"] = total
        scaled = total if loss_scale is None else loss_scale.scale(total, state.loss_scale)
        return scaled, (metrics, dict(model_state))

    (_, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    if loss_scale is not None:  # unscaled before clipping, decay or accumulation see them
        grads = loss_scale.unscale(grads, state.loss_scale)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    params = merge(optax.apply_updates(trainable, updates), fixed)
    # Frozen sub-models keep their BatchNorm statistics too: nothing of theirs changes.
    model_state = {col: keep_frozen(tree, state.model_state[col], frozen)
                   for col, tree in model_state.items()}
    metrics["grad_norm"] = optax.tree.norm(grads)
    judged = dict(metrics)
    new_scale = state.loss_scale
    if loss_scale is not None:
        # An overflowed step is skipped whole: weights, optimizer (accumulated gradients and
        # AutoClip's history included) and BatchNorm statistics stay as they were.
        finite = all_finite(grads)
        params, opt_state, model_state = select(
            finite, (params, opt_state, model_state),
            (state.params, state.opt_state, state.model_state))
        new_scale = loss_scale.adjust(state.loss_scale, finite)
        judged.pop("grad_norm")  # not finite on every skipped step, by design
        metrics[LOSS_SCALE] = new_scale.scale
        metrics[SKIPPED] = (~finite).astype(jnp.float32)
    if (rate := current_learning_rate(opt_state)) is not None:  # None: a foreign optimizer
        metrics["learning_rate"] = judged["learning_rate"] = rate
    if (threshold := clip_threshold(opt_state)) is not None:
        metrics["clip_threshold"] = judged["clip_threshold"] = threshold
    metrics[FINITE] = all_finite(judged)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state, loss_scale=new_scale)
    return new_state, metrics


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss_config: LossConfig,
    runtime: Runtime,
    input_size: int | None = None,
    frozen: tuple[str, ...] = (),
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Binds the static parts and jits once: the state placed by the run's sharding tree (and
    donated), the batch split over `data`, the rng and the metrics replicated."""
    if runtime.state_sharding is None:
        raise ValueError("make_train_step needs the run's state shardings (Runtime.with_state)")
    repl = runtime.replicated
    return jax.jit(
        functools.partial(train_step, model=model, tx=tx, loss_config=loss_config,
                          input_size=input_size, frozen=tuple(frozen),
                          loss_scale=runtime.loss_scale),
        in_shardings=(runtime.state_sharding, runtime.batch_sharding, repl),
        out_shardings=(runtime.state_sharding, repl),
        donate_argnums=(0,),
    )


def make_init_fn(
    model: nn.Module, tx: optax.GradientTransformation, input_size: int,
    frozen: tuple[str, ...] = (), loss_scale: DynamicLossScale | None = None,
) -> Callable[[jax.Array], TrainState]:
    """A function from a PRNG key to a fresh TrainState (jit it with a replicated out sharding);
    the optimizer state covers the sub-models not in `frozen`. `loss_scale` gives the loss
    scale's starting value (Keras's defaults when None; only float16 uses it)."""

    def init(key: jax.Array) -> TrainState:
        variables = _init_variables(model, input_size, key)
        params = variables.pop("params")
        opt_state = tx.init(split_frozen(params, frozen)[0])
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                          model_state=variables,
                          loss_scale=(loss_scale or DynamicLossScale()).init())

    return init


def _init_variables(model: nn.Module, input_size: int, key: jax.Array) -> dict[str, Any]:
    dummy = jnp.zeros((1, input_size, input_size, 3), jnp.float32)
    return dict(model.init(key, dummy, dummy))


def init_state(
    model: nn.Module, tx: optax.GradientTransformation, input_size: int, key: jax.Array,
    sharding: TrainState | jax.sharding.Sharding, frozen: tuple[str, ...] = (),
    loss_scale: DynamicLossScale | None = None,
) -> TrainState:
    """A fresh TrainState placed with `sharding` (the run's sharding tree, or one sharding for
    every leaf), equal to `make_init_fn`'s.

    The model's initializers (one threefry program per weight, slow to compile on CPU) are
    compiled apart from the optimizer's, so with a persistent compilation cache that compile is
    shared by every optimizer setting and frozen set of the same model.
    """
    if isinstance(sharding, TrainState):
        variables_at = {"params": sharding.params, **sharding.model_state}
        opt_at, step_at, scale_at = sharding.opt_state, sharding.step, sharding.loss_scale
    else:
        variables_at = opt_at = step_at = scale_at = sharding
    variables = jax.jit(functools.partial(_init_variables, model, input_size),
                        out_shardings=variables_at)(key)
    params = variables.pop("params")
    opt_state = jax.jit(tx.init, out_shardings=opt_at)(split_frozen(params, frozen)[0])
    step = jax.device_put(jnp.zeros((), jnp.int32), step_at)
    scale = jax.device_put((loss_scale or DynamicLossScale()).init(), scale_at)
    return TrainState(step=step, params=params, opt_state=opt_state, model_state=variables,
                      loss_scale=scale)


def make_predict_fn(model: nn.Module) -> Callable[[Any, jax.Array, jax.Array], dict[str, Any]]:
    """Jitted inference-mode forward pass (nothing donated) used for previews: takes
    `TrainState.variables()`; no dropout or noise, BatchNorm uses its moving statistics."""

    @jax.jit
    def predict(variables: Any, face_a: jax.Array, face_b: jax.Array) -> dict[str, Any]:
        return model.apply(variables, face_a, face_b)

    return predict
