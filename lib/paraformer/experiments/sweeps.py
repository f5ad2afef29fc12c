"""The model sweeps and comparisons the table notebooks share: train (or fetch) every run, then tabulate and
summarize the results beside the paper's numbers."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pandas as pd

from ..config import METHODS
from ..data import load_data
from ..train import RunResult, train
from .profiles import Comparison, Profile
from .stats import difference_noise, paired_p_value


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
            result = train(model_config, data_config, replace(profile.recipe, seed=seed, method=method), data=data,
                           progress=progress)
            results.append(result)
            rows.append({
                "dataset": dataset, "model": model_config.name, "method": method,
                "branch_depth": model_config.branch_depth, "num_layers": model_config.num_layers, "seed": seed,
                "test_images": len(data.test_labels), "test_acc": result.final_test_acc,
                "best_test_acc": max(h["test_acc"] for h in result.history), "num_params": result.num_params,
                "train_seconds": result.wall_seconds, "cached": result.cached, "run_key": result.key,
                "data_source": result.data_source, "device": result.device, "code_version": result.code_version,
                "code_digest": result.code_digest,
            })
    return pd.DataFrame(rows), results


def compare_with_paper(runs: pd.DataFrame, paper_table: dict) -> pd.DataFrame:
    """Mean (and std over seeds) of our accuracy beside the paper's, one row per dataset and model."""
    grouped = runs.groupby(["dataset", "model", "branch_depth", "num_layers", "test_images"], sort=False)
    table = grouped.agg(ours=("test_acc", "mean"), ours_std=("test_acc", "std"), seeds=("seed", "count"),
                        params=("num_params", "first"), train_seconds=("train_seconds", "sum")).reset_index()
    table["paper"] = pd.to_numeric([paper_table.get(d, {}).get(m) for d, m in zip(table["dataset"], table["model"])])
    table["ours_minus_paper"] = table["ours"] - table["paper"]
    # Binomial standard error of the mean accuracy over all test predictions: the measurement noise that a
    # difference between two cells has to exceed (seed-to-seed variation comes on top, in our_acc_std).
    p = table["ours"] / 100
    table["ours_se"] = 100 * (p * (1 - p) / (table["test_images"] * table["seeds"])) ** 0.5
    columns = ["dataset", "model", "branch_depth", "num_layers", "params", "paper", "ours", "ours_se", "ours_std",
               "ours_minus_paper", "seeds", "test_images", "train_seconds"]
    return table[columns].rename(columns={"paper": "paper_acc", "ours": "our_acc", "ours_se": "our_acc_se",
                                          "ours_std": "our_acc_std"})


def trend_summary(table: pd.DataFrame) -> list[str]:
    """Per dataset, in words: does our accuracy rise with the number of layers, as the paper's does, and
    are the steps larger than the noise of measuring an accuracy on this many test images?"""
    lines = []
    for dataset, rows in table.sort_values("num_layers").groupby("dataset", sort=False):
        accs = rows["our_acc"].tolist()
        rises = sum(b > a for a, b in zip(accs, accs[1:]))
        steps = len(accs) - 1
        verdict = ("rises at every step" if rises == steps else "never rises" if rises == 0
                   else f"rises at {rises} of {steps} steps")
        overall = accs[-1] - accs[0]
        spread = " -> ".join(f"{m.removeprefix('Para-F-')}: {a:.1f}" for m, a in zip(rows["model"], accs))
        line = f"**{dataset}**: our accuracy {verdict} ({spread}; {overall:+.1f} points overall)."
        n = int(rows["test_images"].iloc[0] * rows["seeds"].min())
        threshold = difference_noise(rows["our_acc"].mean(), n)
        line += (f" With {n} test predictions per model, a difference between two models must exceed about "
                 f"{threshold:.1f} points (two standard errors) to stand out from test-set noise: the overall "
                 f"change of {overall:+.1f} points {'does' if abs(overall) > threshold else 'does not'}.")
        paper = rows["paper_acc"].dropna()
        if len(paper):
            gap = rows["ours_minus_paper"].dropna()
            line += (f" Paper: {paper.iloc[0]:.1f} -> {paper.iloc[-1]:.1f}; ours minus paper ranges from "
                     f"{gap.min():+.1f} to {gap.max():+.1f} points.")
        else:
            line += " The paper has no number for this dataset."
        lines.append(line)
    return lines


def depth_sweep_summary(table: pd.DataFrame, paper_table: dict) -> list[str]:
    """Per dataset, in words: do our runs show the 2024 paper's two depth findings (Table 3 against Table 2)?
    (1) deeper branches beat Para-F-1-24 at the same 24 layers; (2) Para-F-6-6 beats Para-F-2-24 and 3-24.
    `table` holds both sweeps (compare_with_paper rows); `paper_table` maps dataset -> model -> the paper's %."""
    lines = []
    for dataset, rows in table.groupby("dataset", sort=False):
        acc = rows.set_index("model")["our_acc"]
        paper = paper_table.get(dataset, {})
        needed = ["Para-F-1-24", "Para-F-6-6", "Para-F-2-24", "Para-F-3-24"]
        if any(name not in acc for name in needed):
            lines.append(f"**{dataset}**: needs {', '.join(needed)} to test the findings; this run has "
                         f"{', '.join(acc.index)}.")
            continue
        n = int((rows["test_images"] * rows["seeds"]).min())
        noise = difference_noise(acc.mean(), n)

        def compare(a: str, b: str) -> tuple[str, bool]:
            """The comparison in words, and whether `a` wins beyond noise."""
            gap = acc[a] - acc[b]
            word = "beats" if gap > noise else "loses to" if gap < -noise else "is within noise of"
            text = f"{a.removeprefix('Para-F-')} {word} {b.removeprefix('Para-F-')} ({gap:+.1f})"
            if a in paper and b in paper:
                text += f" [paper {paper[a] - paper[b]:+.1f}]"
            return text, gap > noise

        deeper = [name for name in acc.index if name.endswith("-24") and name != "Para-F-1-24"]
        first, won_first = zip(*(compare(name, "Para-F-1-24") for name in deeper))
        second, won_second = zip(*(compare("Para-F-6-6", name) for name in ("Para-F-2-24", "Para-F-3-24")))
        wins, both = sum(won_first), sum(won_second)
        lines.append(
            f"**{dataset}** (differences in points; beyond two standard errors of a difference, "
            f"{noise:.1f} points at {n} test predictions, counts as a win or loss): "
            f"(1) deeper branches beat Para-F-1-24 at 24 layers in {wins} of {len(deeper)} cases: "
            + "; ".join(first) + ". "
            f"(2) Para-F-6-6, a plain ViT of depth 6, beats {both} of 2-24 and 3-24: " + "; ".join(second) + ". "
            f"In our run finding (1) {'holds' if wins == len(deeper) else 'fails'} and finding (2) "
            f"{'holds' if both == 2 else 'fails'}" + ("." if paper else "; the paper has no numbers for this dataset."))
    return lines


# --- the 2025 paper: ParaFormer against ViT, under every training method (notebooks 03 and 04) ---------------

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


def versus_vit_table(runs: pd.DataFrame, paper_gain: float) -> pd.DataFrame:
    """Per dataset and label: mean and std over seeds, and the difference to the ViT of the same seed
    (paired, so that seed-to-seed variation shared by both models cancels), beside the paper's best gain."""
    vit = runs[runs["label"].str.startswith("ViT")].set_index(["dataset", "seed"])["test_acc"]
    runs = runs.assign(minus_vit=[acc - vit.get((d, s), float("nan"))
                                  for d, s, acc in zip(runs["dataset"], runs["seed"], runs["test_acc"])])
    table = runs.groupby(["dataset", "label", "model", "method"], sort=False).agg(
        params=("num_params", "first"), our_acc=("test_acc", "mean"), our_acc_std=("test_acc", "std"),
        seeds=("seed", "count"), ours_minus_vit=("minus_vit", "mean"), ours_minus_vit_std=("minus_vit", "std"),
        seconds_per_run=("train_seconds", "mean"), test_images=("test_images", "first")).reset_index()
    is_vit = table["label"].str.startswith("ViT")
    table.loc[is_vit, ["ours_minus_vit", "ours_minus_vit_std"]] = float("nan")
    table["p_value"] = [paired_p_value(m, sd, n) for m, sd, n in
                        zip(table["ours_minus_vit"], table["ours_minus_vit_std"], table["seeds"])]
    table["paper_best_gain_over_vit"] = [float("nan") if v else paper_gain for v in is_vit]
    order = {dataset: i for i, dataset in enumerate(dict.fromkeys(runs["dataset"]))}
    return table.sort_values("dataset", key=lambda d: d.map(order), kind="stable").reset_index(drop=True)


def versus_vit_summary(table: pd.DataFrame, paper_gain: float) -> list[str]:
    """Per dataset, in words: which ParaFormer variants beat the ViT, by how much, and beyond noise or not."""
    lines = []
    for dataset, rows in table.groupby("dataset", sort=False):
        vit = rows[rows["label"].str.startswith("ViT")].iloc[0]
        paras = rows[~rows["label"].str.startswith("ViT")].sort_values("ours_minus_vit", ascending=False)
        n = int(vit["seeds"])
        parts = []
        for _, r in paras.iterrows():
            p = r["p_value"]
            verdict = "" if math.isnan(p) else f", p = {p:.2f}" + (" (significant at 5%)" if p < 0.05 else "")
            parts.append(f"{r['method']} {r['ours_minus_vit']:+.2f} ± {r['ours_minus_vit_std']:.2f}{verdict}")
        best = paras.iloc[0]
        verdict = ("beats" if best["ours_minus_vit"] > 0 else "does not beat")
        lines.append(f"**{dataset}**: {vit['label']} reaches {vit['our_acc']:.2f} ± {vit['our_acc_std']:.2f} % "
                     f"({n} seeds). Our best ParaFormer ({best['method']}) {verdict} it: {best['ours_minus_vit']:+.2f} "
                     f"points, against the paper's up to +{paper_gain:.2f}. Differences to the ViT of the same seed, "
                     f"mean ± std over seeds (p: paired t-test over seeds): " + "; ".join(parts) + ".")
    return lines


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
