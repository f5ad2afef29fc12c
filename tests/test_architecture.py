"""The package's layers: core < parallel < training < bench < experiments < tools. A module imports only from its
own layer or the ones below it, nothing imports tools, and no modules import each other in a circle, whether the
import sits at the top of a module or inside a function. Read from the source with `ast`, so that an import that
never runs in a test is checked too."""

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "paraformer"
LAYERS = ("core", "parallel", "training", "bench", "experiments", "tools")


def module_name(file: Path, package: Path) -> str:
    parts = file.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(file: Path, package: Path, known: set[str]) -> set[str]:
    """The package's modules that `file` imports, anywhere in it (a package's name where no module of it is named)."""
    here = module_name(file, package).split(".")
    if file.name != "__init__.py":
        here = here[:-1]  # the package the module sits in
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            for alias in node.names:
                candidate = ".".join(module + [alias.name])
                found.add(candidate if candidate in known else ".".join(module))
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name in known}


def import_graph(package: Path) -> dict[str, set[str]]:
    files = {module_name(f, package): f for f in package.rglob("*.py")}
    return {name: imports(file, package, set(files)) - {name} for name, file in files.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """"a -> b" for every import of a module from a higher layer, or of tools from outside tools."""
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            mine, theirs = layer(module), layer(target)
            if theirs is None:
                continue  # the package's own __init__ (its version)
            if mine is None or LAYERS.index(theirs) > LAYERS.index(mine) or (theirs == "tools" and mine != "tools"):
                bad.append(f"{module} -> {target}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_every_module_sits_in_a_layer():
    graph = import_graph(PACKAGE)
    assert [m for m in graph if layer(m) is None] == ["paraformer"]  # the package itself: its version alone
    assert {layer(m) for m in graph} - {None} == set(LAYERS)


def test_imports_go_only_downward_and_nothing_imports_tools():
    assert upward_imports(import_graph(PACKAGE)) == []


def test_no_modules_import_each_other_in_a_circle():
    assert cycles(import_graph(PACKAGE)) == []


@pytest.fixture
def package_copy(tmp_path) -> Path:
    copy = tmp_path / "paraformer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def add_line(file: Path, line: str) -> None:
    file.write_text(file.read_text() + "\n" + line + "\n")


def test_an_upward_import_inside_a_function_is_found(package_copy):
    add_line(package_copy / "core" / "model.py", "def _later():\n    from ..experiments.profiles import PROFILES")
    assert upward_imports(import_graph(package_copy)) == ["paraformer.core.model -> paraformer.experiments.profiles"]


def test_an_import_of_tools_and_a_circle_are_found(package_copy):
    add_line(package_copy / "experiments" / "plan.py", "import paraformer.tools.train")
    add_line(package_copy / "core" / "config.py", "from . import model")  # model imports config
    assert upward_imports(import_graph(package_copy)) == ["paraformer.experiments.plan -> paraformer.tools.train"]
    assert ["paraformer.core.config", "paraformer.core.model"] in cycles(import_graph(package_copy))
