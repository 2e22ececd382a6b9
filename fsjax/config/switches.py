"""Faceswap's `train` switches (faceswap.py train -A ... -B ... -m ...), spelled as Faceswap spells
them, short and long, onto the nested options they set.

Faceswap users keep their command lines: `-A DIR -B DIR -m DIR -t dfl-sae -b 16 -P` means what it
means in Faceswap. fsjax's earlier long spellings (`--faces-a`, ...) stay accepted as well.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Switch:
    short: str
    long: str
    target: str  # the tyro flag it stands for
    metavar: str | None  # None: a switch without a value
    help: str
    also: tuple[str, ...] = ()  # other long spellings fsjax accepts


# In the order and the groups of Faceswap's `train --help`.
GROUPS: tuple[tuple[str, tuple[Switch, ...]], ...] = (
    ("faces", (
        Switch("-A", "--input-A", "--config.data.faces-a", "DIR",
               "faces of side A, the face to replace (also --faces-a)",
               ("--input-a", "--faces-a")),
        Switch("-B", "--input-B", "--config.data.faces-b", "DIR",
               "faces of side B, the face put in its place (also --faces-b)",
               ("--input-b", "--faces-b")),
    )),
    ("model", (
        Switch("-m", "--model-dir", "--config.train.model-dir", "DIR",
               "model folder: new or empty to start, an existing one to resume"),
        Switch("-l", "--load-weights", "--config.train.load-weights", "DIR",
               "a new model starts from this model folder's encoder weights"),
        Switch("-t", "--trainer", "--config.model.name", "NAME",
               "model plugin, Faceswap's name (dfl-sae) or fsjax's (dfl_sae)"),
        Switch("-u", "--summary", "--config.train.summary", None,
               "print the model's summary and exit"),
        Switch("-f", "--freeze-weights", "--config.train.freeze-weights", None,
               "keep the encoder's weights fixed"),
    )),
    ("training", (
        Switch("-b", "--batch-size", "--config.train.batch-size", "N",
               "faces per side per iteration"),
        Switch("-i", "--iterations", "--config.train.iterations", "N",
               "iterations to train for"),
        Switch("-a", "--warmup", "--config.train.warmup", "N",
               "iterations over which the learning rate rises from 0"),
        Switch("-n", "--no-logs", "--config.train.no-logs", None, "write no TensorBoard logs"),
        Switch("-r", "--use-lr-finder", "--config.train.use-lr-finder", None,
               "find the learning rate before training"),
    )),
    ("saving", (
        Switch("-s", "--save-interval", "--config.train.save-interval", "N",
               "iterations between saves"),
        Switch("-I", "--snapshot-interval", "--config.train.snapshot-interval", "N",
               "iterations between snapshots (0: none)"),
    )),
    ("timelapse", (
        Switch("-x", "--timelapse-input-A", "--config.train.timelapse-input-a", "DIR",
               "side A faces of the timelapse (the first 14 in name order)",
               ("--timelapse-input-a", "-tia")),
        Switch("-y", "--timelapse-input-B", "--config.train.timelapse-input-b", "DIR",
               "side B faces of the timelapse", ("--timelapse-input-b", "-tib")),
        Switch("-z", "--timelapse-output", "--config.train.timelapse-output", "DIR",
               "timelapse frames folder (default: <model-dir>/timelapse)", ("-to",)),
        Switch("", "--timelapse-video", "--config.train.timelapse-video", None,
               "join the timelapse frames into timelapse.mp4 at the end of the run"),
    )),
    ("preview", (
        Switch("-w", "--write-image", "--config.train.write-image", None,
               "write the preview image into the model folder"),
        Switch("", "--preview-scale", "--config.train.preview-scale", "PERCENT",
               "size of the written preview, in percent of the model's output size"),
    )),
    ("augmentation", (
        Switch("-M", "--warp-to-landmarks", "--config.augment.warp-to-landmarks", None,
               "warp faces towards the other side's closest landmarks"),
        Switch("-P", "--no-flip", "--config.augment.no-flip", None,
               "do not flip faces at random"),
        Switch("-c", "--no-augment-color", "--config.augment.no-augment-color", None,
               "no colour augmentation"),
        Switch("-W", "--no-warp", "--config.augment.no-warp", None, "no random warping"),
    )),
)
SWITCHES: tuple[Switch, ...] = tuple(s for _, group in GROUPS for s in group)
_SHORT = {s.short: s for s in SWITCHES if s.short}
_LONG = {name: s for s in SWITCHES for name in (s.long, *s.also) if name.startswith("--")}
# Faceswap 2's deprecated multi-letter short forms (-tia): matched whole, before -t's value.
_LEGACY = {name: s for s in SWITCHES for name in s.also if not name.startswith("--")}
# Every long spelling -> the nested flag (keep these names: checks use them).
ALIASES: dict[str, str] = {name: s.target for name, s in _LONG.items()}


def _value(switch: Switch, value: str) -> str:
    # Faceswap names plugins with dashes (dfl-sae); fsjax's module names use underscores.
    return value.lower().replace("-", "_") if switch.long == "--trainer" else value


def _split(arg: str) -> tuple[Switch | None, str | None]:
    """The switch `arg` names and the value written into it (`-b8`, `-b=8`, `--batch-size=8`)."""
    if arg.startswith("--"):
        flag, eq, value = arg.partition("=")
        return _LONG.get(flag), (value if eq else None)
    flag, eq, value = arg.partition("=")
    if flag in _LEGACY:
        return _LEGACY[flag], (value if eq else None)
    switch = _SHORT.get(arg[:2]) if len(arg) >= 2 and arg[0] == "-" else None
    if switch is None or len(arg) == 2:
        return switch, None
    if switch.metavar is None:
        return None, None  # grouped switches are handled by the caller
    return switch, arg[2:].removeprefix("=")


def expand(argv: list[str]) -> list[str]:
    """argv with every Faceswap switch replaced by the nested flag it sets."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        switch, value = _split(arg)
        if switch is None and len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and all(
                f"-{c}" in _SHORT and _SHORT[f"-{c}"].metavar is None for c in arg[1:]):
            out += [_SHORT[f"-{c}"].target for c in arg[1:]]  # -PcW: grouped switches
            continue
        if switch is None:
            out.append(arg)
        elif switch.metavar is None:
            out.append(switch.target if value is None else f"{switch.target}={value}")
        elif value is not None:
            out.append(f"{switch.target}={_value(switch, value)}")
        else:
            out.append(switch.target)
            if i < len(argv):  # the value, passed on as it is (even if it starts with '-')
                out.append(_value(switch, argv[i]))
                i += 1
    return out


def help_text() -> str:
    """The switches, grouped as Faceswap groups them, for the top of `--help`."""
    lines = ["Faceswap's train switches (each sets the option named after it; every option has",
             "a full name in the list further down, e.g. --config.train.batch-size):"]
    for group, switches in GROUPS:
        lines.append(f"  {group}:")
        for s in switches:
            names = (f"{s.short}, " if s.short else "") + s.long + (
                f" {s.metavar}" if s.metavar else "")
            lines.append(f"    {names:<30} {s.help}")
    return "\n".join(lines) + "\n"
