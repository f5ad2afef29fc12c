"""Profiles and the sweep tables: the paper's number sits beside ours, and the words follow the numbers."""

import numpy as np
import pandas as pd
import pytest

from paraformer.core.config import ConfigError, Recipe
from paraformer.experiments.accuracy import compare_with_paper, judge_claims
from paraformer.experiments.depth_sweep import claims as depth_sweep_claims, depth_findings
from paraformer.experiments.layer_sweep import claims as layer_sweep_claims
from paraformer.experiments.paper import TABLE2_LAYER_SWEEP, TABLE3_DEPTH_SWEEP, combine
from paraformer.experiments.profiles import PROFILES, get_profile
from paraformer.experiments.versus_vit import time_to_target, versus_vit_claims, versus_vit_table
from tests.test_train import toy_data


def test_every_profile_builds_valid_models_for_its_image_sizes():
    for profile in PROFILES.values():
        scale = profile.scale
        for size in scale.patch_size:
            data = toy_data()
            data.train_images = data.train_images[:, :, :1, :1].expand(-1, -1, size, size)
            config = scale.model_config("1-24", data)
            assert (config.num_branches, config.image_size, config.width) == (24, size, scale.width)


def test_unknown_profile_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown profile 'fast'.*'ci', 'cpu', 'gpu', 'paper', 'quick'"):
        get_profile("fast")


IMAGES = 2000


def correctness(acc: float, seed: int, difficulty: np.ndarray) -> np.ndarray:
    """Per-image correctness at accuracy `acc` (%): images share a difficulty across models (70% of them), as real
    models' mistakes overlap, and differ by seed."""
    rng = np.random.default_rng(seed + int(acc * 1000))
    own = rng.random(len(difficulty))
    return np.where(rng.random(len(difficulty)) < 0.7, difficulty, own) < acc / 100


def runs(accs, dataset="cifar10", seeds=(0,), layers=(1, 6, 12, 24), column=None) -> pd.DataFrame:
    difficulty = np.random.default_rng(99).random(IMAGES)
    rows = []
    for n, acc in zip(layers, accs):
        for seed in seeds:
            correct = correctness(acc + seed, seed, difficulty)
            rows.append({"dataset": dataset, "model": f"Para-F-1-{n}", "branch_depth": 1, "num_layers": n,
                         "method": "joint", "seed": seed, "test_images": IMAGES, "test_acc": 100 * correct.mean(),
                         "correct": correct, "num_params": n, "train_seconds": 1.0})
    return pd.DataFrame(rows)


def test_the_table_puts_the_papers_number_beside_ours_with_an_interval():
    sweep = runs([40, 41, 42, 43], seeds=(0, 2))
    table = compare_with_paper(sweep, TABLE2_LAYER_SWEEP)
    row = table[table["model"] == "Para-F-1-24"].iloc[0]
    ours = sweep[sweep["model"] == "Para-F-1-24"]["test_acc"].mean()
    assert row["paper_acc"] == 71.53 and row["our_acc"] == pytest.approx(ours) and row["seeds"] == 2
    assert row["ours_minus_paper"] == pytest.approx(ours - 71.53)
    assert row["our_acc_low"] < ours < row["our_acc_high"] and row["test_images"] == IMAGES
    # binomial 95% half-width on 2000 images at ~45% is 2.2 points; two seeds on the same images cannot halve it
    assert 1.5 < (row["our_acc_high"] - row["our_acc_low"]) / 2 < 3.5


def test_a_dataset_the_paper_lacks_has_an_empty_paper_cell_and_claims_without_a_paper_figure():
    sweep = runs([70, 71, 72, 73], dataset="fashion_mnist")
    assert compare_with_paper(sweep, TABLE2_LAYER_SWEEP)["paper_acc"].isna().all()
    assert all(claim.paper is None for claim in layer_sweep_claims(sweep, TABLE2_LAYER_SWEEP))


def test_the_layer_sweep_claims_are_the_overall_rise_then_every_step_with_the_papers_differences():
    claims = layer_sweep_claims(runs([40, 41, 42, 43]), TABLE2_LAYER_SWEEP)
    assert [(c.better, c.worse) for c in claims] == [
        ("Para-F-1-24", "Para-F-1-1"), ("Para-F-1-6", "Para-F-1-1"), ("Para-F-1-12", "Para-F-1-6"),
        ("Para-F-1-24", "Para-F-1-12")]
    cifar = TABLE2_LAYER_SWEEP["cifar10"]
    assert claims[0].paper == pytest.approx(cifar["Para-F-1-24"] - cifar["Para-F-1-1"])


@pytest.mark.parametrize("accs, headline", [
    ([40, 44, 48, 52], "supported"), ([45, 45, 45, 45], "inconclusive"), ([52, 48, 44, 40], "contradicted"),
])
def test_the_verdict_follows_the_paired_difference(accs, headline):
    sweep = runs(accs, seeds=(0, 1, 2))
    claims = layer_sweep_claims(sweep, TABLE2_LAYER_SWEEP)
    verdicts = judge_claims(sweep, claims)
    assert verdicts[0].verdict == headline
    assert verdicts[0].ours == pytest.approx(sweep[sweep["num_layers"] == 24]["test_acc"].mean()
                                             - sweep[sweep["num_layers"] == 1]["test_acc"].mean())
    # Holm over the four comparisons of the table: the strictest at 1 - 0.05 / 4, none looser than 95%
    assert max(v.confidence for v in verdicts) == pytest.approx(1 - 0.05 / 4)
    assert min(v.confidence for v in verdicts) >= 0.95


def test_a_comparison_needs_the_same_seeds_on_both_sides():
    sweep = pd.concat([runs([40], seeds=(0, 1), layers=(1,)), runs([50], seeds=(0, 2), layers=(24,))])
    with pytest.raises(ValueError, match="seeds"):
        judge_claims(sweep, layer_sweep_claims(sweep, TABLE2_LAYER_SWEEP))


def comparison_runs(vit=40.0, prefix=44.0, dataset="cifar10", seeds=(0, 1, 2)):
    difficulty = np.random.default_rng(7).random(IMAGES)
    rows = []
    for label, model, method, acc in (("ViT-6", "Para-F-6-6", "joint", vit),
                                      ("Para-F-1-6 prefix", "Para-F-1-6", "prefix", prefix)):
        for seed in seeds:
            correct = correctness(acc, seed, difficulty)
            rows.append({"dataset": dataset, "label": label, "model": model, "method": method, "seed": seed,
                         "test_acc": 100 * correct.mean(), "correct": correct, "num_params": 100,
                         "train_seconds": 1.0, "test_images": IMAGES})
    return pd.DataFrame(rows)


def test_each_paraformer_method_is_compared_with_the_vit_of_the_same_seeds_and_images():
    both = comparison_runs()
    (claim,) = versus_vit_claims(both, 2.39)
    assert (claim.better, claim.worse, claim.column, claim.paper) == ("Para-F-1-6 prefix", "ViT-6", "label", 2.39)
    (verdict,) = judge_claims(both, [claim])
    gap = both[both["label"] != "ViT-6"]["test_acc"].mean() - both[both["label"] == "ViT-6"]["test_acc"].mean()
    assert verdict.ours == pytest.approx(gap) and verdict.verdict == "supported"
    (close,) = judge_claims(comparison_runs(prefix=40.5), [claim])
    assert close.verdict == "inconclusive" and close.minimum_detectable > abs(close.ours)
    table = versus_vit_table(both)
    assert list(table["label"]) == ["ViT-6", "Para-F-1-6 prefix"] and (table["seeds"] == 3).all()


def test_time_to_target_finds_the_first_epoch_reaching_a_share_of_the_reference():
    curves = pd.DataFrame([
        {"dataset": "d", "label": label, "seed": 0, "epoch": e, "test_acc": acc, "train_seconds": 10.0 * e * cost}
        for label, accs, cost in (("joint", [20, 40, 50], 1), ("fast", [48, 49, 51], 2))
        for e, acc in enumerate(accs, start=1)])
    targets = time_to_target(curves, "joint", fraction=0.95).set_index("label")
    assert targets.loc["joint", "target_acc"] == pytest.approx(47.5)
    assert (targets.loc["joint", "epochs_to_target"], targets.loc["joint", "seconds_to_target"]) == (3, 30.0)
    assert (targets.loc["fast", "epochs_to_target"], targets.loc["fast", "seconds_to_target"]) == (1, 20.0)


def test_every_profile_has_a_comparison_and_an_expansion_plan_that_build():
    from paraformer.core.data import DATASETS
    from paraformer.core.model import ParaFormer
    from paraformer.core.progressive import plan

    for name in PROFILES:
        comparison = get_profile(name).comparison
        for dataset in comparison.scale.datasets:
            data = toy_data()
            size = DATASETS[dataset].image_size
            data.train_images = data.train_images[:, :1, :1, :1].expand(-1, DATASETS[dataset].in_channels, size, size)
            para = comparison.scale.model_config(comparison.paraformer, data)
            vit = comparison.scale.model_config(comparison.vit, data)
            assert para.num_layers == vit.num_layers and vit.num_branches == 1
            small = ParaFormer(para.with_branches(para.num_branches, width=8, num_heads=1))
            for method in ("joint", "authors", "prefix", "frozen"):
                plan(small, Recipe(epochs=comparison.scale.recipe.epochs, method=method))
        expansion = get_profile(name).expansion
        assert len(expansion.tasks()) >= 2 and expansion.dataset in DATASETS
    assert get_profile("quick").comparison.scale.seeds == (0, 1, 2)  # at least 3 seeds at quick


def test_the_depth_findings_are_made_of_their_comparisons_and_need_every_model():
    paper = combine(TABLE2_LAYER_SWEEP, TABLE3_DEPTH_SWEEP)
    assert paper["cifar10"]["Para-F-1-24"] == 71.53 and paper["cifar10"]["Para-F-6-6"] == 79.39
    difficulty = np.random.default_rng(3).random(IMAGES)
    accs = {"1-24": 45.0, "6-6": 56.0, "2-24": 52.0, "3-24": 45.5, "6-24": 53.0}
    rows = [{"dataset": "cifar10", "model": f"Para-F-{name}", "seed": seed, "correct": correctness(acc, seed, difficulty)}
            for name, acc in accs.items() for seed in (0, 1, 2)]
    sweep = pd.DataFrame(rows)
    claims = depth_sweep_claims(sweep, paper)
    assert len(claims) == 5 and claims[0].paper == pytest.approx(74.75 - 71.53)
    verdicts = judge_claims(sweep, claims)
    first, second = depth_findings(claims, verdicts)
    by_pair = {(c.better, c.worse): v.verdict for c, v in zip(claims, verdicts)}
    assert by_pair[("Para-F-3-24", "Para-F-1-24")] == "inconclusive"  # +0.5 points
    assert first.verdict == "inconclusive" and second.verdict == "supported"
    partial = sweep[sweep["model"].isin(["Para-F-1-24", "Para-F-2-24"])]
    claims = depth_sweep_claims(partial, paper)
    found = depth_findings(claims, judge_claims(partial, claims))
    assert [v.verdict for v in found] == ["not testable here", "not testable here"]
