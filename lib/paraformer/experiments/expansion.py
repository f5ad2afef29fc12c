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

import pandas as pd

from ..config import ConfigError, DataConfig, ModelConfig, Recipe
from ..data import DATASETS, load_data
from .profiles import Profile
from .stats import difference_noise
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
    "quick": ExpansionPlan("cifar10", 2, 2, (0,), growth_start=2, growth_step=2, growth_steps=3, growth_epochs=5),
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
    return DataConfig(dataset=dataset, n_train=scaled(profile.n_train), n_test=scaled(profile.n_test), classes=classes)


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
                rows.append({"strategy": strategy, "after_task": t + 1, "task": j + 1,
                             "class_il_acc": 100.0 * (every == data.test_labels).float().mean().item(),
                             "task_il_acc": 100.0 * (own + low == data.test_labels).float().mean().item(),
                             "trained_params": learned})
    return pd.DataFrame(rows)


def incremental_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and task t: average accuracy over the classes seen so far, and average forgetting."""
    rows = []
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
    result = train(config, data_config, recipe, data=data, progress=progress)
    compute, seconds = TRAINED_LAYER_COST * config.num_layers * recipe.epochs, _train_seconds(result)
    grown = [(config, result, compute, seconds)]
    for _ in range(plan.growth_steps):
        old_layers, config = config.num_layers, config.expanded(plan.growth_step)
        result = train(config, data_config, replace(recipe, epochs=plan.growth_epochs, freeze_inherited=True),
                       data=data, parent=result, name=f"{plan.dataset}-{config.name}-grown", progress=progress)
        new_layers = config.num_layers - old_layers
        compute += (FROZEN_LAYER_COST * old_layers + TRAINED_LAYER_COST * new_layers) * plan.growth_epochs
        seconds += _train_seconds(result)
        grown.append((config, result, compute, seconds))
    rows = [_growth_row("grown", *entry) for entry in grown]
    for config, _, compute, _ in grown[1:]:
        epochs = max(1, round(compute / (TRAINED_LAYER_COST * config.num_layers)))
        scratch = train(config, data_config, replace(recipe, epochs=epochs), data=data, progress=progress)
        rows.append(_growth_row("scratch", config, scratch, TRAINED_LAYER_COST * config.num_layers * epochs,
                                _train_seconds(scratch)))
    return pd.DataFrame(rows).assign(test_images=len(data.test_labels))


def _train_seconds(result: RunResult) -> float:
    return sum(h["train_seconds"] for h in result.history)


def _growth_row(path: str, config: ModelConfig, result: RunResult, compute: float, seconds: float) -> dict:
    """`compute`: layer passes per training image over the whole path; `train_seconds`: measured, likewise."""
    return {"path": path, "branches": config.num_branches, "epochs": len(result.history),
            "test_acc": result.final_test_acc, "params": result.num_params, "compute": compute,
            "train_seconds": seconds, "run_key": result.key, "code_digest": result.code_digest}


def expansion_summary(summary: pd.DataFrame, growth: pd.DataFrame) -> list[str]:
    """In words, from the seed-mean tables: what expansion keeps and loses against fine-tuning and joint
    training, and whether growing a model beats training the larger one from scratch at the same compute."""
    last = summary[summary["after_task"] == summary["after_task"].max()].set_index("strategy")
    t = int(summary["after_task"].max())
    acc = lambda s, kind: last.loc[s, f"avg_{kind}_acc"]
    lines = [
        f"**Class-incremental, after all {t} tasks** (accuracy over every class seen, task not given): expand "
        f"{acc('expand', 'class_il'):.1f}%, fine-tune {acc('finetune', 'class_il'):.1f}%, joint (upper bound) "
        f"{acc('joint', 'class_il'):.1f}%. Forgetting (best earlier accuracy minus final, mean over earlier tasks): "
        f"expand {last.loc['expand', 'class_il_forgetting']:.1f}, fine-tune {last.loc['finetune', 'class_il_forgetting']:.1f} points.",
        f"**Told the task** (task-incremental): expand {acc('expand', 'task_il'):.1f}% with forgetting "
        f"{last.loc['expand', 'task_il_forgetting']:.1f} (its old heads read only old, frozen branches, so their "
        f"logits cannot change), fine-tune {acc('finetune', 'task_il'):.1f}% with forgetting "
        f"{last.loc['finetune', 'task_il_forgetting']:.1f}, joint {acc('joint', 'task_il'):.1f}%.",
    ]
    grown = growth[growth["path"] == "grown"].set_index("branches")
    scratch = growth[growth["path"] == "scratch"].set_index("branches")
    parts = [f"{k} branches: grown {grown.loc[k, 'test_acc']:.1f}% ({grown.loc[k, 'train_seconds']:.1f} s) vs scratch "
             f"{scratch.loc[k, 'test_acc']:.1f}% ({scratch.loc[k, 'train_seconds']:.1f} s, {scratch.loc[k, 'epochs']:.0f} epochs)"
             for k in scratch.index]
    wins = sum(grown.loc[k, "test_acc"] > scratch.loc[k, "test_acc"] for k in scratch.index)
    gaps = [grown.loc[k, "test_acc"] - scratch.loc[k, "test_acc"] for k in scratch.index]
    n = int(growth["test_images"].iloc[0] * growth["seeds"].iloc[0])
    noise = difference_noise(growth["test_acc"].mean(), n)
    lines.append("**Capacity growth** (matched training compute; measured training seconds in brackets): "
                 + "; ".join(parts) + f". Growing beats training from scratch at {wins} of {len(scratch)} sizes, by "
                 f"{min(gaps):+.1f} to {max(gaps):+.1f} points; with {n} test predictions per model a difference must "
                 f"exceed about {noise:.1f} points to stand out from test-set noise, which "
                 + ("all of them do." if min(map(abs, gaps)) > noise else
                    "none of them does." if max(map(abs, gaps)) <= noise else "only some of them do."))
    return lines
