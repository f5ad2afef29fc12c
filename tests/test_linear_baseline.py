"""The linear baseline every accuracy table shows (paraformer.experiments.linear_baseline)."""

import json

import numpy as np
import pytest
import torch

from paraformer.core.config import DataConfig
from paraformer.experiments import linear_baseline as lb

SMALL = DataConfig(dataset="fashion_mnist", n_train=300, n_test=200)


def test_a_logistic_regression_separates_separable_classes():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    labels = torch.arange(3).repeat(100)
    x = centres[labels] + 0.5 * torch.randn(300, 2, generator=generator, dtype=torch.float64)
    model = lb.fit_linear(x, labels, 3, l2=1e-4)
    assert (lb._predict(model, x) == labels).all()


def test_on_real_images_it_beats_chance_and_is_cached_like_a_run(tmp_path, monkeypatch):
    first = lb.linear_baseline(SMALL, tmp_path)
    assert first.accuracy > 50 and first.test_images == 200 and len(first.correct) == 200
    assert first.accuracy == pytest.approx(100 * first.correct.mean())

    def refit(*args):
        raise AssertionError("fitted again although the record is cached")
    monkeypatch.setattr(lb, "fit_baseline", refit)
    again = lb.linear_baseline(SMALL, tmp_path)
    assert again.key == first.key and (again.correct == first.correct).all() and again.seconds == first.seconds


def test_two_fits_give_the_same_predictions(tmp_path):
    one = lb.linear_baseline(SMALL, tmp_path / "a")
    two = lb.linear_baseline(SMALL, tmp_path / "b")
    assert (one.correct == two.correct).all()


def test_other_images_or_another_split_get_their_own_record(tmp_path):
    keys = {lb.linear_baseline(data, tmp_path).key
            for data in (SMALL, DataConfig(dataset="fashion_mnist", n_train=400, n_test=200),
                         DataConfig(dataset="fashion_mnist", n_train=300, n_test=200, val_fraction=0.2))}
    assert len(keys) == 3 and len(list((tmp_path / "baselines").glob("*.json"))) == 3


def test_the_l2_strength_is_chosen_on_the_validation_split_never_the_test_images(tmp_path, monkeypatch):
    data = DataConfig(dataset="fashion_mnist", n_train=300, n_test=200, val_fraction=0.2)
    images = lb.load_data(data)
    seen = []
    real_choose = lb.choose_l2

    def spy(fit_x, fit_y, choose_x, choose_y, num_classes):
        seen.append((len(fit_y), choose_y.clone()))
        return real_choose(fit_x, fit_y, choose_x, choose_y, num_classes)
    monkeypatch.setattr(lb, "choose_l2", spy)
    held_out = lb.linear_baseline(data, tmp_path)
    assert held_out.val_accuracy is not None and held_out.l2 in lb.L2_GRID
    assert seen[0][0] == len(images.train_labels) and torch.equal(seen[0][1], images.val_labels)


def test_without_a_validation_split_l2_is_chosen_on_a_stratified_fifth_of_the_training_images(tmp_path, monkeypatch):
    images = lb.load_data(SMALL)
    seen = []
    real_choose = lb.choose_l2

    def spy(fit_x, fit_y, choose_x, choose_y, num_classes):
        seen.append((fit_y.clone(), choose_y.clone()))
        return real_choose(fit_x, fit_y, choose_x, choose_y, num_classes)
    monkeypatch.setattr(lb, "choose_l2", spy)
    baseline = lb.linear_baseline(SMALL, tmp_path)
    fit_y, choose_y = seen[0]
    assert len(fit_y) + len(choose_y) == len(images.train_labels) == baseline.train_images
    counts, held = torch.bincount(images.train_labels, minlength=10), torch.bincount(choose_y, minlength=10)
    assert torch.equal(held, torch.round(lb.HOLDOUT_FRACTION * counts).clamp_min(1).long())
    assert baseline.l2 in lb.L2_GRID and baseline.val_accuracy is None


def test_the_holdout_keeps_a_single_image_class_for_fitting():
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 2, 2])
    held = lb.stratified_holdout(labels, 0.2)
    assert held.tolist() == [True, False, False, False, False, False, True, False]


def test_the_choice_goes_to_the_best_score_and_ties_to_the_stronger_regularization(monkeypatch):
    scores = iter([50.0, 70.0, 70.0, 60.0, 40.0, 40.0])  # one per candidate of L2_GRID, strongest first

    class Fixed:
        def __init__(self, accuracy):
            self.accuracy = accuracy
    monkeypatch.setattr(lb, "fit_linear", lambda *args: Fixed(next(scores)))
    monkeypatch.setattr(lb, "_predict", lambda model, x: torch.arange(100) < model.accuracy)
    l2, accuracy = lb.choose_l2(None, None, None, torch.ones(100, dtype=torch.bool), 2)
    assert (l2, accuracy) == (lb.L2_GRID[1], 70.0)


@pytest.mark.parametrize("damage", [lambda r: r.update(correct=r["correct"][:-1]),
                                    lambda r: r.update(accuracy="ninety"), lambda r: r.pop("l2")])
def test_a_damaged_record_is_refused_naming_its_file(tmp_path, damage):
    baseline = lb.linear_baseline(SMALL, tmp_path)
    path = lb.record_path(tmp_path, SMALL, baseline.key)
    record = json.loads(path.read_text())
    damage(record)
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=str(path.name)):
        lb.linear_baseline(SMALL, tmp_path)


def test_the_rows_give_each_datasets_accuracy_with_an_interval_over_the_test_images(tmp_path):
    rows = lb.linear_rows([SMALL, SMALL], tmp_path)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["linear_acc_low"] < row["linear_acc"] < row["linear_acc_high"]
    assert lb.linear_accuracies([SMALL], tmp_path) == {"fashion_mnist": row["linear_acc"]}
