"""Model expansion: class-incremental learning and capacity growth (notebook 05).

The 2025 paper says ParaFormer "facilitates model expansion for adaptive continuous learning" but publishes no
protocol. Ours:

**Class-incremental.** A dataset's classes are split, in label order, into tasks of `classes_per_task`
classes. Task 1 trains a ParaFormer of `branches_per_task` depth-1 branches on its classes. Each later task
brings only its own training images, and three strategies continue:
- `expand`: `ParaFormer.expand(branches_per_task, classes_per_task)` adds branches and a head for the new
  classes that reads every branch; only the new parameters learn (`Recipe.freeze_inherited`). The logits of
  earlier classes stay bit-identical whatever the new parts learn: nothing old can be overwritten.
- `finetune`: the same expansion, but every parameter learns on the new task (the forgetting baseline).
- `joint`: the upper bound: the same architecture trained from scratch on all classes seen so far, with all
  their training images.
After each task, every model is tested on the test images of every class seen so far. Class-incremental
accuracy predicts among all seen classes without being told the task; task-incremental accuracy (told the
task) predicts among that task's classes only. Forgetting of task j after task T is its best accuracy after
any earlier task minus its accuracy after T (Chaudhry et al., 2018), averaged over j < T.

**Capacity growth.** A ParaFormer of `growth_start` branches is trained on the whole dataset; then, step by
step, `growth_step` branches are added and only they learn, for `growth_epochs` epochs. Each grown model is
compared with the same-size model trained from scratch for the same training compute, counted in layer passes
per image (a trained layer 3: forward and backward; a frozen one 1: forward only), so that the two have about
the same training time; both measured times are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..config import ConfigError, DataConfig, ModelConfig, Recipe
from ..data import DATASETS, load_data
from ..flops import run_training_flops
from .accuracy import AccuracyClaim
from .profiles import Profile
from .stats import accuracy_interval
from ..model import count_parameters
from ..train import RunResult, load_trained_model, predict, train

STRATEGIES = ("expand", "finetune", "joint")
# Relative cost of a layer per image: forward + backward for one that learns, forward alone for a frozen one.
TRAINED_LAYER_COST, FROZEN_LAYER_COST = 3, 1


@dataclass(frozen=True)
class ExpansionPlan:
    dataset: str  # the class-incremental and growth experiments' dataset
    classes_per_task: int  # classes each task brings (the dataset's classes are split in label order)
    branches_per_task: int  # depth-1 branches each task adds
    seeds: tuple[int, ...]  # training seeds
    growth_start: int  # branches of the first model of the growth experiment
    growth_step: int  # branches added at each growth step
    growth_steps: int  # number of growth steps
    growth_epochs: int  # epochs each growth step trains its new branches

    def tasks(self) -> list[tuple[int, ...]]:
        total = DATASETS[self.dataset].num_classes
        if total % self.classes_per_task:
            raise ConfigError(f"ExpansionPlan.classes_per_task={self.classes_per_task} does not divide the "
                              f"{total} classes of {self.dataset}")
        return [tuple(range(start, start + self.classes_per_task)) for start in range(0, total, self.classes_per_task)]


PLANS = {
    "ci": ExpansionPlan("fashion_mnist", 2, 1, (0,), growth_start=1, growth_step=1, growth_steps=2, growth_epochs=2),
    # CIFAR-10 in 5 tasks of 2 classes, two branches per task (10 branches at the end): the common small split,
    # sized like the quick profile's other runs (250 training images per class).
    "quick": ExpansionPlan("cifar10", 2, 2, (0, 1, 2), growth_start=2, growth_step=2, growth_steps=3,
                           growth_epochs=5),
    # The quick split at full CIFAR-10 scale (5,000 training images per class), one seed.
    "gpu": ExpansionPlan("cifar10", 2, 2, (0,), growth_start=2, growth_step=2, growth_steps=3, growth_epochs=10),
    # CIFAR-100 in 10 tasks of 10 classes: the usual class-incremental split; growth steps of 4 branches for 100
    # epochs each (a fifth of the paper profile's recipe) are our choice, untested at that scale.
    "paper": ExpansionPlan("cifar100", 10, 2, (0, 1, 2), growth_start=4, growth_step=4, growth_steps=3,
                           growth_epochs=100),
}


def get_plan(profile: str) -> ExpansionPlan:
    if profile not in PLANS:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {sorted(PLANS)}")
    return PLANS[profile]


def task_data_config(profile: Profile, dataset: str, classes: tuple[int, ...]) -> DataConfig:
    """The profile's subset sizes, scaled to the share of the dataset's classes that `classes` are."""
    share = len(classes) / DATASETS[dataset].num_classes
    scaled = lambda n: None if n is None else max(len(classes), round(n * share))
    return DataConfig(dataset=dataset, n_train=scaled(profile.n_train), n_test=scaled(profile.n_test), classes=classes,
                      n_test_per_epoch=scaled(profile.n_test_per_epoch))


# --- class-incremental --------------------------------------------------------------------------------

def run_class_incremental(profile: Profile, plan: ExpansionPlan, seed: int,
                          progress: bool = True) -> dict[str, list[RunResult]]:
    """For each strategy, its run after each task (cached like every run)."""
    tasks = plan.tasks()
    recipe = replace(profile.recipe, seed=seed)
    first_config = task_data_config(profile, plan.dataset, tasks[0])
    images = load_data(first_config)
    configs = [replace(profile.model_config(f"1-{plan.branches_per_task}", images), num_classes=len(tasks[0]))]
    for task in tasks[1:]:
        configs.append(configs[-1].expanded(plan.branches_per_task, len(task)))
    # Task 1 is the same run for every strategy.
    first = train(configs[0], first_config, recipe, data=images, name=f"{plan.dataset}-task1", progress=progress)
    runs = {strategy: [first] for strategy in STRATEGIES}
    for t in range(1, len(tasks)):
        data_config = task_data_config(profile, plan.dataset, tasks[t])
        for strategy, freeze in (("expand", True), ("finetune", False)):
            runs[strategy].append(train(configs[t], data_config, replace(recipe, freeze_inherited=freeze),
                                        name=f"{plan.dataset}-task{t + 1}-{strategy}", parent=runs[strategy][-1],
                                        progress=progress))
        seen = tuple(c for task in tasks[:t + 1] for c in task)
        runs["joint"].append(train(configs[t], task_data_config(profile, plan.dataset, seen), recipe,
                                   name=f"{plan.dataset}-tasks1-{t + 1}-joint", progress=progress))
    return runs


def incremental_metrics(runs: dict[str, list[RunResult]], profile: Profile, plan: ExpansionPlan,
                        recipe: Recipe) -> pd.DataFrame:
    """One row per (strategy, after task t, tested task j <= t): class- and task-incremental accuracy, and the
    number of parameters that learned in task t."""
    tasks = plan.tasks()
    tests = [load_data(task_data_config(profile, plan.dataset, task)) for task in tasks]
    rows = []
    for strategy, results in runs.items():
        for t, result in enumerate(results):
            model = load_trained_model(result)
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
    """`incremental_summary` of each seed's metrics (a `seed` column) with its `incremental_compute`, averaged over
    the seeds: one row per strategy and task, and the number of seeds."""
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
        for kind in ("class_il", "task_il"):
            if strategy == "joint":  # a new model after every task: nothing is learned sequentially to forget
                row[f"{kind}_forgetting"] = float("nan")
                continue
            drops = []
            for j in range(1, t):
                history = metrics[(metrics["strategy"] == strategy) & (metrics["task"] == j)]
                before = history[history["after_task"] < t][f"{kind}_acc"].max()
                now = history[history["after_task"] == t][f"{kind}_acc"].iloc[0]
                drops.append(before - now)
            row[f"{kind}_forgetting"] = sum(drops) / len(drops) if drops else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# --- capacity growth ------------------------------------------------------------------------------------

def run_growth(profile: Profile, plan: ExpansionPlan, seed: int, progress: bool = True) -> pd.DataFrame:
    """The grown models and the same-size models from scratch at matched compute: one row per model."""
    data_config = profile.data_config(plan.dataset)
    data = load_data(data_config)
    recipe = replace(profile.recipe, seed=seed)
    config = profile.model_config(f"1-{plan.growth_start}", data)
    n_train = len(data.train_labels)
    result = train(config, data_config, recipe, data=data, progress=progress)
    compute, seconds = TRAINED_LAYER_COST * config.num_layers * recipe.epochs, _train_seconds(result)
    tflop = run_training_flops(result, n_train=n_train) / 1e12
    grown = [(config, result, compute, seconds, tflop)]
    for _ in range(plan.growth_steps):
        old_layers, config, parent = config.num_layers, config.expanded(plan.growth_step), result
        result = train(config, data_config, replace(recipe, epochs=plan.growth_epochs, freeze_inherited=True),
                       data=data, parent=parent, name=f"{plan.dataset}-{config.name}-grown", progress=progress)
        new_layers = config.num_layers - old_layers
        compute += (FROZEN_LAYER_COST * old_layers + TRAINED_LAYER_COST * new_layers) * plan.growth_epochs
        seconds += _train_seconds(result)
        tflop += run_training_flops(result, n_train=n_train, parent=parent) / 1e12
        grown.append((config, result, compute, seconds, tflop))
    rows = [_growth_row("grown", *entry) for entry in grown]
    for config, _, compute, _, _ in grown[1:]:
        epochs = max(1, round(compute / (TRAINED_LAYER_COST * config.num_layers)))
        scratch = train(config, data_config, replace(recipe, epochs=epochs), data=data, progress=progress)
        rows.append(_growth_row("scratch", config, scratch, TRAINED_LAYER_COST * config.num_layers * epochs,
                                _train_seconds(scratch), run_training_flops(scratch, n_train=n_train) / 1e12))
    return pd.DataFrame(rows).assign(test_images=len(data.test_labels))


def _train_seconds(result: RunResult) -> float:
    return sum(h["train_seconds"] for h in result.history)


def _growth_row(path: str, config: ModelConfig, result: RunResult, compute: float, seconds: float,
                tflop: float) -> dict:
    """`compute`: layer passes per training image over the whole path; `train_seconds`: measured, likewise;
    `train_tflop`: counted training FLOPs (`flops.run_training_flops`), likewise."""
    return {"path": path, "branches": config.num_branches, "epochs": len(result.history),
            "test_acc": result.final_test_acc, "params": result.num_params, "compute": compute,
            "train_seconds": seconds, "train_tflop": tflop, "run_key": result.key, "code_digest": result.code_digest,
            "correct": result.correct()}


def final_arms(metrics: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """After the last task, each strategy's per-image correctness over every seen class's test images (tasks in
    order), told the task or not: rows (dataset, seed, label "<strategy>, task given|not given", correct) for
    `judge_claims`."""
    last = metrics[metrics["after_task"] == metrics["after_task"].max()].sort_values("task")
    rows = []
    for (strategy, seed), group in last.groupby(["strategy", "seed"], sort=False):
        for kind, words in (("task_il", "task given"), ("class_il", "task not given")):
            rows.append({"dataset": dataset, "seed": seed, "label": f"{strategy}, {words}",
                         "correct": np.concatenate(list(group[f"{kind}_correct"]))})
    return pd.DataFrame(rows)


def expansion_claims(dataset: str) -> list[AccuracyClaim]:
    """Expansion against fine-tuning everything, after the last task, with and without the task given."""
    return [AccuracyClaim(dataset, f"expand, {words}", f"finetune, {words}",
                          f"expansion beats fine-tuning everything after the last task, {words}", column="label")
            for words in ("task given", "task not given")]


def growth_arms(growth: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Grown and from-scratch models, per size and seed, as rows for `judge_claims` (label "<path> <k>")."""
    return growth.assign(dataset=dataset, label=[f"{p} {k}" for p, k in zip(growth["path"], growth["branches"])])


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


def old_task_logits_unchanged(expand_runs: list[RunResult], profile: Profile, plan: ExpansionPlan) -> tuple[bool, str]:
    """Whether the last expanded model gives task 1's test images bit-identical task-1 logits to the task-1 model
    (what "expansion never forgets" rests on), and the check in words."""
    import torch

    from ..train import prepare_batch

    old, new = load_trained_model(expand_runs[0]).eval(), load_trained_model(expand_runs[-1]).eval()
    data = load_data(task_data_config(profile, plan.dataset, plan.tasks()[0]))
    x = prepare_batch(data.test_images, data, old.config, torch.device("cpu"))
    with torch.no_grad():
        same = torch.equal(new(x)[:, :old.config.num_classes], old(x))
    return same, (f"{old.num_branches} -> {new.num_branches} branches, {old.config.num_classes} -> "
                  f"{new.config.num_classes} classes; task 1 logits on its {len(data.test_labels)} test images "
                  f"bit-identical: {same}")
