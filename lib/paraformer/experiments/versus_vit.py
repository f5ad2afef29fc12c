"""Notebook 03: ParaFormer against ViT (the 2025 paper's "up to +2.39 over ViT"), and how fast each training method
converges ("faster convergence"); the notebook's markdown describes the methods.

A ParaFormer trained by every method of `paraformer.core.progressive` against the ViT with as many layers (so as
many parameters), every seed, paired by seed and test image. Four readings of "beats ViT", each a table of claims:
at the recipe's learning rate; at each family's own rate (the ViT, and the ParaFormer under each method: each rate
of `Scale.lr_grid` trains the family's first seed, the best final accuracy on the validation split, never the test
split, chooses, and the chosen rate trains every seed; a family whose best rate is the recipe's own reuses its
runs); at equal training compute (a depth-1 branch computes its last layer for the CLS token alone, so Para-F-1-n
trains with a fraction of ViT-n's FLOPs: the ViT is also trained for the epochs that cost it the joint
ParaFormer's training FLOPs, at least one); under the authors' exact recipe (`Comparison.authors_variant`).
Convergence: epochs to 95% of the joint ParaFormer's final accuracy, each method against joint, paired by seed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from itertools import accumulate
from pathlib import Path

import pandas as pd

from ..core.config import METHODS
from ..core.flops import training_flops_per_image
from ..core.paths import results_dir
from ..core.progressive import PASSES, steps_per_batch
from ..core.runcache import RunResult
from .accuracy import AccuracyClaim, accuracy_table, judge_claims, claims_note, verdict_table
from .estimate import Estimate, estimate as estimate_runs
from .linear_baseline import linear_accuracies, with_linear
from .paper import BEST_GAIN_OVER_VIT, PAPER_2025, source
from .plan import PlannedRun, cached_record, data_shape, execute, sweep, sweep_rows
from .profiles import get_profile
from .report import convergence_verdicts, epochs_to_target, write_claims
from .settings import Comparison
from .stats import Verdict
from .tables import provenance, save_figure, write_table  # noqa: F401 (save_figure: the notebook's figures)

NOTEBOOK = "03_paraformer_vs_vit"


def method_label(model: str, method: str, vit: str) -> str:
    """'ViT-6' for the ViT, else 'Para-F-1-6 prefix'."""
    return f"ViT-{vit.split('-')[1]}" if model == f"Para-F-{vit}" else f"{model} {method}"


def families(comparison: Comparison) -> list[tuple[str, str]]:
    """(model, method) of every family: the ViT (joint), then the ParaFormer under each method."""
    return [(comparison.vit, "joint")] + [(comparison.paraformer, method) for method in METHODS]


# --- the runs ---------------------------------------------------------------------------------------------------

def comparison_plan(comparison: Comparison, datasets=None, methods: tuple[str, ...] = METHODS) -> list[PlannedRun]:
    """The ViT (joint training), then the ParaFormer under each of `methods`, every seed."""
    return (sweep(NOTEBOOK, comparison.scale, [comparison.vit], datasets)
            + sweep(NOTEBOOK, comparison.scale, [comparison.paraformer], datasets, methods))


def _at_rate(scale, lr: float):
    return replace(scale, recipe=replace(scale.recipe, lr=lr))


def grid_plan(comparison: Comparison, datasets=None) -> list[PlannedRun]:
    """Every family at every rate of the grid, on the first seed."""
    scale = comparison.scale
    return [run for model, method in families(comparison) for lr in scale.lr_grid
            for run in sweep(NOTEBOOK, _at_rate(scale, lr), [model], datasets, (method,), scale.seeds[:1])]


def tuned_plan(comparison: Comparison, rates: dict[tuple[str, str], float]) -> list[PlannedRun]:
    """Every family, every seed, at the rate the grid chose for it per dataset (`rates`, from `chosen_rates`)."""
    runs = []
    for dataset in dict.fromkeys(d for d, _ in rates):
        for model, method in families(comparison):
            lr = rates[(dataset, method_label(f"Para-F-{model}", method, comparison.vit))]
            runs += sweep(NOTEBOOK, _at_rate(comparison.scale, lr), [model], (dataset,), (method,))
    return runs


def matched_epochs(comparison: Comparison, dataset: str, method: str = "joint") -> int:
    """The epochs (at least one) that cost the ViT the training FLOPs of the ParaFormer under `method`."""
    scale = comparison.scale
    shape = data_shape(scale.data_config(dataset))
    ratio = (training_flops_per_image(scale.model_config(comparison.paraformer, shape), method)
             / training_flops_per_image(scale.model_config(comparison.vit, shape), "joint"))
    return max(1, math.floor(scale.recipe.epochs * ratio + 0.5))  # (round() would round 2.5 to 2)


def matched_plan(comparison: Comparison, datasets=None, method: str = "joint") -> list[PlannedRun]:
    """The ViT, every seed, for the epochs that cost it the ParaFormer's (under `method`) training FLOPs."""
    scale, runs = comparison.scale, []
    for dataset in datasets or scale.datasets:
        epochs = matched_epochs(comparison, dataset, method)
        shorter = replace(scale, recipe=replace(scale.recipe, epochs=epochs,
                                                warmup_epochs=min(scale.recipe.warmup_epochs, epochs / 2)))
        runs += sweep(NOTEBOOK, shorter, [comparison.vit], (dataset,))
    return runs


def steps_matched_recipe(comparison: Comparison, method: str = "authors"):
    """The ViT's recipe for as many data passes and (about) as many optimizer steps as the ParaFormer takes under
    `method`: the authors' method passes over the data twice per epoch and steps m + 1 times per minibatch (m prefix
    steps, then the full sum), so the ViT trains for twice the epochs at a batch of 2/(m + 1) of the recipe's; the
    FLOPs are then the ViT's at twice the epochs (the table gives each run's)."""
    scale = comparison.scale
    branches = scale.model_config(comparison.paraformer, data_shape(scale.data_config(scale.datasets[0]))).num_branches
    passes, steps = len(PASSES[method]), sum(steps_per_batch(method, branches))
    recipe = scale.recipe
    return replace(recipe, epochs=recipe.epochs * passes, warmup_epochs=recipe.warmup_epochs * passes,
                   batch_size=max(1, round(recipe.batch_size * passes / steps)))


def steps_matched_plan(comparison: Comparison, datasets=None) -> list[PlannedRun]:
    """The ViT, every seed, at the authors' method's data passes and optimizer steps (`steps_matched_recipe`)."""
    return sweep(NOTEBOOK, replace(comparison.scale, recipe=steps_matched_recipe(comparison)), [comparison.vit],
                 datasets)


def authors_plan(comparison: Comparison) -> list[PlannedRun]:
    """The ViT and the ParaFormer under the authors' method, both under their recipe."""
    return comparison_plan(comparison.authors_variant(), methods=("authors",))


def chosen_rates(grid: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(dataset, label) -> the learning rate `choose_rates` marked in `grid`."""
    chosen = grid[grid["chosen"]]
    return {(d, label): lr for d, label, lr in zip(chosen["dataset"], chosen["label"], chosen["lr"])}


def choose_rates(grid: pd.DataFrame, recipe_lr: float) -> pd.DataFrame:
    """`grid` with `chosen` marking, per dataset and label, the rate of the best validation accuracy; ties go to
    `recipe_lr`, then to the smaller rate. Refuses a grid without validation accuracies."""
    if grid["val_acc"].isna().any():
        raise ValueError("the learning-rate grid has runs without a validation accuracy: hold out a validation "
                         "split (Scale.val_fraction) so that no rate is chosen on the test split")
    grid = grid.assign(chosen=False)
    for _, family in grid.groupby(["dataset", "label"], sort=False):
        best = family[family["val_acc"] == family["val_acc"].max()]
        default = best[best["lr"] == recipe_lr]
        pick = default.index[0] if len(default) else best.sort_values("lr").index[0]
        grid.loc[pick, "chosen"] = True
    return grid


def _cached_grid(comparison: Comparison, datasets, folder: Path) -> pd.DataFrame | None:
    """The grid's choices from the run cache, or None while some of its runs have not trained."""
    rows = []
    for run in grid_plan(comparison, datasets):
        record = cached_record(run, folder)
        if record is None:
            return None
        label = method_label(run.model.name, run.recipe.method, comparison.vit)
        rows.append({"dataset": run.data.dataset, "label": label, "lr": run.recipe.lr, "val_acc": record.final_val_acc})
    return choose_rates(pd.DataFrame(rows), comparison.scale.recipe.lr)


def plan(profile: str, datasets=None, folder: Path | None = None) -> list[PlannedRun]:
    """The comparison at the recipe's rate, every family's grid, the tuned comparison (once the grid's runs are in
    the run cache under `folder`, the profile's by default: what they choose decides it), the compute-matched ViT and
    the authors' recipe."""
    comparison = get_profile(profile).comparison
    folder = Path(folder) if folder is not None else results_dir(profile)
    grid = _cached_grid(comparison, datasets, folder)
    tuned = tuned_plan(comparison, chosen_rates(grid)) if grid is not None else []
    return (comparison_plan(comparison, datasets) + grid_plan(comparison, datasets) + tuned
            + matched_plan(comparison, datasets) + authors_plan(comparison) + steps_matched_plan(comparison, datasets))


def estimate(profile: str, datasets=None, flops_per_second=None) -> Estimate:
    comparison = get_profile(profile).comparison
    more = (len(comparison.scale.seeds) - 1) * len(families(comparison))
    pending = "" if _cached_grid(comparison, datasets, results_dir(profile)) is not None else (
        "the tuned runs are not counted until the learning-rate grid has chosen: a family whose chosen rate is not "
        f"the recipe's trains its other seeds again, up to {more} more runs per dataset")
    return estimate_runs(NOTEBOOK, profile, plan(profile, datasets), flops_per_second, pending)


def describe(profile: str, datasets=None) -> list[str]:
    comparison = get_profile(profile).comparison
    return [f"ParaFormer Para-F-{comparison.paraformer} against ViT Para-F-{comparison.vit} (one branch of the same "
            "layers)", f"This run: {comparison.scale.describe()}; datasets "
            f"{', '.join(datasets or comparison.scale.datasets)}"]


def _labelled(rows: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    if rows.empty:  # a part the profile does not run (the authors' recipe at quick and cpu)
        return rows.assign(label=pd.Series(dtype=object))
    return rows.assign(label=[method_label(m, k, comparison.vit) for m, k in zip(rows["model"], rows["method"])])


@dataclass
class Runs:
    """Notebook 03's runs, as rows (`plan.sweep_rows` with a `label`)."""

    comparison: Comparison
    runs: pd.DataFrame  # at the recipe's rate
    records: list[RunResult]  # of `runs`, row by row (their per-epoch history)
    grid: pd.DataFrame  # every family at every rate, first seed; `chosen` marks each family's rate
    tuned: pd.DataFrame  # every family at its chosen rate
    matched: pd.DataFrame  # the ViT at the joint ParaFormer's training compute
    authors: pd.DataFrame  # under the authors' recipe
    steps_matched: pd.DataFrame  # the ViT at the authors' method's data passes and optimizer steps


def run(profile: str, datasets=None, progress: bool = True) -> Runs:
    """Train (or fetch) the plan, stage by stage: the grid's choice decides the tuned runs."""
    comparison, folder = get_profile(profile).comparison, results_dir(profile)
    scale = comparison.scale
    if not scale.lr_grid:
        raise ValueError(f"profile {scale.name!r} has no lr_grid to tune over; set Scale.lr_grid")
    if scale.val_fraction <= 0:
        raise ValueError(f"profile {scale.name!r} holds out no validation split (val_fraction=0): a learning rate "
                         "chosen on the test split would flatter every model; set val_fraction")
    trained = execute(comparison_plan(comparison, datasets), folder, progress)
    rows = lambda runs: sweep_rows(execute(runs, folder, progress))  # noqa: E731 (trained in this order)
    grid = choose_rates(_labelled(rows(grid_plan(comparison, datasets)), comparison), scale.recipe.lr)
    tuned = _labelled(rows(tuned_plan(comparison, chosen_rates(grid))), comparison)
    matched = rows(matched_plan(comparison, datasets))
    matched["label"] = f"ViT-{comparison.vit.split('-')[1]} at Para-F-{comparison.paraformer} joint's compute"
    authors = _labelled(rows(authors_plan(comparison)), comparison.authors_variant())
    steps_matched = rows(steps_matched_plan(comparison, datasets))
    steps_matched["label"] = STEPS_MATCHED.format(vit=comparison.vit.split("-")[1], paraformer=comparison.paraformer)
    return Runs(comparison, _labelled(sweep_rows(trained), comparison), [t.result for t in trained], grid, tuned,
                matched, authors, steps_matched)


STEPS_MATCHED = "ViT-{vit} at Para-F-{paraformer} authors' steps"


# --- tables, claims and convergence -------------------------------------------------------------------------------

def versus_vit_table(runs: pd.DataFrame) -> pd.DataFrame:
    """`accuracy.accuracy_table` per dataset and label (the ViT, the ParaFormer under each method)."""
    table = accuracy_table(runs, ("dataset", "label"))
    table["model"] = [runs[runs["label"] == label]["model"].iloc[0] for label in table["label"]]
    for column in ("optimizer_steps", "passes_per_epoch", "epochs", "batch_size"):
        if column in runs:
            table[column] = [runs[runs["label"] == label][column].iloc[0] for label in table["label"]]
    columns = ["dataset", "label", "model", "method", "params", "our_acc", "our_acc_low", "our_acc_high", "seed_std",
               "seeds", "test_images", "seconds_per_run"]
    more = ("train_tflop", "optimizer_steps", "passes_per_epoch", "epochs", "batch_size")
    return table[columns + [c for c in more if c in table]]


def versus_vit_claims(runs: pd.DataFrame, paper_gain: float = BEST_GAIN_OVER_VIT) -> list[AccuracyClaim]:
    """ "The ParaFormer under <method> beats the ViT" per dataset and method, paired by seed and image; the paper's
    figure is its best gain ("up to", from a third-party summary: `paper.SOURCES`), the same for every method."""
    found = []
    for dataset in dict.fromkeys(runs["dataset"]):
        labels = list(dict.fromkeys(runs[runs["dataset"] == dataset]["label"]))
        vit = next((label for label in labels if label.startswith("ViT")), None)
        found += [AccuracyClaim(dataset, label, vit, f"{label} beats {vit} on {dataset}", paper_gain, column="label",
                                **source("gain_over_vit"))
                  for label in labels if vit and not label.startswith("ViT")]
    return found


def grid_table(grid: pd.DataFrame) -> pd.DataFrame:
    """Validation accuracy per family (rows) and rate (columns), the chosen rate beside it."""
    table = grid.pivot_table(index=["dataset", "label"], columns="lr", values="val_acc", sort=False)
    table.columns = [f"val_acc at lr {lr:g}" for lr in table.columns]
    table["chosen_lr"] = [f"{chosen_rates(grid)[key]:g}" for key in table.index]
    return table.reset_index()


def tuning_changes(default: list[Verdict], tuned: list[Verdict]) -> pd.DataFrame:
    """The same claims judged at the recipe's rate and at each family's tuned rate: did tuning change a verdict?"""
    if [v.claim for v in default] != [v.claim for v in tuned]:
        raise ValueError("tuning_changes needs the same claims in the same order, judged twice")
    return pd.DataFrame([{"claim": d.claim, "at_recipe_lr": d.ours, "default_verdict": d.verdict, "at_tuned_lr": t.ours,
                          "tuned_verdict": t.verdict, "same_verdict": d.verdict == t.verdict}
                         for d, t in zip(default, tuned)])


def learning_curves(runs: pd.DataFrame, records: list[RunResult]) -> pd.DataFrame:
    """One row per run and epoch: test accuracy against epochs and against cumulative training seconds."""
    return pd.DataFrame([{"dataset": row["dataset"], "label": row["label"], "method": row["method"],
                          "seed": row["seed"], "epoch": h["epoch"], "train_seconds": seconds,
                          "test_acc": h["test_acc"], "branches": h["branches"]}
                         for (_, row), record in zip(runs.iterrows(), records)
                         for h, seconds in zip(record.history,
                                               accumulate(e["train_seconds"] for e in record.history))])


def time_to_target(curves: pd.DataFrame, reference: str, fraction: float = 0.95) -> pd.DataFrame:
    """Per dataset and label: the first epoch (and its mean cumulative training seconds) at which the
    seed-mean test accuracy reaches `fraction` of the final seed-mean accuracy of the `reference` label."""
    mean = curves.groupby(["dataset", "label", "epoch"], sort=False)[["test_acc", "train_seconds"]].mean().reset_index()
    rows = []
    for dataset, per_dataset in mean.groupby("dataset", sort=False):
        ref = per_dataset[per_dataset["label"] == reference]
        target = fraction * ref.loc[ref["epoch"].idxmax(), "test_acc"]
        for label, curve in per_dataset.groupby("label", sort=False):
            hit = curve[curve["test_acc"] >= target]
            rows.append({"dataset": dataset, "label": label, "target_acc": target,
                         "epochs_to_target": hit["epoch"].min() if len(hit) else float("nan"),
                         "seconds_to_target": hit.loc[hit["epoch"].idxmin(), "train_seconds"] if len(hit) else float("nan"),
                         "final_acc": curve.loc[curve["epoch"].idxmax(), "test_acc"],
                         "total_seconds": curve["train_seconds"].max()})
    return pd.DataFrame(rows)


@dataclass
class Findings:
    table: pd.DataFrame  # at the recipe's rate: ours per family with its interval
    claims: list[AccuracyClaim]  # each method against the ViT, at the recipe's rate
    verdicts: list[Verdict]
    tuned_verdicts: list[Verdict]  # the same claims at each family's tuned rate
    matched_claims: list[AccuracyClaim]  # the joint ParaFormer against the compute-matched ViT
    matched_verdicts: list[Verdict]
    authors_claims: list[AccuracyClaim]  # under the authors' recipe
    authors_verdicts: list[Verdict]
    steps_claims: list[AccuracyClaim]  # the authors' method against the ViT at its optimizer steps and passes
    steps_verdicts: list[Verdict]
    curves: pd.DataFrame  # `learning_curves`
    targets: pd.DataFrame  # `time_to_target`
    convergence: list[Verdict]  # fewer epochs to the target than joint training, per method
    headline: list[Verdict]  # the authors' method against the ViT and its convergence: the report's


def findings(result: Runs, profile: str, linear: dict[str, float] | None = None) -> Findings:
    """Writes tables/paraformer_vs_vit*.{csv,md}, tables/paraformer_convergence*.{csv,md} and the report's claims."""
    comparison, runs = result.comparison, result.runs
    scale = comparison.scale
    if linear is None:  # the baseline on the runs' own images and split (cached like a run)
        linear = linear_accuracies([scale.data_config(d) for d in dict.fromkeys(runs["dataset"])],
                                   results_dir(profile))
    table = with_linear(versus_vit_table(runs), linear)
    found = versus_vit_claims(runs)
    judge = functools.partial(judge_claims, profile=profile, linear=linear)
    verdicts = judge(runs, found)
    tuned_verdicts = judge(result.tuned, versus_vit_claims(result.tuned))
    joint = f"Para-F-{comparison.paraformer} joint"
    matched_claims = [AccuracyClaim(d, joint, label, f"{joint} beats {label} on {d}", column="label",
                                    **source("gain_over_vit"))
                      for d, label in dict.fromkeys(zip(result.matched["dataset"], result.matched["label"]))]
    matched_verdicts = judge(pd.concat([runs, result.matched], ignore_index=True), matched_claims)
    authors_claims = versus_vit_claims(result.authors) if not result.authors.empty else []  # (where it is run)
    authors_verdicts = judge(result.authors, authors_claims) if authors_claims else []
    authors = f"Para-F-{comparison.paraformer} authors"
    steps_claims = [AccuracyClaim(d, authors, label, f"{authors} beats {label} on {d}", BEST_GAIN_OVER_VIT,
                                  column="label", **source("gain_over_vit"))
                    for d, label in dict.fromkeys(zip(result.steps_matched["dataset"], result.steps_matched["label"]))]
    steps_verdicts = judge(pd.concat([runs, result.steps_matched], ignore_index=True), steps_claims)
    notes = [
        f"paper: {PAPER_2025}: 'performance gains of up to 2.39%' over ViT, in a third-party summary (the abstract "
        "gives no figure; the tables are not public). "
        f"our_acc: final test accuracy on all {table['test_images'].min()} test images, mean over "
        f"{table['seeds'].min()} seeds, with its 95% interval (t over seeds with the test images' variance); "
        "train_tflop: training FLOPs per run; optimizer_steps: per run; passes_per_epoch: passes over the training "
        "data per epoch (the authors' method makes two: its prefix steps, then the full sum).",
        scale.describe(),
        f"ParaFormer Para-F-{comparison.paraformer}; ViT Para-F-{comparison.vit} (same width, layers and parameters); "
        "the authors' method clips its prefix steps to gradient norm 1.0, as their code does",
        *provenance(runs),
    ]
    claim_notes = [claims_note(), *notes[1:3]]
    write = functools.partial(write_table, profile=profile)
    write(table, "paraformer_vs_vit", "ParaFormer vs ViT (same width, layers and recipe), paper vs ours", notes)
    write(verdict_table(verdicts, found), "paraformer_vs_vit_claims",
          "ParaFormer beats ViT: each method against the ViT, at the recipe's learning rate", claim_notes)
    write(grid_table(result.grid), "paraformer_vs_vit_lr_grid",
          "Learning-rate grid: validation accuracy of every family's first seed, and the rate chosen",
          ["the chosen rate then trains every seed; ties go to the recipe's rate", scale.describe()])
    write(tuning_changes(verdicts, tuned_verdicts), "paraformer_vs_vit_tuned",
          "Does each verdict survive tuning? The same claims at each family's tuned learning rate", claim_notes)
    write(verdict_table(matched_verdicts, matched_claims), "paraformer_vs_vit_compute_matched",
          "At equal training compute: the ViT trained for the epochs that cost it the joint ParaFormer's FLOPs",
          [f"ViT epochs: {sorted(set(result.matched['epochs']))} (of {scale.recipe.epochs})", *claim_notes])
    steps_table = versus_vit_table(pd.concat([runs[runs["label"] == authors], result.steps_matched],
                                             ignore_index=True))
    write(steps_table, "paraformer_vs_vit_steps_matched",
          "At equal optimizer steps and data passes: the authors' method against a ViT trained as many steps",
          [f"the ViT trains {int(steps_table['epochs'].iloc[-1])} epochs at batch {int(steps_table['batch_size'].iloc[-1])}: "
           "as many passes over the data and about as many optimizer steps as the authors' method; its FLOPs are "
           "then larger (train_tflop)", *notes[1:3]])
    write(verdict_table(steps_verdicts, steps_claims), "paraformer_vs_vit_steps_matched_claims",
          "The authors' method against the ViT at equal optimizer steps and data passes", claim_notes)
    if authors_claims:
        write(verdict_table(authors_verdicts, authors_claims), "paraformer_vs_vit_authors_recipe",
              "Under the authors' exact recipe and model (their residual, 3 heads of 64, Adam 1e-4, batch 500, their "
              "RandAugment 2/14)",
              [comparison.authors_variant().scale.describe(), *claim_notes[:1]])

    curves = learning_curves(runs, result.records)
    targets = time_to_target(curves, joint, fraction=0.95)
    progressive = [label for label in dict.fromkeys(curves["label"]) if label != joint and not label.startswith("ViT")]
    convergence = convergence_verdicts(epochs_to_target(curves, joint, fraction=0.95), joint, progressive,
                                       **source("convergence"))
    write(targets, "paraformer_convergence",
          "Convergence: epochs and training seconds to 95% of the joint ParaFormer's final accuracy",
          [f"target_acc: 0.95 x the final seed-mean test accuracy of {joint} (on the per-epoch test images); a method "
           "reaches it at the first epoch whose seed-mean accuracy is at least that; seconds: seed-mean cumulative "
           "training time (no evaluation)", scale.describe(), f"runs on {sorted(set(runs['device']))}"])
    write(verdict_table(convergence), "paraformer_convergence_claims",
          "Faster convergence: epochs to the target, each method against joint training, paired by seed",
          ["ours: joint's epochs minus the method's (mean over seeds); interval: t over seeds at the Bonferroni level "
           "over the family, its spread at least the whole-epoch counts' own (variance 2/12 epochs squared)",
           scale.describe()])
    headline = [v for c, v in zip(found, verdicts) if c.better.endswith(" authors")] + steps_verdicts
    headline += [v for v in convergence if v.claim.startswith(authors)]
    write_claims(headline, PAPER_2025, NOTEBOOK, profile, runs["device"].iloc[0])
    return Findings(table, found, verdicts, tuned_verdicts, matched_claims, matched_verdicts, authors_claims,
                    authors_verdicts, steps_claims, steps_verdicts, curves, targets, convergence, headline)
