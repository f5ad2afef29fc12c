"""What a training run logs beyond its record: loss, learning rate and gradient norm of every optimizer step, in
`<record>.steps.csv` (`runcache.step_log_path`) and, with `tensorboard` installed, TensorBoard (docs/logs.md).

Values stay on the device until flushed (every `every` steps and at each epoch's end), so the host never waits
for the device at every step. An epoch's rows are appended when it ends, before its checkpoint, and a resumed
run first drops the rows of epochs after its checkpoint: an interrupted run's log equals an uninterrupted one's,
and a row cut short by a kill is dropped with its epoch.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import pandas as pd
import torch

from .files import atomic_write_text

COLUMNS = ("epoch", "step", "stage", "loss_on", "lr", "loss", "grad_norm", "clip", "clipped")


class SilentStepLog:
    """The step log of a rank that does not write (`paraformer.parallel.processes`): it records nothing."""

    def record(self, *args, **kwargs) -> None:
        pass

    end_epoch = close = record


class StepLog:
    """Collects one row per optimizer step; `end_epoch` appends the epoch's rows to the CSV."""

    def __init__(self, path: Path, completed_epochs: int, every: int = 50, tensorboard_dir: Path | None = None,
                 first_step: int = 0):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"log_every={every!r} must be an int >= 1 (steps between reads of the logged values)")
        self.path, self.every = Path(path), every
        self._pending: list[tuple] = []  # rows whose loss and gradient norm are still tensors on the device
        self._rows: list[dict] = []  # this epoch's rows, as numbers
        keep_epochs(self.path, completed_epochs)
        self._writer = _tensorboard_writer(tensorboard_dir, first_step)

    def record(self, epoch: int, step: int, stage: int, loss_on: str, lr: float, loss: torch.Tensor,
               grad_norm: torch.Tensor, clip: float | None) -> None:
        self._pending.append((epoch, step, stage, loss_on, lr, loss.detach(), grad_norm.detach(), clip))
        if len(self._pending) >= self.every:
            self._read_pending()

    def _read_pending(self) -> None:
        if not self._pending:
            return
        # One transfer (one wait for the device) for all pending values.
        values = torch.stack([torch.stack([row[5].float(), row[6].float()]) for row in self._pending]).tolist()
        for (epoch, step, stage, loss_on, lr, _, _, clip), (loss, norm) in zip(self._pending, values):
            row = {"epoch": epoch, "step": step, "stage": stage, "loss_on": loss_on, "lr": lr, "loss": loss,
                   "grad_norm": norm, "clip": "" if clip is None else clip,
                   "clipped": int(clip is not None and norm > clip)}
            self._rows.append(row)
            if self._writer is not None:
                for tag, value in (("train/loss", loss), ("train/lr", lr), ("train/grad_norm", norm)):
                    self._writer.add_scalar(tag, value, step)
        self._pending.clear()

    def end_epoch(self, entry: dict | None = None) -> None:
        """Append this epoch's rows to the CSV (and `entry`'s test accuracy to TensorBoard)."""
        self._read_pending()
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerows(self._rows)
        if self._writer is not None and entry is not None and self._rows:
            self._writer.add_scalar("test/accuracy", entry["test_acc"], self._rows[-1]["step"])
            self._writer.flush()
        self._rows = []

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def keep_epochs(path: Path, completed_epochs: int) -> None:
    """Drop the rows of epochs after `completed_epochs` (and any row cut short by a kill) from the step log at
    `path`, so that a resumed run appends where its checkpoint left off; no log is kept for a fresh start."""
    path = Path(path)
    if not path.exists():
        return
    if completed_epochs == 0:
        path.unlink()
        return
    with open(path, newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    kept = lines[:1]
    for line in lines[1:]:
        fields = next(csv.reader([line]), [])
        complete = len(fields) == len(COLUMNS) and line.endswith("\n")
        if complete and fields[0].isdigit() and int(fields[0]) <= completed_epochs:
            kept.append(line)
    if kept != lines:
        atomic_write_text("".join(kept), path)


def _tensorboard_writer(folder: Path | None, first_step: int):
    """A SummaryWriter into `folder` when the tensorboard package is installed, else None. Events from steps at
    or after `first_step` (those a resumed run takes again) are purged."""
    if folder is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: the CSV holds the same values
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tensorboard's own deprecation warnings would reach notebook outputs
        return SummaryWriter(str(folder), purge_step=first_step or None)


def read_step_log(path: Path) -> pd.DataFrame:
    """A run's step log as a table (one row per optimizer step), refused with its name if it is not one."""
    table = pd.read_csv(path)
    if tuple(table.columns) != COLUMNS:
        raise ValueError(f"{path} is not a step log (columns {list(table.columns)}, expected {list(COLUMNS)})")
    return table


def clipping_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per kind of step (`loss_on`) of a step log: steps, how many were clipped, and the gradient norms' median."""
    clipped = table[table["clip"].notna()]
    summary = table.groupby("loss_on", sort=False).agg(steps=("step", "count"), clipped=("clipped", "sum"),
                                                      median_grad_norm=("grad_norm", "median")).reset_index()
    summary["clipped_fraction"] = summary["clipped"] / summary["steps"]
    summary.attrs["clipped_steps"] = int(clipped["clipped"].sum())
    return summary


def prefix_accuracy_curves(result) -> pd.DataFrame:
    """One row per epoch and prefix of a run (a `RunResult` of a plain model): the test accuracy of the model made
    of its first `prefix` branches, as evaluated after every epoch."""
    rows = [{"epoch": entry["epoch"], "prefix": k, "test_acc": acc}
            for entry in result.history for k, acc in enumerate(entry.get("prefix_test_acc", ()), start=1)]
    if not rows:
        raise ValueError(f"run {result.name} has no per-prefix accuracies (a class-incremental model has none)")
    table = pd.DataFrame(rows)
    if not all(math.isfinite(a) for a in table["test_acc"]):
        raise ValueError(f"run {result.name} logged a non-finite prefix accuracy")
    return table
