"""`fsjax.tools.convert`: the swap (inference) model and the folder converter, checked against the
outputs Faceswap's own Keras models computed (`forward.npz` of the fixtures)."""

from __future__ import annotations

import shutil

import cv2
import jax
import numpy as np

from fsjax.data import faces
from fsjax.tools import convert, import_keras

TOL = 1e-5


def test_the_swap_is_faceswaps_a_to_b_and_switch_sides_is_b_to_a(faceswap_dir):
    folder = faceswap_dir / "models/phaze_a_tiny_gblock"
    forward = np.load(folder / "forward.npz")
    _, spec, variables = convert.load_model(folder)
    face, mask = convert.make_swap_fn(spec.module)(variables, forward["input_a"])
    assert mask is None  # this model learned no mask
    assert np.abs(np.asarray(face) - forward["swap_a_to_b_0"]).max() <= TOL

    # Faceswap 2 model with a learned mask: B to A on A faces is the A path, whose outputs Keras
    # computed in the forward pass (per side: faces 16, 32, 64, then the mask).
    legacy = faceswap_dir / "legacy_h5/dfl_sae_liae"
    forward = np.load(legacy / "forward.npz")
    _, spec, variables = convert.load_model(legacy)
    face, mask = convert.make_swap_fn(spec.module, switch_sides=True)(variables,
                                                                       forward["input_a"])
    assert np.abs(np.asarray(face) - forward["output_2"]).max() <= TOL
    assert np.abs(np.asarray(mask) - forward["output_3"]).max() <= TOL


def test_a_folder_converts_in_padded_batches_with_the_mask_as_alpha(faceswap_dir, data_dir,
                                                                    tmp_path, capsys):
    legacy = faceswap_dir / "legacy_h5/dfl_sae_liae"
    model_dir = tmp_path / "model"
    assert import_keras.main([str(legacy), "--out", str(model_dir)]) == 0
    source = tmp_path / "faces"
    source.mkdir()
    names = sorted(p.name for p in (data_dir / "faces/A").glob("*.png"))[:3]
    for name in names:
        shutil.copy(data_dir / "faces/A" / name, source)
    capsys.readouterr()
    out = tmp_path / "swapped"
    assert convert.main([str(model_dir), "-i", str(source), "-o", str(out), "-b", "2"]) == 0
    assert "Converting 3 faces (A to B) with 'dfl_sae' in batches of 2" in capsys.readouterr().out

    # The same swap, one face at a time, on the training crop of each face.
    config, spec, variables = convert.load_model(model_dir)
    crop = faces.SampleSpec(size=64, centering=config.data.centering,
                            coverage=config.data.coverage, mask_type="none", eye_mask=False,
                            mouth_mask=False)
    assert config.data.coverage == 87.5  # the FS2 model's option, from its state file
    swap = convert.make_swap_fn(spec.module)
    for path in sorted(source.iterdir()):
        image = faces.load_sample(faces.read_face_meta(path), crop)["image"][None] / 255.0
        face, mask = jax.device_get(swap(variables, np.asarray(image, np.float32)))
        written = cv2.imread(str(out / path.name), cv2.IMREAD_UNCHANGED)
        assert written.shape == (64, 64, 4) and written.dtype == np.uint8
        expected = np.concatenate([face[0], mask[0]], axis=-1) * 255.0
        assert np.abs(written - expected).max() <= 0.5 + 1e-3  # rounding to 8 bits only
    assert sorted(p.name for p in out.iterdir()) == names


def test_bad_faces_stop_the_conversion_before_it_starts(faceswap_dir, data_dir, tmp_path,
                                                        capsys):
    source = tmp_path / "faces"
    source.mkdir()
    shutil.copy(next((data_dir / "faces/A").glob("*.png")), source)
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "swapped"
    model = faceswap_dir / "models/phaze_a_tiny_gblock"
    assert convert.main([str(model), "-i", str(source), "-o", str(out)]) == 1
    assert "broken.png" in capsys.readouterr().err and not out.exists()
    assert convert.main([str(model), "-i", str(source), "-o", str(out), "--skip-bad"]) == 0
    assert [p.suffix for p in out.iterdir()] == [".png"]
