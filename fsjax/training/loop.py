"""The training loop: set-up, resume, the iteration loop, saves, previews, logs and clean stops.

Everything that can fail on bad input (config, face folders, model folder) is checked before the
model is built. The loop runs until the total iteration target or a stop request (Ctrl-C, SIGTERM),
then saves and returns; running the same command again resumes from the newest complete save.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Any

import jax
import numpy as np

from fsjax.checkpoint import state_file
from fsjax.checkpoint.lock import take_folder
from fsjax.checkpoint.manager import Checkpoints, SaveError, free_space
from fsjax.config import ExperimentConfig
from fsjax.data import pipeline
from fsjax.data.stored_masks import STORED_MASK_TYPES
from fsjax.models import get_model_module
from fsjax.optim.loss_scale import DynamicLossScale
from fsjax.optim.optimizers import make_optimizer, optimizer_steps
from fsjax.training import lr_finder, resume
from fsjax.training.inputs import data_seed, face_folders, sample_spec, scan_side, scan_timelapse
from fsjax.training.logs import status_line, time_left
from fsjax.training.outputs import Outputs
from fsjax.training.runtime import Runtime
from fsjax.training.state import TrainState
from fsjax.training.step import FINITE, LOSS_SCALE, init_state, make_init_fn, make_train_step
from fsjax.training.stop import StopRequest
from fsjax.training.timing import LoopTimes
from fsjax.training.views import Views


def train_and_evaluate(
    config: ExperimentConfig, *, stop: StopRequest | None = None,
    times: LoopTimes | None = None,
) -> TrainState:
    """Trains to `config.target_iterations` iterations or a stop request; returns the state.
    `times` (if given) records where the wall time goes (scripts/bench_e2e.py)."""
    launched = time.time()
    times = LoopTimes() if times is None else times
    stop = StopRequest() if stop is None else stop
    model_dir = pathlib.Path(config.train.model_dir)
    spec_model = get_model_module(config.model.name).build(config)
    name = spec_model.name

    runtime = Runtime.create(config)
    out = Outputs(runtime.is_primary, model_dir, name)
    # Everything that reads user input happens before the model is built.
    folder_a, folder_b = face_folders(config, out.say)
    stored_mask = config.loss.mask_type if config.loss.mask_type in STORED_MASK_TYPES else None
    sides = dict(batch_size=config.train.batch_size, demo=config.data.uses_demo, say=out.say)
    metas_a = scan_side("A", folder_a, config.data.bad_faces, stored_mask, **sides)
    metas_b = scan_side("B", folder_b, config.data.bad_faces, stored_mask, **sides)
    timelapse = scan_timelapse(config, stored_mask, out.say)
    plan = _Plan.make(config, spec_model)
    runtime = runtime.with_state(plan.abstract)
    # The primary process owns the folder: it alone locks it and writes its files.
    lock = take_folder(model_dir) if runtime.is_primary else None
    try:
        model_state = resume.open_model_state(model_dir, name, config)
        return _train(config, stop, spec_model, model_state, runtime, out, plan,
                      (metas_a, metas_b), (folder_a, folder_b), (launched, times), timelapse)
    finally:
        if lock is not None:
            lock.release()


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The run's keys, the sub-models it freezes or loads, and its state's initializer."""

    init_key: jax.Array
    train_key: jax.Array
    data_key: jax.Array
    frozen: tuple[str, ...]
    load_layers: tuple[str, ...]
    base_tx: Any
    init_fn: Any
    abstract: TrainState
    """`jax.eval_shape` of `init_fn`: the state's layout, traced once."""

    @classmethod
    def make(cls, config: ExperimentConfig, spec_model: Any) -> _Plan:
        init_key, train_key, data_key = jax.random.split(jax.random.key(config.train.seed), 3)
        available = list(jax.eval_shape(spec_model.module.init, init_key, *[jax.ShapeDtypeStruct(
            (1, spec_model.input_size, spec_model.input_size, 3), np.float32)] * 2)["params"])
        train = config.train
        frozen = (resume.resolve_layers(train.freeze_layers, available, "train.freeze_layers",
                                        spec_model.keras_encoder,
                                        spec_model.keras_encoder_unmatched)
                  if train.freeze_weights else ())
        load_layers = (resume.resolve_layers(train.load_layers, available, "train.load_layers")
                       if train.load_weights is not None else ())
        base_tx = make_optimizer(config.optimizer)  # the state layout; the rate comes later
        init_fn = make_init_fn(spec_model.module, base_tx, spec_model.input_size, frozen,
                               DynamicLossScale.configured(config))
        return cls(init_key, train_key, data_key, frozen, load_layers, base_tx, init_fn,
                   jax.eval_shape(init_fn, init_key))


def _train(config: ExperimentConfig, stop: StopRequest, spec_model: Any, model_state: dict,
           runtime: Runtime, out: Outputs, plan: _Plan, metas: tuple,
           folders: tuple, clocks: tuple, timelapse_faces: tuple | None) -> TrainState:
    """The run itself, once the inputs are checked and the folder is locked."""
    name, model_dir = spec_model.name, out.model_dir
    (metas_a, metas_b), (folder_a, folder_b) = metas, folders
    spec = sample_spec(config, max((spec_model.input_size,) + spec_model.output_sizes))
    session_id = state_file.next_session_id(model_state)
    out.open_logs(None if config.train.no_logs
                  else model_dir / f"{name}_logs" / f"session_{session_id}" / "train")
    out.say(f"Faces: A {len(metas_a)} in {folder_a}, B {len(metas_b)} in {folder_b}")

    frozen = plan.frozen
    fresh = functools.partial(init_state, spec_model.module, plan.base_tx, spec_model.input_size,
                              plan.init_key, runtime.state_sharding, frozen,
                              DynamicLossScale.configured(config))
    out.remove_leftovers()  # under the lock: no other run is saving here
    checkpoints = Checkpoints(model_dir, name, primary=runtime.is_primary)
    iterator = pipeline.make_train_iter(
        metas_a, metas_b, spec, config.augment, batch_size=config.train.batch_size,
        seed=data_seed(plan.data_key), num_processes=config.data.num_processes,
        pre_fetch=config.data.pre_fetch, shard_index=jax.process_index(),
        shard_count=jax.process_count(),
    )
    session = None
    remove_handlers = stop.install()
    try:
        state, iter_state, report = resume.restore_or_init(
            checkpoints, plan.abstract, fresh, runtime.leaf_sharding, out.say)
        if iter_state is not None:
            if iter_state:
                iterator.set_state(iter_state)
            else:  # a model imported from Faceswap: no fsjax data order to continue
                out.say("The data order starts afresh (no fsjax loader state in this save)")
            out.say(f"Resuming '{name}' in {model_dir} at iteration {int(state.step)}")
            state = resume.switch_precision(
                state, model_state.get("config", {}), config, runtime.state_sharding.loss_scale,
                state_file.state_path(model_dir, name), out.say)
            if config.train.load_weights is not None:
                out.say("--load-weights is ignored: it only applies to a new model")
        else:
            out.say(f"New '{name}' model in {model_dir}")
            state = resume.load_pretrained(state, config, spec_model.pretrained, out.say)
            if config.train.load_weights is not None:
                state = resume.load_weights(state, config.train.load_weights, name,
                                            plan.load_layers, runtime.leaf_sharding, out.say)
        out.say(resume.precision_line(config, state))
        if frozen:
            out.say(f"Frozen (not trained): {', '.join(frozen)}")
        views = Views(config, out, spec_model, (metas_a, metas_b, spec), timelapse_faces)
        session = _Session(config, name, model_dir, model_state, session_id, checkpoints,
                           iterator, spec_model, views, runtime, out, *clocks)
        if (config.train.use_lr_finder and iter_state is None
                and (model_state.get("lr_finder") or -1) <= 0):
            state = session.find_learning_rate(state, plan.train_key, frozen)
            if config.optimizer.lr_finder_mode == "graph_and_exit":
                return state
        learning_rate = resume.session_learning_rate(config, state, report,
                                                     model_state.get("lr_finder"), out.say)
        start = int(jax.device_get(optimizer_steps(state.opt_state)))
        if config.train.warmup:
            out.say(f"Learning rate warmup: 0 to {learning_rate:.1e} over the first "
                    f"{config.train.warmup} optimizer steps")
        tx = make_optimizer(config.optimizer, resume.session_schedule(
            learning_rate, config.train.warmup, start))
        step = make_train_step(spec_model.module, tx, config.loss, runtime,
                               spec_model.input_size, frozen)
        state = session.run(state, step, plan.train_key, stop)
    finally:
        remove_handlers()
        if session is not None:
            session.close()
        else:
            out.close()
            checkpoints.close()
            iterator.close()
    return state


@dataclasses.dataclass
class _Session:
    """One run of the loop: owns the counters, loss history and writers of this session."""

    config: ExperimentConfig
    name: str
    model_dir: pathlib.Path
    model_state: dict
    session_id: int
    checkpoints: Checkpoints
    iterator: Any
    spec_model: Any
    views: Views
    runtime: Runtime
    out: Outputs
    launched: float
    """When the run started (before the faces were scanned): the first iteration's wait."""
    times: LoopTimes

    def __post_init__(self) -> None:
        self.started = time.time()
        self.iterations = 0
        self.history: list[float] = []
        self.timed_from: tuple[float, int] | None = None

    def run(self, state: TrainState, step_fn: Any, train_key: jax.Array,
            stop: StopRequest) -> TrainState:
        target = self.config.target_iterations
        total = int(jax.device_get(state.step))
        if total >= target:
            self.out.say(f"Already at {total} iterations (target {target}): nothing to do")
            return state
        train_key = self.runtime.replicate_key(train_key)
        self.saved_at = total
        every = self.config.train.status_every
        # Metrics stay on device until they are read: every `status_every` iterations, once the
        # next step is dispatched, and before every save (all of them at once, one sync).
        pending: list[tuple[dict[str, jax.Array], int]] = []
        clock = time.perf_counter
        while total < target and not stop:
            began = clock()
            batch = self.runtime.to_global(next(self.iterator))
            fed = clock()
            state, metrics = step_fn(state, batch, train_key)
            self.times.add("data", fed - began)
            self.times.add("step", clock() - fed)
            if len(pending) >= every:
                self._report(pending)
                pending = []
            total += 1
            self.iterations += 1
            pending.append((metrics, total))
            # Faceswap saves at the first iteration of a session and every save interval (both
            # counted per session); snapshots go by total iterations and need a fresh save.
            snapshot = self.config.train.snapshot_interval
            snapshot_due = bool(snapshot) and total % snapshot == 0
            if (self.iterations == 1 or self.iterations % self.config.train.save_interval == 0
                    or snapshot_due):
                self._report(pending)  # the NaN check runs before anything is saved
                pending = []
                self.save(state, exit=total >= target or bool(stop), snapshot=snapshot_due)
            self.times.end_iteration()
        if pending:
            self._report(pending)
        if self.iterations:  # the exit save: only the optimizer is added if this step is saved
            self.save(state, exit=True)
        reason = "target reached" if total >= target else "stop requested"
        self.out.say(f"Stopped at iteration {total} ({reason}); model saved in {self.model_dir}")
        self.views.at_exit()
        return state

    def _report(self, pending: list[tuple[dict[str, jax.Array], int]]) -> None:
        """Reads the metrics of the iterations in `pending`; NaN protection judges each of them,
        TensorBoard gets each, and the status line shows the last."""
        waiting = time.perf_counter()
        read = jax.device_get([metrics for metrics, _ in pending])
        self.times.add("step", time.perf_counter() - waiting)
        for values, (_, total) in zip(read, pending, strict=True):
            finite = bool(values.pop(FINITE))
            values = {k: float(v) for k, v in values.items()}
            if not finite:
                self._not_finite(values, total)
            else:
                self.history.append(values["total"])
            self.out.scalars(total, values)
        now = time.time()
        if self.timed_from is None:  # the first step includes compilation: time from its end
            self.timed_from = (now, self.iterations)
            self.out.say(f"First iteration {now - self.launched:.1f} s after start (scanning, "
                         "building, restoring and compiling)")
        done, seconds = self.iterations - self.timed_from[1], now - self.timed_from[0]
        rate = done * 2 * self.config.train.batch_size / max(seconds, 1e-9)
        if done:  # the speed, once measured past the compiling first step
            self.out.scalars(total, {"examples_per_second": rate})
        eta = time_left(done, seconds, self.config.target_iterations - total)
        self.out.say(status_line(now - self.started, self.iterations, total, values["loss_a"],
                                 values["loss_b"], rate, values.get(LOSS_SCALE), eta))

    def _not_finite(self, values: dict[str, float], total: int) -> None:
        bad = ", ".join(f"{k} = {v}" for k, v in sorted(values.items()) if not np.isfinite(v))
        if self.config.train.nan_protection:
            raise FloatingPointError(
                f"iteration {total}: NaN protection stopped training without saving; not finite: "
                f"{bad}. The last save (iteration {self.saved_at}) is intact: lower "
                "the learning rate or roll back to a snapshot"
            )
        self.out.say(f"warning: iteration {total}: not finite: {bad} (NaN protection is off)",
                     error=True)

    def find_learning_rate(self, state: TrainState, train_key: jax.Array,
                           frozen: tuple[str, ...]) -> TrainState:
        """Runs the finder on the new model, stores the rate in the state file (and the graph),
        and returns the starting state, restored bit-exactly."""
        opt = self.config.optimizer
        tx = make_optimizer(opt, lr_finder.sweep_schedule(opt.lr_finder_iterations))
        step = make_train_step(self.spec_model.module, tx, self.config.loss, self.runtime,
                               self.spec_model.input_size, frozen)
        batches = (self.runtime.to_global(b) for b in self.iterator)
        marks = {opt.lr_finder_iterations * i // 10 for i in range(1, 11)}

        def progress(iteration: int, current: float, best: float) -> None:
            if iteration in marks:
                self.out.say(f"Learning rate finder: {iteration}/{opt.lr_finder_iterations}, "
                             f"current {current:.1e}, best {best:.1e}")

        self.out.say(f"Finding the learning rate over {opt.lr_finder_iterations} iterations...")
        key = self.runtime.replicate_key(train_key)
        rate, record, state = lr_finder.find_learning_rate(
            state, step, batches, key, iterations=opt.lr_finder_iterations,
            strength=opt.lr_finder_strength, progress=progress)
        self.model_state["lr_finder"] = rate
        self.out.say(f"Learning rate finder: {rate:.1e} ({opt.lr_finder_strength})")
        if opt.lr_finder_mode != "set":
            graph = self.out.graph(functools.partial(lr_finder.plot_sweep, record))
            self.out.say(f"Learning rate graph: {graph}")
        self.out.write_state(self.model_state)
        if opt.lr_finder_mode == "graph_and_exit":
            self.checkpoints.save(state, self.iterator.get_state())  # the untrained model, an exit
            self.out.say("lr_finder_mode=graph_and_exit: the rate is stored; stopping before "
                         "training")
        return state

    def save(self, state: TrainState, *, exit: bool = False, snapshot: bool = False) -> None:
        """Faceswap's save: the checkpoint (with the optimizer as `save_optimizer` says; always
        for a snapshot), the state file, the backup when the loss average is the best so far,
        the snapshot, the logs and the preview."""
        began = time.perf_counter()
        if self._save(state, exit=exit, snapshot=snapshot):
            self.times.add("save", time.perf_counter() - began)

    def _save(self, state: TrainState, *, exit: bool, snapshot: bool) -> bool:
        total = int(jax.device_get(state.step))
        mode = self.config.optimizer.save_optimizer
        with_optimizer = snapshot or mode == "always" or (mode == "exit" and exit)
        repeat = total == self.saved_at  # already on disk: at most the optimizer is added
        if repeat and (not with_optimizer or self.checkpoints.has_optimizer(total)):
            return False
        self.checkpoints.save(state, self.iterator.get_state(), with_optimizer=with_optimizer)
        average, backup = self._loss_average()
        state_file.record_session(
            self.model_state, self.session_id, batch_size=self.config.train.batch_size,
            session_iterations=self.iterations, total_iterations=total,
            no_logs=self.config.train.no_logs, config=self.config, started=self.started,
        )
        try:
            self.out.write_state(self.model_state)
            self.out.write_config(self.config)
            if backup:
                self.out.backup(total, self.checkpoints.step_directories(total))
            if snapshot:
                target = self.out.snapshot(total, self.checkpoints.step_directories(total))
        except OSError as err:
            raise SaveError(
                f"{self.model_dir}: the save of iteration {total} failed: {err} "
                f"({free_space(self.model_dir)}). The checkpoint of iteration {total} is "
                "complete; free some space or make the folder writable, then run the same "
                "command again to resume from it") from err
        self.saved_at = total
        line = f"[Saved model] iteration {total}"
        if average is not None:
            line += f" - Average total loss since last save: {average:.5f}"
        self.out.say(line + (" [Model backed up]" if backup else ""))
        if snapshot:
            self.out.say(f"Snapshot of iteration {total} in {target}")
        if not repeat:
            self.views.at_save(state.variables(), total)
            self.out.flush()
        return True

    def _loss_average(self) -> tuple[float | None, bool]:
        """The mean total loss since the last save, and whether this save is the backup:
        Faceswap 3's rule, a mean below every earlier save's, never at the model's first save."""
        if not self.history:
            return None, False
        average, self.history = float(np.mean(self.history)), []
        lowest = self.model_state.get("lowest_avg_loss")
        if not lowest:  # Faceswap's test: None, or 0 from an older file
            self.model_state["lowest_avg_loss"] = average
            return average, False
        if average < lowest:
            self.model_state["lowest_avg_loss"] = average
            return average, True
        return average, False

    def close(self) -> None:
        self.out.close()
        self.checkpoints.close()
        self.iterator.close()

