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
