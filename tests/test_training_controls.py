"""Training controls: locked options, resuming onto changed options, warmup, the learning-rate
finder, loading and freezing weights, NaN protection.

Loop-level tests run the real loop on `tiny_model` (Original's structure, a fraction of its
width) so each takes seconds.
"""

import dataclasses

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_model import TinyAutoencoder

from fsjax.checkpoint import state_file
from fsjax.checkpoint.graft import GraftError, graft, leaf_names
from fsjax.checkpoint.manager import Checkpoints
from fsjax.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    OptimizerConfig,
    TrainConfig,
)
from fsjax.data.faces import load_sample, scan_folder
from fsjax.optim.optimizers import current_learning_rate, make_optimizer, optimizer_steps
from fsjax.training import inputs, lr_finder, resume, sharding
from fsjax.training.runtime import Runtime
from fsjax.training.step import init_state, make_init_fn, make_train_step

BATCH = 2


@pytest.fixture(scope="module")
def batch(data_dir):
    spec = inputs.sample_spec(ExperimentConfig(), 64)
    out = {}
    for side in ("a", "b"):
        metas = scan_folder(data_dir / "faces" / side.upper(), min_faces=1)
        samples = [load_sample(metas[i], spec) for i in range(BATCH)]
        faces = np.stack([s["image"] for s in samples])
        out[side] = {"input": faces[:, :, ::-1].copy(), "target": faces}
        for key in ("mask_face", "mask_eye", "mask_mouth"):
            out[side][key] = np.stack([s[key] for s in samples])[..., None]
    return out


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh(jax.devices()[:1])


def _state(tx, mesh, seed=0, frozen=()):
    return init_state(TinyAutoencoder(), tx, 64, jax.random.key(seed), sharding.replicated(mesh),
                      frozen)


def _fresh(tx, mesh, frozen=()):
    return lambda: _state(tx, mesh, 5, frozen)


class _OneDense(nn.Module):
    @nn.compact
    def __call__(self, face_a, face_b):
        return nn.Dense(3)(face_a) + nn.Dense(3, name="b")(face_b)


def test_two_stage_init_equals_the_single_program():
    """`init_state` compiles the model's init apart from the optimizer's: the same state."""
    tx = make_optimizer(OptimizerConfig())
    mesh = sharding.make_mesh(jax.devices()[:1])
    one = jax.jit(make_init_fn(_OneDense(), tx, 4, ("b",)))(jax.random.key(3))
    two = init_state(_OneDense(), tx, 4, jax.random.key(3), sharding.replicated(mesh), ("b",))
    assert jax.tree.structure(one) == jax.tree.structure(two)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two), strict=True):
        np.testing.assert_array_equal(a, b)


def _steps(state, tx, mesh, batch, n, frozen=()):
    step = make_train_step(TinyAutoencoder(), tx, ExperimentConfig().loss,
                           Runtime.on_mesh(mesh, state), 64, frozen)
    key = jax.device_put(jax.random.key(1), sharding.replicated(mesh))
    global_batch = sharding.to_global(batch, sharding.batch_sharded(mesh))
    metrics = None
    for _ in range(n):
        state, metrics = step(state, global_batch, key)
    return state, metrics


# -- locked and changeable options -----------------------------------------------------------

def test_changed_locked_options_are_refused_naming_each(tmp_path):
    created = ExperimentConfig()
    state = resume.open_model_state(tmp_path, "original", created)
    state_file.write_state(state_file.state_path(tmp_path, "original"), state)
    changeable = dataclasses.replace(
        created, optimizer=OptimizerConfig(learning_rate=1e-5, gradient_clipping="autoclip"))
    assert resume.open_model_state(tmp_path, "original", changeable)["name"] == "original"
    locked = dataclasses.replace(created, model=ModelConfig(lowmem=True),
                                 optimizer=OptimizerConfig(optimizer="lion"))
    with pytest.raises(state_file.ModelFolderError) as err:
        resume.open_model_state(tmp_path, "original", locked)
    assert "lowmem: stored False, requested True" in str(err.value)
    assert "optimizer: stored 'adam', requested 'lion'" in str(err.value)
    assert "learning_rate" not in str(err.value)


def test_session_record_follows_changeable_options(tmp_path):
    config = ExperimentConfig(optimizer=OptimizerConfig(learning_rate=2e-5, weight_decay=0.01),
                              train=TrainConfig(freeze_weights=True))
    state = state_file.new_state("original", ExperimentConfig())
    state_file.record_session(state, 1, batch_size=4, session_iterations=3, total_iterations=3,
                              no_logs=True, config=config, started=0.0)
    session = state["sessions"]["1"]["config"]
    assert session["learning_rate"] == 2e-5 and session["weight_decay"] == 0.01
    assert session["freeze_weights"] is True and session["freeze_layers"] == ["encoder"]
    assert state["config"]["learning_rate"] == 2e-5  # the model's record follows the last run
    assert state["lr_finder"] == -1.0


def test_session_rate_prefers_the_found_rate_with_use_lr_finder(capsys):
    config = ExperimentConfig(train=TrainConfig(use_lr_finder=True))
    assert resume.session_learning_rate(config, None, None, 3e-4) == 3e-4
    assert resume.session_learning_rate(config, None, None, -1.0) == 5e-5
    assert "no found learning rate" in capsys.readouterr().err


def test_autoclip_history_zero_is_refused():
    with pytest.raises(ConfigError, match="autoclip_history=0"):
        OptimizerConfig(autoclip_history=0)


# -- resume onto changed options -----------------------------------------------------------

def test_resume_with_a_changed_learning_rate_applies_it(tmp_path, mesh, batch):
    """Faceswap's saved torch state keeps the old rate; here the update scales with the new one."""
    tx = make_optimizer(OptimizerConfig(learning_rate=1e-2))
    state, _ = _steps(_state(tx, mesh), tx, mesh, batch, 2)
    checkpoints = Checkpoints(tmp_path, "original")
    checkpoints.save(state, {})
    init_fn = make_init_fn(TinyAutoencoder(), tx, 64)
    deltas = {}
    for rate in (1e-2, 3e-2):
        restored, _, report = resume.restore_or_init(
            checkpoints, jax.eval_shape(init_fn, jax.random.key(5)), _fresh(tx, mesh),
            sharding.replicated(mesh))
        # The session's rate: the configured one; Faceswap's bug under faceswap_compat.
        config = ExperimentConfig(optimizer=OptimizerConfig(learning_rate=rate))
        assert resume.session_learning_rate(config, restored, report, None) == rate
        compat = dataclasses.replace(config, optimizer=dataclasses.replace(
            config.optimizer, faceswap_compat=True))
        assert resume.session_learning_rate(compat, restored, report, None) == pytest.approx(1e-2)
        before = jax.device_get(restored.params)
        new_tx = make_optimizer(OptimizerConfig(learning_rate=rate))
        after, metrics = _steps(restored, new_tx, mesh, batch, 1)
        assert float(metrics["learning_rate"]) == pytest.approx(rate, rel=1e-6)
        deltas[rate] = jax.tree.map(lambda a, b: np.asarray(a) - b, jax.device_get(after.params),
                                    before)
    checkpoints.close()
    small, large = (np.concatenate([x.ravel() for x in jax.tree.leaves(deltas[r])])
                    for r in (1e-2, 3e-2))
    assert np.linalg.norm(large) / np.linalg.norm(small) == pytest.approx(3.0, rel=1e-5)
    np.testing.assert_allclose(large, 3 * small, atol=1e-6)


def test_resume_keeps_the_moments_when_clipping_accumulation_and_freezing_change(
        tmp_path, mesh, batch, capsys):
    tx = make_optimizer(OptimizerConfig())
    state, _ = _steps(_state(tx, mesh), tx, mesh, batch, 2)
    checkpoints = Checkpoints(tmp_path, "original")
    checkpoints.save(state, {})
    saved = {k: np.asarray(v) for k, v in leaf_names(jax.device_get(state.opt_state)).items()}
    changed = make_optimizer(OptimizerConfig(gradient_clipping="autoclip",
                                             gradient_accumulation=2))
    init_fn = make_init_fn(TinyAutoencoder(), changed, 64, frozen=("encoder",))
    restored, _, _ = resume.restore_or_init(checkpoints, jax.eval_shape(init_fn, jax.random.key(5)),
                                            _fresh(changed, mesh, ("encoder",)),
                                            sharding.replicated(mesh))
    checkpoints.close()
    names = leaf_names(jax.device_get(restored.opt_state))
    mu = [k for k in names if ".mu.decoder_a." in k]
    assert mu and not [k for k in names if ".encoder." in k]  # frozen: no optimizer state
    for name in mu:
        np.testing.assert_array_equal(names[name], saved[name.replace("inner_opt_state.", "")])
    assert int(optimizer_steps(restored.opt_state)) == 2
    assert "started" in capsys.readouterr().out  # AutoClip's buffer and accumulators are new
    restored, metrics = _steps(restored, changed, mesh, batch, 2, frozen=("encoder",))
    assert np.isfinite(float(metrics["clip_threshold"]))


def test_a_checkpoint_of_another_shape_is_an_error_naming_the_weight(mesh):
    tx = make_optimizer(OptimizerConfig())
    state = jax.device_get(_state(tx, mesh))
    saved = {"step": state.step, "params": jax.tree.map(np.asarray, state.params),
             "opt_state": {}, "model_state": {}}
    saved["params"]["encoder"]["dense"]["kernel"] = np.zeros((3, 3), np.float32)
    with pytest.raises(GraftError, match=r"params\.encoder\.dense\.kernel is shape \(3, 3\)"):
        graft(state, saved)


@pytest.mark.slow  # test_optim checks the same through make_optimizer alone, in the default run
def test_accumulated_gradients_reach_the_large_batch_result(data_dir):
    """4 micro-batches of 2 per optimizer step give what batches of 8 give (float64, where no
    rounding tie can flip Adam's first, sign-like step)."""
    spec = inputs.sample_spec(ExperimentConfig(), 64)
    large = {}
    for side in ("a", "b"):
        metas = scan_folder(data_dir / "faces" / side.upper(), min_faces=1)
        faces = np.stack([load_sample(metas[i % len(metas)], spec)["image"] for i in range(8)])
        # Different warps per face: flip some, so micro-batches differ from each other.
        stacked = np.stack([f[:, ::-1] if i % 3 else f for i, f in enumerate(faces)])
        large[side] = {"input": stacked, "target": faces}
    micro = [jax.tree.map(lambda x, i=i: x[2 * i:2 * i + 2], large) for i in range(4)]
    loss = dataclasses.replace(ExperimentConfig().loss, penalized_mask_loss=False,
                               eye_multiplier=1.0, mouth_multiplier=1.0)
    mesh = sharding.make_mesh(jax.devices()[:1])
    repl, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    with jax.enable_x64(True):
        module = TinyAutoencoder(dtype=jnp.float64, param_dtype=jnp.float64)
        results = []
        for accumulation, batches in ((1, [large] * 2), (4, micro * 2)):
            tx = make_optimizer(OptimizerConfig(learning_rate=1e-3,
                                                gradient_accumulation=accumulation))
            state = init_state(module, tx, 64, jax.random.key(0), repl)
            initial = jax.device_get(state.params)
            step = make_train_step(module, tx, loss, Runtime.on_mesh(mesh, state), 64)
            key = jax.device_put(jax.random.key(1), repl)
            for b in batches:
                state, _ = step(state, sharding.to_global(b, split), key)
            assert int(optimizer_steps(state.opt_state)) == 2
            results.append(jax.device_get(state.params))
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), *results)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), results[0], initial)
    assert max(jax.tree.leaves(diffs)) <= 1e-5 < min(jax.tree.leaves(moved))


def test_faceswap_switches_reach_the_options(tmp_path):
    from fsjax.train import parse_cli

    config = parse_cli(["--warmup", "50", "--use-lr-finder", "--load-weights", str(tmp_path),
                        "--freeze-weights", "--config.train.freeze-layers", "encoder",
                        "decoder_a", "--config.optimizer.gradient-clipping", "autoclip"])
    assert config.train.warmup == 50 and config.train.use_lr_finder
    assert config.train.load_weights == tmp_path and config.train.freeze_weights
    assert config.train.freeze_layers == ("encoder", "decoder_a")
    assert config.optimizer.gradient_clipping == "autoclip"


# -- warmup --------------------------------------------------------------------------------

def test_warmup_ramps_linearly_from_zero_each_session():
    params = {"w": jnp.ones((2, 2))}
    grads = {"w": jnp.full((2, 2), 0.5)}
    config = OptimizerConfig(learning_rate=1e-3)
    tx = make_optimizer(config, resume.session_schedule(1e-3, 4, start=0))
    opt_state = tx.init(params)
    rates, first_update = [], None
    for _ in range(6):
        updates, opt_state = tx.update(grads, opt_state, params)
        first_update = updates if first_update is None else first_update
        rates.append(float(current_learning_rate(opt_state)))
    np.testing.assert_allclose(rates, [0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3], rtol=1e-6)
    assert not np.any(np.asarray(first_update["w"]))  # the very first step uses rate 0
    # The next session ramps again from its own first optimizer step.
    tx = make_optimizer(config, resume.session_schedule(1e-3, 4, start=6))
    tx.update(grads, opt_state, params)
    assert float(current_learning_rate(tx.update(grads, opt_state, params)[1])) == 0.0


# -- learning-rate finder ------------------------------------------------------------------

def test_sweep_record_smooths_stops_and_picks_by_strength():
    record = lr_finder.SweepRecord()
    losses = [1.0, 0.8, 0.5, 0.4, 0.45, 100.0]
    average, smoothed, stopped_at = 0.0, [], None
    for i, loss in enumerate(losses, start=1):
        average = 0.98 * average + 0.02 * loss
        smoothed.append(average / (1 - 0.98**i))
        if record.add(i, loss, 10.0**-i):
            stopped_at = i
            break
        assert record.losses[-1] == pytest.approx(smoothed[-1], rel=1e-12)
    assert stopped_at == 6 and smoothed[-1] > 4 * min(smoothed)  # diverged: stop
    assert int(np.argmin(smoothed)) == 4  # bias-corrected smoothing: the 5th step is lowest
    assert record.best_lr == 10.0**-5
    for strength, divisor in (("default", 10), ("aggressive", 5), ("extreme", 2.5)):
        assert record.chosen_lr(strength) == pytest.approx(1e-5 / divisor)
    assert lr_finder.SweepRecord().add(1, float("nan"), 1.0) is True


def test_finder_on_tiny_model_finds_a_rate_plots_and_restores_bit_exactly(tmp_path, mesh, batch):
    config = OptimizerConfig(lr_finder_iterations=100)
    schedule = lr_finder.sweep_schedule(100)
    tx = make_optimizer(config, schedule)
    state = _state(tx, mesh)
    before = jax.device_get(state)
    placed = [leaf.sharding for leaf in jax.tree.leaves(state)]
    step = make_train_step(TinyAutoencoder(), tx, ExperimentConfig().loss,
                           Runtime.on_mesh(mesh, state), 64)
    global_batch = sharding.to_global(batch, sharding.batch_sharded(mesh))
    key = jax.device_put(jax.random.key(1), sharding.replicated(mesh))
    rate, record, initial = lr_finder.find_learning_rate(
        state, step, iter(lambda: global_batch, None), key, iterations=100, strength="default")
    assert lr_finder.MIN_LR <= rate < 1e-1 and np.isfinite(rate)
    assert rate == pytest.approx(record.best_lr / 10)
    gamma = (1e-1 / 1e-10) ** (1 / 100)
    np.testing.assert_allclose(record.learning_rates[:3], [1e-10 * gamma**i for i in (1, 2, 3)],
                               rtol=1e-6)  # the rate recorded is the one the next step uses
    for ours, theirs in zip(jax.tree.leaves(initial), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # The starting state came back where it was, never through the host.
    assert [leaf.sharding for leaf in jax.tree.leaves(initial)] == placed
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(initial))
    png = lr_finder.plot_sweep(record, tmp_path)
    assert png.name.startswith("learning_rate_finder_") and cv2.imread(str(png)).shape[2] == 3


def test_the_finder_copies_a_sharded_state_on_its_devices():
    mesh = sharding.make_mesh()  # eight devices
    state = init_state(TinyAutoencoder(), make_optimizer(OptimizerConfig()), 64,
                       jax.random.key(0), sharding.replicated(mesh))
    before = jax.device_get(state.params)
    copy = lr_finder.copy_on_device(state)
    for ours, theirs in zip(jax.tree.leaves(copy), jax.tree.leaves(state), strict=True):
        assert ours.sharding == theirs.sharding and len(ours.sharding.device_set) == 8
        np.testing.assert_array_equal(ours, theirs)
    jax.tree.map(lambda x: x.delete(), state)  # as a donating step does: the copy lives on
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(copy))
    assert float(jax.tree.leaves(copy.params)[0].sum()) == float(jax.tree.leaves(before)[0].sum())


def test_load_weights_checks_every_shape(tmp_path, mesh):
    tx = make_optimizer(OptimizerConfig())
    state = jax.device_get(_state(tx, mesh))
    params = jax.tree.map(np.asarray, state.params)
    params["encoder"]["dense"]["kernel"] = np.zeros((7, 7), np.float32)
    checkpoints = Checkpoints(tmp_path, "original")
    checkpoints.save(state.replace(params=params), {})
    checkpoints.close()
    with pytest.raises(state_file.ModelFolderError,
                       match=r"params encoder\.dense\.kernel is shape \(7, 7\)"):
        resume.load_weights(_state(tx, mesh), tmp_path, "original", ("encoder",),
                            sharding.replicated(mesh))
    with pytest.raises(ConfigError, match="no sub-model 'fc_a'; it has decoder_a, decoder_b"):
        resume.resolve_layers(("fc_a",), ["encoder", "decoder_a", "decoder_b"], "x")
    assert resume.resolve_layers(("encoder",), ["encoder_liae", "decoder_a"], "x") == (
        "encoder_liae",)
