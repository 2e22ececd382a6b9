"""Times the jitted train step alone on a fixed batch.

    python scripts/benchmark.py --config experiments/original.py --batch-size 16 [--steps 5] \
        [--config.model.dtype bfloat16] [--config.sharding.fsdp K] [any --config.* override]

Prints per-step times, then one line `examples_per_second=<float> compile_seconds=<float>`, where
examples are the faces of both sides and compile_seconds is the first step (trace + compile + run).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from fsjax.models import get_model_module
from fsjax.optim.optimizers import make_optimizer
from fsjax.training import sharding
from fsjax.training.inputs import sample_spec
from fsjax.training.resume import resolve_layers
from fsjax.training.runtime import Runtime
from fsjax.training.step import init_state, make_init_fn, make_train_step


def fixed_batch(spec, batch_size: int, seed: int = 0) -> dict:
    """A batch shaped like the loader's (uint8 faces, masks only where configured)."""
    rng = np.random.default_rng(seed)
    s = spec.size
    side = {"input": rng.integers(0, 256, (batch_size, s, s, 3), np.uint8),
            "target": rng.integers(0, 256, (batch_size, s, s, 3), np.uint8)}
    for key, wanted in (("mask_face", spec.mask_type != "none"), ("mask_eye", spec.eye_mask),
                        ("mask_mouth", spec.mouth_mask)):
        if wanted:
            side[key] = rng.integers(0, 256, (batch_size, s, s, 1), np.uint8)
    return {"a": side, "b": {k: v[::-1].copy() for k, v in side.items()}}


def time_step(config, batch_size: int, steps: int, log=print) -> tuple[float, float]:
    """Times the jitted train step on a fixed batch.

    Returns:
        (median seconds per step, seconds of the first step: trace + compile + run).
    """
    model = get_model_module(config.model.name).build(config)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                   batch_size=batch_size))
    runtime = Runtime.create(config)  # the run's mesh (FSDP included) and policy
    tx = make_optimizer(config.optimizer)
    repl = runtime.replicated
    frozen = ()
    init_fn = make_init_fn(model.module, tx, model.input_size)
    if config.train.freeze_weights:
        names = list(jax.eval_shape(init_fn, jax.random.key(0)).params)
        frozen = resolve_layers(config.train.freeze_layers, names, "train.freeze_layers",
                                model.keras_encoder, model.keras_encoder_unmatched)
        init_fn = make_init_fn(model.module, tx, model.input_size, frozen)
    runtime = runtime.with_state(jax.eval_shape(init_fn, jax.random.key(0)))
    state = init_state(model.module, tx, model.input_size, jax.random.key(0),
                       runtime.state_sharding, frozen)
    per_device = sum(leaf.addressable_shards[0].data.nbytes
                     for leaf in jax.tree.leaves((state.params, state.opt_state)))
    log(f"mesh={dict(runtime.mesh.shape)} state_bytes_per_device={per_device}")
    step = make_train_step(model.module, tx, config.loss, runtime, model.input_size, frozen)
    spec = sample_spec(config, max((model.input_size,) + model.output_sizes))
    batch = runtime.to_global(fixed_batch(spec, batch_size))
    key = jax.device_put(jax.random.key(1), repl)

    start = time.perf_counter()
    state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
        log(f"step {len(times)}: {times[-1]:.3f} s, loss {float(metrics['total']):.5f}")
    return float(np.median(times)), first


def step_flops(config, batch_size: int, *, with_bytes: bool = False):
    """XLA's FLOP count for one train step (from the lowered HLO; nothing is allocated), and
    with `with_bytes` also its estimate of the bytes the step reads and writes."""
    model = get_model_module(config.model.name).build(config)
    mesh = sharding.make_mesh(jax.devices()[:1])
    tx = make_optimizer(config.optimizer)
    state = jax.eval_shape(make_init_fn(model.module, tx, model.input_size), jax.random.key(0))
    step = make_train_step(model.module, tx, config.loss, Runtime.on_mesh(mesh, state),
                           model.input_size)
    spec = sample_spec(config, max((model.input_size,) + model.output_sizes))
    batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                         fixed_batch(spec, batch_size))
    cost = step.lower(state, batch, jax.random.key(1)).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    if with_bytes:
        return float(cost["flops"]), float(cost.get("bytes accessed", 0.0))
    return float(cost["flops"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch-size", type=int, default=16, help="faces per side")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first")
    args, overrides = parser.parse_known_args()
    from fsjax.train import parse_cli  # the training command's own parser for the overrides

    config = parse_cli(["--config", args.config, *overrides], prog="scripts/benchmark.py")
    per_step, compile_seconds = time_step(config, args.batch_size, args.steps,
                                          log=lambda line: print(line, flush=True))
    print(f"devices={len(jax.devices())} platform={jax.devices()[0].platform} "
          f"batch_size={args.batch_size} dtype={config.model.dtype} "
          f"median_step_seconds={per_step:.4f}")
    print(f"examples_per_second={2 * args.batch_size / per_step:.3f} "
          f"compile_seconds={compile_seconds:.3f}")


if __name__ == "__main__":
    main()
