"""Writing files atomically: results, checkpoints, caches (docs/run-cache.md#interruptions-and-damaged-files).

Everything goes to a temporary file in the destination folder, named after its writer, and is renamed into
place, so an interruption never leaves a half-written file, and the next start removes what a killed writer
left (`remove_orphan_temporaries`). A write that fails for want of space or permission raises `ResultsWriteError`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path


class ResultsWriteError(OSError):
    """A result, checkpoint or cache file could not be written (read-only folder, full disk); `path` names it."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        super().__init__(f"cannot write {self.path}: {reason}; free some space or point PARAFORMER_RESULTS "
                         f"(or PARAFORMER_DATA for dataset caches) at a writable folder")


# A temporary file names its writer (host and process id), so that the next start can tell the leftovers of a
# killed writer from the file another live process is writing at this moment.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        pass
    return True


def _writer_temporary(folder: Path, name: str) -> Path:
    """A new empty temporary file in `folder` named after `name` and its writer (see `remove_orphan_temporaries`)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def remove_orphan_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that writers on this machine left in `folder` when they were killed
    mid-write; returns what was removed. Files of live writers, or of other machines, are left alone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.glob(".*.tmp"):
        match = _TEMPORARY.fullmatch(path.name)
        if match and match["host"] == _HOST and not _writer_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_writable(folder: Path) -> None:
    """Fail now, naming the folder, rather than after an epoch of training when the first checkpoint is due."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _writer_temporary(folder, "probe").unlink()
    except OSError as error:
        raise ResultsWriteError(folder, error.strerror or str(error)) from error


@contextmanager
def atomic_path(path: Path, keep_previous: bool = False):
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure delete it.
    With `keep_previous` the file it replaces is kept as `<path>.prev` (see `previous_path`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _writer_temporary(path.parent, path.name)
    except OSError as error:
        raise ResultsWriteError(path, error.strerror or str(error)) from error
    try:
        try:
            yield tmp
        except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
            if isinstance(error, OSError) and error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                                                                  errno.EACCES, errno.EIO):
                raise
            free = shutil.disk_usage(path.parent).free
            raise ResultsWriteError(path, f"{error} ({free / 2**20:.0f} MiB free there)") from error
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results and caches are meant to be shared
        if keep_previous and path.exists():
            _keep_as_previous(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _keep_as_previous(path: Path) -> None:
    """Keep `path` as `previous_path(path)` while `path` itself stays in place: a reader, or a process killed between
    two renames, never finds the file missing (a kill between renames used to leave only the previous version)."""
    previous = previous_path(path)
    staged = _writer_temporary(path.parent, previous.name)
    staged.unlink()
    try:
        try:
            os.link(path, staged)
        except OSError:  # a filesystem without hard links: a copy does the same, slower
            shutil.copy2(path, staged)
        os.replace(staged, previous)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def previous_path(path: Path) -> Path:
    """Where `atomic_save(..., keep_previous=True)` keeps the version it replaced."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def atomic_write_text(text: str, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(obj, path: Path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", path)


def atomic_save(obj, path: Path, keep_previous: bool = False) -> Path:
    """torch.save, atomically; with `keep_previous` the replaced file stays as `previous_path(path)`."""
    import torch

    with atomic_path(path, keep_previous) as tmp:
        torch.save(obj, tmp)
    return Path(path)
