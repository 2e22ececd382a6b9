"""`fsjax.interop.keras_import.load` on models Faceswap itself saved: the outputs Keras computed
(`forward.npz`, see faceswap_files.py) must come out of fsjax to 1e-5."""

import json
import shutil

import numpy as np
import pytest

from fsjax.interop.keras_file import KerasFileError
from fsjax.interop.keras_import import load

TOLERANCE = 1e-5


@pytest.mark.parametrize("folder, outputs", [
    ("models/phaze_a_tiny_gblock", 2),  # Faceswap 3 .keras: Phaze-A with a G-Block
    ("legacy_h5/dfl_sae_liae", 8),  # Faceswap 2 .h5: DFL-SAE LIAE, multiscale + learned mask
])
def test_loaded_model_gives_faceswaps_outputs(faceswap_dir, folder, outputs):
    model, variables = load(faceswap_dir / folder)
    forward = np.load(faceswap_dir / folder / "forward.npz")
    for prefix, output in (("input", "output"), ("rand_input", "rand_output")):
        if f"{output}_0" not in forward:
            continue
        got = model.apply(variables, forward[f"{prefix}_a"], forward[f"{prefix}_b"])
        assert len(got) == outputs
        for i, array in enumerate(got):
            np.testing.assert_allclose(array, forward[f"{output}_{i}"], rtol=0, atol=TOLERANCE,
                                       err_msg=f"{folder} {output}_{i}")
    # The swap: side B's decoder on side A's faces (Faceswap's convert model, A -> B).
    for key in ("b_path_on_input_a_0", "swap_a_to_b_0"):
        if key in forward:
            swapped = model.apply(variables, forward["input_a"], forward["input_a"])
            np.testing.assert_allclose(swapped[outputs // 2], forward[key], rtol=0,
                                       atol=TOLERANCE, err_msg=key)


def test_a_model_file_without_its_state_file_or_with_a_wrong_shape_is_refused(faceswap_dir,
                                                                              tmp_path):
    source = faceswap_dir / "models/phaze_a_tiny_gblock"
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(source / "phaze_a.keras", folder)
    with pytest.raises(KerasFileError, match="phaze_a_state.json: Faceswap's state file is "
                                             "needed"):
        load(folder)
    state = json.loads((source / "phaze_a_state.json").read_text())
    state["config"]["bottleneck_size"] = 256  # the file's encoder ends in 128 units
    (folder / "phaze_a_state.json").write_text(json.dumps(state))
    with pytest.raises(KerasFileError, match=r"encoder/dense/kernel has shape \(2048, 128\); "
                                             r"fsjax's model needs \(2048, 256\)"):
        load(folder / "phaze_a.keras")


def test_variables_pair_in_keras_creation_order_and_unknown_ones_are_refused(tmp_path):
    import jax

    from fsjax.interop.keras_file import KerasModel
    from fsjax.interop.keras_import import map_weights

    arrays = [np.full(4, float(i), np.float32) for i in range(4)]  # Keras: gamma beta mean var
    keras = KerasModel(tmp_path / "x.keras", "keras3", {}, {"encoder": {"bn": arrays}},
                       "3.14.1", False)
    slot = jax.ShapeDtypeStruct((4,), np.float32)
    out = map_weights(keras, {"params": {"encoder": {"bn": {"beta": slot, "gamma": slot}}},
                              "batch_stats": {"encoder": {"bn": {"moving_variance": slot,
                                                                 "moving_mean": slot}}}})
    assert [float(out["params"]["encoder"]["bn"][k][0]) for k in ("gamma", "beta")] == [0, 1]
    stats = out["batch_stats"]["encoder"]["bn"]
    assert [float(stats[k][0]) for k in ("moving_mean", "moving_variance")] == [2, 3]
    keras.weights = {"encoder": {"norm": arrays[:2]}}
    with pytest.raises(KerasFileError, match=r"encoder/norm: variables \['running'\] have no "
                                             "known Keras order"):
        map_weights(keras, {"params": {"encoder": {"norm": {"gamma": slot, "running": slot}}}})
