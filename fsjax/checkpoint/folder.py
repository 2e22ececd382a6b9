"""Copies of a save inside and beside the model folder: backups, snapshots and restores.

A copy is a model folder of its own: `<name>_state.json`, `config.json`, the save's directories
under `<name>_checkpoints/` and `<name>_optimizer/` and, for snapshots, `<name>_logs/`. Each is
assembled under a `.fsjax-tmp` name and renamed into place, so a crash never leaves a half copy
where a whole one is expected; leftovers are removed, with a warning, when the next run starts.

Checkpoint files are never changed once written (a save is a new directory), so a copy hard-links
them where the filesystem allows: a backup of the newest save costs no space until that save is
replaced. Elsewhere (another disk, no hard links) they are copied.

* Backup (Faceswap's `.bk`): `<model_dir>/<name>_backup_<step>/`, the best-loss save.
* Snapshot: the sibling `<model_dir>_snapshot_<N>_iters/`, resumable as it is.
* Restore: `<model_dir>/<name>_archived_<time>/` keeps what a restore replaced.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys
import time

from fsjax.checkpoint import state_file
from fsjax.checkpoint.state_file import ModelFolderError

TMP = ".fsjax-tmp"
PREVIEW = "training_preview.png"


def backup_path(model_dir: pathlib.Path, name: str, step: int) -> pathlib.Path:
    return pathlib.Path(model_dir) / f"{name}_backup_{step}"


def snapshot_path(model_dir: pathlib.Path, step: int) -> pathlib.Path:
    model_dir = pathlib.Path(model_dir).absolute()
    return model_dir.with_name(f"{model_dir.name}_snapshot_{step}_iters")


def backups(model_dir: pathlib.Path, name: str) -> dict[int, pathlib.Path]:
    """Complete backups by step (normally one; two only if a crash beat the clean-up)."""
    pattern = re.compile(rf"{re.escape(name)}_backup_(\d+)")
    return {int(m.group(1)): p for p in pathlib.Path(model_dir).glob(f"{name}_backup_*")
            if (m := pattern.fullmatch(p.name)) and p.is_dir()}


def snapshots(model_dir: pathlib.Path) -> dict[int, pathlib.Path]:
    model_dir = pathlib.Path(model_dir).absolute()
    pattern = re.compile(rf"{re.escape(model_dir.name)}_snapshot_(\d+)_iters")
    return {int(m.group(1)): p for p in model_dir.parent.glob(f"{model_dir.name}_snapshot_*")
            if (m := pattern.fullmatch(p.name)) and p.is_dir()}


def copy_save(model_dir: pathlib.Path, name: str, step_dirs: list[pathlib.Path],
              dest: pathlib.Path, *, logs: bool) -> pathlib.Path:
    """Publishes a copy of one save (the state file, config and `step_dirs`) at `dest`, replacing
    any older copy there."""
    model_dir, dest = pathlib.Path(model_dir), pathlib.Path(dest)
    tmp = dest.with_name(dest.name + TMP)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for file in (state_file.state_path(model_dir, name), model_dir / "config.json"):
        if file.exists():
            shutil.copy2(file, tmp / file.name)
    for step_dir in step_dirs:
        shutil.copytree(step_dir, tmp / step_dir.parent.name / step_dir.name,
                        copy_function=_link_or_copy)
    if logs and (model_dir / f"{name}_logs").is_dir():
        shutil.copytree(model_dir / f"{name}_logs", tmp / f"{name}_logs")
    _sync_tree(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def write_backup(model_dir: pathlib.Path, name: str, step: int,
                 step_dirs: list[pathlib.Path]) -> pathlib.Path:
    """Makes save `step` the backup; older backups are removed once it is in place."""
    dest = copy_save(model_dir, name, step_dirs, backup_path(model_dir, name, step), logs=False)
    for old_step, old in backups(model_dir, name).items():
        if old_step != step:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def remove_leftovers(model_dir: pathlib.Path, name: str) -> list[pathlib.Path]:
    """Removes, with a warning, what an interrupted backup, snapshot or state-file write left."""
    model_dir = pathlib.Path(model_dir).absolute()
    found = [*model_dir.glob(f"*{TMP}"), *model_dir.glob("*.json.tmp"),
             *model_dir.parent.glob(f"{model_dir.name}_snapshot_*_iters{TMP}")]
    for path in sorted(found):
        print(f"warning: removing the leftover of an interrupted save: {path}", file=sys.stderr,
              flush=True)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def model_name(model_dir: pathlib.Path) -> str:
    """The name of the model a folder holds, from its state file."""
    held = sorted(p.name[: -len("_state.json")] for p in pathlib.Path(model_dir).glob(
        "*_state.json"))
    if not held:
        raise ModelFolderError(f"{model_dir}: no model state file (*_state.json): not a model "
                               "folder, or nothing has been saved in it yet")
    if len(held) > 1:
        raise ModelFolderError(f"{model_dir}: holds several models ({', '.join(held)})")
    return held[0]


def restore(model_dir: pathlib.Path, snapshot: int | None = None) -> tuple[pathlib.Path, int]:
    """Replaces the model in `model_dir` by its backup, or by snapshot `snapshot`; what it
    replaced moves to `<name>_archived_<time>/`. Returns the archive and the restored iteration.

    As Faceswap's restore tool does, the logs of sessions the restored state knows are kept; a
    snapshot brings its own. The caller holds the folder's lock.
    """
    model_dir = pathlib.Path(model_dir).absolute()
    name = model_name(model_dir)
    if snapshot is None:
        found = backups(model_dir, name)
        if not found:
            raise ModelFolderError(
                f"{model_dir}: no backup to restore. A backup is made at a save whose average "
                "loss since the previous save is the lowest so far (never at the first save)")
        source = found[max(found)]
    else:
        found = snapshots(model_dir)
        if snapshot not in found:
            have = ", ".join(str(s) for s in sorted(found)) or "none"
            raise ModelFolderError(
                f"{snapshot_path(model_dir, snapshot)}: no such snapshot (snapshots of this "
                f"model: {have})")
        source = found[snapshot]
    stored = state_file.load_state(state_file.state_path(source, name))
    if not list((source / f"{name}_checkpoints").glob("[0-9]*")):
        raise ModelFolderError(f"{source}: holds no checkpoint of '{name}'")

    staged = model_dir / f"{name}_restore{TMP}"  # copied first: a failure changes nothing
    shutil.rmtree(staged, ignore_errors=True)
    saves = {f"{name}_checkpoints", f"{name}_optimizer"}  # the rest is rewritten or appended to
    shutil.copytree(source, staged, copy_function=lambda src, dst: (
        _link_or_copy if saves & set(pathlib.Path(src).relative_to(source).parts)
        else shutil.copy2)(src, dst))
    archive = model_dir / f"{name}_archived_{time.strftime('%Y%m%d_%H%M%S')}"
    archive.mkdir()
    replaced = [f"{name}_state.json", "config.json", f"{name}_checkpoints", f"{name}_optimizer",
                f"{name}_logs", PREVIEW]
    if snapshot is not None:  # the backups belong to the timeline being replaced
        replaced += [p.name for p in backups(model_dir, name).values()]
    for item in replaced:
        if (model_dir / item).exists():
            os.replace(model_dir / item, archive / item)
    for item in sorted(staged.iterdir()):
        os.replace(item, model_dir / item.name)
    staged.rmdir()
    logs = archive / f"{name}_logs"
    if snapshot is None and logs.is_dir():
        for session in stored["sessions"]:
            src = logs / f"session_{session}"
            if src.is_dir():
                shutil.copytree(src, model_dir / f"{name}_logs" / src.name)
    return archive, stored["iterations"]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(src, dst)


def _sync_tree(root: pathlib.Path) -> None:
    """fsync every file under `root`, so the rename that publishes it names data on disk."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
