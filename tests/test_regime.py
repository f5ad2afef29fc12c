"""When a measurement can speak for the paper's claim, and when only for its own scale (paraformer.experiments.regime)."""

import pytest

from paraformer.experiments.regime import (FAR_BELOW, LINEAR_MARGIN, Regime, describe, far_below, speaks_for_the_paper,
                                           status, under_trained)


def test_arms_that_do_not_clearly_beat_a_linear_model_are_under_trained():
    # quick's Fashion-MNIST: models 66-71%, logistic regression on the same 2,500 images 79-82%
    assert under_trained(Regime("quick", arms=(66.3, 71.3), linear=80.0))
    # the cpu profile's measured starting point: Para-F-1-6 at 88.5% against 84% linear
    assert not under_trained(Regime("cpu", arms=(88.5,), linear=84.0))
    # the margin is a margin: level with the baseline is not enough
    assert under_trained(Regime("x", arms=(80.0 + LINEAR_MARGIN - 0.01,), linear=80.0))
    assert not under_trained(Regime("x", arms=(80.0 + LINEAR_MARGIN,), linear=80.0))


def test_far_below_is_under_half_the_papers_distance_above_chance():
    paper = (55.95, 64.90, 66.88, 71.53)  # Table 2, CIFAR-10: mean 64.8, 54.8 points above chance
    half = 10.0 + FAR_BELOW * (sum(paper) / 4 - 10.0)
    assert far_below(Regime("quick", arms=(half - 0.1,), paper_arms=paper, chance=10.0))
    assert not far_below(Regime("quick", arms=(half + 0.1,), paper_arms=paper, chance=10.0))
    # without the paper's figures or chance, nothing is far below
    assert not far_below(Regime("quick", arms=(20.0,), chance=10.0))


@pytest.mark.parametrize("regime, expected", [
    (Regime("quick", arms=(31.0,), paper_arms=(64.8,), chance=10.0, linear=30.0), "under-trained"),
    (Regime("quick", arms=(31.0,), paper_arms=(64.8,), chance=10.0, linear=20.0), "far below the paper"),
    (Regime("paper", arms=(60.0,), paper_arms=(64.8,), chance=10.0, linear=40.0), "comparable"),
    (Regime("cpu", arms=(88.0,), linear=84.0), "comparable"),
    (Regime("cpu", arms=(88.0,)), "unknown"),
    (None, "unknown"),
])
def test_one_rule_names_the_regime(regime, expected):
    assert status(regime) == expected
    assert speaks_for_the_paper(regime) == (expected in ("comparable", "unknown"))


def test_a_regime_needs_the_arms_figures():
    with pytest.raises(ValueError, match="arm"):
        Regime("quick", arms=())


def test_the_description_gives_ours_the_papers_and_the_scale():
    words = describe(Regime("quick", arms=(28.4, 34.5), paper_arms=(55.95, 71.53), linear=29.2, epochs=5,
                            train_images=2500))
    assert words == "ours 28-34%, paper 56-72%, linear 29%; 5 epochs, 2,500 images"
