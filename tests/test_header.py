"""Face PNG header: reading Faceswap's own files, writing them back, and every kind of bad file."""

import pathlib
import pickle
import struct
import zlib

import cv2
import numpy as np
import pytest

from fsjax.data import header as hdr
from fsjax.data.header import FaceFileError, decode_image, encode_face_png, read_header


def _real_faces(data_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted((data_dir / "faces").glob("*/*.png"))


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(png):
        length, ctype = struct.unpack_from(">I4s", png, pos)
        out.append((ctype, png[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def _plain_png(size: tuple[int, int] = (16, 16)) -> bytes:
    image = np.full((size[1], size[0], 3), 90, np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def _with_text(text: bytes, size: tuple[int, int] = (16, 16)) -> bytes:
    png = _plain_png(size)
    return png[:33] + hdr.pack_itxt(text) + png[33:]  # right after the 25-byte IHDR chunk


def _header(n_points: int = 68) -> dict:
    rng = np.random.default_rng(0)
    return {"alignments": {"x": 10, "y": 12, "w": 40, "h": 41,
                           "landmarks_xy": rng.uniform(0, 64, (n_points, 2)).astype(np.float32),
                           "mask": {}, "identity": {}},
            "source": {"alignments_version": 2.4, "original_filename": "f_0.png",
                       "face_index": 0, "source_filename": "f.png", "source_is_video": False,
                       "source_frame_dims": (64, 80)}}


def _write(tmp_path: pathlib.Path, data: bytes, name: str = "face.png") -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_reads_real_faceswap_faces(data_dir):
    ref = np.load(data_dir / "crops_subset.npz")["src.landmarks_xy"]
    paths = _real_faces(data_dir)
    assert len(paths) == 8
    for path in paths:
        head = read_header(path)
        assert (head["width"], head["height"]) == (256, 256)
        aln = head["alignments"]
        assert aln["landmarks_xy"].dtype == np.float32 and aln["landmarks_xy"].shape == (68, 2)
        assert aln["mask"] == {} and aln["identity"] == {}
        assert head["source"]["alignments_version"] == 2.4
        assert head["source"]["source_frame_dims"] == (512, 512)
        assert head["source"]["original_filename"] == path.name
    for i in range(4):  # crops.npz's frame landmarks are these headers' landmarks
        lms = read_header(data_dir / "faces" / "A" / f"synth_A_000{i}_0.png")
        np.testing.assert_array_equal(lms["alignments"]["landmarks_xy"], ref[i])


def test_reencoding_reproduces_faceswaps_chunk_bytes(data_dir, tmp_path):
    path = data_dir / "faces" / "A" / "synth_A_0002_0.png"
    original = dict(_chunks(path.read_bytes()))[b"iTXt"]
    image = decode_image(path)
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    png = encode_face_png(image, read_header(path))
    chunks = _chunks(png)
    assert [c[0] for c in chunks[:3]] == [b"IHDR", b"iTXt", b"IDAT"]
    assert chunks[-1][0] == b"IEND"
    assert chunks[1][1] == original  # byte for byte, CRC checked on read below
    assert original.startswith(b"faceswap\x00\x00\x00\x00\x00{'alignments': {'x': ")
    again = _write(tmp_path, png)
    np.testing.assert_array_equal(decode_image(again), image)
    assert read_header(again)["source"] == read_header(path)["source"]


def test_round_trip_with_masks_both_affine_layouts(tmp_path):
    head = _header()
    blob = zlib.compress(np.arange(64, dtype=np.uint8).tobytes())
    head["alignments"]["mask"] = {
        "old_2x3": {"mask": blob, "affine_matrix": [[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]],
                    "interpolator": 1, "stored_size": 8},  # no stored_centering (pre v2.2)
        "new_3x3": {"mask": blob, "affine_matrix": np.eye(3, dtype=np.float32) * 2,
                    "interpolator": 3, "stored_size": 8, "stored_centering": "head"}}
    head["alignments"]["identity"] = {"vggface2": np.linspace(0, 1, 5, dtype=np.float32)}
    out = read_header(_write(tmp_path, encode_face_png(_image(), head)))
    masks = out["alignments"]["mask"]
    np.testing.assert_array_equal(masks["old_2x3"]["affine_matrix"],
                                  [[1, 0, 2], [0, 1, 3], [0, 0, 1]])
    assert masks["old_2x3"]["affine_matrix"].shape == (3, 3)
    assert masks["old_2x3"]["stored_centering"] == "face"
    assert masks["new_3x3"]["stored_centering"] == "head"
    np.testing.assert_array_equal(masks["new_3x3"]["affine_matrix"], np.eye(3) * 2)
    assert zlib.decompress(masks["new_3x3"]["mask"]) == bytes(range(64))
    np.testing.assert_array_equal(out["alignments"]["landmarks_xy"],
                                  head["alignments"]["landmarks_xy"])
    np.testing.assert_allclose(out["alignments"]["identity"]["vggface2"],
                               np.linspace(0, 1, 5), atol=1e-7)
    assert out["source"]["source_frame_dims"] == (64, 80)


def test_tolerates_missing_identity_and_none_frame_dims(tmp_path):
    head = _header()
    del head["alignments"]["identity"]
    del head["alignments"]["mask"]
    head["source"]["source_frame_dims"] = None
    text = repr(hdr._plain(head)).encode()
    out = read_header(_write(tmp_path, _with_text(text)))
    assert out["alignments"]["identity"] == {} and out["alignments"]["mask"] == {}
    assert out["source"]["source_frame_dims"] is None
    assert out["width"] == 16


def _expect(path: pathlib.Path, *fragments: str) -> None:
    with pytest.raises(FaceFileError) as info:
        read_header(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_png_without_header(tmp_path):
    _expect(_write(tmp_path, _plain_png()), "not a Faceswap-extracted face")


def test_not_a_png(tmp_path):
    jpg = cv2.imencode(".jpg", _image())[1].tobytes()
    _expect(_write(tmp_path, jpg), "not a PNG")
    _expect(_write(tmp_path, b"", "empty.png"), "not a PNG")


def test_truncated(data_dir, tmp_path):
    data = (data_dir / "faces" / "B" / "synth_B_0001_0.png").read_bytes()
    _expect(_write(tmp_path, data[: len(data) // 2]), "truncated PNG", "IDAT", "past end")
    _expect(_write(tmp_path, data[:-12], "no_iend.png"), "truncated PNG", "before the IEND")


def test_crc_damage(data_dir, tmp_path):
    data = bytearray((data_dir / "faces" / "A" / "synth_A_0001_0.png").read_bytes())
    data[len(data) // 2] ^= 0x40  # one bit inside the pixel data
    _expect(_write(tmp_path, bytes(data)), "CRC mismatch", "IDAT")


def test_header_text_not_a_literal(tmp_path):
    evil = b"__import__('os').system('touch /tmp/pwned')"
    _expect(_write(tmp_path, _with_text(evil)), "not a Python literal")
    _expect(_write(tmp_path, _with_text(b"{'alignments': {"), "b.png"), "not a Python literal")
    _expect(_write(tmp_path, _with_text(b"[1, 2]"), "c.png"), "not a dict")


def test_oversized_header_refused(tmp_path, monkeypatch):
    path = _write(tmp_path, _with_text(repr(hdr._plain(_header())).encode()))
    monkeypatch.setattr(hdr, "MAX_HEADER_BYTES", 100)
    _expect(path, "byte limit")


@pytest.mark.parametrize("change, fragment", [
    (lambda h: h["alignments"].pop("landmarks_xy"), "no 'landmarks_xy'"),
    (lambda h: h["alignments"].update(landmarks_xy=[[1.0, 2.0]] * 67), "shape (67, 2)"),
    (lambda h: h["alignments"].update(landmarks_xy=[[1.0, 2.0, 3.0]] * 68), "shape (68, 3)"),
    (lambda h: h["alignments"].update(landmarks_xy="nope"), "not a numeric array"),
    (lambda h: h["alignments"].update(landmarks_xy=[[float("nan"), 1.0]] * 68), "NaN"),
    (lambda h: h.pop("alignments"), "no 'alignments'"),
    (lambda h: h["alignments"].pop("w"), "no 'w'"),
    (lambda h: h["alignments"].update(mask={"m": {"mask": b"", "affine_matrix": [[1.0]],
                                                  "interpolator": 1, "stored_size": 8}}),
     "affine_matrix has shape (1, 1)"),
])
def test_bad_schema(tmp_path, change, fragment):
    head = hdr._plain(_header())
    change(head)
    _expect(_write(tmp_path, _with_text(repr(head).encode())), fragment)


def test_non_square_and_undecodable(tmp_path):
    text = repr(hdr._plain(_header())).encode()
    _expect(_write(tmp_path, _with_text(text, size=(32, 16))), "32x16", "square")
    bad = _write(tmp_path, b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "junk.png")
    with pytest.raises(FaceFileError, match=r"junk\.png: cv2 cannot decode"):
        decode_image(bad)
    with pytest.raises(FaceFileError, match="missing.png: cannot read file"):
        read_header(tmp_path / "missing.png")


def test_encode_refuses_bad_input():
    with pytest.raises(ValueError, match="square"):
        encode_face_png(np.zeros((8, 9, 3), np.uint8), _header())
    bad = _header()
    bad["alignments"]["landmarks_xy"] = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match="landmarks_xy has shape"):
        encode_face_png(_image(), bad)


def test_decode_grey_and_16_bit(tmp_path):
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = _write(tmp_path, cv2.imencode(".png", grey)[1].tobytes())
    np.testing.assert_array_equal(decode_image(path), np.repeat(grey[..., None], 3, axis=2))
    deep = (np.arange(48, dtype=np.uint16).reshape(4, 4, 3) * 1365)
    path16 = _write(tmp_path, cv2.imencode(".png", deep)[1].tobytes(), "deep.png")
    expected = (deep.astype(np.float32) / 65535 * 255).astype(np.uint8)
    np.testing.assert_array_equal(decode_image(path16), expected)


def test_error_pickles():
    err = pickle.loads(pickle.dumps(FaceFileError("/x/a.png", "truncated PNG")))
    assert str(err) == "/x/a.png: truncated PNG" and err.path == "/x/a.png"


def test_a_png_declaring_a_huge_image_is_refused_before_decoding(tmp_path, data_dir):
    """A decompression bomb: a small file whose IHDR declares 30000x30000 pixels (inflating it
    would take 2.7 GB per sample). The scan refuses it from the IHDR alone."""
    import zlib

    from fsjax.data.faces import scan_faces

    face = (data_dir / "faces/A/synth_A_0000_0.png").read_bytes()
    ihdr = b"IHDR" + struct.pack(">II", 30000, 30000) + face[24:29]
    bomb = face[:8] + face[8:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + face[33:]
    folder = tmp_path / "faces"
    folder.mkdir()
    path = _write(folder, bomb, "bomb.png")
    _expect(path, "declares 30000x30000 pixels, more than the 8192x8192")
    scan = scan_faces(folder, on_bad="skip", min_faces=0)
    assert scan.faces == [] and [p for p, _ in scan.skipped] == [path]


def test_a_header_at_the_limit_parses_in_bounded_memory(tmp_path, data_dir):
    """The worst header the limit lets through (a literal of tiny elements, just under 1 MiB) is
    parsed and refused under a 1 GiB address-space limit; real headers are far smaller."""
    import subprocess
    import sys

    for path in _real_faces(data_dir):
        text = next(hdr._itxt_text(body, path) for ctype, body in hdr._chunks(
            path.read_bytes(), path) if ctype == b"iTXt")
        assert len(text) < hdr.MAX_HEADER_BYTES // 100
    assert hdr.MAX_HEADER_BYTES <= 1024 * 1024
    worst = b"[" + b"0," * (hdr.MAX_HEADER_BYTES // 2 - 1) + b"]"
    path = _write(tmp_path, _with_text(worst))
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
              "from fsjax.data.header import read_header, FaceFileError\n"
              "try:\n    read_header(sys.argv[1])\nexcept FaceFileError as err:\n"
              "    print(err)\n")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "faceswap header is a list, not a dict" in done.stdout, done.stdout
