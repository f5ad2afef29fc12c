"""Writing results: atomic files, the code version, and the tables and figures the notebooks produce.

Everything is written to a temporary file in the destination folder and renamed into place, so an
interrupted run never leaves a half-written record, table or checkpoint behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .config import project_root, results_dir


@contextmanager
def _atomic_path(path: Path):
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results and caches are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, path: Path) -> Path:
    with _atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(obj, path: Path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", path)


def atomic_save(obj, path: Path) -> Path:
    """torch.save, atomically."""
    import torch

    with _atomic_path(path) as tmp:
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


def write_table(df, name: str, title: str, notes: list[str] = ()) -> tuple[Path, Path]:
    """`results/tables/<name>.csv` and a Markdown version with a title and notes (provenance, caveats)."""
    folder = results_dir() / "tables"
    csv_path = atomic_write_text(df.to_csv(index=False, float_format="%.2f"), folder / f"{name}.csv")
    shown = df.astype(object).where(df.notna(), None)  # tabulate leaves None cells empty, but prints NaN as "nan"
    lines = [f"# {title}", "", shown.to_markdown(index=False, floatfmt=".2f", missingval="-"), ""]
    lines += [f"- {note}" for note in notes]
    md_path = atomic_write_text("\n".join(lines) + "\n", folder / f"{name}.md")
    return csv_path, md_path


def save_figure(fig, name: str) -> Path:
    """`results/figures/<name>.png`."""
    path = results_dir() / "figures" / f"{name}.png"
    with _atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def provenance(runs) -> list[str]:
    """Table notes saying where a table's runs came from: the data sources, devices and code versions of the rows
    of `runs` (a DataFrame with data_source, device and code_version columns)."""
    return [*[f"data: {source}" for source in sorted(set(runs["data_source"]))],
            f"runs on {sorted(set(runs['device']))}, code {sorted(set(runs['code_version']))}"]
