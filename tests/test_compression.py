"""Compression: kept branches are chosen on validation only, measured on the real smaller model, and sized right."""

import pandas as pd
import pytest
import torch

from paraformer.experiments.compression import compression_table, forward_flops, smallest_within
from paraformer.core.config import ConfigError, DataConfig, ModelConfig, Recipe
from paraformer.core.runcache import load_trained_model
from paraformer.training import train
from paraformer.training.evaluation import evaluate
from tests.test_train import toy_data

MODEL = ModelConfig(image_size=16, patch_size=4, width=32, num_heads=2, mlp_ratio=2.0, branch_depth=1,
                    num_layers=4, num_classes=4)
RECIPE = Recipe(epochs=2, batch_size=16, lr=3e-3, warmup_epochs=0.5, augment=(), seed=0, method="prefix")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-branch model trained on toy data, and that data with a validation split carved from the test images."""
    data, root = toy_data(n_train=96, n_test=96), tmp_path_factory.mktemp("runs")
    result = train(MODEL, DataConfig(dataset="toy"), RECIPE, data=data, results_root=root, progress=False)
    data.val_images, data.val_labels = data.test_images[:48], data.test_labels[:48]
    data.test_images, data.test_labels = data.test_images[48:], data.test_labels[48:]
    return load_trained_model(result, root), data


def test_every_subset_size_is_measured_on_the_smaller_model(trained):
    model, data = trained
    table = compression_table(model, data, RECIPE)
    assert len(table) == 2 * 4 and set(table["selection"]) == {"prefix", "greedy"}
    for _, row in table[table["selection"] == "prefix"].iterrows():
        k = row["branches_kept"]
        assert row["test_acc"] == evaluate(model, data.test_images, data.test_labels, data, RECIPE, num_branches=k)
        assert row["params"] == model.num_parameters(k)
        assert row["branch_ratio"] == 4 / k
    full = table[table["branches_kept"] == 4]
    assert (full["param_ratio"] == 1).all() and (full["flops_ratio"] == 1).all()
    one = table[(table["selection"] == "prefix") & (table["branches_kept"] == 1)].iloc[0]
    assert 1 < one["param_ratio"] < 4 and 1 < one["flops_ratio"] < 4  # the stem and head are kept


def test_greedy_selection_never_looks_at_the_test_split(trained):
    model, data = trained
    before = compression_table(model, data, RECIPE)
    labels = data.test_labels
    data.test_labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    try:
        after = compression_table(model, data, RECIPE)
    finally:
        data.test_labels = labels
    assert not after["test_acc"].equals(before["test_acc"])  # the scrambled labels did reach the test measurement
    greedy = lambda t: t[t["selection"] == "greedy"]["branches"].tolist()
    assert greedy(after) == greedy(before)
    subsets = [s.split() for s in greedy(before)]
    assert all(a == b[:len(a)] for a, b in zip(subsets, subsets[1:]))  # each adds one branch to the last


def test_compression_needs_a_validation_split(trained):
    model, data = trained
    empty = toy_data()
    with pytest.raises(ConfigError, match="val_fraction > 0"):
        compression_table(model, empty, RECIPE)


def test_flops_grow_with_the_branches_kept(trained):
    model, _ = trained
    flops = [forward_flops(model.select_branches(list(range(k)))) for k in (1, 2, 3, 4)]
    per_branch = {b - a for a, b in zip(flops, flops[1:])}
    assert len(per_branch) == 1 and per_branch.pop() > 0  # every branch costs the same


def test_the_headline_is_the_fewest_branches_within_tolerance_on_validation():
    table = pd.DataFrame({"selection": ["prefix"] * 4, "branches_kept": [1, 2, 3, 4],
                          "val_acc": [70.0, 79.5, 80.5, 80.2], "test_acc": [69.0, 75.0, 81.0, 80.0]})
    pick = smallest_within(table, tolerance=1.0).iloc[0]
    assert pick["branches_kept"] == 2  # 79.5 >= 80.2 - 1, chosen on validation although its test is worse
    assert (pick["full_val_acc"], pick["full_test_acc"]) == (80.2, 80.0)


def means_table(ratios=(4.0, 2.0, 1.33, 1.0)) -> pd.DataFrame:
    rows = []
    for method in ("joint", "authors"):
        for k, ratio in zip((1, 2, 3, 4), ratios):
            rows.append({"dataset": "d", "method": method, "selection": "prefix", "branches_kept": k,
                         "layers_kept": k, "param_ratio": ratio, "val_acc": 50.0 + k, "test_acc": 50.0 + k})
    return pd.DataFrame(rows)


def test_the_papers_ratio_is_not_testable_where_the_model_cannot_shrink_that_far():
    from paraformer.experiments.compression import best_compression_verdict

    means = means_table()
    picks = means[means["branches_kept"] == 2]
    verdict = best_compression_verdict(picks, means, 15.07)
    assert verdict.verdict == "not testable here" and verdict.paper == 15.07
    far = means_table(ratios=(20.0, 10.0, 5.0, 1.0))
    assert best_compression_verdict(far[far["branches_kept"] == 1], far, 15.07).verdict == "supported"
    assert best_compression_verdict(far[far["branches_kept"] == 2], far, 15.07).verdict == "contradicted"


def test_the_compression_claims_pair_kept_models_with_the_full_one_joints_first_branch_and_a_vit():
    from paraformer.experiments.compression import compression_claims

    means = means_table()
    picks = means[(means["branches_kept"] == 2)].assign(param_ratio=2.0)
    claims = compression_claims(means, picks, vit_layers=[1, 2], tolerance=1.0)
    pairs = [(c.better, c.worse, c.threshold) for c in claims]
    assert ("authors prefix 2/4", "authors prefix 4/4", -1.0) in pairs  # loses under 1 point: difference > -1
    assert ("authors prefix 1/4", "joint prefix 1/4", 0.0) in pairs
    assert ("joint prefix 1/4", "ViT-1 from scratch", 0.0) in pairs
    assert all(c.column == "label" and c.dataset == "d" for c in claims) and len(claims) == 2 + 1 + 2


def test_each_kept_size_carries_its_full_models_training_cost_and_the_same_size_vits():
    from paraformer.experiments.compression import compression_means

    rows = []
    for seed, tflop in ((0, 2.0), (1, 4.0)):
        for k in (1, 2):
            correct = [True, seed == 0, k == 2, False]
            rows.append({"dataset": "d", "method": "joint", "selection": "prefix", "branches_kept": k,
                         "layers_kept": 2 * k, "params": 10 * k, "param_ratio": 2.0 / k, "branch_ratio": 2.0 / k,
                         "flops_ratio": 2.0 / k, "val_acc": 50.0, "correct": correct, "seed": seed,
                         "branches": "0", "train_tflop": tflop})
    vit_runs = pd.DataFrame({"dataset": ["d", "d"], "num_layers": [2, 2], "test_acc": [40.0, 44.0],
                             "train_tflop": [0.5, 0.7]})
    means = compression_means(pd.DataFrame(rows), vit_runs).set_index("branches_kept")
    assert means["train_tflop"].tolist() == [3.0, 3.0]  # the full model's runs, mean over seeds, for every size
    # one branch of depth 2 stands beside ViT-2
    assert means.loc[1, ["vit_same_size_acc", "vit_same_size_tflop"]].tolist() == pytest.approx([42.0, 0.6])
    assert means.loc[2, ["vit_same_size_acc", "vit_same_size_tflop"]].isna().all()  # no ViT-4 was trained
    assert means["test_acc"].tolist() == pytest.approx([37.5, 62.5])


def test_the_overview_has_a_row_per_method_and_a_column_per_number_of_kept_branches():
    from paraformer.experiments.compression import compression_overview

    overview = compression_overview(means_table())
    assert list(overview.columns) == ["dataset", "method", "selection", "1/4", "2/4", "3/4", "4/4"]
    assert overview.set_index("method").loc["authors", ["1/4", "4/4"]].tolist() == [51.0, 54.0]
