"""Times the train step of several experiments and relates each to its FLOP count.

    python scripts/benchmark_models.py [experiments/original.py experiments/villain.py ...]

For each experiment: examples per second at batch 16 (faces of both sides), compile seconds,
GFLOP per example (XLA's count for the whole step), and the achieved GFLOP/s as a fraction of
Original's.
A model far below Original's fraction is a sign that XLA:CPU handles one of its layers badly.
Ends with one line per experiment: `<name> examples_per_second=<float> efficiency=<float>`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from benchmark import step_flops, time_step  # noqa: E402

from fsjax.config import load_experiment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="experiment files (default: all)")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per side")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    args = parser.parse_args()
    root = pathlib.Path(__file__).resolve().parents[1]
    paths = [pathlib.Path(p) for p in args.configs] or sorted((root / "experiments").glob("*.py"))
    if not any(p.stem == "original" for p in paths):
        paths.insert(0, root / "experiments" / "original.py")  # the reference rate
    rows = []
    for path in paths:
        config = load_experiment(path)
        seconds, compile_seconds = time_step(config, args.batch_size, args.steps,
                                             log=lambda _: None)
        flops = step_flops(config, args.batch_size) / (2 * args.batch_size)
        rate = 2 * args.batch_size / seconds
        rows.append((path.stem, rate, compile_seconds, flops / 1e9, rate * flops / 1e9))
        print(f"{path.stem}: {rate:.2f} EG/s, compile {compile_seconds:.1f} s, "
              f"{flops / 1e9:.2f} GFLOP/example, {rate * flops / 1e9:.1f} GFLOP/s", flush=True)
    reference = next(r[4] for r in rows if r[0] == "original")
    for name, rate, _, _, achieved in rows:
        print(f"{name} examples_per_second={rate:.3f} efficiency={achieved / reference:.2f}")


if __name__ == "__main__":
    main()
