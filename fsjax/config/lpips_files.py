"""Which local files the LPIPS losses need, and whether a config can find them.

Kept apart from `fsjax.losses.lpips` (the network, which needs jax) so that a config is checked
for its LPIPS weights without importing jax: nothing is ever downloaded, so a missing file is a
config error before the run starts.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from fsjax.config import LossConfig


class WeightFiles(NamedTuple):
    """Accepted file names of one trunk: torchvision's download first, then Faceswap's; and of
    its linear layers: LPIPS v0.1's first, then Faceswap's."""

    trunk: tuple[str, ...]
    linear: tuple[str, ...]


WEIGHT_FILES: dict[str, WeightFiles] = {
    "alex": WeightFiles(("alexnet-owt-7be5be79.pth", "alexnet_imagenet_no_top_v2.pth"),
                        ("alex.pth", "alexnet_lpips_v2.pth")),
    "squeeze": WeightFiles(("squeezenet1_1-b8a52dc0.pth", "squeezenet_imagenet_no_top_v2.pth"),
                           ("squeeze.pth", "squeezenet_lpips_v2.pth")),
    "vgg16": WeightFiles(("vgg16-397923af.pth", "vgg16_imagenet_no_top_v2.pth"),
                         ("vgg.pth", "vgg16_lpips_v2.pth")),
}
LOSS_NETS = {"lpips_alex": "alex", "lpips_squeeze": "squeeze", "lpips_vgg16": "vgg16"}
"""Loss name -> trunk."""


def weight_files(net: str, folder: pathlib.Path) -> tuple[pathlib.Path | None, pathlib.Path | None]:
    """The trunk and linear files found in `folder` (the first accepted name that exists)."""
    found = [next((folder / n for n in names if (folder / n).is_file()), None)
             for names in WEIGHT_FILES[net]]
    return found[0], found[1]


def missing_message(name: str, folder: pathlib.Path | None) -> str:
    """What loss `name` lacks in `folder`, and how to give it."""
    spec = WEIGHT_FILES[LOSS_NETS[name]]
    files = (f"torchvision's {spec.trunk[0]} (or Faceswap's {spec.trunk[1]})",
             f"LPIPS v0.1's {spec.linear[0]} (or Faceswap's {spec.linear[1]})")
    if folder is None:
        where = "loss.lpips_weights is not set"
    elif not folder.is_dir():
        where = f"loss.lpips_weights={str(folder)!r} is not a folder"
    else:
        lacking = [f for f, path in zip(files, weight_files(LOSS_NETS[name], folder), strict=True)
                   if path is None]
        where = f"{str(folder)!r} lacks {' and '.join(lacking)}"
    return (f"{name} needs pretrained weights as local files, and {where}: put {files[0]} and "
            f"{files[1]} in one folder and pass it with --config.loss.lpips-weights=FOLDER")


def config_problem(cfg: LossConfig) -> str | None:
    """Why `cfg`'s LPIPS choices cannot run (a ConfigError message), or None if they can."""
    if cfg.loss_function in LOSS_NETS:
        return (f"loss.loss_function={cfg.loss_function!r}: LPIPS losses are offered only as "
                "loss_function_2..4 (as in Faceswap); choose another primary loss")
    folder = None if cfg.lpips_weights is None else pathlib.Path(cfg.lpips_weights)
    for name in cfg.functions:
        if name not in LOSS_NETS:
            continue
        if folder is None or None in weight_files(LOSS_NETS[name], folder):
            return missing_message(name, folder)
    return None
