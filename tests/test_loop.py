"""Loop pieces that need no model: stop requests, model-folder checks, the state file."""

import json
import os
import signal
import socket

import pytest

from fsjax.checkpoint import state_file
from fsjax.config import ExperimentConfig
from fsjax.data.demo import write_demo_faces
from fsjax.data.header import FaceFileError
from fsjax.training.inputs import scan_side
from fsjax.training.resume import open_model_state
from fsjax.training.stop import StopRequest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_requests_a_clean_stop(signum):
    before = signal.getsignal(signum)
    stop = StopRequest()
    remove = stop.install()
    try:
        assert not stop
        os.kill(os.getpid(), signum)  # delivered before os.kill returns, to the main thread
        assert stop
        if signum == signal.SIGINT:  # a second Ctrl-C quits at once
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
    finally:
        remove()
    assert signal.getsignal(signum) is before  # the caller's handlers are back


def test_folder_with_another_model_is_refused(tmp_path):
    (tmp_path / "villain_state.json").write_text(json.dumps({"iterations": 5}))
    with pytest.raises(state_file.ModelFolderError, match="holds a different model"):
        open_model_state(tmp_path, "original", ExperimentConfig())


def test_state_file_has_faceswaps_schema_and_is_written_atomically(tmp_path):
    config = ExperimentConfig()
    state = open_model_state(tmp_path, "original", config)
    state_file.record_session(state, 1, batch_size=16, session_iterations=250,
                              total_iterations=250, no_logs=False, config=config, started=1.0)
    path = state_file.state_path(tmp_path, "original")
    state_file.write_state(path, state)
    loaded = state_file.load_state(path)
    assert loaded["iterations"] == 250 and loaded["name"] == "original"
    assert loaded["sessions"]["1"]["batchsize"] == 16
    assert loaded["sessions"]["1"]["config"]["learning_rate"] == 5e-5
    assert "centering" not in loaded["sessions"]["1"]["config"]  # locked options: top level only
    assert loaded["config"]["centering"] == "face" and loaded["config"]["lowmem"] is False
    assert loaded["config"]["loss_function"] == "ssim" and loaded["config"]["eye_multiplier"] == 3
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    path.write_text("{not json")
    with pytest.raises(state_file.ModelFolderError, match="cannot read the model state file"):
        state_file.load_state(path)


def test_bad_faces_skip_warns_with_each_file_and_stop_lists_them(tmp_path, capsys):
    folder, _ = write_demo_faces(tmp_path / "demo", count=27, size=128)
    bad = [folder / "demo_A_0003_0.png", folder / "demo_A_0007_0.png"]
    bad[0].write_bytes(bad[0].read_bytes()[:-100])
    bad[1].write_bytes(b"GIF89a not a png")
    with pytest.raises(FaceFileError) as info:
        scan_side("A", folder, "stop")
    assert f"{bad[0]}: truncated PNG" in str(info.value)
    assert f"{bad[1]}: not a PNG" in str(info.value)
    faces = scan_side("A", folder, "skip")
    assert len(faces) == 25 and not set(bad) & {f.path for f in faces}
    err = capsys.readouterr().err
    assert "skipped 2 face files that cannot be used" in err and str(bad[1]) in err
    assert "only 25 faces; Faceswap recommends at least 250" in err


def test_a_batch_larger_than_a_side_warns_with_both_numbers_and_the_demo_stays_quiet(
        tmp_path, capsys):
    folder, _ = write_demo_faces(tmp_path / "demo", count=25, size=128)
    scan_side("A", folder, "stop", batch_size=32)
    err = capsys.readouterr().err
    assert "warning: side A has 25 faces, fewer than the batch size 32" in err
    assert "only 25 faces; Faceswap recommends at least 250" in err
    scan_side("B", folder, "stop", batch_size=25, demo=True)
    assert capsys.readouterr().err == ""  # no batch warning at 25, no count warning for the demo


def test_state_file_records_build_switches_and_plugin_options():
    from fsjax.config import ModelConfig, RealfaceConfig

    config = ExperimentConfig(model=ModelConfig(
        name="realface", icnr_init=True, reflect_padding=True,
        realface=RealfaceConfig(output_size=256)))
    options = state_file.faceswap_options(config)
    assert (options["icnr_init"], options["conv_aware_init"], options["reflect_padding"]) == (
        True, False, True)
    assert options["output_size"] == 256 and options["dense_nodes"] == 1536
    assert "lowmem" not in options  # RealFace has no lowmem option
    unbalanced = state_file.faceswap_options(ExperimentConfig(model=ModelConfig(
        name="unbalanced", lowmem=True)))
    assert unbalanced["lowmem"] is True and unbalanced["complexity_decoder_b"] == 512


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    from fsjax.checkpoint.lock import ModelLock

    first = ModelLock(tmp_path)
    with pytest.raises(state_file.ModelFolderError,
                       match=rf"another training run is using this model folder \(process "
                             rf"{os.getpid()}@{socket.gethostname()}\)"):
        ModelLock(tmp_path)
    first.release()
    ModelLock(tmp_path).release()  # free again once the first run ends


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    import subprocess
    import sys

    from fsjax.checkpoint.lock import ModelLock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fsjax.checkpoint.lock import ModelLock; "
         "ModelLock(sys.argv[1]); print('locked', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(state_file.ModelFolderError, match=f"process {holder.pid}"):
        ModelLock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    ModelLock(tmp_path).release()  # the kernel dropped the dead run's lock
