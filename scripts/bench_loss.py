"""Times the default loss (ssim + mse, face/eye/mouth masks) for both sides, with its gradient.

    python scripts/bench_loss.py [--batch-size 16] [--size 64] [--calls 20] [--learn-mask]

Jits value_and_grad (w.r.t. both sides' predictions) of collate(A) + collate(B) on random inputs
and prints one line `loss_ms_per_call=<float> compile_seconds=<float>`. This is the cost the loss
adds to a train step (the model's own forward/backward is not included).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import fsjax.losses as fl
from fsjax.config import LossConfig


def make_inputs(batch: int, size: int, learn_mask: bool, seed: int = 0) -> dict:
    """Random float32 faces in [0, 1] and loader-like masks (uint8 / 255) for both sides."""
    rng = np.random.default_rng(seed)
    out = {}
    for side in "AB":
        faces = rng.random((2, batch, size, size, 3), dtype=np.float32)
        masks = rng.integers(0, 256, (3, batch, size, size, 1)).astype(np.float32) / 255.0
        out[side] = {
            "target": faces[0],
            "pred": faces[1],
            "mask_face": masks[0],
            "mask_eye": masks[1],
            "mask_mouth": masks[2],
        }
        if learn_mask:
            out[side]["mask_pred"] = rng.random((batch, size, size, 1), dtype=np.float32)
    return jax.tree.map(jnp.asarray, out)


def make_loss_fn(cfg: LossConfig):
    """Objective total_A + total_B as a function of the predictions, like the train step's."""

    def loss_fn(preds: dict, data: dict):
        total = jnp.zeros((), jnp.float32)
        logs = {}
        for side in "AB":
            d = data[side]
            side_total, terms = fl.collate(
                cfg,
                [d["target"]],
                [preds[side]["face"]],
                side=side,
                mask_face=d["mask_face"],
                mask_eye=d["mask_eye"],
                mask_mouth=d["mask_mouth"],
                mask_prediction=preds[side].get("mask"),
            )
            total = total + side_total
            logs.update(terms)
        return total, logs

    return loss_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--learn-mask", action="store_true")
    args = parser.parse_args()

    cfg = LossConfig(learn_mask=args.learn_mask)
    data = make_inputs(args.batch_size, args.size, args.learn_mask)
    preds = {
        side: {"face": data[side]["pred"]}
        | ({"mask": data[side]["mask_pred"]} if args.learn_mask else {})
        for side in "AB"
    }
    step = jax.jit(jax.value_and_grad(make_loss_fn(cfg), has_aux=True))

    start = time.perf_counter()
    jax.block_until_ready(step(preds, data))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.calls):
        start = time.perf_counter()
        (total, _), grads = jax.block_until_ready(step(preds, data))
        times.append(time.perf_counter() - start)
    assert np.isfinite(float(total)), "loss is not finite"
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    ms = 1e3 * float(np.median(times))
    print(
        f"batch {args.batch_size}/side, {args.size}px, functions {cfg.functions}, "
        f"devices {jax.devices()[0].platform}: min {1e3 * min(times):.2f} ms, "
        f"median {ms:.2f} ms over {args.calls} calls"
    )
    print(f"loss_ms_per_call={ms:.3f} compile_seconds={compile_s:.2f}")


if __name__ == "__main__":
    main()
