"""The speed tables of notebook 06, and what they say about the papers' speed claims, from the benchmark CSVs
(`paraformer.bench.load`). Every ratio divides two times measured in the same run on the same device.

The papers' claims:
- 2024 (abstract and conclusion): Para-Former's inference time does not grow with the number of layers;
- 2024, section 3.3 (an argument, not a measurement): a Para-Former of depth M runs N/M times faster than a
  serial network of depth N, since with its branches in parallel its time depends on its depth only;
- 2025 (abstract): ParaFormer on several GPUs trains 3.30x (+- 0.86) faster than FairScale's pipeline.
"""

from __future__ import annotations

import pandas as pd

from . import costmodel
from .paper import FAIRSCALE_SPEEDUP, PAPER_2024, PAPER_2025

AUTO_TARGET = 1.05  # auto at most 5% slower than the faster of loop and fused
LATENCY_TARGET = 0.6  # batch-1 Para-F-1-24 latency at most 0.6x the ViT-24's
SCALING_TARGET = 1.7  # branch-parallel step at 2 processes at least 1.7x faster than at 1
PIPELINES = ("torch-gpipe", "torch-1f1b", "fairscale")


def device_of(df: pd.DataFrame) -> str:
    return ", ".join(sorted(set(df["device"])))


def strategy_table(strategies: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, batch, mode): each strategy's milliseconds, auto's choice, auto / best of loop, fused."""
    wide = strategies.pivot_table(index=["model", "batch", "mode"], columns="strategy", values="seconds",
                                  sort=False) * 1e3
    chose = strategies[strategies["strategy"] == "auto"].set_index(["model", "batch", "mode"])["auto_chose"]
    table = wide[["loop", "fused", "auto"]].add_suffix("_ms")
    table["auto_chose"] = chose
    table["auto_vs_best"] = wide["auto"] / wide[["loop", "fused"]].min(axis=1)
    return table.reset_index()


def layers_table(layers: pd.DataFrame) -> pd.DataFrame:
    """The N/M table: each Para-F-M-n (auto) beside the ViT with as many layers (N = n): the paper's N/M, and the
    measured batch-1 inference speed-up (ViT time / ParaFormer time) and training speed-up (images per second)."""
    def times(mode):
        rows = layers[layers["mode"] == mode]
        vit = rows[rows["family"] == "ViT"].set_index("num_layers")["seconds"]
        para = rows[(rows["family"] == "ParaFormer") & (rows["strategy"] == "auto")]
        return para.assign(vit_seconds=para["num_layers"].map(vit))

    inference, train = times("inference"), times("train")
    table = inference[["model", "num_layers", "branch_depth"]].copy()
    table["vs"] = "ViT-" + table["num_layers"].astype(str)
    table["paper_N_over_M"] = table["num_layers"] / table["branch_depth"]
    table["inference_ms"] = inference["seconds"] * 1e3
    table["vit_inference_ms"] = inference["vit_seconds"] * 1e3
    table["inference_speedup"] = inference["vit_seconds"] / inference["seconds"]
    speedup = train.set_index("model")["vit_seconds"] / train.set_index("model")["seconds"]
    table["train_speedup"] = table["model"].map(speedup)
    return table.sort_values(["branch_depth", "num_layers"]).reset_index(drop=True)


def multi_table(data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per number of processes and method, the best step over micro-batch counts, and the ratio of that time to
    the branch-parallel step of the same run (the paper's 3.30x is such a ratio, against FairScale)."""
    steps = costmodel.multi_steps(data)
    best = steps.loc[steps.groupby(["processes", "method"], sort=False)["seconds"].idxmin()]
    branch = best[best["method"] == "branch"].set_index("processes")["seconds"]
    table = best[["processes", "method", "model", "micro_batches", "seconds"]].copy()
    table["step_ms"] = table.pop("seconds") * 1e3
    table["vs_branch"] = table["step_ms"] / 1e3 / table["processes"].map(branch)
    # each method's own parallel speed-up: its best step at 1 process over its best step here
    single = table[table["processes"] == 1].set_index("method")["step_ms"]
    table["speedup_over_1_process"] = table["method"].map(single) / table["step_ms"]
    table["paper_vs_fairscale"] = [f"{FAIRSCALE_SPEEDUP[0]:.2f} +- {FAIRSCALE_SPEEDUP[1]:.2f}" if m == "fairscale"
                                   else "" for m in table["method"]]
    return table.reset_index(drop=True)


def branch_scaling(data: dict[str, pd.DataFrame], processes: int) -> float | None:
    """How many times faster the branch-parallel step is on `processes` processes than the whole model on one,
    both from the same run; None where that run is missing."""
    steps = data.get(f"multi_steps_{processes}")
    if steps is None:
        return None
    seconds = steps.set_index("method")["seconds"]
    return float(seconds["branch, 1 process"] / seconds["branch"])


def _verdict(ok: bool) -> str:
    return "**supported**" if ok else "**not supported**"


def summary(data: dict[str, pd.DataFrame]) -> list[str]:
    """The targets and the papers' claims, each with our measured figure, its device, and a verdict."""
    lines = []
    if "strategies" in data:
        table = strategy_table(data["strategies"])
        worst = table.loc[table["auto_vs_best"].idxmax()]
        lines.append(
            f"Target, auto within {AUTO_TARGET - 1:.0%} of the faster of loop and fused at every measured shape: "
            f"{'met' if worst['auto_vs_best'] <= AUTO_TARGET else 'NOT met'}. Worst case {worst['auto_vs_best']:.3f}x "
            f"({worst['model']}, batch {worst['batch']}, {worst['mode']}) over {len(table)} shapes "
            f"[{device_of(data['strategies'])}].")
    if "layers" in data:
        layers = data["layers"]
        table = layers_table(layers)
        device = device_of(layers)
        one = table[table["branch_depth"] == 1].set_index("num_layers")
        n = 24 if 24 in one.index else int(one.index.max())
        ratio = 1 / one.loc[n, "inference_speedup"]
        lines.append(f"Target, batch-1 inference latency of Para-F-1-{n} at most {LATENCY_TARGET}x that of ViT-{n}: "
                     f"{'met' if ratio <= LATENCY_TARGET else 'NOT met'}, {ratio:.2f}x "
                     f"({one.loc[n, 'inference_ms']:.2f} ms against {one.loc[n, 'vit_inference_ms']:.2f} ms) "
                     f"[{device}].")
        lo, hi = int(one.index.min()), int(one.index.max())
        growth = one.loc[hi, "inference_ms"] / one.loc[lo, "inference_ms"]
        vit_growth = one.loc[hi, "vit_inference_ms"] / one.loc[lo, "vit_inference_ms"]
        lines.append(
            f"{PAPER_2024}: inference time does not grow with the number of layers. {_verdict(growth < 1.25)} on "
            f"one device (we would call under 1.25x 'not growing'): from {lo} to {hi} layers, batch-1 latency of "
            f"Para-F-1-n grows {growth:.1f}x, that of the ViT {vit_growth:.1f}x. One device runs the branches side "
            f"by side only as far as its cores or units allow [{device}].")
        row = table[(table["branch_depth"] == 1) & (table["num_layers"] == hi)].iloc[0]
        reached = table["inference_speedup"] / table["paper_N_over_M"]
        lines.append(
            f"{PAPER_2024}, section 3.3: a depth-M Para-Former runs N/M times faster than a depth-N serial network. "
            f"{_verdict(bool((reached >= 0.9).all()))} at batch 1 on one device: the measured speed-ups reach "
            f"{reached.min():.0%} to {reached.max():.0%} of N/M (Para-F-1-{hi}: {row['inference_speedup']:.1f}x "
            f"where N/M = {row['paper_N_over_M']:.0f}); in training at batch {int(layers['batch'].max())}, "
            f"{table['train_speedup'].min():.2f}x to {table['train_speedup'].max():.2f}x. N/M assumes every "
            f"branch has hardware of its own; the multi-process table tests that case [{device}].")
    steps = costmodel.multi_steps(data)
    if not steps.empty:
        multi = multi_table(data)
        top = int(multi["processes"].max())
        device = device_of(steps)
        on_cpu = set(steps["device_type"]) == {"cpu"}
        scaling = branch_scaling(data, top)
        if scaling is not None:
            lines.append(f"Target, branch-parallel step on {top} processes at least {SCALING_TARGET}x faster than "
                         f"one process: {'met' if scaling >= SCALING_TARGET else 'NOT met'}, {scaling:.2f}x "
                         f"(ideal {top}) [{device}].")
        at_top = multi[multi["processes"] == top].set_index("method")
        paper, spread = FAIRSCALE_SPEEDUP
        for method in PIPELINES:
            if method not in at_top.index:
                lines.append(f"{method} was not measured at {top} processes (see the benchmark log).")
                continue
            ratio = at_top.loc[method, "vs_branch"]
            place = ("within" if paper - spread <= ratio <= paper + spread
                     else "below" if ratio < paper - spread else "above")
            claim = (f"{PAPER_2025}: ParaFormer {paper:.2f}x (+- {spread:.2f}) faster than FairScale. "
                     if method == "fairscale" else "")
            verdict = (_verdict(ratio >= paper - spread) + ": " if method == "fairscale" else "")
            if method == "fairscale" and on_cpu:
                claim += ("On a CPU, FairScale's Pipe runs all partitions on one worker thread (it keeps one per "
                          "device, and every partition's device is 'cpu'), so here it has no parallelism to offer; "
                          "the paper measured it on GPUs. ")
            lines.append(
                f"{claim}{verdict}branch-parallel {at_top.loc['branch', 'model']} is {ratio:.2f}x faster than "
                f"{method}'s best pipeline ({at_top.loc[method, 'micro_batches']} micro-batches) of "
                f"{at_top.loc[method, 'model']} at {top} processes, {place} the paper's range "
                f"{paper - spread:.2f}-{paper + spread:.2f}x. "
                f"Most of the gap is the model, not the parallelism: see each method's own speed-up from 1 to "
                f"{top} processes in the table [{device}].")
    if {"multi_costs_1", "multi_costs_2"} <= set(data):
        predicted = costmodel.predictions(data, _profile(data))
        checked = predicted.dropna(subset=["measured_ms"])
        at = predicted.set_index(["method", "devices"])["predicted_ms"]
        ratios = ", ".join(f"{p}: {at['pipeline (GPipe)', p] / at['branch', p]:.2f}x"
                           for p in sorted(set(predicted["devices"])))
        lines.append(
            f"Cost model: at 1 and 2 processes its predictions are {checked['predicted_over_measured'].min():.2f} "
            f"to {checked['predicted_over_measured'].max():.2f} times the measured step times. Predicted GPipe step "
            f"over branch-parallel step, by number of devices: {ratios} (devices and links like the measured "
            f"ones; see the cost-model table for the step times).")
    return lines


def _profile(data: dict[str, pd.DataFrame]) -> str:
    (profile,) = set(data["multi_costs_1"]["profile"])
    return profile
