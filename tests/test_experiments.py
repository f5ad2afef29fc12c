"""Profiles and the sweep tables: the paper's number sits beside ours, and the words follow the numbers."""

import pandas as pd
import pytest

from paraformer.config import ConfigError
from paraformer.experiments import PROFILES, compare_with_paper, get_profile, trend_summary
from paraformer.paper import TABLE2_LAYER_SWEEP
from tests.test_train import toy_data


def test_every_profile_builds_valid_models_for_its_image_sizes():
    for profile in PROFILES.values():
        for size in profile.patch_size:
            data = toy_data()
            data.train_images = data.train_images[:, :, :1, :1].expand(-1, -1, size, size)
            config = profile.model_config("1-24", data)
            assert (config.num_branches, config.image_size, config.width) == (24, size, profile.width)


def test_unknown_profile_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown profile 'fast'.*'ci', 'paper', 'quick'"):
        get_profile("fast")


def runs(accs, dataset="cifar10", seeds=(0,)):
    rows = []
    for (layers, acc) in zip((1, 6, 12, 24), accs):
        for seed in seeds:
            rows.append({"dataset": dataset, "model": f"Para-F-1-{layers}", "branch_depth": 1, "num_layers": layers,
                         "seed": seed, "test_images": 1000, "test_acc": acc + seed, "num_params": layers,
                         "train_seconds": 1.0})
    return pd.DataFrame(rows)


def test_the_table_puts_the_papers_number_beside_ours():
    table = compare_with_paper(runs([40, 41, 42, 43], seeds=(0, 2)), TABLE2_LAYER_SWEEP)
    row = table[table["model"] == "Para-F-1-24"].iloc[0]
    assert row["paper_acc"] == 71.53 and row["our_acc"] == 44.0 and row["seeds"] == 2
    assert row["ours_minus_paper"] == pytest.approx(44.0 - 71.53)
    assert row["our_acc_std"] == pytest.approx(2 ** 0.5)


def test_a_dataset_the_paper_lacks_has_an_empty_paper_cell():
    table = compare_with_paper(runs([70, 71, 72, 73], dataset="fashion_mnist"), TABLE2_LAYER_SWEEP)
    assert table["paper_acc"].isna().all()
    assert "no number for this dataset" in trend_summary(table)[0]


def test_the_trend_summary_says_what_the_numbers_show():
    rising = trend_summary(compare_with_paper(runs([40, 41, 42, 43]), TABLE2_LAYER_SWEEP))[0]
    assert "rises at every step" in rising and "+3.0 points overall" in rising
    # standard error sqrt(0.415 * 0.585 / 1000) = 1.56 points; a difference needs 2 * sqrt(2) * 1.56 = 4.4
    assert "must exceed about 4.4 points" in rising and "+3.0 points does not" in rising
    clear = trend_summary(compare_with_paper(runs([40, 42, 45, 50]), TABLE2_LAYER_SWEEP))[0]
    assert "+10.0 points does." in clear
    mixed = trend_summary(compare_with_paper(runs([40, 39, 42, 41]), TABLE2_LAYER_SWEEP))[0]
    assert "rises at 1 of 3 steps" in mixed
