"""Orbax checkpoints inside the model folder: the model with its data iterator, and the optimizer.

A save is `<model_dir>/<name>_checkpoints/<step>/` (step, weights, BatchNorm statistics, the data
iterator) and, when the optimizer is saved, `<model_dir>/<name>_optimizer/<step>/`. Orbax writes
each under a temporary name and renames it when complete, so a save is either all there or
absent. The optimizer is written first: the model's rename is the commit point, and an optimizer
state is only ever used with the model save of the same step. Keeping the two apart is what lets
Faceswap's `save_optimizer = exit` add the optimizer to a step already saved without it.

Like Faceswap's one model file, one save is kept: orbax removes the older one only once the new
one is complete, and an optimizer save whose model save is gone is removed with it.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import orbax.checkpoint as ocp

from fsjax.checkpoint.state_file import ModelFolderError

_TMP = re.compile(r"\.orbax-checkpoint-tmp")


class SaveError(ModelFolderError):
    """A save could not be written (disk full, unwritable folder); earlier saves are intact."""


class SavedState(Protocol):
    """What a save holds: the training state's parts (`fsjax.training.state.TrainState`); the
    loss scale is saved with the model, so it continues even when the optimizer is not saved."""

    step: Any
    params: Any
    opt_state: Any
    model_state: Any
    loss_scale: Any


Placement = jax.sharding.Sharding | Callable[[Any], jax.sharding.Sharding]
"""Where restored arrays go: one sharding for all, or a rule from a leaf (with `.shape` and
`.dtype`) to its sharding, such as `Runtime.leaf_sharding`."""


def free_space(path: pathlib.Path) -> str:
    """Free space on the disk holding `path`, for error messages."""
    for candidate in (path, *path.parents):
        try:
            return f"{shutil.disk_usage(candidate).free / 2**20:,.0f} MiB free"
        except OSError:
            continue
    return "free space unknown"


def remove_leftovers(folder: pathlib.Path, what: str, *, warn: bool = True
                     ) -> list[pathlib.Path]:
    """Deletes the temporary directories of unfinished orbax saves in `folder`, warning (unless
    told not to) that it removes `what` ("an interrupted model save", ...)."""
    removed = [p for p in sorted(pathlib.Path(folder).glob("*")) if _TMP.search(p.name)]
    for path in removed:
        if warn:
            print(f"warning: removing {what}: {path}", file=sys.stderr, flush=True)
        shutil.rmtree(path, ignore_errors=True)
    return removed


class _Held(logging.Filter):
    """Holds back the records of orbax's ERROR logs while a save runs."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
            return False
        return True


def _from_orbax(record: logging.LogRecord) -> bool:
    """The record names orbax, or its exception was raised inside orbax's code."""
    if "orbax" in record.getMessage():
        return True
    tb = record.exc_info[2] if record.exc_info else None
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


class _LostWriteTasks(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" (and the same for the
    `_GatheringFuture` that gathers them) for orbax's write tasks of a failed save: garbage
    collection reports each one again, at any time up to the interpreter's exit, after SaveError
    has reported the failure once."""

    def filter(self, record: logging.LogRecord) -> bool:
        first = record.getMessage().partition("\n")[0]
        return not (first.endswith("exception was never retrieved") and _from_orbax(record))


_LOST_WRITES = _LostWriteTasks()


def _late_loop_callback(unraisable: Any) -> bool:
    """A write tensorstore finished after orbax closed the event loop of a failed save."""
    return (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed")


@contextlib.contextmanager
def _one_message_on_failure(undo_later: list[Callable[[], None]]) -> Iterator[None]:
    """While a save runs and, if it fails, until the manager closes: orbax's threads log the
    failure with tracebacks (once per thread, some late on a loaded machine), and writes still
    in flight end in an unraisable "Event loop is closed". A failed save is reported once, by
    SaveError, so these are dropped then (the filter is undone by `Checkpoints.close`, through
    `undo_later`); a save that succeeds gets its ERROR records logged as usual."""
    logger = logging.getLogger("absl")
    held = _Held()
    logger.addFilter(held)
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _late_loop_callback(unraisable):
            previous(unraisable)

    def undo() -> None:
        logger.removeFilter(held)
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous

    sys.unraisablehook = hook
    try:
        yield
    except BaseException:
        undo_later.append(undo)
        logging.getLogger("asyncio").addFilter(_LOST_WRITES)  # kept: they come until exit
        raise
    undo()
    for record in held.records:
        logger.handle(record)


class Checkpoints:
    """Saves and restores `(TrainState, data iterator state)` pairs in a model folder."""

    def __init__(self, model_dir: pathlib.Path, name: str, *, max_to_keep: int = 1,
                 writable: bool = True, primary: bool = True) -> None:
        """`writable` is for the run that holds the folder's lock: its primary process removes
        the leftovers of interrupted saves (with a warning); every process of it takes part in
        the saves and in deleting unused optimizer saves (orbax's collective delete). A reader
        (`--load-weights`) touches nothing, since another run may be saving there."""
        model_dir = pathlib.Path(model_dir).absolute()
        self.directory = model_dir / f"{name}_checkpoints"
        self.optimizer_directory = model_dir / f"{name}_optimizer"
        self._cleans = writable and primary
        # orbax's deletes are collective (a barrier): every process of the run takes part.
        self._prunes = writable
        self._undo_on_close: list[Callable[[], None]] = []
        if self._cleans:
            for folder, what in ((self.directory, "model"),
                                 (self.optimizer_directory, "optimizer")):
                # before orbax's own, silent, clean-up
                remove_leftovers(folder, f"an interrupted {what} save")
        # Synchronous saves: the state file must only name complete saves. Handlers are named up
        # front, so a saved tree's metadata can be read before a restore.
        self._model = ocp.CheckpointManager(
            self.directory, options=_options(max_to_keep, writable),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data_iter": ocp.JsonCheckpointHandler()})
        # Not pruned by orbax: the optimizer is written before its model save, so pruning then
        # would drop the optimizer of the newest complete save; `_drop_unused_optimizers` prunes
        # once the model save is committed.
        self._optimizer = ocp.CheckpointManager(
            self.optimizer_directory, options=_options(None, writable),
            item_handlers={"opt_state": ocp.StandardCheckpointHandler()})
        self._drop_unused_optimizers()

    def latest_step(self) -> int | None:
        return self._model.latest_step()

    def has_optimizer(self, step: int) -> bool:
        return step in self._optimizer.all_steps()

    def step_directories(self, step: int) -> list[pathlib.Path]:
        """The directories holding save `step` (the model's, and the optimizer's if saved)."""
        dirs = [self.directory / str(step)]
        if self.has_optimizer(step):
            dirs.append(self.optimizer_directory / str(step))
        return dirs

    def save(self, state: SavedState, data_iter_state: dict[str, Any], *,
             with_optimizer: bool = True) -> None:
        """Saves the state's step; when that step is already saved, only adds the optimizer state
        if it is asked for and missing. Raises SaveError, leaving earlier saves intact."""
        step = int(jax.device_get(state.step))
        if with_optimizer and not self.has_optimizer(step):
            self._write(self._optimizer, self.optimizer_directory, step,
                        opt_state=ocp.args.StandardSave(state.opt_state))
        if step not in self._model.all_steps():
            model = {"step": state.step, "params": state.params, "model_state": state.model_state}
            if state.loss_scale is not None:
                model["loss_scale"] = state.loss_scale
            self._write(self._model, self.directory, step,
                        state=ocp.args.StandardSave(model),
                        data_iter=ocp.args.JsonSave(data_iter_state))
        self._drop_unused_optimizers()

    def _drop_unused_optimizers(self) -> None:
        """Deletes the optimizer saves of steps whose model save is gone (pruned, or never
        committed because a run was killed between the two writes): nothing can resume them."""
        if not self._prunes:
            return
        kept = set(self._model.all_steps())
        for step in self._optimizer.all_steps():
            if step not in kept:
                self._optimizer.delete(step)

    def _write(self, manager: ocp.CheckpointManager, folder: pathlib.Path, step: int,
               **items: Any) -> None:
        try:
            with _one_message_on_failure(self._undo_on_close):
                try:
                    manager.save(step, args=ocp.args.Composite(**items), force=True)
                    manager.wait_until_finished()
                except Exception:
                    _remove_failed(manager, folder)
                    raise
        except Exception as err:  # orbax and tensorstore wrap OSErrors in their own types
            raise SaveError(
                f"{folder}: the save of iteration {step} failed: {err} ({free_space(folder)}). "
                "The earlier saves are intact: free some space or make the folder writable, then "
                "run the same command again to resume from the last save"
            ) from err

    def restore(self, sharding: Placement, step: int | None = None,
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restores a save (default the newest complete one) as saved: nested dicts and lists of
        arrays placed by `sharding`, whatever optimizer layout wrote them, with the optimizer
        state of the same step if it was saved. `graft` fits it onto the state this run builds."""
        step = self._model.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no complete checkpoint")
        restored = self._model.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(self._model, step, "state", sharding)),
            data_iter=ocp.args.JsonRestore()))
        state = dict(restored["state"])
        if self.has_optimizer(step):
            state["opt_state"] = self._optimizer.restore(step, args=ocp.args.Composite(
                opt_state=ocp.args.StandardRestore(
                    _abstract(self._optimizer, step, "opt_state", sharding))))["opt_state"]
        return state, restored["data_iter"]

    def close(self) -> None:
        for manager in (self._model, self._optimizer):
            try:
                manager.close()
            except Exception:  # noqa: BLE001 - a failed save was already reported
                if not self._undo_on_close:
                    raise
        while self._undo_on_close:
            self._undo_on_close.pop()()


def _remove_failed(manager: ocp.CheckpointManager, folder: pathlib.Path) -> None:
    """Best effort: removes a failed save's temporary folder once the writes still in flight on
    orbax's threads stop touching it; whatever survives goes when the next run starts."""
    try:
        manager.wait_until_finished()
    except Exception:  # noqa: BLE001 - the first error is the one reported
        pass
    for attempt in range(20):
        if not remove_leftovers(folder, "a failed save", warn=attempt == 0):
            break
        time.sleep(0.1)


def _options(max_to_keep: int | None, writable: bool) -> ocp.CheckpointManagerOptions:
    return ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=writable,
                                        enable_async_checkpointing=False,
                                        cleanup_tmp_directories=writable)


def _abstract(manager: ocp.CheckpointManager, step: int, item: str, sharding: Placement) -> Any:
    metadata = manager.item_metadata(step)[item]
    tree = getattr(metadata, "tree", metadata)
    rule = (lambda _: sharding) if isinstance(sharding, jax.sharding.Sharding) else sharding

    def leaf(m: Any) -> jax.ShapeDtypeStruct:
        shape = jax.ShapeDtypeStruct(tuple(m.shape), m.dtype)
        return jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=rule(shape))

    return jax.tree.map(leaf, tree)
