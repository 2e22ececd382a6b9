"""The run's side effects go through `Outputs`: the primary process writes, the others do not."""

import json

import numpy as np

from fsjax.checkpoint import state_file
from fsjax.config import ExperimentConfig
from fsjax.training.outputs import Outputs


def _everything(out: Outputs, tmp_path) -> None:
    step_dir = tmp_path / "model" / "original_checkpoints" / "3"
    step_dir.mkdir(parents=True)
    (step_dir / "weights").write_bytes(b"x")
    out.say("a line")
    out.say("a warning", error=True)
    out.write_state({"name": "original", "iterations": 3})
    out.write_config(ExperimentConfig())
    out.backup(3, [step_dir])
    out.snapshot(3, [step_dir])
    out.scalars(3, {"total": 0.5})
    out.flush()
    out.preview(np.zeros((2, 2, 3), np.uint8))
    out.graph(lambda folder: (folder / "graph.png").write_bytes(b"g") or folder / "graph.png")
    out.close()


def test_the_primary_process_writes_every_file(tmp_path, capsys):
    model_dir = tmp_path / "model"
    out = Outputs(True, model_dir, "original")
    out.open_logs(model_dir / "logs")
    _everything(out, tmp_path)
    printed = capsys.readouterr()
    assert printed.out == "a line\n" and printed.err == "a warning\n"
    stored = json.loads(state_file.state_path(model_dir, "original").read_text())
    assert stored["iterations"] == 3
    assert json.loads((model_dir / "config.json").read_text())["model"]["name"] == "original"
    names = {p.name for p in model_dir.iterdir()}
    assert {"original_backup_3", "training_preview.png", "graph.png", "logs"} <= names
    assert (tmp_path / "model_snapshot_3_iters" / "original_checkpoints" / "3").is_dir()
    assert any((model_dir / "logs").iterdir())  # the TensorBoard event file


def test_another_process_writes_and_prints_nothing(tmp_path, capsys):
    model_dir = tmp_path / "model"
    out = Outputs(False, model_dir, "original")
    out.open_logs(model_dir / "logs")
    _everything(out, tmp_path)
    printed = capsys.readouterr()
    assert printed.out == printed.err == ""
    assert {p.name for p in model_dir.iterdir()} == {"original_checkpoints"}
    assert not (tmp_path / "model_snapshot_3_iters").exists()
