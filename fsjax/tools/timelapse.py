"""Join a timelapse folder's frames into a video, as a run with `--timelapse-video` does at exit.

    python -m fsjax.tools.timelapse MODEL_DIR/timelapse                 # -> timelapse.mp4 there
    python -m fsjax.tools.timelapse FRAMES --output run.gif --fps 5

Reads fsjax's PNG frames and Faceswap's JPG ones alike, in name (time) order; the folder may be
one a run is still writing into.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from fsjax.training.timelapse import join_frames, list_frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsjax.tools.timelapse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=pathlib.Path, help="the timelapse frames' folder")
    parser.add_argument("--output", type=pathlib.Path, default=None,
                        help="the video to write, .mp4 or .gif (default FOLDER/timelapse.mp4)")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second (10)")
    args = parser.parse_args(argv)
    if not args.fps > 0:
        parser.error("--fps must be above 0")
    try:
        written = join_frames(args.folder, args.output, fps=args.fps)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Wrote {written}: {len(list_frames(args.folder))} frames at {args.fps:g} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
