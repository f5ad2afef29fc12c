"""Notebook 06: the speed tables, and the verdicts on the papers' speed claims, on the project's speed targets and
on measurements without a claim (`KINDS`, each kind its own list and table), from the benchmark CSVs
(`paraformer.bench.speed.load`; `make bench` measures them, and `run` measures what is missing). Every ratio divides
two times measured in the same run on the same device, every verdict comes from `paraformer.experiments.stats.judge`
through `judge_ratio`, and one rule, `speed_testable`, decides which claims a machine cannot test. `summary` only puts
the verdicts in words.

Wang & Li 2024 presume a device per branch, so their two speed claims are judged on the one-branch-per-process
benchmark (`paraformer.bench.branch_processes`: 2 processes, one device or CPU core each), whose CSV keeps every
round: each ratio there is the median of per-round ratios with an order-statistic interval (`paired_ratio`). The same
ratios on one device stay as measurements ("comparison"), not verdicts on the claims.

The other CSVs keep one median per configuration, not the repeats behind it, so a ratio's interval cannot come from
its own repeats. It comes from the data instead: wherever the CSVs time one computation twice (`auto` and the
strategy it chose, interleaved in the same repeats; the whole ParaFormer at one process in the 1- and in the
2-process run), the two medians should agree, and the largest disagreement, as a factor, is the interval put
around every ratio (at least `MIN_SPREAD`; `UNKNOWN_SPREAD` where the CSVs time nothing twice). That is
conservative for ratios within one run (the cross-run pair is the noisier) and is not a 95% confidence interval:
`judge` calls it one.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..bench import branch_processes, costmodel, speed
from .display import verdict_line
from .estimate import Estimate, estimate as estimate_runs
from .paper import source as paper_source
from .paper import FAIRSCALE_SPEEDUP, PAPER_2024, PAPER_2025
from .plan import PlannedRun
from .profiles import get_profile
from .report import write_claims
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
    `rerun`, else those missing or (unless `measure_other_device` is False: then only the missing ones) measured on
    another kind of device or timed at other settings than the profile's (`speed.expected_digests`). The
    multi-process benchmark runs at `processes` (None: the profile's, 1 and 2) as far as this machine has devices;
    the counts beyond them that no CSV holds are in the data as not measured here (`speed.with_not_measured`)."""
    settings = get_profile(profile)
    counts = speed.process_counts(settings.multi, processes)
    data = speed.load(profile)
    digests = speed.expected_digests(settings.bench, settings.multi, speed.default_claims(settings.multi))
    todo = [name for name in (speed.BENCHMARKS if rerun else speed.to_measure(data, counts.measured, digests=digests))
            if name in only]
    if not (rerun or measure_other_device):
        todo = only_missing(todo, data, counts.measured)
    if counts.devices < branch_processes.PROCESSES:  # reported as not testable here (`speed_testable`)
        todo = [name for name in todo if name != branch_processes.NAME]
    if todo:
        speed.run(settings.bench, settings.multi, only=tuple(todo), processes=counts.measured)
        data = speed.load(profile)
    return speed.with_not_measured(data, counts), todo

AUTO_TARGET = 1.05  # auto at most 5% slower than the faster of loop and fused
LATENCY_TARGET = 0.6  # batch-1 Para-F-1-24 latency at most 0.6x the ViT-24's
SCALING_TARGET = 1.7  # branch-parallel step at 2 processes at least 1.7x faster than at 1
PIPELINES = ("torch-gpipe", "torch-1f1b", "fairscale")
# time growth with the layers that we would still call "not growing": 25%, room for the all-reduce that joins the
# branches' devices (the claim counts computation alone)
NOT_GROWING = 1.25
N_OVER_M_REACHED = 0.9  # a measured speed-up this close to N/M counts as "N/M times faster"
MIN_SPREAD = 0.02  # the narrowest interval around a ratio (+-2%), however well two repeated medians agree
UNKNOWN_SPREAD = 0.05  # the interval where the CSVs time no computation twice (+-5%)


def device_of(df: pd.DataFrame) -> str:
    return ", ".join(sorted(set(df["device"])))


def only_missing(todo: list[str], data: dict[str, pd.DataFrame], processes: tuple[int, ...]) -> list[str]:
    """Of the benchmarks `todo` (`speed.to_measure`), those with no CSV in `data` at all: what must be measured
    before notebook 06 can tabulate CSVs measured on another kind of device as they are."""
    unknown = set(todo) - set(speed.BENCHMARKS)
    if unknown:
        raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; expected one of {', '.join(speed.BENCHMARKS)}")
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


# --- the one-branch-per-process benchmark: the 2024 claims on 2 processes ------------------------------------------

def branch_process_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """One row per mode and call of the one-branch-per-process CSV (`paraformer.bench.branch_processes`): the model,
    how many processes computed it, the batch, the median milliseconds over the rounds and their number."""
    keys = ["mode", "call", "model", "processes", "batch"]
    table = rounds.groupby(keys, sort=False)["seconds"].agg(["median", "size"]).reset_index()
    return table.assign(median_ms=1e3 * table.pop("median")).rename(columns={"size": "rounds"})


def median_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """The median of `values` and a distribution-free interval for it: the k-th smallest and the k-th largest
    value, k the largest with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2, so that it covers the median at least
    `confidence` of the time whatever the distribution (the rounds' times are skewed: a round that waited is slow)."""
    ordered = sorted(float(v) for v in values)
    n, tail = len(ordered), (1 - confidence) / 2
    k, below = 0, 0.0  # below: P(Binomial(n, 1/2) < k + 1)
    while True:
        below += math.comb(n, k) / 2 ** n
        if below > tail:
            break
        k += 1
    if k == 0:
        raise ValueError(f"{n} rounds cannot bound a median at {confidence:.0%}; time at least "
                         f"{branch_processes.MIN_REPEATS} rounds (BranchProcessSettings.repeats)")
    return statistics.median(ordered), ordered[k - 1], ordered[n - k]


def ratio_unit(mode: str, slower: str, faster: str) -> str:
    """What a `PairedRatio` divides, as the verdicts' `unit`, short enough for one line of the report's "ours"
    column: "x (1-1 on 1 over 1-2 on 2 processes, batch-1 inference)" for `slower` "Para-F-1-1 on 1 process" and
    `faster` "Para-F-1-2 on 2 processes" (the claims' own short model names)."""
    def short(call: str) -> str:
        return re.sub(r" process(es)?$", "", call.removeprefix("Para-F-"))
    return (f"x ({short(slower)} over {short(faster)} processes, "
            f"{'batch-1 inference' if mode == 'inference' else 'training step'})")


@dataclass(frozen=True)
class PairedRatio:
    """The time of one call over another's, round by round in one run (`branch_processes.round_seconds`)."""
    mode: str  # "inference" (batch 1) or "train"
    slower: str  # the call divided (its time is the numerator), e.g. "Para-F-1-1 on 1 process"
    faster: str  # the call it is divided by, e.g. "Para-F-1-2 on 2 processes"
    ratio: float  # the median over the rounds of slower / faster
    low: float  # its 95% interval (`median_interval`), widened to at least +-MIN_SPREAD
    high: float
    rounds: int
    slower_ms: float  # each call's median milliseconds
    faster_ms: float


def paired_ratio(rounds: pd.DataFrame, mode: str, slower: str, faster: str) -> PairedRatio:
    """`slower`'s time over `faster`'s in `mode`, paired by round (the two ran in the same round, one after the
    other), as a median and its interval (`median_interval`), at least +-`MIN_SPREAD` wide: the rounds' spread
    covers the noise within this run, not that from run to run."""
    wide = rounds[rounds["mode"] == mode].pivot_table(index="round", columns="call", values="seconds")
    missing = {slower, faster} - set(wide.columns)
    if missing:
        raise ValueError(f"the one-branch-per-process CSV has no {mode} rounds of {sorted(missing)}; rerun make bench")
    ratio, low, high = median_interval(wide[slower] / wide[faster])
    return PairedRatio(mode, slower, faster, ratio, min(low, ratio * math.exp(-MIN_SPREAD)),
                       max(high, ratio * math.exp(MIN_SPREAD)), len(wide), 1e3 * float(wide[slower].median()),
                       1e3 * float(wide[faster].median()))


# --- which speed claims a machine can test: one rule for every one of them ------------------------------------------

@dataclass(frozen=True)
class ClaimNeeds:
    """What a speed claim (or target, or comparison) presumes of the hardware it is measured on."""
    processes: int = 1  # devices working at once, one process each (a claim about parallel branches: one per branch)
    overlapping: str = ""  # an implementation compared with that must overlap its parts on one device ("" none)
    overlaps_on: tuple[str, ...] = ()  # the device types ("cuda", "cpu") on which `overlapping` does


@dataclass(frozen=True)
class Machine:
    """Where a speed figure was measured, as far as `speed_testable` asks."""
    device_type: str  # "cpu" or "cuda"; "" where nothing tells
    devices: int | None  # how many such devices it has, one process each (None: not recorded, at least `processes`)
    processes: int  # how many worked at once in the figure's parallel arm (0: no figure was measured)


DEVICE_UNITS = {"cpu": "CPU core", "cuda": "GPU"}


@dataclass(frozen=True)
class Untestable:
    """Why a figure cannot test a claim (`speed_testable`)."""
    cause: str  # "devices" (the machine has too few), "measured" (no figure on as many), "overlap" (runs serially)
    reason: str  # in words, the verdict's reason


def speed_testable(needs: ClaimNeeds, machine: Machine) -> Untestable | None:
    """Why a figure from `machine` cannot test a claim that presumes `needs` (its "not testable here"), or None
    where it can. In order: the machine has fewer devices than the claim presumes; no figure was measured on as
    many; the compared implementation cannot overlap its parts on this kind of device (FairScale's Pipe on a CPU)."""
    if needs.processes < 1:
        raise ValueError(f"ClaimNeeds.processes={needs.processes}: a claim presumes at least 1 device")
    unit = DEVICE_UNITS.get(machine.device_type, "device")
    if machine.devices is not None and machine.devices < needs.processes:
        return Untestable("devices", f"it presumes {needs.processes} devices working at once and this machine has "
                                     f"{machine.devices} {unit}{'' if machine.devices == 1 else 's'} (one process "
                                     f"each)")
    if machine.processes < needs.processes:
        if machine.processes == 0:
            return Untestable("measured", f"nothing was measured on {needs.processes} "
                                          f"process{'' if needs.processes == 1 else 'es'} here (make bench measures "
                                          f"it; its log names any method it skipped)")
        return Untestable("measured", f"it presumes {needs.processes} devices working at once and this figure comes "
                                      f"from {machine.processes}")
    if needs.overlapping and machine.device_type not in needs.overlaps_on:
        return Untestable("overlap", f"{needs.overlapping} overlaps its parts only on "
                                     f"{' or '.join(needs.overlaps_on)} devices: on a "
                                     f"{machine.device_type or 'device of unknown kind'} they run one after another")
    return None


def device_type_of(rows: pd.DataFrame) -> str:
    """The device type of benchmark rows ("cpu", "cuda"; "" for CSVs that predate the column)."""
    kinds = set(rows["device_type"]) if "device_type" in rows.columns else set()
    return kinds.pop() if len(kinds) == 1 else ""


def machine_here(data: dict[str, pd.DataFrame], processes: int = 0) -> Machine:
    """This machine (`speed.with_not_measured`'s description, where `data` has one), with `processes` measured."""
    here = data.get(speed.MACHINE)
    if here is None:
        return Machine("", None, processes)
    return Machine(str(here["device_type"].iloc[0]), int(here["devices"].iloc[0]), processes)


def multi_machine(data: dict[str, pd.DataFrame], processes: int, method: str | None = None) -> Machine:
    """The machine behind the multi-process benchmark's figure at `processes` (of `method`, where given: a method
    the benchmark skipped has none); `speed_testable` of it is what notebooks 06 and 08 report for their speed
    claims across processes."""
    steps = data.get(f"multi_steps_{processes}")
    if steps is not None and method is not None:
        steps = steps[steps["method"] == method]
    if steps is None or steps.empty:
        return machine_here(data)
    return Machine(device_type_of(steps), None, processes)


def branch_machine(data: dict[str, pd.DataFrame]) -> Machine:
    """The machine behind the one-branch-per-process figures (`branch_processes.csv`), or this one where there are
    none."""
    rounds = data.get(branch_processes.NAME)
    if rounds is None:
        return machine_here(data)
    return Machine(device_type_of(rounds), int(rounds["devices"].iloc[0]), int(rounds["processes"].max()))


# --- verdicts ----------------------------------------------------------------------------------------------------

KINDS = {"paper": "The papers' claims", "target": "This project's engineering targets",
         "comparison": "Measurements without a claim (no paper figure, no target)"}


@dataclass(frozen=True)
class SpeedVerdict:
    key: str  # stable name: "auto", "latency", "scaling", "growth", "n_over_m", a pipeline's method name, ...
    kind: str  # one of `KINDS`: "paper" (the papers' claims), "target" (this project's) or "comparison"
    verdict: Verdict  # from `judge`, the only place a verdict is decided
    unit: str  # what the ratio divides, in the threshold's direction: "x (ViT-4 on 1 process over Para-F-2-4 on 2, ...)"
    detail: str  # the figures behind it, for the reader
    device: str  # what it was measured on
    source: str = ""  # the paper whose claim it is (kind "paper"); "" otherwise

    def to_dict(self) -> dict:
        verdict = self.verdict.to_dict()
        return {"key": self.key, "kind": self.kind, "source": self.source, "source_kind": verdict.pop("source"),
                **{k: v for k, v in verdict.items() if k not in ("unit", "regime")},
                "unit": self.unit, "detail": self.detail, "device": self.device}


def judge_ratio(key: str, kind: str, claim: str, ratio: float, threshold: float, spread: float, detail: str,
                device: str, paper: float | None = None, not_testable: str | None = None, *, unit: str = "x",
                source: str = "", needs: ClaimNeeds | None = None, machine: Machine | None = None,
                interval: tuple[float, float] | None = None) -> SpeedVerdict:
    """The verdict on "`ratio` exceeds `threshold`" through `judge`: its interval `interval`, else the ratio times
    exp(+-`spread`) (`ratio_spread`). Not testable where `speed_testable(needs, machine)` gives a reason (or, for a
    caller that has not moved to the rule yet, `not_testable` does). Every speed verdict is built here."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; use one of {sorted(KINDS)}")
    untestable = speed_testable(needs, machine) if needs is not None and machine is not None else None
    why = not_testable or (untestable.reason if untestable else None)
    if interval is not None:
        low, high = interval
    else:
        low, high = (ratio * math.exp(-spread), ratio * math.exp(spread)) if math.isfinite(ratio) else (ratio, ratio)
    kind_of_source = source_of(SPEED_SOURCES.get(key, "")) if kind == "paper" else {"source": "ours"}
    verdict = judge(claim, ratio, low, high, threshold, paper=paper, not_testable=why,
                    unit=unit if unit.startswith("x") else f"x {unit}", **kind_of_source)
    return SpeedVerdict(key, kind, verdict, unit, detail, device, source)


# the papers' speed claims -> their entry in `paper.SOURCES`
SPEED_SOURCES = {"growth": "inference_growth", "n_over_m": "n_over_m", "fairscale": "fairscale",
                 "acceleration": "layer_parallel_speed"}


def source_of(key: str) -> dict:
    return paper_source(key) if key else {"source": "paper"}


def _strategy_verdicts(strategies: pd.DataFrame, spread: float) -> list[SpeedVerdict]:
    table = strategy_table(strategies)
    worst = table.loc[table["auto_vs_best"].idxmax()]
    within = int((table["auto_vs_best"] <= AUTO_TARGET).sum())
    return [judge_ratio(
        "auto", "target", f"auto execution within {AUTO_TARGET - 1:.0%} of the faster of loop and fused at every "
        f"measured shape: at least 1/{AUTO_TARGET:g} = {1 / AUTO_TARGET:.3f}x its speed", 1 / worst["auto_vs_best"],
        1 / AUTO_TARGET, spread,
        f"{within} of {len(table)} shapes within {AUTO_TARGET - 1:.0%}; worst {worst['auto_vs_best']:.3f}x slower "
        f"({worst['model']}, batch {worst['batch']}, {worst['mode']}; auto chose {worst['auto_chose']})",
        device_of(strategies), unit="x (the faster of loop and fused's time over auto's, at auto's worst shape)",
        needs=ClaimNeeds(1), machine=Machine(device_type_of(strategies), None, 1))]


def _layer_verdicts(layers: pd.DataFrame, spread: float) -> list[SpeedVerdict]:
    """The latency target and two measurements on one device: the paper's claims presume a device per branch, so
    these are not verdicts on them (`_branch_process_verdicts` are)."""
    table, device, one_device = layers_table(layers), device_of(layers), Machine(device_type_of(layers), None, 1)
    one = table[table["branch_depth"] == 1].set_index("num_layers")
    if one.empty:
        raise ValueError("the layers benchmark has no Para-F-1-n rows; rerun it")
    n = 24 if 24 in one.index else int(one.index.max())
    out = [judge_ratio(
        "latency", "target", f"batch-1 inference of Para-F-1-{n} at least {1 / LATENCY_TARGET:.3g}x as fast as "
        f"ViT-{n}'s (latency at most {LATENCY_TARGET:g}x)", one.loc[n, "inference_speedup"], 1 / LATENCY_TARGET,
        spread, f"Para-F-1-{n} {one.loc[n, 'inference_ms']:.2f} ms, ViT-{n} {one.loc[n, 'vit_inference_ms']:.2f} ms",
        device, unit=f"x (ViT-{n} over Para-F-1-{n}, batch-1 latency, one device)", needs=ClaimNeeds(1),
        machine=one_device)]

    lo, hi = int(one.index.min()), int(one.index.max())
    growth = one.loc[hi, "inference_ms"] / one.loc[lo, "inference_ms"]
    vit_growth = one.loc[hi, "vit_inference_ms"] / one.loc[lo, "vit_inference_ms"]
    out.append(judge_ratio(
        "growth_one_device", "comparison", f"on one device, batch-1 latency of Para-F-1-n grows at most "
        f"{NOT_GROWING:g}x from {lo} to {hi} layers", 1 / growth, 1 / NOT_GROWING, spread,
        f"from {lo} to {hi} layers, batch-1 latency of Para-F-1-n grows {growth:.1f}x, that of the ViT "
        f"{vit_growth:.1f}x; one device runs branches side by side only as far as its cores or units allow",
        device, not_testable=None if hi > lo else f"only {lo} layer(s) measured",
        unit=f"x (Para-F-1-{lo} over Para-F-1-{hi}, batch-1 latency, one device)"))

    # N/M = 1 (Para-F-1-1 against ViT-1) compares a model with its own twin: it says nothing about parallelism
    tested = table[table["paper_N_over_M"] > 1]
    reached = tested["inference_speedup"] / tested["paper_N_over_M"]
    claim = (f"on one device, every Para-F-M-N reaches at least {N_OVER_M_REACHED:g} of N/M as a speed-up over the "
             f"ViT-N")
    unit = "share of N/M (ViT-N's time over Para-F-M-N's, batch-1 latency, one device, divided by N/M; worst model)"
    if tested.empty:
        out.append(judge_ratio("n_over_m_one_device", "comparison", claim, math.nan, N_OVER_M_REACHED, spread, "",
                               device, not_testable="no Para-Former with N/M > 1 was measured", unit=unit))
        return out
    worst, best = tested.loc[reached.idxmin()], tested.loc[reached.idxmax()]
    out.append(judge_ratio(
        "n_over_m_one_device", "comparison", claim, float(reached.min()), N_OVER_M_REACHED, spread,
        f"over {len(tested)} models with N/M > 1 the speed-ups reach {reached.min():.0%} ({worst['model']}: "
        f"{worst['inference_speedup']:.2f}x where N/M = {worst['paper_N_over_M']:g}) to {reached.max():.0%} "
        f"({best['model']}) of N/M; in training at batch {int(layers['batch'].max())}, "
        f"{tested['train_speedup'].min():.2f}x to {tested['train_speedup'].max():.2f}x", device, unit=unit))
    return out


def _branch_process_verdicts(data: dict[str, pd.DataFrame]) -> list[SpeedVerdict]:
    """The 2024 paper's two speed claims where they can hold, one branch per process (`branch_processes`), at batch-1
    inference (the claims' "inference time"); the same ratios of a training step as comparisons."""
    rounds, machine, p = data.get(branch_processes.NAME), branch_machine(data), branch_processes.PROCESSES
    device = (device_of(rounds) if rounds is not None else
              device_of(data[speed.MACHINE]) if speed.MACHINE in data else "no benchmark")
    (alone, shared), (serial, branched) = branch_processes.GROWTH, branch_processes.N_OVER_M
    name = branch_processes.model_name
    m, n = (int(part) for part in branched.split("-"))

    def growth(what: str) -> str:
        return (f"{what} of {name(shared)} on {p} processes (a layer each) at most {NOT_GROWING:g}x that of "
                f"{name(alone)} on one")

    def n_over_m(what: str) -> str:
        return (f"{name(branched)} on {p} processes (a branch each) at least {N_OVER_M_REACHED:g} x N/M = "
                f"{N_OVER_M_REACHED * n / m:g}x as fast as {name(serial)} on one, {what}")

    # key -> (the slower model on 1 process, the faster on p, threshold, the claim at inference, in training)
    pairs = {"growth": (alone, shared, 1 / NOT_GROWING,
                        "inference time does not grow with the number of layers: " + growth("batch-1 inference time"),
                        growth("the training step's time")),
             "n_over_m": (serial, branched, N_OVER_M_REACHED * n / m,
                          "a depth-M Para-Former runs N/M times faster than a depth-N serial network: "
                          + n_over_m("batch-1 inference"), n_over_m("training step"))}
    out = []
    for mode, kind, source, suffix in (("inference", "paper", PAPER_2024, ""), ("train", "comparison", "", "_train")):
        for key, (slow_model, fast_model, threshold, *claims) in pairs.items():
            claim = claims[0] if mode == "inference" else claims[1]
            slower, faster = branch_processes.call_name(slow_model, 1), branch_processes.call_name(fast_model, p)
            unit = ratio_unit(mode, slower, faster)
            if rounds is None:
                out.append(judge_ratio(key + suffix, kind, claim, math.nan, threshold, 0.0, "", device, unit=unit,
                                       source=source, needs=ClaimNeeds(p), machine=machine))
                continue
            found = paired_ratio(rounds, mode, slower, faster)
            own = paired_ratio(rounds, mode, branch_processes.call_name(fast_model, 1), faster)
            detail = (f"{slower} {found.slower_ms:.3g} ms, {faster} {found.faster_ms:.3g} ms (medians of "
                      f"{found.rounds} rounds; interval: the rounds' order statistics, at least +-{MIN_SPREAD:.0%}); "
                      f"{name(fast_model)} on 1 process over on {p}: {own.ratio:.2f}x [{own.low:.2f}, "
                      f"{own.high:.2f}], what the second device alone gives")
            out.append(judge_ratio(key + suffix, kind, claim, found.ratio, threshold, 0.0, detail, device, unit=unit,
                                   source=source, needs=ClaimNeeds(p), machine=machine,
                                   interval=(found.low, found.high)))
    return out


def _multi_verdicts(data: dict[str, pd.DataFrame], steps: pd.DataFrame, spread: float) -> list[SpeedVerdict]:
    multi = multi_table(data)
    # the claims compare processes: at the most the benchmark ran or could not run here, and never fewer than 2
    top, device, out = max(2, int(multi["processes"].max())), device_of(steps), []
    scaling_claim = f"branch-parallel step on {top} processes at least {SCALING_TARGET:g}x as fast as on one"
    scaling_unit = f"x (the whole Para-F-{multi_setting_name(steps)} on 1 process over branch parallel on {top})"
    machine = multi_machine(data, top, "branch")
    if machine.processes:  # the branch-parallel step on `top` processes against the whole model on one
        seconds = data[f"multi_steps_{top}"].set_index("method")["seconds"]
        scaling = float(seconds["branch, 1 process"] / seconds["branch"])
        out.append(judge_ratio("scaling", "target", scaling_claim, scaling, SCALING_TARGET, spread,
                               f"{scaling:.2f}x (ideal {top}), both in the {top}-process run", device,
                               unit=scaling_unit, needs=ClaimNeeds(top), machine=machine))
    else:
        out.append(judge_ratio("scaling", "target", scaling_claim, math.nan, SCALING_TARGET, spread, "", device,
                               unit=scaling_unit, needs=ClaimNeeds(top), machine=machine))
    at_top = multi[(multi["processes"] == top) & (multi["status"] == "measured")].set_index("method")
    paper, paper_spread = FAIRSCALE_SPEEDUP
    for method in PIPELINES:
        fairscale = method == "fairscale"
        kind, paper_figure, source = ("paper", paper, PAPER_2025) if fairscale else ("comparison", None, "")
        claim = (f"ParaFormer {paper:.2f}x (+- {paper_spread:.2f}) faster than FairScale: at least the paper's lower "
                 f"end, {paper - paper_spread:.2f}x" if fairscale
                 else f"branch parallel faster than {method}'s best pipeline at {top} processes")
        threshold = paper - paper_spread if fairscale else 1.0
        unit = f"x ({method}'s best pipeline step over the branch-parallel step, both on {top} processes)"
        # FairScale's Pipe runs its partitions in threads, one per device: on a CPU all are the device 'cpu'
        needs = ClaimNeeds(top, "FairScale's Pipe", ("cuda",)) if fairscale else ClaimNeeds(top)
        machine = multi_machine(data, top, method)
        if method not in at_top.index:
            out.append(judge_ratio(method, kind, claim, math.nan, threshold, spread, "", device, paper=paper_figure,
                                   unit=unit, source=source, needs=needs, machine=machine))
            continue
        row = at_top.loc[method]
        ratio, own = float(row["vs_branch"]), float(row["speedup_over_1_process"])
        detail = (f"branch-parallel {at_top.loc['branch', 'model']} is {ratio:.2f}x faster than {method}'s best "
                  f"pipeline ({row['micro_batches']} micro-batches) of {row['model']}; each method's own speed-up "
                  f"from 1 to {top} processes: {method} {own:.2f}x, branch parallel "
                  f"{at_top.loc['branch', 'speedup_over_1_process']:.2f}x (most of the ratio is the model)")
        out.append(judge_ratio(method, kind, claim, ratio, threshold, spread, detail, device, paper=paper_figure,
                               unit=unit, source=source, needs=needs, machine=machine))
    return out


def multi_setting_name(steps: pd.DataFrame) -> str:
    """The branch-parallel ParaFormer's m-n in the multi-process CSVs ("1-24")."""
    models = set(steps.loc[steps["method"].str.startswith("branch"), "model"])
    return models.pop().removeprefix("Para-F-") if len(models) == 1 else "m-n"


def speed_verdicts(data: dict[str, pd.DataFrame]) -> list[SpeedVerdict]:
    """Every claim, target and comparison the CSVs in `data` (`paraformer.bench.speed.load`) bear on, judged, in the
    order of `KINDS`: the papers' claims first. The 2024 claims are always among them: not testable, saying why,
    where the one-branch-per-process benchmark could not run."""
    spread, _ = ratio_spread(data)
    out = _branch_process_verdicts(data)
    if "strategies" in data:
        out += _strategy_verdicts(data["strategies"], spread)
    if "layers" in data:
        out += _layer_verdicts(data["layers"], spread)
    steps = costmodel.multi_steps(data)
    if not steps.empty:
        out += _multi_verdicts(data, steps, spread)
    return [v for kind in KINDS for v in out if v.kind == kind]


def by_kind(verdicts: list[SpeedVerdict]) -> dict[str, list[SpeedVerdict]]:
    """The verdicts apart by kind, in the order of `KINDS` (kinds without a verdict left out): the papers' claims
    for the report, the project's targets and the bare measurements each in a table of their own."""
    return {kind: [v for v in verdicts if v.kind == kind] for kind in KINDS if any(v.kind == kind for v in verdicts)}


def verdict_table(verdicts: list[SpeedVerdict]) -> pd.DataFrame:
    return pd.DataFrame([v.to_dict() for v in verdicts])


VERDICT_COLUMNS = ["kind", "claim", "ours", "low", "high", "unit", "threshold", "paper", "verdict", "reason", "detail"]


def write_findings(data: dict[str, pd.DataFrame], profile: str) -> list[SpeedVerdict]:
    """Writes the verdicts (tables/speed_verdicts, every kind apart in its `kind` column), the papers' claims alone
    as the report's (claims_06_speedup), and the one-branch-per-process rounds where they were measured
    (tables/speed_branch_processes); returns the verdicts."""
    verdicts = speed_verdicts(data)
    write_table(verdict_table(verdicts)[VERDICT_COLUMNS], "speed_verdicts", "Speed targets and claims: verdicts",
                [f"kind: {'; '.join(f'{kind}: {words}' for kind, words in KINDS.items())}",
                 f"Intervals: from the rounds of the one-branch-per-process benchmark where it gives them; elsewhere "
                 f"{ratio_spread(data)[1]}."], profile=profile)
    claimed = by_kind(verdicts).get("paper", [])
    write_claims([v.verdict for v in claimed], [v.source for v in claimed], NOTEBOOK, profile,
                 ", ".join(dict.fromkeys(v.device for v in claimed)))
    if branch_processes.NAME in data:
        rounds = data[branch_processes.NAME]
        write_table(branch_process_table(rounds), "speed_branch_processes",
                    f"One branch per process ({branch_processes.PROCESSES} processes) against one process: "
                    "milliseconds per call", [f"Measured on {device_of(rounds)}; medians over the timed rounds, "
                                              "every round kept in the benchmark CSV."], profile=profile)
    return verdicts


def write_cost_model(predicted: pd.DataFrame, depth: int | None, device: str, profile: str) -> None:
    """Writes the cost model's predictions (tables/speed_cost_model, every row labelled predicted) and, apart, the
    measured steps they were checked against (tables/speed_cost_model_check)."""
    write_table(cost_model_predictions(predicted), "speed_cost_model",
                "Cost model: predicted step milliseconds at P devices (predictions, not measurements)",
                [f"Fed by measurements on {device}; checked against the steps measured at 1 and 2 processes "
                 "(tables/speed_cost_model_check).",
                 "predicted_ring_ms, predicted_tree_ms: under a ring or a tree (log2 P latency) all-reduce.",
                 "Beyond 2 it assumes devices like these, linked like these processes; it ignores imbalance and "
                 "contention."], profile=profile)
    write_table(cost_model_check(predicted, depth), "speed_cost_model_check",
                f"Cost model against the measured steps (benchmark depth {depth})",
                [f"Measured on {device}; ring_over_measured, tree_over_measured: the prediction over the "
                 "measurement."], profile=profile)


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


def cost_model_predictions(predicted: pd.DataFrame) -> pd.DataFrame:
    """The cost model's predicted steps alone (`costmodel.predictions`, every depth and device count), each row
    labelled `figure` "predicted": the measured steps it was checked against are in `cost_model_check`, never in
    these rows."""
    measured = [column for column in predicted.columns if "measured" in column]
    return predicted.drop(columns=measured).assign(figure="predicted")


def cost_model_check(predicted: pd.DataFrame, depth: int | None = None) -> pd.DataFrame:
    """The measured steps the cost model is checked against (at the benchmark's depth, 1 and 2 processes), each
    labelled `figure` "measured", beside the predictions at the same devices and their ratio to the measurement."""
    rows = at_depth(predicted, depth).dropna(subset=["measured_ms"])
    columns = ["method", "model", "devices", "measured_ms", "predicted_ring_ms", "predicted_tree_ms",
               "ring_over_measured", "tree_over_measured"]
    return rows[columns].assign(figure="measured").reset_index(drop=True)


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


def speed_line(verdict: SpeedVerdict) -> str:
    """`verdict_line` of a speed verdict, with what its ratio divides."""
    line = verdict_line(verdict.verdict, "x")
    return line if verdict.verdict.verdict == "not testable here" else f"{line}; ours in {verdict.unit}"


PREDICTED = "Predicted, not measured (cost model)"  # the title of `summary_sections`' last section


def summary_sections(data: dict[str, pd.DataFrame]) -> list[tuple[str, list[str]]]:
    """The verdicts of `speed_verdicts` in words, as (title, lines) sections: first (no title) the devices and how
    the intervals are made, then one section per kind (`by_kind`, titles from `KINDS`) with a line per verdict (its
    figures are in `verdict_table`'s detail), last the cost model's predictions under `PREDICTED`."""
    verdicts = speed_verdicts(data)
    devices = ", ".join(dict.fromkeys(v.device for v in verdicts))
    sections = [("", [f"Measured on {devices}. Intervals: from the rounds of the one-branch-per-process benchmark "
                      f"where it gives them; elsewhere {ratio_spread(data)[1]}."])]
    sections += [(KINDS[kind], [speed_line(v) for v in group]) for kind, group in by_kind(verdicts).items()]
    note = cost_model_note(data)
    return sections + ([(PREDICTED, [note])] if note else [])


def summary_markdown(data: dict[str, pd.DataFrame]) -> str:
    """`summary_sections` as Markdown: each section's title in bold, its lines as a list."""
    blocks = []
    for title, lines in summary_sections(data):
        body = "\n".join(f"- {line}" for line in lines) if title else " ".join(lines)
        blocks.append(f"**{title}**\n\n{body}" if title else body)
    return "\n\n".join(blocks)


def summary(data: dict[str, pd.DataFrame]) -> list[str]:
    """`summary_sections` as one list of lines without the titles (the context line first, the cost model last),
    for a reader that lists them as they come."""
    return [line for _, lines in summary_sections(data) for line in lines]
