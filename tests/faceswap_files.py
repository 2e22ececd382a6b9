"""Faceswap's own saved models, kept in the repository compressed (tests/data/faceswap/).

The tiny Faceswap 3 `.keras` and Faceswap 2 `.h5` models, their recorded outputs and the manifest
of every model Faceswap builds are facts from Faceswap's code: the tests read them byte for byte.
Their float32 weights are close to incompressible, so each binary file is stored byte-shuffled
(the k-th byte of every 4-byte word together, which groups signs and exponents) before xz, which
saves about a fifth over plain xz; text files are plain xz. `SHA256SUMS` holds the hash of every
original file, checked on unpacking. Of each `forward.npz` (the outputs Faceswap's models computed,
recorded with the fixtures) only the arrays the tests compare with are kept.

    python tests/faceswap_files.py pack ../shared/fixtures   # refresh tests/data/faceswap
    python tests/faceswap_files.py unpack OUT                # what the tests see
"""

from __future__ import annotations

import hashlib
import io
import lzma
import pathlib
import struct
import sys

import numpy as np

PACKED = pathlib.Path(__file__).parent / "data" / "faceswap"
# What the tests read from Faceswap's fixture folder: three model folders and the manifest.
SOURCES = ("models/dfl_sae_df_tiny", "models/phaze_a_tiny_gblock", "legacy_h5/dfl_sae_liae",
           "models_manifest.json")
_FORWARD_KEYS = {  # per model folder, the prefixes of the recorded arrays tests read
    "models/dfl_sae_df_tiny": ("input_", "output_"),
    "models/phaze_a_tiny_gblock": ("input_", "output_", "rand_input_", "rand_output_",
                                   "b_path_on_input_a_0", "swap_a_to_b_0"),
    "legacy_h5/dfl_sae_liae": ("input_", "output_"),
}
_BINARY = {".keras", ".h5", ".npz"}
_SHUFFLED, _PLAIN = ".s4.xz", ".xz"
_LIMIT = 64 << 20  # no fixture file is larger; a corrupt stream stops here


def _shuffle(data: bytes) -> bytes:
    words = np.frombuffer(data + b"\0" * (-len(data) % 4), np.uint8).reshape(-1, 4)
    return struct.pack("<Q", len(data)) + words.T.tobytes()


def _unshuffle(blob: bytes) -> bytes:
    (size,) = struct.unpack_from("<Q", blob)
    planes = np.frombuffer(blob, np.uint8, offset=8).reshape(4, -1)
    return planes.T.tobytes()[:size]


def _forward_subset(path: pathlib.Path, folder: str) -> bytes:
    with np.load(path) as recorded:
        kept = {k: recorded[k] for k in recorded.files if k.startswith(_FORWARD_KEYS[folder])}
    buffer = io.BytesIO()
    np.savez(buffer, **kept)
    return buffer.getvalue()


def _files(root: pathlib.Path) -> list[pathlib.Path]:
    out = []
    for name in SOURCES:
        path = root / name
        out += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return out


def pack(source: pathlib.Path, packed: pathlib.Path = PACKED) -> int:
    """Compress the fixture files under `source` into `packed`; returns the packed bytes."""
    sums = []
    for path in _files(source):
        rel = path.relative_to(source).as_posix()
        folder = path.parent.relative_to(source).as_posix()
        data = (_forward_subset(path, folder) if path.name == "forward.npz"
                else path.read_bytes())
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {rel}\n")
        shuffled = path.suffix in _BINARY
        target = packed / (rel + (_SHUFFLED if shuffled else _PLAIN))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lzma.compress(_shuffle(data) if shuffled else data,
                                         preset=9 | lzma.PRESET_EXTREME))
    (packed / "SHA256SUMS").write_text("".join(sums))
    return sum(p.stat().st_size for p in packed.rglob("*") if p.is_file())


def unpack(out: pathlib.Path, packed: pathlib.Path = PACKED) -> pathlib.Path:
    """Write the original files under `out`, each checked against its SHA-256; returns `out`."""
    for line in (packed / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        shuffled = pathlib.PurePosixPath(rel).suffix in _BINARY
        stored = packed / (rel + (_SHUFFLED if shuffled else _PLAIN))
        decoder = lzma.LZMADecompressor()
        blob = decoder.decompress(stored.read_bytes(), max_length=_LIMIT + 8)
        if not decoder.eof:
            raise ValueError(f"{stored}: truncated, or larger than {_LIMIT} bytes")
        data = _unshuffle(blob) if shuffled else blob
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"{stored}: does not unpack to the file SHA256SUMS names")
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return out


if __name__ == "__main__":
    command, folder = sys.argv[1], pathlib.Path(sys.argv[2])
    if command == "pack":
        print(f"{pack(folder):,} bytes in {PACKED}")
    elif command == "unpack":
        print(unpack(folder))
    else:
        sys.exit(f"usage: {sys.argv[0]} pack SOURCE | unpack OUT")
