"""The notebooks' parameters and where their results go: a misspelt papermill parameter or an unknown profile fails,
no committed notebook carries papermill's injected-parameters cell, and every profile but quick writes into its own
folder, whatever starts the notebook."""

import ast
import json
import re
from pathlib import Path
from types import SimpleNamespace

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


def test_a_tables_text_is_shown_as_written_and_its_numbers_to_two_decimals(results_root):
    # a learning rate kept as text ("0.001") once read 0.00 in the Markdown, every rate alike
    table = pd.DataFrame({"label": ["ViT-6", "Para-F-1-6"], "val_acc": [89.504, 88.931],
                          "chosen_lr": ["0.001", "4e-05"], "note": [None, "tied"]})
    _, markdown = write_table(table, "t", "title", profile="ci")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.read_text().splitlines()
            if line.startswith("|")]
    assert rows[0] == ["label", "val_acc", "chosen_lr", "note"]
    assert rows[2:] == [["ViT-6", "89.50", "0.001", "-"], ["Para-F-1-6", "88.93", "4e-05", "tied"]]


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


# --- source notebooks that a run leaves as committed -----------------------------------------------------------

from paraformer.tools import notebooks as tool  # noqa: E402 (the tool these tests are about)

SOURCES = sorted((ROOT / "notebooks").glob("*.ipynb"))  # 99_report too
EXECUTED = sorted((ROOT / "results").rglob("notebooks/*.ipynb"))
RUN_METADATA = {"papermill", "execution", "ExecuteTime", "widgets"}


def is_reference(cell: dict) -> bool:
    return "regression-check" in cell["metadata"].get("tags", [])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_a_source_notebook_carries_no_run_but_its_regression_references(path):
    notebook = json.loads(path.read_text())
    assert RUN_METADATA & set(notebook["metadata"]) == set()
    for cell in notebook["cells"]:
        assert RUN_METADATA & set(cell["metadata"]) == set()
        if cell["cell_type"] == "code" and not is_reference(cell):
            assert (cell["outputs"], cell["execution_count"]) == ([], None)


@pytest.mark.parametrize("path", SOURCES + EXECUTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_regression_check_is_hidden_from_a_reader(path):
    checks = [cell for cell in cells(path) if source(cell).startswith("# NBVAL_CHECK_OUTPUT") or is_reference(cell)]
    assert [(is_reference(cell), cell["metadata"].get("jupyter")) for cell in checks] == \
        [(True, {"source_hidden": True, "outputs_hidden": True})] * len(checks)


def test_the_regression_checks_are_found():  # else the test above would pass by checking none
    assert sum(is_reference(cell) for path in SOURCES for cell in cells(path)) >= len(SOURCES) - 1  # 06 has none


def run_all(notebook: dict) -> dict:
    """`notebook` as JupyterLab saves it after Run All on another Python: every code cell with outputs (a widget's
    among them), execution counts and timings, collapsed outputs shown, the kernel's language_info and widget
    state."""
    for count, cell in enumerate((c for c in notebook["cells"] if c["cell_type"] == "code"), start=1):
        cell["execution_count"] = count
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": f"cell {count}\n"},
                           {"output_type": "display_data", "metadata": {},
                            "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "m", "version_major": 2,
                                                                                   "version_minor": 0},
                                     "text/plain": "HBox()"}}]
        cell["metadata"]["execution"] = {"iopub.status.busy": "2026-12-06T10:00:00Z"}
        # JupyterLab shows a collapsed output again once its cell has run (seen in Chromium, tools/lab_check.py)
        cell["metadata"].get("jupyter", {}).pop("outputs_hidden", None)
    notebook["metadata"]["language_info"]["version"] = "3.99.0"
    notebook["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return notebook


@pytest.mark.parametrize("name", ["01_layer_sweep.ipynb", "99_report.ipynb"])  # 99: a stored regression reference
def test_saving_a_source_notebook_after_run_all_writes_the_committed_file_back(name):
    import nbformat

    path = ROOT / "notebooks" / name
    model = {"type": "notebook", "format": "json", "content": run_all(json.loads(path.read_text()))}
    tool.pre_save_hook(model=model, path=f"notebooks/{name}", contents_manager=SimpleNamespace(root_dir=str(ROOT)))
    # as Jupyter's FileContentsManager writes it
    assert nbformat.writes(nbformat.from_dict(model["content"]), version=nbformat.NO_CONVERT) + "\n" == \
        path.read_text()


def test_a_notebook_outside_the_source_folder_is_saved_as_it_is(tmp_path):
    executed = run_all(json.loads((ROOT / "notebooks" / "01_layer_sweep.ipynb").read_text()))
    model = {"type": "notebook", "content": json.loads(json.dumps(executed))}
    tool.pre_save_hook(model=model, path="results/notebooks/01_layer_sweep.ipynb",
                       contents_manager=SimpleNamespace(root_dir=str(ROOT)))
    assert model["content"] == executed


def test_jupyter_enables_the_hook_from_the_projects_config():
    from jupyter_server.extension.config import ExtensionConfigManager

    enabled = ExtensionConfigManager(read_config_path=[str(ROOT / "jupyter-config")]).get_jpserver_extensions()
    assert enabled == {"paraformer.tools.notebooks": True}
    assert tool._jupyter_server_extension_points() == [{"module": "paraformer.tools.notebooks"}]
    registered = []
    server = SimpleNamespace(contents_manager=SimpleNamespace(register_pre_save_hook=registered.append),
                             log=SimpleNamespace(info=lambda message: None))
    tool._load_jupyter_server_extension(server)
    assert registered == [tool.pre_save_hook]


def tiny_notebook(*sources: tuple[str, list[str]]) -> dict:
    """A notebook of (tags, source) code cells."""
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3"}},
            "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {"tags": tags}, "execution_count": None,
                       "outputs": [], "source": text} for i, (tags, text) in enumerate(sources)]}


PARAMETERS = ('profile = "ci"  # ci, quick or paper\nmodels = ["1-1",\n          "1-6"]  # Para-F names\n'
              'datasets = None\n\ndeclare_parameters(namespace=globals())')


def test_an_executed_copy_shows_the_injected_values_in_the_parameters_cell_and_no_injected_cell(tmp_path):
    executed = tiny_notebook((["parameters"], PARAMETERS),
                             (["injected-parameters"], '# Parameters\nprofile = "quick"\nmodels = ["1-24"]\n'),
                             ([], "check_parameters(globals())"))
    path = tmp_path / "executed.ipynb"
    path.write_text(json.dumps(executed))
    assert tool.main(["finish", str(path)]) == 0
    finished = json.loads(path.read_text())
    assert [cell["id"] for cell in finished["cells"]] == ["c0", "c2"]
    assert source(finished["cells"][0]) == ('profile = "quick"  # ci, quick or paper\nmodels = ["1-24"]  # Para-F '
                                            'names\ndatasets = None\n\ndeclare_parameters(namespace=globals())')
    assert tool.main(["finish", str(path)]) == 0 and json.loads(path.read_text()) == finished  # nothing injected


def test_finishing_refuses_an_injected_name_the_parameters_cell_lacks():
    with pytest.raises(ConfigError):
        tool.with_values(PARAMETERS, {"profle": '"quick"'})


def test_cleaning_a_refreshed_notebook_keeps_only_its_regression_references(tmp_path):
    executed = run_all(json.loads((ROOT / "notebooks" / "99_report.ipynb").read_text()))
    path = tmp_path / "99_report.ipynb"
    path.write_text(json.dumps(executed))
    assert tool.main(["clean", str(path)]) == 0
    cleaned = json.loads(path.read_text())
    kept = [(cell["id"], cell["execution_count"], len(cell["outputs"])) for cell in cleaned["cells"]
            if cell["cell_type"] == "code" and (cell["outputs"] or cell["execution_count"] is not None)]
    references = [cell["id"] for cell in cleaned["cells"] if is_reference(cell)]
    assert [cell_id for cell_id, *_ in kept] == references and all(count and n == 2 for _, count, n in kept)
    assert RUN_METADATA & set(cleaned["metadata"]) == set()


# --- the answer first ------------------------------------------------------------------------------------------

CLAIMING = [path for path in NOTEBOOKS if path.stem[:2] != "99"]


def bare_calls(cell: dict) -> list[str]:
    """Every function or method a cell calls at its top level, as written ("check_parameters", "top_verdicts.update")."""
    names = []
    for statement in ast.parse(source(cell)).body:
        value = statement.value if isinstance(statement, (ast.Expr, ast.Assign)) else None
        if isinstance(value, ast.Call):
            names.append(ast.unparse(value.func))
    return names


@pytest.mark.parametrize("path", CLAIMING, ids=lambda p: p.stem)
def test_a_notebook_shows_its_verdicts_under_its_title_and_parameters_and_updates_them_once_written(path):
    notebook = cells(path)
    title, parameters, first = notebook[:3]
    assert (title["cell_type"], source(title).startswith("# ")) == ("markdown", True)
    assert "parameters" in parameters["metadata"]["tags"]
    assert bare_calls(first)[:2] == ["check_parameters", "show_verdicts"]
    later = [cell for cell in notebook[3:] if cell["cell_type"] == "code"]
    assert sum("top_verdicts.update" in bare_calls(cell) for cell in later) == 1
    rebound = {node.id for cell in later for node in ast.walk(ast.parse(source(cell)))
               if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    assert "top_verdicts" not in rebound  # a later cell reusing the name would break the update


def prose_lists(code: str) -> list[str]:
    """Every name bound to a list of two or more texts (string literals or f-strings) with words in them, such as
    `notes = [...]`; lists of names ("1-1", "1-6") are no prose."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List) and len(node.value.elts) > 1:
            texts = [e for e in node.value.elts if isinstance(e, ast.JoinedStr)
                     or (isinstance(e, ast.Constant) and isinstance(e.value, str))]
            if len(texts) == len(node.value.elts) and any(" " in ast.unparse(e) for e in texts):
                found.append(ast.unparse(node.targets[0]))
    return found


def test_the_prose_check_finds_a_notes_list():
    assert prose_lists('notes = ["the quick profile trains 5 epochs", f"on {device}"]\nmodels = ["1-1", "1-6"]') == \
        ["notes"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_no_notebook_cell_holds_a_list_of_prose(path):
    assert [found for cell in cells(path) if cell["cell_type"] == "code" for found in prose_lists(source(cell))] == []


# --- in a kernel: one line per run, one line per error -----------------------------------------------------------

PROGRESS_CELL = """from paraformer.training.progress import progress_bar
bar = progress_bar(3, "{name} [cpu]", 0, True)
for epoch in range(3):
    bar.set_postfix(loss=f"{{1 / (epoch + 1):.3f}}", acc="50.00", refresh=False)
    bar.update(1)
bar.close()"""


def test_in_a_kernel_a_run_leaves_one_line_live_in_jupyterlab_and_printed_under_papermill(tmp_path, monkeypatch):
    monkeypatch.delenv("PARAFORMER_PROGRESS", raising=False)
    notebook = tiny_notebook(([], PROGRESS_CELL.format(name="live")),
                             ([], 'import os\nos.environ["PARAFORMER_PROGRESS"] = "text"\n'
                              + PROGRESS_CELL.format(name="papermill")))
    (tmp_path / "in.ipynb").write_text(json.dumps(notebook))
    executed = papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"),
                                          kernel_name="python3", progress_bar=False)
    live, printed = (cell["outputs"] for cell in executed["cells"])
    assert [(o["output_type"], sorted(o["data"])) for o in live] == [("display_data", ["text/html", "text/plain"])]
    assert [(o["output_type"], o["text"].count("\n")) for o in printed] == [("stream", 1)]
    for output, name in ((live[0]["data"]["text/plain"], "live"), (printed[0]["text"], "papermill")):
        assert re.fullmatch(rf"{name} \[cpu\]: epoch 3/3 in [0-9.]+ s, loss=0\.333, acc=50\.00\n?", output)


def test_a_misspelt_parameter_shows_one_line_not_a_traceback(results_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("out") / FASTEST.name
    with pytest.raises(papermill.PapermillExecutionError):
        execute(FASTEST, output, profle="quick")
    errors = [o for cell in json.loads(output.read_text())["cells"] for o in cell.get("outputs", [])
              if o["output_type"] == "error"]
    assert [(e["ename"], len(e["traceback"]), "\n" in e["traceback"][0]) for e in errors] == \
        [("UnknownParameterError", 1, False)]
