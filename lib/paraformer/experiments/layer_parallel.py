"""Notebook 08, the layer-parallel experiment: Jiang et al., *Layer-Parallel Training for Transformers* (arXiv
2601.09026), tested on a ViT; the claims, the arms and why ViT-8 with coarsening 2 are in the notebook's markdown.

Every pre-training arm (serial backprop, `fixed`-cycle MGRIT, `adaptive` MGRIT per `Recipe.mgrit_adapt`) runs at
h = 1/N, the serial one too, so that the arms differ in how the gradient is computed alone (`Recipe.solver`,
`paraformer.parallel.layertrain`). The final weights of the arms in `LayerParallelSettings.finetune_from` are then
fine-tuned on a second dataset, every one by backprop with the same recipe: the paper's "fine-tuning is unaffected"
is about the pre-training. "Commensurate" and "unaffected" are "layer-parallel minus serial exceeds -`margin`
points", paired by seed and test image (`accuracy.judge_claims`, Holm over the claims tested; the margin is ours);
"unaffected" is not testable where the serial fine-tune has not settled or the design cannot detect
`finetune_detectable` points (`finetune_not_testable`). Speed: the multi-process benchmark's MGRIT step at the most
processes against the serial ViT's on one (`paraformer.bench.multi`, `speedup.judge_ratio`); benchmarks that predate
those rows leave it not testable.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import pandas as pd

from ..bench import convergence, costmodel
from ..bench.multi import vit_name
from ..core.config import DataConfig, Recipe
from ..core.paths import results_dir
from ..core.runcache import RunResult, read_record, run_paths, step_log_path
from ..core.runlog import read_step_log
from . import speedup
from .accuracy import AccuracyClaim, accuracy_table, judge_claims, verdict_table
from .estimate import Estimate, estimate as estimate_runs
from .linear_baseline import linear_accuracies
from .paper import PAPER_2026
from .plan import FromRun, PlannedRun, data_shape, execute, planned
from .profiles import get_profile
from .report import with_sources, write_claims
from .settings import ARMS, LayerParallelSettings
from .stats import Verdict, judge
from .tables import provenance, save_figure, write_table  # noqa: F401 (save_figure: the notebook's figure)

NOTEBOOK = "08_layer_parallel"


def finetune_data(setting: LayerParallelSettings) -> DataConfig:
    """The fine-tuning images: the profile's subset of the fine-tuning dataset, or `finetune_train` of them."""
    data = setting.data_config("fine-tuning")
    return data if setting.finetune_train is None else replace(data, n_train=setting.finetune_train)


def finetune_recipe(setting: LayerParallelSettings, seed: int) -> Recipe:
    """The one fine-tuning recipe of every pre-training arm's weights: backprop, the profile's recipe for
    `finetune_epochs`, at `finetune_lr` where it is set."""
    recipe = setting.recipe("serial", seed, "fine-tuning")
    return recipe if setting.finetune_lr is None else replace(recipe, lr=setting.finetune_lr)


def finetune_run_name(setting: LayerParallelSettings, arm: str) -> str:
    return f"{setting.finetune_dataset}-ViT-{setting.depth}-layer-parallel-finetune-from-{arm}"


def plan(profile: str) -> list[PlannedRun]:
    """Every seed's three pre-training arms (`ARMS`), then, per seed, the fine-tunes of the final weights (head
    dropped) of each arm in `finetune_from`, by the same serial recipe. The notebook's other parameters choose what
    it benchmarks, which no plan covers."""
    setting = get_profile(profile).layer_parallel
    data = setting.data_config("pre-training")
    model = setting.model_config(data_shape(data))
    arms = {(seed, arm): planned(NOTEBOOK, model, data, setting.recipe(arm, seed),
                                 setting.run_name(arm, "pre-training"))
            for seed in setting.scale.seeds for arm in ARMS}
    data = finetune_data(setting)
    model = setting.model_config(data_shape(data))
    runs = []
    for seed in setting.scale.seeds:
        for arm in setting.finetune_from:
            source = arms[seed, arm]
            init = FromRun(source, f"run {source.name} (seed {seed}), head dropped")
            runs.append(planned(NOTEBOOK, model, data, finetune_recipe(setting, seed),
                                finetune_run_name(setting, arm), init=init))
    return list(arms.values()) + runs


def estimate(profile: str, flops_per_second=None) -> Estimate:
    return estimate_runs(NOTEBOOK, profile, plan(profile), flops_per_second,
                         "the adaptive arm at its starting cycles and checks: more cycles later cost more, a switch "
                         "to backprop less")


def arm_of(recipe: Recipe) -> str:
    """The pre-training arm (`ARMS`) that `recipe` trains."""
    return "serial" if recipe.solver == "backprop" else "adaptive" if recipe.mgrit_check_every else "fixed"


def layer_parallel_share(recipe: dict, history: list[dict], steps: int) -> float:
    """The share of a run's `steps` optimizer steps whose gradients MGRIT computed, from its record's recipe and
    history: none by backprop, all where MGRIT never switched, the steps before the adaptive rule's switch to
    backprop (`solver_switch_step`, the first serial step) otherwise."""
    if recipe["solver"] != "mgrit":
        return 0.0
    switches = [entry["solver_switch_step"] for entry in history if entry.get("solver_switch_step") is not None]
    return min(switches[0], steps) / steps if switches else 1.0


def run(profile: str, progress: bool = True) -> tuple[pd.DataFrame, list[RunResult]]:
    """Train (or fetch) the plan: one row per run, in the shape `accuracy.judge_claims` reads, and the records.
    `arm` names the pre-training arm, for a fine-tune the one whose weights it fine-tunes (`weights`); `phase` and
    `dataset` tell pre-training from fine-tuning; `layer_parallel_share`: of its `optimizer_steps`."""
    setting = get_profile(profile).layer_parallel
    rows = []
    trained = execute(plan(profile), results_dir(profile), progress)
    for t in trained:
        phase = "fine-tuning" if t.planned.init is not None else "pre-training"
        result, recipe = t.result, t.planned.recipe
        arm = arm_of(t.planned.init.run.recipe if phase == "fine-tuning" else recipe)
        # one branch: one optimizer step per minibatch (`progressive.steps_per_batch` of the joint method)
        steps = math.ceil(len(t.data.train_labels) / recipe.batch_size) * len(result.history)
        rows.append({"phase": phase, "dataset": t.planned.data.dataset, "arm": arm,
                     "weights": f"{arm} pre-training" if phase == "fine-tuning" else "random",
                     "model": f"ViT-{result.model_config.num_layers}", "solver": recipe.describe_solver(),
                     "seed": recipe.seed, "test_images": len(t.data.test_labels), "test_acc": result.final_test_acc,
                     "correct": result.correct(), "num_params": result.num_params, "epochs": len(result.history),
                     "optimizer_steps": steps,
                     "layer_parallel_share": layer_parallel_share(result.config["recipe"], result.history, steps),
                     "train_seconds": result.wall_seconds, "cached": result.cached, "run_name": result.name,
                     "run_key": result.key, "data_source": result.data_source, "device": result.device,
                     "code_version": result.code_version, "code_digest": result.code_digest,
                     "numerics": result.numerics})
    return pd.DataFrame(rows), [t.result for t in trained]


# Who makes each accuracy claim, per phase and arm, for the report's `source` column: the paper's text, or "ours" (a
# question the paper does not ask): the abstract claims commensurate accuracy for its method, which adapts; whether
# a fixed cycle count is commensurate is our question. The speed claim is the paper's.
SOURCES = {("pre-training", "fixed"): "ours", ("pre-training", "adaptive"): "paper", ("fine-tuning", "fixed"): "paper",
           ("fine-tuning", "adaptive"): "paper"}
SPEED_SOURCE = "paper"


def _arm_words(setting: LayerParallelSettings, arm: str) -> str:
    f, b = setting.fixed_iterations
    return f"MGRIT, fixed {f} forward / {b} adjoint cycles" if arm == "fixed" else "MGRIT, adaptive"


def accuracy_claims(setting: LayerParallelSettings) -> list[AccuracyClaim]:
    """The paper's "commensurate" (the fixed and the adaptive arm) and "unaffected" (each layer-parallel arm in
    `finetune_from`; see the module docstring)."""
    within = f"within {setting.margin:g} point"
    pre = f"commensurate with serial: {within} on {setting.dataset}"
    claims = [(setting.dataset, arm, f"layer-parallel pre-training ({_arm_words(setting, arm)}) is {pre}")
              for arm in ("fixed", "adaptive")]
    claims += [(setting.finetune_dataset, arm, f"fine-tuning is unaffected by layer-parallel pre-training "
                f"({_arm_words(setting, arm)}): its weights fine-tune {within} of the serially pre-trained ones on "
                f"{setting.finetune_dataset}, both fine-tuned serially")
               for arm in setting.finetune_from if arm != "serial"]
    return [AccuracyClaim(dataset, arm, "serial", claim, column="arm", threshold=-setting.margin)
            for dataset, arm, claim in claims]


def claim_sources(setting: LayerParallelSettings) -> list[str]:
    """`SOURCES` of each of `accuracy_claims(setting)`, in order."""
    return [SOURCES["pre-training" if claim.dataset == setting.dataset else "fine-tuning", claim.better]
            for claim in accuracy_claims(setting)]


def finetune_not_testable(runs: pd.DataFrame, setting: LayerParallelSettings,
                          minimum_detectable: float) -> str | None:
    """Why "unaffected" cannot be tested on these runs, or None: the serial fine-tune's mean accuracy under
    `finetune_floor` (it has not settled, so the comparison measures how fast two starts learn, and seeds scatter),
    or a design that detects only differences above `finetune_detectable` points."""
    serial = runs[(runs["phase"] == "fine-tuning") & (runs["arm"] == "serial")].sort_values("seed")
    accuracy, seeds = serial["test_acc"].mean(), "/".join(f"{a:.0f}" for a in serial["test_acc"])
    detects = f"this design detects differences of {minimum_detectable:.2g} points or more"
    if accuracy < setting.finetune_floor:
        return (f"the serial fine-tune has not settled: {accuracy:.1f}% on {setting.finetune_dataset} (seeds "
                f"{seeds}%), under the {setting.finetune_floor:g}% this comparison needs; {detects}")
    if minimum_detectable > setting.finetune_detectable:
        return f"{detects}, more than the {setting.finetune_detectable:g} the claim needs"
    return None


def judge_accuracy(runs: pd.DataFrame, claims: list[AccuracyClaim], setting: LayerParallelSettings,
                   profile: str | None = None, linear: dict[str, float] | None = None) -> list[Verdict]:
    """Each claim's verdict, in order: "unaffected" not testable where `finetune_not_testable` says so (its measured
    difference and minimum detectable difference kept), the others judged together, Holm over them alone, each with
    its regime where `profile` is given (`linear`: dataset -> the linear baseline, points)."""
    why = {}
    for claim in claims:
        if claim.dataset == setting.finetune_dataset:
            alone = judge_claims(runs, [claim])[0]  # the minimum detectable difference is at the nominal level
            reason = finetune_not_testable(runs, setting, alone.minimum_detectable)
            if reason is not None:
                why[claim.claim] = judge(claim.claim, alone.ours, alone.low, alone.high, claim.threshold,
                                         minimum_detectable=alone.minimum_detectable, not_testable=reason,
                                         p_value=alone.p_value)
    tested = iter(judge_claims(runs, [claim for claim in claims if claim.claim not in why], profile, linear))
    return [why[claim.claim] if claim.claim in why else next(tested) for claim in claims]


def share_words(runs: pd.DataFrame, arm: str) -> str:
    """How much of its pre-training the `arm` did layer-parallel, over seeds, in words."""
    shares = runs[(runs["phase"] == "pre-training") & (runs["arm"] == arm)]["layer_parallel_share"]
    low, high = shares.min(), shares.max()
    if low == 1:
        return "layer-parallel for all of its optimizer steps"
    spread = f"{low:.0%}" if round(100 * low) == round(100 * high) else f"{100 * low:.0f}-{high:.0%}"
    return f"layer-parallel for {spread} of its optimizer steps (seeds), serial for the rest"


def with_shares(verdicts: list[Verdict], claims: list[AccuracyClaim], runs: pd.DataFrame,
                setting: LayerParallelSettings) -> list[Verdict]:
    """The pre-training verdicts with the share of layer-parallel steps behind them added to their reason."""
    return [replace(v, reason=f"{v.reason}; the {c.better} arm was {share_words(runs, c.better)}")
            if c.dataset == setting.dataset else v for v, c in zip(verdicts, claims)]


def arms_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per phase and arm: mean accuracy over seeds with its 95% interval, the difference to the serial arm of the
    same phase, and the share of its optimizer steps that were layer-parallel (%, mean, least and most over seeds)."""
    table = accuracy_table(runs, ("phase", "dataset", "arm"))
    first = runs.drop_duplicates(["phase", "arm"]).set_index(["phase", "arm"])
    for column in ("weights", "solver", "model", "optimizer_steps"):
        table[column] = [first.loc[(p, a), column] for p, a in zip(table["phase"], table["arm"])]
    serial = table[table["arm"] == "serial"].set_index("phase")["our_acc"]
    table["minus_serial"] = table["our_acc"] - table["phase"].map(serial)
    shares = 100 * runs.groupby(["phase", "arm"])["layer_parallel_share"].agg(["mean", "min", "max"])
    for column, statistic in (("layer_parallel_pct", "mean"), ("layer_parallel_min_pct", "min"),
                              ("layer_parallel_max_pct", "max")):
        table[column] = [shares.loc[(p, a), statistic] for p, a in zip(table["phase"], table["arm"])]
    columns = ["phase", "dataset", "arm", "weights", "model", "solver", "params", "our_acc", "our_acc_low",
               "our_acc_high", "minus_serial", "seed_std", "seeds", "test_images", "optimizer_steps",
               "layer_parallel_pct", "layer_parallel_min_pct", "layer_parallel_max_pct", "seconds_per_run"]
    return table[columns]


def _checks(record: RunResult) -> list[list]:
    return [check for entry in record.history for check in entry.get("mgrit_checks") or []]


def solver_checks(runs: pd.DataFrame, records: list[RunResult]) -> pd.DataFrame:
    """Every check of the exact gradient that a run made (the adaptive arm's): phase, arm, seed, step, the relative
    errors of the chain's output and of its gradient, and the (forward, adjoint) cycles it was made at."""
    rows = [(run["phase"], run["arm"], run["seed"], step, output_error, gradient_error,
             tuple(cycles) if cycles is not None else None)
            for (_, run), record in zip(runs.iterrows(), records)
            for step, output_error, gradient_error, cycles in _checks(record)]
    return pd.DataFrame(rows, columns=["phase", "arm", "seed", "step", "output_error", "gradient_error", "cycles"])


def solver_table(runs: pd.DataFrame, records: list[RunResult]) -> pd.DataFrame:
    """One row per MGRIT run: end_cycles "backprop" once switched; adapted_from, the steps from which it used one more
    cycle (or backprop); layer_parallel_pct, the share of its optimizer steps before the switch (the runs table's
    `layer_parallel_share`, in %); past_tolerance, the checks that found the gradient error past its recipe's
    tolerance."""
    rows = []
    for (_, run), record in zip(runs.iterrows(), records):
        recipe = record.config["recipe"]
        if recipe["solver"] != "mgrit":
            continue
        checks, tolerance = _checks(record), recipe["mgrit_tolerance"]
        errors = [check[2] for check in checks]
        final = record.history[-1].get("mgrit_iterations")
        switches = [entry.get("solver_switch_step") for entry in record.history
                    if entry.get("solver_switch_step") is not None]
        rows.append((run["phase"], run["arm"], run["seed"], tuple(recipe["mgrit_iterations"]),
                     tuple(final) if final is not None else "backprop", switches[0] if switches else None,
                     run["optimizer_steps"], 100 * run["layer_parallel_share"],
                     tuple(check[0] + 1 for check in checks if check[2] > tolerance), len(checks),
                     sum(error > tolerance for error in errors),
                     *((errors[0], max(errors), errors[-1]) if errors else (math.nan,) * 3)))
    table = pd.DataFrame(rows, columns=["phase", "arm", "seed", "start_cycles", "end_cycles", "switch_step",
                                        "optimizer_steps", "layer_parallel_pct", "adapted_from", "checks",
                                        "past_tolerance", "first_gradient_error", "worst_gradient_error",
                                        "last_gradient_error"])
    # a step or None, as the history records it (pandas would turn a column of steps and Nones into floats)
    table["switch_step"] = pd.Series([row[5] for row in rows], dtype=object)
    return table


def readable(table: pd.DataFrame, scientific: tuple[str, ...] = ()) -> pd.DataFrame:
    """`table` for a reader and its CSV: tuples (cycles, steps) as comma-separated text, and the `scientific`
    columns in scientific notation, since the tables' CSVs keep two decimals and would print a relative error of
    4e-3 as 0.00 (the exact values are in the run records)."""
    def text(value, column):
        if isinstance(value, tuple):
            return ", ".join(str(v) for v in value)
        if column in scientific and isinstance(value, float):
            return f"{value:.2e}" if math.isfinite(value) else ""
        return value

    return table.assign(**{c: [text(v, c) for v in table[c]] for c in table.columns})


def step_losses(runs: pd.DataFrame, seed: int, profile: str) -> pd.DataFrame:
    """The per-step training loss of every run of one seed (its step log): phase, arm, step, loss. Step logs stay
    where a run was trained (only the records are committed): a run without one gives its epochs' mean losses at
    each epoch's last step instead, with a warning, so that a fresh checkout still draws the curves."""
    frames, coarse = [], []
    for _, run in runs[runs["seed"] == seed].iterrows():
        record_path = run_paths(run["run_name"], run["run_key"], results_dir(profile))[0]
        log_path = step_log_path(record_path)
        if log_path.is_file():
            log = read_step_log(log_path)[["step", "loss"]]
        else:  # a one-stage run with one step per minibatch: each epoch's mean loss at its last step
            record = read_record(record_path, run["run_key"])
            data, recipe = record.config["data"], record.config["recipe"]
            per_epoch = math.ceil(round(data["n_train"] * (1 - data["val_fraction"])) / recipe["batch_size"])
            log = pd.DataFrame({"step": [entry["epoch"] * per_epoch - 1 for entry in record.history],
                                "loss": [entry["train_loss"] for entry in record.history]})
            coarse.append(run["run_name"])
        frames.append(log.assign(phase=run["phase"], arm=run["arm"]))
    if coarse:
        warnings.warn(f"no step log for {', '.join(coarse)} (step logs are not committed): their curves are the "
                      "epochs' mean losses, at each epoch's last step", stacklevel=2)
    return pd.concat(frames, ignore_index=True)[["phase", "arm", "step", "loss"]]


def convergence_rows(profile: str) -> tuple[pd.DataFrame, str]:
    """`paraformer.bench.convergence`'s table for this profile and where it comes from: its CSV in the profile's tables,
    else (profiles measured on the quick settings) the committed quick one, else, at ci, computed here (seconds: the ci
    settings, with this experiment's coarsening added); an empty table, saying how to make it, otherwise."""
    own, setting = get_profile(profile).convergence, get_profile(profile).layer_parallel
    candidates = [(profile, convergence.output_paths(profile)[0])]
    if profile != "quick" and own == get_profile("quick").convergence:
        candidates.append(("quick", convergence.output_paths("quick")[0]))
    for name, path in candidates:
        if path.is_file():
            return pd.read_csv(path), f"tables/mgrit_convergence.csv of the {name} profile"
    if profile == "ci":
        coarsenings = tuple(sorted({*own.coarsenings, setting.coarsening}))
        table = convergence.convergence_table(replace(own, coarsenings=coarsenings), progress=False)
        return table, f"computed here (the ci settings, coarsenings {list(coarsenings)})"
    return (pd.DataFrame(), f"not made yet: python -m paraformer.tools.bench --profile {profile} --only convergence")


def convergence_view(table: pd.DataFrame, setting: LayerParallelSettings) -> pd.DataFrame:
    """The rows of the convergence table at the experiment's levels, coarsening, F-relaxation and h = 1/N: the
    relative gradient error per depth (rows) and cycle count (columns)."""
    if table.empty:
        return table
    rows = table[(table["levels"] == setting.levels) & (table["coarsening"] == setting.coarsening)
                 & (table["relaxation"] == "F") & (table["step"].astype(str) == "1/N")]
    wide = rows.pivot_table(index="depth", columns="iterations", values="gradient_error")
    wide.columns = [f"{k} cycles" for k in wide.columns]
    return wide.reset_index()


SERIAL_METHOD = "ddp"  # at one process: the plain serial step of the ViT (DDP over one rank adds nothing)


def mgrit_method(setting: LayerParallelSettings) -> str | None:
    """The benchmark's method for the fixed arm's solver, or None where the benchmark does not time it (it times
    k forward cycles with one adjoint cycle)."""
    forward, adjoint = setting.fixed_iterations
    return f"mgrit-{forward}it" if adjoint == 1 else None


def _top_processes(steps: pd.DataFrame) -> int:
    """The most processes the benchmark ran (2 where it ran none, the count the claims are made for)."""
    return max(2, steps["processes"].max()) if len(steps) else 2


def _speed_claims(profile: str, setting: LayerParallelSettings, top: int) -> list[tuple]:
    """(key, kind, claim, slower step, faster step) per speed claim, each step as (method, model, processes)."""
    multi = get_profile(profile).multi
    vit, para, method = vit_name(multi), f"Para-F-{multi.paraformer}", mgrit_method(setting)
    label = method or f"MGRIT with {setting.fixed_iterations[1]} adjoint cycles"
    return [("acceleration", "paper", f"layer-parallel training accelerates over serial: {label} of {vit} on {top} "
             f"processes against the serial {vit} step on one", (SERIAL_METHOD, vit, 1), (method, vit, top)),
            ("mgrit_scaling", "comparison", f"{label} of {vit} on {top} processes faster than on one",
             (method, vit, 1), (method, vit, top)),
            ("mgrit_vs_branch", "comparison", f"{label} of {vit} faster than branch parallelism of {para} (as many "
             f"layers, the same width) on {top} processes", ("branch", para, top), (method, vit, top))]


def speed_row_words(row: tuple[str | None, str, int], setting: LayerParallelSettings, status: str | None = None) -> str:
    """A benchmark row (method, model, processes) of `missing_speed_rows` in words, with the CSV it belongs in, or
    its count's `status` where this machine could not run it ("not measured here (1 GPU)")."""
    method, model, processes = row
    if method is None:
        return f"an MGRIT step with {setting.fixed_iterations[1]} adjoint cycles (the benchmark times one)"
    words = f"{method} {model} at {processes} process{'es' if processes > 1 else ''}"
    return f"{words}: {status}" if status else f"{words} (multi_steps_{processes}.csv)"


def missing_speed_rows(data: dict[str, pd.DataFrame], profile: str,
                       setting: LayerParallelSettings) -> list[tuple[str | None, str, int]]:
    """The benchmark rows, as (method, model, processes), that the speed claims need and `data` lacks (empty when
    nothing is missing); method None: the fixed arm's solver, which the benchmark does not time."""
    steps = costmodel.multi_steps(data)
    needed = {step: None for *_, slow, fast in _speed_claims(profile, setting, _top_processes(steps))
              for step in (slow, fast)}
    return [step for step in needed if math.isnan(costmodel.best_step(steps, *step))]


def speed_verdicts(data: dict[str, pd.DataFrame], profile: str,
                   setting: LayerParallelSettings) -> list[speedup.SpeedVerdict]:
    """The paper's "parallel acceleration over the layer dimension" (see the module docstring) and two comparisons it
    gives no figure for: MGRIT's own speed-up from one process, and branch parallelism of the ParaFormer with as many
    layers and the same width against it. A claim whose rows the CSVs lack is not testable, saying which."""
    steps = costmodel.multi_steps(data)
    spread, _ = speedup.ratio_spread(data)
    device = speedup.device_of(steps) if len(steps) else "no benchmark"
    unmeasured, out = speedup.not_measured(data), []
    for key, kind, claim, slow, fast in _speed_claims(profile, setting, _top_processes(steps)):
        times = [costmodel.best_step(steps, *slow), costmodel.best_step(steps, *fast)]
        lacking = [step for step, t in zip((slow, fast), times) if math.isnan(t)]
        missing = [speed_row_words(step, setting, unmeasured.get(step[2])) for step in lacking]
        if missing and all(step[2] in unmeasured for step in lacking):
            out.append(speedup.judge_ratio(key, kind, claim, math.nan, 1.0, spread, "", device,
                                           not_testable="; ".join(missing)))
            continue
        if missing:
            why = (f"the benchmark CSVs lack {'; '.join(missing)} (measured before those rows were timed, or "
                   "skipped there); make bench measures them")
            out.append(speedup.judge_ratio(key, kind, claim, math.nan, 1.0, spread, "", device, not_testable=why))
            continue
        (slow_method, slow_model, slow_p), (fast_method, fast_model, fast_p) = slow, fast
        detail = (f"{slow_method} {slow_model} at {slow_p} process(es): {1e3 * times[0]:.1f} ms; {fast_method} "
                  f"{fast_model} at {fast_p}: {1e3 * times[1]:.1f} ms (the benchmark's ViT has h = 1, which changes "
                  "no time)")
        out.append(speedup.judge_ratio(key, kind, claim, times[0] / times[1], 1.0, spread, detail, device))
    return out


def speed_table(data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """`speedup.multi_table` cut to the serial ViT (DDP at one process) and its DDP, MGRIT and branch parallelism,
    with each step's speed-up over the serial ViT step on one process."""
    columns = ["processes", "method", "model", "step_ms", "speedup_over_1_process", "serial_over_this"]
    if costmodel.multi_steps(data).empty:
        return pd.DataFrame(columns=columns)
    table = speedup.multi_table(data)
    table = table[table["status"] == "measured"]  # a count not measured here is in `Speed.missing`
    keep = table["method"].isin([SERIAL_METHOD, "branch"]) | table["method"].str.startswith("mgrit-")
    table = table[keep & ~((table["method"] == SERIAL_METHOD) & table["model"].str.startswith("Para-F"))].copy()
    serial = table[(table["method"] == SERIAL_METHOD) & (table["processes"] == 1)]["step_ms"]
    table["serial_over_this"] = float(serial.iloc[0]) / table["step_ms"] if len(serial) else math.nan
    return table[columns].reset_index(drop=True)


@dataclass(frozen=True)
class CostModelWinners:
    """Which way of training the ViT the cost model predicts fastest, per depth and device count, and MGRIT's step
    against branch parallelism of the ParaFormer with as many layers (a prediction, not a verdict)."""

    # depth, devices, allreduce, fastest (the fastest line that trains the ViT), fastest_ms, mgrit_over_branch
    table: pd.DataFrame
    mgrit: str | None  # the MGRIT method compared with branch parallelism; None where the costs cannot predict it

    def words(self) -> list[str]:
        if self.table.empty:
            return ["Cost model: no predictions (the benchmark's 1- and 2-process cost CSVs are missing)."]
        head = ("Cost model (a prediction, not a verdict; ring all-reduce, devices and links like the measured ones; "
                "every all-reduce model in tables/layer_parallel_cost_model.csv): per depth, the fastest way to train "
                "the ViT at each device count")
        if self.mgrit is None:
            head += (" (no MGRIT prediction: the cost CSVs lack its layer_forward and layer_vjp rows, or no device "
                     "count shares the layers in whole coarse intervals)")
        else:
            head += (f", and {self.mgrit}'s step over the branch-parallel ParaFormer's of as many layers and the same "
                     "width (above 1: branch parallelism is faster)")
        lines = [head + "."]
        for depth, rows in self.table[self.table["allreduce"] == "ring"].groupby("depth", sort=True):
            where = "; ".join(f"{method} at {', '.join(str(p) for p in wins['devices'])}"
                              for method, wins in rows.sort_values("devices").groupby("fastest", sort=False))
            ratios = rows.dropna(subset=["mgrit_over_branch"])
            against = ("; over branch parallelism " + ", ".join(
                f"{r['mgrit_over_branch']:.2f}x at {r['devices']}" for _, r in ratios.iterrows()) if len(ratios)
                else "")
            lines.append(f"{depth} layers: fastest {where} device(s){against}")
        return lines


def cost_model_winners(data: dict[str, pd.DataFrame], profile: str, setting: LayerParallelSettings) -> CostModelWinners:
    """`CostModelWinners` from `costmodel.predictions` at every depth (none without the 1- and 2-process costs):
    the fastest of the lines that train the ViT (`speedup.cost_model_lines`: the pipeline, DDP, MGRIT)."""
    has_costs = {"multi_costs_1", "multi_costs_2"} <= set(data)
    predicted = speedup.predictions(data, profile) if has_costs else pd.DataFrame()
    method = mgrit_method(setting)
    rows, compared = [], None
    for depth in sorted(set(predicted["depth"])) if not predicted.empty else []:
        lines = speedup.cost_model_lines(predicted, depth)
        branch = next(line for line in lines if line.method == "branch")
        vit = [line for line in lines if line.model.startswith("ViT-")]
        mgrit = next((line for line in vit if line.method == method), None)
        compared = compared or (mgrit.method if mgrit is not None else None)
        for allreduce in ("ring", "tree"):
            at = {line.method: line.predicted_ms(allreduce) for line in vit}
            for devices in sorted({p for times in at.values() for p in times}):
                times = {name: t[devices] for name, t in at.items() if devices in t}
                fastest = min(times, key=times.get)
                ratio = (mgrit.predicted_ms(allreduce)[devices] / branch.predicted_ms(allreduce)[devices]
                         if mgrit is not None and devices in mgrit.devices and devices in branch.devices
                         else math.nan)
                rows.append({"depth": depth, "devices": devices, "allreduce": allreduce, "fastest": fastest,
                             "fastest_ms": times[fastest], "mgrit_over_branch": ratio})
    columns = ["depth", "devices", "allreduce", "fastest", "fastest_ms", "mgrit_over_branch"]
    return CostModelWinners(pd.DataFrame(rows, columns=columns), compared)


@dataclass
class Findings:
    table: pd.DataFrame  # per phase and arm (`arms_table`)
    claims: list[AccuracyClaim]  # "commensurate" and "unaffected" (`accuracy_claims`)
    verdicts: list[Verdict]  # one per claim (`judge_accuracy`, `with_shares`)
    solver: pd.DataFrame  # what the MGRIT solver did, run by run (`solver_table`)
    checks: pd.DataFrame  # the adaptive arm's checks (`solver_checks`)
    sources: list[str]  # who makes each claim, "paper" or "ours" (`claim_sources`)


def findings(runs: pd.DataFrame, records: list[RunResult], profile: str) -> Findings:
    """The accuracy claims and the solver's record; writes tables/layer_parallel*.{csv,md} (but the speed's)."""
    setting = get_profile(profile).layer_parallel
    table, found = arms_table(runs), accuracy_claims(setting)
    linear = linear_accuracies([setting.data_config("pre-training"), finetune_data(setting)], results_dir(profile))
    verdicts = with_shares(judge_accuracy(runs, found, setting, profile, linear), found, runs, setting)
    tune = finetune_recipe(setting, 0)
    notes = [setting.describe(),
             f"phase: pre-training (the three arms from random weights) or fine-tuning (the final weights of the "
             f"{', '.join(setting.finetune_from)} arms, a new head, each fine-tuned by backprop alike: "
             f"{finetune_data(setting).n_train or 'all'} images, {tune.epochs} epochs, lr {tune.lr:g}); arm: the "
             "pre-training arm (weights: whose weights a fine-tune starts from); solver: how the run's gradients "
             "were computed (Recipe.describe_solver)",
             "our_acc: final test accuracy on all test images, mean over seeds, 95% interval (t over seeds with the "
             "test images' variance); minus_serial: our_acc minus the serial arm's of the same phase; layer_parallel_pct: "
             "the share of the arm's optimizer steps whose gradients MGRIT computed (mean, min, max over seeds)",
             *provenance(runs)]
    write_table(table, "layer_parallel", "Layer-parallel (MGRIT) training against serial: accuracy", notes,
                profile=profile)
    write_table(verdict_table(verdicts, found), "layer_parallel_claims",
                "Layer-parallel accuracy claims (Jiang et al. 2026), paired by seed and test image",
                [f"Holm's correction over the claims tested, interval at confidence interval_pct (%); a claim holds "
                 f"when layer-parallel minus serial exceeds -{setting.margin:g} (our margin: the paper gives none); "
                 f"'unaffected' is not testable while the serial fine-tune stays under {setting.finetune_floor:g}% or "
                 f"the design cannot detect {setting.finetune_detectable:g} points"], profile=profile)
    solver, checks = solver_table(runs, records), solver_checks(runs, records)
    errors = ("first_gradient_error", "worst_gradient_error", "last_gradient_error")
    write_table(readable(solver, errors), "layer_parallel_solver", "What the MGRIT solver did, run by run",
                [f"tolerance {setting.tolerance:g} (relative gradient error); adapted_from: the steps from which the "
                 "adaptive arm used one more cycle, or backprop (switch_step)", setting.describe()], profile=profile)
    write_table(readable(checks, ("output_error", "gradient_error")), "layer_parallel_checks",
                "The adaptive arm's checks of the MGRIT gradient against the exact one",
                ["output_error, gradient_error: relative errors of the chain's output and of its gradient (the "
                 "tokens' cotangent and every layer's parameters) on the step's minibatch"], profile=profile)
    return Findings(table, found, verdicts, solver, checks, claim_sources(setting))


@dataclass
class Speed:
    measured: list[str]  # the benchmarks measured here first (missing, or measured on another kind of device)
    missing: list[str]  # the benchmark rows the speed claims need and the CSVs lack, in words
    table: pd.DataFrame  # `speed_table`
    verdicts: list[speedup.SpeedVerdict]  # `speed_verdicts`
    winners: CostModelWinners  # `cost_model_winners`


def speed_findings(profile: str, processes: tuple[int, ...] | None = None, measure_other_device: bool = True) -> Speed:
    """The speed claims from the benchmark CSVs, the multi-process benchmark measured here first as notebook 06 does
    (`speedup.run`, at `processes`, None: the profile's, as far as this machine has devices); writes
    tables/layer_parallel_speed and tables/layer_parallel_cost_model."""
    setting = get_profile(profile).layer_parallel
    data, measured = speedup.run(profile, processes=None if processes is None else tuple(processes),
                                 measure_other_device=measure_other_device, only=("multi",))
    unmeasured = speedup.not_measured(data)
    missing = [speed_row_words(row, setting, unmeasured.get(row[2]))
               for row in missing_speed_rows(data, profile, setting)]
    table, verdicts = speed_table(data), speed_verdicts(data, profile, setting)
    write_table(table, "layer_parallel_speed", "Training step of the ViT: serial, data-parallel and layer-parallel "
                "(MGRIT)", [f"Measured on {', '.join(dict.fromkeys(v.device for v in verdicts))}; the benchmark's "
                            "ViT has h = 1, which changes no time. serial_over_this: the serial ViT step (ddp, 1 "
                            "process) over this step.", *(["Missing rows: " + "; ".join(missing)] if missing else [])],
                profile=profile)
    winners = cost_model_winners(data, profile, setting)
    write_table(winners.table, "layer_parallel_cost_model", "Cost model: the fastest way to train the ViT per depth "
                "and device count, and MGRIT's step over branch parallelism's", ["A prediction, not a measurement."],
                profile=profile)
    return Speed(measured, missing, table, verdicts, winners)


def report_sources(found: Findings, measured: Speed) -> list[str]:
    """Who makes each of the report's claims (`report`), in its order."""
    return found.sources + [SPEED_SOURCE for v in measured.verdicts if v.kind == "paper"]


def report(found: Findings, measured: Speed, runs: pd.DataFrame, profile: str) -> list[Verdict]:
    """The report's claims: the accuracy verdicts and the paper's speed claim; returns them (their sources:
    `report_sources`)."""
    verdicts = found.verdicts + [v.verdict for v in measured.verdicts if v.kind == "paper"]
    # the devices behind the claims: the training runs' and the benchmark's
    devices = "; ".join(dict.fromkeys([*runs["device"], *(v.device for v in measured.verdicts)]))
    verdicts = with_sources(verdicts, report_sources(found, measured))
    write_claims(verdicts, PAPER_2026, NOTEBOOK, profile, devices)
    return verdicts
