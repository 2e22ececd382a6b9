"""Orbax checkpoints inside the model folder: the train state and the data iterator, saved together.

Each save is a directory `<model_dir>/<name>_checkpoints/<step>/` that orbax writes under a
temporary name and renames when complete, so an interrupted save is never restored; its
leftovers are removed on the next save.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from fsjax.training.state import TrainState


class Checkpoints:
    """Saves and restores `(TrainState, data iterator state)` pairs in a model folder."""

    def __init__(self, model_dir: pathlib.Path, name: str, *, max_to_keep: int = 2) -> None:
        self.directory = pathlib.Path(model_dir).absolute() / f"{name}_checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=False,  # the state file must only name complete saves
            cleanup_tmp_directories=True,
        )
        # Handlers named up front, so the saved tree's metadata can be read before a restore.
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data_iter": ocp.JsonCheckpointHandler()},
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state: TrainState, data_iter_state: dict[str, Any]) -> None:
        step = int(jax.device_get(state.step))
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data_iter=ocp.args.JsonSave(data_iter_state),
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore(self, sharding: jax.sharding.Sharding, step: int | None = None,
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restores a save (default the newest complete one) as saved: nested dicts and lists of
        arrays placed with `sharding`, whatever optimizer layout wrote them. `graft` fits it
        onto the state this run builds."""
        step = self._manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no complete checkpoint")
        metadata = self._manager.item_metadata(step)["state"]
        tree = getattr(metadata, "tree", metadata)
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding), tree)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                data_iter=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["data_iter"]

    def close(self) -> None:
        self._manager.close()
