"""Write an fsjax model folder back as Faceswap 3's `<plugin>.keras`, to train or convert on in
Faceswap.

    python -m fsjax.tools.export_keras MODEL_DIR --out FACESWAP_DIR/<plugin>.keras

The newest checkpoint's weights and the folder's `<plugin>_state.json` are written by
`fsjax.interop.keras_export`, which describes the file.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from fsjax.checkpoint.state_file import ModelFolderError
from fsjax.interop.keras_export import ExportError, export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsjax.tools.export_keras",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=pathlib.Path, help="the fsjax model folder")
    parser.add_argument("--out", type=pathlib.Path, required=True,
                        help="the Faceswap model file to write, <faceswap model dir>/<plugin>.keras"
                             " (its <plugin>_state.json is written beside it)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing model file and state file there")
    args = parser.parse_args(argv)
    try:
        path, step, count = export(args.model_dir, args.out, force=args.force)
    except (ExportError, ModelFolderError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Wrote {path} (iteration {step}, {count:,} parameters) and its state file; train on "
          "with Faceswap 3 using that folder", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
