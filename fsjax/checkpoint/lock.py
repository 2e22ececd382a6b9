"""One run per model folder: an advisory lock held for the whole run.

Two runs writing the same checkpoints and state file would each overwrite the other's saves.
`flock` is released by the kernel when the process ends however it ends (even SIGKILL), so a
crashed run never leaves a stale lock behind. Only a run's process 0 takes it. On a shared file
system the lock holds across hosts where the file system supports flock (NFS v3 with lockd and
NFS v4 map it onto their byte-range locks; Lustre needs its `flock` mount option); the holder is
written as `pid@host`.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import socket

from fsjax.checkpoint.state_file import ModelFolderError

LOCK_NAME = ".fsjax.lock"


class ModelLock:
    """Holds `<model_dir>/.fsjax.lock` until `release()`; refuses a folder another run holds."""

    def __init__(self, model_dir: pathlib.Path) -> None:
        self.path = pathlib.Path(model_dir) / LOCK_NAME
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise ModelFolderError(
                f"{self.path.parent}: another training run is using this model folder "
                f"(process {holder}); stop it first, or use another --model-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}@{socket.gethostname()}".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def take_folder(model_dir: pathlib.Path) -> ModelLock:
    """Creates and locks the model folder and checks that files can be written in it, so that a
    folder that cannot hold the saves stops the run before anything is built."""
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        lock = ModelLock(model_dir)
    except OSError as err:
        raise ModelFolderError(f"{model_dir}: cannot create or lock the model folder: "
                               f"{err.strerror or err}") from None
    probe = model_dir / f".fsjax-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        lock.release()
        raise ModelFolderError(f"{model_dir}: cannot write in the model folder: "
                               f"{err.strerror or err}") from None
    return lock
