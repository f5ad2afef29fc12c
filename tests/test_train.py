"""The trainer: it learns, it records, it never trains a finished run twice, and it resumes exactly."""

import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import paraformer.training.trainer as training
from paraformer.core.config import ConfigError, DataConfig, ModelConfig, Recipe, from_dict
from paraformer.core.data import ImageData, stratified_subset
from paraformer.core.files import ResultsWriteError
from paraformer.core.model import Branch, ParaFormer
from paraformer.core.runcache import (RunCacheError, StaleRunWarning, data_fingerprint_of, load_trained_model,
                                      run_key, run_paths, step_log_path)
from paraformer.core.runlog import clipping_summary, keep_epochs, prefix_accuracy_curves, read_step_log
from paraformer.parallel.processes import Processes
from paraformer.tools.train import main
from paraformer.training import numerics, train
from paraformer.training.evaluation import evaluate, prepare_batch
from paraformer.training.numerics import is_stale, stale_records
from paraformer.training.trainer import learning_rate


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
# Bit-exact resume (and reruns) are the CPU's claim: on CUDA, kernels such as attention's backward may sum in another
# order from run to run (docs/run-cache.md), so the tests of exactness run on the CPU wherever they run.
EXACT = replace(RECIPE, device="cpu")


def test_a_tiny_run_lowers_the_loss_and_records_everything(tmp_path):
    result = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == RECIPE.epochs
    assert losses[-1] < losses[0]
    assert result.final_test_acc == result.history[-1]["test_acc"] > 25.0  # chance is 25%
    assert result.num_params == sum(p.numel() for p in ParaFormer(MODEL).parameters())
    assert result.wall_seconds > 0 and result.data_source == "synthetic"
    record = json.loads(run_paths(result.name, result.key, tmp_path)[0].read_text())
    assert from_dict(ModelConfig, record["config"]["model"]) == MODEL
    assert from_dict(Recipe, record["config"]["recipe"]) == RECIPE
    assert record["code_version"] and record["torch_version"] == torch.__version__


def test_the_final_model_is_scored_on_every_test_image_and_the_curves_on_the_per_epoch_subset(tmp_path):
    data = toy_data(n_test=48)
    # every third test label shuffled: the model gets some wrong, so scores on different images differ
    data.test_labels[::3] = data.test_labels[::3][torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    result = train(MODEL, replace(DATA, n_test_per_epoch=12), RECIPE, data=data, results_root=tmp_path,
                   progress=False)
    model = load_trained_model(result, tmp_path)
    every_image = evaluate(model, data.test_images, data.test_labels, data, RECIPE)
    subset = stratified_subset(data.test_labels, 12, 0)
    on_subset = evaluate(model, data.test_images[subset], data.test_labels[subset], data, RECIPE)
    assert result.final_test_acc == every_image and result.history[-1]["test_acc"] == on_subset != every_image
    # the record keeps which images the final model got right, in the test split's order
    assert result.test_images == 48 and 100 * result.correct().mean() == pytest.approx(every_image)
    predicted = model(prepare_batch(data.test_images, data, MODEL, torch.device("cpu"))).argmax(1)
    assert (result.correct() == (predicted == data.test_labels).numpy()).all()
    assert result.final_prefix_test_acc == [evaluate(model, data.test_images, data.test_labels, data,
                                                              RECIPE, num_branches=k) for k in (1, 2, 3)]
    again = train(MODEL, replace(DATA, n_test_per_epoch=12), RECIPE, data=data, results_root=tmp_path)
    assert again.cached and (again.correct() == result.correct()).all()


def test_without_a_per_epoch_subset_the_last_epoch_and_the_final_score_agree(tmp_path):
    result = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert result.history[-1]["test_acc"] == result.final_test_acc
    assert result.history[-1]["prefix_test_acc"] == result.final_prefix_test_acc


def test_a_per_epoch_subset_larger_than_the_test_images_is_refused():
    with pytest.raises(ConfigError, match="n_test_per_epoch=200 exceeds n_test=100"):
        DataConfig(dataset="toy", n_test=100, n_test_per_epoch=200)


def test_a_record_without_per_image_predictions_is_refused_for_paired_tests(tmp_path):
    result = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    with pytest.raises(RunCacheError, match="no per-image test predictions"):
        replace(result, test_predictions="").correct()


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


def interrupt_after_first_epoch(data, results_root, recipe: Recipe = EXACT) -> None:
    """Start the run and stop it (as Ctrl-C would) once epoch 1's checkpoint is written."""
    def stop(entry):
        if entry["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(MODEL, DATA, recipe, data=data, results_root=results_root, progress=False, on_epoch_end=stop)


def test_an_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    data = toy_data()
    straight = train(MODEL, DATA, EXACT, data=data, results_root=tmp_path / "a", progress=False)
    interrupt_after_first_epoch(data, tmp_path / "b")
    record, checkpoint, weights = run_paths(straight.name, straight.key, tmp_path / "b")
    assert checkpoint.exists() and not record.exists()
    # no half-written record: only the step log of epoch 1
    assert [p.name for p in record.parent.iterdir()] == [step_log_path(record).name]

    trained_epochs = []
    resumed = train(MODEL, DATA, EXACT, data=data, results_root=tmp_path / "b", progress=False,
                    on_epoch_end=lambda entry: trained_epochs.append(entry["epoch"]))
    assert trained_epochs == [2, 3]  # epoch 1 came from the checkpoint
    assert not checkpoint.exists() and record.exists()
    drop_time = lambda history: [{k: v for k, v in h.items() if "seconds" not in k} for h in history]
    assert drop_time(resumed.history) == drop_time(straight.history)
    a = torch.load(run_paths(straight.name, straight.key, tmp_path / "a")[2])
    b = torch.load(weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and so does the step log: every step once, with the same values
    straight_log = read_step_log(step_log_path(run_paths(straight.name, straight.key, tmp_path / "a")[0]))
    pd.testing.assert_frame_equal(read_step_log(step_log_path(record)), straight_log)


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
    with pytest.raises(RunCacheError) as caught:
        train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert caught.value.path == record


def test_damaged_saved_weights_are_refused_by_name(tmp_path):
    result = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    weights = run_paths(result.name, result.key, tmp_path)[2]
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(RunCacheError) as caught:
        load_trained_model(result, tmp_path)
    assert caught.value.path == weights


def test_a_damaged_checkpoint_without_an_earlier_one_is_moved_aside_and_the_run_starts_again(tmp_path):
    data = toy_data()
    straight = train(MODEL, DATA, EXACT, data=data, results_root=tmp_path / "a", progress=False)
    interrupt_after_first_epoch(data, tmp_path / "b")
    _, checkpoint, _ = run_paths(straight.name, straight.key, tmp_path / "b")
    checkpoint.write_bytes(b"")  # empty, as after a crash of the disk rather than of the process
    trained = []
    with pytest.warns(RuntimeWarning):
        resumed = train(MODEL, DATA, EXACT, data=data, results_root=tmp_path / "b", progress=False,
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
    # nothing but epoch 1's step log (and its TensorBoard events, with tensorboard installed), which the next
    # attempt drops: it has no checkpoint to resume from
    key = run_key(MODEL, DATA, RECIPE, data_fingerprint=data_fingerprint_of(DATA, toy_data()))
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "tensorboard" not in p.relative_to(tmp_path).parts]
    assert files == [step_log_path(run_paths("toy-Para-F-1-3", key, tmp_path)[0])]


def test_a_model_larger_than_the_images_is_refused_not_upsampled(tmp_path):
    larger = ModelConfig(**{**MODEL.__dict__, "image_size": 32})
    with pytest.raises(ConfigError, match="image_size=32"):
        train(larger, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)


def test_a_run_of_other_numbers_is_returned_with_a_warning_or_retrained_when_asked(tmp_path, monkeypatch):
    first = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert (first.code_digest, first.numerics) == (numerics.code_digest(), numerics.current_numerics())
    # other code that numerics.json knows to compute the same numbers: the run stays current, no warning
    same = first.numerics or "numbers"
    known = {first.code_digest: same, "edited": same}
    monkeypatch.setattr(numerics, "_recorded", {**numerics.recorded(), "known": known})
    monkeypatch.setattr(numerics, "_code_digest", "edited")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False).cached
    # code whose numbers are not recorded (an edit before `make numerics`): every earlier run is stale
    monkeypatch.setattr(numerics, "_code_digest", "other-code")
    with pytest.warns(StaleRunWarning):
        again = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert again.cached and is_stale(again) and again.code_digest == first.code_digest
    assert stale_records(tmp_path) == ([run_paths(first.name, first.key, tmp_path)[0]], [], 1)

    monkeypatch.setenv("PARAFORMER_RETRAIN", "stale")
    retrained = train(MODEL, DATA, RECIPE, data=toy_data(), results_root=tmp_path, progress=False)
    assert not retrained.cached and (retrained.code_digest, retrained.numerics) == ("other-code", "")
    assert not is_stale(retrained) and retrained.final_test_acc == first.final_test_acc
    assert stale_records(tmp_path) == ([], [], 1)

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


# --- the device path: what a step reads back, the step log, torch.compile -------------------------------------

def test_run_keys_do_not_move_unless_the_record_format_does():
    # The key these configs have had since RUN_FORMAT 4: a key that changes by accident orphans every cached
    # run. Recipe.compile, added later, is left out at its default, so it did not move the key; True is another run.
    assert run_key(MODEL, DATA, RECIPE, data_fingerprint="tensors:0123456789abcdef") == "607374263d2096fd"
    assert run_key(MODEL, DATA, replace(RECIPE, compile=True), data_fingerprint="tensors:0123456789abcdef") \
        != "607374263d2096fd"


def test_an_epoch_reads_values_back_from_the_device_a_few_times_not_at_every_step(tmp_path, monkeypatch):
    reads, counting = [], []
    for method in ("item", "tolist"):
        original = getattr(torch.Tensor, method)

        def counted(self, _original=original, _name=method):
            # torch's CPU optimizers read their own step counters, which live on the host by design
            if counting and not sys._getframe(1).f_globals.get("__name__", "").startswith("torch.optim"):
                reads.append(_name)
            return _original(self)
        monkeypatch.setattr(torch.Tensor, method, counted)
    one_epoch = training.train_one_epoch

    def counted_epoch(*args):
        counting.append(True)
        try:
            return one_epoch(*args)
        finally:
            counting.clear()
    monkeypatch.setattr(training, "train_one_epoch", counted_epoch)
    recipe = replace(RECIPE, method="authors", epochs=1)  # 6 minibatches x (3 prefix steps + 1 full step)
    train(MODEL, DATA, recipe, data=toy_data(), results_root=tmp_path, progress=False, log_every=10)
    # 24 steps: the step log reads its values every 10 steps (twice), and the epoch's mean loss is read once
    assert reads == ["tolist", "tolist", "item"]


class _EpochOps(TorchDispatchMode):
    """The random draws (op, device) and the host-to-device copies (blocking or not) of what runs inside it;
    `.item()` answers 0.0, as fake tensors hold no values."""

    def __init__(self):
        super().__init__()
        self.draws, self.host_to_device = set(), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense":
            return 0.0
        out = func(*args, **kwargs)
        if name in ("rand", "randint", "randperm"):
            self.draws.add((name, out.device.type))
        source, target = ((args[0].device, out.device) if name == "_to_copy" else
                          (args[1].device, args[0].device) if name == "copy_" else (None, None))
        if source is not None and source.type == "cpu" and target.type != "cpu":
            self.host_to_device.append(bool(kwargs.get("non_blocking") or (name == "copy_" and args[2:3] == (True,))))
        return out


def test_a_device_run_draws_its_flips_and_crops_on_the_device_with_no_blocking_copy(monkeypatch):
    """An epoch of a CUDA run, faked on the CPU: its data are fake CUDA tensors (FakeTensorMode: shapes and devices,
    no values) and the update a stand-in, so that what is seen is the epoch loop and `augment_batch` themselves.
    Limits: this machine cannot make a CUDA generator, so the one the trainer asks for is a CPU generator that
    reports the device it was asked for, and fake tensors do not check a generator's device as CUDA kernels do
    (test_cuda.py checks both, and the host synchronisations, on a GPU)."""
    real_generator, made = torch.Generator, []

    class DeviceGenerator(real_generator):
        def __new__(cls, device="cpu"):
            generator = super().__new__(cls)  # on the CPU, whatever the device asked for
            generator.asked = torch.device(device)
            made.append(generator)
            return generator

        def __init__(self, device="cpu"):
            super().__init__()

        @property
        def device(self):
            return self.asked

    monkeypatch.setattr(torch, "Generator", DeviceGenerator)
    monkeypatch.setitem(training.progressive.PASSES, "joint", (lambda forward, x, y, *rest: x.mean(),))
    recipe = replace(RECIPE, amp=False)
    cuda = torch.device("cuda")
    data, seeds = toy_data(), []
    for epoch in (0, 1, 0):
        with FakeTensorMode(), _EpochOps() as ops:
            run = SimpleNamespace(recipe=recipe, device=cuda, processes=Processes(), forward=object(),
                                  model_config=SimpleNamespace(image_size=data.image_size), batches=len(data.train_labels) // recipe.batch_size,
                                  train_images=torch.empty(data.train_images.shape, dtype=torch.uint8, device=cuda),
                                  train_labels=torch.empty(data.train_labels.shape, dtype=torch.long, device=cuda),
                                  mean=torch.empty(3, device=cuda), std=torch.empty(3, device=cuda))
            made.clear()
            training.train_one_epoch(run, SimpleNamespace(start_epoch=lambda epoch: None, stage=None, step=None),
                                     epoch)
        # the order is drawn on the host (the same on every device); flips and crops on the run's device
        assert ops.draws == {("randperm", "cpu"), ("rand", "cuda"), ("randint", "cuda")}
        assert ops.host_to_device and all(ops.host_to_device)  # the minibatches' indices alone, not waited for
        on_device = [g for g in made if g.device.type == "cuda"]
        assert len(on_device) == 1
        seeds.append(on_device[0].initial_seed())
    assert seeds[0] == seeds[2] != seeds[1]  # seeded by (seed, epoch): a resumed epoch draws what it drew


def test_the_step_log_has_every_optimizer_step_with_its_learning_rate_loss_and_gradient_norm(tmp_path):
    recipe = replace(RECIPE, method="authors", epochs=2)
    result = train(MODEL, DATA, recipe, data=toy_data(), results_root=tmp_path, progress=False, log_every=5)
    log = read_step_log(step_log_path(run_paths(result.name, result.key, tmp_path)[0]))
    batches = 96 // 16
    assert len(log) == 2 * batches * (3 + 1) and list(log["step"]) == list(range(len(log)))
    # per minibatch of pass 1, a step on each prefix, clipped at 1.0 as the authors' code does; then pass 2
    first_batch = log[log["epoch"] == 1].head(3)
    assert list(first_batch["loss_on"]) == ["branches 1-1", "branches 1-2", "branches 1-3"]
    pass_two = log[(log["epoch"] == 1)].iloc[3 * batches:]
    assert set(pass_two["loss_on"]) == {"branches 1-3"} and pass_two["clip"].isna().all()
    clipped = log[log["clip"].notna()]
    assert (clipped["clipped"] == (clipped["grad_norm"] > 1.0)).all() and (log["grad_norm"] > 0).all()
    # the epoch's loss in the record is the batch-weighted mean of its last pass's steps
    last_pass = log[log["epoch"] == 2].iloc[3 * batches:]
    assert result.history[-1]["train_loss"] == pytest.approx(last_pass["loss"].mean(), rel=1e-6)
    assert result.history[-1]["lr"] == last_pass["lr"].iloc[-1]
    assert clipping_summary(log).set_index("loss_on").loc["branches 1-1", "steps"] == 2 * batches


def test_a_clip_smaller_than_every_gradient_norm_clips_every_step(tmp_path):
    result = train(MODEL, DATA, replace(RECIPE, grad_clip=1e-4, epochs=1), data=toy_data(), results_root=tmp_path,
                   progress=False)
    log = read_step_log(step_log_path(run_paths(result.name, result.key, tmp_path)[0]))
    assert log["clipped"].all() and (log["clip"] == 1e-4).all()


def test_prefix_accuracy_curves_give_every_prefix_after_every_epoch(tmp_path):
    result = train(MODEL, DATA, replace(RECIPE, method="prefix"), data=toy_data(), results_root=tmp_path,
                   progress=False)
    curves = prefix_accuracy_curves(result)
    assert len(curves) == RECIPE.epochs * MODEL.num_branches
    last = curves[curves["epoch"] == RECIPE.epochs].set_index("prefix")["test_acc"]
    assert list(last) == result.history[-1]["prefix_test_acc"] and last[3] == result.final_test_acc


def test_a_compiled_run_is_another_run_with_the_same_numbers_in_expectation(tmp_path, monkeypatch):
    compiled_functions = []
    compile_for_real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda function, **options: compiled_functions.append(function)
                        or compile_for_real(function, **options))
    recipe = replace(RECIPE, epochs=1, augment=())
    model = replace(MODEL, dropout=0.0)  # compiled branches draw their dropout masks from a stream of their own
    eager = train(model, DATA, recipe, data=toy_data(), results_root=tmp_path, progress=False)
    assert compiled_functions == [] and eager.compiled is None
    compiled = train(model, DATA, replace(recipe, compile=True), data=toy_data(), results_root=tmp_path,
                     progress=False)
    # each branch on its own (tests/test_compile.py holds what that compiles)
    assert [type(f.__self__) for f in compiled_functions] == [Branch] * MODEL.num_branches
    assert compiled.compiled["graphs"] > 0
    assert compiled.key != eager.key and compiled.config["recipe"]["compile"] is True
    assert compiled.precision == eager.precision == "fp32"  # amp is CUDA's alone
    # fused kernels round differently: close, not equal
    assert compiled.history[0]["train_loss"] == pytest.approx(eager.history[0]["train_loss"], rel=1e-3)


# --- the command line ----------------------------------------------------------------------------------------

CLI_RUN = ["--profile", "ci", "--model", "1-2", "--dataset", "fashion_mnist", "--epochs", "1", "--n-train", "64",
           "--n-test", "40", "--seed", "3"]


def test_the_command_line_trains_one_run_into_the_profiles_cache_and_answers_it_again_from_there(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    assert main(CLI_RUN + ["--method", "prefix"]) == 0
    (record,) = (tmp_path / "ci" / "runs").glob("*.json")
    values = json.loads(record.read_text())
    assert values["name"] == "fashion_mnist-Para-F-1-2-prefix"
    assert (values["config"]["recipe"]["method"], values["config"]["recipe"]["seed"]) == ("prefix", 3)
    assert (values["config"]["data"]["n_train"], values["config"]["data"]["n_test"]) == (64, 40)
    assert len(values["history"]) == 1 and values["config"]["model"]["width"] == 32  # the ci profile's width
    assert main(CLI_RUN + ["--method", "prefix"]) == 0
    assert "from the run cache" in capsys.readouterr().out.splitlines()[-1]
    assert len(list((tmp_path / "ci" / "runs").glob("*.json"))) == 1


def test_the_gpu_profile_runs_through_the_same_path_at_a_ci_size(tmp_path, monkeypatch):
    # Everything the gpu profile sets (width 192, batch 512, crop and flip, the full-data recipe) but the image
    # count and torch.compile, which the test above covers; on the CPU, asked for (auto there would refuse it).
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    args = ["--profile", "gpu", "--model", "1-2", "--dataset", "fashion_mnist", "--epochs", "1", "--n-train", "100",
            "--n-test", "50", "--no-compile", "--device", "cpu"]
    assert main(args) == 0
    (record,) = (tmp_path / "gpu" / "runs").glob("*.json")
    values = json.loads(record.read_text())
    assert values["config"]["recipe"]["augment"] == ["flip", "crop"] and values["config"]["model"]["width"] == 192
    assert values["config"]["recipe"]["batch_size"] == 512 and values["precision"] == "fp32"
    assert values["config"]["recipe"]["warmup_epochs"] == 1.0  # the profile's 3 would outlast the 1-epoch run


@pytest.mark.parametrize("args, bad", [
    (["--profile", "nope", "--model", "1-2", "--dataset", "mnist"], "nope"),
    (CLI_RUN + ["--method", "backprop"], "backprop"),
    (["--profile", "ci", "--dataset", "mnist"], "--model"),
    (CLI_RUN + ["--epochs", "many"], "many"),
])
def test_bad_command_line_arguments_give_one_line_naming_the_value(args, bad, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    with pytest.raises(SystemExit) as caught:
        main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert caught.value.code == 2 and len(lines) == 1 and bad in lines[0]
    assert not (tmp_path / "ci").exists()


def test_a_config_error_on_the_command_line_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    assert main(CLI_RUN + ["--lr", "-1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Recipe.lr=-1" in lines[0]


def test_a_resumed_run_drops_the_logged_steps_its_checkpoint_does_not_have_and_a_row_cut_short(tmp_path):
    # A kill after an epoch's rows were appended but before its checkpoint was written, mid-row in the next one.
    result = train(MODEL, DATA, replace(RECIPE, epochs=2), data=toy_data(), results_root=tmp_path, progress=False)
    path = step_log_path(run_paths(result.name, result.key, tmp_path)[0])
    full = read_step_log(path)
    path.write_text(path.read_text() + "3,12,0,branches 1-3,0.001,1.2")
    keep_epochs(path, 1)
    pd.testing.assert_frame_equal(read_step_log(path), full[full["epoch"] == 1])
    keep_epochs(path, 0)  # a fresh start keeps no log
    assert not path.exists()


def test_with_tensorboard_installed_a_run_also_writes_its_steps_as_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(MODEL, DATA, replace(RECIPE, epochs=2), data=toy_data(), results_root=tmp_path, progress=False)
    events = EventAccumulator(str(tmp_path / "tensorboard" / f"{result.name}-{result.key}"))
    events.Reload()
    log = read_step_log(step_log_path(run_paths(result.name, result.key, tmp_path)[0]))
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(log["step"])
    assert [e.value for e in losses] == pytest.approx(list(log["loss"]), rel=1e-6)
    assert [e.value for e in events.Scalars("test/accuracy")] == pytest.approx([h["test_acc"] for h in result.history])


def test_a_text_progress_line_per_epoch_keeps_every_number_whole(tmp_path, monkeypatch, capsys):
    import re

    monkeypatch.setenv("PARAFORMER_PROGRESS", "text")
    result = train(MODEL, DATA, RECIPE, name="a-rather-long-run-name-for-a-narrow-log-" + "x" * 40, data=toy_data(),
                   results_root=tmp_path, progress=True)
    lines = re.split(r"[\r\n]+", capsys.readouterr().out)
    # "<name> [cpu]: epoch 2/3 [00:01<00:00, 1.71epoch/s, acc=75.00, loss=1.042]", whole up to the closing bracket
    ends = [re.search(r"epoch (\d+)/3 .*acc=(\d+\.\d\d), loss=(\d+\.\d{3})\]$", line) for line in lines]
    epochs = {int(m.group(1)): (float(m.group(2)), float(m.group(3))) for m in ends if m}
    assert sorted(epochs) == [1, 2, 3]
    for entry in result.history:
        acc, loss = epochs[entry["epoch"]]
        assert (acc, loss) == (pytest.approx(entry["test_acc"], abs=5e-3), pytest.approx(entry["train_loss"], abs=5e-4))


def test_the_progress_label_names_the_method_only_where_the_run_name_does_not():
    from paraformer.training.progress import progress_label

    cpu = torch.device("cpu")
    assert progress_label("cifar10-task2-expand", Recipe(method="joint"), cpu) == "cifar10-task2-expand [cpu]"
    assert progress_label("cifar10-Para-F-1-6-prefix", Recipe(method="prefix"), cpu) == "cifar10-Para-F-1-6-prefix [cpu]"
    assert progress_label("my-run", Recipe(method="frozen"), cpu) == "my-run (frozen) [cpu]"


# --- where a run goes, and what it hands on: the device's zero, evaluation's logits ------------------------------

def test_a_step_without_gradients_logs_a_zero_norm_on_the_losss_device():
    from paraformer.core.steps import optimizer_step

    # "meta" stands for a device that is not the CPU: the step log stacks the norms with the losses on their device
    untouched = torch.nn.Parameter(torch.zeros(3, device="meta"))
    weight = torch.ones((), device="meta", requires_grad=True)
    norm = optimizer_step(torch.optim.AdamW([untouched]), weight * 2.0, parameters=[untouched])
    assert untouched.grad is None and norm.device == torch.device("meta") and norm.shape == ()


def test_evaluation_under_bf16_autocast_predicts_from_fp32_logits(monkeypatch):
    import paraformer.training.evaluation as evaluation
    from paraformer.training.evaluation import predict

    model = ParaFormer(MODEL).eval()
    with torch.no_grad():  # logits = the bias whatever the image: 1.0 and 1.002 are one bf16 value, a tie
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([1.0, 1.002, -1.0, -1.0]))
    assert torch.tensor([1.0, 1.002]).bfloat16().unique().numel() == 1
    data = toy_data()
    # bf16 autocast on the CPU, as a CUDA run evaluates (autocast() turns it on for CUDA only)
    monkeypatch.setattr(evaluation, "autocast",
                        lambda device, amp, dtype="bfloat16": torch.autocast("cpu", dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(prepare_batch(data.test_images[:4], data, MODEL, torch.device("cpu"))).dtype == torch.bfloat16
    (predicted,) = predict(model, data.test_images, data, RECIPE, lambda m, x: [m(x)])
    prefixes = predict(model, data.test_images, data, RECIPE, lambda m, x: m.prefix_logits(x))
    assert set(predicted.tolist()) == {1} and all(set(p.tolist()) == {1} for p in prefixes)  # fp32's argmax
    assert not model.head._forward_hooks  # nothing left on the model


# --- the device a profile runs on ----------------------------------------------------------------------------------

def test_a_gpu_profile_without_cuda_is_refused_in_one_line_unless_the_cpu_is_asked_for(monkeypatch, tmp_path, capsys):
    from paraformer.core.steps import ALLOW_CPU, NoCudaError, cuda_unavailable_reason
    from paraformer.experiments.display import check_parameters, declare_parameters
    from paraformer.experiments.profiles import GPU_PROFILES, profile_device
    from paraformer.tools import bench, estimate

    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    monkeypatch.delenv(ALLOW_CPU, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # e.g. a driver too old for this torch build
    assert GPU_PROFILES == ("gpu", "paper")
    for name in GPU_PROFILES:
        with pytest.raises(NoCudaError) as refused:
            profile_device(name)
        error = refused.value
        assert (error.needs, error.torch_version, error.cuda_build, error.available) == (
            f"profile {name!r}", torch.__version__, torch.version.cuda, False)
        assert error.reason == cuda_unavailable_reason() and len(str(error).splitlines()) == 1
        assert profile_device(name, "cpu") == torch.device("cpu")  # asked for by name
    assert profile_device("ci") == profile_device("quick") == torch.device("cpu")  # they keep auto -> CPU
    # torch's own reason, its first sentence
    too_old = ("The NVIDIA driver on your system is too old (found version 12020). Please update your GPU driver by "
               "downloading and installing a new version from the URL: http://www.nvidia.com/Download/index.aspx")

    def old_driver():
        raise RuntimeError(too_old)
    monkeypatch.setattr(torch.cuda, "init", old_driver)
    assert cuda_unavailable_reason() == "The NVIDIA driver on your system is too old (found version 12020)"
    # every way in: a notebook's first check, the training, benchmark and estimate command lines (one line, code 2)
    namespace = {"profile": "gpu"}
    declare_parameters(namespace)
    with pytest.raises(NoCudaError):
        check_parameters(namespace)
    capsys.readouterr()
    for tool, argv in ((main, ["--profile", "gpu", "--model", "1-2", "--dataset", "fashion_mnist"]),
                       (bench.main, ["--profile", "gpu", "--only", "strategies"]),
                       (estimate.main, ["--profile", "paper"])):
        assert tool(argv) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "gpu").exists()  # refused before anything was written
    monkeypatch.setenv(ALLOW_CPU, "1")
    assert profile_device("gpu") == torch.device("cpu")
    check_parameters(namespace)
