"""Fair baselines for the ParaFormer-against-ViT comparison (notebook 03).

- **The same learning-rate grid for every model family** (the ViT, and the ParaFormer under each training
  method): each rate of `Profile.lr_grid` trains the family's first seed, the rate with the best final accuracy
  on the validation split (held out of the training images; the test split is never looked at) is chosen, and
  the chosen rate then trains every seed. A family whose best rate is the recipe's own reuses its runs.
- **A compute-matched ViT**: parameters equal, compute is not (a depth-1 branch computes its last layer for the
  CLS token alone, so Para-F-1-n trains with a fraction of ViT-n's FLOPs). The ViT is also trained for the epochs
  that cost it the training FLOPs of the ParaFormer under a method (at least one), so that the two are compared
  at equal training compute as well as at equal parameters.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from ..config import METHODS
from ..train import RunResult
from .profiles import Comparison
from .sweeps import method_label, run_sweep


def _families(comparison: Comparison, methods: tuple[str, ...]) -> list[tuple[str, str]]:
    """(model, method) of every family: the ViT (joint), then the ParaFormer under each method."""
    return [(comparison.vit, "joint")] + [(comparison.paraformer, method) for method in methods]


def learning_rate_grid(comparison: Comparison, datasets: tuple[str, ...] | None = None,
                       methods: tuple[str, ...] = METHODS, progress: bool = True) -> pd.DataFrame:
    """Every family at every rate of the profile's grid, first seed only: one row per (dataset, family, rate)
    with its validation and test accuracy and `chosen` (the family's best validation accuracy; ties go to the
    recipe's rate, then to the smaller rate)."""
    profile = comparison.profile
    if not profile.lr_grid:
        raise ValueError(f"profile {profile.name!r} has no lr_grid to tune over; set Profile.lr_grid")
    if profile.val_fraction <= 0:
        raise ValueError(f"profile {profile.name!r} holds out no validation split (val_fraction=0): a learning "
                         "rate chosen on the test split would flatter every model; set val_fraction")
    rows = []
    for model, method in _families(comparison, methods):
        for lr in profile.lr_grid:
            tuned = replace(profile, recipe=replace(profile.recipe, lr=lr))
            runs, _ = run_sweep(tuned, [model], datasets, progress, (method,), seeds=profile.seeds[:1])
            rows.append(runs)
    grid = pd.concat(rows, ignore_index=True)
    grid["label"] = [method_label(m, k, comparison.vit) for m, k in zip(grid["model"], grid["method"])]
    return choose_rates(grid, profile.recipe.lr)


def choose_rates(grid: pd.DataFrame, recipe_lr: float) -> pd.DataFrame:
    """`grid` with `chosen` marking, per dataset and label, the rate of the best validation accuracy; ties go to
    `recipe_lr`, then to the smaller rate. Refuses a grid without validation accuracies."""
    if grid["val_acc"].isna().any():
        raise ValueError("the learning-rate grid has runs without a validation accuracy: hold out a validation "
                         "split (Profile.val_fraction) so that no rate is chosen on the test split")
    grid = grid.assign(chosen=False)
    for _, family in grid.groupby(["dataset", "label"], sort=False):
        best = family[family["val_acc"] == family["val_acc"].max()]
        default = best[best["lr"] == recipe_lr]
        pick = default.index[0] if len(default) else best.sort_values("lr").index[0]
        grid.loc[pick, "chosen"] = True
    return grid


def chosen_rates(grid: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(dataset, label) -> the learning rate the grid chose."""
    chosen = grid[grid["chosen"]]
    return {(d, label): lr for d, label, lr in zip(chosen["dataset"], chosen["label"], chosen["lr"])}


def run_tuned_comparison(comparison: Comparison, grid: pd.DataFrame, methods: tuple[str, ...] = METHODS,
                         progress: bool = True) -> tuple[pd.DataFrame, list[RunResult]]:
    """Every family on every seed at the rate the grid chose for it (per dataset): rows as `run_comparison`'s,
    with the rate in `lr`."""
    profile, rates = comparison.profile, chosen_rates(grid)
    frames, records = [], []
    for dataset in dict.fromkeys(grid["dataset"]):
        for model, method in _families(comparison, methods):
            label = method_label(f"Para-F-{model}", method, comparison.vit)
            lr = rates[(dataset, label)]
            tuned = replace(profile, recipe=replace(profile.recipe, lr=lr))
            runs, results = run_sweep(tuned, [model], (dataset,), progress, (method,))
            runs["label"] = label
            frames.append(runs)
            records += results
    return pd.concat(frames, ignore_index=True), records


def grid_table(grid: pd.DataFrame) -> pd.DataFrame:
    """Validation accuracy per family (rows) and rate (columns), the chosen rate beside it."""
    table = grid.pivot_table(index=["dataset", "label"], columns="lr", values="val_acc", sort=False)
    table.columns = [f"val_acc at lr {lr:g}" for lr in table.columns]
    table["chosen_lr"] = [f"{chosen_rates(grid)[key]:g}" for key in table.index]
    return table.reset_index()


def compute_matched_epochs(runs: pd.DataFrame, comparison: Comparison, method: str) -> dict[str, int]:
    """Per dataset: the epochs at which the ViT's training FLOPs come closest to those of the ParaFormer under
    `method` (rounded, at least one), from the runs' `train_tflop`."""
    epochs = comparison.profile.recipe.epochs
    matched = {}
    for dataset, rows in runs.groupby("dataset", sort=False):
        vit = rows[rows["label"] == f"ViT-{comparison.vit.split('-')[1]}"]["train_tflop"].mean()
        para = rows[rows["label"] == f"Para-F-{comparison.paraformer} {method}"]["train_tflop"].mean()
        matched[dataset] = max(1, math.floor(epochs * para / vit + 0.5))  # (round() would round 2.5 to 2)
    return matched


def run_compute_matched_vit(comparison: Comparison, runs: pd.DataFrame, method: str = "joint",
                            progress: bool = True) -> tuple[pd.DataFrame, list[RunResult]]:
    """The ViT trained, on every seed, for the epochs that cost it the ParaFormer's (under `method`) training
    FLOPs; labelled "ViT-n at <ParaFormer label>'s compute"."""
    profile = comparison.profile
    frames, records = [], []
    for dataset, epochs in compute_matched_epochs(runs, comparison, method).items():
        shorter = replace(profile, recipe=replace(profile.recipe, epochs=epochs,
                                                  warmup_epochs=min(profile.recipe.warmup_epochs, epochs / 2)))
        vit_runs, results = run_sweep(shorter, [comparison.vit], (dataset,), progress)
        vit_runs["label"] = (f"ViT-{comparison.vit.split('-')[1]} at Para-F-{comparison.paraformer} {method}'s "
                             "compute")
        frames.append(vit_runs)
        records += results
    return pd.concat(frames, ignore_index=True), records


def tuning_changes(default: list, tuned: list) -> pd.DataFrame:
    """Claim by claim (the same claims, judged at the recipe's rate and at each family's tuned rate): both
    verdicts and whether tuning changed the verdict (the ranking it stands for)."""
    if [v.claim for v in default] != [v.claim for v in tuned]:
        raise ValueError("tuning_changes needs the same claims in the same order, judged twice")
    return pd.DataFrame([{"claim": d.claim, "at_recipe_lr": d.ours, "default_verdict": d.verdict, "at_tuned_lr": t.ours,
                          "tuned_verdict": t.verdict, "same_verdict": d.verdict == t.verdict}
                         for d, t in zip(default, tuned)])
