"""Result files: the code version recorded with every run says whether the *code* differed from a commit; tables
say when their runs came from other code; temporary files of killed writers are cleaned up, no one else's."""

import os
import subprocess

import paraformer.results as results
from paraformer.results import code_version


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_rewritten_results_do_not_mark_the_code_dirty_but_changed_code_does(tmp_path, monkeypatch):
    for path in ("lib/paraformer/model.py", "results/tables/table.md", "pyproject.toml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("one\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.setattr(results, "project_root", lambda: tmp_path)
    clean = code_version()
    assert "+g" in clean and not clean.endswith("-dirty")
    (tmp_path / "results/tables/table.md").write_text("a notebook rewrote this table\n")
    assert code_version() == clean
    (tmp_path / "lib/paraformer/model.py").write_text("two\n")
    assert code_version() == clean + "-dirty"


def test_outside_a_git_checkout_the_version_is_the_package_version(tmp_path, monkeypatch):
    from paraformer import __version__

    monkeypatch.setattr(results, "project_root", lambda: tmp_path)
    assert code_version() == __version__


def test_the_code_digest_follows_the_training_code_and_ignores_the_analyses(tmp_path):
    import shutil
    from pathlib import Path

    package = tmp_path / "paraformer"
    shutil.copytree(Path(results.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    names = {file.relative_to(package).as_posix() for file in results.training_modules(package)}
    # what train() runs, including modules reached only through others (the image decoders, via data)
    assert {"train.py", "model.py", "progressive.py", "execution.py", "data.py", "datasources.py",
            "config.py", "runcache.py"} <= names
    assert not names & {"flops.py", "speedup.py", "estimate.py", "notebook.py"}
    assert not any(name.startswith("experiments/") for name in names)
    before = results.package_digest(package)
    for analysis in ("experiments/stats.py", "experiments/report.py", "flops.py", "notebook.py"):
        (package / analysis).write_text((package / analysis).read_text() + "\n# a change to an analysis\n")
    assert results.package_digest(package) == before
    (package / "datasources.py").write_text((package / "datasources.py").read_text() + "\n# a decoder change\n")
    assert results.package_digest(package) != before


def test_a_table_from_runs_of_other_code_carries_one_warning_note(monkeypatch):
    import pandas as pd

    monkeypatch.setattr(results, "code_digest", lambda: "now")
    current = pd.DataFrame({"data_source": ["d"] * 2, "device": ["cpu"] * 2, "code_version": ["v"] * 2,
                            "code_digest": ["now", "now"]})
    assert results.code_warnings(current) == []
    assert len(results.provenance(current)) == 2
    mixed = current.assign(code_digest=["now", "before"])
    assert len(results.code_warnings(mixed)) == 1 and len(results.provenance(mixed)) == 3
    unknown = current.drop(columns="code_digest")  # rows that do not say which code made them
    assert len(results.code_warnings(unknown)) == 1


def test_only_the_temporary_files_of_dead_writers_on_this_machine_are_removed(tmp_path):
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    dead = tmp_path / f".table.csv.{results._HOST}.{dead_pid}.abc123.tmp"
    alive = tmp_path / f".table.csv.{results._HOST}.{os.getpid()}.def456.tmp"
    elsewhere = tmp_path / f".table.csv.otherhost.{dead_pid}.ghi789.tmp"
    finished_file = tmp_path / "table.csv"
    for path in (dead, alive, elsewhere, finished_file):
        path.write_text("x")
    assert results.remove_orphan_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, elsewhere, finished_file))
