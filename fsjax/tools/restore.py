"""Roll a model folder back to its backup or to a snapshot, as Faceswap's restore tool does.

    python -m fsjax.tools.restore MODEL_DIR                # the backup (the best-loss save)
    python -m fsjax.tools.restore MODEL_DIR --snapshot N   # MODEL_DIR_snapshot_N_iters

What is replaced moves to `MODEL_DIR/<name>_archived_<time>/`; nothing is deleted. Training
resumes from the restored save with the same train command.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from fsjax.checkpoint import folder
from fsjax.checkpoint.lock import ModelLock
from fsjax.checkpoint.state_file import ModelFolderError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsjax.tools.restore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=pathlib.Path, help="the model folder to restore")
    parser.add_argument("--snapshot", type=int, metavar="N",
                        help="restore the snapshot of iteration N instead of the backup")
    args = parser.parse_args(argv)
    try:
        if not args.model_dir.is_dir():
            raise ModelFolderError(f"{args.model_dir}: no such model folder")
        lock = ModelLock(args.model_dir)  # never under a running training
        try:
            archive, iterations = folder.restore(args.model_dir, args.snapshot)
        finally:
            lock.release()
    except (ModelFolderError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    source = "the backup" if args.snapshot is None else f"snapshot {args.snapshot}"
    print(f"Restored {args.model_dir} from {source}: iteration {iterations}. The replaced files "
          f"are in {archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
