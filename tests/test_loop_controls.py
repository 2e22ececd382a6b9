"""The training loop's controls, run for real on `tiny_model` (Original's structure at a fraction
of its width, one device): the learning-rate finder, loading and freezing weights, NaN protection.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_model import TinyAutoencoder, loop_config

from fsjax.checkpoint.graft import leaf_names
from fsjax.config import OptimizerConfig
from fsjax.data.demo import write_demo_faces
from fsjax.optim.optimizers import current_learning_rate, make_optimizer
from fsjax.training import loop, sharding
from fsjax.training.step import init_state


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_demo_faces(tmp_path_factory.mktemp("demo"), count=26, size=128, seed=4)


def test_loop_finder_stores_the_rate_and_a_resume_uses_it(tmp_path, faces, tiny_loop, capsys):
    model_dir = tmp_path / "model"
    optimizer = OptimizerConfig(lr_finder_iterations=400, lr_finder_mode="graph_and_exit")
    config = loop_config(model_dir, faces, optimizer, use_lr_finder=True, iterations=5)
    state = loop.train_and_evaluate(config)
    stored = json.loads((model_dir / "original_state.json").read_text())
    assert stored["lr_finder"] > 0 and stored["iterations"] == 0
    assert int(state.step) == 0 and len(list(model_dir.glob("learning_rate_finder_*.png"))) == 1
    assert "stopping before training" in capsys.readouterr().out
    state = loop.train_and_evaluate(config)  # resumes at 0 and trains at the found rate
    assert int(state.step) == 5
    assert float(current_learning_rate(state.opt_state)) == pytest.approx(stored["lr_finder"])
    assert "Using the learning rate found by the finder" in capsys.readouterr().out


def test_loop_loads_and_freezes_weights(tmp_path, faces, tiny_loop, capsys):
    source = loop.train_and_evaluate(loop_config(tmp_path / "source", faces, iterations=2, seed=1))
    config = loop_config(tmp_path / "new", faces, iterations=3, seed=2, freeze_weights=True,
                     load_weights=tmp_path / "source")
    state = loop.train_and_evaluate(config)
    out = capsys.readouterr().out
    assert "Loaded weights of encoder" in out and "Frozen (not trained): encoder" in out
    for ours, theirs in zip(jax.tree.leaves(state.params["encoder"]),
                            jax.tree.leaves(source.params["encoder"]), strict=True):
        np.testing.assert_array_equal(ours, theirs)  # loaded, then untouched for 3 steps
    assert not any(".encoder." in k for k in leaf_names(state.opt_state))
    init_key = jax.random.split(jax.random.key(2), 3)[0]  # the loop's key for seed 2
    initial = jax.device_get(init_state(
        TinyAutoencoder(), make_optimizer(OptimizerConfig()), 64, init_key,
        sharding.replicated(sharding.make_mesh(jax.devices()[:1]))))
    assert not np.array_equal(initial.params["encoder"]["dense"]["kernel"],
                              source.params["encoder"]["dense"]["kernel"])  # really loaded
    assert not np.array_equal(state.params["decoder_a"]["face_out_conv2d"]["kernel"],
                              initial.params["decoder_a"]["face_out_conv2d"]["kernel"])  # trained
    # Unfrozen on resume (freezing is changeable): the encoder trains again.
    thawed = dataclasses.replace(config, train=dataclasses.replace(
        config.train, freeze_weights=False, iterations=4))
    state = loop.train_and_evaluate(thawed)
    assert not np.array_equal(state.params["encoder"]["dense"]["kernel"],
                              source.params["encoder"]["dense"]["kernel"])


def _poisoning(at_call):
    """Wraps the real step: from call `at_call` on, the weights it is given hold a NaN, which
    then propagates through the real forward and backward pass."""
    real = loop.make_train_step

    def make(*args, **kwargs):
        step, calls = real(*args, **kwargs), [0]

        def poisoned(state, batch, rng):
            calls[0] += 1
            if calls[0] >= at_call:
                params = jax.tree.map(lambda x: x * jnp.nan, state.params)
                state = state.replace(params=params)
            return step(state, batch, rng)

        return poisoned

    return make


def test_nan_protection_stops_before_anything_is_saved(tmp_path, faces, tiny_loop, monkeypatch):
    monkeypatch.setattr(loop, "make_train_step", _poisoning(at_call=3))
    model_dir = tmp_path / "model"
    config = loop_config(model_dir, faces, iterations=10, save_interval=5)
    with pytest.raises(FloatingPointError) as err:
        loop.train_and_evaluate(config)
    message = str(err.value)
    assert "iteration 3" in message and "grad_norm = nan" in message and "loss_a = nan" in message
    assert "last save (iteration 1) is intact" in message
    assert sorted(p.name for p in (model_dir / "original_checkpoints").iterdir()) == ["1"]
    assert json.loads((model_dir / "original_state.json").read_text())["iterations"] == 1
    # Off (it is changeable): the run goes on, warning at each non-finite iteration.
    off = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                nan_protection=False))
    assert int(loop.train_and_evaluate(off).step) == 10


def test_status_every_prints_every_nth_iteration_and_still_judges_each(tmp_path, faces,
                                                                        tiny_loop, capsys,
                                                                        monkeypatch):
    config = loop_config(tmp_path / "model", faces, iterations=9, save_interval=50,
                         status_every=3)
    loop.train_and_evaluate(config)
    lines = [line for line in capsys.readouterr().out.splitlines() if "Loss A:" in line]
    # Iteration 1 (read before its save), then every third, then the last before the exit save.
    assert [line.split("total ")[1][:5] for line in lines] == ["00001", "00004", "00007",
                                                                 "00009"]
    # NaN protection still looks at every iteration: the poisoned third is caught, though no
    # status line is printed for it, and before anything after it is saved.
    monkeypatch.setattr(loop, "make_train_step", _poisoning(at_call=3))
    model_dir = tmp_path / "poisoned"
    config = loop_config(model_dir, faces, iterations=10, save_interval=5, status_every=4)
    with pytest.raises(FloatingPointError, match="iteration 3: NaN protection"):
        loop.train_and_evaluate(config)
    assert sorted(p.name for p in (model_dir / "original_checkpoints").iterdir()) == ["1"]


def test_a_process_that_is_not_the_primary_one_writes_only_its_share_of_the_saves(
        tmp_path, faces, tiny_loop, capsys, monkeypatch):
    create = loop.Runtime.create
    monkeypatch.setattr(loop.Runtime, "create", lambda config: dataclasses.replace(
        create(config), is_primary=False))
    model_dir = tmp_path / "model"
    config = loop_config(model_dir, faces, iterations=3, no_logs=False, write_image=True)
    assert int(loop.train_and_evaluate(config).step) == 3
    printed = capsys.readouterr()
    assert printed.out == printed.err == ""  # no status lines, no warnings about the folders
    # The checkpoints are collective (orbax); the lock, state file, config, preview and logs are
    # the primary process's.
    assert {p.name for p in model_dir.iterdir()} == {"original_checkpoints", "original_optimizer"}
