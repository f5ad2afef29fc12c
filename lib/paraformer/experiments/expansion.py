"""Notebook 05, model expansion: class-incremental learning and capacity growth. The paper publishes no protocol;
ours (the strategies, metrics and growth comparison) is stated in the notebook's markdown.

Class-incremental: tasks of `classes_per_task` classes in label order, task 1 on `branches_per_task` depth-1
branches; `expand` adds as many branches and a head per task and trains only them (`Recipe.freeze_inherited`: the
old classes' logits stay bit-identical), `finetune` trains every parameter, `joint` retrains from scratch on every
class seen. Forgetting follows Chaudhry et al. (2018). Capacity growth: from `growth_start` branches, `growth_step`
more at a time for `growth_epochs` epochs, against the same-size model from scratch at equal training compute in
layer passes per image (a trained layer 3, a frozen one 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.config import DataConfig, Recipe
from ..core.data import DATASETS, load_data
from ..core.flops import run_training_flops
from ..core.model import count_parameters
from ..core.paths import results_dir
from ..core.runcache import RunResult, load_trained_model
from ..training.evaluation import predict, prepare_batch
from .accuracy import AccuracyClaim, judge_claims, claims_note, verdict_table
from .estimate import Estimate, estimate as estimate_runs
from .paper import PAPER_2025
from .plan import PlannedRun, Trained, data_shape, execute, planned
from .profiles import get_profile
from .report import with_sources, write_claims
from .settings import ExpansionPlan, Scale
from .stats import Verdict, accuracy_interval
from .tables import code_warnings, record_provenance, save_figure, write_table  # noqa: F401 (the notebook's figures)

NOTEBOOK = "05_expansion"
STRATEGIES = ("expand", "finetune", "joint")
# Relative cost of a layer per image: forward + backward for one that learns, forward alone for a frozen one.
TRAINED_LAYER_COST, FROZEN_LAYER_COST = 3, 1


def layer_passes(old_layers: int, layers: int, epochs: int) -> int:
    """Training compute per image of a model of `layers` whose first `old_layers` are frozen."""
    return (FROZEN_LAYER_COST * old_layers + TRAINED_LAYER_COST * (layers - old_layers)) * epochs


def task_data_config(scale: Scale, dataset: str, classes: tuple[int, ...]) -> DataConfig:
    """The profile's subset sizes, scaled to the share of the dataset's classes that `classes` are."""
    share = len(classes) / DATASETS[dataset].num_classes
    scaled = lambda n: None if n is None else max(len(classes), round(n * share))
    return DataConfig(dataset=dataset, n_train=scaled(scale.n_train), n_test=scaled(scale.n_test), classes=classes,
                      n_test_per_epoch=scaled(scale.n_test_per_epoch))


# --- the runs -----------------------------------------------------------------------------------------

def class_incremental_plan(scale: Scale, plan: ExpansionPlan, seed: int) -> list[PlannedRun]:
    """Task 1 (shared by every strategy), then for each later task the expanded model learning only its new
    parameters (`expand`) or all (`finetune`), both from the previous task's run of their strategy, and the joint
    model from scratch on every class seen so far."""
    tasks, recipe = plan.tasks(), replace(scale.recipe, seed=seed)
    first_data = task_data_config(scale, plan.dataset, tasks[0])
    configs = [replace(scale.model_config(f"1-{plan.branches_per_task}", data_shape(first_data)),
                       num_classes=len(tasks[0]))]
    for task in tasks[1:]:
        configs.append(configs[-1].expanded(plan.branches_per_task, len(task)))
    first = planned(NOTEBOOK, configs[0], first_data, recipe, f"{plan.dataset}-task1")
    runs, last = [first], {"expand": first, "finetune": first}
    for t in range(1, len(tasks)):
        data = task_data_config(scale, plan.dataset, tasks[t])
        for strategy, freeze in (("expand", True), ("finetune", False)):
            last[strategy] = planned(NOTEBOOK, configs[t], data, replace(recipe, freeze_inherited=freeze),
                                     f"{plan.dataset}-task{t + 1}-{strategy}", parent=last[strategy])
            runs.append(last[strategy])
        seen = tuple(c for task in tasks[:t + 1] for c in task)
        runs.append(planned(NOTEBOOK, configs[t], task_data_config(scale, plan.dataset, seen), recipe,
                            f"{plan.dataset}-tasks1-{t + 1}-joint"))
    return runs


def growth_plan(scale: Scale, plan: ExpansionPlan, seed: int) -> list[PlannedRun]:
    """The first model, each growth step (new branches only, from the step before), and each grown size from
    scratch for the epochs that match the grown path's compute."""
    data, recipe = scale.data_config(plan.dataset), replace(scale.recipe, seed=seed)
    config = scale.model_config(f"1-{plan.growth_start}", data_shape(data))
    run = planned(NOTEBOOK, config, data, recipe)
    compute, grown, runs = layer_passes(0, config.num_layers, recipe.epochs), [], [run]
    for _ in range(plan.growth_steps):
        old_layers, config = config.num_layers, config.expanded(plan.growth_step)
        run = planned(NOTEBOOK, config, data, replace(recipe, epochs=plan.growth_epochs, freeze_inherited=True),
                      f"{plan.dataset}-{config.name}-grown", parent=run)
        compute += layer_passes(old_layers, config.num_layers, plan.growth_epochs)
        grown.append((config, compute))
        runs.append(run)
    for config, compute in grown:
        runs.append(planned(NOTEBOOK, config, data, replace(recipe, epochs=max(1, round(
            compute / (TRAINED_LAYER_COST * config.num_layers))))))
    return runs


def plan(profile: str) -> list[PlannedRun]:
    """For every seed, the class-incremental runs; then, for every seed, the growth runs."""
    p = get_profile(profile)
    return ([run for seed in p.expansion.seeds for run in class_incremental_plan(p.scale, p.expansion, seed)]
            + [run for seed in p.expansion.seeds for run in growth_plan(p.scale, p.expansion, seed)])


def estimate(profile: str, flops_per_second=None) -> Estimate:
    return estimate_runs(NOTEBOOK, profile, plan(profile), flops_per_second)


def describe(profile: str) -> list[str]:
    p = get_profile(profile)
    return [f"This run: {p.scale.describe()}", f"Expansion plan: {p.expansion}",
            f"Tasks (class indices): {p.expansion.tasks()}"]


@dataclass
class Runs:
    incremental: dict[int, dict[str, list[RunResult]]]  # seed -> strategy -> its run after each task
    metrics: pd.DataFrame  # `incremental_metrics` of every seed (a `seed` column)
    growth: pd.DataFrame  # `growth_rows` of every seed (a `seed` column)


def run(profile: str, progress: bool = True) -> Runs:
    """Train (or fetch) the plan: every seed's class-incremental runs, then every seed's growth."""
    p, folder = get_profile(profile), results_dir(profile)
    incremental, metrics = {}, []
    for seed in p.expansion.seeds:
        results = [t.result for t in execute(class_incremental_plan(p.scale, p.expansion, seed), folder, progress)]
        # task 1 (every strategy's), then per later task one run per strategy, in order: each strategy's runs
        incremental[seed] = {s: [results[0]] + results[1 + i::len(STRATEGIES)] for i, s in enumerate(STRATEGIES)}
        metrics.append(incremental_metrics(incremental[seed], p.scale, p.expansion, p.scale.recipe, folder)
                       .assign(seed=seed))
    growth = [growth_rows(execute(growth_plan(p.scale, p.expansion, seed), folder, progress), p.expansion)
              .assign(seed=seed) for seed in p.expansion.seeds]
    return Runs(incremental, pd.concat(metrics, ignore_index=True), pd.concat(growth, ignore_index=True))


# --- class-incremental --------------------------------------------------------------------------------

def incremental_metrics(runs: dict[str, list[RunResult]], scale: Scale, plan: ExpansionPlan,
                        recipe: Recipe, folder: Path) -> pd.DataFrame:
    """Per strategy, task t and tested task j <= t: class- and task-incremental accuracy, parameters learned in t."""
    tasks = plan.tasks()
    tests = [load_data(task_data_config(scale, plan.dataset, task)) for task in tasks]
    rows = []
    for strategy, results in runs.items():
        for t, result in enumerate(results):
            model = load_trained_model(result, folder)
            learned = count_parameters(result.model_config)
            if result.config["recipe"]["freeze_inherited"]:
                learned -= count_parameters(results[t - 1].model_config)
            for j in range(t + 1):
                data, low, high = tests[j], tasks[j][0], tasks[j][-1] + 1

                def all_seen_and_own_task(m, x):  # one forward pass: every seen class, then task j's alone
                    logits = m(x)
                    return [logits, logits[:, low:high]]

                every, own = predict(model, data.test_images, data, recipe, all_seen_and_own_task)
                class_il, task_il = (every == data.test_labels).numpy(), (own + low == data.test_labels).numpy()
                rows.append({"strategy": strategy, "after_task": t + 1, "task": j + 1,
                             "class_il_acc": 100.0 * class_il.mean(), "task_il_acc": 100.0 * task_il.mean(),
                             "trained_params": learned, "class_il_correct": class_il, "task_il_correct": task_il})
    return pd.DataFrame(rows)


def incremental_compute(runs: dict[str, list[RunResult]]) -> pd.DataFrame:
    """Per strategy and task t: the training TFLOPs behind the model after task t (`flops.run_training_flops`):
    every task's run so far for the strategies that learn task after task (expansion counts only what learned),
    the one run for joint, which trains afresh on all classes seen."""
    rows = []
    for strategy, results in runs.items():
        total = 0.0
        for t, result in enumerate(results):
            tflop = run_training_flops(result, parent=results[t - 1] if t else None) / 1e12
            total = tflop if strategy == "joint" else total + tflop
            rows.append({"strategy": strategy, "after_task": t + 1, "train_tflop": total})
    return pd.DataFrame(rows)


def class_incremental_table(metrics: pd.DataFrame, runs_by_seed: dict[int, dict[str, list[RunResult]]]) -> pd.DataFrame:
    """`incremental_summary` with `incremental_compute` of each seed's metrics, averaged over the seeds."""
    per_seed = []
    for seed, seed_metrics in metrics.groupby("seed", sort=False):
        summary = incremental_summary(seed_metrics.drop(columns="seed"))
        per_seed.append(summary.merge(incremental_compute(runs_by_seed[seed]), on=["strategy", "after_task"],
                                      how="left", validate="one_to_one"))
    table = pd.concat(per_seed, ignore_index=True).groupby(["strategy", "after_task"], sort=False).mean()
    return table.reset_index().assign(seeds=len(per_seed))


def incremental_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and task t: average accuracy over the classes seen so far, and average forgetting."""
    rows = []
    metrics = metrics.drop(columns=["class_il_correct", "task_il_correct"], errors="ignore")
    for (strategy, t), rows_t in metrics.groupby(["strategy", "after_task"], sort=False):
        row = {"strategy": strategy, "after_task": t, "avg_class_il_acc": rows_t["class_il_acc"].mean(),
               "avg_task_il_acc": rows_t["task_il_acc"].mean(), "trained_params": rows_t["trained_params"].iloc[0]}
        history = metrics[metrics["strategy"] == strategy]
        for kind in ("class_il", "task_il"):
            # joint: a new model after every task, nothing is learned sequentially to forget
            drops = [] if strategy == "joint" else [
                history[(history["task"] == j) & (history["after_task"] < t)][f"{kind}_acc"].max()
                - history[(history["task"] == j) & (history["after_task"] == t)][f"{kind}_acc"].iloc[0]
                for j in range(1, t)]
            row[f"{kind}_forgetting"] = sum(drops) / len(drops) if drops else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# --- capacity growth ------------------------------------------------------------------------------------

def growth_rows(trained: list[Trained], plan: ExpansionPlan) -> pd.DataFrame:
    """`growth_plan`'s runs as rows, the grown path's then the same sizes from scratch: `compute` in layer passes
    per training image, `train_seconds` measured and `train_tflop` counted (`flops.run_training_flops`), each
    summed over the path for a grown model."""
    rows, n_train, previous, total = [], len(trained[0].data.train_labels), None, None
    for i, t in enumerate(trained):
        config, result = t.planned.model, t.result
        old_layers = previous.planned.model.num_layers if previous else 0
        here = (layer_passes(old_layers, config.num_layers, t.planned.recipe.epochs),
                sum(h["train_seconds"] for h in result.history),
                run_training_flops(result, n_train=n_train, parent=previous.result if previous else None) / 1e12)
        total = tuple(a + b for a, b in zip(total, here)) if previous else here
        rows.append({"path": "grown" if i <= plan.growth_steps else "scratch", "branches": config.num_branches,
                     "epochs": len(result.history), "test_acc": result.final_test_acc, "params": result.num_params,
                     "compute": total[0], "train_seconds": total[1], "train_tflop": total[2], "run_key": result.key,
                     "code_digest": result.code_digest, "numerics": result.numerics, "correct": result.correct()})
        previous = t if i < plan.growth_steps else None  # the from-scratch runs start from nothing
    return pd.DataFrame(rows).assign(test_images=len(trained[0].data.test_labels))


def final_arms(metrics: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """After the last task, each strategy's per-image correctness over every seen class's test images (tasks in
    order), told the task or not: rows (dataset, seed, label "<strategy>, task given|not given", correct) for
    `judge_claims`."""
    last = metrics[metrics["after_task"] == metrics["after_task"].max()].sort_values("task")
    return pd.DataFrame([{"dataset": dataset, "seed": seed, "label": f"{strategy}, {words}",
                          "correct": np.concatenate(list(group[f"{kind}_correct"]))}
                         for (strategy, seed), group in last.groupby(["strategy", "seed"], sort=False)
                         for kind, words in (("task_il", "task given"), ("class_il", "task not given"))])


TASK_GIVEN, TASK_NOT_GIVEN = "task given", "task not given"
# Why expansion cannot lose to fine-tuning when told the task, whatever the data: the report renders it beside the
# verdict (`Findings.by_construction`), which a reader would otherwise take for a finding. `logits_check` tests the
# premise on real test images.
BY_CONSTRUCTION = ("holds by construction: expansion freezes the old branches and reads each old task through its "
                   "own head, so told the task it cannot forget (the old classes' logits stay bit-identical), while "
                   "fine-tuning changes every parameter")
SOURCE = "ours"  # the paper only says ParaFormer "facilitates model expansion": the protocol and the claims are ours


def expansion_claims(dataset: str) -> list[AccuracyClaim]:
    """Expansion against fine-tuning everything, after the last task, with and without the task given."""
    return [AccuracyClaim(dataset, f"expand, {words}", f"finetune, {words}",
                          f"expansion beats fine-tuning everything after the last task, {words}", column="label")
            for words in (TASK_GIVEN, TASK_NOT_GIVEN)]


def by_construction(claim: AccuracyClaim) -> str | None:
    """Why `claim` holds by construction (`BY_CONSTRUCTION`), or None where the evidence decides it."""
    return BY_CONSTRUCTION if claim.better == f"expand, {TASK_GIVEN}" else None


def growth_claims(growth: pd.DataFrame, dataset: str) -> list[AccuracyClaim]:
    """At every grown size: the grown model beats the same size trained from scratch at the same compute."""
    sizes = sorted(set(growth[growth["path"] == "scratch"]["branches"]))
    return [AccuracyClaim(dataset, f"grown {k}", f"scratch {k}", f"a model grown to {k} branches beats one of {k} "
                          "branches trained from scratch at the same compute", column="label") for k in sizes]


def growth_means(growth: pd.DataFrame) -> pd.DataFrame:
    """Per path and size: mean test accuracy over seeds with its 95% interval, epochs, compute and seconds."""
    rows = []
    for (path, k), group in growth.groupby(["path", "branches"], sort=False):
        acc, low, high = accuracy_interval(np.stack(group.sort_values("seed")["correct"]))
        rows.append({"path": path, "branches": k, "seeds": len(group), "epochs": group["epochs"].mean(),
                     "compute": group["compute"].mean(), "test_acc": acc, "test_acc_low": low, "test_acc_high": high,
                     "params": group["params"].iloc[0], "train_seconds": group["train_seconds"].mean(),
                     "train_tflop": group["train_tflop"].mean(),
                     "test_images": int(group["test_images"].iloc[0])})
    return pd.DataFrame(rows)


def logits_check(result: Runs, profile: str) -> str:
    """Whether the first seed's last expanded model gives task 1's test images bit-identical task-1 logits to the
    task-1 model (what "expansion never forgets" rests on), in words."""
    p, folder = get_profile(profile), results_dir(profile)
    expand_runs = result.incremental[p.expansion.seeds[0]]["expand"]
    old, new = load_trained_model(expand_runs[0], folder).eval(), load_trained_model(expand_runs[-1], folder).eval()
    data = load_data(task_data_config(p.scale, p.expansion.dataset, p.expansion.tasks()[0]))
    x = prepare_batch(data.test_images, data, old.config, torch.device("cpu"))
    with torch.no_grad():
        same = torch.equal(new(x)[:, :old.config.num_classes], old(x))
    return (f"{old.num_branches} -> {new.num_branches} branches, {old.config.num_classes} -> "
            f"{new.config.num_classes} classes; task 1 logits on its {len(data.test_labels)} test images "
            f"bit-identical: {same}")


@dataclass
class Findings:
    summary: pd.DataFrame  # per strategy and task, over seeds (`class_incremental_table`)
    claims: list[AccuracyClaim]  # expansion against fine-tuning after the last task, task given and not
    verdicts: list[Verdict]
    growth: pd.DataFrame  # per path and size, over seeds (`growth_means`)
    growth_claims: list[AccuracyClaim]  # grown against from scratch at the same compute, per size
    growth_verdicts: list[Verdict]

    @property
    def report_verdicts(self) -> list[Verdict]:
        """What the report gets: expansion against fine-tuning, the task given and not (the growth stays here)."""
        return self.verdicts

    @property
    def by_construction(self) -> list[str | None]:
        """Per report verdict: why it holds by construction (`by_construction`), or None."""
        return [by_construction(claim) for claim in self.claims]

    @property
    def sources(self) -> list[str]:
        """Per report verdict: who makes the claim (`SOURCE`)."""
        return [SOURCE] * len(self.report_verdicts)


def findings(result: Runs, profile: str) -> Findings:
    """Writes tables/expansion*.{csv,md} and the report's claims (expansion against fine-tuning, the task given and
    not: `Findings.report_verdicts`)."""
    p = get_profile(profile)
    plan, scale = p.expansion, p.scale
    summary = class_incremental_table(result.metrics, result.incremental)
    found = expansion_claims(plan.dataset)
    # no linear baseline here: a classifier trained on every class at once is the joint arm's bound, not a sign of
    # whether class-incremental arms have learned
    verdicts = judge_claims(final_arms(result.metrics, plan.dataset), found, profile)
    records = [run for by_strategy in result.incremental.values() for runs in by_strategy.values() for run in runs]
    notes = [
        f"{PAPER_2025} claims that ParaFormer 'facilitates model expansion for adaptive continuous learning' and gives "
        "no protocol or number: this table has no paper column",
        "avg_*_acc: mean test accuracy over the tasks seen so far (each task has the same number of test images per "
        "class); class_il: predicting among all seen classes; task_il: told the task; forgetting: best earlier "
        "accuracy minus current, mean over earlier tasks (Chaudhry et al. 2018); trained_params: parameters that "
        "learned in that task; train_tflop: counted training FLOPs behind the model (paraformer.core.flops): every "
        "task's run so far, for joint its one run",
        f"{plan.dataset} split into tasks {plan.tasks()}; {plan.branches_per_task} depth-1 branch(es) per task; "
        f"seeds {list(plan.seeds)} (mean shown)",
        scale.describe().replace(" per dataset", " per dataset (scaled to each task's share of the classes)"),
        *record_provenance(records),
    ]
    write_table(summary, "expansion_class_incremental", "Class-incremental learning: expand vs fine-tune vs joint",
                notes, profile=profile)
    write_table(verdict_table(verdicts, found), "expansion_claims",
                "Expansion against fine-tuning after the last task, paired by seed and test image",
                [claims_note("over every seen class's test images"), *notes[2:4]], profile=profile)
    growth = growth_means(result.growth)
    grow_claims = growth_claims(result.growth, plan.dataset)
    grow_verdicts = judge_claims(result.growth.assign(dataset=plan.dataset, label=[  # "<path> <k>", as the claims
        f"{path} {k}" for path, k in zip(result.growth["path"], result.growth["branches"])]), grow_claims, profile)
    first = records[0]
    growth_notes = [f"{PAPER_2025} gives no growth protocol or number",
                    f"grown: Para-F-1-{plan.growth_start} trained normally, then {plan.growth_steps} steps adding "
                    f"{plan.growth_step} branch(es), each training only the new ones for {plan.growth_epochs} epochs; "
                    "scratch: the same size trained from scratch for as many epochs as matches the grown path's "
                    "compute",
                    "compute: layer passes per training image (3 per learning layer, 1 per frozen layer), summed over "
                    "the path; train_seconds: measured training time (no evaluation), summed likewise; train_tflop: "
                    "counted training FLOPs (paraformer.core.flops), summed likewise; test_acc: mean over seeds on all "
                    "test images, with its 95% interval",
                    scale.describe(), f"data: {first.data_source}", f"runs on {first.device}",
                    *code_warnings(result.growth)]
    write_table(growth, "expansion_growth", "Capacity growth: grown (new branches only) vs from scratch at the same "
                "compute", growth_notes, profile=profile)
    write_table(verdict_table(grow_verdicts, grow_claims), "expansion_growth_claims",
                "Capacity growth: grown against from scratch at the same compute, paired by seed and test image",
                ["low/high: the interval at confidence interval_pct (%), Holm's correction over the sizes",
                 *growth_notes[1:4]], profile=profile)
    out = Findings(summary, found, with_sources(verdicts, [SOURCE] * len(verdicts), [by_construction(claim) for claim
                                                                                       in found]),
                   growth, grow_claims, grow_verdicts)
    write_claims(with_sources(out.report_verdicts, out.sources), PAPER_2025, NOTEBOOK, profile,
                 first.device)
    return out
