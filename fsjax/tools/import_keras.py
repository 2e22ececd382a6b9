"""Import a Faceswap model into a new fsjax model folder that resumes training:

    python -m fsjax.tools.import_keras FACESWAP_MODEL --out MODEL_DIR

The import itself is `fsjax.interop.keras_import.import_model`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from fsjax.checkpoint.manager import SaveError
from fsjax.interop.keras_file import KerasFileError
from fsjax.interop.keras_import import import_model


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fsjax.tools.import_keras",
        description="Import a Faceswap model (<plugin>.keras from Faceswap 3, <plugin>.h5 from "
                    "Faceswap 2, with its <plugin>_state.json) into a new fsjax model folder. "
                    "The file is read as data only: no Keras, no unpickling, no layer code.")
    parser.add_argument("source", type=pathlib.Path, help="the model file or its folder")
    parser.add_argument("--out", type=pathlib.Path, required=True,
                        help="the new fsjax model folder (must be empty or not exist)")
    args = parser.parse_args(argv)
    try:
        out = import_model(args.source, args.out, say=_say)
    except (KerasFileError, SaveError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    _say(f"Resume training with: python -m fsjax.train --config {out} "
         "--faces-a FACES_A --faces-b FACES_B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
