"""Multi-host training on one machine: N real processes joined by jax.distributed give the
parameters one process gives, and a run whose processes are all killed resumes.

    python scripts/multihost_check.py --processes 2 [--iterations 4] [--devices 8]

Each of the N processes runs `python -m fsjax.train` on `experiments/phaze_a_tiny.py` with
devices/N virtual CPU devices (CPU collectives over gloo) and its share of every batch; the
reference is one process with all the devices and the same global batch, trained to
`--iterations` without a stop. The N-process run starts from a copy of the reference's save of
iteration 2 (a save made with one process and 8 devices resumes on N processes), is killed
(SIGKILL, every process) just after its save of iteration 3, is started again,
and must resume there and reach the reference's parameters.

Why from iteration 2: gloo sums the gradients across processes in another order than XLA does
inside one process, so the parameters after one step from scratch differ in the last bits
(about 1e-7 here), and Adam's first steps, which move every weight by about the learning rate
whatever its gradient's size, turn last-bit differences of near-zero gradients into differences
of a fraction of the learning rate. From common first steps the runs agree to float32 rounding.

Ends with one line:

    processes=<int> max_param_diff=<float> resumed=<bool>
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "phaze_a_tiny.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def train_command(model_dir, faces, iterations, batch_size, extra=()):
    return [sys.executable, "-u", "-m", "fsjax.train", "--config", str(EXPERIMENT),
            "--faces-a", str(faces[0]), "--faces-b", str(faces[1]),
            "--config.train.model-dir", str(model_dir), "--iterations", str(iterations),
            "--batch-size", str(batch_size), "--config.data.num-processes", "0",
            "--config.train.save-interval", "1", "--config.train.no-write-image",
            # every save holds the optimizer, so a killed run resumes exactly
            "--config.optimizer.save-optimizer", "always", *extra]


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def launch(model_dir, faces, iterations, batch_size, processes, devices, logs, heartbeat=10):
    """Starts the N processes of one run; returns the Popen objects (output in `logs`)."""
    port = free_port()
    procs = []
    for pid in range(processes):
        extra = () if processes == 1 else (
            "--config.distributed.coordinator-address", f"localhost:{port}",
            "--config.distributed.num-processes", str(processes),
            "--config.distributed.process-id", str(pid),
            "--config.distributed.heartbeat-timeout", str(heartbeat))
        log = open(pathlib.Path(logs) / f"{model_dir.name}_{pid}.log", "a")  # noqa: SIM115
        procs.append(subprocess.Popen(
            train_command(model_dir, faces, iterations, batch_size, extra), cwd=ROOT,
            env=_env(devices // processes), stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait(procs, timeout=900) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


def saved_params(model_dir) -> dict[str, np.ndarray]:
    """The newest save's parameters, by name, read in this (single) process."""
    import jax

    from fsjax.checkpoint.graft import leaf_names
    from fsjax.checkpoint.manager import Checkpoints

    checkpoints = Checkpoints(model_dir, "phaze_a", writable=False)
    try:
        saved, _ = checkpoints.restore(jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    finally:
        checkpoints.close()
    return {k: np.asarray(v) for k, v in leaf_names(saved["params"]).items()}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def run_check(processes: int, iterations: int, devices: int, work: pathlib.Path,
              log=print) -> tuple[float, bool]:
    from fsjax.data.demo import write_demo_faces

    if iterations < 4:
        raise ValueError("--iterations must be at least 4 (two common first steps, a save to "
                         "kill after, and one to resume into)")
    faces = write_demo_faces(work / "faces", count=26, size=128, seed=7)
    batch = devices  # one face per device and side
    single, multi = work / "single", work / "multi"
    assert wait(launch(single, faces, 2, batch, 1, devices, work)) == [0], f"see {work}"
    shutil.copytree(single, multi)
    codes = wait(launch(single, faces, iterations, batch, 1, devices, work))
    assert codes == [0], f"the single-process run failed ({codes}); see {work}"
    procs = launch(multi, faces, iterations, batch, processes, devices, work)
    log_0 = work / "multi_0.log"
    kill_after = 3
    deadline = time.time() + 900
    while f"[Saved model] iteration {kill_after}" not in log_0.read_text():
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    for proc in procs:  # every process killed at once, mid-run
        proc.send_signal(signal.SIGKILL)
    wait(procs)
    before = log_0.read_text()
    log(f"killed the {processes} processes after their save of iteration {kill_after}")
    codes = wait(launch(multi, faces, iterations, batch, processes, devices, work))
    assert codes == [0] * processes, f"the resumed run failed ({codes}); see {work}"
    after = log_0.read_text()[len(before):]
    resumed = (f"Resuming 'phaze_a' in {multi} at iteration" in after
               and f"[Saved model] iteration {iterations}" in after)
    diff = max_diff(saved_params(multi), saved_params(single))
    return diff, resumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--devices", type=int, default=8, help="virtual CPU devices in all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fsjax-multihost-") as tmp:
        diff, resumed = run_check(args.processes, args.iterations, args.devices,
                                  pathlib.Path(tmp), log=lambda line: print(line, flush=True))
    print(f"processes={args.processes} max_param_diff={diff:.3g} resumed={resumed}")


if __name__ == "__main__":
    main()
