"""Face folders: scanning, folder-level errors, and per-sample loading."""

import dataclasses
import pathlib
import pickle
import shutil
import zlib

import cv2
import numpy as np
import pytest

from fsjax.data import faces
from fsjax.data.faces import DataError, SampleSpec, load_sample, scan_faces, scan_folder
from fsjax.data.header import FaceFileError, encode_face_png, read_header


def _copy_faces(src: pathlib.Path, dst: pathlib.Path, rename=lambda name: name) -> pathlib.Path:
    dst.mkdir(exist_ok=True)
    for path in sorted(src.glob("*.png")):
        shutil.copy(path, dst / rename(path.name))
    return dst


def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match=f"^{tmp_path / 'nope'}: face folder does not exist"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=f"^{tmp_path}: no .png face files"):
        scan_folder(tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        scan_folder(tmp_path / "notes.txt")


def test_too_few_faces(data_dir):
    folder = data_dir / "faces" / "A"
    with pytest.raises(DataError, match=f"^{folder}: only 4 usable faces; at least 25"):
        scan_folder(folder)
    metas = scan_folder(folder, min_faces=4)
    assert [m.path.name for m in metas] == [f"synth_A_000{i}_0.png" for i in range(4)]
    assert all(m.png_size == 256 and m.landmarks.shape == (68, 2) for m in metas)


def test_upper_case_png_counted_and_loaded(data_dir, tmp_path):
    upper = {"synth_A_0001_0.png", "synth_A_0003_0.png"}
    folder = _copy_faces(data_dir / "faces" / "A", tmp_path / "side",
                         lambda n: n[:-4] + ".PNG" if n in upper else n)
    (folder / "thumbs.jpg").write_bytes(b"not a face")
    metas = scan_folder(folder, min_faces=4)
    names = [m.path.name for m in metas]
    assert names == ["synth_A_0000_0.png", "synth_A_0001_0.PNG", "synth_A_0002_0.png",
                     "synth_A_0003_0.PNG"]
    sample = load_sample(metas[1], SampleSpec(size=64))
    assert sample["image"].shape == (64, 64, 3)


def test_bad_file_named_before_training(data_dir, tmp_path):
    folder = _copy_faces(data_dir / "faces" / "B", tmp_path / "side")
    bad = folder / "synth_B_0002_0.png"
    bad.write_bytes(bad.read_bytes()[:5000])
    with pytest.raises(FaceFileError, match=f"^{bad}: truncated PNG"):
        scan_folder(folder, min_faces=1)
    plain = folder / "zz_plain.png"
    plain.write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    with pytest.raises(FaceFileError, match=f"1 more bad files in this folder:\n  {plain}: "
                                            "not a Faceswap-extracted face"):
        scan_folder(folder, min_faces=1)
    progress = []
    scan = scan_faces(folder, on_bad="skip", min_faces=1,
                      progress=lambda done, total: progress.append((done, total)))
    assert [m.path.name for m in scan.faces] == ["synth_B_0000_0.png", "synth_B_0001_0.png",
                                                 "synth_B_0003_0.png"]
    assert [(p.name, reason.split(" (")[0]) for p, reason in scan.skipped] == [
        ("synth_B_0002_0.png", "truncated PNG"), ("zz_plain.png", "not a Faceswap-extracted face")]
    assert progress == [(i, 5) for i in range(1, 6)]
    with pytest.raises(DataError, match="only 3 usable faces \\(2 bad files skipped\\)"):
        scan_faces(folder, on_bad="skip", min_faces=4)


def test_needs_68_landmarks(data_dir, tmp_path):
    src = data_dir / "faces" / "A" / "synth_A_0000_0.png"
    head = read_header(src)
    head["alignments"]["landmarks_xy"] = head["alignments"]["landmarks_xy"][17:]  # 51 points
    path = tmp_path / "f.png"
    path.write_bytes(encode_face_png(np.zeros((256, 256, 3), np.uint8), head))
    with pytest.raises(FaceFileError, match=f"^{path}: has 51-point landmarks; .* 68-point"):
        faces.read_face_meta(path)


def test_load_sample_matches_faceswap(data_dir):
    ref = np.load(data_dir / "crops_subset.npz")
    metas = scan_folder(data_dir / "faces" / "A", min_faces=4)
    spec = SampleSpec(size=64, centering="face", coverage=100.0, vertical_offset=10.0,
                      mask_type="components")
    for face in ref["pixel_faces"]:
        sample = load_sample(metas[face], spec)
        assert set(sample) == {"image", "landmarks", "mask_face", "mask_eye", "mask_mouth"}
        tag = "face_100_64_voff10"
        np.testing.assert_array_equal(sample["image"], ref[f"{tag}.image"][face])
        np.testing.assert_array_equal(sample["mask_face"], ref[f"{tag}.mask_components"][face])
        np.testing.assert_array_equal(sample["mask_eye"], ref[f"{tag}.mask_eye"][face])
        np.testing.assert_array_equal(sample["mask_mouth"], ref[f"{tag}.mask_mouth"][face])
        np.testing.assert_allclose(sample["landmarks"], ref[f"{tag}.landmarks"][face], atol=1e-4)
        legacy = load_sample(metas[face], dataclasses.replace(
            spec, centering="legacy", coverage=62.5, vertical_offset=0.0, size=128,
            mask_type="extended"))
        np.testing.assert_array_equal(legacy["image"], ref["legacy_62.5_128.image"][face])
        np.testing.assert_array_equal(legacy["mask_face"],
                                      ref["legacy_62.5_128.mask_extended"][face])


def test_sample_keys_follow_spec(data_dir):
    meta = scan_folder(data_dir / "faces" / "B", min_faces=4)[0]
    bare = load_sample(meta, SampleSpec(size=32, mask_type="none", eye_mask=False,
                                        mouth_mask=False))
    assert set(bare) == {"image", "landmarks"}
    assert bare["image"].dtype == np.uint8 and bare["landmarks"].dtype == np.float32
    mouth_only = load_sample(meta, SampleSpec(size=32, eye_mask=False))
    assert set(mouth_only) == {"image", "landmarks", "mask_face", "mask_mouth"}
    for key in ("mask_face", "mask_mouth"):
        assert mouth_only[key].shape == (32, 32) and mouth_only[key].dtype == np.uint8
        assert mouth_only[key].max() == 255


def test_spec_validation():
    with pytest.raises(ValueError, match="centering"):
        SampleSpec(size=64, centering="body")
    with pytest.raises(ValueError, match="mask_type"):
        SampleSpec(size=64, mask_type="bisenet")  # not a Faceswap mask name
    with pytest.raises(ValueError, match="coverage"):
        SampleSpec(size=64, coverage=0)
    with pytest.raises(ValueError, match="size"):
        SampleSpec(size=0)


def test_meta_pickles_for_spawned_workers(data_dir):
    meta = scan_folder(data_dir / "faces" / "A", min_faces=4)[2]
    spec = SampleSpec(size=64)
    meta2, spec2 = pickle.loads(pickle.dumps((meta, spec)))
    assert spec2 == spec
    first, second = load_sample(meta, spec), load_sample(meta2, spec2)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    err = pickle.loads(pickle.dumps(DataError("/f", "no faces")))
    assert str(err) == "/f: no faces"


def test_changed_file_detected(data_dir, tmp_path):
    folder = _copy_faces(data_dir / "faces" / "A", tmp_path / "side")
    meta = scan_folder(folder, min_faces=4)[0]
    head = read_header(meta.path)
    meta.path.write_bytes(encode_face_png(np.zeros((128, 128, 3), np.uint8), head))
    with pytest.raises(FaceFileError, match="was 256 px when scanned"):
        load_sample(meta, SampleSpec(size=64))


def _with_stored_mask(src, dst, name, mask, centering):
    """Copy a face file, adding a stored NN mask entry to its header."""
    head = read_header(src)
    head["alignments"]["mask"] = {name: {
        "mask": zlib.compress(mask.tobytes()), "affine_matrix": np.eye(3).tolist(),
        "interpolator": 1, "stored_size": mask.shape[0], "stored_centering": centering}}
    dst.write_bytes(encode_face_png(cv2.imread(str(src)), head))


def test_stored_mask_is_loaded_and_processed(data_dir, tmp_path):
    folder = tmp_path / "side"
    folder.mkdir()
    mask = np.zeros((128, 128), np.uint8)
    mask[32:96, 40:88] = 255
    for src in sorted((data_dir / "faces" / "A").glob("*.png")):
        _with_stored_mask(src, folder / src.name, "vgg-clear", mask, "face")
    metas = scan_faces(folder, min_faces=4, stored_mask="vgg-clear").faces
    spec = SampleSpec(size=64, mask_type="vgg-clear", mask_blur_kernel=0, mask_threshold=0)
    sample = load_sample(metas[0], spec)
    # Face centering, full coverage: the stored face mask is only resized to 64 px.
    expected = cv2.resize(mask, (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(sample["mask_face"], expected)
    assert set(sample) == {"image", "landmarks", "mask_face", "mask_eye", "mask_mouth"}
    with pytest.raises(FaceFileError, match="has no stored 'bisenet-fp_face' mask \\(it has: "
                                            "vgg-clear\\)"):
        scan_faces(folder, min_faces=4, stored_mask="bisenet-fp_face")


@pytest.mark.parametrize("kind, convert, reason", [
    ("grey", lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), "is a grey image"),
    ("16-bit", lambda im: im.astype(np.uint16) * 257, "is a 16-bit image"),
    ("rgba", lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2BGRA), "is an RGBA image"),
])
def test_non_faceswap_pixel_formats_are_found_by_the_scan(data_dir, tmp_path, kind, convert,
                                                           reason):
    folder = _copy_faces(data_dir / "faces" / "A", tmp_path / "side")
    bad = folder / "synth_A_0001_0.png"
    head = read_header(bad)
    png = cv2.imencode(".png", convert(cv2.imread(str(bad))))[1].tobytes()
    # Re-insert the faceswap header before the first IDAT, as Faceswap's writer places it.
    itxt = encode_face_png(cv2.imread(str(bad)), head)
    chunk = itxt[itxt.index(b"iTXt") - 4:itxt.index(b"IDAT") - 4]
    at = png.index(b"IDAT") - 4
    bad.write_bytes(png[:at] + chunk + png[at:])
    with pytest.raises(FaceFileError, match=f"^{bad}: {reason}"):
        scan_folder(folder, min_faces=1)
    assert len(scan_faces(folder, on_bad="skip", min_faces=1).faces) == 3
