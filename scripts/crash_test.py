"""Kill training with SIGKILL at random moments, resume, and check that nothing is ever lost.

    python scripts/crash_test.py --trials 50 [--faces-a DIR --faces-b DIR]

Each trial starts (or resumes) `python -m fsjax.train` on a tiny Phaze-A (experiments/
phaze_a_tiny.py) in one model folder, saving every few iterations with the optimizer state, and
kills it with SIGKILL either at a random moment or just as a save begins. Checked each time:

* the run before the kill printed no error;
* the folder's state file is whole JSON, never ahead of the newest complete checkpoint;
* the next run resumes from the newest complete checkpoint (or starts new if there is none), at
  or past the last save the killed run reported: no iteration count goes backwards past it.

After the trials one run trains on to a final count without a kill; its parameters must be finite
and equal, bit for bit, those of one uninterrupted run to the same count. The last line is
`trials=<N> failures=<F>`, where the final check counts as a failure too if it fails.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
STATUS = re.compile(r"\[#(\d+) \| total (\d+)\]")
SAVED = re.compile(r"\[Saved model\] iteration (\d+)")
RESUMED = re.compile(r"Resuming '\w+' in .* at iteration (\d+)")
SAVE_INTERVAL = 3


class Run:
    """One training process whose output lines are read on a thread, with the time each came."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line, or None at the end of the output or after `timeout` seconds."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is not None:
            self.lines.append(line)
        return line

    def drain(self) -> str:
        while self.next_line(0.1) is not None:
            pass
        return "".join(self.lines)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def complete_steps(model_dir: pathlib.Path) -> list[int]:
    folder = model_dir / "phaze_a_checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit())


def check_folder(model_dir: pathlib.Path) -> list[str]:
    """The folder as a killed run leaves it: a whole state file, never ahead of the checkpoints."""
    problems = []
    path = model_dir / "phaze_a_state.json"
    if path.exists():
        try:
            iterations = json.loads(path.read_text())["iterations"]
        except (ValueError, KeyError) as err:
            return [f"state file is not whole: {err}"]
        steps = complete_steps(model_dir)
        if iterations > (steps[-1] if steps else 0):
            problems.append(f"state file says {iterations} iterations, newest checkpoint "
                            f"{steps[-1] if steps else None}")
    return problems


def trial(base: list[str], env: dict[str, str], model_dir: pathlib.Path, rng: random.Random,
          last_saved: int) -> tuple[list[str], int, str]:
    """Starts a run, kills it, checks its start; returns problems, the last reported save and
    how it was killed (and whether this run found and removed a save the last kill cut short)."""
    expected = complete_steps(model_dir)
    run = Run(base + ["--iterations", "1000000"], env)
    problems, started = [], None
    mode = rng.choice(["step", "save"])
    deadline = time.time() + 300
    kill_at = None
    while time.time() < deadline:
        line = run.next_line(0.02)
        if line is None and run.proc.poll() is not None:
            run.drain()
            tail = "".join(run.lines[-5:]).rstrip() or "(no output)"
            problems.append(f"the run ended by itself (code {run.proc.returncode}):\n    "
                            + tail.replace("\n", "\n    "))
            break
        if line:
            if m := RESUMED.search(line):
                started = int(m.group(1))
            elif "New 'phaze_a' model" in line:
                started = 0
            if m := SAVED.search(line):
                last_saved = max(last_saved, int(m.group(1)))
            status = STATUS.search(line)
            if status and kill_at is None:
                if mode == "step":  # anywhere in the next few steps or saves
                    kill_at = time.time() + rng.uniform(0.0, 2.0)
                elif int(status.group(1)) % SAVE_INTERVAL == 0:  # this iteration's save begins
                    kill_at = time.time() + rng.uniform(0.0, 0.3)
        if kill_at is not None and time.time() >= kill_at:
            run.kill()
            break
    else:
        run.kill()
        problems.append("no kill within 300 s")
    output = run.drain()
    for line in output.splitlines():  # lines read after the kill decision still count
        if m := SAVED.search(line):
            last_saved = max(last_saved, int(m.group(1)))
    if "Traceback" in output or "error:" in output:
        problems.append("the run printed an error:\n" + output[-2000:])
    want = expected[-1] if expected else 0
    if started is None:
        problems.append("the run never said where it started")
    elif started != want:
        problems.append(f"started at {started}, newest complete checkpoint is {want}")
    problems += check_folder(model_dir)
    if "removing an interrupted" in output or "removing the leftover" in output:
        mode += ", resumed past an interrupted save"
    return problems, last_saved, mode


def final_params(model_dir: pathlib.Path):
    import jax

    from fsjax.checkpoint.manager import Checkpoints

    checkpoints = Checkpoints(model_dir, "phaze_a", writable=False)
    try:
        saved, _ = checkpoints.restore(jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    finally:
        checkpoints.close()
    return int(saved["step"]), saved["params"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--faces-a", type=pathlib.Path)
    parser.add_argument("--faces-b", type=pathlib.Path)
    parser.add_argument("--config", default=str(ROOT / "experiments" / "phaze_a_tiny.py"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--work", type=pathlib.Path, help="working folder (default: temporary)")
    args = parser.parse_args(argv)
    if (args.faces_a is None) != (args.faces_b is None):
        parser.error("give both --faces-a and --faces-b, or neither for the demo faces")
    # The runs start in the repository root: paths given relative to here must be made absolute.
    args.faces_a, args.faces_b, args.work = (
        None if p is None else p.absolute() for p in (args.faces_a, args.faces_b, args.work))
    if not args.config.startswith("/") and pathlib.Path(args.config).exists():
        args.config = str(pathlib.Path(args.config).absolute())
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="fsjax_crash_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.faces_a is None:
        from fsjax.data.demo import default_demo_dir, write_demo_faces

        args.faces_a, args.faces_b = write_demo_faces(default_demo_dir(), seed=0)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(work / "xla_cache"))  # runs share compiles
    env.pop("XLA_FLAGS", None)

    def command(model_dir: pathlib.Path) -> list[str]:
        return [sys.executable, "-m", "fsjax.train", "--config", args.config,
                "--faces-a", str(args.faces_a), "--faces-b", str(args.faces_b),
                "--model-dir", str(model_dir), "--save-interval", str(SAVE_INTERVAL),
                "--snapshot-interval", "0", "--config.optimizer.save-optimizer", "always",
                "--config.data.num-processes", "0"]

    model_dir = work / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    rng = random.Random(args.seed)
    failures, last_saved = 0, 0
    for i in range(1, args.trials + 1):
        problems, last_saved, mode = trial(command(model_dir), env, model_dir, rng, last_saved)
        steps = complete_steps(model_dir)
        print(f"trial {i}: killed ({mode}); last reported save {last_saved}, checkpoints "
              f"{steps}: {'ok' if not problems else 'FAILED'}", flush=True)
        for problem in problems:
            print(f"  {problem}", flush=True)
        if steps and steps[-1] < last_saved:
            print(f"  the newest checkpoint {steps[-1]} is behind the reported save "
                  f"{last_saved}", flush=True)
            problems.append("behind")
        failures += bool(problems)

    # The last resume trains on without a kill; an uninterrupted run must reach the same weights.
    target = (complete_steps(model_dir) or [0])[-1] + SAVE_INTERVAL
    problems = []
    runs = {}
    for name in ("model", "reference"):
        folder = work / name
        if name == "reference":
            shutil.rmtree(folder, ignore_errors=True)
        done = subprocess.run(command(folder) + ["--iterations", str(target)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            problems.append(f"{name} run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        else:
            runs[name] = final_params(folder)
    if len(runs) == 2:
        import jax
        import numpy as np

        (step, params), (ref_step, ref_params) = runs["model"], runs["reference"]
        leaves = jax.tree.leaves(params)
        if step != target or ref_step != target:
            problems.append(f"final iterations {step} and {ref_step}, wanted {target}")
        if not all(np.isfinite(np.asarray(x)).all() for x in leaves):
            problems.append("final parameters are not finite")
        same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), params,
                            ref_params)
        if not all(jax.tree.leaves(same)):
            problems.append("the resumed weights differ from the uninterrupted run's")
    print(f"final: {target} iterations, resumed {args.trials} times: "
          f"{'finite and bit-identical to an uninterrupted run' if not problems else 'FAILED'}",
          flush=True)
    for problem in problems:
        print(f"  {problem}", flush=True)
    failures += bool(problems)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"trials={args.trials} failures={failures}", flush=True)
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
