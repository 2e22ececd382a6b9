"""The train step against this machine's float32 roofline: FLOPs per example (XLA's cost
analysis of the jitted step), the achieved GFLOP/s and the ratio to the roofline.

    python scripts/profile_step.py --config experiments/original.py --batch-size 16 [--steps 3]
    python scripts/profile_step.py --config experiments/villain.py --flops-only

The roofline is measured, not assumed: the best of a few 2048x2048 float32 matrix products on
all of this machine's devices' cores (XLA:CPU's fastest kernel; on an accelerator, the same
product on one device). Prints one line:
`flops_per_example=<float> gflops_per_second=<float> roofline_gflops=<float> roofline_ratio=<float>
bytes_per_example=<float>` (the last: XLA's estimate of memory traffic per example).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from benchmark import step_flops, time_step


def roofline_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The best float32 GFLOP/s of an n x n matrix product on the default device."""
    a = jnp.ones((n, n), jnp.float32)
    product = jax.jit(lambda x: x @ x)
    product(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch-size", type=int, default=16, help="faces per side")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    parser.add_argument("--flops-only", action="store_true", help="no timing: FLOPs alone")
    args, overrides = parser.parse_known_args()
    from fsjax.train import parse_cli

    config = parse_cli(["--config", args.config, *overrides], prog="scripts/profile_step.py")
    flops, traffic = step_flops(config, args.batch_size, with_bytes=True)
    examples = 2 * args.batch_size
    if args.flops_only:
        print(f"flops_per_example={flops / examples:.4e} "
              f"bytes_per_example={traffic / examples:.4e}")
        return
    seconds, _ = time_step(config, args.batch_size, args.steps, log=lambda line: None)
    achieved = flops / seconds / 1e9
    roof = roofline_gflops()
    print(f"flops_per_example={flops / examples:.4e} gflops_per_second={achieved:.1f} "
          f"roofline_gflops={roof:.1f} roofline_ratio={achieved / roof:.3f} "
          f"bytes_per_example={traffic / examples:.4e}")


if __name__ == "__main__":
    main()
