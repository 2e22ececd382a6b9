"""The grain training pipeline: sampling, batch layout, determinism, workers and resume."""

import dataclasses
import json

import numpy as np
import pytest

from fsjax.config import AugmentConfig
from fsjax.data import landmark_warp, pairs, pipeline
from fsjax.data.faces import SampleSpec, load_sample, scan_folder

S = 32
SPEC = SampleSpec(size=S)
STILL = AugmentConfig(
    zoom_amount=0, rotation_range=0, shift_range=0, flip_chance=0, color_lightness=0,
    color_ab=0, color_clahe_chance=0, no_warp=True, no_augment_color=True,
)


@pytest.fixture(scope="module")
def faces(data_dir):
    return (scan_folder(data_dir / "faces" / "A", min_faces=1),
            scan_folder(data_dir / "faces" / "B", min_faces=1))


def _equal(one: dict, two: dict) -> bool:
    return one.keys() == two.keys() and all(
        one[s].keys() == two[s].keys() and all(np.array_equal(one[s][k], two[s][k]) for k in one[s])
        for s in one)


def test_batch_layout(faces):
    ds = pipeline.make_train_dataset(*faces, SPEC, AugmentConfig(), batch_size=3, seed=0)
    batch = ds[0]
    assert set(batch) == {"a", "b"}
    for side in ("a", "b"):
        assert set(batch[side]) == {"input", "target", "mask_face", "mask_eye", "mask_mouth"}
        assert batch[side]["input"].shape == batch[side]["target"].shape == (3, S, S, 3)
        for key in ("mask_face", "mask_eye", "mask_mouth"):
            assert batch[side][key].shape == (3, S, S, 1)
        assert all(v.dtype == np.uint8 for v in batch[side].values())
    bare = SampleSpec(size=S, mask_type="none", eye_mask=False, mouth_mask=False)
    ds = pipeline.make_train_dataset(*faces, bare, AugmentConfig(), batch_size=2, seed=0)
    assert set(ds[1]["b"]) == {"input", "target"}


def test_each_side_sees_every_face_before_a_repeat():
    for num_faces in (5, 3, 1):
        idx = pairs.side_face_indices(7, 0, num_faces, np.arange(6 * num_faces))
        for block in idx.reshape(6, num_faces):
            assert sorted(block) == list(range(num_faces))
    a = pairs.side_face_indices(7, 0, 5, np.arange(40))
    b = pairs.side_face_indices(7, 1, 5, np.arange(40))
    assert not np.array_equal(a, b)  # sides walk their own permutations
    assert not np.array_equal(a, pairs.side_face_indices(8, 0, 5, np.arange(40)))
    assert len({tuple(block) for block in a.reshape(8, 5)}) > 1  # a new order every pass
    # any position can be asked for alone: a pure function of (seed, side, position)
    np.testing.assert_array_equal(pairs.side_face_indices(7, 0, 5, np.array([23, 4])),
                                  a[[23, 4]])


def test_batches_follow_the_side_streams(faces):
    faces_a, faces_b = faces[0], faces[1][:3]  # sides of different sizes
    crops = {side: [load_sample(f, SPEC)["image"] for f in side_faces]
             for side, side_faces in (("a", faces_a), ("b", faces_b))}
    ds = pipeline.make_train_dataset(faces_a, faces_b, SPEC, STILL, batch_size=2, seed=4)
    seen = {"a": [], "b": []}
    for i in range(6):  # 12 pairs: 3 passes over A, 4 over B
        batch = ds[i]
        for side in ("a", "b"):
            np.testing.assert_array_equal(batch[side]["input"], batch[side]["target"])
            for target in batch[side]["target"]:
                matches = [j for j, crop in enumerate(crops[side]) if np.array_equal(crop, target)]
                assert len(matches) == 1
                seen[side].append(matches[0])
    for side_id, (side, n) in enumerate((("a", 4), ("b", 3))):
        np.testing.assert_array_equal(
            seen[side], pairs.side_face_indices(4, side_id, n, np.arange(12)))
        for block in np.reshape(seen[side], (-1, n)):
            assert sorted(block) == list(range(n))


def test_deterministic_by_seed_and_random_access(faces):
    make = lambda seed: pipeline.make_train_dataset(  # noqa: E731
        *faces, SPEC, AugmentConfig(), batch_size=2, seed=seed)
    first, second = make(11), make(11)
    later = second[3]  # out of order on purpose
    assert _equal(first[3], later)
    assert _equal(first[0], second[0])
    assert not np.array_equal(first[3]["a"]["input"], make(12)[3]["a"]["input"])
    assert not np.array_equal(first[0]["a"]["input"], first[1]["a"]["input"])


def test_iterator_matches_dataset_and_resumes(faces):
    args = dict(batch_size=2, seed=5)
    ds = pipeline.make_train_dataset(*faces, SPEC, AugmentConfig(), **args)
    with pipeline.make_train_iter(*faces, SPEC, AugmentConfig(), num_processes=0, pre_fetch=2,
                                  **args) as it:
        got = [next(it) for _ in range(3)]
        state = it.get_state()
        rest = [next(it) for _ in range(2)]
    for i, batch in enumerate(got + rest):
        assert _equal(batch, ds[i])
    assert state == {"version": 1, "seed": 5, "next_sample": 6}
    assert json.loads(json.dumps(state)) == state

    for form in (state, json.dumps(state), json.dumps(state).encode()):
        with pipeline.make_train_iter(*faces, SPEC, AugmentConfig(), num_processes=0,
                                      pre_fetch=1, **args) as resumed:
            next(resumed)  # started elsewhere, then rewound
            resumed.set_state(form)
            assert all(_equal(next(resumed), batch) for batch in rest)
            assert resumed.get_state()["next_sample"] == 10


def test_resume_with_another_batch_size_continues_from_the_same_pair(faces):
    common = dict(seed=5, num_processes=0, pre_fetch=1)
    with pipeline.make_train_iter(*faces, SPEC, STILL, batch_size=4, **common) as it:
        reference = next(it)  # pairs 0..3
    with pipeline.make_train_iter(*faces, SPEC, STILL, batch_size=2, **common) as it:
        it.set_state({"version": 1, "seed": 5, "next_sample": 2})
        tail = next(it)  # pairs 2, 3
    np.testing.assert_array_equal(tail["a"]["target"], reference["a"]["target"][2:])
    np.testing.assert_array_equal(tail["b"]["mask_face"], reference["b"]["mask_face"][2:])


def test_set_state_rejects_foreign_states(faces):
    it = pipeline.make_train_iter(*faces, SPEC, STILL, batch_size=2, seed=5, num_processes=0,
                                  pre_fetch=1)
    with pytest.raises(ValueError, match="seed 6"):
        it.set_state({"version": 1, "seed": 6, "next_sample": 0})
    with pytest.raises(ValueError, match="version"):
        it.set_state({"version": 99, "seed": 5, "next_sample": 0})
    with pytest.raises(ValueError, match="seed"):
        pipeline.make_train_dataset(*faces, SPEC, STILL, batch_size=2, seed=-1)


def test_two_workers_give_the_same_batches_and_resume(faces):
    args = dict(batch_size=2, seed=9)
    ds = pipeline.make_train_dataset(*faces, SPEC, AugmentConfig(), **args)
    with pipeline.make_train_iter(*faces, SPEC, AugmentConfig(), num_processes=2, pre_fetch=2,
                                  **args) as it:
        it.set_state({"version": 1, "seed": 9, "next_sample": 4})  # as saved by a 0-worker run
        got = [next(it) for _ in range(3)]
        assert it.get_state()["next_sample"] == 10
    for i, batch in enumerate(got):
        assert _equal(batch, ds[2 + i])
        assert type(batch["a"]["input"]) is np.ndarray  # plain copies, not shared memory


def test_preview_batch(faces):
    faces_a, faces_b = faces
    preview = pipeline.preview_batch(faces_a, faces_b, SPEC, 3, seed=1)
    crops_a = [load_sample(f, SPEC) for f in faces_a]
    chosen = []
    for image in preview["a"]["target"]:
        chosen += [j for j, c in enumerate(crops_a) if np.array_equal(c["image"], image)]
    assert len(set(chosen)) == 3  # three distinct faces, un-augmented
    np.testing.assert_array_equal(preview["a"]["input"], preview["a"]["target"])
    np.testing.assert_array_equal(preview["a"]["mask_eye"][..., 0],
                                  np.stack([crops_a[j]["mask_eye"] for j in chosen]))
    assert preview["b"]["mask_face"].shape == (3, S, S, 1)
    assert _equal(preview, pipeline.preview_batch(faces_a, faces_b, SPEC, 3, seed=1))
    with pytest.raises(ValueError, match="1..4"):
        pipeline.preview_batch(faces_a, faces_b, SPEC, 5, seed=1)


def test_process_shards_together_make_the_single_process_batch(faces):
    """Multi-host: each process loads its slice; side by side they are the global batch."""
    common = dict(batch_size=4, seed=5, num_processes=0, pre_fetch=1)
    with pipeline.make_train_iter(*faces, SPEC, AugmentConfig(), **common) as whole:
        whole.set_state({"version": 1, "seed": 5, "next_sample": 2})
        expected = [next(whole) for _ in range(2)]
    shards = []
    for index in (0, 1):
        with pipeline.make_train_iter(*faces, SPEC, AugmentConfig(), shard_index=index,
                                      shard_count=2, **common) as it:
            it.set_state({"version": 1, "seed": 5, "next_sample": 2})
            shards.append([next(it) for _ in range(2)])
            assert it.get_state()["next_sample"] == 10  # the position is global
    for i in range(2):
        for side in ("a", "b"):
            for key, value in expected[i][side].items():
                halves = [shards[0][i][side][key], shards[1][i][side][key]]
                assert halves[0].shape[0] == 2
                np.testing.assert_array_equal(np.concatenate(halves), value)
    with pytest.raises(ValueError, match="cannot be split into 3 process shards"):
        pipeline.make_train_iter(*faces, SPEC, AugmentConfig(), shard_index=0, shard_count=3,
                                 **common)


def test_warp_to_landmarks_warps_only_the_input_towards_a_near_face(faces, monkeypatch):
    wtl = AugmentConfig(warp_to_landmarks=True)
    grid = pipeline.make_train_dataset(*faces, SPEC, AugmentConfig(), batch_size=2, seed=3)[0]
    ds = pipeline.make_train_dataset(*faces, SPEC, wtl, batch_size=2, seed=3)
    batch = ds[0]
    # Same draws, so colour, geometry and flip (the target and masks) are unchanged.
    for side in ("a", "b"):
        for key in ("target", "mask_face", "mask_eye"):
            np.testing.assert_array_equal(batch[side][key], grid[side][key])
        assert not np.array_equal(batch[side]["input"], grid[side]["input"])
        changed = np.abs(batch[side]["input"].astype(int) - batch[side]["target"]).mean()
        assert changed > 1.0  # the face really moved
    assert set(batch["a"]) == set(grid["a"])  # landmarks and face index are not in the batch
    compat_spec = dataclasses.replace(SPEC, faceswap_compat=True)
    seen = []
    real_warp = landmark_warp.warp_to_landmarks
    monkeypatch.setattr(landmark_warp, "warp_to_landmarks",
                        lambda *a, **k: seen.append(k["faceswap_compat"]) or real_warp(*a, **k))
    pipeline.make_train_dataset(*faces, compat_spec, wtl, batch_size=2, seed=3)[0]
    assert seen == [True] * 4  # Faceswap's transposed field (landmark_warp tests its direction)
    partners = pairs.Partners.build(*faces, SPEC)
    assert partners.nearest[0].shape == (4, 3)  # 4 faces a side: min(count) - 1 neighbours
    chosen = partners.landmarks_for(0, 2, 0.99)
    assert any(np.array_equal(chosen, partners.landmarks[1][j]) for j in partners.nearest[0][2])


def test_compat_batch_colour_reproduces_faceswaps_clahe_index_zero_quirk(faces):
    """faceswap_compat: when a batch's first face is its only CLAHE draw, nobody gets CLAHE."""
    colour = AugmentConfig(zoom_amount=0, rotation_range=0, shift_range=0, flip_chance=0,
                           color_lightness=0, color_ab=0, no_warp=True)  # CLAHE chance 50 %
    spec = dataclasses.replace(SPEC, faceswap_compat=True)
    augment = pairs.AugmentPair(colour)
    compat = pairs.FaceswapBatchAugment(augment, seed=7, batch_size=1, size=S)
    ds = pipeline.make_train_dataset(*faces, spec, colour, batch_size=1, seed=7)
    found = {"vetoed": 0, "kept": 0}
    for i in range(40):
        draws = compat._draws(i)
        clahe = [d.clahe_grid is not None for d in draws]
        if clahe == [True, False]:  # A0 is the batch's only CLAHE draw: Faceswap skips it
            key = "vetoed"
        elif clahe == [True, True]:
            key = "kept"
        else:
            continue
        found[key] += 1
        no_clahe = dataclasses.replace(colour, color_clahe_chance=0)  # LAB round trip only
        plain = pipeline.make_train_dataset(*faces, SPEC, no_clahe, batch_size=1, seed=7)[i]
        got = ds[i]["a"]["target"]
        if key == "vetoed":
            np.testing.assert_array_equal(got, plain["a"]["target"])
        else:
            assert not np.array_equal(got, plain["a"]["target"])
    assert found["vetoed"] >= 3 and found["kept"] >= 3
