"""A notebook's runs as data: every `train()` call it makes, listed before anything trains.

Each notebook module has `plan(profile, ...)`, its list of `PlannedRun`s, and `run(profile, ...)`, which trains
exactly that list through `execute` (notebook 03's tuned runs depend on what its learning-rate grid chooses: its
plan lists them once the grid's runs are in the run cache). `estimate` counts the same lists, and
`tests/test_plans.py` checks at the ci profile that every notebook trains its plan.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from ..core.config import ConfigError, DataConfig, ModelConfig, Recipe
from ..core.data import DATASETS, ImageData, data_fingerprint, load_data
from ..core.flops import run_training_flops
from ..core.progressive import PASSES, optimizer_steps
from ..core.runcache import (Initialization, RunResult, WeightsUnavailable, load_trained_model, read_record, run_key,
                             run_name, run_paths)
from ..training import train


@dataclass(frozen=True)
class PlannedRun:
    """One `train()` call: what `train` is given, and the notebook that makes it."""

    notebook: str
    model: ModelConfig
    data: DataConfig
    recipe: Recipe
    name: str  # the run name train() records it under (its own default, or the one the notebook passes)
    parent: "PlannedRun | None" = None  # the run whose weights it inherits (train(parent=...))
    init: "FromRun | object | None" = None  # its starting weights (train(init=...)): see `FromRun`
    note: str = ""  # anything an estimate should say about this run


def planned(notebook: str, model: ModelConfig, data: DataConfig, recipe: Recipe, name: str | None = None,
            **fields) -> PlannedRun:
    """A `PlannedRun` named as train() names it (`runcache.run_name`) unless `name` is given."""
    return PlannedRun(notebook, model, data, recipe, run_name(name, model, data, recipe), **fields)


@dataclass(frozen=True)
class FromRun:
    """Starting weights: another planned run's final weights without its head (a fine-tune brings its own).

    Starting weights are an object with a `description` and `initialization(folder)`, which gives the
    `Initialization` or None while it cannot be made yet (here: until the other run is trained)."""

    run: PlannedRun
    description: str

    def initialization(self, folder: Path) -> Initialization | None:
        key = key_of(self.run, folder)
        record, _, weights = run_paths(self.run.name, key, folder) if key is not None else (None, None, None)
        if key is None or not record.is_file() or not weights.is_file():  # (weights stay where a run trained)
            return None
        state = load_trained_model(read_record(record, key), folder).state_dict()
        return Initialization(self.description, {k: v for k, v in state.items() if not k.startswith("head.")})


@functools.lru_cache(maxsize=None)
def _fingerprint(data: DataConfig) -> str | None:
    try:  # a file hash or a folder listing, never a decode
        return data_fingerprint(data)
    except (OSError, ConfigError):
        return None


def key_of(run: PlannedRun, folder: Path, stand_in: bool = False) -> str | None:
    """The run key train() gives `run` (`runcache.run_key`), or None where it cannot be known yet: its data are not
    here, or its starting weights cannot be made (`FromRun` before the other run has trained, downloaded weights
    not in their cache). With `stand_in`, such a run gets a key from the description of what is missing instead:
    good for telling runs apart, not for finding them in the run cache."""
    fingerprint = _fingerprint(run.data)
    parent = key_of(run.parent, folder, stand_in) if run.parent is not None else None
    try:
        init = run.init.initialization(Path(folder)) if run.init is not None else None
    except WeightsUnavailable:  # e.g. downloaded weights not here (yet): execute() says where they go
        init = None
    unknown = (fingerprint is None or (run.parent is not None and parent is None)
               or (run.init is not None and init is None))
    if unknown and not stand_in:
        return None
    if unknown and run.init is not None:
        init = SimpleNamespace(digest=f"planned:{run.init.description}")
    key = run_key(run.model, run.data, run.recipe, SimpleNamespace(key=parent) if parent else None, init, fingerprint)
    return "planned-" + key if unknown else key


def cached_record(run: PlannedRun, folder: Path) -> RunResult | None:
    """The finished run's record in the run cache under `folder`, or None."""
    key = key_of(run, folder)
    path = run_paths(run.name, key, folder)[0] if key is not None else None
    return read_record(path, key) if path is not None and path.is_file() else None


@dataclass
class Trained:
    """A planned run, its finished record, and the images it trained on."""

    planned: PlannedRun
    result: RunResult
    data: ImageData


def execute(runs: list[PlannedRun], folder: Path, progress: bool = True) -> list[Trained]:
    """Train `runs` in order (or fetch them from the run cache under `folder`), each dataset loaded once; a run's
    parent must come before it. Returns one `Trained` per run, in order."""
    done: dict[PlannedRun, RunResult] = {}
    data: dict[DataConfig, ImageData] = {}
    out = []
    for run in runs:
        if run.data not in data:
            data[run.data] = load_data(run.data)
        if run.parent is not None and run.parent not in done:
            raise ConfigError(f"{run.name}: its parent run {run.parent.name} must be planned before it")
        init = run.init.initialization(folder) if run.init is not None else None
        if run.init is not None and init is None:
            raise ConfigError(f"{run.name}: its starting weights ({run.init.description}) cannot be made: the run "
                              "they come from is not planned before it, or its weights file is missing (weights "
                              "stay where a run trained; delete that run's record to train it here)")
        if run not in done:
            done[run] = train(run.model, run.data, run.recipe, name=run.name, data=data[run.data],
                              parent=done.get(run.parent), init=init, results_root=folder, progress=progress)
        out.append(Trained(run, done[run], data[run.data]))
    return out


def sweep_rows(trained: list[Trained]) -> pd.DataFrame:
    """One row per run, as the sweep tables read them (`accuracy.accuracy_table`, `accuracy.judge_claims`)."""
    rows = []
    for t in trained:
        model, recipe, result = t.planned.model, t.planned.recipe, t.result
        rows.append({
            "dataset": t.planned.data.dataset, "model": model.name, "method": recipe.method, "lr": recipe.lr,
            "epochs": recipe.epochs, "branch_depth": model.branch_depth, "num_layers": model.num_layers,
            "seed": recipe.seed, "train_images": len(t.data.train_labels), "num_classes": t.data.num_classes,
            "test_images": len(t.data.test_labels), "test_acc": result.final_test_acc,
            "val_acc": result.final_val_acc, "correct": result.correct(), "num_params": result.num_params,
            "train_tflop": run_training_flops(result, n_train=len(t.data.train_labels)) / 1e12,
            "optimizer_steps": optimizer_steps(recipe.method, [h["branches"] for h in result.history],
                                               math.ceil(len(t.data.train_labels) / recipe.batch_size)),
            "passes_per_epoch": len(PASSES[recipe.method]), "batch_size": recipe.batch_size,
            "train_seconds": result.wall_seconds, "cached": result.cached, "run_key": result.key,
            "data_source": result.data_source, "device": result.device, "code_version": result.code_version,
            "code_digest": result.code_digest, "numerics": result.numerics,
        })
    return pd.DataFrame(rows)


def sweep(notebook: str, scale, model_names, datasets=None, methods: tuple[str, ...] = ("joint",),
          seeds: tuple[int, ...] | None = None) -> list[PlannedRun]:
    """Datasets x `model_names` x `methods` x seeds, in that order (datasets and seeds: the scale's unless given)."""
    runs = []
    for dataset in datasets or scale.datasets:
        data = scale.data_config(dataset)
        for name in model_names:
            model = scale.model_config(name, data_shape(data))
            runs += [planned(notebook, model, data, replace(scale.recipe, seed=seed, method=method))
                     for method in methods for seed in seeds or scale.seeds]
    return runs


def data_shape(data: DataConfig) -> SimpleNamespace:
    """What `Scale.model_config` reads of loaded images (size, channels, classes), from the dataset registry:
    nothing is decoded, so datasets that are not here can be planned too."""
    if data.dataset not in DATASETS:
        raise ConfigError(f"cannot plan runs on {data.dataset!r}: plans need a registry dataset (one of "
                          f"{sorted(DATASETS)})")
    spec = DATASETS[data.dataset]
    return SimpleNamespace(image_size=data.image_size or spec.image_size, in_channels=spec.in_channels,
                           num_classes=spec.num_classes)
