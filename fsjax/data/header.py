"""Faceswap face PNGs: the `faceswap` iTXt header (read, validate, write) and pixel decoding.

Faceswap stores each face's alignment data as `repr()` of a Python dict in one uncompressed iTXt
chunk, just before the first IDAT. The text is parsed with `ast.literal_eval` only (never
executed), under a size limit. The reader walks every chunk and checks its CRC so truncated or
damaged files are caught at scan time without decoding any pixels.
"""

from __future__ import annotations

import ast
import os
import pathlib
import struct
import zlib
from typing import Any

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ITXT_KEYWORD = b"faceswap"
# A real header is a few KB (up to ~100 KB with several stored masks and identities); parsing
# costs ~300x the text in memory, so the limit keeps one file's parse near 300 MB.
MAX_HEADER_BYTES = 1024 * 1024
# Far above any extracted face; a PNG declaring more is refused before its pixels are inflated
# (a few MB of PNG can declare 30000x30000 pixels: a decompression bomb).
MAX_FACE_SIDE = 8192
_MAX_CHUNK = 2**31 - 1  # PNG spec limit on a chunk length
_LANDMARK_COUNTS = (4, 51, 68, 98)
_CENTERINGS = ("face", "head", "legacy")

PathLike = str | os.PathLike


class FaceFileError(ValueError):
    """A face file that cannot be used; the message is `"<path>: <problem>"`."""

    def __init__(self, path: PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Keeps the exception picklable across grain's spawned workers.
        return (type(self), (self.path, self.problem))


def _chunks(data: bytes, path: PathLike):
    """Yield (type, body) for every chunk up to and including IEND, checking lengths and CRCs."""
    if data[:8] != PNG_SIGNATURE:
        raise FaceFileError(path, "not a PNG file (bad signature)")
    pos = 8
    while True:
        if pos + 8 > len(data):
            raise FaceFileError(path, "truncated PNG (file ends before the IEND chunk)")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        name = ctype.decode("latin-1")
        if length > _MAX_CHUNK:
            raise FaceFileError(path, f"corrupt PNG (chunk {name!r} at byte {pos} claims "
                                      f"{length} bytes)")
        end = pos + 12 + length
        if end > len(data):
            raise FaceFileError(path, f"truncated PNG (chunk {name} runs past end of file)")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(body, zlib.crc32(ctype)) != crc:
            raise FaceFileError(path, f"damaged PNG (CRC mismatch in chunk {name} at byte {pos})")
        yield ctype, body
        if ctype == b"IEND":
            return
        pos = end


def _itxt_text(body: bytes, path: PathLike) -> bytes | None:
    """The text of a `faceswap` iTXt chunk, or None for another keyword."""
    keyword, sep, rest = body.partition(b"\0")
    if keyword != ITXT_KEYWORD:
        return None
    if not sep or len(rest) < 2:
        raise FaceFileError(path, "malformed faceswap iTXt chunk")
    flag, method = rest[0], rest[1]
    _lang, sep1, rest = rest[2:].partition(b"\0")
    _translated, sep2, text = rest.partition(b"\0")
    if not (sep1 and sep2):
        raise FaceFileError(path, "malformed faceswap iTXt chunk")
    if flag == 0:
        return text
    if flag != 1 or method != 0:
        raise FaceFileError(path, f"faceswap iTXt chunk has unknown compression {flag}/{method}")
    # Faceswap never compresses, but the PNG spec allows it; decompress under the size limit.
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(text, MAX_HEADER_BYTES + 1)
    except zlib.error as err:
        raise FaceFileError(path, f"faceswap iTXt chunk does not decompress ({err})") from err
    if len(out) > MAX_HEADER_BYTES:
        raise FaceFileError(path, f"faceswap header is larger than {MAX_HEADER_BYTES} bytes")
    return out


def _parse_literal(text: bytes, path: PathLike) -> Any:
    if len(text) > MAX_HEADER_BYTES:
        raise FaceFileError(path, f"faceswap header is {len(text)} bytes, larger than the "
                                  f"{MAX_HEADER_BYTES} byte limit")
    try:
        source = text.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FaceFileError(path, f"faceswap header is not UTF-8 text ({err})") from err
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise FaceFileError(path, f"faceswap header is not a Python literal "
                                  f"({type(err).__name__}: {err})") from err


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _landmarks(value: Any, path: PathLike) -> np.ndarray:
    try:
        lms = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as err:
        raise FaceFileError(path, f"landmarks_xy is not a numeric array ({err})") from err
    if lms.ndim != 2 or lms.shape[1] != 2 or lms.shape[0] not in _LANDMARK_COUNTS:
        raise FaceFileError(path, f"landmarks_xy has shape {lms.shape}; expected (N, 2) with N "
                                  f"in {_LANDMARK_COUNTS}")
    if not np.isfinite(lms).all():
        raise FaceFileError(path, "landmarks_xy contains NaN or infinite values")
    return lms


def _affine(value: Any, where: str, path: PathLike) -> np.ndarray:
    try:
        mat = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as err:
        raise FaceFileError(path, f"{where} affine_matrix is not numeric ({err})") from err
    if mat.shape == (2, 3):  # FS2 layout: add the homogeneous row
        mat = np.concatenate([mat, np.array([[0.0, 0.0, 1.0]], np.float32)])
    if mat.shape != (3, 3):
        raise FaceFileError(path, f"{where} affine_matrix has shape {mat.shape}; expected "
                                  "(2, 3) or (3, 3)")
    return mat


def _masks(value: Any, path: PathLike) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise FaceFileError(path, f"alignments 'mask' is a {type(value).__name__}, not a dict")
    out = {}
    for name, entry in value.items():
        where = f"mask {name!r}"
        if not isinstance(entry, dict):
            raise FaceFileError(path, f"{where} is a {type(entry).__name__}, not a dict")
        for key in ("mask", "affine_matrix", "interpolator", "stored_size"):
            if key not in entry:
                raise FaceFileError(path, f"{where} has no {key!r}")
        if not isinstance(entry["mask"], bytes):
            raise FaceFileError(path, f"{where} data is not bytes")
        size = entry["stored_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise FaceFileError(path, f"{where} stored_size {size!r} is not a positive int")
        centering = entry.get("stored_centering", "face")  # absent before alignments v2.2
        if centering not in _CENTERINGS:
            raise FaceFileError(path, f"{where} stored_centering {centering!r} is not one of "
                                      f"{_CENTERINGS}")
        out[name] = {**entry, "affine_matrix": _affine(entry["affine_matrix"], where, path),
                     "stored_centering": centering}
    return out


def _identity(value: Any, path: PathLike) -> dict[str, np.ndarray]:
    if not isinstance(value, dict):
        raise FaceFileError(path, f"alignments 'identity' is a {type(value).__name__}, not a dict")
    out = {}
    for name, vector in value.items():
        try:
            out[name] = np.asarray(vector, dtype=np.float32)
        except (ValueError, TypeError) as err:
            raise FaceFileError(path, f"identity {name!r} is not numeric ({err})") from err
    return out


def _source(value: Any, path: PathLike) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FaceFileError(path, f"header 'source' is a {type(value).__name__}, not a dict")
    out = dict(value)
    dims = out.get("source_frame_dims")
    if dims is not None:
        if (not isinstance(dims, (tuple, list)) or len(dims) != 2
                or not all(isinstance(d, int) for d in dims)):
            raise FaceFileError(path, f"source_frame_dims {dims!r} is not (height, width)")
        out["source_frame_dims"] = tuple(dims)
    return out


def normalise_header(raw: Any, path: PathLike) -> dict[str, Any]:
    """Validate a parsed header dict and bring old layouts to the current one.

    2x3 mask matrices become 3x3, a missing `stored_centering` becomes "face", missing `mask`
    and `identity` become {}, a missing `source` becomes {}; landmarks become float32 (N, 2).
    Unknown keys are kept.
    """
    if not isinstance(raw, dict):
        raise FaceFileError(path, f"faceswap header is a {type(raw).__name__}, not a dict")
    aln = raw.get("alignments")
    if not isinstance(aln, dict):
        raise FaceFileError(path, "faceswap header has no 'alignments' dict")
    for key in ("x", "y", "w", "h"):
        if key not in aln:
            raise FaceFileError(path, f"alignments has no {key!r} (face box)")
        if not _number(aln[key]):
            raise FaceFileError(path, f"alignments {key!r} is {aln[key]!r}, not a number")
    if "landmarks_xy" not in aln:
        raise FaceFileError(path, "alignments has no 'landmarks_xy'")
    alignments = {**aln,
                  "landmarks_xy": _landmarks(aln["landmarks_xy"], path),
                  "mask": _masks(aln.get("mask", {}), path),
                  "identity": _identity(aln.get("identity", {}), path)}
    out = {key: val for key, val in raw.items() if key not in ("alignments", "source")}
    out["alignments"] = alignments
    out["source"] = _source(raw.get("source", {}), path)
    return out


def read_header(path: PathLike) -> dict[str, Any]:
    """Read and validate the Faceswap header of a face PNG without decoding its pixels.

    Args:
        path: the PNG file.

    Returns:
        {"width", "height"} from IHDR plus the normalised {"alignments", "source"} (see
        `normalise_header`).

    Raises:
        FaceFileError: unreadable, not a PNG, truncated, CRC damage, no/invalid faceswap header,
            or a non-square image.
    """
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as err:
        raise FaceFileError(path, f"cannot read file ({err.strerror or err})") from err
    size = None
    text = None
    for ctype, body in _chunks(data, path):
        if size is None:
            if ctype != b"IHDR" or len(body) != 13:
                raise FaceFileError(path, "corrupt PNG (first chunk is not a valid IHDR)")
            size = struct.unpack(">II", body[:8])
            if max(size) > MAX_FACE_SIDE:
                raise FaceFileError(path, f"declares {size[0]}x{size[1]} pixels, more than the "
                                          f"{MAX_FACE_SIDE}x{MAX_FACE_SIDE} any extracted face "
                                          "has (a decompression bomb?)")
            _check_pixel_format(body[8], body[9], path)
        elif ctype == b"iTXt" and text is None:
            text = _itxt_text(body, path)
    if text is None:
        raise FaceFileError(path, "not a Faceswap-extracted face (no 'faceswap' iTXt header)")
    width, height = size
    if width != height or width == 0:
        raise FaceFileError(path, f"image is {width}x{height}; Faceswap faces are square")
    header = normalise_header(_parse_literal(text, path), path)
    return {"width": width, "height": height, **header}


_COLOUR_TYPES = {0: "a grey image", 3: "a palette image", 4: "a grey image with alpha",
                 6: "an RGBA image (it has an alpha channel)"}


def _check_pixel_format(bit_depth: int, colour_type: int, path: PathLike) -> None:
    """Faceswap's extract writes 8-bit, 3-channel colour PNGs; anything else was changed since.

    Such a file could be converted, but it is not the face Faceswap extracted, so it is reported
    (and skipped or refused, as `data.bad_faces` says) like any other bad face file.
    """
    if colour_type != 2:
        kind = _COLOUR_TYPES.get(colour_type, f"PNG colour type {colour_type}")
        raise FaceFileError(path, f"is {kind}; Faceswap-extracted faces are 8-bit colour (BGR)")
    if bit_depth != 8:
        raise FaceFileError(path, f"is a {bit_depth}-bit image; Faceswap-extracted faces are "
                                  "8-bit colour (BGR)")


def _plain(value: Any) -> Any:
    """Numpy values -> Python lists/scalars so that repr() is a Python literal."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _plain(val) for key, val in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(val) for val in value)
    if isinstance(value, list):
        return [_plain(val) for val in value]
    return value


def pack_itxt(text: bytes) -> bytes:
    """A complete, uncompressed `faceswap` iTXt chunk (length, type, data, CRC)."""
    # keyword, NUL, compression flag 0, method 0, empty language tag, empty translated keyword
    data = ITXT_KEYWORD + b"\0\0\0\0\0" + text
    return (struct.pack(">I", len(data)) + b"iTXt" + data
            + struct.pack(">I", zlib.crc32(data, zlib.crc32(b"iTXt"))))


def encode_face_png(image_bgr: np.ndarray, header: dict[str, Any]) -> bytes:
    """PNG bytes of a face with its Faceswap header, laid out as Faceswap writes it.

    Args:
        image_bgr: (S, S, 3) uint8 BGR face.
        header: {"alignments": ..., "source": ...}; numpy arrays are written as lists. Keys
            "width"/"height" (as returned by `read_header`) are dropped: the image defines them.

    Returns:
        The encoded file: IHDR, the faceswap iTXt chunk, IDAT..., IEND.
    """
    image = np.asarray(image_bgr)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"face image must be uint8 (S, S, 3), got {image.dtype} {image.shape}")
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"face image must be square, got {image.shape[1]}x{image.shape[0]}")
    plain = _plain({k: v for k, v in header.items() if k not in ("width", "height")})
    normalise_header(plain, "<header to encode>")  # refuse to write what we could not read
    text = repr(plain).encode("utf-8")
    if len(text) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(text)} bytes, over the {MAX_HEADER_BYTES} byte limit")
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("cv2 could not encode the face image as PNG")
    png = encoded.tobytes()
    pos = 8
    while png[pos + 4:pos + 8] != b"IDAT":
        pos += 12 + struct.unpack_from(">I", png, pos)[0]
    return png[:pos] + pack_itxt(text) + png[pos:]


def decode_image(path: PathLike) -> np.ndarray:
    """Decode a face file to uint8 BGR (H, W, 3) as Faceswap's reader does.

    Grey becomes BGR, alpha is dropped, 16-bit is scaled to 8-bit.
    """
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise FaceFileError(path, f"cannot read file ({err.strerror or err})") from err
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if image is None:
        raise FaceFileError(path, "cv2 cannot decode the image data (corrupt or not an image)")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    elif image.shape[2] != 3:
        raise FaceFileError(path, f"image has {image.shape[2]} channels; expected 3")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float32) / np.iinfo(image.dtype).max * 255.0
    else:
        image = np.clip(image, 0.0, 1.0) * 255.0
    return np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))
