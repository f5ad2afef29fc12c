"""The expansion protocols: task splits, the data each task sees, and how forgetting is counted."""

import pandas as pd
import pytest

from paraformer.config import ConfigError
from paraformer.experiments.expansion import ExpansionPlan, get_plan, incremental_summary, task_data_config
from paraformer.experiments import get_profile


def test_tasks_split_the_classes_in_label_order():
    assert get_plan("quick").tasks() == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert len(get_plan("paper").tasks()) == 10
    with pytest.raises(ConfigError, match="classes_per_task=3 does not divide the 10 classes"):
        ExpansionPlan("cifar10", 3, 1, (0,), 1, 1, 1, 1).tasks()


def test_a_task_sees_its_share_of_the_profiles_images():
    config = task_data_config(get_profile("quick"), "cifar10", (2, 3))
    assert (config.n_train, config.n_test, config.classes) == (500, 200, (2, 3))  # 2500 and 1000 for 10 classes
    assert task_data_config(get_profile("paper"), "cifar100", tuple(range(10))).n_train is None


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
