"""Profiles and the sweep tables: the paper's number sits beside ours, and the words follow the numbers."""

import pandas as pd
import pytest

from paraformer.config import ConfigError, Recipe
from paraformer.experiments import (PROFILES, compare_with_paper, convergence_summary, depth_sweep_summary,
                                    get_comparison, get_profile, paired_p_value, time_to_target, trend_summary,
                                    versus_vit_summary, versus_vit_table)
from paraformer.paper import TABLE2_LAYER_SWEEP, TABLE3_DEPTH_SWEEP, combine
from tests.test_train import toy_data


def test_every_profile_builds_valid_models_for_its_image_sizes():
    for profile in PROFILES.values():
        for size in profile.patch_size:
            data = toy_data()
            data.train_images = data.train_images[:, :, :1, :1].expand(-1, -1, size, size)
            config = profile.model_config("1-24", data)
            assert (config.num_branches, config.image_size, config.width) == (24, size, profile.width)


def test_unknown_profile_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown profile 'fast'.*'ci', 'gpu', 'paper', 'quick'"):
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


def comparison_runs(vit=(40.0, 42.0, 41.0), prefix=(43.0, 44.0, 44.5), dataset="cifar10"):
    rows = []
    for label, model, method, accs in (("ViT-6", "Para-F-6-6", "joint", vit),
                                       ("Para-F-1-6 prefix", "Para-F-1-6", "prefix", prefix)):
        for seed, acc in enumerate(accs):
            rows.append({"dataset": dataset, "label": label, "model": model, "method": method, "seed": seed,
                         "test_acc": acc, "num_params": 100, "train_seconds": 1.0, "test_images": 1000})
    return pd.DataFrame(rows)


def test_the_vit_comparison_pairs_each_seed_with_the_vit_of_the_same_seed():
    table = versus_vit_table(comparison_runs(), paper_gain=2.39)
    para = table[table["method"] == "prefix"].iloc[0]
    # per-seed differences 3.0, 2.0, 3.5: mean 2.83, std 0.76; unpaired std of the means would be larger
    assert para["ours_minus_vit"] == pytest.approx(17 / 6)
    assert para["ours_minus_vit_std"] == pytest.approx(pd.Series([3.0, 2.0, 3.5]).std())
    assert para["paper_best_gain_over_vit"] == 2.39 and pd.isna(table.iloc[0]["paper_best_gain_over_vit"])
    assert 0 < para["p_value"] < 0.05


def test_the_p_value_follows_the_paired_t_test():
    from scipy import stats
    diffs = [3.0, 2.0, 3.5]
    expected = stats.ttest_1samp(diffs, 0.0).pvalue
    assert paired_p_value(pd.Series(diffs).mean(), pd.Series(diffs).std(), 3) == pytest.approx(expected)
    assert pd.isna(paired_p_value(1.0, float("nan"), 1))


def test_the_vit_summary_says_whether_the_difference_is_significant():
    line = versus_vit_summary(versus_vit_table(comparison_runs(), 2.39), 2.39)[0]
    assert "prefix) beats it: +2.83 points, against the paper's up to +2.39" in line
    assert "(significant at 5%)" in line
    noisy = versus_vit_summary(versus_vit_table(comparison_runs(prefix=(45.0, 40.0, 40.5)), 2.39), 2.39)[0]
    assert "+0.83" in noisy and "significant" not in noisy


def test_time_to_target_finds_the_first_epoch_reaching_a_share_of_the_reference():
    curves = pd.DataFrame([
        {"dataset": "d", "label": label, "seed": 0, "epoch": e, "test_acc": acc, "train_seconds": 10.0 * e * cost}
        for label, accs, cost in (("joint", [20, 40, 50], 1), ("fast", [48, 49, 51], 2))
        for e, acc in enumerate(accs, start=1)])
    targets = time_to_target(curves, "joint", fraction=0.95).set_index("label")
    assert targets.loc["joint", "target_acc"] == pytest.approx(47.5)
    assert (targets.loc["joint", "epochs_to_target"], targets.loc["joint", "seconds_to_target"]) == (3, 30.0)
    assert (targets.loc["fast", "epochs_to_target"], targets.loc["fast", "seconds_to_target"]) == (1, 20.0)
    line = convergence_summary(targets.reset_index(), "joint")[0]
    assert "in epochs: fast; in training seconds: fast." in line


def test_every_profile_has_a_comparison_and_an_expansion_plan_that_build():
    from paraformer.data import DATASETS
    from paraformer.experiments.expansion import get_plan
    from paraformer.model import ParaFormer
    from paraformer.progressive import plan

    for name in PROFILES:
        comparison = get_comparison(name)
        for dataset in comparison.profile.datasets:
            data = toy_data()
            size = DATASETS[dataset].image_size
            data.train_images = data.train_images[:, :1, :1, :1].expand(-1, DATASETS[dataset].in_channels, size, size)
            para = comparison.profile.model_config(comparison.paraformer, data)
            vit = comparison.profile.model_config(comparison.vit, data)
            assert para.num_layers == vit.num_layers and vit.num_branches == 1
            small = ParaFormer(para.with_branches(para.num_branches, width=8, num_heads=1))
            for method in ("joint", "authors", "prefix", "frozen"):
                plan(small, Recipe(epochs=comparison.profile.recipe.epochs, method=method))
        expansion = get_plan(name)
        assert len(expansion.tasks()) >= 2 and expansion.dataset in DATASETS
    assert get_comparison("quick").profile.seeds == (0, 1, 2)  # the issue asks for at least 3 seeds at quick


def depth_rows(accs: dict, dataset="cifar10") -> pd.DataFrame:
    return pd.DataFrame([{"dataset": dataset, "model": f"Para-F-{name}", "branch_depth": int(name.split("-")[0]),
                          "num_layers": int(name.split("-")[1]), "seed": 0, "test_images": 1000, "test_acc": acc,
                          "num_params": 1, "train_seconds": 1.0} for name, acc in accs.items()])


def test_the_depth_findings_are_read_from_both_sweeps_against_test_set_noise():
    paper = combine(TABLE2_LAYER_SWEEP, TABLE3_DEPTH_SWEEP)
    assert paper["cifar10"]["Para-F-1-24"] == 71.53 and paper["cifar10"]["Para-F-6-6"] == 79.39
    # noise at ~50% and 1000 test images: about 4.5 points
    table = compare_with_paper(depth_rows({"1-24": 45.0, "6-6": 56.0, "2-24": 50.0, "3-24": 47.0, "6-24": 52.0}),
                               paper)
    (line,) = depth_sweep_summary(table, paper)
    assert "in 2 of 3 cases" in line and "3-24 is within noise of 1-24 (+2.0)" in line
    assert "6-6 beats 2-24 (+6.0) [paper +4.6]" in line
    assert "In our run finding (1) fails and finding (2) holds." in line
    (missing,) = depth_sweep_summary(compare_with_paper(depth_rows({"1-24": 45.0}), paper), paper)
    assert "needs Para-F-1-24, Para-F-6-6" in missing
