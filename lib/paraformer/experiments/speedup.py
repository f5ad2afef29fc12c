"""Notebook 06: the speed tables, and the verdicts on the project's speed targets and the papers' speed claims
(listed in the notebook's markdown), from the benchmark CSVs (`paraformer.bench.speed.load`; `make bench` measures
them, and `run` measures what is missing). Every ratio divides two times measured in the same run on the same
device, and every verdict comes from `paraformer.experiments.stats.judge`; `summary` only puts them in words.

The CSVs keep one median per configuration, not the repeats behind it, so a ratio's interval cannot come from
its own repeats. It comes from the data instead: wherever the CSVs time one computation twice (`auto` and the
strategy it chose, interleaved in the same repeats; the whole ParaFormer at one process in the 1- and in the
2-process run), the two medians should agree, and the largest disagreement, as a factor, is the interval put
around every ratio (at least `MIN_SPREAD`; `UNKNOWN_SPREAD` where the CSVs time nothing twice). That is
conservative for ratios within one run (the cross-run pair is the noisier) and is not a 95% confidence interval:
`judge` calls it one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..bench import costmodel, speed
from .display import verdict_line
from .estimate import Estimate, estimate as estimate_runs
from .paper import FAIRSCALE_SPEEDUP, PAPER_2024, PAPER_2025  # noqa: F401 (PAPER_2024: the notebook's claims)
from .plan import PlannedRun
from .profiles import get_profile
from .report import write_claims  # noqa: F401 (the notebook's claims)
from .stats import Verdict, judge
from .tables import save_figure, write_table  # noqa: F401 (the notebook's tables and figures)

NOTEBOOK = "06_speedup"


def plan(profile: str) -> list[PlannedRun]:
    """Notebook 06 trains nothing: it reads the benchmark CSVs."""
    return []


def estimate(profile: str, flops_per_second=None) -> Estimate:
    return estimate_runs(NOTEBOOK, profile, [], flops_per_second, "trains nothing: it reads the benchmark CSVs (and "
                         "measures missing ones, which this estimate does not cover)")


def run(profile: str, rerun: bool = False, processes=None, measure_other_device: bool = True,
        only: tuple[str, ...] = speed.BENCHMARKS) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The profile's benchmark CSVs (`speed.load`) and what was measured here first (of `only`): every benchmark with
    `rerun`, else those missing or (unless `measure_other_device` is False) measured on another kind of device. The
    multi-process benchmark runs at `processes` (None: the profile's, 1 and 2) as far as this machine has devices;
    the counts beyond them that no CSV holds are in the data as not measured here (`speed.with_not_measured`)."""
    settings = get_profile(profile)
    counts = speed.process_counts(settings.multi, processes)
    data = speed.load(profile)
    todo = [name for name in (speed.BENCHMARKS if rerun else speed.to_measure(data, counts.measured))
            if name in only]
    if not (rerun or measure_other_device):
        todo = only_missing(todo, data, counts.measured)
    if todo:
        speed.run(settings.bench, settings.multi, only=tuple(todo), processes=counts.measured)
        data = speed.load(profile)
    return speed.with_not_measured(data, counts), todo

AUTO_TARGET = 1.05  # auto at most 5% slower than the faster of loop and fused
LATENCY_TARGET = 0.6  # batch-1 Para-F-1-24 latency at most 0.6x the ViT-24's
SCALING_TARGET = 1.7  # branch-parallel step at 2 processes at least 1.7x faster than at 1
PIPELINES = ("torch-gpipe", "torch-1f1b", "fairscale")
NOT_GROWING = 1.25  # latency growth from the fewest to the most layers that we would still call "not growing"
N_OVER_M_REACHED = 0.9  # a measured speed-up this close to N/M counts as "N/M times faster"
MIN_SPREAD = 0.02  # the narrowest interval around a ratio (+-2%), however well two repeated medians agree
UNKNOWN_SPREAD = 0.05  # the interval where the CSVs time no computation twice (+-5%)


def device_of(df: pd.DataFrame) -> str:
    return ", ".join(sorted(set(df["device"])))


def only_missing(todo: list[str], data: dict[str, pd.DataFrame], processes: tuple[int, ...]) -> list[str]:
    """Of the benchmarks `todo` (`speed.to_measure`), those with no CSV in `data` at all: what must be measured
    before notebook 06 can tabulate CSVs measured on another kind of device as they are."""
    unknown = set(todo) - {"strategies", "layers", "multi"}
    if unknown:
        raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; expected strategies, layers or multi")
    multi = [f"multi_{kind}_{p}" for kind in ("steps", "costs") for p in processes]
    return [name for name in todo if not all(key in data for key in (multi if name == "multi" else [name]))]


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

    inference, train = times("inference"), times("train").set_index("model")
    table = inference[["model", "num_layers", "branch_depth"]].assign(
        vs="ViT-" + inference["num_layers"].astype(str),
        paper_N_over_M=inference["num_layers"] / inference["branch_depth"],
        inference_ms=inference["seconds"] * 1e3, vit_inference_ms=inference["vit_seconds"] * 1e3,
        inference_speedup=inference["vit_seconds"] / inference["seconds"],
        train_speedup=inference["model"].map(train["vit_seconds"] / train["seconds"]))
    return table.sort_values(["branch_depth", "num_layers"]).reset_index(drop=True)


MULTI_COLUMNS = ["processes", "method", "model", "micro_batches", "step_ms", "vs_branch", "speedup_over_1_process",
                 "paper_vs_fairscale", "status"]


def multi_table(data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per number of processes, method and model (ddp times both the ViT and the ParaFormer), the best step over
    micro-batch counts and its ratio to the same run's branch-parallel step (the paper's 3.30x: one, FairScale's);
    `status` "measured", and one row without a step per count this machine could not run ("not measured here (1
    GPU)", `speed.with_not_measured`)."""
    steps = costmodel.multi_steps(data)
    unmeasured = data.get(speed.NOT_MEASURED, pd.DataFrame(columns=["processes", "status"]))
    if steps.empty:
        return unmeasured.reindex(columns=MULTI_COLUMNS)
    best = steps.loc[steps.groupby(["processes", "method", "model"], sort=False)["seconds"].idxmin()]
    branch = best[best["method"] == "branch"].set_index("processes")["seconds"]
    table = best[["processes", "method", "model", "micro_batches", "seconds"]].copy()
    table["step_ms"] = table.pop("seconds") * 1e3
    table["vs_branch"] = table["step_ms"] / 1e3 / table["processes"].map(branch)
    # each method's own parallel speed-up, model by model: its best step at 1 process over its best step here
    single = table[table["processes"] == 1].set_index(["method", "model"])["step_ms"]
    keys = pd.MultiIndex.from_frame(table[["method", "model"]])
    table["speedup_over_1_process"] = single.reindex(keys).to_numpy() / table["step_ms"].to_numpy()
    table["paper_vs_fairscale"] = [f"{FAIRSCALE_SPEEDUP[0]:.2f} +- {FAIRSCALE_SPEEDUP[1]:.2f}" if m == "fairscale"
                                   else "" for m in table["method"]]
    table["status"] = "measured"
    if unmeasured.empty:
        return table.reset_index(drop=True)
    table = pd.concat([table, unmeasured.reindex(columns=MULTI_COLUMNS)], ignore_index=True)
    return table.astype({"micro_batches": "Int64"})  # whole numbers, beside the empty cells


def ratio_spread(data: dict[str, pd.DataFrame]) -> tuple[float, str]:
    """The relative half-width (as a log factor) of the interval around every ratio, and where it comes from in
    words (see the module docstring)."""
    pairs = []  # (ratio of two medians of one computation, what was timed twice)
    if "strategies" in data:
        rows = data["strategies"]
        seconds = rows.set_index(["model", "batch", "mode", "strategy"])["seconds"]
        for _, auto in rows[rows["strategy"] == "auto"].iterrows():
            chose = auto["auto_chose"]
            if chose in ("loop", "fused"):
                pairs.append((auto["seconds"] / seconds[(auto["model"], auto["batch"], auto["mode"], chose)],
                              f"auto and {chose}, {auto['model']} batch {auto['batch']} {auto['mode']}"))
    one, two = data.get("multi_steps_1"), data.get("multi_steps_2")
    if one is not None and two is not None:
        alone = one.loc[one["method"] == "branch", "seconds"]
        beside = two.loc[two["method"] == "branch, 1 process", "seconds"]
        if len(alone) and len(beside):
            pairs.append((beside.iloc[0] / alone.iloc[0], "the 1-process branch step in the 1- and 2-process runs"))
    if not pairs:
        return UNKNOWN_SPREAD, (f"+-{UNKNOWN_SPREAD:.0%}, assumed: these CSVs time no computation twice, and they "
                                f"keep medians only")
    ratio, what = max(pairs, key=lambda pair: abs(math.log(pair[0])))
    spread = max(MIN_SPREAD, abs(math.log(ratio)))
    return spread, (f"+-{math.exp(spread) - 1:.1%} on every ratio: the largest disagreement of two medians of one "
                    f"computation in these CSVs ({ratio:.3f}x, {what}; {len(pairs)} such pairs), at least "
                    f"{MIN_SPREAD:.0%}")


@dataclass(frozen=True)
class SpeedVerdict:
    key: str  # stable name: "auto", "latency", "scaling", "growth", "n_over_m", or a pipeline's method name
    kind: str  # "target" (this project's), "paper" (the papers' claims) or "comparison" (without one)
    verdict: Verdict  # from `judge`, the only place a verdict is decided
    detail: str  # the figures behind it, for the reader
    device: str  # what it was measured on

    def to_dict(self) -> dict:
        return {"key": self.key, "kind": self.kind, **self.verdict.to_dict(), "detail": self.detail,
                "device": self.device}


def judge_ratio(key: str, kind: str, claim: str, ratio: float, threshold: float, spread: float, detail: str,
                device: str, paper: float | None = None, not_testable: str | None = None) -> SpeedVerdict:
    """The verdict on "`ratio` exceeds `threshold`", its interval the ratio times exp(+-`spread`) (`ratio_spread`),
    through `judge`; `not_testable` (why) where there is no ratio to judge."""
    low, high = (ratio * math.exp(-spread), ratio * math.exp(spread)) if math.isfinite(ratio) else (ratio, ratio)
    return SpeedVerdict(key, kind, judge(claim, ratio, low, high, threshold, paper=paper, not_testable=not_testable),
                        detail, device)


def _strategy_verdicts(strategies: pd.DataFrame, spread: float) -> list[SpeedVerdict]:
    table = strategy_table(strategies)
    worst = table.loc[table["auto_vs_best"].idxmax()]
    within = int((table["auto_vs_best"] <= AUTO_TARGET).sum())
    # judge tests "exceeds": auto's speed relative to the best, at its worst shape, must exceed 1 / 1.05
    return [judge_ratio(
        "auto", "target", f"auto execution within {AUTO_TARGET - 1:.0%} of the faster of loop and fused at every "
        "measured shape", 1 / worst["auto_vs_best"], 1 / AUTO_TARGET, spread,
        f"ours: auto's speed relative to the faster at its worst shape (the target: at least 1/{AUTO_TARGET:g}); "
        f"{within} of {len(table)} shapes within {AUTO_TARGET - 1:.0%}; worst {worst['auto_vs_best']:.3f}x slower "
        f"({worst['model']}, batch {worst['batch']}, {worst['mode']}; auto chose {worst['auto_chose']})",
        device_of(strategies))]


def _layer_verdicts(layers: pd.DataFrame, spread: float) -> list[SpeedVerdict]:
    table, device = layers_table(layers), device_of(layers)
    one = table[table["branch_depth"] == 1].set_index("num_layers")
    if one.empty:
        raise ValueError("the layers benchmark has no Para-F-1-n rows; rerun it")
    n = 24 if 24 in one.index else int(one.index.max())
    out = [judge_ratio(
        "latency", "target", f"batch-1 inference latency of Para-F-1-{n} at most {LATENCY_TARGET:g}x that of "
        f"ViT-{n}", one.loc[n, "inference_speedup"], 1 / LATENCY_TARGET, spread,
        f"ours: ViT-{n} time over Para-F-1-{n} time (the target: at least {1 / LATENCY_TARGET:.3g}); "
        f"{one.loc[n, 'inference_ms']:.2f} ms against {one.loc[n, 'vit_inference_ms']:.2f} ms: "
        f"{1 / one.loc[n, 'inference_speedup']:.2f}x", device)]

    lo, hi = int(one.index.min()), int(one.index.max())
    growth = one.loc[hi, "inference_ms"] / one.loc[lo, "inference_ms"]
    vit_growth = one.loc[hi, "vit_inference_ms"] / one.loc[lo, "vit_inference_ms"]
    out.append(judge_ratio(
        "growth", "paper", f"{PAPER_2024}: inference time does not grow with the number of layers",
        1 / growth, 1 / NOT_GROWING, spread,
        f"ours: batch-1 latency of Para-F-1-{lo} over Para-F-1-{hi} on one device (the claim: at least "
        f"1/{NOT_GROWING:g}); from {lo} to {hi} layers, batch-1 latency of Para-F-1-n grows {growth:.1f}x, that of the ViT "
        f"{vit_growth:.1f}x; one device runs branches side by side only as far as its cores or units allow",
        device, not_testable=None if hi > lo else f"only {lo} layer(s) measured"))

    # N/M = 1 (Para-F-1-1 against ViT-1) compares a model with its own twin: it says nothing about parallelism
    tested = table[table["paper_N_over_M"] > 1]
    reached = tested["inference_speedup"] / tested["paper_N_over_M"]
    claim = f"{PAPER_2024}, section 3.3: a depth-M Para-Former runs N/M times faster than a depth-N serial network"
    if tested.empty:
        out.append(judge_ratio("n_over_m", "paper", claim, math.nan, N_OVER_M_REACHED, spread, "", device,
                               not_testable="no Para-Former with N/M > 1 was measured"))
        return out
    worst, best = tested.loc[reached.idxmin()], tested.loc[reached.idxmax()]
    out.append(judge_ratio(
        "n_over_m", "paper", claim, float(reached.min()), N_OVER_M_REACHED, spread,
        f"ours: the worst measured speed-up over N/M, N/M > 1, batch 1, one device (the claim: at least "
        f"{N_OVER_M_REACHED:g}); over {len(tested)} models with N/M > 1 the speed-ups reach {reached.min():.0%} ({worst['model']}: "
        f"{worst['inference_speedup']:.2f}x where N/M = {worst['paper_N_over_M']:g}) to {reached.max():.0%} "
        f"({best['model']}) of N/M; in training at batch {int(layers['batch'].max())}, "
        f"{tested['train_speedup'].min():.2f}x to {tested['train_speedup'].max():.2f}x; N/M assumes every branch "
        f"has hardware of its own", device))
    return out


def _multi_verdicts(data: dict[str, pd.DataFrame], steps: pd.DataFrame, spread: float) -> list[SpeedVerdict]:
    multi = multi_table(data)
    # the claims compare processes: at the most the benchmark ran or could not run here, and never fewer than 2
    top, device, out = max(2, int(multi["processes"].max())), device_of(steps), []
    status = set(multi.loc[multi["processes"] == top, "status"]) - {"measured"}
    missing = status.pop() if status else None  # "not measured here (1 GPU)"
    scaling_claim = f"branch-parallel step on {top} processes at least {SCALING_TARGET:g}x faster than on one"
    if f"multi_steps_{top}" in data:  # the branch-parallel step on `top` processes against the whole model on one
        seconds = data[f"multi_steps_{top}"].set_index("method")["seconds"]
        scaling = float(seconds["branch, 1 process"] / seconds["branch"])
        out.append(judge_ratio("scaling", "target", scaling_claim, scaling, SCALING_TARGET, spread,
                               f"{scaling:.2f}x (ideal {top}), both in the {top}-process run", device))
    else:
        out.append(judge_ratio("scaling", "target", scaling_claim, math.nan, SCALING_TARGET, spread, "", device,
                               not_testable=missing or f"the benchmark did not run {top} processes"))
    at_top = multi[(multi["processes"] == top) & (multi["status"] == "measured")].set_index("method")
    top_steps = steps[steps["processes"] == top]
    paper, paper_spread = FAIRSCALE_SPEEDUP
    for method in PIPELINES:
        fairscale = method == "fairscale"
        kind, paper_figure = ("paper", paper) if fairscale else ("comparison", None)
        claim = (f"{PAPER_2025}: ParaFormer {paper:.2f}x (+- {paper_spread:.2f}) faster than FairScale" if fairscale
                 else f"branch parallel faster than {method}'s best pipeline at {top} processes")
        threshold = paper - paper_spread if fairscale else 1.0
        if method not in at_top.index:
            out.append(judge_ratio(method, kind, claim, math.nan, threshold, spread, "", device, paper=paper_figure,
                                   not_testable=missing or f"{method} was not measured at {top} processes (see the "
                                                           "benchmark log)"))
            continue
        row = at_top.loc[method]
        ratio, own = float(row["vs_branch"]), float(row["speedup_over_1_process"])
        measure = (f"ours: branch parallel over FairScale's best Pipe at {top} processes (the claim: at least the "
                   f"paper's lower end, {paper - paper_spread:.2f}x); " if fairscale else
                   "the papers give no figure for it; ")
        detail = (f"{measure}branch-parallel {at_top.loc['branch', 'model']} is {ratio:.2f}x faster than {method}'s best "
                  f"pipeline ({row['micro_batches']} micro-batches) of {row['model']}; each method's own speed-up "
                  f"from 1 to {top} processes: {method} {own:.2f}x, branch parallel "
                  f"{at_top.loc['branch', 'speedup_over_1_process']:.2f}x (most of the ratio is the model)")
        on_cpu = set(top_steps.loc[top_steps["method"] == method, "device_type"]) == {"cpu"}
        not_testable = (f"on a CPU FairScale's Pipe cannot overlap its partitions (one worker thread per device, "
                        f"and every partition's device is 'cpu': its own speed-up from 1 to {top} processes is "
                        f"{own:.2f}x); the paper measured GPUs") if fairscale and on_cpu else None
        out.append(judge_ratio(method, kind, claim, ratio, threshold, spread, detail, device, paper=paper_figure,
                               not_testable=not_testable))
    return out


def speed_verdicts(data: dict[str, pd.DataFrame]) -> list[SpeedVerdict]:
    """Every target and claim the CSVs in `data` (`paraformer.bench.speed.load`) bear on, judged."""
    spread, _ = ratio_spread(data)
    out = []
    if "strategies" in data:
        out += _strategy_verdicts(data["strategies"], spread)
    if "layers" in data:
        out += _layer_verdicts(data["layers"], spread)
    steps = costmodel.multi_steps(data)
    if not steps.empty:
        out += _multi_verdicts(data, steps, spread)
    return out


def verdict_table(verdicts: list[SpeedVerdict]) -> pd.DataFrame:
    return pd.DataFrame([v.to_dict() for v in verdicts])


def benchmark_depth(profile_name: str) -> int:
    """The number of layers the multi-process benchmark of a profile measures: its ViT's (Para-F-n-n, see
    `paraformer.bench.multi.vit_name`), the depth at which the cost model is checked against measurements."""
    return int(get_profile(profile_name).multi.vit.split("-")[1])


def at_depth(predicted: pd.DataFrame, depth: int | None) -> pd.DataFrame:
    """The rows of `costmodel.predictions` at `depth` layers; all of them where the table has no depth column
    (one depth only). Without a `depth`, the table must hold one depth: mixing depths would join unlike models."""
    if "depth" not in predicted.columns:
        return predicted
    depths = sorted(set(predicted["depth"]))
    if depth is None:
        if len(depths) > 1:
            raise ValueError(f"the predictions are for depths {depths}; say which one")
        return predicted
    if depth not in depths:
        raise ValueError(f"the predictions have no depth {depth}, only {depths}")
    return predicted[predicted["depth"] == depth]


@dataclass(frozen=True)
class CostModelLine:
    """One method's predicted step against the number of devices, for one model (ddp runs two)."""
    method: str
    model: str
    label: str  # "ddp, ViT-24": every line its own
    devices: tuple[int, ...]
    ring_ms: tuple[float, ...]
    tree_ms: tuple[float, ...] | None  # None where the two all-reduce models predict the same (a pipeline's)
    measured_devices: tuple[int, ...]  # where a measured step stands beside the prediction
    measured_ms: tuple[float, ...]

    def predicted_ms(self, allreduce: str) -> dict[int, float]:
        """Devices -> predicted milliseconds under one all-reduce model."""
        if allreduce not in costmodel.ALLREDUCE_MODELS:
            raise ValueError(f"all-reduce model {allreduce!r} is unknown; choose one of {costmodel.ALLREDUCE_MODELS}")
        values = self.ring_ms if allreduce == "ring" or self.tree_ms is None else self.tree_ms
        return dict(zip(self.devices, values))


def cost_model_lines(predicted: pd.DataFrame, depth: int | None = None) -> list[CostModelLine]:
    """The cost-model figure's lines: one per (method, model) of `costmodel.predictions` at `depth` layers (see
    `at_depth`), in the table's order, each over the device counts it is predicted for."""
    rows = at_depth(predicted, depth)
    lines = []
    for (method, model), line in rows.groupby(["method", "model"], sort=False):
        if line["devices"].duplicated().any():  # two rows at one P would draw a zigzag, as one line of two models
            raise ValueError(f"{method}, {model} has several predictions at one device count; pass one depth")
        line = line.sort_values("devices")
        ring = tuple(float(t) for t in line["predicted_ring_ms"])
        tree = tuple(float(t) for t in line["predicted_tree_ms"])
        seen = line.dropna(subset=["measured_ms"])
        lines.append(CostModelLine(
            method, model, f"{method}, {model}", tuple(int(p) for p in line["devices"]), ring,
            None if np.allclose(ring, tree, rtol=1e-9, atol=0) else tree,
            tuple(int(p) for p in seen["devices"]), tuple(float(t) for t in seen["measured_ms"])))
    return lines


@dataclass(frozen=True)
class CostModelNote:
    """What the cost model predicts at the benchmark's depth (a prediction, not a verdict)."""
    depth: int | None  # layers; None where the predictions have no depth column
    checked_devices: tuple[int, ...]  # the process counts where a measured step stands beside a prediction
    checked: tuple[float, float] | None  # the smallest and largest ring prediction over the measured step there
    checked_agree: bool  # whether the two all-reduce models predict the same wherever a step was measured
    branch: str  # the branch-parallel line's label, what every ratio divides by
    # the compared line's label -> all-reduce model -> devices -> its predicted step over the branch-parallel one
    ratios: dict[str, dict[str, dict[int, float]]]

    def words(self) -> str:
        layers = f" of {self.depth} layers" if self.depth is not None else ""
        if self.checked is None:
            check = "no measured step stands beside its predictions"
        else:
            where = " and ".join(str(p) for p in self.checked_devices)
            check = (f"at {where} processes its predictions are {self.checked[0]:.2f} to {self.checked[1]:.2f} times "
                     f"the measured step times")
            if self.checked_agree:
                check += " (the two all-reduce models agree there)"
        compared = "; ".join(
            f"{label}: " + "; ".join(f"{model} all-reduce " + ", ".join(f"{p}: {r:.2f}x" for p, r in at.items())
                                     for model, at in by_model.items())
            for label, by_model in self.ratios.items())
        return (f"Cost model (a prediction, not a verdict), for the models{layers} the benchmark measures: {check}. "
                f"Predicted step over the branch-parallel step ({self.branch}), by number of devices: "
                f"{compared or 'nothing to compare'} (devices and links like the measured ones).")


# the lines `cost_model_note` divides by the branch-parallel one: the pipeline (of the ViT), and data parallelism
# of the ParaFormer itself, the same model as branch parallelism's, so that its ratio is the parallelism alone
NOTE_METHODS = ("pipeline (GPipe)", "ddp")


def cost_model_summary(predicted: pd.DataFrame, depth: int | None = None) -> CostModelNote:
    """`CostModelNote` from `costmodel.predictions` at `depth` layers: the check against the measured steps, and
    the GPipe and ParaFormer-DDP steps over the branch-parallel step, at every device count both are predicted for
    (a pipeline needs a layer per device, data parallelism an image per device)."""
    rows = at_depth(predicted, depth)
    lines = cost_model_lines(rows)
    branches = [line for line in lines if line.method == "branch"]
    if len(branches) != 1:  # every ratio divides by the one branch-parallel line
        raise ValueError(f"the predictions have {len(branches)} branch-parallel lines at this depth; expected one")
    (branch,) = branches
    checked = rows.dropna(subset=["measured_ms"])
    ratios = {}
    for line in lines:
        if line.method not in NOTE_METHODS or (line.method == "ddp" and line.model != branch.model):
            continue
        ratios[line.label] = {model: {p: t / branch.predicted_ms(model)[p] for p, t in line.predicted_ms(model).items()
                                      if p in branch.devices} for model in costmodel.ALLREDUCE_MODELS}
    return CostModelNote(
        depth if "depth" in rows.columns else None, tuple(sorted(int(p) for p in set(checked["devices"]))),
        (float(checked["ring_over_measured"].min()), float(checked["ring_over_measured"].max()))
        if len(checked) else None,
        bool(np.allclose(checked["predicted_ring_ms"], checked["predicted_tree_ms"], rtol=1e-9, atol=0)),
        branch.label, ratios)


COST_INPUTS = ("multi_costs_1", "multi_costs_2")  # what the cost model is fed: costs measured at 1 and 2 processes


def cost_model_note(data: dict[str, pd.DataFrame]) -> str | None:
    """`CostModelNote` at the benchmark's depth, in words (a prediction, not a verdict); None without its inputs."""
    if not set(COST_INPUTS) <= set(data):
        return None
    (profile,) = set(data["multi_costs_1"]["profile"])
    return cost_model_summary(predictions(data, profile), benchmark_depth(profile)).words()


def predictions(data: dict[str, pd.DataFrame], profile: str) -> pd.DataFrame | None:
    """`costmodel.predictions` of the profile's benchmark CSVs `data`; None without the costs it is fed
    (`no_predictions` says why)."""
    if not set(COST_INPUTS) <= set(data):
        return None
    settings = get_profile(profile)
    return costmodel.predictions(data, settings.bench, settings.multi)


def not_measured(data: dict[str, pd.DataFrame]) -> dict[int, str]:
    """Process count -> its status, for the counts this machine could not run (`speed.with_not_measured`)."""
    table = data.get(speed.NOT_MEASURED)
    return {} if table is None else {int(p): status for p, status in zip(table["processes"], table["status"])}


def no_predictions(data: dict[str, pd.DataFrame]) -> str:
    """Why `predictions` made none: which cost CSVs are missing, and why where this machine could not measure them."""
    why, missing = not_measured(data), []
    for name in COST_INPUTS:
        processes = int(name.rsplit("_", 1)[1])
        if name not in data:
            missing.append(f"{name}.csv" + (f" ({processes} processes: {why[processes]})" if processes in why else ""))
    return f"Cost model: no predictions without {' and '.join(missing)}."


def multi_bars(multi: pd.DataFrame) -> pd.DataFrame:
    """The multi-device bar chart of `multi_table`: step milliseconds, one row per method and model ("ddp
    (ViT-24)"; ddp times two models, which must not be averaged into one bar), one column per number of processes."""
    multi = multi[multi["status"] == "measured"]  # a count not measured here has no bar
    labelled = multi.assign(label=multi["method"] + " (" + multi["model"] + ")")
    if labelled.duplicated(["label", "processes"]).any():
        raise ValueError("multi_table has several rows for one method, model and number of processes")
    return labelled.pivot_table(index="label", columns="processes", values="step_ms", sort=False).rename_axis(None)


def summary(data: dict[str, pd.DataFrame]) -> list[str]:
    """The verdicts of `speed_verdicts` in words: first the device and how wide the intervals are, then one line
    per verdict (its figures are in `verdict_table`'s detail), last the cost model's predictions."""
    verdicts = speed_verdicts(data)
    devices = ", ".join(dict.fromkeys(v.device for v in verdicts))
    lines = [f"Measured on {devices}. Intervals: {ratio_spread(data)[1]}."] if verdicts else []
    lines += [verdict_line(v.verdict, "x") for v in verdicts]
    note = cost_model_note(data)
    return lines + ([note] if note else [])
