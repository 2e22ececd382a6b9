"""Train-step speed of each optimizer, clipping method, gradient accumulation and freezing,
relative to the default (adam, no clipping) on the same model.

    python scripts/bench_optim.py --config experiments/original.py --batch-size 16 [--steps 5]

Prints one row per variant: examples per second (faces of both sides per iteration; with
accumulation an iteration is one micro-batch), compile seconds and the ratio to the default.
"""

from __future__ import annotations

import argparse
import dataclasses

from benchmark import time_step

from fsjax.config import load_experiment

VARIANTS = (
    ("adam (default)", {}, {}),
    ("adabelief", {"optimizer": "adabelief", "epsilon_exponent": -16}, {}),
    ("adamax", {"optimizer": "adamax"}, {}),
    ("adamw wd 0.004", {"optimizer": "adamw", "weight_decay": 0.004}, {}),
    ("lion", {"optimizer": "lion"}, {}),
    ("nadam", {"optimizer": "nadam"}, {}),
    ("rms-prop", {"optimizer": "rms-prop"}, {}),
    ("adam amsgrad", {"ada_amsgrad": True}, {}),
    ("autoclip (10000)", {"gradient_clipping": "autoclip"}, {}),
    ("autoclip per tensor", {"gradient_clipping": "autoclip", "autoclip_per_tensor": True}, {}),
    ("global_norm", {"gradient_clipping": "global_norm"}, {}),
    ("norm", {"gradient_clipping": "norm"}, {}),
    ("accumulation 4", {"gradient_accumulation": 4}, {}),
    ("frozen encoder", {}, {"freeze_weights": True}),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch-size", type=int, default=16, help="faces per side")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first")
    args = parser.parse_args()
    base = load_experiment(args.config)
    rows, reference = [], None
    for name, optimizer, train in VARIANTS:
        config = dataclasses.replace(
            base, optimizer=dataclasses.replace(base.optimizer, **optimizer),
            train=dataclasses.replace(base.train, **train))
        per_step, compile_seconds = time_step(config, args.batch_size, args.steps,
                                              log=lambda _: None)
        rate = 2 * args.batch_size / per_step
        reference = reference or rate
        rows.append((name, rate, compile_seconds, rate / reference))
        print(f"{name:22s} {rate:8.2f} EG/s  compile {compile_seconds:6.1f} s  "
              f"x{rate / reference:.2f}", flush=True)
    print("\n| variant | EG/s | compile s | vs default |\n| --- | --- | --- | --- |")
    for name, rate, compile_seconds, ratio in rows:
        print(f"| {name} | {rate:.2f} | {compile_seconds:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
