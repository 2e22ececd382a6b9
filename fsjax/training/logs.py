"""Console status lines and TensorBoard scalars with Faceswap's tag names (data.md §8.2)."""

from __future__ import annotations

import pathlib
import sys
import time


def console(line: str, *, error: bool = False, end: str = "\n") -> None:
    """Prints a line at once (to stderr with `error`: warnings, progress)."""
    print(line, end=end, file=sys.stderr if error else sys.stdout, flush=True)


def duration(seconds: float) -> str:
    """`HH:MM:SS`, with the days in front past a day (`3d 04:05:06`)."""
    days, rest = divmod(int(max(seconds, 0)), 86_400)
    clock = time.strftime("%H:%M:%S", time.gmtime(rest))
    return f"{days}d {clock}" if days else clock


def time_left(done: int, seconds: float, remaining: int) -> float | None:
    """Seconds to `remaining` more iterations at the rate of `done` in `seconds` (None: not
    measured yet)."""
    if done <= 0 or seconds <= 0:
        return None
    return remaining * seconds / done


def status_line(elapsed: float, session_iterations: int, total_iterations: int, loss_a: float,
                loss_b: float, examples_per_second: float, loss_scale: float | None = None,
                eta: float | None = None) -> str:
    """`[elapsed] [#session | total] Loss A: .., Loss B: .. | EG/s | ETA`, Faceswap's line plus
    the speed and the time left to the target (once measured), and `| loss scale S` under the
    float16 policy."""
    line = (f"[{duration(elapsed)}] [#{session_iterations:05d} | total {total_iterations:05d}] "
            f"Loss A: {loss_a:.5f}, Loss B: {loss_b:.5f} | {examples_per_second:.2f} EG/s")
    if eta is not None:
        line += f" | ETA {duration(eta)}"
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

    def image(self, tag: str, step: int, image_bgr) -> None:
        """An image (uint8 BGR, as OpenCV and the preview hold it) at `step`."""
        if self._writer is not None:
            self._writer.add_image(tag, image_bgr[..., ::-1].copy(), step, dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
