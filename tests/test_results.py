"""Result files: the code version recorded with every run says whether the *code* differed from a commit."""

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
