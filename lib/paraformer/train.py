"""Training: `train(model_config, data_config, recipe) -> RunResult`, with a run cache and exact resume.

A reader's map, in the order things happen. `train` checks its arguments and returns a finished run from the
run cache (`paraformer.runcache`) when there is one. Otherwise `start_run` builds the model (from a parent run's
or given weights where asked), plans its stages, puts the data on the device and resumes from the last
checkpoint. Each epoch is then `train_one_epoch` (the method's passes over the data; each minibatch goes to the
method's update in `paraformer.progressive`, which calls `StageTraining.step` for every optimizer step),
`evaluate_epoch` and `save_checkpoint`. `finish_run` saves the weights and writes the record.

The same path runs on every device, so the CPU tests cover the GPU's: the decoded uint8 images are held as one
tensor on the device; each minibatch is gathered, flipped and cropped there (`data.augment_batch`) and
normalized; on CUDA the step runs under bf16 autocast (`Recipe.amp`) with a fused AdamW, and `Recipe.compile`
runs the model through torch.compile. Nothing is read back to the host during an epoch but the step log
(`paraformer.runlog`), every `log_every` steps.

Resumed runs give the same numbers as uninterrupted ones because nothing random carries over between epochs:
the shuffling generator and the global RNG (dropout, RandAugment) are re-seeded from (seed, epoch) at the start
of every epoch, and the learning rate is a function of the step number.

Two recipe choices change how a step computes its gradient, never the rest of this path: `Recipe.solver="mgrit"`
solves the chain of a ViT's layers by MGRIT (`paraformer.parallel.layertrain`), and `Recipe.parallel` shares the
run across torchrun's processes by data, branch or layer parallelism (`paraformer.parallel.processes`: every
rank ends a step with the same gradient, rank 0 alone writes, a failed or hung rank raises `RankFailure`).

`python -m paraformer.train --help`: one run from the command line (for machines where nobody opens a notebook),
with the same run cache and records; `torchrun --nproc_per_node P -m paraformer.train ... --parallel data` the
same run on P processes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .config import (METHODS, PARALLELISMS, SOLVERS, ConfigError, DataConfig, ModelConfig, OneLineArgumentParser,
                     Recipe, results_dir)
from . import progressive
from .data import ImageData, augment_batch, load_data, normalize, stratified_subset
from .model import ParaFormer
from .parallel.layertrain import MGRITTraining
from .parallel.processes import (Processes, RankFailure, check_layout, data_share, join, sum_gradients,
                                 training_forward)
from .results import atomic_save, atomic_write_json, check_writable, code_digest, code_version
from .runcache import (RUN_FORMAT, Initialization, RunCacheError, RunResult, StaleRunWarning,  # noqa: F401 (public)
                       data_fingerprint_of, encode_labels, load_checkpoint, load_trained_model, read_record, remove_leftovers,
                       report_stale, retrain_policy, run_key, run_name, run_paths, stale_records, step_log_path)
from .runlog import SilentStepLog, StepLog

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Recipe.device={name!r} but CUDA is not available here; use device='auto' or 'cpu'")
    return device


def learning_rate(step: int, total_steps: int, warmup_steps: int, recipe: Recipe) -> float:
    if step < warmup_steps:
        return recipe.lr * (step + 1) / warmup_steps
    if recipe.schedule == "constant":
        return recipe.lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: torch.nn.Module, recipe: Recipe,
                    device: torch.device | None = None) -> torch.optim.Optimizer:
    # Weight decay on weight matrices only: decaying norms, biases, the CLS token and the position
    # embedding hurts ViTs.
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.dim() >= 2 and n not in ("cls_token", "pos_embed")]
    decay_ids = {id(p) for p in decay}
    other = [p for _, p in params if id(p) not in decay_ids]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": other, "weight_decay": 0.0}]
    # One fused kernel for all parameters on CUDA. Not on the CPU, where it would change the rounding of the
    # committed runs' updates for no measured gain.
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, **fused)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, **fused)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)


def prepare_batch(images: torch.Tensor, data: ImageData, model_config: ModelConfig,
                  device: torch.device) -> torch.Tensor:
    """uint8 images -> normalized float on `device`. Their size must be the model's: resizing is chosen when
    decoding (DataConfig.image_size), where it is part of the run key, never done here without a word."""
    if tuple(images.shape[-2:]) != (model_config.image_size,) * 2:
        raise ConfigError(f"{model_config.name} takes {model_config.image_size}px images but the data are "
                          f"{images.shape[-2]}x{images.shape[-1]}; set DataConfig.image_size={model_config.image_size} "
                          f"to resize them when decoding, or ModelConfig.image_size={images.shape[-1]}")
    return normalize(images.to(device, non_blocking=True), data.mean, data.std)


def precision(device: torch.device, recipe: Recipe) -> str:
    """What a run computes in: bf16 autocast where `Recipe.amp` asks and the device is CUDA, else fp32."""
    return "bf16 autocast" if recipe.amp and device.type == "cuda" else "fp32"


def _autocast(device: torch.device, recipe: Recipe):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision(device, recipe) != "fp32")


def evaluation_batch_size(device: torch.device) -> int:
    """Images per evaluation batch: large on a GPU, where small batches leave it idle; 512 on the CPU, as the
    committed runs were evaluated (a batch's size can change the last bit of its logits, hence a rare tie)."""
    return 4096 if device.type == "cuda" else 512


@torch.inference_mode()
def predict(model: ParaFormer, images: torch.Tensor, data: ImageData, recipe: Recipe,
            heads: Callable[[ParaFormer, torch.Tensor], list[torch.Tensor]], batch_size: int | None = None):
    """`heads(model, x)` gives a list of logit tensors from one forward pass; for each, every image's predicted
    label, on the CPU (batched, in evaluation mode; `batch_size` defaults to `evaluation_batch_size`)."""
    device = next(model.parameters()).device
    batch_size = batch_size or evaluation_batch_size(device)
    was_training = model.training
    model.eval()
    predictions = []
    for start in range(0, len(images), batch_size):
        x = prepare_batch(images[start:start + batch_size], data, model.config, device)
        with _autocast(device, recipe):
            predictions.append([logits.argmax(1) for logits in heads(model, x)])
    model.train(was_training)
    return [torch.cat(per_head).cpu() for per_head in zip(*predictions)]  # one transfer per head


def _accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (predicted == labels).sum().item() / len(labels)


def _nonempty(labels: torch.Tensor) -> None:
    if len(labels) == 0:
        raise ConfigError("cannot evaluate on an empty split (check DataConfig.n_test / val_fraction)")


def evaluate(model: ParaFormer, images: torch.Tensor, labels: torch.Tensor, data: ImageData,
             recipe: Recipe, num_branches: int | None = None, batch_size: int | None = None) -> float:
    """Top-1 accuracy in percent of `model` (or of its first `num_branches` branches)."""
    _nonempty(labels)
    (predicted,) = predict(model, images, data, recipe, lambda m, x: [m(x, num_branches=num_branches)], batch_size)
    return _accuracy(predicted, labels)


def evaluate_prefixes(model: ParaFormer, images: torch.Tensor, labels: torch.Tensor, data: ImageData,
                      recipe: Recipe, batch_size: int | None = None) -> list[float]:
    """Top-1 accuracy of every prefix model 1..num_branches, from one forward pass."""
    _nonempty(labels)
    predicted = predict(model, images, data, recipe, lambda m, x: m.prefix_logits(x), batch_size)
    return [_accuracy(p, labels) for p in predicted]


def _progress(total: int, desc: str, initial: int, enabled: bool):
    """One bar per run, one tick per epoch. Under papermill (PARAFORMER_PROGRESS=text, set by the Makefile)
    a plain-text bar that prints a line per epoch keeps the log readable; in Jupyter a widget."""
    if not enabled:
        return None
    if os.environ.get("PARAFORMER_PROGRESS") == "text":
        from tqdm import tqdm
        # no bar and no width limit: a fixed width cut the line mid-number once the metrics were appended
        return tqdm(total=total, desc=desc, initial=initial, unit="epoch", file=sys.stdout, mininterval=0,
                    dynamic_ncols=False, ncols=None,
                    bar_format="{desc}: epoch {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, initial=initial, unit="epoch")


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
    # the model as training calls it: `model` itself, its torch.compile wrapper, or its MGRIT solver (Recipe.solver)
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
    """The model (with a parent run's or the given weights), its stages, the data on the device, and the state
    of the last checkpoint if the run was interrupted before."""
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
    check_layout(model, recipe, len(data.train_labels))
    forward = model
    if recipe.solver == "mgrit":
        forward = MGRITTraining(model, recipe, distributed=processes.distributed)
    elif processes.distributed:
        forward = training_forward(model, recipe, processes)
    elif recipe.compile:
        forward = torch.compile(model)
    run = TrainingRun(
        name=name, key=key, model_config=model_config, data_config=data_config, recipe=recipe,
        fingerprint=fingerprint, paths=paths, device=device, model=model,
        forward=forward, data=data,
        train_images=data.train_images.to(device), train_labels=data.train_labels.to(device),
        test_images=data.test_images.to(device), mean=torch.tensor(data.mean, **as_float),
        std=torch.tensor(data.std, **as_float), stages=stages, history=history, wall_seconds=wall_seconds,
        resume=state, step_log=SilentStepLog(), curve_index=curve_subset(data, data_config), processes=processes)
    if processes.writes:
        root = Path(results_root) if results_root is not None else results_dir()
        tensorboard = root / "tensorboard" / f"{name}-{key}"
        run.step_log = StepLog(step_log_path(paths[0]), len(history), log_every, tensorboard,
                               run.first_step(len(history)))
    return run


class StageTraining:
    """One stage's optimizer and learning-rate schedule. `step` is the one place where weights change: the
    methods' updates call it once per optimizer step."""

    def __init__(self, run: TrainingRun, stage: progressive.Stage):
        self.run, self.stage = run, stage
        progressive.set_trainable(run.model, stage)
        self.optimizer = build_optimizer(run.model, run.recipe, run.device)
        if run.resume is not None and run.resume["stage"] == stage.index:  # resuming inside this stage
            self.optimizer.load_state_dict(run.resume["optimizer"])
        self.trainable = [p for p in run.model.parameters() if p.requires_grad]
        self.steps_per_epoch = run.steps_per_epoch(stage)
        self.total_steps = self.steps_per_epoch * stage.num_epochs
        self.warmup_steps = round(run.recipe.warmup_epochs * self.steps_per_epoch)
        self.first_step = run.first_step(stage.first_epoch)  # of the stage, counted over the whole run
        self.step_count, self.lr, self.epoch = 0, 0.0, stage.first_epoch

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step_count = epoch, (epoch - self.stage.first_epoch) * self.steps_per_epoch

    def step(self, loss: torch.Tensor, clip: float | None, loss_on: str) -> None:
        """Zero the gradients, backpropagate `loss`, clip the gradient norm to `clip` (None: no clipping) and
        take an optimizer step at the schedule's learning rate; log the step."""
        self.lr = learning_rate(self.step_count, self.total_steps, self.warmup_steps, self.run.recipe)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.run.recipe.parallel in ("branch", "layer"):  # every rank's gradient becomes the full one
            sum_gradients(self.run.model, self.run.processes)
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.run.model.parameters(), clip)
        else:  # the norm alone, for the log: the gradients are left as they are
            grads = [p.grad for p in self.trainable if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        self.optimizer.step()
        self.run.step_log.record(self.epoch + 1, self.first_step + self.step_count, self.stage.index, loss_on,
                                 self.lr, loss, norm, clip)
        self.step_count += 1


def train_one_epoch(run: TrainingRun, training: StageTraining, epoch: int) -> float:
    """The method's passes over the training images, each in a fresh order, one update per minibatch; returns
    the mean loss of the last pass."""
    recipe, n, processes = run.recipe, len(run.train_labels), run.processes
    generator = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)  # the same order on every rank
    torch.manual_seed(recipe.seed * 1_000_003 + epoch)
    sharded = recipe.parallel == "data"
    if sharded:  # each rank's share of a minibatch draws its own dropout masks, as other images would
        torch.manual_seed((recipe.seed * 1_000_003 + epoch) * 1_009 + processes.rank)
    training.start_epoch(epoch)
    if hasattr(run.forward, "start_epoch"):  # a solver or scheme whose state follows the step number
        run.forward.start_epoch(run.first_step(epoch), run.history)
    for update in progressive.PASSES[recipe.method]:
        order = torch.randperm(n, generator=generator)
        # float64, as the host's float the log was first summed in: the committed runs' losses stay bit for bit
        loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
        for i in range(run.batches):
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size].to(run.device, non_blocking=True)
            images = augment_batch(run.train_images[idx], recipe.augment, generator,
                                   randaugment_magnitude=recipe.randaugment_magnitude)
            x = normalize(images, run.mean, run.std)
            y = run.train_labels[idx]
            if sharded:
                share = data_share(len(idx), processes)
                x, y = x[share], y[share]
            with _autocast(run.device, recipe):
                loss_sum += update(run.forward, x, y, training.stage, recipe, training.step) * len(y)
        if sharded:
            loss_sum = processes.total(loss_sum)
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
    _nonempty(labels)
    if run.model_config.is_incremental:
        (predicted,) = predict(run.model, run.test_images, run.data, run.recipe, lambda m, x: [m(x)])
        prefix_accs = None
    else:
        *prefixes, predicted = predict(run.model, run.test_images, run.data, run.recipe,
                                       lambda m, x: m.prefix_logits(x))
        prefix_accs = [_accuracy(p, labels) for p in (*prefixes, predicted)]
    val_acc = None
    if len(run.data.val_labels):  # what choices between runs (learning rates, kept branches) may look at
        val_acc = evaluate(run.model, run.data.val_images.to(run.device), run.data.val_labels, run.data, run.recipe)
    return {"final_test_acc": _accuracy(predicted, labels), "test_predictions": encode_labels(predicted.numpy()),
            "test_labels": encode_labels(labels.numpy()), "final_prefix_test_acc": prefix_accs,
            "final_val_acc": val_acc}


def save_checkpoint(run: TrainingRun, training: StageTraining) -> None:
    """Everything an interrupted run resumes from, written atomically beside the previous checkpoint (by rank 0
    alone: every rank holds the same model and optimizer state)."""
    if not run.processes.writes:
        return
    atomic_save({"model": run.model.state_dict(), "optimizer": training.optimizer.state_dict(),
                 "stage": training.stage.index, "history": run.history, "wall_seconds": run.wall_seconds},
                run.paths[1], keep_previous=True)


def curve_subset(data: ImageData, data_config: DataConfig) -> torch.Tensor | None:
    """Indices of the test images the learning curves use (`DataConfig.n_test_per_epoch`), or None for all."""
    n = data_config.n_test_per_epoch
    if n is None or n >= len(data.test_labels):
        return None
    return stratified_subset(data.test_labels, n, data_config.subset_seed)


def finish_run(run: TrainingRun, parent: RunResult | None, init: Initialization | None) -> RunResult:
    """Score the final model on every test image, save its weights, then the record (last: a record always has
    its weights)."""
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
        precision=precision(run.device, run.recipe),
    )
    record_path, checkpoint_path, weights_path = run.paths
    if not run.processes.writes:
        return result
    atomic_save(run.model.state_dict(), weights_path)
    atomic_write_json(result.to_json(), record_path)
    remove_leftovers(record_path, checkpoint_path, weights_path)
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


def _check_data_fits(model_config: ModelConfig, data_config: DataConfig, data: ImageData) -> None:
    labels = data.num_classes if data_config.classes is None else max(data_config.classes) + 1
    if (labels, data.in_channels) != (model_config.num_classes, model_config.in_channels):
        raise ConfigError(
            f"{model_config.name} has num_classes={model_config.num_classes}, in_channels={model_config.in_channels} "
            f"but {data.name} (classes {data_config.classes or 'all'}) needs {labels} outputs and has "
            f"{data.in_channels} channel(s); set them to match"
        )
    if data.image_size != model_config.image_size:
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
    result = read_record(record_path, key)
    result.cached = True
    if not result.stale:
        return result
    if policy != "stale":
        warnings.warn(f"run {name} ({record_path}) was trained by other code (digest {result.code_digest or '?'}, "
                      f"now {code_digest()}); its numbers may differ from this code's: PARAFORMER_RETRAIN=stale "
                      f"(make reproduce RETRAIN=stale) retrains it", StaleRunWarning, stacklevel=3)
        return result
    record_path.unlink()  # asked for: the run is trained again by this code
    weights_path.unlink(missing_ok=True)
    step_log_path(record_path).unlink(missing_ok=True)
    return None


def _read_cached(name: str, key: str, results_root: Path | None) -> RunResult:
    """The record rank 0 found (as `_cached_run` returned it there)."""
    result = read_record(run_paths(name, key, results_root)[0], key)
    result.cached = True
    return result


def train(model_config: ModelConfig, data_config: DataConfig, recipe: Recipe, *, name: str | None = None,
          data: ImageData | None = None, parent: RunResult | None = None, init: Initialization | None = None,
          results_root: Path | None = None, progress: bool = True,
          on_epoch_end: Callable[[dict], None] | None = None, log_every: int = 50) -> RunResult:
    """Train one model (or return its cached result) and record it under `results_root` (default results/).

    `data` may be passed to avoid reloading when sweeping many models over the same `data_config`. `parent`
    is a finished run of the smaller model this one expands (`ModelConfig.expanded`): its weights are copied in
    before training, and its key becomes part of this run's. `init` gives starting weights instead (fine-tuning);
    their digest becomes part of the key. `on_epoch_end` is called with each epoch's log entry after its
    checkpoint is safely written (so interrupting it loses nothing). `log_every`: steps between reads of the
    step log's values from the device (the log itself has every step).
    """
    _check_arguments(model_config, data_config, recipe, parent, init)
    processes = join(recipe)
    name = run_name(name, model_config, data_config, recipe)
    fingerprint = data_fingerprint_of(data_config, data)
    key = run_key(model_config, data_config, recipe, parent, init, fingerprint)
    # rank 0 decides (it alone may retrain a stale run, deleting its record); the others read what it found
    cached = _cached_run(name, key, results_root) if processes.writes else None
    if processes.agree(cached is not None):
        return cached if cached is not None else _read_cached(name, key, results_root)
    data = data if data is not None else load_data(data_config)
    _check_data_fits(model_config, data_config, data)
    run = start_run(model_config, data_config, recipe, data, name, key, fingerprint, parent, init, results_root,
                    log_every, processes)
    bar = _progress(run.epochs, progress_label(name, recipe, run.device), len(run.history),
                    progress and processes.writes)
    run.model.train()
    training = None
    try:
        for epoch in range(len(run.history), run.epochs):
            if training is None or epoch == training.stage.first_epoch + training.stage.num_epochs:
                training = StageTraining(run, progressive.stage_of(run.stages, epoch))
            started = time.perf_counter()
            solver = run.forward if isinstance(run.forward, MGRITTraining) else None
            entry = {"epoch": epoch + 1, "train_loss": train_one_epoch(run, training, epoch), "lr": training.lr,
                     "branches": training.stage.active_branches}
            if solver is not None:
                entry.update(solver.epoch_summary())
            train_seconds = time.perf_counter() - started
            entry.update(evaluate_epoch(run, training.stage))
            entry["train_seconds"] = train_seconds
            entry["seconds"] = time.perf_counter() - started
            run.wall_seconds += entry["seconds"]
            run.history.append(entry)
            run.step_log.end_epoch(entry)  # before the checkpoint: a resumed run drops the rows it redoes
            save_checkpoint(run, training)
            if bar is not None:
                bar.set_postfix(loss=f"{entry['train_loss']:.3f}", acc=f"{entry['test_acc']:.2f}", refresh=False)
                bar.update(1)  # one line per epoch in text mode
            if on_epoch_end is not None:
                on_epoch_end(entry)
    except RuntimeError as error:
        if processes.distributed and not isinstance(error, RankFailure):
            raise processes.failure(error) from error
        raise
    finally:
        run.step_log.close()
        if bar is not None:
            bar.close()
    return finish_run(run, parent, init)


def progress_label(name: str, recipe: Recipe, device: torch.device) -> str:
    """The run's name, with its training method where the name does not say it (a custom name such as
    "cifar10-task2-expand" says what the run is; "joint" beside it would not), and the device."""
    method = "" if recipe.method == "joint" or name.endswith(f"-{recipe.method}") else f" ({recipe.method})"
    return f"{name}{method} [{device.type}]"


def device_name(device: torch.device) -> str:
    """The device in words, recorded with every run: the GPU's name, or the CPU's model and thread count (float
    rounding, and so the last digits of an accuracy, differ between kinds of CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = f"cpu: {line.split(':', 1)[1].strip()}"
                break
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"


# --- the command line -----------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from .experiments import PROFILES

    parser = OneLineArgumentParser(
        prog="python -m paraformer.train",
        description="Train one model with a profile's data, width and recipe, through the same train() as the "
                    "notebooks: the run cache answers a finished run at once and an interrupted one resumes. The "
                    "record goes to the profile's results folder (results/ for quick, results/<profile>/ otherwise).",
        epilog="example: python -m paraformer.train --model 1-6 --method authors --dataset cifar10 --profile gpu")
    parser.add_argument("--model", help="Para-F-m-n name: m layers per branch, n in all (1-6: six branches of one "
                                         "layer; 6-6: ViT-6)")
    parser.add_argument("--dataset", help="registry name (cifar10, fashion_mnist, ...) or an ImageFolder path")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="data subset, width and recipe to use")
    parser.add_argument("--method", choices=METHODS, default="joint", help="how the branches learn (default joint)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the profile's first)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="override the profile's batch size")
    parser.add_argument("--lr", type=float, default=None, help="override the profile's peak learning rate")
    parser.add_argument("--n-train", type=int, default=None, help="training images (default: the profile's)")
    parser.add_argument("--n-test", type=int, default=None, help="test images (default: the profile's)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: the profile's, auto)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the model (default: the profile's)")
    parser.add_argument("--step", default=None, help="the layers' step h (ModelConfig.step): a number, or 1/depth "
                                                     "(default 1, the ordinary layer)")
    parser.add_argument("--solver", choices=SOLVERS, default=None,
                        help="gradients by backprop (default) or by MGRIT across the layers of a ViT")
    parser.add_argument("--mgrit-iterations", type=int, nargs=2, metavar=("FORWARD", "ADJOINT"), default=None,
                        help="MGRIT cycles of the forward and adjoint solves (default 1 1)")
    parser.add_argument("--mgrit-coarsening", type=int, default=None, help="MGRIT coarsening factor (default 4)")
    parser.add_argument("--mgrit-check-every", type=int, default=None,
                        help="steps between checks of the MGRIT gradient against backprop (default 0: never)")
    parser.add_argument("--parallel", choices=PARALLELISMS[1:], default=None,
                        help="under torchrun: share the run across its processes by data, branch or layer "
                             "parallelism (layer: with --solver mgrit)")
    parser.add_argument("--name", default=None, help="run name (default: <dataset>-<model>[-<method>])")
    parser.add_argument("--log-every", type=int, default=50, help="steps between reads of the step log (default 50)")
    parser.add_argument("--report-stale", action="store_true",
                        help="only say how many cached runs of --profile were trained by other code")
    return parser


def _step_value(text: str, depth: int) -> float:
    if text == "1/depth":
        return 1.0 / depth
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--step {text!r} must be a number or 1/depth") from None


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.report_stale:
        return report_stale(args.profile)
    missing = [flag for flag, value in (("--model", args.model), ("--dataset", args.dataset),
                                        ("--profile", args.profile)) if value is None]
    if missing:
        parser.error(f"a run needs {', '.join(missing)}")
    from .data import DatasetNotFoundError
    from .experiments import get_profile

    try:
        profile = get_profile(args.profile)
        sizes = {k: v for k, v in (("n_train", args.n_train), ("n_test", args.n_test)) if v is not None}
        per_epoch = profile.n_test_per_epoch
        if args.n_test is not None and per_epoch is not None and per_epoch >= args.n_test:
            sizes["n_test_per_epoch"] = None  # fewer test images than the profile's curves use: curves on all
        data_config = replace(profile.data_config(args.dataset), **sizes)
        world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's
        overrides = {"method": args.method, "seed": args.seed if args.seed is not None else profile.seeds[0],
                     "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "device": args.device,
                     "compile": args.compile, "solver": args.solver, "mgrit_iterations": args.mgrit_iterations,
                     "mgrit_coarsening": args.mgrit_coarsening, "mgrit_check_every": args.mgrit_check_every,
                     "parallel": args.parallel, "processes": world if world > 1 or args.parallel else None}
        recipe = replace(profile.recipe, **{k: v for k, v in overrides.items() if v is not None})
        data = load_data(data_config)
        model_config = profile.model_config(args.model, data)
        if args.step is not None:
            model_config = replace(model_config, step=_step_value(args.step, model_config.num_layers))
        if int(os.environ.get("RANK", "0")) == 0:  # rank 0 speaks for a run across processes
            print(f"{model_config.name} ({args.method}) on {data!r}\n{recipe.describe()}", flush=True)
        result = train(model_config, data_config, recipe, name=args.name, data=data, log_every=args.log_every)
    except (ConfigError, DatasetNotFoundError, RunCacheError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RankFailure as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    record = run_paths(result.name, result.key)[0]
    origin = "from the run cache" if result.cached else f"trained in {result.wall_seconds:.0f} s on {result.device}"
    print(f"{result.name}: final test accuracy {result.final_test_acc:.2f}% ({origin}); record {record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
