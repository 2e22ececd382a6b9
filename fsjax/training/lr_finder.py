"""Faceswap's learning-rate finder (models.md §5.3): an exponential sweep on a new model.

The finder trains the new model for `lr_finder_iterations` steps while the rate grows from 1e-10
to 1e-1, smooths the loss, stops once it diverges, and picks the rate of the lowest smoothed loss
divided by the strength. The starting weights and optimizer state are then put back bit for bit,
so training starts from the same model, only at the found rate.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from fsjax.optim.optimizers import optimizer_steps

START_LR, END_LR = 1e-10, 1e-1
STRENGTHS = {"default": 10.0, "aggressive": 5.0, "extreme": 2.5}
SMOOTHING = 0.98
STOP_FACTOR = 4.0
MIN_LR = 1e-9  # below this the sweep was too short to find anything


class LRFinderError(RuntimeError):
    """The sweep found no usable learning rate."""


def sweep_schedule(iterations: int) -> Callable[[Any], Any]:
    """Rate after `count` optimizer steps: 1e-10 growing by a constant factor to 1e-1."""
    gamma = (END_LR / START_LR) ** (1.0 / iterations)
    return lambda count: START_LR * gamma**count


@dataclasses.dataclass
class SweepRecord:
    """Smoothed losses against rates, with Faceswap's stopping rule."""

    learning_rates: list[float] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)
    _average: float = 0.0
    _best: float = math.inf

    def add(self, iteration: int, loss: float, learning_rate: float) -> bool:
        """Records iteration `iteration` (from 1); True when the sweep should stop.

        As Faceswap does, the rate recorded with a loss is the one the next step will use, and
        the loss is an exponential average with bias correction.
        """
        if not math.isfinite(loss):
            return True
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
        smoothed = self._average / (1 - SMOOTHING**iteration)
        self.learning_rates.append(learning_rate)
        self.losses.append(smoothed)
        if iteration > 1 and smoothed > STOP_FACTOR * self._best:
            return True
        self._best = min(self._best, smoothed) if iteration > 1 else smoothed
        return False

    @property
    def best_lr(self) -> float:
        return self.learning_rates[int(np.argmin(self.losses))]

    def chosen_lr(self, strength: str) -> float:
        return self.best_lr / STRENGTHS[strength]


def plot_sweep(record: SweepRecord, folder: pathlib.Path, skip_begin: int = 10,
               skip_end: int = 1) -> pathlib.Path:
    """Writes `learning_rate_finder_<time>.png`: smoothed loss against rate on a log axis, the
    first 10 and last point left out as Faceswap does, with the three strengths marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = len(record.losses) - skip_end
    lrs = record.learning_rates[skip_begin:end] or record.learning_rates
    losses = record.losses[skip_begin:end] or record.losses
    figure, axes = plt.subplots()
    axes.plot(lrs, losses, label="Learning Rate")
    for (name, divisor), colour in zip(STRENGTHS.items(), "gyr", strict=True):
        rate = record.best_lr / divisor
        index = next((i for i, r in enumerate(lrs) if r >= rate), len(lrs) - 1)
        axes.plot(rate, losses[index], f"{colour}o", label=f"{name.title()}: {rate:.1e}")
    axes.set_xscale("log")
    axes.set_xlabel("Learning Rate (Log Scale)")
    axes.set_ylabel("Loss")
    axes.set_title("Learning Rate Finder")
    axes.legend()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H.%M.%S")
    path = pathlib.Path(folder) / f"learning_rate_finder_{stamp}.png"
    figure.savefig(path)
    plt.close(figure)
    return path


def copy_on_device(tree: Any) -> Any:
    """A copy of every array in `tree` in new buffers on the same devices, with the same
    shardings: a donating step may then consume the original."""
    return jax.tree.map(lambda x: x.copy(), tree)


def find_learning_rate(
    state: Any,
    step_fn: Callable[[Any, Any, jax.Array], tuple[Any, dict[str, jax.Array]]],
    batches: Iterator[Any],
    key: jax.Array,
    *,
    iterations: int,
    strength: str,
    progress: Callable[[int, float, float], None] | None = None,
) -> tuple[float, SweepRecord, Any]:
    """Runs the sweep from `state` with `step_fn` (built on `sweep_schedule(iterations)`).

    Returns `(rate, record, initial_state)`: the chosen rate, the sweep record and the starting
    state, copied on its devices (same shardings, nothing through the host) before the first,
    donating, step so it comes back bit-exact.
    """
    initial = copy_on_device(state)
    schedule = sweep_schedule(iterations)
    record = SweepRecord()
    for iteration in range(1, iterations + 1):
        state, metrics = step_fn(state, next(batches), key)
        loss = float(metrics["total"])
        rate = float(schedule(int(optimizer_steps(state.opt_state))))
        if record.add(iteration, loss, rate):
            break
        if progress is not None:
            progress(iteration, rate, record.chosen_lr(strength))
    del state  # the swept weights are never used
    if not record.losses:
        raise LRFinderError("the learning-rate finder's first step already gave a non-finite loss")
    rate = record.chosen_lr(strength)
    if rate < MIN_LR:
        raise LRFinderError(
            f"the learning-rate finder found no usable rate ({rate:.1e} < {MIN_LR:.0e}); run it "
            "for more iterations (optimizer.lr_finder_iterations)"
        )
    return rate, record, initial
