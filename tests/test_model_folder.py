"""The model folder's promises, run for real on `tiny_model`: save_optimizer, bit-exact resume,
backups, snapshots, the restore tool, leftovers of interrupted saves and failed saves."""

import errno
import json
import os
import pathlib
import re
import sys
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tiny_model import loop_config

from fsjax.checkpoint import folder, state_file
from fsjax.checkpoint.lock import LOCK_NAME
from fsjax.checkpoint.manager import Checkpoints, SaveError
from fsjax.config import OptimizerConfig
from fsjax.data.demo import write_demo_faces
from fsjax.tools import restore
from fsjax.training import loop
from fsjax.training.stop import StopRequest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAVED = re.compile(r"\[Saved model\] iteration (\d+) - Average total loss since last save: "
                   r"([0-9.]+)")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_demo_faces(tmp_path_factory.mktemp("demo"), count=26, size=128, seed=5)


def _steps(path):
    return sorted(int(p.name) for p in path.glob("*") if p.name.isdigit()) if path.is_dir() else []


def _state(model_dir):
    return json.loads((model_dir / "original_state.json").read_text())


def _saved(model_dir, step=None):
    checkpoints = Checkpoints(model_dir, "original", writable=False)
    try:
        tree, _ = checkpoints.restore(jax.sharding.SingleDeviceSharding(jax.devices()[0]), step)
    finally:
        checkpoints.close()
    return tree


def _equal(a, b):
    same = jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(jax.tree.leaves(same))


@pytest.mark.parametrize("mode, with_optimizer", [("never", []), ("always", [4]),
                                                  ("exit", [4])])
def test_save_optimizer_never_always_exit(tmp_path, faces, tiny_loop, capsys, mode,
                                          with_optimizer):
    model_dir = tmp_path / "model"
    config = loop_config(model_dir, faces, OptimizerConfig(save_optimizer=mode), iterations=4,
                         save_interval=2)
    loop.train_and_evaluate(config)  # saves at 1, 2 and 4 (the last one kept)
    assert _steps(model_dir / "original_checkpoints") == [4]
    assert _steps(model_dir / "original_optimizer") == with_optimizer
    assert _state(model_dir)["config"]["save_optimizer"] == mode
    if mode == "never":  # a resume starts the optimizer afresh and says so
        loop.train_and_evaluate(loop_config(
            model_dir, faces, OptimizerConfig(save_optimizer=mode), iterations=5))
        out = capsys.readouterr().out
        assert "The save of iteration 4 holds no optimizer state" in out
        assert "Resuming 'original'" in out and _state(model_dir)["iterations"] == 5


def test_a_stop_during_a_save_adds_the_optimizer_to_that_save(tmp_path, faces, tiny_loop,
                                                               monkeypatch):
    """SIGTERM arriving while iteration 2 is saved (without the optimizer, save_optimizer=exit):
    the exit save adds the optimizer to that same save and leaves the model's files as they
    were."""
    stop, calls = StopRequest(), []
    save = Checkpoints.save

    def save_then_stop(self, state, data_iter_state, *, with_optimizer=True):
        calls.append((int(state.step), with_optimizer))
        save(self, state, data_iter_state, with_optimizer=with_optimizer)
        if int(state.step) == 2:
            stop.set()

    monkeypatch.setattr(Checkpoints, "save", save_then_stop)
    model_dir = tmp_path / "model"
    loop.train_and_evaluate(loop_config(model_dir, faces, iterations=10, save_interval=2),
                            stop=stop)
    assert calls == [(1, False), (2, False), (2, True)]
    assert _steps(model_dir / "original_checkpoints") == [2]
    assert _steps(model_dir / "original_optimizer") == [2]
    assert _state(model_dir)["iterations"] == 2
    assert "opt_state" in _saved(model_dir)


def test_resume_is_bit_exact_and_leftovers_are_removed(tmp_path, faces, tiny_loop, capsys):
    straight = loop.train_and_evaluate(loop_config(tmp_path / "straight", faces, iterations=6,
                                                   save_interval=2))
    model_dir = tmp_path / "model"
    loop.train_and_evaluate(loop_config(model_dir, faces, iterations=3, save_interval=2))
    # What interrupted saves leave: orbax's temporary step folders, a half backup or snapshot,
    # a state file's temporary copy. They must go, and the newest complete save is used.
    leftovers = [model_dir / "original_checkpoints" / "5.orbax-checkpoint-tmp-1",
                 model_dir / "original_optimizer" / "5.orbax-checkpoint-tmp-1",
                 model_dir / f"original_backup_5{folder.TMP}",
                 tmp_path / f"model_snapshot_5_iters{folder.TMP}"]
    for path in leftovers:
        (path / "part").mkdir(parents=True)
    (model_dir / "original_state.json.tmp").write_text('{"half": ')
    leftovers.append(model_dir / "original_state.json.tmp")
    capsys.readouterr()
    resumed = loop.train_and_evaluate(loop_config(model_dir, faces, iterations=6,
                                                  save_interval=2))
    out, err = capsys.readouterr()
    assert f"Resuming 'original' in {model_dir} at iteration 3" in out
    for path in leftovers:
        assert f"{path}" in err and not path.exists(), path
    assert _equal(resumed.params, straight.params)
    assert _equal(resumed.opt_state, straight.opt_state)
    assert _equal(_saved(model_dir)["params"], _saved(tmp_path / "straight")["params"])
    state = _state(model_dir)
    assert state["iterations"] == 6
    assert {k: v["iterations"] for k, v in state["sessions"].items()} == {"1": 3, "2": 3}


def _bytes_on_disk(root):
    """Bytes of the distinct files under `root` (a hard-linked file counts once)."""
    seen = {}
    for path in pathlib.Path(root).rglob("*"):
        if path.is_file():
            info = path.stat()
            seen[(info.st_dev, info.st_ino)] = info.st_size
    return sum(seen.values())


def test_one_save_is_kept_and_no_optimizer_save_outlives_its_model_save(tmp_path, faces,
                                                                        tiny_loop, capsys):
    model_dir = tmp_path / "model"
    loop.train_and_evaluate(loop_config(model_dir, faces, iterations=4, save_interval=2))
    assert _steps(model_dir / "original_checkpoints") == [4]
    assert _steps(model_dir / "original_optimizer") == [4]  # save_optimizer=exit
    # A resume saves at its first iteration without the optimizer: iteration 4's optimizer
    # save then belongs to no kept save and goes with it.
    stop = StopRequest()
    save = loop._Session.save

    def save_then_stop(self, state, **kwargs):
        save(self, state, **kwargs)
        if int(state.step) == 5 and not kwargs.get("exit"):
            assert _steps(model_dir / "original_checkpoints") == [5]
            assert _steps(model_dir / "original_optimizer") == []
            stop.set()

    loop._Session.save = save_then_stop
    try:
        loop.train_and_evaluate(loop_config(model_dir, faces, iterations=8, save_interval=2),
                                stop=stop)
    finally:
        loop._Session.save = save
    assert _steps(model_dir / "original_checkpoints") == [5]
    assert _steps(model_dir / "original_optimizer") == [5]  # the exit save added it
    # A run killed between the optimizer's write and the model's leaves an optimizer save no
    # model save uses: the next run removes it before anything else.
    orphan = model_dir / "original_optimizer" / "9"
    (model_dir / "original_optimizer" / "5").rename(orphan)
    Checkpoints(model_dir, "original").close()
    assert not orphan.exists() and _steps(model_dir / "original_optimizer") == []


class _Killed(BaseException):
    """The process dying: nothing after it runs."""


def test_a_kill_between_the_optimizer_and_model_writes_keeps_the_last_saves_optimizer(
        tmp_path, faces, tiny_loop, monkeypatch):
    model_dir = tmp_path / "model"
    always = OptimizerConfig(save_optimizer="always")
    loop.train_and_evaluate(loop_config(model_dir, faces, always, iterations=2, save_interval=2))
    write = Checkpoints._write

    def killed_before_the_model(self, manager, directory, step, **items):
        if directory == self.directory:
            raise _Killed
        write(self, manager, directory, step, **items)

    monkeypatch.setattr(Checkpoints, "_write", killed_before_the_model)
    with pytest.raises(_Killed):
        loop.train_and_evaluate(loop_config(model_dir, faces, always, iterations=4,
                                            save_interval=2))
    monkeypatch.undo()
    assert _steps(model_dir / "original_checkpoints") == [2]
    assert _steps(model_dir / "original_optimizer") == [2, 3]  # 3's model save never came
    saved = _saved(model_dir)  # the newest complete save resumes with its optimizer
    assert "opt_state" in saved and int(saved["step"]) == 2
    Checkpoints(model_dir, "original").close()
    assert _steps(model_dir / "original_optimizer") == [2]


def test_the_backup_shares_its_files_with_the_save_it_copies(tmp_path, faces, tiny_loop):
    model_dir = tmp_path / "model"
    always = OptimizerConfig(save_optimizer="always")
    loop.train_and_evaluate(loop_config(model_dir, faces, always, iterations=2, save_interval=2))
    for backup in folder.backups(model_dir, "original").values():
        backup.rename(tmp_path / backup.name)  # the loop's own choice is not under test here
    alone = _bytes_on_disk(model_dir)
    checkpoints = Checkpoints(model_dir, "original", writable=False)
    try:
        dirs = checkpoints.step_directories(2)
    finally:
        checkpoints.close()
    backup = folder.write_backup(model_dir, "original", 2, dirs)
    shared = [p for p in backup.rglob("*") if p.is_file() and p.parent != backup]
    assert len(shared) > 4
    for path in shared:  # every checkpoint file of the backup is the save's own file
        twin = model_dir / path.relative_to(backup)
        assert path.stat().st_ino == twin.stat().st_ino and path.stat().st_nlink == 2, path
    # The backup adds only its state file and config.
    assert _bytes_on_disk(model_dir) - alone == sum(
        p.stat().st_size for p in backup.iterdir() if p.is_file())
    # When that save is replaced, the backup keeps its files, whole (moved aside first, so the
    # run's own backups cannot replace it).
    kept = tmp_path / "kept"
    kept.mkdir()
    backup = backup.rename(kept / backup.name)
    shared = [kept / p.relative_to(model_dir) for p in shared]
    before = _saved(backup)["params"]
    loop.train_and_evaluate(loop_config(model_dir, faces, always, iterations=4, save_interval=2))
    assert _steps(model_dir / "original_checkpoints") == [4]
    assert all(p.stat().st_nlink == 1 for p in shared)
    assert _equal(_saved(backup)["params"], before)


def test_backup_rule_is_faceswap_3s():
    """The first save only sets the lowest average; later saves are backups when they beat it."""
    session = types.SimpleNamespace(model_state={"lowest_avg_loss": None}, history=[])
    outcomes = []
    for history in ([5.0, 4.0], [], [3.0], [3.5], [3.0], [2.0]):
        session.history = list(history)
        outcomes.append(loop._Session._loss_average(session))
    assert outcomes == [(4.5, False), (None, False), (3.0, True), (3.5, False), (3.0, False),
                        (2.0, True)]
    assert session.model_state["lowest_avg_loss"] == 2.0 and session.history == []


def test_backups_are_the_best_loss_save_and_the_restore_tool_brings_one_back(
        tmp_path, faces, tiny_loop, capsys):
    model_dir = tmp_path / "model"
    config = loop_config(model_dir, faces, iterations=10, save_interval=2, no_logs=False)
    final = loop.train_and_evaluate(config)
    out = capsys.readouterr().out
    averages, expected = [], None
    for line in out.splitlines():
        if match := SAVED.match(line):
            step, average = int(match.group(1)), float(match.group(2))
            if averages and average < min(averages):
                expected = step
            averages.append(average)
            assert ("[Model backed up]" in line) == (expected == step)
    assert expected is not None, out  # the tiny model's loss falls within ten iterations
    (backup,) = folder.backups(model_dir, "original").values()
    assert backup.name == f"original_backup_{expected}"
    assert _state(backup)["iterations"] == expected
    assert _state(backup)["lowest_avg_loss"] == pytest.approx(min(averages), rel=1e-5)
    backup_params = _saved(backup)["params"]

    assert restore.main([str(model_dir)]) == 0
    (archive,) = model_dir.glob("original_archived_*")
    assert _state(archive)["iterations"] == 10 and _steps(archive / "original_checkpoints")
    assert _state(model_dir)["iterations"] == expected
    assert _steps(model_dir / "original_checkpoints") == [expected]
    assert _equal(_saved(model_dir)["params"], backup_params)
    assert not _equal(backup_params, final.params)
    assert list((model_dir / "original_logs" / "session_1" / "train").glob("events.out.*"))
    loop.train_and_evaluate(loop_config(model_dir, faces, iterations=expected + 1))
    assert f"at iteration {expected}" in capsys.readouterr().out
    assert _state(model_dir)["iterations"] == expected + 1


def test_a_snapshot_is_a_complete_model_folder_that_resumes_and_restores(
        tmp_path, faces, tiny_loop, capsys):
    model_dir = tmp_path / "model"
    config = loop_config(model_dir, faces, OptimizerConfig(save_optimizer="never"),
                         iterations=3, snapshot_interval=2, save_interval=50)
    straight = loop.train_and_evaluate(config)
    snapshot = tmp_path / "model_snapshot_2_iters"
    assert f"Snapshot of iteration 2 in {snapshot}" in capsys.readouterr().out
    assert _state(snapshot)["iterations"] == 2 and (snapshot / "config.json").exists()
    assert _steps(snapshot / "original_checkpoints") == [2]
    assert _steps(snapshot / "original_optimizer") == [2]  # even with save_optimizer=never
    assert not (snapshot / LOCK_NAME).exists()

    assert restore.main([str(model_dir), "--snapshot", "2"]) == 0
    assert _state(model_dir)["iterations"] == 2
    assert _steps(model_dir / "original_optimizer") == [2]
    for folder_ in (snapshot, model_dir):  # the snapshot, and the folder restored from it
        resumed = loop.train_and_evaluate(loop_config(folder_, faces, iterations=3))
        assert f"Resuming 'original' in {folder_} at iteration 2" in capsys.readouterr().out
        assert _equal(resumed.params, straight.params)


def test_the_restore_tool_refuses_clearly(tmp_path, faces, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert restore.main([str(empty)]) == 1
    assert "no model state file" in capsys.readouterr().err
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    state_file.write_state(state_file.state_path(model_dir, "original"),
                           {"name": "original", "iterations": 1, "sessions": {}})
    (tmp_path / "model_snapshot_7_iters").mkdir()
    assert restore.main([str(model_dir)]) == 1
    assert f"{model_dir.absolute()}: no backup to restore" in capsys.readouterr().err
    assert restore.main([str(model_dir), "--snapshot", "5"]) == 1
    err = capsys.readouterr().err
    assert "model_snapshot_5_iters: no such snapshot (snapshots of this model: 7)" in err
    assert sorted(p.name for p in model_dir.iterdir()) == [LOCK_NAME, "original_state.json"]


def test_a_failed_save_names_the_folder_and_keeps_the_previous_save(
        tmp_path, faces, tiny_loop, monkeypatch):
    """Disk full while a checkpoint is written, then a folder that refuses the state file."""
    model_dir = tmp_path / "model"
    real_save_fn = ocp.JsonCheckpointHandler._save_fn
    calls = []

    async def disk_full(self, x, directory):
        calls.append(directory)
        if len(calls) == 2:  # the second save: part of a file, then no space
            (directory / "data_iter.partial").write_text("{")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        await real_save_fn(self, x, directory)

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", disk_full)
    config = loop_config(model_dir, faces, iterations=6, save_interval=2)
    with pytest.raises(SaveError) as info:
        loop.train_and_evaluate(config)
    message = str(info.value)
    assert str(model_dir / "original_checkpoints") in message
    assert "No space left on device" in message and "MiB free" in message
    assert "iteration 2" in message
    assert _steps(model_dir / "original_checkpoints") == [1]
    assert [p.name for p in (model_dir / "original_checkpoints").iterdir()
            if not p.name.isdigit()] == []  # the half save is gone
    assert _state(model_dir)["iterations"] == 1
    assert "opt_state" not in _saved(model_dir)  # save_optimizer=exit: iteration 1 has none
    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", real_save_fn)

    def refuse(path, text):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(state_file, "write_text_atomic", refuse)
    with pytest.raises(SaveError) as info:
        loop.train_and_evaluate(loop_config(model_dir, faces, iterations=6, save_interval=2))
    message = str(info.value)
    assert f"{model_dir}: the save of iteration 2 failed" in message
    assert "Permission denied" in message and "MiB free" in message
    monkeypatch.undo()
    assert _state(model_dir)["iterations"] == 1  # the state file was never half written
    assert _steps(model_dir / "original_checkpoints") == [2]  # that checkpoint is complete


def test_lost_orbax_writes_are_dropped_from_asyncio_logs_and_others_are_kept():
    """After a failed save, garbage collection reports orbax's write tasks and the future that
    gathers them ("Task ..." and "_GatheringFuture exception was never retrieved"): both are
    dropped, whether orbax is named in the message or only in the traceback; asyncio's other
    errors still reach the user."""
    import logging

    from fsjax.checkpoint.manager import _LOST_WRITES

    def record(message, exc_info=None):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, exc_info)

    def orbax_traceback():
        code = compile("raise ValueError('OUT_OF_RANGE')", "/venv/orbax/checkpoint/x.py", "exec")
        try:
            exec(code)
        except ValueError:
            return sys.exc_info()

    assert not _LOST_WRITES.filter(record("Task exception was never retrieved\n"
                                          "future: <Task coro=<orbax.write()>>"))
    assert not _LOST_WRITES.filter(record("_GatheringFuture exception was never retrieved\n"
                                          "future: <_GatheringFuture finished>",
                                          orbax_traceback()))
    assert _LOST_WRITES.filter(record("_GatheringFuture exception was never retrieved\n"
                                      "future: <_GatheringFuture finished>"))
    assert _LOST_WRITES.filter(record("Unclosed client session orbax"))
