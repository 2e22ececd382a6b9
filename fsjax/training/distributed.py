"""Before the first device is touched: join the other processes and turn on the compile cache.

fsjax runs one process per host. `jax.distributed.initialize` joins them when the options name
a coordinator, or when JAX's own cluster detection has something to find (SLURM, Open MPI, TPU
pods); a single process skips it. A process that dies stops sending heartbeats, and after
`distributed.heartbeat_timeout` seconds JAX's coordination service stops the others with a
message naming the dead task, so no process waits for ever.
"""

from __future__ import annotations

import os
import pathlib

import jax

from fsjax.config import ExperimentConfig, cache_root


def compilation_cache_dir(config: ExperimentConfig) -> pathlib.Path | None:
    """Where compiled programs are kept between runs (None: off)."""
    train = config.train
    if train.no_compilation_cache:
        return None
    if train.compilation_cache is not None:
        return pathlib.Path(train.compilation_cache)
    env = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return pathlib.Path(env) if env else cache_root() / "xla"


def cluster_detected(environ: dict[str, str] | None = None) -> bool:
    """Whether the environment is a multi-process job JAX knows how to join by itself."""
    env = os.environ if environ is None else environ

    def count(*names: str) -> int:
        for name in names:
            if env.get(name, "").isdigit():
                return int(env[name])
        return 1

    return (("SLURM_JOB_ID" in env and count("SLURM_NTASKS", "SLURM_NPROCS") > 1)
            or count("OMPI_COMM_WORLD_SIZE") > 1
            or len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1)


def start(config: ExperimentConfig) -> None:
    """Sets the compilation cache and, when asked or detected, joins the processes."""
    folder = compilation_cache_dir(config)
    if folder is None:
        jax.config.update("jax_enable_compilation_cache", False)
    else:
        jax.config.update("jax_compilation_cache_dir", str(folder))
    dist = config.distributed
    if not dist.explicit and not cluster_detected():
        return
    # CPU processes need a collectives backend to talk to each other (harmless elsewhere).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    explicit = {}
    if dist.explicit:
        explicit = dict(coordinator_address=dist.coordinator_address,
                        num_processes=dist.num_processes, process_id=dist.process_id)
    jax.distributed.initialize(**explicit, heartbeat_timeout_seconds=dist.heartbeat_timeout,
                               initialization_timeout=dist.initialization_timeout)
