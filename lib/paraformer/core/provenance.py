"""What a result records about where it came from: the code's version and the device it ran on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from .paths import project_root

# What decides a run's numbers. Results files are tracked too, and a run that rewrites them must not make the runs
# after it look as if the code had changed.
CODE_PATHS = ("lib", "notebooks", "pyproject.toml")


def code_version() -> str:
    """The git commit of the checkout (with '-dirty' when the code in CODE_PATHS has uncommitted changes), else
    the package version."""
    from .. import __version__

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


def device_name(device: torch.device) -> str:
    """The device in words, for every record, benchmark row and figure: the GPU's name, or the CPU's model and
    thread count (float rounding, and so the last digits of an accuracy, differ between kinds of CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "CPU")
    except OSError:
        model = "CPU"
    return f"{model}, {torch.get_num_threads()} thread(s)"
