"""The trainer: it learns, it records, it never trains a finished run twice, and it resumes exactly."""

import json

import pytest
import torch

import paraformer.train as training
from paraformer.config import ConfigError, DataConfig, ModelConfig, Recipe, from_dict
from paraformer.data import ImageData
from paraformer.train import learning_rate, run_key, run_paths, train


def toy_data(n_train=96, n_test=48, seed=0) -> ImageData:
    """Four classes: the top half, the bottom half, both or neither bright. Learnable in a few steps, and
    unchanged by the flips and small crops of the augmentation."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.arange(n) % 4
        images = torch.randint(0, 60, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
        for i, label in enumerate(labels.tolist()):
            if label in (0, 2):
                images[i, :, :8] += 150
            if label in (1, 2):
                images[i, :, 8:] += 150
        return images, labels

    train_images, train_labels = make(n_train)
    test_images, test_labels = make(n_test)
    empty = torch.empty(0, 3, 16, 16, dtype=torch.uint8)
    return ImageData(name="toy", train_images=train_images, train_labels=train_labels, val_images=empty,
                     val_labels=torch.empty(0, dtype=torch.long), test_images=test_images, test_labels=test_labels,
                     classes=["top", "bottom", "both", "neither"], mean=(0.3, 0.3, 0.3), std=(0.3, 0.3, 0.3), source="synthetic")


MODEL = ModelConfig(image_size=16, patch_size=4, width=32, num_heads=2, mlp_ratio=2.0, branch_depth=1,
                    num_layers=3, num_classes=4, dropout=0.1)
DATA = DataConfig(dataset="toy")
RECIPE = Recipe(epochs=3, batch_size=16, lr=3e-3, warmup_epochs=0.5, augment=("flip", "crop"), seed=1)


def test_a_tiny_run_lowers_the_loss_and_records_everything(tmp_path):
    result = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == RECIPE.epochs
    assert losses[-1] < losses[0]
    assert result.final_test_acc == result.history[-1]["test_acc"] > 25.0  # chance is 25%
    assert result.num_params == sum(p.numel() for p in training.ParaFormer(MODEL).parameters())
    assert result.wall_seconds > 0 and result.data_source == "synthetic"
    record = json.loads(run_paths(result.name, result.key, tmp_path)[0].read_text())
    assert from_dict(ModelConfig, record["config"]["model"]) == MODEL
    assert from_dict(Recipe, record["config"]["recipe"]) == RECIPE
    assert record["code_version"] and record["torch_version"] == torch.__version__


def test_a_finished_run_is_returned_from_the_cache_without_training(tmp_path, monkeypatch):
    first = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run must not be trained again")

    monkeypatch.setattr(training, "ParaFormer", no_training)
    monkeypatch.setattr(training, "load_data", no_training)
    again = train(MODEL, DATA, RECIPE, results_root=tmp_path, progress=False)
    assert again.cached and not first.cached
    assert again == first


def test_any_config_change_is_a_different_run():
    keys = {run_key(MODEL, DATA, RECIPE), run_key(MODEL, DATA, Recipe(**{**RECIPE.__dict__, "seed": 2})),
            run_key(ModelConfig(**{**MODEL.__dict__, "width": 64}), DATA, RECIPE),
            run_key(MODEL, DataConfig(dataset="toy", n_train=10), RECIPE)}
    assert len(keys) == 4


def test_an_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    data = toy_data()
    straight = train(MODEL, DATA, RECIPE, data=data, results_root=tmp_path / "a", progress=False)

    def interrupt_after_first_epoch(entry):
        if entry["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(MODEL, DATA, RECIPE, data=data, results_root=tmp_path / "b", progress=False,
              on_epoch_end=interrupt_after_first_epoch)
    record, checkpoint, weights = run_paths(straight.name, straight.key, tmp_path / "b")
    assert checkpoint.exists() and not record.exists()
    assert not record.parent.exists() or not any(record.parent.iterdir())  # no half-written record

    trained_epochs = []
    resumed = train(MODEL, DATA, RECIPE, data=data, results_root=tmp_path / "b", progress=False,
                    on_epoch_end=lambda entry: trained_epochs.append(entry["epoch"]))
    assert trained_epochs == [2, 3]  # epoch 1 came from the checkpoint
    assert not checkpoint.exists() and record.exists()
    drop_time = lambda history: [{k: v for k, v in h.items() if "seconds" not in k} for h in history]
    assert drop_time(resumed.history) == drop_time(straight.history)
    a = torch.load(run_paths(straight.name, straight.key, tmp_path / "a")[2])
    b = torch.load(weights)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_learning_rate_warms_up_then_decays_to_zero():
    recipe = Recipe(lr=1.0, schedule="cosine")
    rates = [learning_rate(step, 100, 10, recipe) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] < 0.01


def test_a_model_that_does_not_fit_the_data_is_refused(tmp_path):
    wrong = ModelConfig(**{**MODEL.__dict__, "num_classes": 10})
    with pytest.raises(ConfigError, match="num_classes=10"):
        train(wrong, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("fields, message", [
    (dict(optimizer="lamb"), "optimizer='lamb'"),
    (dict(augment=("mixup",)), "mixup"),
    (dict(epochs="10"), "epochs='10'"),
    (dict(lr=0), "lr=0"),
])
def test_bad_recipes_are_refused_by_name(fields, message):
    with pytest.raises(ConfigError, match=message):
        Recipe(**fields)


def test_train_wants_config_objects_not_dicts(tmp_path):
    with pytest.raises(ConfigError, match="needs a ModelConfig"):
        train({"num_layers": 2}, DATA, RECIPE, results_root=tmp_path)
