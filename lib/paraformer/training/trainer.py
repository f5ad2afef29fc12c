"""The trainer: `train(model_config, data_config, recipe) -> RunResult`, with a run cache and exact resume.

In order: `train` returns a finished run from the run cache (`paraformer.core.runcache`), or `start_run` sets one
up; each epoch is `train_one_epoch` (each minibatch goes to the method's update in `paraformer.core.progressive`,
which calls `StageTraining.step` per optimizer step), `evaluate_epoch` and `save_checkpoint`; `finish_run` writes.

The same path runs on every device, so the CPU tests cover the GPU's: the decoded uint8 images stay on the device,
where each minibatch is gathered, augmented (`data.augment_batch`) and normalized; nothing is read back to the host
during an epoch but the step log (`paraformer.core.runlog`). Resume is exact because the generators are re-seeded
from (seed, epoch) every epoch and the learning rate is a function of the step (docs/run-cache.md).

How a step computes its gradient, and which rank computes which part, is this process's `Processes`
(`paraformer.parallel.processes`). Rank 0 alone writes; a failed or hung rank raises `RankFailure`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..core import progressive
from ..core.compilation import CompileCount, CompileLimitError, FailOnRecompileLimitHit
from ..core.config import ConfigError, DataConfig, ModelConfig, Recipe
from ..core.data import ImageData, augment_batch, load_data, normalization, normalize, stratified_subset
from ..core.files import atomic_save, atomic_write_json, check_writable
from ..core.model import ParaFormer
from ..core.provenance import code_version, device_name
from ..core.runcache import (Initialization, RunCacheError, RunResult, StaleRunWarning, data_fingerprint_of, encode_labels,
                             load_checkpoint, load_trained_model, read_record, remove_leftovers, retrain_policy,
                             run_key, run_name, run_paths, step_log_path, training_allowed)
from ..core.runlock import RunLock, lock_path
from ..core.runlog import SilentStepLog, StepLog
from ..core.steps import autocast, build_optimizer, grad_scaler, optimizer_step, precision, resolve_device
from ..parallel.processes import Processes, RankFailure, check_layout, join
from .evaluation import accuracy, evaluate, evaluate_prefixes, predict
from .numerics import code_digest, current_numerics, is_stale
from .progress import progress_bar, progress_label


def learning_rate(step: int, total_steps: int, warmup_steps: int, recipe: Recipe) -> float:
    if step < warmup_steps:
        return recipe.lr * (step + 1) / warmup_steps
    if recipe.schedule == "constant":
        return recipe.lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --- one run, piece by piece ----------------------------------------------------------------------------

@dataclass
class TrainingRun:
    """What the pieces of one run share: its identity, its model and data on the device, and its progress."""

    name: str
    key: str
    model_config: ModelConfig
    data_config: DataConfig
    recipe: Recipe
    fingerprint: str  # of the data (part of the key)
    paths: tuple[Path, Path, Path]  # record, checkpoint, weights (runcache.run_paths)
    device: torch.device
    model: ParaFormer
    # the model as training calls it: `model` itself (its branches compiled with Recipe.compile), or its MGRIT solver
    # (Recipe.solver)
    forward: torch.nn.Module
    data: ImageData  # as loaded (on the CPU): names, normalization, the test labels evaluation compares with
    train_images: torch.Tensor  # uint8, on `device`
    train_labels: torch.Tensor  # on `device`
    test_images: torch.Tensor  # uint8, on `device`
    mean: torch.Tensor  # normalization constants, on `device`
    std: torch.Tensor
    stages: list[progressive.Stage]
    history: list[dict]  # one entry per finished epoch
    wall_seconds: float  # training + evaluation, summed over the sessions of this run
    resume: dict | None  # the checkpoint this session resumed from
    step_log: StepLog | SilentStepLog
    curve_index: torch.Tensor | None = None  # (CPU) of the test images scored after every epoch; None = all
    processes: Processes = Processes()  # this rank's place in a multi-process run (one process by default)
    compile_count: CompileCount | None = None  # with Recipe.compile: what Dynamo compiles from the run's start

    @property
    def epochs(self) -> int:
        return self.stages[-1].first_epoch + self.stages[-1].num_epochs

    @property
    def batches(self) -> int:
        return math.ceil(len(self.train_labels) / self.recipe.batch_size)

    def steps_per_epoch(self, stage: progressive.Stage) -> int:
        return self.batches * sum(progressive.steps_per_batch(self.recipe.method, stage.active_branches))

    def first_step(self, epoch: int) -> int:
        """Optimizer steps the run takes before `epoch` (the step log's step numbers count them)."""
        return sum(self.steps_per_epoch(s) * max(0, min(epoch - s.first_epoch, s.num_epochs)) for s in self.stages)


def start_run(model_config: ModelConfig, data_config: DataConfig, recipe: Recipe, data: ImageData, name: str,
              key: str, fingerprint: str, parent: RunResult | None, init: Initialization | None,
              results_root: Path | None, log_every: int, processes: Processes = Processes()) -> TrainingRun:
    """The model (with a parent run's or the given weights), its stages, the data on the device, the checkpoint."""
    paths = run_paths(name, key, results_root)
    if processes.writes:
        for folder in {path.parent for path in paths}:
            check_writable(folder)
    device = resolve_device(recipe.device)
    if processes.distributed and device.type == "cuda":  # one GPU per rank, chosen when joining the group
        device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(recipe.seed)
    model = ParaFormer(model_config).to(device)
    inherited = frozenset()
    if parent is not None:
        new = model.inherit(load_trained_model(parent, results_root, device))
        inherited = frozenset(n for n, _ in model.named_parameters()) - frozenset(new)
    if init is not None:
        missing, unexpected = model.load_state_dict(init.state_dict, strict=False)
        if unexpected or any(not name.startswith("head.") for name in missing):
            raise ConfigError(f"initial weights from {init.source} do not fit {model_config.name}: unexpected "
                              f"{sorted(unexpected)[:3]}, missing {sorted(missing)[:3]} (only head.* may be missing)")
    stages = progressive.plan(model, recipe, inherited)
    history, wall_seconds, state = [], 0.0, load_checkpoint(paths[1], model, device)
    if state is not None:
        model.load_state_dict(state["model"])
        history, wall_seconds = state["history"], state["wall_seconds"]
    as_float = dict(dtype=torch.float32, device=device)
    mean, std = normalization(data, recipe.normalization)
    check_layout(model, recipe, len(data.train_labels))
    compile_count = CompileCount() if recipe.compile else None
    run = TrainingRun(
        name=name, key=key, model_config=model_config, data_config=data_config, recipe=recipe,
        fingerprint=fingerprint, paths=paths, device=device, model=model,
        forward=processes.training_module(model, recipe), data=data,
        train_images=data.train_images.to(device), train_labels=data.train_labels.to(device),
        test_images=data.test_images.to(device), mean=torch.tensor(mean, **as_float),
        std=torch.tensor(std, **as_float), stages=stages, history=history, wall_seconds=wall_seconds,
        resume=state, step_log=SilentStepLog(), curve_index=curve_subset(data, data_config), processes=processes,
        compile_count=compile_count)
    if processes.writes:  # TensorBoard's events under the results folder that holds runs/
        tensorboard = paths[0].parent.parent / "tensorboard" / f"{name}-{key}"
        run.step_log = StepLog(step_log_path(paths[0]), len(history), log_every, tensorboard,
                               run.first_step(len(history)))
    return run


class StageTraining:
    """One stage's optimizer and learning-rate schedule; the methods' updates call `step` per optimizer step."""

    def __init__(self, run: TrainingRun, stage: progressive.Stage):
        self.run, self.stage = run, stage
        progressive.set_trainable(run.model, stage)
        self.optimizer = build_optimizer(run.model, run.recipe, run.device)
        self.scaler = grad_scaler(run.device, run.recipe.amp, run.recipe.amp_dtype)
        if run.resume is not None and run.resume["stage"] == stage.index:  # resuming inside this stage
            self.optimizer.load_state_dict(run.resume["optimizer"])
            if self.scaler is not None and run.resume.get("scaler"):
                self.scaler.load_state_dict(run.resume["scaler"])
        self.trainable = [p for p in run.model.parameters() if p.requires_grad]
        self.steps_per_epoch = run.steps_per_epoch(stage)
        self.total_steps = self.steps_per_epoch * stage.num_epochs
        self.warmup_steps = round(run.recipe.warmup_epochs * self.steps_per_epoch)
        self.first_step = run.first_step(stage.first_epoch)  # of the stage, counted over the whole run
        self.step_count, self.lr, self.epoch = 0, 0.0, stage.first_epoch

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step_count = epoch, (epoch - self.stage.first_epoch) * self.steps_per_epoch

    def step(self, loss: torch.Tensor, clip: float | None, loss_on: str) -> None:
        """`optimizer_step` on `loss` at the schedule's learning rate, clipped to `clip` (None: not); log the step."""
        self.lr = learning_rate(self.step_count, self.total_steps, self.warmup_steps, self.run.recipe)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        norm = optimizer_step(self.optimizer, loss, self.trainable, clip,
                              lambda: self.run.processes.complete_gradients(self.run.model), self.scaler)
        self.run.step_log.record(self.epoch + 1, self.first_step + self.step_count, self.stage.index, loss_on,
                                 self.lr, loss, norm, clip)
        self.step_count += 1


def train_one_epoch(run: TrainingRun, training: StageTraining, epoch: int) -> float:
    """The method's passes over the training images, each in a fresh order; returns the last pass's mean loss."""
    recipe, n, processes = run.recipe, len(run.train_labels), run.processes
    seed = recipe.seed * 1_000_003 + epoch
    generator = torch.Generator().manual_seed(seed)  # the same order on every rank
    # flips and crops are drawn where the images are: draws from a CPU generator would be copied to the device at
    # every step, each copy a wait for the device's queue. On the CPU they come from the order's own generator,
    # interleaved with it as ever, so that the CPU's numbers stay bit for bit.
    draws = generator if run.device.type == "cpu" else torch.Generator(device=run.device).manual_seed(seed)
    torch.manual_seed(processes.epoch_seed(seed))  # dropout and RandAugment
    training.start_epoch(epoch)
    if hasattr(run.forward, "start_epoch"):  # a solver or scheme whose state follows the step number
        run.forward.start_epoch(run.first_step(epoch), run.history)
    for update in progressive.PASSES[recipe.method]:
        order = torch.randperm(n, generator=generator)
        # float64, as the host's float the log was first summed in: the committed runs' losses stay bit for bit
        loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
        for i in range(run.batches):
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size].to(run.device, non_blocking=True)
            images = augment_batch(run.train_images[idx], recipe.augment, draws, recipe.crop_padding,
                                   recipe.randaugment_magnitude, recipe.randaugment, run.model_config.image_size)
            x, y = processes.share(normalize(images, run.mean, run.std), run.train_labels[idx])
            with autocast(run.device, recipe.amp, recipe.amp_dtype):
                loss_sum += update(run.forward, x, y, training.stage, recipe, training.step) * len(y)
        loss_sum = processes.minibatch_total(loss_sum)
    mean_loss = (loss_sum / n).item()  # the epoch's one wait for the device, besides the step log
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"{run.name}: training loss became {mean_loss} in epoch {epoch + 1}; lower Recipe.lr")
    return mean_loss


def evaluate_epoch(run: TrainingRun, stage: progressive.Stage) -> dict:
    """Accuracy of the model being trained and, for a plain model, of every prefix of its branches, on the
    per-epoch test images (`DataConfig.n_test_per_epoch`)."""
    images, labels = run.test_images, run.data.test_labels
    if run.curve_index is not None:
        images, labels = images[run.curve_index.to(run.device)], labels[run.curve_index]
    args = (run.model, images, labels, run.data, run.recipe)
    if run.model_config.is_incremental:
        return {"test_acc": evaluate(*args)}
    prefix_accs = evaluate_prefixes(*args)
    return {"test_acc": prefix_accs[stage.active_branches - 1], "prefix_test_acc": prefix_accs}


def final_evaluation(run: TrainingRun) -> dict:
    """The final model on every test image: its accuracy, its predictions and, for a plain model, the accuracy
    of every prefix of its branches (the fields of the run record)."""
    labels = run.data.test_labels
    if run.model_config.is_incremental:
        (predicted,) = predict(run.model, run.test_images, run.data, run.recipe, lambda m, x: [m(x)])
        prefix_accs = None
    else:
        *prefixes, predicted = predict(run.model, run.test_images, run.data, run.recipe,
                                       lambda m, x: m.prefix_logits(x))
        prefix_accs = [accuracy(p, labels) for p in (*prefixes, predicted)]
    val_acc = None
    if len(run.data.val_labels):  # what choices between runs (learning rates, kept branches) may look at
        val_acc = evaluate(run.model, run.data.val_images.to(run.device), run.data.val_labels, run.data, run.recipe)
    return {"final_test_acc": accuracy(predicted, labels), "test_predictions": encode_labels(predicted.numpy()),
            "test_labels": encode_labels(labels.numpy()), "final_prefix_test_acc": prefix_accs,
            "final_val_acc": val_acc}


def save_checkpoint(run: TrainingRun, training: StageTraining) -> None:
    """What an interrupted run resumes from, beside the previous checkpoint (rank 0 alone: every rank is alike)."""
    if not run.processes.writes:
        return
    state = {"model": run.model.state_dict(), "optimizer": training.optimizer.state_dict(),
             "stage": training.stage.index, "history": run.history, "wall_seconds": run.wall_seconds}
    if training.scaler is not None:  # fp16: the loss scale it has reached
        state["scaler"] = training.scaler.state_dict()
    atomic_save(state, run.paths[1], keep_previous=True)


def curve_label(run: TrainingRun) -> str:
    """The progress line's name for the epoch's test accuracy: "acc" on every test image, "acc@1000" on the curves'
    subset, which is not the final accuracy (always on every image)."""
    return "acc" if run.curve_index is None else f"acc@{len(run.curve_index)}"


def curve_subset(data: ImageData, data_config: DataConfig) -> torch.Tensor | None:
    """Indices of the test images the learning curves use (`DataConfig.n_test_per_epoch`), or None for all."""
    n = data_config.n_test_per_epoch
    if n is None or n >= len(data.test_labels):
        return None
    return stratified_subset(data.test_labels, n, data_config.subset_seed)


def finish_run(run: TrainingRun, parent: RunResult | None, init: Initialization | None) -> RunResult:
    """Score the final model on every test image, save its weights, then (last) the record: a record has weights."""
    started = time.perf_counter()
    final = final_evaluation(run)
    run.wall_seconds += time.perf_counter() - started
    config = {"model": asdict(run.model_config), "data": asdict(run.data_config), "recipe": asdict(run.recipe)}
    if parent is not None:
        config["parent"] = {"name": parent.name, "key": parent.key}
    if init is not None:
        config["init"] = {"source": init.source, "digest": init.digest}
    result = RunResult(
        name=run.name, key=run.key,
        # in its JSON form (tuples as lists), so that a fresh result equals the one read back from the cache
        config=json.loads(json.dumps(config)),
        history=run.history, num_params=run.model.num_parameters(), **final,
        wall_seconds=run.wall_seconds, device=device_name(run.device), data_source=run.data.source,
        code_version=code_version(), torch_version=torch.__version__,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), code_digest=code_digest(), data_fingerprint=run.fingerprint,
        precision=precision(run.device, run.recipe.amp, run.recipe.amp_dtype), numerics=current_numerics(),
        compiled=run.compile_count.summary() if run.compile_count is not None else None,
    )
    if run.processes.writes:
        atomic_save(run.model.state_dict(), run.paths[2])
        atomic_write_json(result.to_json(), run.paths[0])
        remove_leftovers(*run.paths)
    return result


def _check_arguments(model_config, data_config, recipe, parent, init) -> None:
    for value, cls in ((model_config, ModelConfig), (data_config, DataConfig), (recipe, Recipe)):
        if not isinstance(value, cls):
            raise ConfigError(f"train() needs a {cls.__name__}, got {type(value).__name__}")
    if parent is not None and not isinstance(parent, RunResult):
        raise ConfigError(f"train(parent=...) needs the RunResult of a finished run, got {type(parent).__name__}")
    if parent is not None and not model_config.is_expansion_of(parent.model_config):
        raise ConfigError(f"{model_config.name} is not an expansion of the parent run's {parent.model_config.name}; "
                          "build the model config with ModelConfig.expanded")
    if init is not None and (parent is not None or not isinstance(init, Initialization)):
        raise ConfigError("train(init=...) needs an Initialization and no parent run (give one or the other)")
    if recipe.freeze_inherited and parent is None:
        raise ConfigError("Recipe.freeze_inherited=True needs a parent run to inherit from (train(parent=...))")


def _check_data_fits(model_config: ModelConfig, data_config: DataConfig, data: ImageData, recipe: Recipe) -> None:
    labels = data.num_classes if data_config.classes is None else max(data_config.classes) + 1
    if (labels, data.in_channels) != (model_config.num_classes, model_config.in_channels):
        raise ConfigError(f"{model_config.name} has num_classes={model_config.num_classes}, in_channels="
                          f"{model_config.in_channels} but {data.name} (classes {data_config.classes or 'all'}) needs "
                          f"{labels} outputs and has {data.in_channels} channel(s); set them to match")
    if data.image_size != model_config.image_size and not (
            "resize" in recipe.augment and data.image_size < model_config.image_size):
        raise ConfigError(f"{model_config.name} takes {model_config.image_size}px images but {data.name} has "
                          f"{data.image_size}px ones; set DataConfig.image_size={model_config.image_size} to resize "
                          f"them when decoding, or ModelConfig.image_size={data.image_size}")


def _cached_run(name: str, key: str, results_root: Path | None) -> RunResult | None:
    """The finished run from the cache, or None to train it (not there, or stale and PARAFORMER_RETRAIN=stale)."""
    policy = retrain_policy()
    record_path, checkpoint_path, weights_path = run_paths(name, key, results_root)
    remove_leftovers(record_path, checkpoint_path, weights_path)
    if not record_path.exists():
        return None
    result = _read_cached(name, key, results_root)
    if not is_stale(result):
        return result
    if policy != "stale":
        warnings.warn(f"run {name} ({record_path}) was trained by code whose numbers are not known to be this code's "
                      f"(its code {result.code_digest or '?'}, numerics {result.numerics or '?'}; now "
                      f"{code_digest()}, numerics {current_numerics() or 'not recorded: make numerics'}): "
                      "PARAFORMER_RETRAIN=stale (make reproduce RETRAIN=stale) retrains it", StaleRunWarning,
                      stacklevel=3)
        return result
    record_path.unlink()  # asked for: the run is trained again by this code
    weights_path.unlink(missing_ok=True)
    step_log_path(record_path).unlink(missing_ok=True)
    return None


def _read_cached(name: str, key: str, results_root: Path | None) -> RunResult:
    """The finished run's record, marked as read from the cache (on ranks other than 0: the record rank 0 found)."""
    result = read_record(run_paths(name, key, results_root)[0], key)
    result.cached = True
    return result


def train(model_config: ModelConfig, data_config: DataConfig, recipe: Recipe, *, name: str | None = None,
          data: ImageData | None = None, parent: RunResult | None = None, init: Initialization | None = None,
          results_root: Path | None = None, progress: bool = True,
          on_epoch_end: Callable[[dict], None] | None = None, log_every: int = 50) -> RunResult:
    """Train one model, or return its cached result, recorded under `results_root` (default: `paths.results_dir()`).
    `data`: already loaded for `data_config` (sweeps). `parent` (a finished run of the model this one expands) and
    `init`: starting weights, part of the key (docs/models-and-training.md). `on_epoch_end(entry)`: after each
    epoch's checkpoint is written. `log_every`: steps between step-log reads from the device."""
    _check_arguments(model_config, data_config, recipe, parent, init)
    processes = join(recipe)
    name = run_name(name, model_config, data_config, recipe)
    fingerprint = data_fingerprint_of(data_config, data)
    key = run_key(model_config, data_config, recipe, parent, init, fingerprint)
    # one owner per run: another process training it (a notebook, a farm's job) is waited for, and its record read
    owner = RunLock(lock_path(run_paths(name, key, results_root)[0])) if processes.writes else nullcontext()
    with owner:
        return _train_owned(model_config, data_config, recipe, name, key, fingerprint, data, parent, init,
                            results_root, progress, on_epoch_end, log_every, processes)


def _train_owned(model_config, data_config, recipe, name, key, fingerprint, data, parent, init, results_root,
                 progress, on_epoch_end, log_every, processes) -> RunResult:
    """`train` once this process owns the run (rank 0 holds its lock)."""
    # rank 0 decides (it alone may retrain a stale run, deleting its record); the others read what it found
    cached = _cached_run(name, key, results_root) if processes.writes else None
    if processes.agree(cached is not None):
        return cached if cached is not None else _read_cached(name, key, results_root)
    if not training_allowed():
        raise RunCacheError(run_paths(name, key, results_root)[0], "is not in the run cache and PARAFORMER_TRAIN=never "
                            "refuses to train it", "train it first (python -m paraformer.tools.farm submit), or unset "
                            "PARAFORMER_TRAIN")
    data = data if data is not None else load_data(data_config)
    _check_data_fits(model_config, data_config, data, recipe)
    run = start_run(model_config, data_config, recipe, data, name, key, fingerprint, parent, init, results_root,
                    log_every, processes)
    bar = progress_bar(run.epochs, progress_label(name, recipe, run.device), len(run.history),
                    progress and processes.writes)
    run.model.train()
    training = None
    try:
        for epoch in range(len(run.history), run.epochs):
            if training is None or epoch == training.stage.first_epoch + training.stage.num_epochs:
                training = StageTraining(run, progressive.stage_of(run.stages, epoch))
            started = time.perf_counter()
            entry = {"epoch": epoch + 1, "train_loss": train_one_epoch(run, training, epoch), "lr": training.lr,
                     "branches": training.stage.active_branches}
            if hasattr(run.forward, "epoch_summary"):  # a solver's state: the MGRIT cycles and checks
                entry.update(run.forward.epoch_summary())
            train_seconds = time.perf_counter() - started
            entry.update(evaluate_epoch(run, training.stage), train_seconds=train_seconds)
            entry["seconds"] = time.perf_counter() - started
            run.wall_seconds += entry["seconds"]
            run.history.append(entry)
            run.step_log.end_epoch(entry)  # before the checkpoint: a resumed run drops the rows it redoes
            save_checkpoint(run, training)
            if bar is not None:
                bar.set_postfix(loss=f"{entry['train_loss']:.3f}", refresh=False,
                                **{curve_label(run): f"{entry['test_acc']:.2f}"})
                bar.update(1)  # one line per epoch in text mode
            if on_epoch_end is not None:
                on_epoch_end(entry)
    except FailOnRecompileLimitHit as error:
        raise CompileLimitError(name) from error
    except RuntimeError as error:
        if processes.distributed and not isinstance(error, RankFailure):
            raise processes.failure(error) from error
        raise
    finally:
        run.step_log.close()
        if bar is not None:
            bar.close()
    return finish_run(run, parent, init)
