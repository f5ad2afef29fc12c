"""A small training run that kills itself with SIGKILL at a chosen point (for tests/test_faults.py).

    python -m tests.faults_child DATASET FAULT

FAULT is `none`, `epoch:N` (right after epoch N's checkpoint), `save:FOLDER:N` (half-way through writing the
N-th torch file into FOLDER: checkpoints or models), `replace:FOLDER:N` (just before the N-th rename into
FOLDER, which for a checkpoint falls between keeping the old one and putting the new one in place),
`record:1` (half-way through writing the run record) or `table:1` (half-way through writing the table that
follows the run). Results go to PARAFORMER_RESULTS. It prints `trained epoch N` after each epoch it trained
(after that epoch's checkpoint), and last the run's summary as JSON.
"""

import io
import json
import os
import pathlib
import signal
import sys

import pandas as pd
import torch

from paraformer.core.config import DataConfig, ModelConfig, Recipe
from paraformer.experiments.tables import write_table
from paraformer.training import train

MODEL = ModelConfig(image_size=8, in_channels=1, patch_size=4, width=16, num_heads=2, mlp_ratio=2.0, num_layers=2,
                    num_classes=3)
# Two stages (frozen, 2 branches x 2 epochs), so that a resume also crosses a stage boundary with its optimizer.
# On the CPU wherever it runs: bit-exact resume is the CPU's claim (docs/run-cache.md).
RECIPE = Recipe(epochs=2, batch_size=8, lr=3e-3, warmup_epochs=0.5, augment=("flip", "crop"), method="frozen", seed=3,
                device="cpu")


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(fault: str):
    """Install the fault; returns the on_epoch_end callback (or None)."""
    kind, *args = fault.split(":")
    if kind == "none":
        return None
    if kind == "epoch":
        return lambda entry: die() if entry["epoch"] == int(args[0]) else None
    calls = {"n": 0}

    def due(target: str, folder: str) -> bool:
        if folder not in pathlib.Path(target).parts:
            return False
        calls["n"] += 1
        return calls["n"] == int(args[-1])

    if kind == "save":
        real_save = torch.save

        def save(obj, f, *rest, **kwargs):
            if due(str(f), args[0]):
                buffer = io.BytesIO()
                real_save(obj, buffer)
                pathlib.Path(f).write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
                die()
            return real_save(obj, f, *rest, **kwargs)

        torch.save = save
    elif kind == "replace":
        real_replace = os.replace

        def replace(source, destination):
            if due(str(destination), args[0]):
                die()
            return real_replace(source, destination)

        os.replace = replace
    elif kind in ("record", "table"):
        real_write = pathlib.Path.write_text
        folder = "runs" if kind == "record" else "tables"

        def write_text(self, text, *rest, **kwargs):
            if self.name.endswith(".tmp") and due(str(self), folder):
                real_write(self, text[:len(text) // 2])
                die()
            return real_write(self, text, *rest, **kwargs)

        pathlib.Path.write_text = write_text
    else:
        raise SystemExit(f"unknown fault {fault!r}")
    return None


def main(dataset: str, fault: str) -> None:
    kill_after_epoch = arm(fault)

    def on_epoch_end(entry: dict) -> None:
        print(f"trained epoch {entry['epoch']}", flush=True)  # what this process trained, for the test to check
        if kill_after_epoch is not None:
            kill_after_epoch(entry)

    result = train(MODEL, DataConfig(dataset=dataset), RECIPE, name="faults", progress=False,
                   on_epoch_end=on_epoch_end)
    table = pd.DataFrame([{k: h[k] for k in ("epoch", "branches", "train_loss", "test_acc")} for h in result.history])
    write_table(table, "faults", "A run that was killed and resumed", profile=None)
    print(json.dumps({"key": result.key, "cached": result.cached, "final_test_acc": result.final_test_acc}))


if __name__ == "__main__":
    main(*sys.argv[1:])
