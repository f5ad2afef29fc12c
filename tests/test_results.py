"""Result files: the code version recorded with every run says whether the *code* differed from a commit; tables
say when their runs came from code of other numbers; temporary files of killed writers are cleaned up, no one
else's."""

import os
import subprocess

import pytest
import torch

import paraformer.core.files as files
import paraformer.core.provenance as provenance
import paraformer.experiments.tables as tables
from paraformer.core.provenance import code_version


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_rewritten_results_do_not_mark_the_code_dirty_but_changed_code_does(tmp_path, monkeypatch):
    for path in ("lib/paraformer/core/model.py", "results/tables/table.md", "pyproject.toml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("one\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.setattr(provenance, "project_root", lambda: tmp_path)
    clean = code_version()
    assert "+g" in clean and not clean.endswith("-dirty")
    (tmp_path / "results/tables/table.md").write_text("a notebook rewrote this table\n")
    assert code_version() == clean
    (tmp_path / "lib/paraformer/core/model.py").write_text("two\n")
    assert code_version() == clean + "-dirty"


def test_outside_a_git_checkout_the_version_is_the_package_version(tmp_path, monkeypatch):
    from paraformer import __version__

    monkeypatch.setattr(provenance, "project_root", lambda: tmp_path)
    assert code_version() == __version__


def test_a_table_from_runs_of_other_numbers_carries_one_warning_note(monkeypatch):
    import pandas as pd

    from paraformer.training import numerics

    monkeypatch.setattr(tables, "code_digest", lambda: "now")
    monkeypatch.setattr(numerics, "_recorded", {"known": {"now": "numbers", "edited": "numbers", "older": "other"}})
    current = pd.DataFrame({"data_source": ["d"] * 3, "device": ["cpu"] * 3, "code_version": ["v"] * 3,
                            "code_digest": ["now", "edited", "unknown"], "numerics": ["", "", "numbers"]})
    assert tables.code_warnings(current) == []  # other code, but known to compute the same numbers
    assert len(tables.provenance(current)) == 2
    mixed = current.assign(code_digest=["now", "older", "unknown"], numerics=["", "", ""])
    assert len(tables.code_warnings(mixed)) == 1 and len(tables.provenance(mixed)) == 3
    assert tables.code_warnings(mixed)[0].startswith("WARNING: 2 of 3 runs")
    unknown = current.drop(columns=["code_digest", "numerics"])  # rows that do not say which code made them
    assert len(tables.code_warnings(unknown)) == 1


def test_only_the_temporary_files_of_dead_writers_on_this_machine_are_removed(tmp_path):
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    dead = tmp_path / f".table.csv.{files._HOST}.{dead_pid}.abc123.tmp"
    alive = tmp_path / f".table.csv.{files._HOST}.{os.getpid()}.def456.tmp"
    elsewhere = tmp_path / f".table.csv.otherhost.{dead_pid}.ghi789.tmp"
    finished_file = tmp_path / "table.csv"
    for path in (dead, alive, elsewhere, finished_file):
        path.write_text("x")
    assert files.remove_orphan_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, elsewhere, finished_file))


def test_a_checkpoint_being_replaced_is_never_missing_even_if_its_writer_dies_before_the_last_rename(
        tmp_path, monkeypatch):
    # a job killed at any instant leaves the checkpoint a resubmitted job reads (the farm's resumed_from_epoch)
    path = tmp_path / "run.pt"
    files.atomic_save({"epochs": 1}, path, keep_previous=True)
    real_replace = os.replace

    def dies_on_the_new_version(source, target):
        if os.fspath(target) == os.fspath(path):
            raise KeyboardInterrupt  # SIGKILL lands here: the new version is written but not yet in place
        real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", dies_on_the_new_version)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_save({"epochs": 2}, path, keep_previous=True)
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert torch.load(path) == {"epochs": 1} and torch.load(files.previous_path(path)) == {"epochs": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt", "run.pt.prev"]  # no temporary left behind
    files.atomic_save({"epochs": 3}, path, keep_previous=True)
    assert torch.load(path) == {"epochs": 3} and torch.load(files.previous_path(path)) == {"epochs": 1}
