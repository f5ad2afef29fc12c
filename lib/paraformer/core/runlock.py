"""One owner per run: a lock file beside the run's record, so that two processes given the same run (two notebooks,
a notebook and a cluster job, two jobs of one farm) never both train it.

The lock is the operating system's (`flock` on `runs/<name>-<key>.lock`), not the file's existence: it dies with its
owner, so a run whose owner was killed (SIGKILL, `scancel`, a lost node once its filesystem lease ends) is free at
once, with nothing stale to clean up. The file itself holds who owns the run (host, pid, since when), for the
messages of those who wait and for `paraformer.tools.farm status`. It stays after the run: removing a lock file
that another process may be opening would let two owners hold two different files.

A second claimant waits for the owner and then finds the finished record in the run cache (or, where the owner
died, resumes its checkpoint); with `wait=False` it is refused in one line (`RunLockedError`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


class RunLockedError(RuntimeError):
    """The run is being trained by another process (and the caller chose not to wait)."""


@dataclass(frozen=True)
class Owner:
    """Who holds a run's lock."""

    host: str
    pid: int
    since: str  # ISO time the lock was taken (UTC)

    def words(self) -> str:
        return f"pid {self.pid} on {self.host} (since {self.since})"


def lock_path(record_path: Path) -> Path:
    """The lock file of the run whose record is `record_path` (`runcache.run_paths`)."""
    return Path(record_path).with_suffix(".lock")


def read_owner(path: Path) -> Owner | None:
    """The owner written in a lock file, or None (no file, or one written by no owner yet)."""
    try:
        return Owner(**json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _try_lock(handle) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as error:  # e.g. a network filesystem mounted without lock support
        raise OSError(f"cannot lock {handle.name}: {error}; the results folder must be on a filesystem with file "
                      "locks (on Lustre: mount with -o flock)") from None


def held_by(path: Path) -> Owner | None:
    """The owner of the lock at `path` where a live process holds it, else None (free, or never taken)."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "a+") as handle:
        if _try_lock(handle):
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    return read_owner(path) or Owner("?", -1, "?")


class RunLock:
    """`with RunLock(path): ...` holds the run for this process; a second holder waits (polling every `poll`
    seconds, saying once whom it waits for) or, with `wait=False`, gets `RunLockedError`."""

    def __init__(self, path: Path, wait: bool = True, poll: float = 1.0, say=None):
        self.path, self.wait, self.poll = Path(path), wait, poll
        self.say = say if say is not None else (lambda line: print(line, file=sys.stderr, flush=True))
        self._handle = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            told = False
            while not _try_lock(handle):
                owner = read_owner(self.path)
                who = owner.words() if owner else "another process"
                if not self.wait:
                    raise RunLockedError(f"{self.path.stem} is being trained by {who}; wait for it, or stop that "
                                         f"process (its lock: {self.path})")
                if not told:
                    self.say(f"{self.path.stem} is being trained by {who}: waiting for it to finish")
                    told = True
                time.sleep(self.poll)
        except BaseException:
            handle.close()
            raise
        me = Owner(socket.gethostname(), os.getpid(), datetime.now(timezone.utc).isoformat(timespec="seconds"))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(me.__dict__))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
