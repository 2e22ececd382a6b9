"""Optimizers, clipping and AutoClip against optax's own optimizers and small NumPy references.

Directions are compared step by step (not final weights): with lr 5e-5 the float32 rounding of
the weights themselves is larger than the differences being checked.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fsjax.config import OptimizerConfig
from fsjax.optim.clipping import (
    AutoClipState,
    autoclip,
    clip_by_global_norm,
    clip_by_tensor_norm,
    make_clipping,
)
from fsjax.optim.optimizers import (
    clip_threshold,
    current_learning_rate,
    decay_mask,
    make_optimizer,
    optimizer_steps,
)
from fsjax.optim.transforms import (
    scale_by_rectified_belief,
    scale_by_torch_amsgrad,
    scale_by_torch_nadam,
)

LR, B1, B2, EPS = 5e-5, 0.9, 0.999, 1e-7
SHAPES = {"conv": {"kernel": (3, 3, 2, 4), "bias": (4,)}, "dense": {"kernel": (4, 3), "bias": (3,)},
          "norm": {"scale": (3,)}, "pos_bias": (2, 3)}
# Faceswap decays only multi-dimensional weights whose name does not end in "bias".
DECAYED = {"conv": {"kernel": True, "bias": False}, "dense": {"kernel": True, "bias": False},
           "norm": {"scale": False}, "pos_bias": False}


def _tree(seed: int, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (scale * rng.normal(size=s)).astype(np.float32), SHAPES,
                        is_leaf=lambda x: isinstance(x, tuple))


PARAMS0 = _tree(0)
TARGET = _tree(1)
CURVATURE = jax.tree.map(lambda x: np.abs(x) + 0.5, _tree(2))


def _quad_grad(params):
    """Gradient of 0.5 * sum(c * (p - target)^2), in the precision of `params`."""
    return jax.tree.map(lambda p, t, c: c * (p - t), params, TARGET, CURVATURE)


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _assert_close(ours, ref, rtol):
    """Per leaf: |ours - ref| <= rtol * max|ref| (relative to the leaf's scale)."""
    for a, b in zip(_leaves(ours), _leaves(ref), strict=True):
        assert np.max(np.abs(a - b)) <= rtol * np.max(np.abs(b)), (a, b)


def _update_fn(tx):
    # MultiSteps' lax.cond retraces on every eager call; one compile is much faster.
    return jax.jit(tx.update) if isinstance(tx.init(PARAMS0), optax.MultiStepsState) else tx.update


def _run(tx, steps: int):
    """The updates of `steps` optimizer steps on the quadratic problem."""
    params = jax.tree.map(jnp.asarray, PARAMS0)
    state = tx.init(params)
    update = _update_fn(tx)
    out = []
    for _ in range(steps):
        updates, state = update(_quad_grad(params), state, params)
        params = optax.apply_updates(params, updates)
        out.append(updates)
    return out, state


def _config(**kw) -> OptimizerConfig:
    return OptimizerConfig(learning_rate=LR, epsilon_exponent=-7, **kw)


def _with_decay(wd, inner):
    """Coupled L2 (torch's weight_decay for Adam and co.): added to the gradient first."""
    return optax.chain(optax.add_decayed_weights(wd, mask=DECAYED), inner) if wd else inner


OPTAX_REFERENCES = {
    "adam": lambda wd: _with_decay(wd, optax.adam(LR, B1, B2, EPS)),
    "adamw": lambda wd: optax.adamw(LR, B1, B2, EPS, weight_decay=wd, mask=DECAYED),
    "adamax": lambda wd: _with_decay(wd, optax.adamax(LR, B1, B2, EPS)),
    "rms-prop": lambda wd: _with_decay(wd, optax.rmsprop(LR, decay=0.99, eps=EPS,
                                                         eps_in_sqrt=False)),
    "lion": lambda wd: optax.lion(LR, b1=B1, b2=B2, weight_decay=wd, mask=DECAYED),
}


@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("name", sorted(OPTAX_REFERENCES))
def test_optimizer_matches_optax(name, wd):
    ours, _ = _run(make_optimizer(_config(optimizer=name, weight_decay=wd)), 8)
    ref, _ = _run(OPTAX_REFERENCES[name](wd), 8)
    for u, r in zip(ours, ref, strict=True):
        _assert_close(u, r, 1e-6)


def _torch_amsgrad(t, g, s):
    """torch.optim.Adam(amsgrad=True): the maximum of the raw moment, bias-corrected after."""
    m = s["m"] = B1 * s.get("m", 0.0) + (1 - B1) * g
    v = s["v"] = B2 * s.get("v", 0.0) + (1 - B2) * g**2
    vmax = s["vmax"] = np.maximum(s.get("vmax", 0.0), v)
    return -LR * (m / (1 - B1**t)) / (np.sqrt(vmax) / np.sqrt(1 - B2**t) + EPS)


@pytest.mark.parametrize(("name", "wd"), [("adam", 0.0), ("adam", 0.01), ("adamw", 0.01)])
def test_amsgrad_matches_torch_rule_in_numpy(name, wd):
    ours, _ = _run(make_optimizer(_config(optimizer=name, ada_amsgrad=True, weight_decay=wd)), 8)
    ref = _numpy_run(_torch_amsgrad, 8, wd, coupled=name == "adam")
    for u, r in zip(ours, ref, strict=True):
        _assert_close(u, r, 1e-6)


def test_torch_amsgrad_differs_from_optax_when_gradients_shrink():
    """optax keeps the maximum of the bias-corrected moment: its early, large values win."""
    grads = [jax.tree.map(lambda x, k=k: x * 0.5**k, PARAMS0) for k in range(6)]
    runs = {}
    for name, tx in (("torch", scale_by_torch_amsgrad(B1, B2, EPS)),
                     ("optax", optax.scale_by_amsgrad(B1, B2, EPS))):
        state, out = tx.init(PARAMS0), None
        for g in grads:
            out, state = tx.update(g, state)
        runs[name] = out
    slots, ref = {}, None
    for t, g in enumerate(grads, start=1):
        ref = _torch_amsgrad(t, np.asarray(g["dense"]["kernel"], np.float64), slots) / -LR
    _assert_close(runs["torch"]["dense"]["kernel"], ref, 1e-6)
    assert np.max(np.abs(np.asarray(runs["optax"]["dense"]["kernel"]) - ref)) > 0.1 * np.max(
        np.abs(ref))


def test_decay_mask_and_no_decay_ops_when_off():
    assert decay_mask(PARAMS0) == DECAYED
    for name in ("adabelief", "adam", "adamax", "adamw", "lion", "nadam", "rms-prop"):
        assert "MaskedState" not in repr(make_optimizer(_config(optimizer=name)).init(PARAMS0))


@pytest.mark.parametrize("name", ["adabelief", "adam", "adamax", "adamw", "lion", "nadam",
                                  "rms-prop"])
def test_weight_decay_touches_kernels_only(name):
    # With zero gradients every direction is 0, so whatever moves is weight decay.
    tx = make_optimizer(_config(optimizer=name, weight_decay=0.01))
    zeros = jax.tree.map(jnp.zeros_like, PARAMS0)
    updates, _ = tx.update(zeros, tx.init(PARAMS0), PARAMS0)
    for u, p, decayed in zip(_leaves(updates), _leaves(PARAMS0), jax.tree.leaves(DECAYED),
                             strict=True):
        if not decayed:
            assert np.all(u == 0)
        elif name in ("adamw", "adabelief", "lion"):  # decoupled: p <- p (1 - lr wd)
            np.testing.assert_allclose(u, -LR * 0.01 * p, rtol=1e-6)
        else:  # coupled L2: the decay is a gradient, normalised by the rule
            assert np.all(u != 0) and np.all(np.sign(u) == -np.sign(p))


# b^t is exact in float32 for these (3^8 < 2^24), so optax's float32 `1 - b**t` has no error.
EXACT_BETAS = (0.5, 0.75)


def test_adabelief_without_rectification_is_optax_adabelief():
    # Faceswap adds eps to the stored second moment: optax's eps_root does the same.
    ours, _ = _run(scale_by_rectified_belief(B1, B2, EPS, rectify=False), 8)
    ref, _ = _run(optax.scale_by_belief(B1, B2, EPS, eps_root=EPS), 8)
    # optax forms 1 - b2^t from float32(0.999), 1.3e-5 off; ours keeps it exact (see below).
    for u, r in zip(ours, ref, strict=True):
        _assert_close(u, r, 2e-5)
    # With betas whose powers float32 holds exactly, the two agree to float rounding.
    b1, b2 = EXACT_BETAS
    ours, _ = _run(scale_by_rectified_belief(b1, b2, EPS, rectify=False), 8)
    ref, _ = _run(optax.scale_by_belief(b1, b2, EPS, eps_root=EPS), 8)
    for u, r in zip(ours, ref, strict=True):
        _assert_close(u, r, 1e-6)


def test_torch_nadam_with_constant_momentum_is_optax_nadam():
    b1, b2 = EXACT_BETAS
    ours, _ = _run(scale_by_torch_nadam(b1, b2, EPS, momentum_decay=1e9), 8)
    ref, _ = _run(optax.scale_by_adam(b1, b2, EPS, nesterov=True), 8)
    for u, r in zip(ours, ref, strict=True):
        _assert_close(u, r, 1e-6)


def _numpy_run(step_fn, steps, wd, coupled):
    """Runs a per-leaf NumPy rule `step_fn(t, g, slots) -> update` in float64.

    The weights are stored in float32 as the model stores them, so both runs see the same
    gradients where p - target is small (float64 weights would differ there by their rounding).
    """
    params = [np.asarray(p) for p in jax.tree.leaves(PARAMS0)]
    decayed = jax.tree.leaves(DECAYED)
    slots = [{} for _ in params]
    out = []
    for t in range(1, steps + 1):
        grads = _leaves(_quad_grad(jax.tree.unflatten(jax.tree.structure(PARAMS0), params)))
        params = [p.astype(np.float64) for p in params]
        updates = []
        for i, (g, p) in enumerate(zip(grads, params, strict=True)):
            decay = wd if decayed[i] else 0.0
            if coupled:
                u = step_fn(t, g + decay * p, slots[i])
            else:
                u = step_fn(t, g, slots[i]) - LR * decay * p
            updates.append(u)
        params = [(p + u).astype(np.float32) for p, u in zip(params, updates, strict=True)]
        out.append(updates)
    return out


def _faceswap_adabelief(amsgrad, eps=EPS):
    """AdaBelief as Faceswap's torch port steps (rectify and degenerate-to-SGD on)."""
    def step(t, g, s):
        m = s["m"] = B1 * s.get("m", 0.0) + (1 - B1) * g
        v = s["v"] = B2 * s.get("v", 0.0) + (1 - B2) * (g - m) ** 2 + eps
        if amsgrad:
            s["vmax"] = np.maximum(s.get("vmax", 0.0), v)
        rho_inf = 2 / (1 - B2) - 1
        rho = rho_inf - 2 * t * B2**t / (1 - B2**t)
        if rho >= 5:
            r = np.sqrt((1 - B2**t) * (rho - 4) / (rho_inf - 4) * (rho - 2) / rho
                        * rho_inf / (rho_inf - 2))
            return -LR * r / (1 - B1**t) * m / (np.sqrt(v) + eps)
        return -LR * m / (1 - B1**t)
    return step


def _torch_nadam(t, g, s, psi=0.004):
    mom = B1 * (1 - 0.5 * 0.96 ** (t * psi))
    mom_next = B1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
    prod = s["prod"] = s.get("prod", 1.0) * mom
    m = s["m"] = B1 * s.get("m", 0.0) + (1 - B1) * g
    v = s["v"] = B2 * s.get("v", 0.0) + (1 - B2) * g**2
    denom = np.sqrt(v / (1 - B2**t)) + EPS
    return (-LR * (1 - mom) / (1 - prod) * g / denom
            - LR * mom_next / (1 - prod * mom_next) * m / denom)


@pytest.mark.parametrize(("wd", "amsgrad", "eps_exp"),
                         [(0.0, False, -7), (0.01, False, -7), (0.01, True, -7), (0.0, False, -2)])
def test_rectified_adabelief_matches_numpy(wd, amsgrad, eps_exp):
    # 10 steps: rho_t < 5 (SGD with momentum) for t <= 5, rectified Adam-like after. A large
    # eps shows that it accumulates in the second moment.
    cfg = dataclasses.replace(_config(optimizer="adabelief", weight_decay=wd,
                                      ada_amsgrad=amsgrad), epsilon_exponent=eps_exp)
    ours, _ = _run(make_optimizer(cfg), 10)
    ref = _numpy_run(_faceswap_adabelief(amsgrad, 10.0**eps_exp), 10, wd, coupled=False)
    for u, r in zip(ours, ref, strict=True):
        _assert_close(u, r, 1e-6)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_nadam_matches_torch_rule_in_numpy(wd):
    ours, _ = _run(make_optimizer(_config(optimizer="nadam", weight_decay=wd)), 8)
    ref = _numpy_run(_torch_nadam, 8, wd, coupled=True)
    for u, r in zip(ours, ref, strict=True):
        _assert_close(u, r, 1e-6)


def test_transforms_refuse_beta_one():
    with pytest.raises(ValueError, match="b2"):
        scale_by_rectified_belief(b2=1.0)
    with pytest.raises(ValueError, match="b1"):
        scale_by_torch_nadam(b1=1.0)


# --- clipping -----------------------------------------------------------------------------------

def _grads(seed, scales=(0.1, 3.0, 0.5, 2.0, 1.0, 0.2)):
    """Gradients whose tensors have very different norms."""
    leaves = jax.tree.leaves(_tree(seed))
    return jax.tree.unflatten(jax.tree.structure(PARAMS0),
                              [x * s for x, s in zip(leaves, scales, strict=True)])


def _global_norm(tree):
    return np.sqrt(sum(np.sum(x**2) for x in _leaves(tree)))


def test_clip_by_global_norm_is_torch_clip_grad_norm():
    grads = _grads(3)
    norm = _global_norm(grads)
    for max_norm in (0.5 * norm, 2 * norm):
        out, _ = clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
        coef = min(max_norm / (norm + 1e-6), 1.0)
        _assert_close(out, [g * coef for g in _leaves(grads)], 1e-6)


def test_clip_by_tensor_norm_clips_each_tensor():
    grads = _grads(4)
    out, _ = clip_by_tensor_norm(1.0).update(grads, optax.EmptyState())
    for o, g in zip(_leaves(out), _leaves(grads), strict=True):
        norm = np.linalg.norm(g)
        np.testing.assert_allclose(o, g / norm if norm > 1.0 else g, rtol=1e-6)


def test_value_and_none_clipping():
    grads = _grads(5)
    out, _ = make_clipping(_config(gradient_clipping="value", clipping_value=0.3)).update(
        grads, optax.EmptyState())
    _assert_close(out, [np.clip(g, -0.3, 0.3) for g in _leaves(grads)], 1e-7)
    none = make_clipping(_config(gradient_clipping="none"))
    out, _ = none.update(grads, none.init(grads))
    _assert_close(out, grads, 0)


# --- AutoClip -----------------------------------------------------------------------------------

NORM_SCALES = (3.0, 0.5, 8.0, 1.0, 2.0, 0.1, 5.0, 0.7, 4.0, 0.3, 6.0, 1.5)


def _scaled(k):
    return jax.tree.map(lambda x: x * NORM_SCALES[k % len(NORM_SCALES)], _grads(10 + k))


def test_autoclip_threshold_is_numpy_percentile_and_clips_like_torch():
    tx = autoclip(10.0, history=100)
    state = tx.init(PARAMS0)
    seen = []
    for k in range(7):
        grads = _scaled(k)
        out, state = tx.update(grads, state)
        seen.append(_global_norm(grads))
        threshold = np.percentile(seen, 10)
        np.testing.assert_allclose(state.threshold, threshold, rtol=1e-6)
        coef = min(threshold / (seen[-1] + 1e-6), 1.0)
        _assert_close(out, [g * coef for g in _leaves(grads)], 1e-6)
    assert int(state.count) == 7


def test_autoclip_ring_buffer_keeps_only_the_last_history_norms():
    tx = autoclip(30.0, history=5)
    state = tx.init(PARAMS0)
    seen = []
    for k in range(12):
        grads = _scaled(k)
        _, state = tx.update(grads, state)
        seen.append(_global_norm(grads))
        np.testing.assert_allclose(state.threshold, np.percentile(seen[-5:], 30), rtol=1e-6)
    assert int(state.count) == 12
    np.testing.assert_allclose(np.sort(np.asarray(state.norms)), np.sort(seen[-5:]), rtol=1e-6)


def test_autoclip_skips_non_finite_norms():
    tx = autoclip(10.0, history=8)
    state = tx.init(PARAMS0)
    for k in range(3):
        _, state = tx.update(_scaled(k), state)
    for bad in (np.nan, np.inf):
        leaves = [np.array(x) for x in jax.tree.leaves(_scaled(3))]
        leaves[1][0, 0, 0, 0] = bad
        grads = jax.tree.unflatten(jax.tree.structure(PARAMS0), leaves)
        out, new = tx.update(grads, state)
        assert int(new.count) == 3
        np.testing.assert_array_equal(new.norms, state.norms)
        np.testing.assert_array_equal(new.threshold, state.threshold)
        for o, g in zip(_leaves(out), leaves, strict=True):
            np.testing.assert_array_equal(o, g)  # passed through, NaN/inf included
    _, state = tx.update(_scaled(4), state)
    assert int(state.count) == 4


def test_autoclip_per_tensor_is_faceswap2():
    tx = autoclip(50.0, history=10, per_tensor=True)
    state = tx.init(PARAMS0)
    seen = []
    for k in range(4):
        grads = _scaled(k)
        out, state = tx.update(grads, state)
        seen.append(_global_norm(grads))
        # nearest rank, rounding half to even (tf.round): two norms -> the smaller one
        threshold = np.sort(seen)[int(np.round((len(seen) - 1) * 0.5))]
        np.testing.assert_allclose(state.threshold, threshold, rtol=1e-6)
        expected = [g * threshold / max(np.linalg.norm(g), threshold) for g in _leaves(grads)]
        _assert_close(out, expected, 1e-6)


def test_autoclip_percentile_truncates_like_faceswap():
    # clipping_value 0.29 -> int(2.9) = 2nd percentile, not the 2.9th
    tx = make_clipping(_config(gradient_clipping="autoclip", clipping_value=0.29))
    state = tx.init(PARAMS0)
    seen = []
    for k in range(6):
        _, state = tx.update(_scaled(k), state)
        seen.append(_global_norm(_scaled(k)))
    np.testing.assert_allclose(state.threshold, np.percentile(seen, 2), rtol=1e-6)
    assert not np.isclose(np.percentile(seen, 2), np.percentile(seen, 2.9), rtol=1e-4)


def test_autoclip_jit_on_replicated_mesh_matches_eager():
    assert len(jax.devices()) == 8
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    tx = autoclip(10.0, history=6)
    params = jax.device_put(PARAMS0, replicated)
    jit_init = jax.jit(tx.init, out_shardings=replicated)
    jit_update = jax.jit(tx.update, out_shardings=replicated)
    state_jit, state_eager = jit_init(params), tx.init(PARAMS0)
    for k in range(8):
        out_jit, state_jit = jit_update(jax.device_put(_scaled(k), replicated), state_jit)
        out_eager, state_eager = tx.update(_scaled(k), state_eager)
        _assert_close(out_jit, out_eager, 1e-6)
    assert state_jit.norms.sharding.is_fully_replicated
    for a, b in zip(jax.tree.leaves(state_jit), jax.tree.leaves(state_eager), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def _orbax_roundtrip(tmp_path, state):
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "state", state)
    ckptr.wait_until_finished()
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    return ckptr.restore(tmp_path / "state", target)


def test_optimizer_state_roundtrips_through_orbax(tmp_path):
    cfg = _config(optimizer="adabelief", gradient_clipping="autoclip", autoclip_history=16,
                  gradient_accumulation=2, weight_decay=0.01)
    _, state = _run(make_optimizer(cfg), 5)
    restored = _orbax_roundtrip(tmp_path, state)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert isinstance(restored.inner_opt_state["clipping"], AutoClipState)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


# --- accumulation, learning rate, helpers --------------------------------------------------------

@pytest.mark.parametrize("clipping", ["none", "autoclip"])
def test_accumulation_equals_one_large_batch_step(clipping):
    # Coupled weight decay makes Adam sensitive to the gradient's scale: a sum instead of the
    # mean of the micro-batch gradients would show.
    base = dataclasses.replace(_config(optimizer="adam", gradient_clipping=clipping,
                                       autoclip_history=8, weight_decay=0.1), learning_rate=1e-2)
    tx4 = make_optimizer(dataclasses.replace(base, gradient_accumulation=4))
    tx1 = make_optimizer(base)
    micro = [_scaled(k) for k in range(12)]
    p4 = p1 = jax.tree.map(jnp.asarray, PARAMS0)
    s4, s1 = tx4.init(p4), tx1.init(p1)
    update4 = _update_fn(tx4)
    for k, grads in enumerate(micro):
        updates, s4 = update4(grads, s4, p4)
        if k % 4 != 3:
            assert all(np.all(u == 0) for u in _leaves(updates))
        p4 = optax.apply_updates(p4, updates)
    for step in range(3):
        mean = jax.tree.map(lambda *g: sum(g) / 4, *micro[4 * step:4 * step + 4])
        updates, s1 = tx1.update(mean, s1, p1)
        p1 = optax.apply_updates(p1, updates)
    moved = [a - b for a, b in zip(_leaves(p1), _leaves(PARAMS0), strict=True)]
    for a, b, m in zip(_leaves(p4), _leaves(p1), moved, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
        assert np.max(np.abs(m)) > 1e-2  # the steps were large enough to tell them apart
    assert int(optimizer_steps(s4)) == int(optimizer_steps(s1)) == 3
    if clipping == "autoclip":
        np.testing.assert_allclose(clip_threshold(s4), clip_threshold(s1), rtol=1e-5)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_changed_learning_rate_wins_over_the_stored_one(accumulation):
    cfg = _config(optimizer="adamw", weight_decay=0.01, gradient_accumulation=accumulation)
    old = make_optimizer(dataclasses.replace(cfg, learning_rate=1e-4))
    new = make_optimizer(dataclasses.replace(cfg, learning_rate=2e-4))
    params = jax.tree.map(jnp.asarray, PARAMS0)
    state = old.init(params)
    old_update, new_update = _update_fn(old), _update_fn(new)
    for k in range(2 * accumulation - 1):  # one optimizer step, then up to the next one
        _, state = old_update(_scaled(k), state, params)
        if k == accumulation - 1:
            assert np.isclose(current_learning_rate(state), 1e-4)
    grads = _scaled(5)
    u_old, _ = old_update(grads, state, params)
    u_new, s_new = new_update(grads, state, params)
    _assert_close(u_new, jax.tree.map(lambda u: 2 * u, u_old), 1e-6)
    assert np.isclose(current_learning_rate(s_new), 2e-4)


def test_helpers_without_accumulation():
    tx = make_optimizer(_config())
    _, state = _run(tx, 3)
    assert clip_threshold(state) is None
    assert int(optimizer_steps(state)) == 3
    assert np.isclose(current_learning_rate(tx.init(PARAMS0)), LR)
    assert np.isclose(current_learning_rate(state), LR)


def test_helpers_with_accumulation_and_schedule():
    schedule = optax.linear_schedule(0.0, 1e-3, 10)
    cfg = _config(gradient_clipping="autoclip", autoclip_history=4, gradient_accumulation=2)
    tx = make_optimizer(cfg, learning_rate=schedule)
    params = jax.tree.map(jnp.asarray, PARAMS0)
    state = tx.init(params)
    update = _update_fn(tx)
    seen = []
    for k in range(6):
        _, state = update(_scaled(k), state, params)
        if k % 2:
            seen.append(_global_norm(jax.tree.map(lambda a, b: (a + b) / 2, _scaled(k - 1),
                                                  _scaled(k))))
    assert int(optimizer_steps(state)) == 3
    # the rate of the latest step: the schedule at the step count before it
    np.testing.assert_allclose(current_learning_rate(state), schedule(2), rtol=1e-6)
    np.testing.assert_allclose(clip_threshold(state), np.percentile(seen, 10), rtol=1e-5)
