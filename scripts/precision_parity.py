"""Does a model learn as well in bfloat16 and float16 as in float32?

    python scripts/precision_parity.py --config experiments/original.py --iterations 300 \\
        [--batch-size 16] [--policies float32 bfloat16 float16] [--window 50] \\
        [--faces-a DIR --faces-b DIR] [--tolerance 0.05] [--config.* overrides]

Each policy trains the same model from the same seed on the same faces (the built-in demo faces
unless folders are given) in the same order, with the training loop's own pieces: the face
pipeline, the state's init and the jitted train step with the policy's loss scaling. Nothing is
saved. For each policy one line:

    policy=<name> final_loss=<float> ratio=<float> skipped=<int> seconds_per_iteration=<float>

where final_loss is the mean total loss (both sides) of the last `--window` iterations, ratio
is final_loss / float32's, and skipped counts float16's overflowed (skipped) steps. The last
line is `within_tolerance=<bool>`: every ratio within 1 +- `--tolerance`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from fsjax.data import pipeline
from fsjax.models import get_model_module
from fsjax.optim.loss_scale import DynamicLossScale
from fsjax.optim.optimizers import make_optimizer
from fsjax.training.inputs import data_seed, face_folders, sample_spec, scan_side
from fsjax.training.runtime import Runtime
from fsjax.training.step import SKIPPED, init_state, make_init_fn, make_train_step


def train_losses(config, iterations: int, log=print) -> tuple[list[float], int, float]:
    """The total loss of every iteration, the number of skipped steps and seconds/iteration
    (after the first, which compiles)."""
    spec_model = get_model_module(config.model.name).build(config)
    init_key, train_key, data_key = jax.random.split(jax.random.key(config.train.seed), 3)
    tx = make_optimizer(config.optimizer)
    rule = DynamicLossScale.configured(config)
    abstract = jax.eval_shape(
        make_init_fn(spec_model.module, tx, spec_model.input_size, (), rule), init_key)
    runtime = Runtime.create(config).with_state(abstract)
    state = init_state(spec_model.module, tx, spec_model.input_size, init_key,
                       runtime.state_sharding, (), rule)
    step = make_train_step(spec_model.module, tx, config.loss, runtime, spec_model.input_size)
    folder_a, folder_b = face_folders(config, say=lambda *a, **k: None)
    bs = config.train.batch_size
    metas = [scan_side(s, f, config.data.bad_faces, batch_size=bs, demo=config.data.uses_demo)
             for s, f in (("A", folder_a), ("B", folder_b))]
    spec = sample_spec(config, max((spec_model.input_size,) + spec_model.output_sizes))
    iterator = pipeline.make_train_iter(
        *metas, spec, config.augment, batch_size=bs, seed=data_seed(data_key),
        num_processes=config.data.num_processes, pre_fetch=config.data.pre_fetch)
    key = jax.device_put(train_key, runtime.replicated)
    pending, losses, skipped = [], [], 0
    start = None
    try:
        for i in range(iterations):
            state, metrics = step(state, runtime.to_global(next(iterator)), key)
            pending.append(metrics)
            if i == 0:
                jax.block_until_ready(metrics)
                start = time.perf_counter()
            if len(pending) == 25 or i == iterations - 1:
                for values in jax.device_get(pending):
                    losses.append(float(values["total"]))
                    skipped += int(values.get(SKIPPED, 0))
                pending = []
                log(f"  {config.model.dtype}: iteration {i + 1}, loss {losses[-1]:.5f}")
    finally:
        iterator.close()
    per_iteration = (time.perf_counter() - start) / max(iterations - 1, 1)
    return losses, skipped, per_iteration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16, help="faces per side")
    parser.add_argument("--policies", nargs="+", default=["float32", "bfloat16", "float16"])
    parser.add_argument("--window", type=int, default=50, help="iterations averaged at the end")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--faces-a")
    parser.add_argument("--faces-b")
    args, overrides = parser.parse_known_args()
    from fsjax.train import parse_cli  # the training command's own parser for the overrides

    for side, folder in (("a", args.faces_a), ("b", args.faces_b)):
        if folder:
            overrides += [f"--config.data.faces-{side}", folder]
    base = parse_cli(["--config", args.config, *overrides,
                      "--config.train.batch-size", str(args.batch_size)],
                     prog="scripts/precision_parity.py")
    if "float32" not in args.policies:
        args.policies.insert(0, "float32")
    finals: dict[str, float] = {}
    lines = []
    for policy in args.policies:
        config = dataclasses.replace(base, model=dataclasses.replace(base.model, dtype=policy))
        losses, skipped, per_iteration = train_losses(
            config, args.iterations, log=lambda line: print(line, flush=True))
        finals[policy] = float(np.mean(losses[-args.window:]))
        ratio = finals[policy] / finals["float32"]
        lines.append(f"policy={policy} final_loss={finals[policy]:.6f} ratio={ratio:.4f} "
                     f"skipped={skipped} seconds_per_iteration={per_iteration:.3f}")
        print(lines[-1], flush=True)
    print(f"model={base.model.name} iterations={args.iterations} batch_size={args.batch_size} "
          f"window={args.window}")
    for line in lines:
        print(line)
    ok = all(abs(v / finals["float32"] - 1) <= args.tolerance for v in finals.values())
    print(f"within_tolerance={ok}")


if __name__ == "__main__":
    main()
