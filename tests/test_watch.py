"""What a user watches: the timelapse, the status line's ETA, TensorBoard read back with
TensorBoard's own reader, the preview's scale and TensorBoard image, and the session analysis."""

import dataclasses
import re
import shutil
import struct

import cv2
import numpy as np
import pytest
from tiny_model import loop_config

from fsjax.config import OptimizerConfig
from fsjax.training import loop

STATUS = re.compile(r"total (\d+)\] Loss A: ([\d.]+), Loss B: ([\d.]+) \| ([\d.]+) EG/s")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from fsjax.data.demo import write_demo_faces

    return write_demo_faces(tmp_path_factory.mktemp("demo"), count=26, size=128, seed=8)


def _accumulator(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _frame_of(data, tag, step):
    """Where the event-file frame of `tag` at `step` starts."""
    from tensorboardX.proto import event_pb2

    at = 0
    while at < len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
        if event.step == step and any(v.tag == tag for v in event.summary.value):
            return at
        at += 16 + length
    raise AssertionError(f"no {tag} at step {step}")


def _with(config, **train):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **train))


def test_status_line_has_the_time_left_and_the_loss_scale():
    from fsjax.training.logs import duration, status_line, time_left

    assert time_left(0, 5.0, 10) is None  # nothing measured yet
    assert time_left(4, 2.0, 10) == 5.0
    assert duration(3 * 86_400 + 3_723) == "3d 01:02:03" and duration(59) == "00:00:59"
    line = status_line(61, 12, 112, 0.123456, 0.2, 9.5, eta=time_left(10, 5.0, 888))
    assert line == ("[00:01:01] [#00012 | total 00112] Loss A: 0.12346, Loss B: 0.20000 | "
                    "9.50 EG/s | ETA 00:07:24")
    assert status_line(1, 1, 1, 0.1, 0.1, 0.0, 32768.0).endswith("EG/s | loss scale 32768")


def test_timelapse_writes_the_same_faces_at_every_save(tmp_path, faces, tiny_loop, capsys):
    from fsjax.data.faces import list_face_files, load_sample, read_face_meta
    from fsjax.training.inputs import sample_spec

    side_b = tmp_path / "tl_b"
    side_b.mkdir()
    for path in list_face_files(faces[1])[:3]:  # 3 faces on B: 3 per side are shown
        shutil.copy(path, side_b)
    model_dir, frames = tmp_path / "m", tmp_path / "frames"
    config = _with(loop_config(model_dir, faces, iterations=5, save_interval=2),
                   timelapse_input_a=faces[0], timelapse_input_b=side_b,
                   timelapse_output=frames, timelapse_video=True)
    loop.train_and_evaluate(config)
    printed = capsys.readouterr().out
    assert "Timelapse: 3 faces per side, a frame at every save in" in printed
    names = sorted(p.name for p in frames.glob("*.png"))
    # Saves at session iterations 1, 2, 4 and the exit at 5; `<unix time>_<iteration>.png`.
    assert [int(n[:-4].split("_")[1]) for n in names] == [1, 2, 4, 5]
    images = [cv2.imread(str(frames / n)) for n in names]
    size = 64
    header = int(size / 4.5)
    assert {im.shape for im in images} == {(header + 2 * size, 12 * size, 3)}  # 2 rows x 12
    # Column A holds the first faces of the folder in name order, the same in every frame...
    spec = sample_spec(config, 64)
    sample = load_sample(read_face_meta(list_face_files(faces[0])[0]), spec)
    assert sample["image"].shape == (64, 64, 3)
    # Outside the face mask the preview tints with red at 30 % (data.md 8.1).
    outside = 0.3 * (1.0 - sample["mask_face"][..., None] / 255.0)
    expected = sample["image"] * (1.0 - outside) + np.array([0, 0, 255.0]) * outside
    tile = images[0][header:header + size, :size].astype(np.float32)
    assert np.abs(tile - expected).max() <= 1.0
    for image in images[1:]:
        np.testing.assert_array_equal(image[header:, :size], images[0][header:, :size])
    # ... while the model's columns change as it trains.
    assert np.abs(images[-1][header:, size:3 * size].astype(int)
                  - images[0][header:, size:3 * size]).mean() > 0.5
    video = cv2.VideoCapture(str(frames / "timelapse.mp4"))
    count = 0
    while video.read()[0]:
        count += 1
    assert count == 4 and f"Timelapse video: {frames / 'timelapse.mp4'}" in printed

    # A resume keeps adding frames: session iteration 1 (total 6) and the exit (7).
    loop.train_and_evaluate(_with(config, iterations=7, timelapse_video=False))
    assert [int(p.name[:-4].split("_")[1]) for p in sorted(frames.glob("*.png"))] == [
        1, 2, 4, 5, 6, 7]


def test_timelapse_faces_are_checked_before_training(tmp_path, faces, tiny_loop):
    from fsjax.data.faces import FaceFileError

    bad = tmp_path / "tl_a"
    bad.mkdir()
    (bad / "0000_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    model_dir = tmp_path / "m"
    config = _with(loop_config(model_dir, faces, iterations=2), timelapse_input_a=bad,
                   timelapse_input_b=faces[1])
    with pytest.raises(FaceFileError, match="0000_broken.png"):
        loop.train_and_evaluate(config)
    assert not model_dir.exists()  # nothing written: the faces are read before the model


def test_join_frames_makes_an_mp4_and_a_gif(tmp_path):
    from PIL import Image

    from fsjax.tools import timelapse as tool

    for i in range(3):  # odd sides, and one frame of another size (another face count)
        shape = (51, 77, 3) if i < 2 else (37, 77, 3)
        cv2.imwrite(str(tmp_path / f"17000000{i:02d}_{i:07d}.png"), np.full(shape, 60 * i,
                                                                             np.uint8))
    assert tool.main([str(tmp_path), "--fps", "5"]) == 0
    video = cv2.VideoCapture(str(tmp_path / "timelapse.mp4"))
    shapes = []
    while (frame := video.read())[0]:
        shapes.append(frame[1].shape)
    assert shapes == [(52, 78, 3)] * 3
    assert tool.main([str(tmp_path), "--output", str(tmp_path / "t.gif")]) == 0
    with Image.open(tmp_path / "t.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (78, 52)
    assert tool.main([str(tmp_path / "none")]) == 1
    assert tool.main([str(tmp_path), "--output", str(tmp_path / "t.avi")]) == 1


def test_tensorboard_read_back_and_the_analysis_of_the_run(tmp_path, faces, tiny_loop, capsys):
    """TensorBoard's own reader: every iteration's tags at the total iteration, the values the
    status line prints, the steps going on across a resume, and the preview image. Then the
    session table and loss graph of that folder."""
    model_dir = tmp_path / "m"
    optimizer = OptimizerConfig(gradient_clipping="autoclip")
    config = _with(loop_config(model_dir, faces, optimizer, iterations=4, save_interval=3,
                               no_logs=False), write_image=True, preview_to_tensorboard=True,
                   preview_scale=50)
    loop.train_and_evaluate(config)
    first = capsys.readouterr().out
    loop.train_and_evaluate(_with(config, iterations=6, batch_size=3))
    second = capsys.readouterr().out
    logs = model_dir / "original_logs"
    one, two = _accumulator(logs / "session_1" / "train"), _accumulator(logs / "session_2" /
                                                                         "train")
    for tag in ("batch_total", "batch_face_A", "batch_face_B", "batch_learning_rate",
                "batch_grad_norm", "batch_clip_threshold"):
        assert [e.step for e in one.Scalars(tag)] == [1, 2, 3, 4], tag
        assert [e.step for e in two.Scalars(tag)] == [5, 6], tag
    assert all(e.value == pytest.approx(5e-5) for e in one.Scalars("batch_learning_rate"))
    for events, printed in ((one, first), (two, second)):
        face_a = {e.step: e.value for e in events.Scalars("batch_face_A")}
        face_b = {e.step: e.value for e in events.Scalars("batch_face_B")}
        speed = {e.step: e.value for e in events.Scalars("batch_examples_per_second")}
        lines = STATUS.findall(printed)
        assert len(lines) == len(face_a)
        for step, loss_a, loss_b, rate in lines:
            step = int(step)
            assert abs(face_a[step] - float(loss_a)) <= 5e-6
            assert abs(face_b[step] - float(loss_b)) <= 5e-6
            if float(rate):  # the first line of a session has no measured speed yet
                assert abs(speed[step] - float(rate)) <= 0.005
        assert "ETA 00:" in printed
    # The preview at 50 %: in the file and in TensorBoard at each save's iteration.
    preview = cv2.imread(str(model_dir / "training_preview.png"))
    assert preview.shape == (round((14 + 7 * 64) / 2), 6 * 64, 3)
    assert [(i.step, i.width, i.height) for i in one.Images("preview")] == [
        (1, 6 * 64, round((14 + 7 * 64) / 2)), (3, 384, 231), (4, 384, 231)]
    assert [i.step for i in two.Images("preview")] == [5, 6]

    from fsjax.tools import analyse

    before = {p: p.stat().st_mtime_ns for p in model_dir.rglob("*") if p.is_file()}
    graph = tmp_path / "loss.png"
    assert analyse.main([str(model_dir), "--graph", str(graph), "--log-scale",
                         "--csv", str(tmp_path / "t.csv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"Model 'original' in {model_dir}: 6 iterations in 2 sessions"
    assert printed[1].split() == ["Session", "Start", "End", "Elapsed", "Batch", "Iterations",
                                  "EG/s", "Loss", "A", "Loss", "B"]
    rows = [line.split() for line in printed[2:5]]
    for row, sid, batch, iterations, events in zip(rows, (1, 2), (2, 3), (4, 2), (one, two),
                                                   strict=False):
        assert (row[0], row[6], row[7]) == (str(sid), str(batch), str(iterations))
        for column, tag in ((9, "batch_face_A"), (10, "batch_face_B")):
            assert float(row[column]) == pytest.approx(
                np.mean([e.value for e in events.Scalars(tag)]), abs=6e-6)
    assert rows[2][0] == "Total" and rows[2][6:8] == ["2,3", "6"]
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("Session,Start,End")
    image = cv2.imread(str(graph))
    assert image.shape == (600, 1200, 3) and image.std() > 10
    # Read-only: nothing in the folder changed, and no lock was taken.
    assert {p: p.stat().st_mtime_ns for p in model_dir.rglob("*") if p.is_file()} == before


def test_analyse_reads_faceswap_folders_and_a_log_being_written(tmp_path, faceswap_dir,
                                                                 capsys):
    from fsjax.tools import analyse, events

    # Faceswap 3 (simple_value scalars, `batch_face_A`) and Faceswap 2 (tensor scalars,
    # `batch_face_a_0`... and `batch_mask_a`); the fixtures trained 2 and 3 iterations at batch 4.
    for folder, name, iterations in (("models/dfl_sae_df_tiny", "dfl_sae", 2),
                                     ("models/phaze_a_tiny_gblock", "phaze_a", 2),
                                     ("legacy_h5/dfl_sae_liae", "dfl_sae", 3)):
        model_dir = faceswap_dir / folder
        assert analyse.main([str(model_dir), "--graph", str(tmp_path / "g.png")]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert printed[0] == f"Model '{name}' in {model_dir}: {iterations} iterations in 1 sessions"
        row = printed[2].split()
        assert (row[0], row[6], row[7]) == ("1", "4", str(iterations))
        logs = next((model_dir / f"{name}_logs" / "session_1" / "train").iterdir())
        scalars = events.read_scalars(logs)
        side_a = [sum(s.values[i] for tag, s in scalars.items()
                      if re.match(r"batch_(face|mask)_a", tag, re.I)) for i in range(iterations)]
        assert float(row[9]) == pytest.approx(np.mean(side_a), abs=6e-6)
        assert cv2.imread(str(tmp_path / "g.png")) is not None
    # Faceswap 3's logs hold the per-iteration total as `batch_total`: A + B.
    fs3 = events.read_folder(faceswap_dir / "models/dfl_sae_df_tiny/dfl_sae_logs/session_1/train")
    np.testing.assert_allclose(fs3["batch_total"].values, np.add(fs3["batch_face_A"].values,
                                                                 fs3["batch_face_B"].values),
                               rtol=1e-6)

    # A log that a run is writing may end in half a record: what is complete is read.
    copy = tmp_path / "live"
    shutil.copytree(faceswap_dir / "models/dfl_sae_df_tiny", copy)
    log = next((copy / "dfl_sae_logs" / "session_1" / "train").iterdir())
    data = log.read_bytes()
    log.write_bytes(data[:_frame_of(data, "batch_total", step=2) + 20])
    assert analyse.main([str(copy)]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[7] == "1"
    log.write_bytes(data[:40] + b"\xff" * 200)
    assert analyse.main([str(copy)]) == 1
    assert "not a TensorBoard event file" in capsys.readouterr().err
    assert analyse.main([str(tmp_path / "nothing")]) == 1


def test_preview_marks_the_learned_mask_and_scales():
    """With a learned mask the prediction columns are tinted outside the model's mask, the
    original columns outside the face mask; the preview scale resizes the whole image."""
    import flax.linen as nn
    import jax.numpy as jnp

    from fsjax.training.preview import PreviewWriter, scale_image

    class Masked(nn.Module):  # reconstructs its input; its mask keeps the left half only
        @nn.compact
        def __call__(self, face_a, face_b):
            mask = jnp.zeros(face_a.shape[:3] + (1,)).at[:, :, :32].set(1.0)
            return {s: {"faces": (f,), "mask": mask} for s, f in (("a", face_a), ("b", face_b))}

    spec_model = type("Spec", (), {"module": Masked(), "input_size": 64, "output_sizes": (64,)})
    grey = np.full((4, 64, 64, 3), 128, np.uint8)
    face_mask = np.full((4, 64, 64, 1), 255, np.uint8)  # the whole crop is face
    batch = {s: {"input": grey, "target": grey, "mask_face": face_mask} for s in "ab"}
    image = PreviewWriter(batch, spec_model).render({})
    header = int(64 / 4.5)
    assert image.shape == (header + 2 * 64, 12 * 64, 3)  # 4 faces per side: 2 rows
    body = image[header:].astype(int)
    for column in range(12):
        tile = body[:64, column * 64:(column + 1) * 64]
        assert np.abs(tile[:, :32] - 128).max() <= 1  # inside both masks: untouched
        if column % 3:  # A > A, A > B, B > B, B > A: the learned mask's right half is tinted
            np.testing.assert_allclose(tile[:, 40:].mean(axis=(0, 1)),
                                       [0.7 * 128, 0.7 * 128, 0.7 * 128 + 0.3 * 255], atol=1)
        else:
            assert np.abs(tile - 128).max() <= 1
    half = scale_image(image, 50)
    assert half.shape == (round(image.shape[0] / 2), image.shape[1] // 2, 3)
    assert scale_image(image, 100) is image


def test_loop_times_say_where_the_steady_state_goes(tmp_path, faces, tiny_loop):
    """The loop fills in LoopTimes (what scripts/bench_e2e.py reports): a row per iteration
    whose parts fit inside the wall time, and a save per save."""
    from fsjax.training.timing import LoopTimes

    times = LoopTimes()
    loop.train_and_evaluate(loop_config(tmp_path / "m", faces, iterations=6, save_interval=3),
                            times=times)
    # Saves at iterations 1, 3 and 6 (the exit: already saved, nothing more is written).
    assert len(times.rows) == 6 and len(times.saves) == 3
    assert times.first_iteration > 0
    ends = [row["end"] for row in times.rows]
    for before, row in zip(ends, times.rows[1:], strict=False):
        assert row["data"] + row["step"] + row["save"] <= row["end"] - before
    assert [row["save"] > 0 for row in times.rows] == [True, False, True, False, False, True]
    summary = times.summary(2, 4)
    assert summary["iterations"] == 4 and summary["saves"] == 3
    assert summary["examples_per_second"] == pytest.approx(16 / (ends[-1] - ends[1]))
    assert 0 < summary["data_wait_fraction"] + summary["step_fraction"] <= 1
    assert summary["save_seconds"] == pytest.approx(np.mean(times.saves[1:]))
    with pytest.raises(ValueError, match="need more than the 6 skipped"):
        times.summary(6, 4)
