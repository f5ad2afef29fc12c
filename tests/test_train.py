"""The trainer: it learns, it records, it never trains a finished run twice, and it resumes exactly."""

import json
from pathlib import Path

import pytest
import torch

import paraformer.train as training
from paraformer.config import ConfigError, DataConfig, ModelConfig, Recipe, from_dict
from paraformer.data import ImageData
from paraformer.results import ResultsWriteError
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
    again = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert again.cached and not first.cached
    assert again == first


def test_any_config_change_is_a_different_run():
    keys = {run_key(MODEL, DATA, RECIPE), run_key(MODEL, DATA, Recipe(**{**RECIPE.__dict__, "seed": 2})),
            run_key(ModelConfig(**{**MODEL.__dict__, "width": 64}), DATA, RECIPE),
            run_key(MODEL, DataConfig(dataset="toy", n_train=10), RECIPE)}
    assert len(keys) == 4


def interrupt_after_first_epoch(data, results_root) -> None:
    """Start the run and stop it (as Ctrl-C would) once epoch 1's checkpoint is written."""
    def stop(entry):
        if entry["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(MODEL, DATA, RECIPE, data=data, results_root=results_root, progress=False, on_epoch_end=stop)


def test_an_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    data = toy_data()
    straight = train(MODEL, DATA, RECIPE, data=data, results_root=tmp_path / "a", progress=False)
    interrupt_after_first_epoch(data, tmp_path / "b")
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


# --- bad files and bad places: each refused with its name, or recovered from, never a wrong number -------------

def test_a_changed_image_is_another_run(tmp_path):
    data = toy_data()
    first = train(MODEL, DATA, RECIPE, data=data, results_root=tmp_path, progress=False)
    data.train_images[0] = 255 - data.train_images[0]  # one image fixed (or damaged) in place
    again = train(MODEL, DATA, RECIPE, data=data, results_root=tmp_path, progress=False)
    assert not again.cached and again.key != first.key and again.data_fingerprint != first.data_fingerprint


@pytest.mark.parametrize("content, problem", [(b'{"name": "toy", "key": ', "truncated"),
                                              (b'{"name": "toy", "colour": "blue"}', "foreign"),
                                              (b"", "empty"), (None, "another run's record")])
def test_a_damaged_or_foreign_run_record_is_refused_by_name(tmp_path, content, problem):
    result = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    record = run_paths(result.name, result.key, tmp_path)[0]
    if content is None:  # a whole, valid record, but of another run (copied over this one's file)
        other = train(MODEL, DATA, Recipe(**{**RECIPE.__dict__, "seed": 2}), data=toy_data(), results_root=tmp_path,
                      progress=False)
        content = run_paths(other.name, other.key, tmp_path)[0].read_bytes()
    record.write_bytes(content)
    with pytest.raises(training.RunCacheError) as caught:
        train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert caught.value.path == record


def test_damaged_saved_weights_are_refused_by_name(tmp_path):
    result = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    weights = run_paths(result.name, result.key, tmp_path)[2]
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(training.RunCacheError) as caught:
        training.load_trained_model(result, tmp_path)
    assert caught.value.path == weights


def test_a_damaged_checkpoint_without_an_earlier_one_is_moved_aside_and_the_run_starts_again(tmp_path):
    data = toy_data()
    straight = train(MODEL, DATA, RECIPE, data=data, results_root=tmp_path / "a", progress=False)
    interrupt_after_first_epoch(data, tmp_path / "b")
    _, checkpoint, _ = run_paths(straight.name, straight.key, tmp_path / "b")
    checkpoint.write_bytes(b"")  # empty, as after a crash of the disk rather than of the process
    trained = []
    with pytest.warns(RuntimeWarning):
        resumed = train(MODEL, DATA, RECIPE, data=data, results_root=tmp_path / "b", progress=False,
                        on_epoch_end=lambda entry: trained.append(entry["epoch"]))
    assert trained == [1, 2, 3]
    assert checkpoint.with_name(checkpoint.name + ".corrupt").read_bytes() == b""
    assert resumed.final_test_acc == straight.final_test_acc


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "x..y", ""])
def test_a_run_name_that_could_leave_the_results_folder_is_refused(tmp_path, name):
    with pytest.raises(ConfigError):
        train(MODEL, DATA, RECIPE, name=name, data=toy_data(), results_root=tmp_path, progress=False)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_an_unwritable_results_folder_fails_before_any_training(tmp_path, monkeypatch):
    import errno
    import tempfile

    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).name == "checkpoints":
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    epochs = []
    with pytest.raises(ResultsWriteError) as caught:
        train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False,
              on_epoch_end=epochs.append)
    assert caught.value.path == tmp_path / "checkpoints" and epochs == []


def test_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    def disk_full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 0 vs 1")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(ResultsWriteError) as caught:
        train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert caught.value.path.parent == tmp_path / "checkpoints"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_model_larger_than_the_images_is_refused_not_upsampled(tmp_path):
    larger = ModelConfig(**{**MODEL.__dict__, "image_size": 32})
    with pytest.raises(ConfigError, match="image_size=32"):
        train(larger, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)


def test_a_run_made_by_other_code_is_returned_with_a_warning_or_retrained_when_asked(tmp_path, monkeypatch):
    first = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    monkeypatch.setattr(training, "code_digest", lambda: "other-code")
    monkeypatch.setattr("paraformer.results.code_digest", lambda: "other-code")
    with pytest.warns(training.StaleRunWarning):
        again = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert again.cached and again.stale and again.code_digest == first.code_digest
    assert training.stale_records(tmp_path) == ([run_paths(first.name, first.key, tmp_path)[0]], 1)

    monkeypatch.setenv("PARAFORMER_RETRAIN", "stale")
    retrained = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert not retrained.cached and retrained.code_digest == "other-code" and not retrained.stale
    assert retrained.final_test_acc == first.final_test_acc
    assert training.stale_records(tmp_path) == ([], 1)

    monkeypatch.setenv("PARAFORMER_RETRAIN", "yes")
    with pytest.raises(ConfigError):
        train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)


@pytest.mark.parametrize("cls, fields", [
    (ModelConfig, dict(num_layers=2, mlp_ratio=float("nan"))),
    (ModelConfig, dict(num_layers=2, norm_eps=float("inf"))),
    (Recipe, dict(lr=float("nan"))),
    (Recipe, dict(grad_clip=float("nan"))),
    (Recipe, dict(device="gpu")),
    (Recipe, dict(device="cuda:x")),
    (Recipe, dict(method="authors", freeze_inherited=True)),
    (DataConfig, dict(channels=2)),
])
def test_configs_that_would_fail_later_are_refused_when_made(cls, fields):
    with pytest.raises(ConfigError):
        cls(**fields)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_every_torch_device_name_is_accepted(device):
    assert Recipe(device=device).device == device


def test_an_image_folder_whose_images_were_replaced_is_trained_again_not_served_from_the_cache(tmp_path,
                                                                                               monkeypatch):
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("PARAFORMER_DATA", str(tmp_path / "data"))
    root = tmp_path / "digits"

    def write(seed):
        rng = np.random.default_rng(seed)
        for split, count in (("train", 8), ("test", 4)):
            for label in range(4):
                (root / split / f"c{label}").mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    pixels = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
                    Image.fromarray(pixels).save(root / split / f"c{label}" / f"{i}.png")

    config, recipe = DataConfig(dataset=str(root)), Recipe(**{**RECIPE.__dict__, "epochs": 1})
    write(seed=0)
    first = train(MODEL, config, recipe, results_root=tmp_path / "results", progress=False)
    assert train(MODEL, config, recipe, results_root=tmp_path / "results", progress=False).cached
    write(seed=1)  # every image replaced by another, under the same names
    again = train(MODEL, config, recipe, results_root=tmp_path / "results", progress=False)
    assert not again.cached and again.key != first.key and again.data_fingerprint != first.data_fingerprint
