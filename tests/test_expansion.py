"""The expansion protocols: task splits, the data each task sees, and how forgetting is counted."""

from dataclasses import asdict, replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from paraformer.core.config import ConfigError, DataConfig, ModelConfig, Recipe
from paraformer.core.data import ImageData
from paraformer.core.flops import stage_flops, training_flops_per_image
from paraformer.core.model import ParaFormer, count_parameters
from paraformer.core.runcache import RunResult, load_trained_model
from paraformer.experiments import expansion
from paraformer.experiments import plan as plans
from paraformer.experiments.expansion import incremental_summary, task_data_config
from paraformer.experiments.profiles import get_profile
from paraformer.experiments.settings import ExpansionPlan, Scale
from tests.test_train import toy_data


def test_tasks_split_the_classes_in_label_order():
    assert get_profile("quick").expansion.tasks() == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert len(get_profile("paper").expansion.tasks()) == 10
    with pytest.raises(ConfigError, match="classes_per_task=3 does not divide the 10 classes"):
        ExpansionPlan("cifar10", 3, 1, (0,), 1, 1, 1, 1).tasks()


def test_a_task_sees_its_share_of_the_profiles_images():
    config = task_data_config(get_profile("quick").scale, "cifar10", (2, 3))
    # quick: 2500 training images for 10 classes, every test image, 1000 of them for the per-epoch curves
    assert (config.n_train, config.n_test, config.n_test_per_epoch, config.classes) == (500, None, 200, (2, 3))
    assert task_data_config(get_profile("paper").scale, "cifar100", tuple(range(10))).n_train is None


def metrics(rows):
    return pd.DataFrame([{"strategy": s, "after_task": t, "task": j, "class_il_acc": c, "task_il_acc": k,
                          "trained_params": 10} for s, t, j, c, k in rows])


def test_forgetting_is_the_best_earlier_accuracy_minus_the_current_one():
    table = metrics([
        ("finetune", 1, 1, 90, 90),
        ("finetune", 2, 1, 30, 60), ("finetune", 2, 2, 80, 85),
        ("finetune", 3, 1, 50, 70), ("finetune", 3, 2, 20, 40), ("finetune", 3, 3, 70, 90),
    ])
    summary = incremental_summary(table).set_index("after_task")
    assert pd.isna(summary.loc[1, "class_il_forgetting"])
    assert summary.loc[2, "class_il_forgetting"] == 60  # task 1: 90 -> 30
    # after task 3: task 1 best 90 now 50 (40), task 2 best 80 now 20 (60): mean 50
    assert summary.loc[3, "class_il_forgetting"] == 50
    assert summary.loc[3, "task_il_forgetting"] == (20 + 45) / 2
    assert summary.loc[3, "avg_class_il_acc"] == pytest.approx(140 / 3)


def test_forgetting_is_not_counted_for_joint_training_which_starts_afresh_each_time():
    table = metrics([("joint", 1, 1, 90, 90), ("joint", 2, 1, 70, 88), ("joint", 2, 2, 75, 90)])
    assert incremental_summary(table)["class_il_forgetting"].isna().all()


# --- the growth runs and incremental_metrics on tiny in-memory data -----------------------------------------


TOY_SCALE = Scale(name="toy", datasets=("toy",), n_train=None, n_test=None, width=16, num_heads=2, mlp_ratio=2.0,
                  dropout=0.0, patch_size={16: 4},
                  recipe=Recipe(epochs=2, batch_size=16, lr=3e-3, warmup_epochs=0.5, augment=(), seed=0))
# 1 branch, then 2 growth steps of 1 branch, 2 epochs each
GROWTH = ExpansionPlan("toy", 2, 1, (0,), growth_start=1, growth_step=1, growth_steps=2, growth_epochs=2)


def test_growth_trains_only_the_new_branches_and_matches_the_scratch_baselines_compute(tmp_path, monkeypatch):
    data = toy_data(n_train=48)
    monkeypatch.setattr(plans, "load_data", lambda config: data)
    monkeypatch.setattr(expansion, "data_shape", lambda config: data)  # (toy data have no registry entry)
    trained = plans.execute(expansion.growth_plan(TOY_SCALE, GROWTH, seed=0), tmp_path, progress=False)
    table = expansion.growth_rows(trained, GROWTH)
    runs = [(t.planned.model, t.planned.recipe, t.planned.parent, t.result) for t in trained]

    # compute in layer passes per image: 3 per trained layer, 1 per frozen one, per epoch
    grown = [3 * 1 * 2, 3 * 1 * 2 + (1 * 1 + 3 * 1) * 2, 3 * 1 * 2 + (1 * 1 + 3 * 1) * 2 + (1 * 2 + 3 * 1) * 2]
    assert grown == [6, 14, 24]
    scratch_epochs = [round(14 / (3 * 2)), round(24 / (3 * 3))]  # 2.33 -> 2 and 2.67 -> 3
    assert scratch_epochs == [2, 3]
    rows = table[["path", "branches", "epochs", "compute"]].to_records(index=False).tolist()
    assert rows == [("grown", 1, 2, 6), ("grown", 2, 2, 14), ("grown", 3, 2, 24),
                    ("scratch", 2, 2, 3 * 2 * 2), ("scratch", 3, 3, 3 * 3 * 3)]
    assert table["test_images"].tolist() == [48] * 5
    assert table["params"].tolist() == [count_parameters(c) for c, *_ in runs]

    # counted FLOPs along the grown path: the first model's training, then each step's new branches alone
    (first, _, _, _), (two, _, _, _), (three, _, _, _) = runs[:3]
    per_run = [training_flops_per_image(first) * 48 * 2,
               stage_flops(two, "joint", first, True)[0][1] * 48 * 2,
               stage_flops(three, "joint", two, True)[0][1] * 48 * 2]
    assert per_run[1] < training_flops_per_image(two) * 48 * 2  # the frozen branch gets no backward pass
    scratch = [training_flops_per_image(two) * 48 * 2, training_flops_per_image(three) * 48 * 3]
    expected = [per_run[0], per_run[0] + per_run[1], sum(per_run), *scratch]
    assert table["train_tflop"].tolist() == pytest.approx([f / 1e12 for f in expected])

    # the runs: the first model, each growth step from the previous one, then the baselines from scratch
    assert [(c.num_branches, r.epochs, r.freeze_inherited, p is not None) for c, r, p, _ in runs] == [
        (1, 2, False, False), (2, 2, True, True), (3, 2, True, True), (2, 2, False, False), (3, 3, False, False)]
    assert trained[1].planned.parent == trained[0].planned and trained[2].planned.parent == trained[1].planned
    assert [t.result.config.get("parent", {}).get("key") for t in trained[:3]] == [None, runs[0][3].key,
                                                                                  runs[1][3].key]
    for before, after in ((runs[0][3], runs[1][3]), (runs[1][3], runs[2][3])):
        old = load_trained_model(before, tmp_path).state_dict()
        new = load_trained_model(after, tmp_path).state_dict()
        inherited = [k for k in new if k in old]
        assert inherited and all(torch.equal(old[k], new[k]) for k in inherited)
        torch.manual_seed(TOY_SCALE.recipe.seed)  # as train() draws the grown model's fresh weights
        untrained = ParaFormer(after.model_config).state_dict()
        fresh = [k for k in new if k not in old]
        assert fresh and all(not torch.equal(new[k], untrained[k]) for k in fresh)


# A fabricated class-incremental case: CIFAR-10 in two tasks of 5 classes, four test images per task. Each "model"
# answers from a table: for image i, the class it ranks first among all it knows, and the class of the image's own
# task it ranks first when told the task.
TASK_IMAGES = {(0, 1, 2, 3, 4): [(0, 0), (1, 1), (2, 2), (3, 3)],  # (image id, label)
               (5, 6, 7, 8, 9): [(4, 5), (5, 6), (6, 7), (7, 8)]}


def fabricated_data(data_config):
    ids, labels = zip(*TASK_IMAGES[data_config.classes])
    images = torch.tensor(ids, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    empty = torch.empty(0, 1, 4, 4, dtype=torch.uint8)
    return ImageData(name="fabricated", train_images=empty, train_labels=torch.empty(0, dtype=torch.long),
                     val_images=empty, val_labels=torch.empty(0, dtype=torch.long), test_images=images,
                     test_labels=torch.tensor(labels), classes=[str(c) for c in range(10)], mean=(0.0,), std=(1.0,),
                     source="synthetic")


class TableModel(torch.nn.Module):
    """Logits 2 for the image's first choice among all classes, 1 for its first choice in its own task, else 0."""

    def __init__(self, classes: int, first: list[int], in_task: list[int]):
        super().__init__()
        self.config = SimpleNamespace(image_size=4)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # (predict reads the device from the parameters)
        self.classes, self.first, self.in_task = classes, first, in_task

    def forward(self, x):
        ids = (x[:, 0, 0, 0] * 255).round().long()
        logits = torch.zeros(len(ids), self.classes)
        for row, i in enumerate(ids.tolist()):
            logits[row, self.in_task[i]] = 1.0
            logits[row, self.first[i]] = 2.0
        return logits


def fabricated_result(name: str, model: ModelConfig, freeze_inherited: bool) -> RunResult:
    return RunResult(name=name, key=name, config={"model": asdict(model), "recipe": {"freeze_inherited": freeze_inherited}},
                     history=[], final_test_acc=0.0, num_params=0, wall_seconds=0.0, device="cpu", data_source="-",
                     code_version="-", torch_version="-", finished_at="-")


def test_incremental_metrics_count_class_and_task_accuracy_and_what_learned(monkeypatch):
    plan = ExpansionPlan("cifar10", 5, 1, (0,), 1, 1, 1, 1)
    first = ModelConfig(image_size=4, patch_size=2, width=8, num_heads=1, num_branches=1, num_classes=5)
    second = first.expanded(1, 5)
    runs = {"expand": [fabricated_result("task1", first, False), fabricated_result("expand2", second, True)],
            "finetune": [fabricated_result("task1", first, False), fabricated_result("finetune2", second, False)],
            "joint": [fabricated_result("task1", first, False), fabricated_result("joint2", second, False)]}
    answers = {  # image ids 0-7: the first choice overall, the first choice in the image's own task
        "task1": TableModel(5, [0, 1, 4, 4], [0, 1, 2, 0]),
        "expand2": TableModel(10, [0, 1, 6, 4, 5, 2, 7, 9], [0, 1, 2, 3, 5, 6, 7, 8]),
        "finetune2": TableModel(10, [5, 5, 5, 3, 5, 6, 7, 8], [0, 0, 2, 3, 5, 6, 7, 8]),
        "joint2": TableModel(10, [0, 1, 2, 3, 5, 6, 7, 8], [0, 1, 2, 3, 5, 6, 7, 8]),
    }
    monkeypatch.setattr(expansion, "load_data", fabricated_data)
    monkeypatch.setattr(expansion, "load_trained_model", lambda result, folder: answers[result.name])
    table = expansion.incremental_metrics(runs, TOY_SCALE, plan, Recipe(), folder=None)

    with torch.device("meta"):
        old_names = {n for n, _ in ParaFormer(first).named_parameters()}
        new_params = sum(p.numel() for n, p in ParaFormer(second).named_parameters() if n not in old_names)
    everything_first, everything_second = count_parameters(first), count_parameters(second)
    assert new_params == everything_second - everything_first > 0
    got = table[["strategy", "after_task", "task", "class_il_acc", "task_il_acc", "trained_params"]]
    assert got.to_records(index=False).tolist() == [
        # after task 1 there is one task: told it or not, the same 5 classes; images 0 and 1 right
        ("expand", 1, 1, 50.0, 50.0, everything_first),
        # task 1: 0, 1 right; image 2's first choice (6) is not of its task, told the task it says 2 (right)
        ("expand", 2, 1, 50.0, 75.0, new_params),
        ("expand", 2, 2, 50.0, 75.0, new_params),  # 5, 7 right; image 5 says 2, told the task 6 (right)
        ("finetune", 1, 1, 50.0, 50.0, everything_first),
        ("finetune", 2, 1, 25.0, 75.0, everything_second),  # only image 3 right; told the task, all but image 1
        ("finetune", 2, 2, 100.0, 100.0, everything_second),
        ("joint", 1, 1, 50.0, 50.0, everything_first),
        ("joint", 2, 1, 100.0, 100.0, everything_second),
        ("joint", 2, 2, 100.0, 100.0, everything_second),
    ]
    summary = incremental_summary(table).set_index(["strategy", "after_task"])
    assert summary.loc[("expand", 2), "class_il_forgetting"] == 50.0 - 50.0
    assert summary.loc[("expand", 2), "task_il_forgetting"] == 50.0 - 75.0  # task 1 got better
    assert summary.loc[("finetune", 2), "class_il_forgetting"] == 50.0 - 25.0
    assert summary.loc[("finetune", 2), "avg_class_il_acc"] == (25.0 + 100.0) / 2
    assert pd.isna(summary.loc[("joint", 2), "class_il_forgetting"])


def test_after_the_last_task_each_strategy_is_scored_on_every_seen_class_in_task_order():
    from paraformer.experiments.expansion import expansion_claims, final_arms

    rows = []
    for strategy in ("expand", "finetune"):
        for task in (1, 2):
            for after in (1, 2) if task == 1 else (2,):
                rows.append({"strategy": strategy, "after_task": after, "task": task, "seed": 0,
                             "class_il_correct": np.array([strategy == "expand", task == 2]),
                             "task_il_correct": np.array([True, task == 1])})
    arms = final_arms(pd.DataFrame(rows), "cifar10").set_index("label")
    assert arms.loc["expand, task not given", "correct"].tolist() == [True, False, True, True]  # task 1, then 2
    assert arms.loc["finetune, task given", "correct"].tolist() == [True, True, True, False]
    assert [(c.better, c.worse) for c in expansion_claims("cifar10")] == [
        ("expand, task given", "finetune, task given"), ("expand, task not given", "finetune, task not given")]


def test_the_compute_behind_each_strategy_adds_up_its_tasks_except_joint_which_starts_afresh():
    first = ModelConfig(image_size=32, patch_size=8, width=16, num_heads=2, num_branches=1, num_classes=5)
    second = first.expanded(1, 5)
    recipe = Recipe(epochs=3)

    def run(name, model, freeze, classes):
        data = DataConfig(dataset="cifar10", n_train=100, classes=classes)
        return RunResult(name=name, key=name, config={"model": asdict(model), "data": asdict(data),
                                                      "recipe": asdict(replace(recipe, freeze_inherited=freeze))},
                         history=[], final_test_acc=0.0, num_params=0, wall_seconds=0.0, device="cpu",
                         data_source="-", code_version="-", torch_version="-", finished_at="-")

    task1, task2 = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
    runs = {"expand": [run("t1", first, False, task1), run("e2", second, True, task2)],
            "finetune": [run("t1", first, False, task1), run("f2", second, False, task2)],
            "joint": [run("t1", first, False, task1), run("j2", second, False, task1 + task2)]}
    table = expansion.incremental_compute(runs).set_index(["strategy", "after_task"])["train_tflop"]
    task1_flops = training_flops_per_image(first) * 100 * 3
    new_parts = stage_flops(second, "joint", first, True)[0][1] * 100 * 3
    everything = training_flops_per_image(second) * 100 * 3
    assert table.loc[("expand", 1)] == table.loc[("joint", 1)] == pytest.approx(task1_flops / 1e12)
    assert table.loc[("expand", 2)] == pytest.approx((task1_flops + new_parts) / 1e12)
    assert table.loc[("finetune", 2)] == pytest.approx((task1_flops + everything) / 1e12)
    assert table.loc[("joint", 2)] == pytest.approx(everything / 1e12)


def test_the_report_gets_both_expansion_claims_and_the_task_given_one_says_it_holds_by_construction():
    from paraformer.experiments.accuracy import judge_claims
    from paraformer.experiments.expansion import BY_CONSTRUCTION, Findings, expansion_claims

    # expansion told the task keeps every old answer (100%), fine-tuning loses some; untold, both near chance
    images, rng = 400, np.random.default_rng(0)
    rows = [{"dataset": "cifar10", "seed": seed, "label": label, "correct": correct}
            for seed in (0, 1, 2) for label, correct in [
                ("expand, task given", np.ones(images, bool)), ("finetune, task given", rng.random(images) < 0.7),
                ("expand, task not given", rng.random(images) < 0.14),
                ("finetune, task not given", rng.random(images) < 0.13)]]
    claims = expansion_claims("cifar10")
    verdicts = judge_claims(pd.DataFrame(rows), claims)
    found = Findings(pd.DataFrame(), claims, verdicts, pd.DataFrame(), [], [])
    assert [v.claim for v in found.report_verdicts] == [c.claim for c in claims]  # task given and not given
    assert found.by_construction == [BY_CONSTRUCTION, None]  # a field beside the verdict, not in the claim's words
    assert found.sources == ["ours", "ours"]
    assert [v.verdict for v in found.report_verdicts][0] == "supported"
