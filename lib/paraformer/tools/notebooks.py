"""The committed notebooks: source notebooks that a run never changes, executed copies a reader can read.

A source notebook (notebooks/*.ipynb) is committed without the outputs of a run, without papermill's or Jupyter's
execution metadata, and without widget state: only the stored outputs of its `regression-check` cells, which nbval
compares a run against (docs/tests.md). `clean` makes a notebook so; `pre_save_hook` does it to every save of a
source notebook of this checkout from Jupyter, keeping the regression references as they are on disk, so that Run
All and JupyterLab's autosave leave the committed file as it was (docs/notebooks.md). This module is also the
Jupyter server extension that registers that hook: jupyter-config/jupyter_server_config.d/paraformer.json enables
it, and `make env` installs that file into the environment's etc/jupyter.

An executed copy (results/notebooks/*.ipynb) is what papermill wrote; `finish` removes papermill's
`injected-parameters` cell and writes the values it injected into the `parameters` cell, so that a reader sees
`profile = "quick"` where the parameters are and no second cell that overrides them.

    python -m paraformer.tools.notebooks clean notebooks/*.ipynb            # make refresh-notebooks
    python -m paraformer.tools.notebooks finish results/notebooks/.01_layer_sweep.partial.ipynb   # make reproduce
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from ..core.config import ConfigError, OneLineArgumentParser
from ..core.files import atomic_write_text
from ..core.paths import project_root

REGRESSION_TAG = "regression-check"  # cells whose stored outputs nbval compares (# NBVAL_CHECK_OUTPUT)
PARAMETERS_TAG, INJECTED_TAG = "parameters", "injected-parameters"  # papermill's
# What a run adds to a notebook's metadata: papermill's record of the run, Jupyter's timings, ipywidgets' state.
RUN_NOTEBOOK_METADATA = ("papermill", "widgets")
RUN_CELL_METADATA = ("papermill", "execution", "ExecuteTime", "collapsed", "scrolled")
# A regression check is collapsed, source and output, in every saved source notebook: JupyterLab shows a collapsed
# output again once its cell has run, and a save would otherwise keep it shown.
REGRESSION_HIDDEN = {"outputs_hidden": True, "source_hidden": True}


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def references(notebook: dict) -> dict[str, tuple[list, int | None]]:
    """Cell id -> (outputs, execution count) of each regression-check cell: what nbval compares a run against."""
    return {cell["id"]: (cell.get("outputs", []), cell.get("execution_count"))
            for cell in notebook.get("cells", []) if cell["cell_type"] == "code" and REGRESSION_TAG in _tags(cell)}


def clean(notebook: dict, kept: dict[str, tuple[list, int | None]] | None = None,
          metadata: dict | None = None) -> dict:
    """`notebook` as a source notebook is committed, changed in place and returned: no outputs or execution counts
    but the regression references in `kept` (cell id -> outputs, count; None: the notebook's own), collapsed
    (`REGRESSION_HIDDEN`), no run metadata;
    its notebook metadata `metadata` where given (the committed file's: the kernel's language_info, which differs
    between Python versions, is not a run's to change)."""
    kept = references(notebook) if kept is None else kept
    if metadata is not None:
        notebook["metadata"] = json.loads(json.dumps(metadata))  # a copy, so that no caller's dict is shared
    for key in RUN_NOTEBOOK_METADATA:
        notebook["metadata"].pop(key, None)
    for cell in notebook["cells"]:
        for key in RUN_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if cell["cell_type"] != "code":
            continue
        outputs, count = kept.get(cell.get("id"), ([], None)) if REGRESSION_TAG in _tags(cell) else ([], None)
        cell["outputs"], cell["execution_count"] = json.loads(json.dumps(outputs)), count
        if REGRESSION_TAG in _tags(cell):
            cell["metadata"]["jupyter"] = dict(REGRESSION_HIDDEN)
    return notebook


def source_notebooks_dir() -> Path:
    return (project_root() / "notebooks").resolve()


def pre_save_hook(model: dict, path: str, contents_manager, **kwargs) -> None:
    """Jupyter's ContentsManager.pre_save_hook: a save of one of this checkout's source notebooks is `clean`ed
    against the file on disk (its regression references and notebook metadata stay); other files are left alone."""
    if model.get("type") != "notebook" or not model.get("content"):
        return
    os_path = Path(contents_manager.root_dir, path.strip("/")).resolve()
    if os_path.parent != source_notebooks_dir():
        return
    committed = json.loads(os_path.read_text()) if os_path.is_file() else {}
    clean(model["content"], references(committed), committed.get("metadata"))


def _jupyter_server_extension_points() -> list[dict]:
    """Jupyter finds the server extension here (enabled by jupyter-config/jupyter_server_config.d/paraformer.json)."""
    return [{"module": __name__}]


def _load_jupyter_server_extension(serverapp) -> None:
    # registered beside any pre_save_hook a user configured, which the config option would replace
    serverapp.contents_manager.register_pre_save_hook(pre_save_hook)
    serverapp.log.info(f"paraformer: saves of {source_notebooks_dir()}/*.ipynb keep no outputs of a run")


# --- executed copies -------------------------------------------------------------------------------------------

def _source(cell: dict) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def injected_values(source: str) -> dict[str, str]:
    """name -> the source text of its value, for each `name = value` of papermill's injected-parameters cell."""
    return {node.targets[0].id: ast.get_source_segment(source, node.value) for node in ast.parse(source).body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)}


def with_values(source: str, values: dict[str, str]) -> str:
    """The parameters cell's `source` with the value of each name in `values` replaced by its text there (its
    comments and the other names unchanged). A name the cell does not assign is refused by name."""
    assigned = {node.targets[0].id: node.value for node in ast.parse(source).body if isinstance(node, ast.Assign)
                and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)}
    unknown = sorted(set(values) - set(assigned))
    if unknown:
        raise ConfigError(f"papermill injected {unknown}, which the parameters cell does not assign (its names: "
                          f"{sorted(assigned)}); the run should have stopped at check_parameters: run it again")
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def at(line: int, column: int) -> int:  # ast's positions: 1-based lines, columns in UTF-8 bytes
        return offsets[line - 1] + len(lines[line - 1].encode()[:column].decode())

    # from the last to the first, so that earlier positions stay valid
    for name in sorted(values, key=lambda n: (assigned[n].lineno, assigned[n].col_offset), reverse=True):
        node = assigned[name]
        start, end = at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset)
        source = source[:start] + values[name] + source[end:]
    return source


def finish(notebook: dict) -> dict:
    """An executed copy without its injected-parameters cell, the values papermill injected written into the
    parameters cell; changed in place and returned. Without an injected cell (no -p), unchanged."""
    cells = notebook["cells"]
    injected = [cell for cell in cells if INJECTED_TAG in _tags(cell)]
    if not injected:
        return notebook
    parameters = [cell for cell in cells if PARAMETERS_TAG in _tags(cell)]
    if len(injected) != 1 or len(parameters) != 1:
        raise ConfigError(f"an executed notebook needs one parameters cell and at most one injected-parameters cell; "
                          f"this one has {len(parameters)} and {len(injected)}")
    parameters[0]["source"] = with_values(_source(parameters[0]), injected_values(_source(injected[0])))
    cells.remove(injected[0])
    return notebook


# --- command line ------------------------------------------------------------------------------------------------

def _rewrite(path: Path, change) -> bool:
    """Apply `change` to the notebook at `path` and write it back atomically as Jupyter writes notebooks (nbformat,
    a final newline); True if it changed."""
    import nbformat

    text = path.read_text()
    notebook = nbformat.from_dict(change(nbformat.reads(text, as_version=nbformat.NO_CONVERT)))
    new = nbformat.writes(notebook, version=nbformat.NO_CONVERT) + "\n"
    if new != text:
        atomic_write_text(new, path)
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m paraformer.tools.notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("clean", "finish"),
                        help="clean: a source notebook as committed; finish: an executed copy as a reader reads it")
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.notebooks if not path.is_file()]
    if missing:
        parser.error(f"no such notebook(s): {missing}")
    for path in args.notebooks:
        try:
            changed = _rewrite(path, clean if args.command == "clean" else finish)
        except ConfigError as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 1
        print(f"{path}: {'rewritten' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
