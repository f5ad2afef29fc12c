"""Where files live: the checkout, dataset caches, offline dataset copies and each profile's results folder.

Nothing here remembers a profile: a profile's folder is derived from its name wherever a writer needs it, so that
no call made earlier in a process (a notebook cell, a test) can move where a later one writes.
"""

from __future__ import annotations

import os
from pathlib import Path

# The committed results/ holds this profile's results alone; every other profile writes into a folder of its own
# inside it, so that no run of a notebook, whatever starts it (make, papermill, JupyterLab), can overwrite them.
COMMITTED_PROFILE = "quick"


def project_root() -> Path:
    """The checkout this package was installed from (editable install), else the current directory."""
    here = Path(__file__).resolve().parents[3]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def data_dir() -> Path:
    """Downloads and decoded-tensor caches. Override with PARAFORMER_DATA."""
    return Path(os.environ.get("PARAFORMER_DATA") or project_root() / "data")


def results_root() -> Path:
    """PARAFORMER_RESULTS (the tests point it at a temp dir), else the project's results/: the committed profile's
    folder, which also holds one folder per other profile."""
    return Path(os.environ.get("PARAFORMER_RESULTS") or project_root() / "results")


def results_dir(profile: str | None = None) -> Path:
    """Run records, checkpoints, tables, figures and benchmarks of `profile`: `results_root()` itself for the
    committed profile (and for None, a run that belongs to no profile), else `results_root()/<profile>`."""
    root = results_root()
    return root if profile in (None, COMMITTED_PROFILE) else root / profile


def own_data_results_dir(profile: str | None = None) -> Path:
    """Where a run on data that no notebook uses (a user's ImageFolder) is recorded: PARAFORMER_RESULTS's profile
    folder where it is set, else the git-ignored own-results/<profile>/ of the checkout, never the committed
    results/, whose records `load_runs` would mix into the notebooks' tables."""
    if os.environ.get("PARAFORMER_RESULTS"):
        return results_dir(profile)
    return project_root() / "own-results" / (profile or COMMITTED_PROFILE)


def offline_dirs() -> list[Path]:
    """Where offline dataset copies are looked for, in order: PARAFORMER_OFFLINE_DATA (os.pathsep-separated),
    then the project's ../shared/datasets."""
    extra = [Path(p) for p in os.environ.get("PARAFORMER_OFFLINE_DATA", "").split(os.pathsep) if p]
    return extra + [project_root().parent / "shared" / "datasets"]
