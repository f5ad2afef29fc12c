"""The model sweeps and comparisons the table notebooks share: train (or fetch) every run, then tabulate and
summarize the results beside the paper's numbers."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pandas as pd

from ..config import METHODS
from ..data import load_data
from ..flops import run_training_flops
from ..train import RunResult, train
from .accuracy import AccuracyClaim, accuracy_table
from .profiles import Comparison, Profile
from .stats import Verdict, all_of, judge


def run_sweep(profile: Profile, model_names: list[str], datasets: tuple[str, ...] | None = None,
              progress: bool = True, methods: tuple[str, ...] = ("joint",),
              seeds: tuple[int, ...] | None = None) -> tuple[pd.DataFrame, list[RunResult]]:
    """Train (or fetch from the run cache) every model with every method (`Recipe.method`) on every dataset
    with every seed (the profile's unless given).

    Returns one row per run (dataset, model, method, seed, accuracy, size, time, provenance) and the records.
    """
    rows, results = [], []
    for dataset in datasets or profile.datasets:
        data_config = profile.data_config(dataset)
        data = load_data(data_config)
        for name, method, seed in itertools.product(model_names, methods, seeds or profile.seeds):
            model_config = profile.model_config(name, data)
            recipe = replace(profile.recipe, seed=seed, method=method)
            result = train(model_config, data_config, recipe, data=data, progress=progress)
            results.append(result)
            rows.append({
                "dataset": dataset, "model": model_config.name, "method": method, "lr": recipe.lr,
                "epochs": recipe.epochs,
                "branch_depth": model_config.branch_depth, "num_layers": model_config.num_layers, "seed": seed,
                "test_images": len(data.test_labels), "test_acc": result.final_test_acc,
                "val_acc": result.final_val_acc, "correct": result.correct(), "num_params": result.num_params,
                "train_tflop": run_training_flops(result, n_train=len(data.train_labels)) / 1e12,
                "train_seconds": result.wall_seconds, "cached": result.cached, "run_key": result.key,
                "data_source": result.data_source, "device": result.device, "code_version": result.code_version,
                "code_digest": result.code_digest,
            })
    return pd.DataFrame(rows), results


def compare_with_paper(runs: pd.DataFrame, paper_table: dict) -> pd.DataFrame:
    """Per dataset and model: our mean accuracy over seeds with its 95% interval, beside the paper's."""
    table = accuracy_table(runs, ("dataset", "model"), paper_table)
    columns = ["dataset", "model", "branch_depth", "num_layers", "params", "paper_acc", "our_acc", "our_acc_low",
               "our_acc_high", "ours_minus_paper", "seed_std", "seeds", "test_images", "seconds_per_run"]
    return table[columns + [c for c in ("train_tflop",) if c in table]]


def _by_layers(runs: pd.DataFrame, dataset: str) -> list[str]:
    rows = runs[runs["dataset"] == dataset].drop_duplicates("model").sort_values("num_layers")
    return rows["model"].tolist()


def layer_sweep_claims(runs: pd.DataFrame, paper_table: dict) -> list[AccuracyClaim]:
    """Table 2's claim, accuracy rises with the number of parallel layers, per dataset: the largest sweep model
    against the smallest (the headline), then each step of the sweep."""
    claims = []
    for dataset in dict.fromkeys(runs["dataset"]):
        models = _by_layers(runs, dataset)
        paper = paper_table.get(dataset, {})
        pairs = [(models[-1], models[0])] + list(zip(models[1:], models)) if len(models) > 2 else \
            list(zip(models[1:], models))
        for better, worse in pairs:
            gap = paper[better] - paper[worse] if better in paper and worse in paper else None
            claims.append(AccuracyClaim(dataset, better, worse, f"{short(better)} beats {short(worse)} on {dataset}",
                                        gap))
    return claims


def short(model: str) -> str:
    return model.removeprefix("Para-F-")


DEPTH_FINDINGS = {
    # 2024 paper, Table 3 against Table 2: (1) at 24 layers, deeper branches beat depth-1 ones;
    # (2) a plain ViT of depth 6 beats 24 layers in branches of depth 2 or 3.
    "deeper branches beat Para-F-1-24": [("Para-F-2-24", "Para-F-1-24"), ("Para-F-3-24", "Para-F-1-24"),
                                         ("Para-F-6-24", "Para-F-1-24")],
    "Para-F-6-6 beats Para-F-2-24 and 3-24": [("Para-F-6-6", "Para-F-2-24"), ("Para-F-6-6", "Para-F-3-24")],
}


def depth_sweep_claims(runs: pd.DataFrame, paper_table: dict) -> list[AccuracyClaim]:
    """The comparisons behind the two depth findings, per dataset that has every model they need."""
    claims = []
    for dataset in dict.fromkeys(runs["dataset"]):
        have = set(runs[runs["dataset"] == dataset]["model"])
        paper = paper_table.get(dataset, {})
        for pairs in DEPTH_FINDINGS.values():
            for better, worse in pairs:
                if {better, worse} <= have:
                    gap = paper[better] - paper[worse] if better in paper and worse in paper else None
                    claims.append(AccuracyClaim(dataset, better, worse,
                                                f"{short(better)} beats {short(worse)} on {dataset}", gap))
    return claims


def depth_findings(claims: list[AccuracyClaim], verdicts: list[Verdict]) -> list[Verdict]:
    """Each finding per dataset as one verdict made of its comparisons' (`all_of`); a finding whose models a
    dataset lacks is not testable there."""
    found = []
    for dataset in dict.fromkeys(c.dataset for c in claims):
        for finding, pairs in DEPTH_FINDINGS.items():
            parts = [v for c, v in zip(claims, verdicts) if c.dataset == dataset and (c.better, c.worse) in pairs]
            if len(parts) < len(pairs):
                found.append(judge(f"{finding} on {dataset}", float("nan"), float("nan"), float("nan"),
                                   not_testable=f"the sweep lacks some of {sorted({m for p in pairs for m in p})}"))
            else:
                found.append(all_of(f"{finding} on {dataset}", parts))
    return found


def method_label(model: str, method: str, vit: str) -> str:
    """'ViT-6' for the ViT, else 'Para-F-1-6 prefix'."""
    if model == f"Para-F-{vit}":
        return f"ViT-{vit.split('-')[1]}"
    return f"{model} {method}"


def run_comparison(comparison: Comparison, datasets: tuple[str, ...] | None = None, methods: tuple[str, ...] = METHODS,
                   seeds: tuple[int, ...] | None = None, progress: bool = True) -> tuple[pd.DataFrame, list[RunResult]]:
    """The ViT (joint training) and the ParaFormer under each of `methods`: one row per run, with a `label`."""
    vit_runs, vit_results = run_sweep(comparison.profile, [comparison.vit], datasets, progress, seeds=seeds)
    para_runs, para_results = run_sweep(comparison.profile, [comparison.paraformer], datasets, progress, methods, seeds)
    runs = pd.concat([vit_runs, para_runs], ignore_index=True)
    runs["label"] = [method_label(m, k, comparison.vit) for m, k in zip(runs["model"], runs["method"])]
    return runs, vit_results + para_results


def versus_vit_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and label (the ViT, the ParaFormer under each method): mean accuracy over seeds with its 95%
    interval, parameters, seconds and training compute per run."""
    table = accuracy_table(runs, ("dataset", "label"))
    table["model"] = [runs[runs["label"] == label]["model"].iloc[0] for label in table["label"]]
    columns = ["dataset", "label", "model", "method", "params", "our_acc", "our_acc_low", "our_acc_high", "seed_std",
               "seeds", "test_images", "seconds_per_run"]
    return table[columns + [c for c in ("train_tflop",) if c in table]]


def versus_vit_claims(runs: pd.DataFrame, paper_gain: float) -> list[AccuracyClaim]:
    """ "The ParaFormer under <method> beats the ViT" per dataset and method, paired by seed and image; the paper's
    figure is its best gain ("up to"), the same for every method."""
    claims = []
    for dataset in dict.fromkeys(runs["dataset"]):
        labels = list(dict.fromkeys(runs[runs["dataset"] == dataset]["label"]))
        vit = [label for label in labels if label.startswith("ViT")]
        for label in labels:
            if vit and label not in vit:
                claims.append(AccuracyClaim(dataset, label, vit[0], f"{label} beats {vit[0]} on {dataset}",
                                            paper_gain, column="label"))
    return claims


def learning_curves(runs: pd.DataFrame, results: list[RunResult]) -> pd.DataFrame:
    """One row per run and epoch: test accuracy against epochs and against cumulative training seconds."""
    rows = []
    for (_, run), result in zip(runs.iterrows(), results):
        seconds = 0.0
        for h in result.history:
            seconds += h["train_seconds"]
            rows.append({"dataset": run["dataset"], "label": run["label"], "method": run["method"],
                         "seed": run["seed"], "epoch": h["epoch"], "train_seconds": seconds,
                         "test_acc": h["test_acc"], "branches": h["branches"]})
    return pd.DataFrame(rows)


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


def convergence_summary(targets: pd.DataFrame, reference: str) -> list[str]:
    """Per dataset, in words: which methods reach the target sooner than the reference, in epochs and seconds."""
    lines = []
    for dataset, rows in targets.groupby("dataset", sort=False):
        ref = rows[rows["label"] == reference].iloc[0]
        parts = []
        for _, r in rows.iterrows():
            if math.isnan(r["epochs_to_target"]):
                parts.append(f"{r['label']} never (final {r['final_acc']:.1f})")
            else:
                parts.append(f"{r['label']} after {int(r['epochs_to_target'])} epoch(s) / {r['seconds_to_target']:.1f} s")
        faster = [r["label"] for _, r in rows.iterrows() if r["label"] != reference
                  and not math.isnan(r["seconds_to_target"]) and r["seconds_to_target"] < ref["seconds_to_target"]]
        sooner = [r["label"] for _, r in rows.iterrows() if r["label"] != reference
                  and not math.isnan(r["epochs_to_target"]) and r["epochs_to_target"] < ref["epochs_to_target"]]
        lines.append(f"**{dataset}** (target {ref['target_acc']:.1f}% = {ref['target_acc'] / ref['final_acc']:.2f} x "
                     f"{reference}'s final seed-mean accuracy): " + "; ".join(parts) + ". "
                     f"Sooner than {reference} in epochs: {', '.join(sooner) or 'none'}; "
                     f"in training seconds: {', '.join(faster) or 'none'}.")
    return lines
