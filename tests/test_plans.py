"""One run plan: every notebook that trains, executed at the ci profile as papermill executes it, trains exactly
the runs its module's `plan("ci")` lists (the same names and run keys), no more, no fewer; and the notebooks that
train nothing plan nothing. Each notebook starts from an empty results folder, so that every run it asks for is
trained by it."""

from pathlib import Path

import papermill
import pytest

from paraformer.core.paths import results_dir
from paraformer.core.runcache import read_record
from paraformer.experiments.plan import key_of
from paraformer.tools.estimate import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
TRAINING = [name for name, module in NOTEBOOKS.items() if module.plan("ci")]


def test_the_notebooks_that_train_are_every_one_but_the_speed_and_the_report_notebook():
    assert sorted(NOTEBOOKS) == sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    assert sorted(set(NOTEBOOKS) - set(TRAINING)) == ["06_speedup", "99_report"]


@pytest.mark.parametrize("notebook", TRAINING)
def test_a_notebook_trains_exactly_its_plan(notebook, tmp_path, monkeypatch):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    monkeypatch.setenv("PARAFORMER_PROGRESS", "text")
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"), str(tmp_path / "executed.ipynb"),
                               kernel_name="python3", cwd=str(ROOT / "notebooks"), progress_bar=False,
                               execution_timeout=900)
    folder = results_dir("ci")
    trained = {(record.name, record.key) for record in map(read_record, (folder / "runs").glob("*.json"))}
    planned = {(run.name, key_of(run, folder)) for run in NOTEBOOKS[notebook].plan("ci")}
    assert trained and planned == trained
