"""Fault injection: a real training run killed with SIGKILL at every kind of moment, restarted each time, ends
exactly as an uninterrupted run does, loses no finished run, and leaves no temporary file or partial table.

Each run is a fresh process (tests/faults_child.py) on a tiny ImageFolder written here, so that the kill is
real: nothing of the killed process's memory survives, only what it had put on disk.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import paraformer

ROOT = Path(__file__).resolve().parents[1]


def write_image_folder(root: Path) -> Path:
    """3 classes of 8x8 greyscale images (12 training, 4 test images each), told apart by brightness."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for label in range(3):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (8, 8)) + 90 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def run_child(dataset: Path, results: Path, data_cache: Path, fault: str) -> subprocess.CompletedProcess:
    # The child imports the same paraformer as this process (and tests.faults_child from this checkout).
    path = os.pathsep.join([str(Path(paraformer.__file__).resolve().parents[1]), str(ROOT)])
    env = dict(os.environ, PARAFORMER_RESULTS=str(results), PARAFORMER_DATA=str(data_cache), PYTHONPATH=path,
               OMP_NUM_THREADS="1")
    env.pop("PARAFORMER_RETRAIN", None)
    return subprocess.run([sys.executable, "-m", "tests.faults_child", str(dataset), fault], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def summary(process: subprocess.CompletedProcess) -> dict:
    assert process.returncode == 0, process.stderr[-2000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def weights(results: Path) -> dict:
    (path,) = (results / "models").glob("*.pt")
    return torch.load(path, weights_only=True)


def temporaries(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("toyfolder"))


def trained_epochs(process: subprocess.CompletedProcess) -> list[int]:
    return [int(line.split()[-1]) for line in process.stdout.splitlines() if line.startswith("trained epoch")]


def test_a_run_killed_at_every_kind_of_moment_ends_bit_identical_to_an_uninterrupted_one(dataset, tmp_path):
    data_cache = tmp_path / "data"
    reference = summary(run_child(dataset, tmp_path / "straight", data_cache, "none"))
    results = tmp_path / "killed"
    record = results / "runs" / f"faults-{reference['key']}.json"
    # Each kill must really happen, no record may appear before the last epoch is done, and each restart must
    # go on from the last checkpoint that was whole: the epochs every process trained show it (4 in all: two
    # stages of 2).
    for fault, epochs in [("epoch:1", [1]),                # after epoch 1's checkpoint
                          ("save:checkpoints:1", []),      # half-way through epoch 2's checkpoint
                          ("replace:checkpoints:2", []),   # between moving checkpoint 1 aside and putting 2 in place
                          ("epoch:3", [2, 3]),             # from checkpoint 1, kept aside; killed in stage 2
                          ("save:models:1", [4]),          # half-way through the final weights
                          ("record:1", [])]:               # half-way through the run record
        process = run_child(dataset, results, data_cache, fault)
        assert process.returncode == -signal.SIGKILL, (fault, process.returncode, process.stderr[-2000:])
        assert trained_epochs(process) == epochs, fault
        assert not record.exists(), fault
    (checkpoint,) = (results / "checkpoints").glob("faults-*.pt")
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # a damaged checkpoint (not a kill): moved aside

    killed_in_table = run_child(dataset, results, data_cache, "table:1")  # the run finishes, its table does not
    assert killed_in_table.returncode == -signal.SIGKILL
    assert trained_epochs(killed_in_table) == [4]  # from the checkpoint before the damaged one
    assert record.exists()  # a finished run is never lost
    assert not list((results).rglob("faults.csv")) or (next(results.rglob("faults.csv")).read_text()
                                                       == next((tmp_path / "straight").rglob("faults.csv")).read_text())

    final = run_child(dataset, results, data_cache, "none")
    assert summary(final)["cached"] and trained_epochs(final) == []
    assert summary(final)["key"] == reference["key"]
    assert summary(final)["final_test_acc"] == reference["final_test_acc"]
    straight, resumed = weights(tmp_path / "straight"), weights(results)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert temporaries(results, data_cache) == []
    assert list((results / "checkpoints").glob("*.pt")) == []  # a finished run keeps no resume state
    for table in ("faults.csv", "faults.md"):
        assert (next(results.rglob(table)).read_text() == next((tmp_path / "straight").rglob(table)).read_text())
