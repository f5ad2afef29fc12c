"""Train the gpu profile's runs of notebooks 01-05, shrunk to a CPU size, in one process, and print what
torch.compile compiled for each run: the check that `Recipe.compile=True` means compiled on every run of a
`make reproduce PROFILE=gpu` session, however many runs came before it in the same process.

Each planned run keeps its model shape (branch depth, branch count, residual, task heads), method, augmentation,
parent run and `compile=True`; its width becomes 8 per head, its epochs 1 and its data synthetic images of the
dataset's size, channels and classes (`--train` training images in batches of `--batch`, leaving a partial last
batch, and `--test` test images), so that what varies between the runs is what makes torch.compile's variants.
`--subset` keeps one run of each distinct (notebook, model shape, method, residual, augmentation, parent) in plan
order: every method and every model shape, 46 of the 102 runs.

    PYTHONPATH=lib python tools/compile_check.py        # all 102 runs: 4.5 minutes on a shared 2-core CPU (3 with
                                                        # torch's compile cache warm)

Prints one row per run: the Dynamo graphs counted around its `train()` call, then what its record says
(`RunResult.compiled`: frames, graphs, recompiles, graph breaks, eager fallbacks). Exits 1 when a run compiled
nothing, broke a graph, fell back to eager, or its record disagrees with the count.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from paraformer.core.data import ImageData
from paraformer.experiments import compression, depth_sweep, expansion, layer_sweep, versus_vit
from paraformer.experiments.plan import PlannedRun, data_shape
from paraformer.training import train

NOTEBOOKS = (layer_sweep, depth_sweep, versus_vit, compression, expansion)


def shrink(run: PlannedRun, index: int, n_train: int, n_test: int, batch: int, done: dict) -> PlannedRun:
    model = replace(run.model, width=8 * run.model.num_heads)
    data = replace(run.data, n_train=n_train, n_test=n_test, n_test_per_epoch=None, val_fraction=0.0)
    # a seed of its own: runs that differ only in what shrinking takes away (epochs, image counts) stay two runs
    recipe = replace(run.recipe, epochs=1, batch_size=batch, warmup_epochs=0.0, device="cpu", seed=index)
    parent = done[run.parent][0] if run.parent is not None else None
    return replace(run, model=model, data=data, recipe=recipe, parent=parent)


def synthetic(run: PlannedRun, n_train: int, n_test: int) -> ImageData:
    shape = data_shape(run.data)
    labels = run.data.classes or tuple(range(shape.num_classes))
    generator = torch.Generator().manual_seed(0)

    def split(n):
        images = torch.randint(0, 256, (n, shape.in_channels, shape.image_size, shape.image_size),
                               generator=generator, dtype=torch.uint8)
        return images, torch.tensor(labels)[torch.arange(n) % len(labels)]

    (train_x, train_y), (test_x, test_y) = split(n_train), split(n_test)
    empty = torch.empty(0, *train_x.shape[1:], dtype=torch.uint8)
    return ImageData(name=run.data.dataset, train_images=train_x, train_labels=train_y, val_images=empty,
                     val_labels=torch.empty(0, dtype=torch.long), test_images=test_x, test_labels=test_y,
                     classes=[str(c) for c in range(shape.num_classes)], mean=(0.5,) * shape.in_channels,
                     std=(0.25,) * shape.in_channels, source="synthetic")


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def representative(runs: list[PlannedRun]) -> list[PlannedRun]:
    seen, kept = set(), []
    for run in runs:
        m = run.model
        kind = (run.notebook, m.branch_depth, m.num_branches, bool(m.task_classes), m.residual, run.recipe.method,
                run.recipe.augment, run.recipe.freeze_inherited, run.parent is not None)
        needed = run.parent is not None and run.parent not in kept
        if kind not in seen or needed:
            if needed:  # a kept run's parent is kept too, before it
                kept += [p for p in ancestors(run) if p not in kept]
            seen.add(kind)
            kept.append(run)
    return kept


def ancestors(run: PlannedRun) -> list[PlannedRun]:
    chain = []
    while run.parent is not None:
        run = run.parent
        chain.insert(0, run)
    return chain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", action="store_true", help="one run of each kind (see the module docstring)")
    parser.add_argument("--train", type=int, default=40, help="training images per run (default 40)")
    parser.add_argument("--test", type=int, default=24, help="test images per run (default 24)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16: a partial last batch)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    planned = [run for notebook in NOTEBOOKS for run in notebook.plan("gpu")]
    runs = representative(planned) if args.subset else planned
    runs = runs[:args.limit]
    print(f"{len(runs)} of the {len(planned)} runs of the gpu profile's notebooks 01-05, in one process", flush=True)
    print(f"{'#':>3} {'notebook':<22} {'model':<12} {'method':<8} {'graphs':>6} | recorded: {'frames':>6} "
          f"{'graphs':>6} {'recompiles':>10} {'breaks':>6} {'eager':>6} | {'seconds':>7}", flush=True)
    done: dict[PlannedRun, tuple[PlannedRun, object]] = {}
    failed, most, started = 0, 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for index, original in enumerate(runs, 1):
            run = shrink(original, index, args.train, args.test, args.batch, done)
            before, clock = graphs(), time.perf_counter()
            parent = done[original.parent][1] if original.parent is not None else None
            result = train(run.model, run.data, run.recipe, name=run.name, data=synthetic(run, args.train, args.test),
                           parent=parent, results_root=Path(folder), progress=False)
            counted = graphs() - before
            done[original] = (run, result)
            # (older code records nothing: its runs count as compiled when Dynamo made a graph during them)
            record = getattr(result, "compiled", None) or {}
            bad = (counted == 0 or record.get("eager_fallbacks", 0) or record.get("graph_breaks", 0)
                   or record.get("graphs", counted) != counted)
            failed += bool(bad)
            most = max(most, counted)
            shown = [record.get(k, "-") for k in ("frames", "graphs", "recompiles", "graph_breaks", "eager_fallbacks")]
            print(f"{index:>3} {original.notebook:<22} {run.model.name:<12} {run.recipe.method:<8} {counted:>6} | "
                  f"{'':>9} {shown[0]:>6} {shown[1]:>6} {shown[2]:>10} {shown[3]:>6} {shown[4]:>6} | "
                  f"{time.perf_counter() - clock:>7.1f}{'  <-- not compiled as recorded' if bad else ''}", flush=True)
    print(f"{len(runs)} runs in {time.perf_counter() - started:.0f} s; at most {most} graphs in a run; {failed} not "
          "compiled as recorded")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
