"""Times the swap model of `fsjax.tools.convert` against a forward pass of both sides.

    python scripts/bench_convert.py [--config experiments/original.py] [--batch-size 16]
                                    [--calls 10]

Builds the experiment's model with fresh weights, jits `make_swap_fn` (one side's path: the
converter) and the full `apply` (both sides, as training's forward pass), and prints one line
`swap_faces_per_s=<float> both_sides_faces_per_s=<float> compile_seconds=<float>`.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from fsjax.config import load_experiment
from fsjax.models import get_model_module
from fsjax.tools.convert import make_swap_fn


def _rate(fn, variables, faces, calls: int) -> float:
    jax.block_until_ready(fn(variables, faces))
    start = time.perf_counter()
    for _ in range(calls):
        jax.block_until_ready(fn(variables, faces))
    return calls * faces.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/original.py")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    spec = get_model_module(load_experiment(args.config).model.name).build(
        load_experiment(args.config))
    size = spec.input_size
    faces = jnp.asarray(np.random.default_rng(0).random((args.batch_size, size, size, 3),
                                                         dtype=np.float32))
    variables = jax.jit(spec.module.init)(jax.random.key(0), faces[:1], faces[:1])
    swap = make_swap_fn(spec.module)
    start = time.perf_counter()
    swap.lower(variables, faces).compile()
    compile_seconds = time.perf_counter() - start
    both = jax.jit(lambda v, x: spec.module.apply(v, x, x))
    print(f"swap_faces_per_s={_rate(swap, variables, faces, args.calls):.2f} "
          f"both_sides_faces_per_s={_rate(both, variables, faces, args.calls):.2f} "
          f"compile_seconds={compile_seconds:.2f}")


if __name__ == "__main__":
    main()
