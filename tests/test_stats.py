"""The verdict rule and the paired tests behind it (paraformer.experiments.stats)."""

import math
import random

import pytest
from scipy import stats as scipy_stats

from paraformer.experiments.stats import VERDICTS, holm, judge, mcnemar, paired_minimum_detectable, render


@pytest.mark.parametrize("low, high, expected", [
    (0.5, 2.0, "supported"), (-2.0, -0.1, "contradicted"), (-1.0, 1.0, "inconclusive"), (0.0, 1.0, "inconclusive"),
])
def test_the_interval_against_the_threshold_decides_the_verdict(low, high, expected):
    verdict = judge("A beats B", (low + high) / 2, low, high, minimum_detectable=3.1)
    assert verdict.verdict == expected and verdict.verdict in VERDICTS
    assert (verdict.minimum_detectable == 3.1) == (expected == "inconclusive")


def test_a_ratio_claim_is_judged_against_its_own_threshold():
    assert judge("ParaFormer is faster than FairScale", 1.4, 1.2, 1.6, threshold=1.0).verdict == "supported"
    assert judge("the speed-up reaches 3.30x", 1.4, 1.2, 1.6, threshold=3.3).verdict == "contradicted"


def test_not_testable_needs_a_reason_and_overrides_the_numbers():
    verdict = judge("3.30x faster than FairScale", float("nan"), float("nan"), float("nan"), threshold=1.0,
                    not_testable="FairScale's Pipe cannot overlap partitions on a CPU")
    assert verdict.verdict == "not testable here" and "overlap" in verdict.reason
    with pytest.raises(ValueError, match="not_testable"):
        judge("A beats B", float("nan"), 0.0, 1.0)
    with pytest.raises(ValueError, match="outside its interval"):
        judge("A beats B", 5.0, 0.0, 1.0)


def test_the_words_come_from_the_data():
    verdict = judge("A beats B", 1.0, 0.2, 1.8, paper=2.39)
    words = render(verdict)
    assert words.startswith("A beats B: supported") and words.endswith("paper 2.39.")
    assert render(judge("A beats B", 0.0, -1.0, 1.0)).startswith("A beats B: inconclusive")


def test_mcnemar_counts_only_the_images_where_the_models_disagree():
    # 10 images right for A alone, 2 for B alone, 88 agreeing: the exact binomial test on 10 of 12
    a = [True] * 10 + [False] * 2 + [True] * 50 + [False] * 38
    b = [False] * 10 + [True] * 2 + [True] * 50 + [False] * 38
    assert mcnemar(a, b) == pytest.approx(scipy_stats.binomtest(10, 12, 0.5).pvalue)
    assert mcnemar(a, a) == 1.0 and mcnemar(a, b) == mcnemar(b, a)
    with pytest.raises(ValueError):
        mcnemar(a, b[:-1])


def test_holm_keeps_fewer_discoveries_than_uncorrected_tests():
    p = [0.01, 0.04, 0.03, 0.5, float("nan")]
    adjusted = holm(p)
    assert adjusted[:4] == pytest.approx([0.04, 0.09, 0.09, 0.5]) and math.isnan(adjusted[4])
    assert sum(q < 0.05 for q in adjusted[:4]) == 1 < sum(q < 0.05 for q in p[:4])


def test_the_minimum_detectable_difference_is_found_80_percent_of_the_time():
    # Simulate pairs of models whose true accuracies differ by the minimum detectable difference
    n, discordant = 1000, 0.2
    mdd = paired_minimum_detectable(discordant, n) / 100
    rng = random.Random(0)
    found = 0
    for _ in range(400):
        a, b = [], []
        for _ in range(n):
            u = rng.random()
            if u < discordant:  # right for exactly one: A with probability (discordant + mdd) / 2 / discordant
                one = rng.random() < (discordant + mdd) / (2 * discordant)
                a.append(one), b.append(not one)
            else:
                a.append(True), b.append(True)
        found += mcnemar(a, b) < 0.05
    assert 0.72 <= found / 400 <= 0.88
