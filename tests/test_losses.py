"""fsjax.losses against numbers Faceswap itself computed (shared/fixtures/losses.npz).

tests/data/losses_64.npz holds Faceswap's outputs for the 64 px keys (and the multiscale 64+128
collator values). The *inputs* are not stored: they are redrawn bit-exactly from
`np.random.default_rng(0)` in the generator's order (see `_inputs`), which keeps the file at
~270 KB; `check.<key>` fingerprints (float64 sum + first values) guard that the redraw still
matches the fixture.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loss_inputs import inputs, reference

import fsjax.losses as fl
from fsjax.config import LossConfig

SIMPLE_TOL = 1e-5  # single loss functions
COMPOSITE_TOL = 1e-4  # collator sums of several masked terms


@functools.cache
def _side_jit(cfg: LossConfig):
    """Jitted `side_losses` per config: compiled once, reused by both sides and by tests."""
    return jax.jit(functools.partial(fl.side_losses, cfg))


_collate_jit = jax.jit(fl.collate, static_argnums=0, static_argnames="side")


@pytest.fixture(scope="module")
def ref(data_dir) -> dict[str, np.ndarray]:
    return reference(str(data_dir / "losses_64.npz"))


@pytest.fixture(scope="module")
def inp() -> dict[str, np.ndarray]:
    return inputs()


def _side(inp: dict, side: str, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    suffix = "" if side == "a" else "_b"
    masks = {f"mask_{k}": inp[f"mask_{k}_{side}_{size}"] for k in ("face", "eye", "mouth")}
    return inp[f"y_true{suffix}_{size}"], inp[f"y_pred{suffix}_{size}"], masks


def _max_err(actual, expected) -> float:
    return float(np.max(np.abs(np.asarray(actual, np.float64) - np.asarray(expected))))


def test_inputs_match_fixture(ref, inp):
    for key, value in inp.items():
        fixture_key = key
        flat = value
        if key.startswith("mask_") and not key.startswith(("mask_target", "mask_pred")):
            flat = value.transpose(0, 3, 1, 2)
        flat = flat.astype(np.float64).ravel()
        expected = ref[f"check.{fixture_key}"]
        assert np.array_equal(flat[:6], expected[1:]), f"redrawn {key} differs (numpy RNG?)"
        assert abs(flat.sum() - expected[0]) < 1e-6, key


@pytest.mark.parametrize("name", ["mae", "mse", "ssim"])
def test_raw_map_matches_faceswap(ref, inp, name):
    got = jax.jit(fl.get(name))(jnp.asarray(inp["y_true_64"]), jnp.asarray(inp["y_pred_64"]))
    assert got.shape == (2, 64, 64, 3) and got.dtype == jnp.float32
    # ssim: Faceswap's own float32 map is 7.1e-6 from a float64 evaluation; ours is 2.1e-6.
    assert _max_err(np.asarray(got).transpose(0, 3, 1, 2), ref[f"{name}.64.raw"]) < SIMPLE_TOL


@pytest.mark.parametrize("name", ["mae", "mse", "ssim"])
def test_compute_per_sample(ref, inp, name):
    got = fl.compute(name, inp["y_true_64"], inp["y_pred_64"])
    assert got.shape == (2,) and got.dtype == jnp.float32
    assert _max_err(got, ref[f"{name}.64.per_sample"]) < SIMPLE_TOL
    inside = jax.jit(lambda t, p: fl.compute(name, t, p, faceswap_compat=True))
    assert _max_err(inside(inp["y_true_64"], inp["y_pred_64"]), got) < 1e-7


@pytest.mark.parametrize("name", ["mae", "mse", "ssim"])
def test_per_sample_masked(ref, inp, name):
    cfg = LossConfig(loss_function=name, loss_function_2="none")
    true, pred, masks = _side(inp, "a", 64)
    loss = _side_jit(cfg)([true], [pred], **masks)
    assert _max_err(loss.unweighted[0][name], ref[f"{name}.64.per_sample_masked"]) < SIMPLE_TOL


def _check_collator(ref, prefix: str, cfg: LossConfig, inputs: dict, n_out: int,
                    names: tuple[str, ...] = ("ssim", "mse")) -> None:
    """Compare per-item terms, per-side totals, the A+B total and the logged scalars."""
    grand = 0.0
    for side in "ab":
        label = side.upper()
        loss = _side_jit(cfg)(**inputs[side])
        total, terms = loss.total(), fl.terms(loss, label)
        if side == "a":  # the one-call API agrees with the two-step one
            total_c, terms_c = _collate_jit(cfg, side=label, **inputs[side])
            assert sorted(terms_c) == sorted(terms) and _max_err(total_c, total) < 1e-7
            assert all(_max_err(terms_c[k], terms[k]) < 1e-7 for k in terms)
        for idx in range(n_out):
            key = label if n_out == 1 else f"{label}_{idx}"
            face = 0.0
            for name in names:
                base = f"{prefix}.{side}.out{idx}.{name}"
                for kind in ("unweighted", "weighted"):
                    per_item = getattr(loss, kind)[idx][name]
                    assert _max_err(per_item, ref[f"{base}.{kind}"]) < COMPOSITE_TOL, base
                    logged = terms[f"{kind}_{key}/{name}"]
                    assert _max_err(logged, ref[f"{base}.{kind}"].mean()) < COMPOSITE_TOL
                face += ref[f"{base}.weighted"].mean()
            assert _max_err(terms[f"face_{key}"], face) < COMPOSITE_TOL
        if cfg.learn_mask:
            mask_ref = ref[f"{prefix}.{side}.mask_loss"]
            assert _max_err(loss.mask, mask_ref) < SIMPLE_TOL
            assert _max_err(terms[f"mask_{label}"], mask_ref.mean()) < SIMPLE_TOL
        else:
            assert f"mask_{label}" not in terms
        assert total.shape == () and total.dtype == jnp.float32
        assert _max_err(total, ref[f"{prefix}.total_{side}"]) < COMPOSITE_TOL
        grand += float(total)
    assert abs(grand - float(ref[f"{prefix}.total"])) < COMPOSITE_TOL


@pytest.mark.parametrize("learn_mask", [False, True], ids=["default", "default_learn_mask"])
def test_collator_default_configs(ref, inp, learn_mask):
    cfg = LossConfig(learn_mask=learn_mask)
    inputs = {}
    for side in "ab":
        true, pred, masks = _side(inp, side, 64)
        inputs[side] = dict(targets=[true], predictions=[pred], **masks)
        if learn_mask:
            inputs[side]["mask_prediction"] = inp[f"mask_pred_{side}_64"]
            inputs[side]["mask_target"] = inp[f"mask_target_{side}_64"]
    name = "default_learn_mask" if learn_mask else "default"
    _check_collator(ref, f"collator.{name}.64", cfg, inputs, n_out=1)


def test_collator_non_spatial_config(ref, inp):
    """l_inf_norm (non-spatial) + gmsd at 50 %, masks, eye x3, mouth x2: Faceswap's totals."""
    cfg = LossConfig(loss_function="l_inf_norm", loss_function_2="gmsd", loss_weight_2=50,
                     faceswap_compat=True)
    inputs = {}
    for side in "ab":
        true, pred, masks = _side(inp, side, 64)
        inputs[side] = dict(targets=[true], predictions=[pred], **masks)
    _check_collator(ref, "collator.nonspatial_masked.64", cfg, inputs, n_out=1,
                    names=("l_inf_norm", "gmsd"))


def test_collator_multiscale(ref, inp):
    # Faceswap's fixture draws independent masks per size, so pass one mask per output.
    inputs = {}
    for side in "ab":
        small, large = _side(inp, side, 64), _side(inp, side, 128)
        inputs[side] = dict(
            targets=[small[0], large[0]],
            predictions=[small[1], large[1]],
            **{k: [small[2][k], large[2][k]] for k in small[2]},
        )
    _check_collator(ref, "collator.multiscale_default.64x128", LossConfig(), inputs, n_out=2)
    terms = fl.terms(_side_jit(LossConfig())(**inputs["a"]), "A")
    assert sorted(terms) == sorted(
        [f"face_A_{i}" for i in (0, 1)]
        + [
            f"{kind}_A_{i}/{n}"
            for kind in ("weighted", "unweighted")
            for i in (0, 1)
            for n in ("ssim", "mse")
        ]
    )


def test_non_spatial_path_matches_faceswap(ref, inp):
    """The masked-inputs path of a non-spatial loss (l_inf_norm, Faceswap's layout)."""
    cfg = LossConfig(loss_function="l_inf_norm", loss_function_2="none", faceswap_compat=True)
    for side in "ab":
        true, pred, masks = _side(inp, side, 64)
        loss = jax.jit(functools.partial(fl.side_losses, cfg))([true], [pred], **masks)
        base = f"collator.nonspatial_masked.64.{side}.out0.l_inf_norm"
        assert _max_err(loss.unweighted[0]["l_inf_norm"], ref[f"{base}.unweighted"]) < SIMPLE_TOL


def test_area_resize_matches_inter_area(inp):
    mask = inp["mask_face_a_128"]
    for height, width in ((64, 64), (96, 96), (37, 50)):
        got = np.asarray(fl.area_resize(jnp.asarray(mask), height, width))
        want = np.stack(
            [cv2.resize(m, (width, height), interpolation=cv2.INTER_AREA) for m in mask[..., 0]]
        )[..., None]
        assert got.shape == want.shape
        assert _max_err(got, want) < 1e-6, (height, width)
    with pytest.raises(ValueError, match="only shrinks"):
        fl.area_resize(jnp.asarray(inp["mask_face_a_64"]), 128, 128)


def test_single_large_mask_is_resized_per_output(inp):
    small, large = _side(inp, "a", 64), _side(inp, "a", 128)
    faces = dict(targets=[small[0], large[0]], predictions=[small[1], large[1]])
    resized = {k: [fl.area_resize(jnp.asarray(m), 64, 64), m] for k, m in large[2].items()}
    total_one, terms_one = _collate_jit(LossConfig(), side="A", **faces, **large[2])
    total_list, terms_list = _collate_jit(LossConfig(), side="A", **faces, **resized)
    assert _max_err(total_one, total_list) < 1e-7
    assert all(_max_err(terms_one[k], terms_list[k]) < 1e-7 for k in terms_list)


def test_weights_and_multipliers(inp):
    """weighted = unweighted * weight; eye multiplier 1 switches the eye mask off by name."""
    true, pred, masks = _side(inp, "a", 64)
    cfg = LossConfig(
        loss_function="mae",
        loss_function_2="mse",
        loss_weight_2=250.0,
        eye_multiplier=1.0,
        mouth_multiplier=4.0,
    )
    loss = _side_jit(cfg)([true], [pred], **masks)
    face, mouth = masks["mask_face"], masks["mask_mouth"]
    expect = np.mean(np.abs(true - pred) * face * (1 + 4.0 * mouth), axis=(1, 2, 3))
    assert _max_err(loss.unweighted[0]["mae"], expect) < 1e-6
    assert _max_err(loss.weighted[0]["mse"], loss.unweighted[0]["mse"] * 2.5) < 1e-9
    expect_total = float(np.mean(loss.weighted[0]["mae"]) + np.mean(loss.weighted[0]["mse"]))
    assert abs(float(loss.total()) - expect_total) < 1e-7
    # Faceswap hands masks over by position: with eye multiplier 1 the mouth mask lands in the
    # eye slot and is ignored, so faceswap_compat loses the mouth weighting.
    compat = dataclasses.replace(cfg, faceswap_compat=True)
    lost = _side_jit(compat)([true], [pred], **masks).unweighted[0]["mae"]
    assert _max_err(lost, np.mean(np.abs(true - pred) * face, axis=(1, 2, 3))) < 1e-6
    # No penalized mask: masks are ignored entirely, the value is the plain per-item loss.
    cfg = LossConfig(loss_function="mae", loss_function_2="none", penalized_mask_loss=False)
    plain = _side_jit(cfg)([true], [pred], **masks).unweighted[0]["mae"]
    assert _max_err(plain, fl.compute("mae", true, pred)) < 1e-7


def test_ssim_identical_inputs_zero_loss_finite_grad(inp):
    image = jnp.asarray(inp["y_true_64"])
    value, grad = jax.jit(jax.value_and_grad(lambda t, p: jnp.mean(fl.ssim(t, p)), 1))(image, image)
    assert abs(float(value)) < 1e-6
    assert bool(jnp.all(jnp.isfinite(grad)))
    flat = jnp.full((1, 16, 16, 3), 0.5, jnp.float32)  # zero variance: the clamp's edge
    grad = jax.jit(jax.grad(lambda t, p: jnp.mean(fl.ssim(t, p)), 1))(flat, flat)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_low_precision_inputs_give_float32(inp):
    true = jnp.asarray(inp["y_true_64"], jnp.bfloat16)
    pred = jnp.asarray(inp["y_pred_64"], jnp.bfloat16)
    for name in ("mae", "mse", "ssim"):
        got = fl.compute(name, true, pred)
        assert got.dtype == jnp.float32
        want = fl.compute(name, true.astype(jnp.float32), pred.astype(jnp.float32))
        assert _max_err(got, want) < 1e-7
    masks = {k: jnp.asarray(v, jnp.float16) for k, v in _side(inp, "a", 64)[2].items()}
    total, terms = _collate_jit(LossConfig(), [true], [pred], side="A", **masks)
    assert total.dtype == jnp.float32
    assert all(v.dtype == jnp.float32 for v in terms.values())


def test_errors(inp):
    true, pred, masks = _side(inp, "a", 64)
    with pytest.raises(ValueError, match="unknown loss function .nope.: choose one of .*mse"):
        fl.compute("nope", true, pred)
    with pytest.raises(ValueError, match="mask_face is required"):
        fl.collate(LossConfig(), [true], [pred], side="A")
    with pytest.raises(ValueError, match="learn_mask=True"):
        fl.collate(LossConfig(learn_mask=True), [true], [pred], side="A", **masks)
    with pytest.raises(ValueError, match="learn_mask=False"):
        fl.collate(
            LossConfig(), [true], [pred], side="A", mask_prediction=masks["mask_face"], **masks
        )
    with pytest.raises(ValueError, match="divide the loader's uint8"):
        uint8 = {k: (v * 255).astype(np.uint8) for k, v in masks.items()}
        fl.collate(LossConfig(), [true], [pred], side="A", **uint8)
    # The learned mask's target defaults to the face mask.
    cfg = LossConfig(learn_mask=True)
    loss = _side_jit(cfg)([true], [pred], mask_prediction=inp["mask_pred_a_64"], **masks)
    expect = np.mean((inp["mask_pred_a_64"] - masks["mask_face"]) ** 2, axis=(1, 2, 3))
    assert _max_err(loss.mask, expect) < 1e-7
