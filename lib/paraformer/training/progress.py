"""A run's progress on screen: one bar per run, one tick per epoch."""

from __future__ import annotations

import os
import sys

import torch

from ..core.config import Recipe


def progress_bar(total: int, desc: str, initial: int, enabled: bool):
    """Under papermill (PARAFORMER_PROGRESS=text, set by the Makefile) a plain-text bar that prints a line per
    epoch keeps the log readable; in Jupyter a widget; None when not `enabled`."""
    if not enabled:
        return None
    if os.environ.get("PARAFORMER_PROGRESS") == "text":
        from tqdm import tqdm
        # no bar and no width limit: a fixed width cut the line mid-number once the metrics were appended
        return tqdm(total=total, desc=desc, initial=initial, unit="epoch", file=sys.stdout, mininterval=0,
                    dynamic_ncols=False, ncols=None,
                    bar_format="{desc}: epoch {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, initial=initial, unit="epoch")


def progress_label(name: str, recipe: Recipe, device: torch.device) -> str:
    """The run's name, with its training method where the name does not say it (a custom name such as
    "cifar10-task2-expand" says what the run is; "joint" beside it would not), and the device."""
    method = "" if recipe.method == "joint" or name.endswith(f"-{recipe.method}") else f" ({recipe.method})"
    return f"{name}{method} [{device.type}]"
