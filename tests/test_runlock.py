"""One owner per run (paraformer.core.runlock): two processes given the same run never both train it."""

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from paraformer.core.config import ConfigError, DataConfig, ModelConfig, Recipe
from paraformer.core.runcache import RunCacheError, run_paths, step_log_path
from paraformer.core.runlock import RunLock, RunLockedError, held_by, lock_path, read_owner
from paraformer.core.runlog import read_step_log
from paraformer.training import train

HOLD = """
import sys, time
from paraformer.core.runlock import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_another_process(path):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_held_lock_names_its_owner_and_refuses_a_second_holder_that_will_not_wait(tmp_path):
    path = tmp_path / "runs" / "r-1.lock"
    child = hold_in_another_process(path)
    try:
        owner = held_by(path)
        assert (owner.pid, owner.host) == (child.pid, os.uname().nodename)
        with pytest.raises(RunLockedError, match=f"pid {child.pid}"):
            with RunLock(path, wait=False):
                pass
    finally:
        child.kill()
        child.wait()


def test_a_killed_owner_frees_the_run_at_once(tmp_path):
    path = tmp_path / "r-1.lock"
    child = hold_in_another_process(path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert held_by(path) is None  # nothing stale to clean up: the lock died with its owner
    with RunLock(path, wait=False):
        assert read_owner(path).pid == os.getpid()
    assert held_by(path) is None


def test_a_waiting_claimant_gets_the_run_when_the_owner_lets_go(tmp_path):
    path = tmp_path / "r-1.lock"
    child = hold_in_another_process(path)
    said = []
    killer = multiprocessing.get_context("fork").Process(target=lambda: (time.sleep(1.0), os.kill(child.pid, 9)))
    killer.start()
    started = time.monotonic()
    with RunLock(path, poll=0.1, say=said.append):
        waited = time.monotonic() - started
    killer.join()
    child.wait()
    assert waited >= 0.8 and len(said) == 1  # it waited, and said so once


TINY = dict(model_config=ModelConfig(num_branches=2, branch_depth=1, width=16, num_heads=2, in_channels=1, image_size=28,
                                     patch_size=7),
            data_config=DataConfig(dataset="fashion_mnist", n_train=256, n_test=64),
            recipe=Recipe(epochs=3, batch_size=64, warmup_epochs=0))


def _train_tiny(folder):
    result = train(**TINY, results_root=folder, progress=False)
    return result.cached


def test_two_processes_given_one_run_train_it_once_and_log_each_step_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        cached = pool.map(_train_tiny, [tmp_path, tmp_path])
    assert sorted(cached) == [False, True]  # one trained it, the other waited and read its record
    result = train(**TINY, results_root=tmp_path, progress=False)
    log = read_step_log(step_log_path(run_paths(result.name, result.key, tmp_path)[0]))
    assert log["step"].is_unique and len(log) == log["step"].max() + 1 - log["step"].min()


def test_with_training_refused_a_missing_run_is_an_error_and_a_cached_one_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAFORMER_TRAIN", "never")
    with pytest.raises(RunCacheError, match="PARAFORMER_TRAIN=never"):
        train(**TINY, results_root=tmp_path, progress=False)
    assert not list((tmp_path / "runs").glob("*.json"))
    monkeypatch.setenv("PARAFORMER_TRAIN", "")
    first = train(**TINY, results_root=tmp_path, progress=False)
    monkeypatch.setenv("PARAFORMER_TRAIN", "never")
    assert train(**TINY, results_root=tmp_path, progress=False).key == first.key
    monkeypatch.setenv("PARAFORMER_TRAIN", "sometimes")
    with pytest.raises(ConfigError, match="PARAFORMER_TRAIN='sometimes'"):
        train(**TINY, results_root=tmp_path / "other", progress=False)


def test_a_finished_or_refused_run_leaves_no_lock_file_behind(tmp_path):
    result = train(**TINY, results_root=tmp_path, progress=False)
    lock = lock_path(run_paths(result.name, result.key, tmp_path)[0])
    assert lock.parent == tmp_path / "runs" and not lock.exists() and held_by(lock) is None


def test_a_claimant_that_waited_for_an_owner_locks_the_file_the_path_names_after_the_owner_removed_its_own(tmp_path):
    path = tmp_path / "r-1.lock"
    owner = RunLock(path).__enter__()
    got = []

    def claim():
        with RunLock(path, poll=0.05) as second:  # opens the owner's file, waits on it, finds it removed
            got.append(os.fstat(second._handle.fileno()).st_ino == os.stat(path).st_ino)
    waiter = threading.Thread(target=claim)
    waiter.start()
    time.sleep(0.3)
    owner.__exit__(None, None, None)
    waiter.join(timeout=10)
    assert got == [True] and not path.exists()
