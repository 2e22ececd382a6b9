"""Console status lines and TensorBoard scalars with Faceswap's tag names (data.md §8.2)."""

from __future__ import annotations

import pathlib
import sys
import time


def console(line: str, *, error: bool = False, end: str = "\n") -> None:
    """Prints a line at once (to stderr with `error`: warnings, progress)."""
    print(line, end=end, file=sys.stderr if error else sys.stdout, flush=True)


def status_line(elapsed: float, session_iterations: int, total_iterations: int, loss_a: float,
                loss_b: float, examples_per_second: float, loss_scale: float | None = None,
                ) -> str:
    """`[elapsed] [#session/total] Loss A: .., Loss B: .. | EG/s`, Faceswap's line plus speed,
    and `| loss scale S` under the float16 policy."""
    clock = time.strftime("%H:%M:%S", time.gmtime(elapsed))
    line = (f"[{clock}] [#{session_iterations:05d} | total {total_iterations:05d}] "
            f"Loss A: {loss_a:.5f}, Loss B: {loss_b:.5f} | {examples_per_second:.2f} EG/s")
    return line if loss_scale is None else f"{line} | loss scale {loss_scale:g}"


class MetricLogger:
    """Writes every metric as `batch_<name>` at the total iteration; a no-op without a folder."""

    def __init__(self, folder: pathlib.Path | None) -> None:
        self._writer = None
        if folder is not None:
            from tensorboardX import SummaryWriter  # imported only when logs are on

            folder.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(folder))

    def write(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            return
        for name, value in values.items():
            if name in ("loss_a", "loss_b"):
                continue  # already logged as batch_total / batch_face_* terms
            self._writer.add_scalar(f"batch_{name}", value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
