"""Times the whole training loop, end to end: `python -m fsjax.train`'s own code, in a temporary
model folder (loading and augmenting faces, the step, the metrics read back, saves, previews).

    python scripts/bench_e2e.py --config experiments/original.py --batch-size 16 --iterations 30 \
        [--faces-a DIR --faces-b DIR] [--skip 2] [any --config.* override or train switch]
    python scripts/bench_e2e.py --all-models --batch-size 16 --iterations 12

Without face folders it uses the built-in demo faces. The steady state leaves out the first
`--skip` iterations (the compile and the first save) and ends with one line:

    examples_per_second=<float> first_iteration_seconds=<float> data_wait_fraction=<float>
    step_fraction=<float> save_seconds=<float>

(one line; examples are the faces of both sides). The fractions are of the steady state's wall
time: waiting for the next batch, and dispatching the step plus waiting for its metrics.
save_seconds is the mean save after the first (every run saves at its first iteration and at
exit). `--all-models` runs every experiment file in its own process, a line each.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def bench(args: argparse.Namespace, overrides: list[str]) -> dict[str, float]:
    from fsjax.train import parse_cli
    from fsjax.training.distributed import start
    from fsjax.training.loop import train_and_evaluate
    from fsjax.training.timing import LoopTimes

    with tempfile.TemporaryDirectory(prefix="fsjax-bench-") as tmp:
        faces = []
        if args.faces_a is not None:
            faces = ["--faces-a", str(args.faces_a), "--faces-b", str(args.faces_b)]
        config = parse_cli(["--config", args.config, "--model-dir", f"{tmp}/model",
                            "--batch-size", str(args.batch_size),
                            "--iterations", str(args.iterations), *faces, *overrides],
                           prog="scripts/bench_e2e.py")
        start(config)  # the compilation cache and (multi-host) distributed set-up, as train does
        times = LoopTimes()
        train_and_evaluate(config, times=times)
    return times.summary(args.skip, 2 * args.batch_size)


def line(figures: dict[str, float]) -> str:
    """The keep-exact result line."""
    return (f"examples_per_second={figures['examples_per_second']:.3f} "
            f"first_iteration_seconds={figures['first_iteration_seconds']:.3f} "
            f"data_wait_fraction={figures['data_wait_fraction']:.4f} "
            f"step_fraction={figures['step_fraction']:.4f} "
            f"save_seconds={figures['save_seconds']:.3f}")


def all_models(args: argparse.Namespace, overrides: list[str]) -> int:
    """Every experiment file in its own process: one result line each, after a line naming it."""
    failed = 0
    for path in sorted((ROOT / "experiments").glob("*.py")):
        command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--config", str(path),
                   "--batch-size", str(args.batch_size), "--iterations", str(args.iterations),
                   "--skip", str(args.skip), *overrides]
        if args.faces_a is not None:
            command += ["--faces-a", str(args.faces_a), "--faces-b", str(args.faces_b)]
        done = subprocess.run(command, capture_output=True, text=True)
        result = [x for x in done.stdout.splitlines() if x.startswith("examples_per_second=")]
        print(f"# {path.relative_to(ROOT)}", flush=True)
        if done.returncode or not result:
            failed += 1
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            print(f"# failed ({done.returncode}): {tail[0]}", flush=True)
        else:
            print(result[-1], flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="experiment file (not with --all-models)")
    parser.add_argument("--all-models", action="store_true", help="every experiments/*.py")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per side")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--skip", type=int, default=2,
                        help="first iterations left out of the steady state (compile, 1st save)")
    parser.add_argument("--faces-a", type=pathlib.Path)
    parser.add_argument("--faces-b", type=pathlib.Path)
    args, overrides = parser.parse_known_args()
    if (args.faces_a is None) != (args.faces_b is None):
        parser.error("give both --faces-a and --faces-b, or neither (the demo faces)")
    if args.all_models:
        return all_models(args, overrides)
    if args.config is None:
        parser.error("--config or --all-models is needed")
    if args.iterations <= args.skip:
        parser.error("--iterations must be above --skip")
    figures = bench(args, overrides)
    print(f"steady state: iterations {args.skip + 1}..{args.iterations} "
          f"({figures['iterations']} timed, the first {args.skip} skipped: compile and the "
          f"first save); {figures['saves']} saves, the first left out of save_seconds", flush=True)
    print(line(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
