"""The data inspection tool (grids and npz as the model sees the faces) and the data benchmark's
result line: both are read by external checks, so their layout is pinned here."""

import importlib.util
import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest

from fsjax.data import pairs
from fsjax.data.demo import write_demo_faces
from fsjax.data.faces import SampleSpec, load_sample, scan_folder
from fsjax.tools.inspect_data import main, tile_size

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT = str(ROOT / "experiments" / "original.py")
SIZE = 64  # Original's processing size
TILE = tile_size(SIZE)
MASKS = ("mask_face", "mask_eye", "mask_mouth")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_demo_faces(tmp_path_factory.mktemp("faces"), count=25, size=128, seed=0)


def _run(faces, out, *args):
    return main(["--config", EXPERIMENT, "--faces-a", str(faces[0]), "--faces-b", str(faces[1]),
                 "--out", str(out), *args])


@pytest.fixture(scope="module")
def plain(faces, tmp_path_factory):
    """One run with --npz --no-augment on the experiment's defaults: (out folder, npz arrays)."""
    out = tmp_path_factory.mktemp("plain")
    assert _run(faces, out, "--npz", "--no-augment", "--num", "3") == 0
    with np.load(out / "samples.npz", allow_pickle=False) as data:
        return out, dict(data)


def _npz(faces, out, *args):
    assert _run(faces, out, "--npz", "--no-augment", "--num", "1", *args) == 0
    with np.load(out / "samples.npz", allow_pickle=False) as data:
        return dict(data)


def test_npz_holds_every_face_in_file_name_order(faces, plain):
    _, data = plain
    expected = {f"{s}_{k}" for s in "ab" for k in ("files", "images", "landmarks") + MASKS}
    assert set(data) == expected
    for side, folder in zip("ab", faces, strict=True):
        metas = scan_folder(folder)
        names = [m.path.name for m in metas]
        assert list(data[f"{side}_files"]) == names == sorted(names)
        assert data[f"{side}_images"].shape == (25, SIZE, SIZE, 3)
        assert data[f"{side}_images"].dtype == np.uint8
        assert data[f"{side}_landmarks"].shape == (25, 68, 2)
        assert data[f"{side}_landmarks"].dtype == np.float32
        for key in MASKS:
            assert data[f"{side}_{key}"].shape == (25, SIZE, SIZE)
            assert data[f"{side}_{key}"].dtype == np.uint8
    metas = scan_folder(faces[0])
    samples = [load_sample(m, SampleSpec(SIZE)) for m in metas]
    np.testing.assert_array_equal(data["a_images"], np.stack([s["image"] for s in samples]))
    np.testing.assert_array_equal(data["a_mask_eye"], np.stack([s["mask_eye"] for s in samples]))
    np.testing.assert_array_equal(data["a_landmarks"],
                                  np.stack([s["landmarks"] for s in samples]))


def test_grid_layout_and_unaugmented_rows(faces, plain):
    out, data = plain
    for side in "ab":
        grid = cv2.imread(str(out / f"samples_{side}.png"))
        assert grid.shape == (3 * TILE, 4 * TILE, 3)  # input/target/masks x (labels + 3 faces)
    grid = cv2.imread(str(out / "samples_a.png"))
    first = pairs.side_face_indices(0, 0, 25, np.array([0]))[0]  # the stream's first face
    expected = cv2.resize(data["a_images"][first], (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    input_tile, target_tile = grid[:TILE, TILE:2 * TILE], grid[TILE:2 * TILE, TILE:2 * TILE]
    np.testing.assert_array_equal(target_tile, expected)
    np.testing.assert_array_equal(input_tile, expected)  # --no-augment: no warp either
    masked = grid[2 * TILE:, TILE:2 * TILE].astype(int)
    assert np.abs(masked - expected).max() > 50  # the masks row is tinted


def test_augmentation_is_on_by_default(faces, tmp_path):
    assert _run(faces, tmp_path, "--num", "2") == 0
    grid = cv2.imread(str(tmp_path / "samples_b.png")).astype(int)
    assert grid.shape == (3 * TILE, 3 * TILE, 3)
    assert not (tmp_path / "samples.npz").exists()
    assert np.abs(grid[:TILE, TILE:] - grid[TILE:2 * TILE, TILE:]).mean() > 1  # input is warped


def test_masks_follow_the_loss_options(faces, plain, tmp_path):
    data = _npz(faces, tmp_path, "--config.loss.mask-type", "components",
                "--config.loss.eye-multiplier", "1")
    assert "a_mask_eye" not in data and "b_mask_eye" not in data
    assert "a_mask_mouth" in data and "a_mask_face" in data
    meta = scan_folder(faces[0])[3]
    components = load_sample(meta, SampleSpec(SIZE, mask_type="components"))["mask_face"]
    np.testing.assert_array_equal(data["a_mask_face"][3], components)
    assert not np.array_equal(data["a_mask_face"], plain[1]["a_mask_face"])  # not extended


def test_coverage_override_changes_the_crops(faces, plain, tmp_path):
    data = _npz(faces, tmp_path, "--config.data.coverage", "75")
    meta = scan_folder(faces[1])[0]
    np.testing.assert_array_equal(data["b_images"][0],
                                  load_sample(meta, SampleSpec(SIZE, coverage=75.0))["image"])
    assert np.abs(data["b_images"].astype(int) - plain[1]["b_images"]).mean() > 5


def test_bad_folders_and_faces_are_reported_like_training(faces, data_dir, tmp_path, capsys):
    few = (data_dir / "faces" / "A", data_dir / "faces" / "B")
    assert _run(few, tmp_path / "out", "--npz") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "only 4" in errors[0] and "at least 25" in errors[0]
    broken = tmp_path / "A"
    shutil.copytree(faces[0], broken)
    (broken / "zz_broken.png").write_bytes(b"not a png")
    assert _run((broken, faces[1]), tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "\nerror: " in "\n" + err and "zz_broken.png" in err
    assert not (tmp_path / "out" / "samples_a.png").exists()


@pytest.mark.parametrize("args", [["--num", "0"], ["--seed", "x"], ["--out"]])
def test_bad_tool_options_are_refused(faces, args, capsys):
    assert main(["--config", EXPERIMENT, "--faces-a", str(faces[0]), "--faces-b", str(faces[1]),
                 *args]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_benchmark_data_result_line_format():
    path = ROOT / "scripts" / "benchmark_data.py"
    spec = importlib.util.spec_from_file_location("benchmark_data_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    line = module.result_line(312.34567, 2.0)
    assert line == "faces_per_second_per_worker=312.346 step_examples_per_second=2.000"
    match = re.fullmatch(r"faces_per_second_per_worker=(\S+) step_examples_per_second=(\S+)",
                         line)
    assert match and float(match[1]) == pytest.approx(312.346) and float(match[2]) == 2.0
