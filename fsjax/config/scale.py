"""The options for running on more than one process or device: jax.distributed and FSDP
(`--config.distributed.*`, `--config.sharding.*`)."""

from __future__ import annotations

import dataclasses

from fsjax.config.checks import ConfigError, _check_range


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """One `python -m fsjax.train` per host, joined by `jax.distributed.initialize`.

    Under SLURM, Open MPI and on TPU pods JAX finds the processes itself; elsewhere give all three
    of the address, the count and this process's id. A single process needs none of it."""

    coordinator_address: str | None = None
    """HOST:PORT of process 0's coordination service (every process gives the same)."""
    num_processes: int | None = None
    """How many processes take part."""
    process_id: int | None = None
    """This process's id, 0 .. num_processes - 1 (0 writes the model folder's files)."""
    heartbeat_timeout: int = 30
    """Seconds without a heartbeat after which a process counts as dead and the others stop
    with JAX's message saying so, instead of waiting for ever (10..3600)."""
    initialization_timeout: int = 300
    """Seconds to wait for every process to join (10..86400)."""

    def __post_init__(self) -> None:
        given = [v is not None for v in (self.coordinator_address, self.num_processes,
                                         self.process_id)]
        if any(given) and not all(given):
            raise ConfigError("distributed: give all of coordinator_address, num_processes and "
                              "process_id, or none of them")
        if self.coordinator_address is not None:
            host, _, port = self.coordinator_address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"distributed.coordinator_address="
                                  f"{self.coordinator_address!r}: expected HOST:PORT")
            _check_range("distributed.num_processes", self.num_processes, 1, 100_000)
            _check_range("distributed.process_id", self.process_id, 0, self.num_processes - 1)
        _check_range("distributed.heartbeat_timeout", self.heartbeat_timeout, 10, 3600)
        _check_range("distributed.initialization_timeout", self.initialization_timeout, 10,
                     86_400)

    @property
    def explicit(self) -> bool:
        return self.coordinator_address is not None


@dataclasses.dataclass(frozen=True)
class ShardingConfig:
    """How the train state is placed on the devices."""

    fsdp: int = 1
    """Split the devices into a `data` x `fsdp` mesh with this many devices on `fsdp`, and shard
    parameters and optimizer state along it (FSDP: for models too big to copy to every device).
    1 copies the state to every device (plain data parallel). Must divide the device count."""
    fsdp_min_size: int = 2**16
    """Arrays with fewer elements stay whole on every device (sharding them saves little)."""

    def __post_init__(self) -> None:
        _check_range("sharding.fsdp", self.fsdp, 1, 65_536)
        _check_range("sharding.fsdp_min_size", self.fsdp_min_size, 1, 2**40)
