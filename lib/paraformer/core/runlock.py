"""One owner per run: a lock file beside the run's record, so that two processes given the same run (two notebooks,
a notebook and a cluster job, two jobs of one farm) never both train it.

The lock is the operating system's (`flock` on `runs/<name>-<key>.lock`), not the file's existence: it dies with its
owner, so a run whose owner was killed (SIGKILL, `scancel`, a lost node once its filesystem lease ends) is free at
once, with nothing stale to clean up. The file itself holds who owns the run (host, pid, since when), for the
messages of those who wait and for `paraformer.tools.farm status`. The owner removes it before letting go, so a
finished or refused run leaves no file behind; a claimant that then gets the lock of the removed file sees that
the path no longer names it and locks the path's new file instead, so two owners never hold two files. A killed
owner leaves its file, which the next owner takes over.

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
    try:
        handle = open(path, "r")  # never created here: a file that is gone stays gone
    except FileNotFoundError:
        return None
    with handle:
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
        self._made_folder = False

    def __enter__(self) -> "RunLock":
        self._made_folder = not self.path.parent.exists()  # removed again on the way out if still empty
        told = False
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                handle = open(self.path, "a+")
            except FileNotFoundError:  # another owner removed the empty folder just now
                continue
            try:
                while not _try_lock(handle):
                    owner = read_owner(self.path)
                    who = owner.words() if owner else "another process"
                    if not self.wait:
                        raise RunLockedError(f"{self.path.stem} is being trained by {who}; wait for it, or stop "
                                             f"that process (its lock: {self.path})")
                    if not told:
                        self.say(f"{self.path.stem} is being trained by {who}: waiting for it to finish")
                        told = True
                    time.sleep(self.poll)
            except BaseException:
                handle.close()
                raise
            if _same_file(handle, self.path):
                break
            handle.close()  # the owner we waited for removed the file as it let go: lock the path's file anew
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
            self.path.unlink(missing_ok=True)  # still held: whoever waits on this file sees it gone, and retries
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
            if self._made_folder:  # a refused run leaves no empty runs/ behind
                try:
                    self.path.parent.rmdir()
                except OSError:  # not empty: a record, or another run's files
                    pass


def _same_file(handle, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
