"""Where a run's wall time goes, iteration by iteration (`scripts/bench_e2e.py` reports it).

The loop keeps one `LoopTimes` per run: a few `perf_counter` reads per iteration, no device
sync of its own. `data` is the time the loop waits for the next batch (the loader and the host to
device copy), `step` the time it spends dispatching the step and waiting for the device to hand
back the metrics, `save` the saves with their preview and timelapse; the rest of an iteration is
host work between them (TensorBoard, the status line).
"""

from __future__ import annotations

import dataclasses
import time

KINDS = ("data", "step", "save")


@dataclasses.dataclass
class LoopTimes:
    start: float = dataclasses.field(default_factory=time.perf_counter)
    first_iteration: float | None = None
    """Seconds from the start of the run to the end of the first iteration (scan, build,
    restore, compile, the first step and the first save)."""
    rows: list[dict[str, float]] = dataclasses.field(default_factory=list)
    """Per iteration of this session: seconds of each kind, and `end` (perf_counter)."""
    saves: list[float] = dataclasses.field(default_factory=list)
    """Seconds of every save of the session, the exit save included."""

    def __post_init__(self) -> None:
        self._current = dict.fromkeys(KINDS, 0.0)

    def add(self, kind: str, seconds: float) -> None:
        self._current[kind] += seconds
        if kind == "save":
            self.saves.append(seconds)

    def end_iteration(self) -> None:
        now = time.perf_counter()
        if self.first_iteration is None:
            self.first_iteration = now - self.start
        self.rows.append({**self._current, "end": now})
        self._current = dict.fromkeys(KINDS, 0.0)

    def summary(self, skip: int, examples_per_iteration: int) -> dict[str, float]:
        """The steady state after the first `skip` iterations: examples per second, the
        fractions of wall time waiting for data and for the step, and the mean save after the
        first (which also compiles the preview)."""
        if len(self.rows) <= skip:
            raise ValueError(f"{len(self.rows)} iterations: need more than the {skip} skipped")
        rows = self.rows[skip:]
        wall = rows[-1]["end"] - self.rows[skip - 1]["end"] if skip else (
            rows[-1]["end"] - self.start)
        saves = self.saves[1:] or self.saves
        return {
            "examples_per_second": examples_per_iteration * len(rows) / wall,
            "first_iteration_seconds": self.first_iteration or 0.0,
            "data_wait_fraction": sum(r["data"] for r in rows) / wall,
            "step_fraction": sum(r["step"] for r in rows) / wall,
            "save_seconds": sum(saves) / len(saves) if saves else 0.0,
            "iterations": len(rows),
            "saves": len(self.saves),
        }
