"""The built-in demo faces: Faceswap's format, the drawn landmarks, two distinct identities,
determinism, and a cache that is reused when complete and never used when half written."""

import functools
import os
import pathlib

import numpy as np
import pytest

from fsjax.data import demo, header
from fsjax.data.faces import SampleSpec, load_sample, scan_folder
from fsjax.data.header import read_header

SEED = 5


def _pixel(frame: np.ndarray, point: np.ndarray) -> np.ndarray:
    return frame[int(round(point[1])), int(round(point[0]))].astype(int)


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """25 faces per side (Faceswap's minimum to train), 128 px, written once for this module."""
    return demo.write_demo_faces(tmp_path_factory.mktemp("demo") / "faces", count=25, size=128,
                                 seed=SEED)


def test_written_faces_are_faceswap_faces_with_the_drawn_landmarks(demo_set):
    folder_a, folder_b = demo_set
    assert [len(scan_folder(f)) for f in demo_set] == [25, 25]
    assert sorted(p.name for p in folder_b.iterdir())[:2] == ["demo_B_0000_0.png",
                                                              "demo_B_0001_0.png"]
    for identity, folder in enumerate(demo_set):
        frame, landmarks = demo.draw_face(demo.face_rng(SEED, identity, 7), identity)
        side = "AB"[identity]
        head = read_header(folder / f"demo_{side}_0007_0.png")
        np.testing.assert_allclose(head["alignments"]["landmarks_xy"], landmarks, atol=1e-4)
        box = [head["alignments"][k] for k in ("x", "y", "w", "h")]
        low, high = np.floor(landmarks.min(axis=0)), np.ceil(landmarks.max(axis=0))
        assert box == [*low, *(high - low)]  # the landmarks' bounding box in frame pixels
        assert head["width"] == head["height"] == 128
        assert head["alignments"]["mask"] == {} and head["alignments"]["identity"] == {}
        assert head["source"] == {
            "alignments_version": 2.4, "original_filename": f"demo_{side}_0007_0.png",
            "face_index": 0, "source_filename": f"demo_{side}_0007.png",
            "source_is_video": False, "source_frame_dims": (512, 512)}


def test_landmarks_are_in_ibug_order_and_follow_the_drawing():
    for identity in (0, 1):
        for index in range(4):
            frame, lm = demo.draw_face(demo.face_rng(0, identity, index), identity, 384)
            assert frame.shape == (384, 384, 3) and frame.dtype == np.uint8
            assert lm.shape == (68, 2) and lm.dtype == np.float32
            assert np.all((lm > 0) & (lm < 384))
            # Rotate into the face's own frame (eye line horizontal) to check the layout.
            eyes = lm[36:42].mean(0), lm[42:48].mean(0)
            angle = np.arctan2(*(eyes[1] - eyes[0])[::-1])
            assert abs(np.degrees(angle)) < 20
            c, s = np.cos(-angle), np.sin(-angle)
            up = (lm - lm[30]) @ np.array([[c, -s], [s, c]]).T
            assert up[8, 1] == up[:17, 1].max()  # the chin is the lowest jaw point
            assert up[0, 0] < up[36, 0] < up[39, 0] < up[42, 0] < up[45, 0] < up[16, 0]
            assert up[17:27, 1].max() < up[36:48, 1].min()  # brows above the eyes
            assert up[36:48, 1].max() < up[33, 1] < up[48:68, 1].min()  # nose between
            assert up[48, 0] < up[54, 0] and up[51, 1] < up[57, 1]
            # What is drawn at the landmarks: the eye and lip centres differ from the cheek.
            colour = functools.partial(_pixel, frame)
            cheek = colour(0.5 * (lm[3] + lm[31]))
            assert np.abs(colour(eyes[0]) - cheek).max() > 40
            assert np.abs(colour(lm[[50, 58]].mean(0)) - cheek).max() > 25
            for jaw in (4, 12):  # just outside the jaw line: hair or background, not skin
                outside = lm[jaw] + 0.12 * (lm[jaw] - lm[30])
                assert np.abs(colour(outside) - cheek).max() > 25


def test_drawing_and_writing_are_deterministic_in_the_seed(tmp_path):
    one = demo.draw_face(np.random.default_rng(3), 1)
    two = demo.draw_face(np.random.default_rng(3), 1)
    other = demo.draw_face(np.random.default_rng(4), 1)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert np.abs(one[1] - other[1]).max() > 1.0
    a1, b1 = demo.write_demo_faces(tmp_path / "x", count=2, size=128, seed=1)
    a2, b2 = demo.write_demo_faces(tmp_path / "y", count=2, size=128, seed=1)
    a3, _ = demo.write_demo_faces(tmp_path / "z", count=2, size=128, seed=2)
    for first, second in ((a1, a2), (b1, b2)):
        names = sorted(p.name for p in first.glob("*.png"))
        assert names == sorted(p.name for p in second.glob("*.png")) and len(names) == 2
        for name in names:
            assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (a1 / "demo_A_0000_0.png").read_bytes() != (a3 / "demo_A_0000_0.png").read_bytes()


def test_identities_differ_and_each_varies_in_pose_and_expression(demo_set):
    spec = SampleSpec(size=64, mask_type="components", eye_mask=False, mouth_mask=False)
    means = []
    for folder in demo_set:
        metas = scan_folder(folder)
        samples = [load_sample(m, spec) for m in metas]
        face = [s["image"][s["mask_face"] > 128].mean(axis=0) for s in samples]
        means.append(np.mean(face, axis=0))
        assert np.std(face, axis=0).max() > 3  # lighting and colour vary within an identity
        lms = np.stack([m.landmarks for m in metas])
        roll = np.degrees(np.arctan2(*(lms[:, 45] - lms[:, 36]).T[::-1]))
        assert np.ptp(roll) > 10  # in-plane rotation
        opening = np.linalg.norm(lms[:, 66] - lms[:, 62], axis=1)
        assert (opening < 0.5).any() and (opening > 5).any()  # closed and open mouths
        scale = np.linalg.norm(lms[:, 16] - lms[:, 0], axis=1)
        assert scale.max() / scale.min() > 1.1
    # Fair vs brown skin: the face region differs clearly in every channel.
    assert np.abs(means[0] - means[1]).min() > 30, means


def test_complete_set_is_reused_and_a_different_request_regenerates(tmp_path):
    root = tmp_path / "demo"
    folder_a, folder_b = demo.write_demo_faces(root, count=2, size=128)
    assert (folder_a, folder_b) == (root / "A", root / "B")
    first = folder_a / "demo_A_0000_0.png"
    stamp = first.stat().st_mtime_ns
    os.utime(first, ns=(stamp - 10**9, stamp - 10**9))
    demo.write_demo_faces(root, count=2, size=128)
    assert first.stat().st_mtime_ns == stamp - 10**9  # not rewritten
    demo.write_demo_faces(root, count=3, size=128)  # another count
    assert len(list((root / "B").glob("*.png"))) == 3
    demo.write_demo_faces(root, count=3, size=256)  # another size
    assert read_header(root / "A" / "demo_A_0002_0.png")["width"] == 256
    (root / "B" / "demo_B_0001_0.png").unlink()  # a face lost from a complete set
    demo.write_demo_faces(root, count=3, size=256)
    assert (root / "B" / "demo_B_0001_0.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # nothing left beside it


def test_interrupted_sets_are_never_used(tmp_path, monkeypatch):
    root = tmp_path / "demo"
    calls = []
    real_encode = header.encode_face_png

    def dying_encode(image, meta):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-way
        return real_encode(image, meta)

    monkeypatch.setattr(header, "encode_face_png", dying_encode)
    with pytest.raises(KeyboardInterrupt):
        demo.write_demo_faces(root, count=2, size=128)
    assert list(tmp_path.iterdir()) == []  # neither a half set nor a temporary folder
    monkeypatch.setattr(header, "encode_face_png", real_encode)

    # A run killed outright leaves its temporary folder, and perhaps a markerless set.
    (root / "A").mkdir(parents=True)
    (root / "A" / "demo_A_0000_0.png").write_bytes(b"half")
    dead = tmp_path / ".demo.tmp-dead"
    (dead / "A").mkdir(parents=True)
    os.utime(dead, (1e9, 1e9))
    busy = tmp_path / ".demo.tmp-busy"  # a run still in progress in another process
    busy.mkdir()
    folder_a, _ = demo.write_demo_faces(root, count=2, size=128)
    assert len(scan_folder(folder_a, min_faces=2)) == 2
    assert not dead.exists() and busy.exists()


def test_default_dir_follows_fsjax_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FSJAX_CACHE", str(tmp_path / "cache"))
    assert demo.default_demo_dir() == tmp_path / "cache" / "demo_faces"
    monkeypatch.delenv("FSJAX_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert demo.default_demo_dir() == tmp_path / ".cache" / "fsjax" / "demo_faces"
