"""Whether a finished run is still this code's: the numbers code computes, not its text, decide.

Two parts:
- `code_digest`: a hash of the training code (the trainer and every package module it imports, directly or
  through others) read as syntax trees without docstrings, so that comments and docstrings change nothing;
- the numerics canary (`paraformer.training.canary`): tiny fixed runs of every method, solver and execution path,
  whose losses, predictions and weights are hashed into one digest.

`numerics.json` beside this module records, for each version of the training code it has seen, a label of the
numbers it computes, and per kind of machine (float rounding differs between kinds of CPU) the canary digest each
code computed there; `python -m paraformer.tools.numerics --update` (`make numerics`) runs the canary and records
the running code. Every record carries its code's digest and numbers label (`RunResult.numerics`). A record is
current when it was made by code with the same numbers as the running code: an edit that alters no number leaves
every finished run current once `make numerics` has recorded it, while one that alters a number changes the canary
and makes them stale. Code the file does not know (an edit not yet recorded) counts as computing numbers of its
own: the runs it trains are current for it alone. The test suite holds the file to the code on every kind of
machine it has a canary for (`tests/test_numerics.py`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path

import torch

from ..core.files import atomic_write_json
from ..core.provenance import device_name
from ..core.runcache import RunCacheError, RunResult, read_record

PACKAGE = Path(__file__).resolve().parents[1]
NUMERICS_FILE = Path(__file__).with_name("numerics.json")
ENTRY = PACKAGE / "training" / "trainer.py"  # what training executes starts here


def _imported_files(file: Path, package: Path) -> list[Path]:
    """The package's modules that `file` imports, at module or function level, relative or absolute."""
    here = file.relative_to(package).with_suffix("").parts[:-1]  # the subpackage the module is in
    found = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        targets = []
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - node.level + 1]
            module = (*base, *node.module.split(".")) if node.module else base
            targets = [module] + [(*module, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == package.name:
            module = tuple(node.module.split(".")[1:])
            targets = [module] + [(*module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == package.name]
        for parts in targets:
            for candidate in (package.joinpath(*parts).with_suffix(".py") if parts else None,
                              package.joinpath(*parts, "__init__.py")):
                if candidate is not None and candidate.is_file():
                    found.append(candidate)
    return found


def training_modules(package: Path = PACKAGE) -> list[Path]:
    """The source files of `package` that training executes: the trainer and every module of the package it
    imports, directly or through others (and the packages they sit in). Read from the import statements, so a new
    dependency of training is never left out."""
    entry = package / ENTRY.relative_to(PACKAGE)
    found, todo = set(), [entry]
    while todo:
        file = todo.pop()
        if file in found:
            continue
        found.add(file)
        todo += _imported_files(file, package)
        todo += [folder / "__init__.py" for folder in file.parents if folder == package or package in folder.parents]
    return sorted(found)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def package_digest(package: Path = PACKAGE) -> str:
    """A hash of the `training_modules` of `package`: their paths and syntax trees without docstrings (comments
    are not in a syntax tree)."""
    h = hashlib.sha256()
    for file in training_modules(package):
        tree = _without_docstrings(ast.parse(file.read_text(), str(file)))
        h.update(f"{file.relative_to(package).as_posix()}\0".encode())
        h.update(ast.dump(tree, include_attributes=False).encode())
    return h.hexdigest()[:12]


_code_digest: str | None = None


def code_digest() -> str:
    """`package_digest` of the code loaded into this process (read once)."""
    global _code_digest
    if _code_digest is None:
        _code_digest = package_digest()
    return _code_digest


_recorded: dict | None = None


def recorded() -> dict:
    """numerics.json: `code_digest`, the code it was last made for; `known`, code digest -> the label of the numbers
    that code computes (the canary digest that first told them apart); `kinds`, per kind of machine (`machine_kind`)
    the canary digest of every code measured there and the per-run digests of the last one."""
    global _recorded
    if _recorded is None:
        _recorded = (json.loads(NUMERICS_FILE.read_text()) if NUMERICS_FILE.is_file() else
                     {"code_digest": "", "known": {}, "kinds": {}})
    return _recorded


def machine_kind() -> str:
    """The CPU model and torch version: float rounding, and so every canary digest, differs between kinds of CPU
    and torch versions, so canary digests are compared only within one kind."""
    return f"{device_name(torch.device('cpu')).split(',')[0]}, torch {torch.__version__}"


def current_numerics() -> str:
    """The numbers label of the running code, or "" where numerics.json does not know this code."""
    return recorded()["known"].get(code_digest(), "")


def expected_canary(kind: str) -> tuple[str, dict[str, str]] | None:
    """What the canary must compute for the running code on a machine of `kind`, as (canary digest, per-run digests
    where recorded): what `kind` recorded for this code, else for a code known to compute the same numbers (so that
    a claim made on one kind is checked on every other), else, for code not recorded yet, for the last code
    recorded there (what an edit is compared with); None where `kind` has nothing to compare with."""
    known, entry = recorded()["known"], recorded()["kinds"].get(kind)
    if not entry:
        return None
    if code_digest() in entry["canaries"]:
        code = code_digest()
    elif code_digest() in known:
        code = next((other for other in entry["canaries"] if known.get(other) == known[code_digest()]), None)
    else:
        code = entry["last"]
    if code is None:
        return None
    canary = entry["canaries"][code]
    return canary, entry["runs"] if entry["canaries"][entry["last"]] == canary else {}


def numbers_of(code: str, numerics: str = "") -> str:
    """What the numbers of a run made by code `code` (a `code_digest`) are the numbers of: its canary digest
    (`numerics` where the record has one, else the one numerics.json knows for that code), else that code alone."""
    return numerics or recorded()["known"].get(code, "") or f"code:{code}"


def is_stale(record: RunResult) -> bool:
    """Whether `record` was made by code that is not known to compute what the running code computes. The same
    code computes the same numbers, whatever the canary said then (a canary can gain runs)."""
    if record.code_digest == code_digest():
        return False
    return numbers_of(record.code_digest, record.numerics) != numbers_of(code_digest())


def gains_runs_only(before: dict[str, str], after: dict[str, str]) -> bool:
    """Whether the per-run canary digests `after` compute every run of `before` alike and only add runs (a canary
    extended to a new path of the code, e.g. a new recipe whose runs have keys of their own)."""
    return bool(before) and set(after) > set(before) and all(after[name] == digest for name, digest in before.items())


def run_set(digests: dict[str, str]) -> str:
    """Which runs a canary ran: canary digests are comparable only between canaries of the same runs (a canary that
    gained a run has a new digest for numbers that did not change)."""
    return hashlib.sha256(",".join(sorted(digests)).encode()).hexdigest()[:12]


def _run_set_of(entry: dict, code: str) -> str | None:
    """The run set of `code`'s canary on a kind (None: not recorded, from before run sets were kept)."""
    if code in entry.get("run_sets", {}):
        return entry["run_sets"][code]
    return run_set(entry["runs"]) if code == entry["last"] and entry["runs"] else None


def record(digests: dict[str, str], canary: str, kind: str) -> dict:
    """Record that the running code computes `canary` (its per-run `digests`) on a machine of `kind`, and so which
    numbers it computes. New code computes those of a code whose canary on `kind` was the same, or of the last code
    recorded on `kind` where the canary only gained runs and computes the others alike (`gains_runs_only`), else
    numbers of its own (labelled `canary`). Known code keeps its label unless `kind` contradicts it, by a different canary of
    the same runs from a code with that label: a change seen on any kind wins (recording the same code twice changes
    nothing). Returns what it wrote to numerics.json."""
    values = json.loads(json.dumps(recorded()))
    known, code = values["known"], code_digest()
    entry = values["kinds"].setdefault(kind, {"canaries": {}, "runs": {}, "last": ""})
    others = {other: digest for other, digest in entry["canaries"].items() if other != code and other in known}
    if code not in known:
        same = next((known[other] for other, digest in others.items() if digest == canary), None)
        if same is None and gains_runs_only(entry["runs"], digests) and entry["last"] in known:
            same = known[entry["last"]]  # every run the last code computed is computed alike: only new runs differ
        known[code] = same or canary
    elif any(known[other] == known[code] and digest != canary and _run_set_of(entry, other) == run_set(digests)
             for other, digest in others.items()):
        known[code] = canary
    entry.setdefault("run_sets", {})[code] = run_set(digests)
    entry["canaries"][code], entry["runs"], entry["last"] = canary, digests, code
    values["code_digest"] = code
    global _recorded
    atomic_write_json(values, NUMERICS_FILE)
    _recorded = values
    return values


def stale_records(root: Path) -> tuple[list[Path], list[RunCacheError], int]:
    """The finished runs under `root`/runs that are stale (`is_stale`), those whose record is damaged (unreadable,
    truncated or edited: the errors, each naming its file), and how many records there are."""
    folder = Path(root) / "runs"
    records = sorted(folder.glob("*.json")) if folder.is_dir() else []
    stale, damaged = [], []
    for path in records:
        try:
            if is_stale(read_record(path)):
                stale.append(path)
        except RunCacheError as error:
            damaged.append(error)  # not stale: retraining "stale" runs would not replace it
    return stale, damaged, len(records)


def report_stale(root: Path) -> int:
    """One loud line when the run cache under `root` holds stale runs (what `make reproduce` prints last), and one
    per damaged record."""
    stale, damaged, total = stale_records(root)
    running = current_numerics() or f"code {code_digest()}, not in numerics.json (make numerics)"
    for error in damaged:
        print(f"WARNING: damaged run record: {error}", file=sys.stderr)
    if stale:
        print(f"WARNING: {len(stale)} of {total} finished runs in {stale[0].parent} were trained by code not known to "
              f"compute this code's numbers ({running}); the tables built from them say so. `make reproduce "
              f"RETRAIN=stale` retrains them.", file=sys.stderr)
    elif not damaged:
        print(f"run cache: all {total} finished runs compute this code's numbers ({running})")
    return 0
