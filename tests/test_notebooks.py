"""The notebooks' parameters and where their results go: a misspelt papermill parameter or an unknown profile fails,
no committed notebook carries papermill's injected-parameters cell, and every profile but quick writes into its own
folder, whatever starts the notebook."""

import ast
import json
from pathlib import Path

import pandas as pd
import papermill
import pytest
from matplotlib.figure import Figure

from paraformer.bench import speed as bench
from paraformer.core.config import ConfigError
from paraformer.core.paths import results_dir
from paraformer.core.steps import ALLOW_CPU
from paraformer.experiments.display import UnknownParameterError, check_parameters, declare_parameters
from paraformer.experiments.tables import save_figure, write_table

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
# The quickest notebook at ci (about 10 seconds), for the tests that execute one.
FASTEST = ROOT / "notebooks" / "07_finetune_pretrained.ipynb"


@pytest.fixture(autouse=True)
def results_root(tmp_path, monkeypatch):
    """A throw-away results root."""
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    return tmp_path


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def tagged(path: Path, tag: str) -> list[dict]:
    return [cell for cell in cells(path) if tag in cell.get("metadata", {}).get("tags", [])]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def calls(statement: ast.stmt) -> str | None:
    """The name of the function a statement calls, if it is a bare call."""
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        return getattr(statement.value.func, "id", None)
    return None


# --- what the committed notebooks contain ------------------------------------------------------------------

def test_the_notebooks_are_found():  # else every test parametrized by them would pass by running none
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_committed_notebook_has_an_injected_parameters_cell(path):
    assert tagged(path, "injected-parameters") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_ends_with_the_declare_call_and_the_next_code_cell_checks(path):
    (parameters,) = tagged(path, "parameters")
    body = ast.parse(source(parameters)).body
    assert calls(body[-1]) == "declare_parameters"
    following = cells(path)[cells(path).index(parameters) + 1:]
    first_code = next(cell for cell in following if cell["cell_type"] == "code")
    assert [calls(s) for s in ast.parse(source(first_code)).body if calls(s)][0] == "check_parameters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_sees_exactly_the_assigned_parameters_with_their_defaults(path):
    (parameters,) = tagged(path, "parameters")
    assigned = {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(source(parameters)).body
                if isinstance(s, ast.Assign)}
    inferred = {name: ast.literal_eval(p["default"]) for name, p in papermill.inspect_notebook(str(path)).items()}
    assert inferred == assigned
    assert assigned["profile"] == "ci"


# --- check_parameters ----------------------------------------------------------------------------------------

def kernel_namespace(**parameters) -> dict:
    """A namespace as a kernel has it after the parameters cell (IPython's own names included)."""
    namespace = {"In": ["", "profile = 'ci'"], "Out": {}, "get_ipython": print, "exit": exit, "quit": quit,
                 "open": open, "_i1": "profile = 'ci'", "__name__": "__main__", **parameters}
    declare_parameters(namespace)
    return namespace


def test_a_misspelt_parameter_fails_with_the_unknown_and_the_known_names():
    namespace = kernel_namespace(profile="ci", datasets=None)
    namespace.update(profle="quick", _i2="# Parameters", _2=None)  # papermill's injected cell, then IPython's
    with pytest.raises(UnknownParameterError) as error:
        check_parameters(namespace)
    assert (error.value.unknown, error.value.known) == (("profle",), ("datasets", "profile"))


def test_a_known_parameter_passes_and_changes_nothing_else(results_root, monkeypatch):
    monkeypatch.setenv(ALLOW_CPU, "1")  # the paper profile on this machine, maybe a CPU: asked for
    namespace = kernel_namespace(profile="ci", datasets=None)
    namespace.update(profile="paper", datasets=["cifar10"], check_parameters=check_parameters)
    before = dict(namespace)
    check_parameters(namespace)
    assert {k: v for k, v in namespace.items() if k != "_paraformer_parameters"} == \
        {k: v for k, v in before.items() if k != "_paraformer_parameters"}
    assert results_dir("paper") == results_root / "paper" and results_dir() == results_root


def test_an_unknown_profile_fails():
    namespace = kernel_namespace(profile="ci")
    namespace["profile"] = "nosuch"
    with pytest.raises(ConfigError):
        check_parameters(namespace)


def test_a_parameters_cell_without_the_declare_call_fails():
    with pytest.raises(ConfigError):
        check_parameters({"profile": "ci"})


def test_running_the_checking_cell_again_after_later_cells_does_not_fail():
    namespace = kernel_namespace(profile="ci")
    check_parameters(namespace)
    namespace.update(settings="later cells bind names", table=[1, 2])
    check_parameters(namespace)  # (it raises nothing: later names are no parameters)


# --- where results go ----------------------------------------------------------------------------------------

def written(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_every_profile_but_quick_writes_into_its_own_folder(results_root):
    table = pd.DataFrame({"model": ["Para-F-1-1"], "acc": [50.0]})
    write_table(table, "t", "title", profile="ci")
    save_figure(Figure(), "f", profile="ci")
    assert written(results_root) == {"ci/tables/t.csv", "ci/tables/t.md", "ci/figures/f.png"}
    assert results_dir("ci") == results_root / "ci"  # the run cache (train) and notebook 04's models too
    assert bench.bench_dir("ci") == results_root / "ci" / "bench" / "ci"
    write_table(table, "t", "title", profile="quick")
    assert written(results_root) - {"ci/tables/t.csv", "ci/tables/t.md", "ci/figures/f.png"} == {"tables/t.csv",
                                                                                              "tables/t.md"}
    assert bench.bench_dir("quick") == results_root / "bench" / "quick"


def test_the_committed_quick_benchmarks_are_found_without_configuration(monkeypatch):
    monkeypatch.delenv("PARAFORMER_RESULTS")
    committed = {p.stem for p in (ROOT / "results" / "bench" / "quick").glob("*.csv")}
    assert committed and set(bench.load("quick")) == committed


# --- executed as papermill executes them ---------------------------------------------------------------------

def execute(path: Path, output: Path, **parameters):
    return papermill.execute_notebook(str(path), str(output), parameters=parameters, kernel_name="python3",
                                      cwd=str(path.parent), progress_bar=False, execution_timeout=600)


def test_a_notebook_run_without_parameters_leaves_the_quick_results_alone(results_root, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PARAFORMER_PROGRESS", "text")
    execute(FASTEST, tmp_path_factory.mktemp("out") / FASTEST.name)
    files = written(results_root)
    assert "ci/tables/table4_finetune.csv" in files
    assert {f.split("/")[0] for f in files} == {"ci"}


def test_a_misspelt_papermill_parameter_stops_the_notebook(results_root, tmp_path_factory):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        execute(FASTEST, tmp_path_factory.mktemp("out") / FASTEST.name, profle="quick")
    assert error.value.ename == "UnknownParameterError"
    assert written(results_root) == set()
