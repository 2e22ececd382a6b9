"""Measures the input pipeline's faces per second per worker, beside the train step's speed.

    python scripts/benchmark_data.py --config experiments/original.py \
        --faces-a ~/faces/a --faces-b ~/faces/b [--size 64|256] [--batches 8] [--workers 0]

The data side runs the full training pipeline (`pipeline.make_train_dataset`: PNG decode, crop,
landmark masks and every augmentation the experiment enables by default) on the experiment's
processing size, or on `--size` (the experiment's SampleSpec with that size).

How "per worker" is measured. With `--workers 0` (the default) batches are built in this process
on one thread, OpenCV limited to one thread as in a worker (`cv2.setNumThreads(1)`), by random
access `dataset[i]`: one warm-up batch, then `--batches` timed ones; faces/s = faces of both sides
/ seconds, i.e. what one worker process delivers on one core. With `--workers W` the real grain
iterator runs W worker processes; after the first batch (worker start-up) `--batches` batches
are timed and the total rate is divided by W (only honest with W free cores).

The train step is then timed for the same experiment with scripts/benchmark.py's fixed batch
(`--batch-size` faces per side, one compile step, then `--steps` steps, median). Its examples
are the faces of both sides, like the data figure, so data keeps up with W workers when
W x faces_per_second_per_worker >= step_examples_per_second. The last line printed is exactly
`faces_per_second_per_worker=<float> step_examples_per_second=<float>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import pathlib
import time
from types import ModuleType

import cv2

from fsjax.config import ExperimentConfig, load_experiment
from fsjax.data import faces, pipeline
from fsjax.data.faces import SampleSpec

BENCHMARK_PATH = pathlib.Path(__file__).resolve().with_name("benchmark.py")


def result_line(faces_per_second_per_worker: float, step_examples_per_second: float) -> str:
    """The script's last line (keep exact: external checks parse it)."""
    return (f"faces_per_second_per_worker={faces_per_second_per_worker:.3f} "
            f"step_examples_per_second={step_examples_per_second:.3f}")


def load_benchmark() -> ModuleType:
    """scripts/benchmark.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("fsjax_scripts_benchmark", BENCHMARK_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_spec(config: ExperimentConfig, size: int | None) -> SampleSpec:
    """The experiment's training SampleSpec, at `size` if given."""
    from fsjax.models import get_model_module
    from fsjax.training.inputs import sample_spec

    model = get_model_module(config.model.name).build(config)
    spec = sample_spec(config, max((model.input_size,) + tuple(model.output_sizes)))
    return spec if size is None else dataclasses.replace(spec, size=size)


def time_in_process(dataset, batches: int) -> float:
    """Seconds to build batches 1..`batches` of `dataset` on this thread (batch 0 warms up)."""
    _ = dataset[0]
    start = time.perf_counter()
    for i in range(1, batches + 1):
        _ = dataset[i]
    return time.perf_counter() - start


def time_workers(metas_a, metas_b, spec: SampleSpec, config: ExperimentConfig, *,
                 batch_size: int, batches: int, workers: int, seed: int) -> float:
    """Seconds for `batches` batches from the grain iterator with `workers` processes."""
    iterator = pipeline.make_train_iter(metas_a, metas_b, spec, config.augment,
                                        batch_size=batch_size, seed=seed,
                                        num_processes=workers, pre_fetch=2)
    with iterator:
        next(iterator)  # start-up: spawning the workers and their first batch
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        return time.perf_counter() - start


def data_faces_per_second_per_worker(config: ExperimentConfig, folders, spec: SampleSpec, *,
                                     batch_size: int, batches: int, workers: int,
                                     seed: int = 0) -> float:
    """Faces (both sides) per second delivered per worker; see the module docstring."""
    # Any number of faces will do for timing (training itself needs 25 per side).
    metas_a, metas_b = (faces.scan_folder(folder, min_faces=1) for folder in folders)
    if workers == 0:
        cv2.setNumThreads(1)
        dataset = pipeline.make_train_dataset(metas_a, metas_b, spec, config.augment,
                                              batch_size=batch_size, seed=seed)
        seconds = time_in_process(dataset, batches)
    else:
        seconds = time_workers(metas_a, metas_b, spec, config, batch_size=batch_size,
                               batches=batches, workers=workers, seed=seed)
    return 2 * batch_size * batches / seconds / max(workers, 1)


def step_examples_per_second(config: ExperimentConfig, batch_size: int, steps: int) -> float:
    """Median train-step speed in examples (faces of both sides) per second, as benchmark.py."""
    cv2.setNumThreads(0)  # the step gets the whole machine back
    per_step, _ = load_benchmark().time_step(config, batch_size, steps, log=lambda line: None)
    return 2 * batch_size / per_step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="experiment file")
    parser.add_argument("--faces-a", help="face folder A (default: the demo faces)")
    parser.add_argument("--faces-b", help="face folder B (default: the demo faces)")
    parser.add_argument("--size", type=int, help="data crop size (default: the model's)")
    parser.add_argument("--batches", type=int, default=8, help="timed data batches")
    parser.add_argument("--workers", type=int, default=0,
                        help="0: one in-process thread; W: W grain worker processes")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per side")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps after compiling")
    args = parser.parse_args(argv)
    if (args.faces_a is None) != (args.faces_b is None):
        parser.error("--faces-a and --faces-b go together")
    if args.batches < 1 or args.workers < 0 or args.steps < 1:
        parser.error("need --batches >= 1, --workers >= 0 and --steps >= 1")

    config = load_experiment(args.config)
    if args.faces_a is None:
        from fsjax.training.inputs import face_folders

        folders = face_folders(config)
    else:
        folders = (pathlib.Path(args.faces_a), pathlib.Path(args.faces_b))
    spec = data_spec(config, args.size)
    data_rate = data_faces_per_second_per_worker(config, folders, spec,
                                                 batch_size=args.batch_size,
                                                 batches=args.batches, workers=args.workers)
    print(f"data: size={spec.size} workers={args.workers} batch_size={args.batch_size} "
          f"faces_per_second_per_worker={data_rate:.3f}", flush=True)
    step_rate = step_examples_per_second(config, args.batch_size, args.steps)
    print(f"step: batch_size={args.batch_size} examples_per_second={step_rate:.3f} "
          f"(data needs {step_rate / data_rate:.2f} workers to keep up)", flush=True)
    print(result_line(data_rate, step_rate))


if __name__ == "__main__":
    main()
