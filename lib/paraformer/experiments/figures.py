"""The notebooks' figures that need more than a plot call: each function takes the tables a notebook already has
and returns a matplotlib Figure, which the notebook shows and saves (`tables.save_figure`).

What every figure here keeps to: ticks only where there are measurements (the layer counts, the kept branches,
whole epochs), legends short enough to read (split by what colour and line style each mean), and every band or bar
said what it is (a 95% interval, or the spread over seeds).
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from .display import plain_log_ticks
from .expansion import incremental_summary

LABEL_FONT = 8  # points: legends and labels on lines


def _figure(*args, **kwargs):
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _handles(*entries):
    """Legend entries drawn from nothing: (label, line style kwargs)."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], label=label, **style) for label, style in entries]


def seed_interval(values: pd.Series, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of per-seed values: Student's t interval over the seeds; low = high = mean for one seed."""
    values = values.dropna().astype(float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


# --- notebook 03 ---------------------------------------------------------------------------------------------------

def convergence(curves: pd.DataFrame, device: str, profile: str):
    """Test accuracy against epochs (log scale) and against training seconds, per dataset: the mean over seeds,
    with a band of one standard deviation over the seeds either side."""
    names = list(dict.fromkeys(curves["dataset"]))
    labels = list(dict.fromkeys(curves["label"]))
    fig, axes = _figure(2, len(names), figsize=(5.5 * len(names), 7), squeeze=False)
    for column, dataset in enumerate(names):
        grouped = curves[curves["dataset"] == dataset].groupby(["label", "epoch"], sort=False)
        means = grouped[["test_acc", "train_seconds"]].mean().join(grouped["test_acc"].std().rename("sd"))
        means = means.reset_index()
        for color, label in enumerate(labels):
            curve = means[means["label"] == label]
            style = dict(color="black" if label.startswith("ViT") else f"C{color}", marker=".")
            band = curve["sd"].fillna(0)
            for row, x in enumerate(("epoch", "train_seconds")):
                ax = axes[row, column]
                ax.plot(curve[x], curve["test_acc"], label=label, **style)
                ax.fill_between(curve[x], curve["test_acc"] - band, curve["test_acc"] + band, color=style["color"],
                                alpha=0.12, lw=0)
        axes[0, column].set(title=f"{dataset} ({profile} profile)", xlabel="epoch (log scale)",
                            ylabel="test accuracy (%)", xscale="log")
        plain_log_ticks(axes[0, column])
        axes[1, column].set(xlabel="training seconds", ylabel="test accuracy (%)")
    from matplotlib.patches import Patch

    handles, _ = axes[0, 0].get_legend_handles_labels()
    axes[0, 0].legend(handles=handles + [Patch(color="grey", alpha=0.25, label="band: ±1 s.d. over seeds")],
                      fontsize=LABEL_FONT)
    fig.suptitle(f"Mean over seeds; band: one standard deviation over the seeds either side\n(per-epoch test "
                 f"images; measured on {device})", fontsize=9)
    fig.tight_layout()
    return fig


# --- notebook 04 ---------------------------------------------------------------------------------------------------

SELECTIONS = {"prefix": ("first k branches", "-"), "greedy": ("best k on validation", ":")}


def compression(means: pd.DataFrame, model: str, profile: str):
    """Test accuracy against the branches kept (k, from all to one: compression grows to the right), each tick
    with its compression ratio in parameters. Colour: the training method; line style: how the k branches were
    chosen; bars: 95% interval (drawn for the first k); crosses: a ViT of that size trained from scratch."""
    names = list(dict.fromkeys(means["dataset"]))
    fig, axes = _figure(1, len(names), figsize=(6.5 * len(names), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], names):
        rows = means[means["dataset"] == dataset]
        methods = list(dict.fromkeys(rows["method"]))
        for color, method in enumerate(methods):
            for selection, (_, style) in SELECTIONS.items():
                line = rows[(rows["method"] == method) & (rows["selection"] == selection)]
                line = line.sort_values("branches_kept")
                interval = [line["test_acc"] - line["test_acc_low"], line["test_acc_high"] - line["test_acc"]]
                ax.errorbar(line["branches_kept"], line["test_acc"], yerr=interval if selection == "prefix" else None,
                            fmt=style, marker="o", ms=3, capsize=2, color=f"C{color}")
        vits = rows.dropna(subset=["vit_same_size_acc"]).drop_duplicates("branches_kept")
        ax.plot(vits["branches_kept"], vits["vit_same_size_acc"], "kx--")
        kept = rows.drop_duplicates("branches_kept").sort_values("branches_kept")
        ax.set_xticks(kept["branches_kept"], [f"{k}\n{r:.1f}x" for k, r in zip(kept["branches_kept"],
                                                                              kept["param_ratio"])])
        ax.invert_xaxis()  # all branches on the left, the most compressed model on the right
        ax.set(xlabel="branches kept k, and compression in parameters (full / kept)", ylabel="test accuracy (%)",
               title=f"{dataset} ({profile} profile, {model}; bars: 95% interval)")
        method_handles = _handles(*[(method, dict(color=f"C{i}", marker="o", ms=3)) for i, method in enumerate(methods)])
        chosen = _handles(*[(words, dict(color="grey", linestyle=style)) for words, style in SELECTIONS.values()],
                          ("ViT of that size, from scratch", dict(color="black", marker="x", linestyle="--")))
        first = ax.legend(handles=method_handles, title="trained by", fontsize=LABEL_FONT, title_fontsize=LABEL_FONT,
                          loc="upper left", bbox_to_anchor=(1.02, 1))
        ax.add_artist(first)
        ax.legend(handles=chosen, title="k branches chosen as", fontsize=LABEL_FONT, title_fontsize=LABEL_FONT,
                  loc="lower left", bbox_to_anchor=(1.02, 0))
    fig.tight_layout()
    return fig


# --- notebook 05 ---------------------------------------------------------------------------------------------------

STRATEGY_COLORS = {"expand": "C0", "finetune": "C3", "joint": "black"}


def per_seed_incremental(metrics: pd.DataFrame) -> pd.DataFrame:
    """`expansion.incremental_summary` of each seed's metrics, with its seed."""
    return pd.concat([incremental_summary(rows.drop(columns="seed")).assign(seed=seed)
                      for seed, rows in metrics.groupby("seed", sort=False)], ignore_index=True)


def _with_intervals(rows: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """One row per `by` group: the mean of `value` over seeds and its t interval (`seed_interval`)."""
    out = [dict(zip(by, key if isinstance(key, tuple) else (key,)), **dict(zip(("mean", "low", "high"),
                                                                                seed_interval(group[value]))))
           for key, group in rows.groupby(by, sort=False)]
    return pd.DataFrame(out)


def class_incremental(metrics: pd.DataFrame, dataset: str, profile: str):
    """Average accuracy over the classes seen so far, the task not given and given, after each task; and each
    task's accuracy after the last. Points: the mean over seeds; bars: the 95% t interval over the seeds (none
    for one seed)."""
    seeds = metrics["seed"].nunique()
    per_seed = per_seed_incremental(metrics)
    last = metrics[metrics["after_task"] == metrics["after_task"].max()]
    panels = [(_with_intervals(per_seed, ["strategy", "after_task"], "avg_class_il_acc"), "after_task",
               "tasks learned", "accuracy over seen classes (%)", "class-incremental (task not given)"),
              (_with_intervals(per_seed, ["strategy", "after_task"], "avg_task_il_acc"), "after_task",
               "tasks learned", "accuracy over seen tasks (%)", "task-incremental (task given)"),
              (_with_intervals(last, ["strategy", "task"], "class_il_acc"), "task", "task",
               "class-incremental accuracy (%)", "after the last task, per task")]
    fig, axes = _figure(1, 3, figsize=(15, 3.9))
    for ax, (table, x, xlabel, ylabel, title) in zip(axes, panels):
        for strategy, line in table.groupby("strategy", sort=False):
            ax.errorbar(line[x], line["mean"], yerr=[line["mean"] - line["low"], line["high"] - line["mean"]],
                        fmt="o-", capsize=3, color=STRATEGY_COLORS.get(strategy), label=strategy)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.set_xticks(sorted(set(table[x])))
        ax.legend(fontsize=LABEL_FONT)
    bars = f"bars: 95% t interval over {seeds} seeds" if seeds > 1 else "one seed: no interval"
    fig.suptitle(f"{dataset}, {metrics['task'].nunique()} tasks ({profile} profile); mean over seeds, {bars}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def growth(growth_mean: pd.DataFrame, dataset: str, profile: str):
    """Test accuracy of each grown model and of the same size trained from scratch, against branches and against
    measured training seconds; bars: 95% interval."""
    fig, axes = _figure(1, 2, figsize=(11, 3.9))
    for path, rows in growth_mean.groupby("path", sort=False):
        interval = [rows["test_acc"] - rows["test_acc_low"], rows["test_acc_high"] - rows["test_acc"]]
        axes[0].errorbar(rows["branches"], rows["test_acc"], yerr=interval, fmt="o-", capsize=3, label=path)
        axes[1].errorbar(rows["train_seconds"], rows["test_acc"], yerr=interval, fmt="o-", capsize=3, label=path)
    axes[0].set(xlabel="branches", ylabel="test accuracy (%)", title="against size")
    axes[0].set_xticks(sorted(set(growth_mean["branches"])))
    axes[1].set(xlabel="training seconds", ylabel="test accuracy (%)", title="against measured time")
    for ax in axes:
        ax.legend(fontsize=LABEL_FONT)
    fig.suptitle(f"{dataset} ({profile} profile): grown (only the new branches learn) vs from scratch at the same "
                 "compute; bars: 95% interval", fontsize=10)
    fig.tight_layout()
    return fig


# --- notebook 06 ---------------------------------------------------------------------------------------------------

def layer_speed(layers: pd.DataFrame, device: str, profile: str):
    """Batch-1 inference latency and training throughput against the number of layers n, one line per
    Para-F-m-n and strategy and the ViT-n; the x ticks are the layer counts measured."""
    fig, axes = _figure(1, 2, figsize=(12, 4.2))
    for ax, (mode, value, label) in zip(axes, [("inference", "seconds", "batch-1 latency (ms)"),
                                               ("train", "images_per_second", "training images per second")]):
        rows = layers[layers["mode"] == mode]
        scale = 1e3 if value == "seconds" else 1
        for (family, depth, strategy), line in rows.groupby(["family", "branch_depth", "strategy"]):
            if family != "ViT":
                ax.plot(line["num_layers"], line[value] * scale, "-" if depth == 1 else ":", marker="o",
                        label=f"Para-F-{depth}-n {strategy}")
        vit = rows[rows["family"] == "ViT"]
        ax.plot(vit["num_layers"], vit[value] * scale, "k-", marker="s", lw=2, label="ViT-n")
        counts = sorted(rows["num_layers"].unique())
        ax.set(xscale="log", yscale="log", xlabel="layers n", ylabel=label,
               title=f"{mode}, batch {int(rows['batch'].iloc[0])}")
        plain_log_ticks(ax, "y")
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.set_xticks([], minor=True)  # the measured counts only
        ax.legend(fontsize=LABEL_FONT)
    fig.suptitle(f"Measured on {device} ({profile} profile)")
    fig.tight_layout()
    return fig


def cost_model(lines: list, device: str, depth: int | None):
    """The cost model's predicted training step against devices P, in two short legends: one colour per method
    and model, and one line style per kind of figure (predicted under a ring all-reduce: solid; under a tree:
    dashed, where the two differ; measured at 1 and 2 processes: crosses). `lines`: `speedup.cost_model_lines`."""
    fig, ax = _figure(figsize=(10, 4.6))
    for i, line in enumerate(lines):
        color = f"C{i % 10}"
        ax.plot(line.devices, line.ring_ms, "-", color=color, marker="o", ms=3)
        if line.tree_ms is not None:
            ax.plot(line.devices, line.tree_ms, "--", color=color, marker="o", ms=3)
        if line.measured_ms:
            ax.scatter(line.measured_devices, line.measured_ms, color=color, marker="x", s=70, zorder=3)
    ax.set(xscale="log", yscale="log", xlabel="devices P", ylabel="training step (ms)",
           title="Predicted by the cost model" + (f", models of {depth} layers" if depth else "")
                 + f"\n(fed by the steps measured at 1 and 2 processes on {device})")
    devices = sorted({p for line in lines for p in line.devices})
    ax.set_xticks(devices, [str(p) for p in devices])
    ax.set_xticks([], minor=True)  # only the predicted device counts
    plain_log_ticks(ax, "y")
    methods = ax.legend(handles=_handles(*[(line.label, dict(color=f"C{i % 10}", marker="o", ms=3))
                                           for i, line in enumerate(lines)]),
                        title="method, model", fontsize=LABEL_FONT, title_fontsize=LABEL_FONT, loc="upper left",
                        bbox_to_anchor=(1.02, 1))
    ax.add_artist(methods)
    ax.legend(handles=_handles(("predicted, ring all-reduce", dict(color="grey", linestyle="-")),
                               ("predicted, tree all-reduce", dict(color="grey", linestyle="--")),
                               ("measured", dict(color="grey", marker="x", linestyle="none"))),
              fontsize=LABEL_FONT, loc="lower left", bbox_to_anchor=(1.02, 0))
    fig.tight_layout()
    return fig


# --- notebook 07 ---------------------------------------------------------------------------------------------------

def finetune_curves(runs: pd.DataFrame, records: list, paper: dict, imagenet: bool):
    """Test accuracy after each fine-tuning epoch (whole epochs on the axis), per arrangement of the first seed's
    weights; `paper`: dataset -> the paper's Table 4 accuracy, drawn only beside ImageNet weights."""
    from matplotlib.ticker import MaxNLocator

    names = list(dict.fromkeys(runs["dataset"]))
    fig, axes = _figure(1, len(names), figsize=(5.2 * len(names), 3.6), squeeze=False)
    first_seed = runs["seed"].min()
    for ax, dataset in zip(axes[0], names):
        for (_, run), record in zip(runs.iterrows(), records):
            if run["dataset"] == dataset and run["seed"] == first_seed:
                ax.plot([h["epoch"] for h in record.history], [h["test_acc"] for h in record.history], marker="o",
                        label=f"{run['arrangement']} ({run['model']})")
        if imagenet and paper.get(dataset) is not None:  # the paper's line belongs beside a fine-tune of its weights
            ax.axhline(paper[dataset], color="grey", linestyle="--", label="paper, sequential")
        weights = "ImageNet weights" if imagenet else "RANDOM weights (not pretrained)"
        ax.set(title=f"{dataset}: {weights}, seed {first_seed}", xlabel="fine-tuning epoch",
               ylabel="test accuracy (%, per-epoch images)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=LABEL_FONT - 1)
    fig.tight_layout()
    return fig
