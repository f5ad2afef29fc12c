"""Writing results: atomic files, the code version and digest, and the tables and figures the notebooks produce.

Everything is written to a temporary file in the destination folder, named after its writer, and renamed into
place, so an interrupted run never leaves a half-written record, table or checkpoint behind, and the next start
can remove what a killed writer left (`remove_orphan_temporaries`). A write that fails for want of space or
permission raises `ResultsWriteError`, naming the file.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .config import project_root, results_dir


class ResultsWriteError(OSError):
    """A result, checkpoint or cache file could not be written (read-only folder, full disk); `path` names it."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        super().__init__(f"cannot write {self.path}: {reason}; free some space or point PARAFORMER_RESULTS "
                         f"(or PARAFORMER_DATA for dataset caches) at a writable folder")


# A temporary file names its writer (host and process id), so that the next start can tell the leftovers of a
# killed writer from the file another live process is writing at this moment.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        pass
    return True


def _writer_temporary(folder: Path, name: str) -> Path:
    """A new empty temporary file in `folder` named after `name` and its writer (see `remove_orphan_temporaries`)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def remove_orphan_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that writers on this machine left in `folder` when they were killed
    mid-write; returns what was removed. Files of live writers, or of other machines, are left alone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.glob(".*.tmp"):
        match = _TEMPORARY.fullmatch(path.name)
        if match and match["host"] == _HOST and not _writer_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_writable(folder: Path) -> None:
    """Fail now, naming the folder, rather than after an epoch of training when the first checkpoint is due."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _writer_temporary(folder, "probe").unlink()
    except OSError as error:
        raise ResultsWriteError(folder, error.strerror or str(error)) from error


@contextmanager
def _atomic_path(path: Path, keep_previous: bool = False):
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure delete it.
    With `keep_previous` the file it replaces is kept as `<path>.prev` (see `previous_path`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _writer_temporary(path.parent, path.name)
    except OSError as error:
        raise ResultsWriteError(path, error.strerror or str(error)) from error
    try:
        try:
            yield tmp
        except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
            if isinstance(error, OSError) and error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                                                                  errno.EACCES, errno.EIO):
                raise
            free = shutil.disk_usage(path.parent).free
            raise ResultsWriteError(path, f"{error} ({free / 2**20:.0f} MiB free there)") from error
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results and caches are meant to be shared
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def previous_path(path: Path) -> Path:
    """Where `atomic_save(..., keep_previous=True)` keeps the version it replaced."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def atomic_write_text(text: str, path: Path) -> Path:
    with _atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(obj, path: Path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", path)


def atomic_save(obj, path: Path, keep_previous: bool = False) -> Path:
    """torch.save, atomically; with `keep_previous` the replaced file stays as `previous_path(path)`."""
    import torch

    with _atomic_path(path, keep_previous) as tmp:
        torch.save(obj, tmp)
    return Path(path)


# What decides a run's numbers. Results files are tracked too, and a run that rewrites them must not make
# the runs after it look as if the code had changed.
CODE_PATHS = ("lib", "notebooks", "pyproject.toml")


def code_version() -> str:
    """The git commit of the checkout (with '-dirty' when the code in CODE_PATHS has uncommitted changes), else
    the package version."""
    from . import __version__

    def git(*args: str) -> str | None:
        out = subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        changes = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    except (OSError, subprocess.TimeoutExpired):
        return __version__
    if not commit or changes is None:
        return __version__
    return f"{__version__}+g{commit}" + ("-dirty" if changes else "")


_code_digest: str | None = None

# Where `training_modules` stops: train's command line reads profile settings from `experiments`, and those reach a
# run through its config, which the run key holds; the analyses there never change what a run trains.
ANALYSIS_PACKAGES = ("experiments",)


def training_modules(package: Path) -> list[Path]:
    """The source files of `package` (the paraformer folder) that can change what a run trains: train.py and every
    module of the package it imports, directly or through others, at module or function level, except the
    ANALYSIS_PACKAGES. Read from the import statements, so a new dependency of training is never left out."""
    found, todo = set(), [package / "train.py"]
    while todo:
        file = todo.pop()
        if file in found:
            continue
        found.add(file)
        here = file.relative_to(package).with_suffix("").parts[:-1]  # the subpackage the module is in
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
                if parts and parts[0] in ANALYSIS_PACKAGES:
                    continue
                for candidate in (package.joinpath(*parts).with_suffix(".py") if parts else None,
                                  package.joinpath(*parts, "__init__.py")):
                    if candidate is not None and candidate.is_file():
                        todo.append(candidate)
    return sorted(found)


def package_digest(package: Path) -> str:
    """A hash of the `training_modules` of `package`: their paths and contents."""
    h = hashlib.sha256()
    for file in training_modules(package):
        h.update(f"{file.relative_to(package).as_posix()}\0".encode())
        h.update(file.read_bytes())
    return h.hexdigest()[:12]


def code_digest() -> str:
    """A hash of the package's training code (`training_modules`): the code a run was trained by, with or without
    git. Runs whose records carry another digest were made by other code (see `paraformer.train`,
    PARAFORMER_RETRAIN); a change to the analyses, tables or notebooks leaves finished runs current."""
    global _code_digest
    if _code_digest is None:  # the code loaded into this process, read once
        _code_digest = package_digest(Path(__file__).resolve().parent)
    return _code_digest


def write_table(df, name: str, title: str, notes: list[str] = ()) -> tuple[Path, Path]:
    """`tables/<name>.csv` in the active profile's results folder (`results/tables/` for quick) and a Markdown
    version with a title and notes (provenance, caveats)."""
    folder = results_dir() / "tables"
    remove_orphan_temporaries(folder)
    csv_path = atomic_write_text(df.to_csv(index=False, float_format="%.2f"), folder / f"{name}.csv")
    shown = df.astype(object).where(df.notna(), None)  # tabulate leaves None cells empty, but prints NaN as "nan"
    lines = [f"# {title}", "", shown.to_markdown(index=False, floatfmt=".2f", missingval="-"), ""]
    lines += [f"- {note}" for note in notes]
    md_path = atomic_write_text("\n".join(lines) + "\n", folder / f"{name}.md")
    return csv_path, md_path


def save_figure(fig, name: str) -> Path:
    """`figures/<name>.png` in the active profile's results folder (`results/figures/` for quick)."""
    path = results_dir() / "figures" / f"{name}.png"
    remove_orphan_temporaries(path.parent)
    with _atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def provenance(runs) -> list[str]:
    """Table notes saying where a table's runs came from: the data sources, devices and code versions of the rows
    of `runs` (a DataFrame with data_source, device and code_version columns, and code_digest where known), and
    `code_warnings(runs)`."""
    return [*[f"data: {source}" for source in sorted(set(runs["data_source"]))],
            f"runs on {sorted(set(runs['device']))}, code {sorted(set(runs['code_version']))}", *code_warnings(runs)]


def record_provenance(records) -> list[str]:
    """`provenance` of finished runs' records (RunResult) rather than of a table's rows."""
    import pandas as pd

    return provenance(pd.DataFrame([{"data_source": r.data_source, "device": r.device, "code_version": r.code_version,
                                     "code_digest": r.code_digest} for r in records]))


def code_warnings(runs) -> list[str]:
    """One loud note when some of the runs behind a table (rows with a `code_digest` column; without one, every
    row counts as unknown code) were trained by other code than the code running now; else none."""
    digests = list(runs["code_digest"]) if "code_digest" in runs else [""] * len(runs)
    current = code_digest()
    other = sum(digest != current for digest in digests)
    if not other:
        return []
    return [f"WARNING: {other} of {len(digests)} runs were trained by other code than this (code digests "
            f"{sorted(set(digests) - {current})}, now {current}); their numbers may differ from what this code "
            f"gives: `make reproduce RETRAIN=stale` retrains them"]
