"""The command line: summary, help, refusals of bad input, and a real run that stops and resumes."""

import functools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import pytest

from fsjax.data.demo import write_demo_faces
from fsjax.train import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT = str(ROOT / "experiments" / "original.py")
TINY = str(ROOT / "experiments" / "phaze_a_tiny.py")  # a real plugin, small enough to save fast


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONUNBUFFERED="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _train(*args, config=EXPERIMENT, **kwargs):
    return subprocess.run([sys.executable, "-m", "fsjax.train", "--config", config, *args],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Two folders of 26 synthetic faces (Faceswap needs at least 25 per side)."""
    return write_demo_faces(tmp_path_factory.mktemp("demo"), count=26, size=128, seed=3)


def test_summary_prints_layers_and_total_without_faces():
    result = _train("--summary")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "Total params: 82,062,470"
    for name in ("conv_1024_0_conv2d", "upscale_512_0_conv2d_conv2d", "face_out_a_0_conv2d",
                 "upscale_64_1_conv2d_conv2d", 'Sub-model: "decoder_b"'):
        assert any(name in line for line in lines), name


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", EXPERIMENT, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config.train.batch-size", "--config.train.save-interval",
                 "--config.augment.no-flip", "--config.loss.eye-multiplier",
                 "--config.data.coverage", "--faces-a", "--no-augment-color", "--write-image"):
        assert flag in out, flag
    assert "(default: 16)" in out and "(default: 250)" in out


@pytest.mark.parametrize("args, message", [
    (["--config.data.coverage", "120"], "data.coverage=120.0 is out of range: allowed 62.5..100"),
    (["--batch-size", "0"], "train.batch_size=0 is out of range: allowed 1..256"),
    (["--config.model.name", "nope"], "model.name='nope' is not allowed: choose one of dfaker, "
     "dfl_h128, dfl_sae, dlight, iae, lightweight, original, phaze_a, realface, unbalanced, "
     "villain"),
    (["--faces-a", "/no/such/dir", "--faces-b", "/no/such/dir"],
     "data.faces_a='/no/such/dir': folder does not exist"),
])
def test_invalid_options_are_refused_before_anything_is_built(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", EXPERIMENT, *args])
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert message in err


def test_options_only_the_model_can_check_are_refused_cleanly(capsys):
    code = main(["--config", TINY, "--summary", "--config.model.phaze-a.fc-dimensions", "4",
                 "--config.model.phaze-a.fc-min-filters", "16"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.phaze_a: the fully connected model ends with 256 units")
    assert "Traceback" not in err


def _broken_faces(faces, tmp_path, kind):
    folder_a = tmp_path / "A"
    shutil.copytree(faces[0], folder_a)
    bad = sorted(folder_a.glob("*.png"))[5]
    if kind == "empty":
        for f in folder_a.iterdir():
            f.unlink()
        return folder_a, None
    if kind == "no header":
        cv2.imwrite(str(bad), cv2.imread(str(bad)))  # same pixels, no faceswap iTXt chunk
    elif kind == "truncated":
        bad.write_bytes(bad.read_bytes()[:-200])
    return folder_a, bad


@pytest.mark.parametrize("kind, message", [
    ("empty", "no .png face files found"),
    ("no header", "not a Faceswap-extracted face"),
    ("truncated", "truncated"),
])
def test_bad_faces_fail_before_training_naming_the_file(faces, tmp_path, kind, message, capsys):
    folder_a, bad = _broken_faces(faces, tmp_path, kind)
    code = main(["--config", EXPERIMENT, "--faces-a", str(folder_a), "--faces-b", str(faces[1]),
                 "--model-dir", str(tmp_path / "model")])
    err = capsys.readouterr().err
    assert code == 1
    assert message.lower() in err.lower()
    assert str(bad if bad is not None else folder_a) in err
    assert not (tmp_path / "model" / "original_checkpoints").exists()


def test_run_stops_on_sigint_and_saves_with_the_optimizer(faces, tmp_path):
    model_dir = tmp_path / "model"
    args = ["--faces-a", str(faces[0]), "--faces-b", str(faces[1]), "--model-dir", str(model_dir),
            "--batch-size", "2", "--save-interval", "100", "--config.data.num-processes", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsjax.train", "--config", TINY, *args, "--iterations", "50"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 240
    for line in proc.stdout:
        lines.append(line)
        if "[#00003" in line:
            proc.send_signal(signal.SIGINT)
            break
        assert time.time() < deadline, "".join(lines)
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=120) == 0, "".join(lines)
    state = json.loads((model_dir / "phaze_a_state.json").read_text())
    stopped = state["iterations"]
    assert 3 <= stopped < 50
    assert state["sessions"]["1"]["iterations"] == stopped
    assert state["sessions"]["1"]["batchsize"] == 2
    preview = cv2.imread(str(model_dir / "training_preview.png"))
    assert preview.shape == (int(64 / 4.5) + 7 * 64, 12 * 64, 3)  # 14 faces per side, 7 rows
    assert list((model_dir / "phaze_a_logs" / "session_1" / "train").glob("events.out.*"))
    assert f"Stopped at iteration {stopped} (stop requested)" in "".join(lines)
    assert (model_dir / "phaze_a_optimizer" / str(stopped)).is_dir()  # save_optimizer=exit

    # Resuming through this command is the crash script's job below (bit-exact against an
    # uninterrupted run); snapshots and session records are tested in test_model_folder.py.


def test_crash_script_short_run(tmp_path, faces):
    """`scripts/crash_test.py` with one SIGKILL and its resume (a closing note reports 50). It
    sits beside the run above so that both use the same compiled tiny Phaze-A from the shared
    cache. The folders are given relative to where it is started, not where the runs start."""
    root = faces[0].parent
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "crash_test.py"), "--trials", "1",
         "--faces-a", faces[0].name, "--faces-b", faces[1].name, "--work", "work"],
        cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.stdout.splitlines()[-1] == "trials=1 failures=0", done.stdout + done.stderr
    assert done.returncode == 0
    # A run that ends on its own shows why.
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "crash_test.py"), "--trials", "1",
         "--faces-a", "missing", "--faces-b", faces[1].name, "--work", str(tmp_path)],
        cwd=root, env=dict(_env(), COLUMNS="500"), capture_output=True, text=True, timeout=600)
    assert "the run ended by itself (code 2)" in done.stdout, done.stdout
    assert f"data.faces_a='{root / 'missing'}': folder does not exist" in done.stdout, done.stdout


@pytest.mark.parametrize("where, reason", [
    ("under_a_file", "Not a directory"),
    ("read_only_filesystem", "(Operation not permitted|Permission denied)"),
])
def test_a_model_folder_that_cannot_be_written_is_one_line_exit_1(faces, tmp_path, capsys,
                                                                  where, reason):
    if where == "under_a_file":
        (tmp_path / "file").write_text("x")
        model_dir = tmp_path / "file" / "model"
    else:  # root ignores permission bits; /sys refuses new folders even to root
        model_dir = pathlib.Path("/sys/fsjax-test-model")
    code = main(["--config", EXPERIMENT, "--faces-a", str(faces[0]), "--faces-b", str(faces[1]),
                 "--model-dir", str(model_dir)])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, err
    assert re.fullmatch(rf"error: {model_dir}: cannot create or lock the model folder: {reason}",
                        lines[0]), lines[0]


def test_a_disk_that_fills_during_a_save_prints_only_the_message(faces, tmp_path):
    """The run's files may not grow past 256 KiB (RLIMIT_FSIZE, with SIGXFSZ ignored, so a write
    fails as on a full disk): the first checkpoint fails inside orbax's tensorstore writes.
    What the user sees is one warning and one error line: no traceback from orbax's threads
    and no "Event loop is closed" from the writes still in flight."""
    script = ("import resource, runpy, signal, sys\n"
              "if __name__ == '__main__':\n"
              "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 18, 1 << 18))\n"
              "    sys.argv = ['fsjax.train', *sys.argv[1:]]\n"
              "    runpy.run_module('fsjax.train', run_name='__main__')\n")
    launcher = tmp_path / "limited.py"
    launcher.write_text(script)
    model_dir = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, str(launcher), "--config", TINY, "--faces-a", str(faces[0]),
         "--faces-b", str(faces[1]), "--model-dir", str(model_dir), "-b", "2", "-i", "3",
         "-s", "2"], cwd=ROOT, env=dict(_env(), JAX_ENABLE_COMPILATION_CACHE="false"),
        capture_output=True, text=True, timeout=600)  # the cache's entries would not fit
    assert done.returncode == 1, done.stdout + done.stderr
    err = [line for line in done.stderr.splitlines()
           if not line.startswith("warning: side ")]
    assert len(err) == 2, done.stderr
    checkpoints = model_dir / "phaze_a_checkpoints"
    assert err[0] == f"warning: removing a failed save: {checkpoints}/1.orbax-checkpoint-tmp"
    assert err[1].startswith(f"error: {checkpoints}: the save of iteration 1 failed: ")
    assert "File too large" in err[1] and err[1].endswith(
        "The earlier saves are intact: free some space or make the folder writable, then run "
        "the same command again to resume from the last save")
    assert list(checkpoints.iterdir()) == []


def test_a_folder_that_locks_but_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """The lock is taken but a file cannot be written (e.g. a quota): the probe write names it."""
    import pathlib as _pathlib

    from fsjax.checkpoint import lock
    from fsjax.checkpoint.state_file import ModelFolderError

    write_bytes = _pathlib.Path.write_bytes

    def refuse(self, data):
        if self.name.startswith(".fsjax-write-test-"):
            raise OSError(122, "Disk quota exceeded")
        return write_bytes(self, data)

    monkeypatch.setattr(_pathlib.Path, "write_bytes", refuse)
    model_dir = tmp_path / "model"
    with pytest.raises(ModelFolderError) as err:
        lock.take_folder(model_dir)
    assert str(err.value) == f"{model_dir}: cannot write in the model folder: Disk quota exceeded"
    monkeypatch.undo()
    lock.take_folder(model_dir).release()  # the lock was released with the error


def test_a_second_run_compiles_nothing_new_and_says_when_it_started(faces, tmp_path):
    """JAX's persistent compilation cache (`--config.train.compilation-cache`): the second run
    of the same model finds every program the first one compiled, so it adds no entry."""
    cache = tmp_path / "xla"
    args = ["--faces-a", str(faces[0]), "--faces-b", str(faces[1]), "--batch-size", "2",
            "--config.data.num-processes", "0", "--config.train.no-write-image",
            "--config.train.compilation-cache", str(cache)]
    # Every program is cached, however fast it compiled (JAX skips those under a threshold).
    env = dict(_env(), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    run = functools.partial(subprocess.run, cwd=ROOT, env=env, capture_output=True, text=True)
    command = [sys.executable, "-m", "fsjax.train", "--config", TINY, *args, "--iterations", "1"]
    first = run([*command, "--config.train.model-dir", str(tmp_path / "a")])
    assert first.returncode == 0, first.stderr[-2000:]
    entries = sorted(p.name for p in cache.iterdir())
    assert entries  # the step, the init and the rest were written
    second = run([*command, "--config.train.model-dir", str(tmp_path / "b")])
    assert second.returncode == 0, second.stderr[-2000:]
    assert sorted(p.name for p in cache.iterdir()) == entries
    for result in (first, second):
        assert re.search(r"First iteration \d+\.\d s after start", result.stdout), result.stdout
