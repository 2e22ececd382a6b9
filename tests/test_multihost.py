"""Multi-host training with real processes on this machine: jax.distributed on localhost, CPU
collectives over gloo, 4 virtual devices per process (scripts/multihost_check.py drives them)."""

import importlib.util
import pathlib
import shutil
import time

import pytest

from fsjax.config import ConfigError
from fsjax.config.scale import DistributedConfig
from fsjax.training.distributed import cluster_detected

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "multihost_check_under_test", ROOT / "scripts" / "multihost_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def check():
    return _script()


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from fsjax.data.demo import write_demo_faces

    return write_demo_faces(tmp_path_factory.mktemp("demo"), count=26, size=128, seed=7)


def test_two_processes_resume_one_process_save_and_train_as_it_would(check, faces, tmp_path):
    """One process with 8 devices saves at iteration 2; from a copy of that save two processes
    with 4 devices each (each loading its half of every batch) train to 4, and reach the
    parameters the single process reaches alone. The data order goes on from the same pair."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert check.wait(check.launch(single, faces, 2, 8, 1, 8, tmp_path)) == [0]
    shutil.copytree(single, multi)
    assert check.wait(check.launch(single, faces, 4, 8, 1, 8, tmp_path)) == [0]
    assert check.wait(check.launch(multi, faces, 4, 8, 2, 8, tmp_path)) == [0, 0]
    primary = (tmp_path / "multi_0.log").read_text()
    assert "Resuming 'phaze_a'" in primary and "at iteration 2" in primary
    assert "[Saved model] iteration 4" in primary
    assert (tmp_path / "multi_1.log").read_text().count("[Saved model]") == 0  # only process 0
    assert check.max_diff(check.saved_params(multi), check.saved_params(single)) <= 1e-6


@pytest.mark.slow  # the heartbeat is JAX's; the default run trains two processes above
def test_a_dead_process_stops_the_other_with_a_clear_error(check, faces, tmp_path):
    procs = check.launch(tmp_path / "m", faces, 1000, 8, 2, 8, tmp_path, heartbeat=10)
    log = tmp_path / "m_0.log"
    deadline = time.time() + 600
    while "[Saved model] iteration 1" not in log.read_text() and time.time() < deadline:
        assert procs[0].poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    procs[1].kill()
    killed = time.time()
    code = check.wait(procs[:1], timeout=120)[0]
    check.wait(procs[1:])
    assert code != 0 and time.time() - killed < 60
    text = log.read_text()
    assert "another task died" in text and "stopped sending heartbeats" in text


@pytest.mark.slow
def test_multihost_check_kills_every_process_and_resumes(check, tmp_path):
    """The script's whole check: both processes killed just after a save, resumed, and the
    end equal to an uninterrupted single process."""
    diff, resumed = check.run_check(2, 4, 8, tmp_path)
    assert resumed and diff <= 1e-6


def test_distributed_options_are_all_or_nothing():
    assert not DistributedConfig().explicit
    with pytest.raises(ConfigError, match="give all of coordinator_address, num_processes"):
        DistributedConfig(coordinator_address="host:1234")
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        DistributedConfig(coordinator_address="host", num_processes=2, process_id=0)
    with pytest.raises(ConfigError, match="distributed.process_id=2 is out of range"):
        DistributedConfig(coordinator_address="h:1", num_processes=2, process_id=2)


def test_clusters_are_detected_as_jax_detects_them():
    assert not cluster_detected({})
    assert not cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"})
    assert cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"})
    assert cluster_detected({"OMPI_COMM_WORLD_SIZE": "2"})
    assert cluster_detected({"TPU_WORKER_HOSTNAMES": "t0,t1"})
    assert not cluster_detected({"TPU_WORKER_HOSTNAMES": "t0"})
