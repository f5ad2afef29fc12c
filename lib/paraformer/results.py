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


def code_version() -> str:
    """The git commit of the checkout (with '-dirty' when it has uncommitted changes), else the package version."""
    from . import __version__

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=project_root(),
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return f"{__version__}+g{out.stdout.strip()}"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return __version__


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
