"""Faceswap's Analysis tab on the command line: the session table and the loss graph of a model.

    python -m fsjax.tools.analyse MODEL_DIR                       # the session table
    python -m fsjax.tools.analyse MODEL_DIR --graph loss.png      # and the loss graph
    python -m fsjax.tools.analyse MODEL_DIR --graph loss.png --log-scale --smoothing 0.99

The table has Faceswap's columns (session, start, end, elapsed, batch, iterations, EG/s) and
each side's mean loss. As in Faceswap, a session's times and iteration count come from its
TensorBoard log (`<name>_logs/session_<id>/train`: the wall times of `batch_total`) and its
batch size from the state file; a side's loss is the sum of its `batch_face_*` and
`batch_mask_*` scalars. The same tags are in fsjax's, Faceswap 3's and Faceswap 2's logs, so any
of their model folders can be read, a folder that is training too: nothing is locked or written.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import pathlib
import re
import sys
import time

import numpy as np

from fsjax.checkpoint.state_file import ModelFolderError, load_state
from fsjax.tools.events import read_folder

_SIDE_TAG = re.compile(r"^batch_(?:face|mask)_([ab])(?:_\d+)?$", re.IGNORECASE)
_SESSION_DIR = re.compile(r"^session_(\d+)$")
COLUMNS = ("Session", "Start", "End", "Elapsed", "Batch", "Iterations", "EG/s", "Loss A",
           "Loss B")


@dataclasses.dataclass
class Session:
    """One session's figures; `steps`/`loss_a`/`loss_b` are its per-iteration losses."""

    session: int | str
    start: float | None
    end: float | None
    batch: int | str | None
    iterations: int
    steps: np.ndarray
    loss_a: np.ndarray
    loss_b: np.ndarray
    summed: tuple[int, int] | None = None
    """The Total row's elapsed seconds and examples: sums over the sessions."""

    @property
    def elapsed(self) -> int:
        if self.summed is not None:
            return self.summed[0]
        return 0 if self.start is None else int(self.end - self.start)

    @property
    def examples(self) -> int:
        if self.summed is not None:
            return self.summed[1]
        return 2 * self.batch * self.iterations if isinstance(self.batch, int) else 0

    @property
    def rate(self) -> float:
        return self.examples / self.elapsed if self.elapsed else 0.0

    def row(self) -> tuple[str, ...]:
        def when(t: float | None) -> str:
            return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

        def mean(x: np.ndarray) -> str:
            return f"{np.mean(x):.5f}" if x.size else "-"

        hours, rest = divmod(self.elapsed, 3600)
        elapsed = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
        return (str(self.session), when(self.start), when(self.end), elapsed,
                "-" if self.batch is None else str(self.batch), str(self.iterations),
                f"{self.rate:.1f}", mean(self.loss_a), mean(self.loss_b))


def find_state(model_dir: pathlib.Path) -> tuple[str, dict]:
    """The model's name and its state file (Faceswap's or fsjax's `<name>_state.json`)."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(f"{model_dir}: no such model folder")
    states = sorted(model_dir.glob("*_state.json"))
    if len(states) != 1:
        raise ModelFolderError(f"{model_dir}: expected one <name>_state.json, found "
                               f"{len(states) or 'none'}")
    return states[0].name[: -len("_state.json")], load_state(states[0])


def _side_losses(series: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The steps and each side's total loss per step (face outputs plus the learned mask)."""
    totals: dict[str, dict[int, float]] = {"a": {}, "b": {}}
    for tag, points in series.items():
        if match := _SIDE_TAG.match(tag):
            side = totals[match.group(1).lower()]
            for step, value in zip(points.steps, points.values, strict=True):
                side[step] = side.get(step, 0.0) + value
    steps = np.asarray(sorted(set(totals["a"]) & set(totals["b"])), np.int64)
    return steps, *(np.asarray([totals[s][int(i)] for i in steps], np.float64) for s in "ab")


def sessions(model_dir: pathlib.Path) -> tuple[str, list[Session]]:
    """The model's name and its sessions, in session order."""
    model_dir = pathlib.Path(model_dir)
    name, state = find_state(model_dir)
    recorded = state.get("sessions") if isinstance(state.get("sessions"), dict) else {}
    logs = {}
    root = model_dir / f"{name}_logs"
    if root.is_dir():
        for folder in root.iterdir():
            if (match := _SESSION_DIR.match(folder.name)) and (folder / "train").is_dir():
                logs[int(match.group(1))] = folder / "train"
    ids = sorted(set(logs) | {int(k) for k in recorded if str(k).isdigit()})
    out = []
    empty = np.zeros((0,))
    for sid in ids:
        info = recorded.get(str(sid), {})
        batch = info.get("batchsize") if isinstance(info.get("batchsize"), int) else None
        series = read_folder(logs[sid]) if sid in logs else {}
        total = series.get("batch_total")
        if total is None or not total.steps:  # no logs (--no-logs): the state file's count
            iterations = info.get("iterations") if isinstance(info.get("iterations"), int) else 0
            out.append(Session(sid, None, None, batch, iterations, empty, empty, empty))
            continue
        steps, loss_a, loss_b = _side_losses(series)
        out.append(Session(sid, min(total.wall_times), max(total.wall_times), batch,
                           len(total.steps), steps, loss_a, loss_b))
    return name, out


def total_row(parts: list[Session]) -> Session:
    """Faceswap's Total: first start, last end, summed elapsed time and iterations."""
    timed = [p for p in parts if p.start is not None]
    batches = sorted({p.batch for p in parts if p.batch is not None})
    return Session("Total", timed[0].start if timed else None, timed[-1].end if timed else None,
                   ",".join(map(str, batches)) or None, sum(p.iterations for p in parts),
                   *(np.concatenate([getattr(p, k) for p in parts] or [np.zeros((0,))])
                     for k in ("steps", "loss_a", "loss_b")),
                   summed=(sum(p.elapsed for p in timed), sum(p.examples for p in timed)))


def format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in [COLUMNS, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def smooth(values: np.ndarray, amount: float) -> np.ndarray:
    """Faceswap's exponential moving average: out[t] = (1-amount)·x[t] + amount·out[t-1]."""
    out = np.empty_like(values)
    running = values[0] if values.size else 0.0
    for i, value in enumerate(values):
        running = (1.0 - amount) * value + amount * running
        out[i] = running
    return out


def plot(name: str, parts: list[Session], path: pathlib.Path, *, log_scale: bool = False,
         smoothing: float = 0.9) -> pathlib.Path:
    """The loss graph: each side's loss and its moving average over the iterations, each
    session's span shaded in its own colour and labelled at its start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 6), dpi=100)
    shades = plt.get_cmap("tab10")
    for i, part in enumerate(p for p in parts if p.steps.size):
        ax.axvspan(part.steps[0] - 0.5, part.steps[-1] + 0.5, color=shades(i % 10), alpha=0.10,
                   linewidth=0)
        ax.axvline(part.steps[0] - 0.5, color=shades(i % 10), linewidth=1.2, linestyle="--")
        ax.annotate(f"session {part.session}", (part.steps[0], 1.0), xycoords=("data",
                    "axes fraction"), xytext=(3, -12), textcoords="offset points", fontsize=9,
                    color=shades(i % 10))
    steps = np.concatenate([p.steps for p in parts if p.steps.size] or [np.zeros((0,))])
    for side, colour in (("a", "tab:blue"), ("b", "tab:orange")):
        loss = np.concatenate([getattr(p, f"loss_{side}") for p in parts if p.steps.size]
                              or [np.zeros((0,))])
        ax.plot(steps, loss, color=colour, linewidth=0.6, alpha=0.35,
                label=f"Loss {side.upper()}")
        if loss.size:
            ax.plot(steps, smooth(loss, smoothing), color=colour, linewidth=2.0,
                    label=f"Loss {side.upper()} (moving average, {smoothing:g})")
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(f"{name}: loss over {steps.size} iterations in {len(parts)} sessions")
    ax.set_xlabel("Iterations")
    ax.set_ylabel("Loss" + (" (log scale)" if log_scale else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsjax.tools.analyse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=pathlib.Path, help="an fsjax or Faceswap model folder")
    parser.add_argument("--graph", type=pathlib.Path, metavar="PNG",
                        help="write the loss graph to this image")
    parser.add_argument("--log-scale", action="store_true", help="the graph's loss axis in log")
    parser.add_argument("--smoothing", type=float, default=0.9,
                        help="moving-average amount, 0..0.999 (Faceswap's default 0.9)")
    parser.add_argument("--csv", type=pathlib.Path, metavar="FILE",
                        help="also save the table as CSV (Faceswap's save button)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.smoothing <= 0.999:
        parser.error("--smoothing must be within 0..0.999")
    try:
        name, parts = sessions(args.model_dir)
    except (ModelFolderError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not parts:
        print(f"{args.model_dir}: model '{name}' has no sessions yet")
        return 0
    total = total_row(parts)
    rows = [p.row() for p in [*parts, total]]
    print(f"Model '{name}' in {args.model_dir}: {total.iterations} iterations in "
          f"{len(parts)} sessions")
    print(format_table(rows))
    if args.csv is not None:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([COLUMNS, *rows])
        print(f"Table: {args.csv}")
    if args.graph is not None:
        graph = plot(name, parts, args.graph, log_scale=args.log_scale, smoothing=args.smoothing)
        print(f"Loss graph: {graph}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
