"""The built-in demo faces: deterministic, Faceswap's format, two distinct identities, atomic."""

import numpy as np

from fsjax.data import demo
from fsjax.data.faces import SampleSpec, load_sample, scan_folder
from fsjax.data.header import read_header


def test_demo_faces_are_faceswap_faces_with_the_drawn_landmarks(tmp_path):
    folder_a, folder_b = demo.write_demo_faces(tmp_path / "d", count=25, size=128, seed=5)
    metas = scan_folder(folder_a), scan_folder(folder_b)
    assert [len(m) for m in metas] == [25, 25]
    rng = np.random.default_rng(5)
    _, landmarks = demo.draw_face(rng, 0)  # the first face drawn for this seed
    head = read_header(folder_a / "demo_A_0000_0.png")
    np.testing.assert_allclose(head["alignments"]["landmarks_xy"], landmarks, atol=1e-4)
    assert head["width"] == head["height"] == 128
    assert head["source"]["alignments_version"] == 2.4


def test_demo_is_deterministic_and_identities_differ(tmp_path):
    a1, _ = demo.write_demo_faces(tmp_path / "x", count=3, size=128, seed=1)
    a2, _ = demo.write_demo_faces(tmp_path / "y", count=3, size=128, seed=1)
    for f in sorted(a1.glob("*.png")):
        assert f.read_bytes() == (a2 / f.name).read_bytes()
    folder_a, folder_b = demo.write_demo_faces(tmp_path / "z", count=25, size=128, seed=2)
    spec = SampleSpec(size=64)
    means = []
    for folder in (folder_a, folder_b):
        samples = [load_sample(m, spec) for m in scan_folder(folder)]
        # mean colour inside the face mask: the identities' skin and hair differ
        means.append(np.mean([s["image"][s["mask_face"] > 128].mean(axis=0) for s in samples], 0))
    assert np.abs(means[0] - means[1]).max() > 30


def test_existing_set_is_reused_and_partial_set_is_ignored(tmp_path):
    root = tmp_path / "demo"
    folder_a, _ = demo.write_demo_faces(root, count=2, size=128)
    stamp = (folder_a / "demo_A_0000_0.png").stat().st_mtime_ns
    demo.write_demo_faces(root, count=2, size=128)
    assert (folder_a / "demo_A_0000_0.png").stat().st_mtime_ns == stamp  # not rewritten
    (root / demo.MARKER).unlink()  # as if the first run had died before finishing
    (root / "A" / "demo_A_0001_0.png").unlink()
    folder_a, _ = demo.write_demo_faces(root, count=2, size=128)
    assert sorted(p.name for p in folder_a.glob("*.png")) == ["demo_A_0000_0.png",
                                                               "demo_A_0001_0.png"]
    assert not (tmp_path / "demo.tmp").exists()
    demo.write_demo_faces(root, count=3, size=128)  # another request regenerates
    assert len(list((root / "B").glob("*.png"))) == 3


def test_default_dir_follows_fsjax_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FSJAX_CACHE", str(tmp_path))
    assert demo.default_demo_dir() == tmp_path / "demo_faces"
