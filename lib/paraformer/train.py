"""Training: `train(model_config, data_config, recipe) -> RunResult`, with a run cache and exact resume.

Every run is keyed by a hash of its full configuration (model, data, recipe). A finished run is a small
JSON record under `results/runs/`; asking for it again returns the record without training. An unfinished
run leaves a checkpoint after every epoch under `results/checkpoints/` and resumes from it.

Resumed runs give the same numbers as uninterrupted ones because nothing random carries over between
epochs: the shuffling generator and the global RNG (dropout, RandAugment) are re-seeded from
(seed, epoch) at the start of every epoch, and the learning rate is a function of the step number.

The key covers the configs and the data's fingerprint (changed pixels are another run), not the code: a record
made by other code (its `code_digest`) is still returned, with a `StaleRunWarning`, and retrained instead when
PARAFORMER_RETRAIN=stale (`make reproduce RETRAIN=stale`). Every file is written atomically; the checkpoint
keeps its previous version, so a damaged one is moved aside and the run goes on from the one before.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .config import ConfigError, DataConfig, ModelConfig, Recipe, from_dict, results_dir
from . import progressive
from .data import ImageData, augment_batch, data_fingerprint, load_data, normalize
from .model import ParaFormer
from .results import (atomic_save, atomic_write_json, check_writable, code_digest, code_version, previous_path,
                      remove_orphan_temporaries)

# Bump when a change to the training code makes old records incomparable (it is part of every run key).
RUN_FORMAT = 3


@dataclass
class RunResult:
    """What a finished run records; `config` holds the three dataclasses as dicts."""

    name: str
    key: str
    config: dict
    # per epoch: epoch, train_loss (mean of the epoch's last pass), lr (the last), branches (of the model being
    # trained), test_acc (of that model), prefix_test_acc (of every prefix, plain models), train_seconds
    # (training alone), seconds (with evaluation)
    history: list[dict]
    final_test_acc: float
    num_params: int
    wall_seconds: float  # training + evaluation time summed over all sessions of the run
    device: str
    data_source: str
    code_version: str
    torch_version: str
    finished_at: str
    code_digest: str = ""  # hash of the package's source (paraformer.results.code_digest); "" in older records
    data_fingerprint: str = ""  # the data source's fingerprint (paraformer.data.data_fingerprint); part of the key
    cached: bool = field(default=False, compare=False)  # True when loaded from the run cache

    @property
    def model_config(self) -> ModelConfig:
        return from_dict(ModelConfig, self.config["model"])

    @property
    def stale(self) -> bool:
        """True when this record was made by other code than the code running now."""
        return self.code_digest != code_digest()

    def to_json(self) -> dict:
        record = asdict(self)
        record.pop("cached")
        return record


class RunCacheError(RuntimeError):
    """A file of the run cache (record or weights) that cannot be used; the message names it and the fix."""

    def __init__(self, path: Path, problem: str, fix: str):
        self.path = Path(path)
        super().__init__(f"{self.path} {problem}; {fix}")


class StaleRunWarning(UserWarning):
    """A finished run was returned from the cache although other code trained it."""


def read_record(path: Path, key: str | None = None) -> RunResult:
    """A run record from its JSON file, refused with the file's name if it is damaged or not a record (of `key`)."""
    fix = "delete it to train the run again"
    try:
        values = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunCacheError(path, f"is not a readable run record ({error.__class__.__name__}: truncated?)", fix) from error
    known = {f.name for f in dataclasses.fields(RunResult)} - {"cached"}
    required = {f.name for f in dataclasses.fields(RunResult)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if not isinstance(values, dict) or set(values) - known or required - set(values):
        found = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise RunCacheError(path, f"is not a run record of this version (fields {found})", fix)
    if key is not None and values["key"] != key:
        raise RunCacheError(path, f"holds run {values['key']}, not {key}", fix)
    return RunResult(**values)


def retrain_policy() -> str:
    """PARAFORMER_RETRAIN: "" (use every finished run) or "stale" (retrain runs recorded by other code)."""
    policy = os.environ.get("PARAFORMER_RETRAIN", "")
    if policy not in ("", "stale"):
        raise ConfigError(f"PARAFORMER_RETRAIN={policy!r} is unknown; leave it empty, or set 'stale' to retrain the "
                          "runs made by other code")
    return policy


@dataclass(frozen=True)
class Initialization:
    """Weights a run starts from instead of its random initialization (e.g. imported pretrained weights).
    Parameters that `state_dict` lacks keep their random initialization: only a new head may be missing."""

    source: str  # where the weights come from, in words; recorded with the run
    state_dict: dict  # parameter name -> tensor, named as in the run's ParaFormer

    @functools.cached_property
    def digest(self) -> str:
        """A hash of the names and exact bytes of the weights: part of the run key, so that other weights
        under the same description never hit the cache."""
        h = hashlib.sha256()
        for name in sorted(self.state_dict):
            tensor = self.state_dict[name].detach().cpu().contiguous()
            h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]


def run_key(model_config: ModelConfig, data_config: DataConfig, recipe: Recipe,
            parent: "RunResult | None" = None, init: Initialization | None = None,
            data_fingerprint: str | None = None) -> str:
    """A stable hash of everything that decides a run's numbers: the configs, the data source's fingerprint
    (`data_fingerprint_of`), and the parent run's key or the initial weights."""
    payload = {"format": RUN_FORMAT, "model": asdict(model_config), "data": asdict(data_config),
               "recipe": asdict(recipe)}
    if data_fingerprint is not None:
        payload["data_fingerprint"] = data_fingerprint
    if parent is not None:
        payload["parent"] = parent.key
    if init is not None:
        payload["init"] = init.digest
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_fingerprint_of(data_config: DataConfig, data: ImageData | None = None) -> str:
    """The fingerprint of the data a run trains on: its source's (paraformer.data.data_fingerprint), or, for
    images built in memory without one, a hash of the images and labels themselves."""
    if data is None:
        return data_fingerprint(data_config)
    if getattr(data, "fingerprint", None):
        return data.fingerprint
    h = hashlib.sha256()
    for tensor in (data.train_images, data.train_labels, data.val_images, data.val_labels, data.test_images,
                   data.test_labels):
        h.update(f"{tensor.dtype}{tuple(tensor.shape)};".encode())
        h.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([data.classes, data.mean, data.std]).encode())
    return f"tensors:{h.hexdigest()[:16]}"


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")


def run_name(name: str | None, model_config: ModelConfig, data_config: DataConfig, recipe: Recipe) -> str:
    """The given run name, checked to stay inside the results folder, or one made from the configs."""
    if name is None:
        dataset = Path(data_config.dataset).name or "data"  # an ImageFolder path names its folder
        method = "" if recipe.method == "joint" else f"-{recipe.method}"
        name = re.sub(r"[^A-Za-z0-9_.+=-]", "_", f"{dataset}-{model_config.name}{method}").lstrip("._-") or "run"
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"run name {name!r} must be letters, digits and _ . + = - (not starting with a dot, no "
                          "'..' or '/'), so that its files stay inside the results folder")
    return name


def run_paths(name: str, key: str, root: Path | None = None) -> tuple[Path, Path, Path]:
    """(record JSON, resume checkpoint, final weights) of one run."""
    root = Path(root) if root is not None else results_dir()
    stem = f"{name}-{key}"
    return root / "runs" / f"{stem}.json", root / "checkpoints" / f"{stem}.pt", root / "models" / f"{stem}.pt"


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


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    # Weight decay on weight matrices only: decaying norms, biases, the CLS token and the position
    # embedding hurts ViTs.
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.dim() >= 2 and n not in ("cls_token", "pos_embed")]
    decay_ids = {id(p) for p in decay}
    other = [p for _, p in params if id(p) not in decay_ids]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": other, "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr)
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


def _autocast(device: torch.device, recipe: Recipe):
    enabled = recipe.amp and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def predict(model: ParaFormer, images: torch.Tensor, data: ImageData, recipe: Recipe,
            heads: Callable[[ParaFormer, torch.Tensor], list[torch.Tensor]], batch_size: int = 512):
    """`heads(model, x)` gives a list of logit tensors from one forward pass; for each, every image's predicted
    label (batched, in evaluation mode)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions = []
    for start in range(0, len(images), batch_size):
        x = prepare_batch(images[start:start + batch_size], data, model.config, device)
        with _autocast(device, recipe):
            predictions.append([logits.argmax(1).cpu() for logits in heads(model, x)])
    model.train(was_training)
    return [torch.cat(per_head) for per_head in zip(*predictions)]


def _accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (predicted == labels).sum().item() / len(labels)


def _nonempty(labels: torch.Tensor) -> None:
    if len(labels) == 0:
        raise ConfigError("cannot evaluate on an empty split (check DataConfig.n_test / val_fraction)")


def evaluate(model: ParaFormer, images: torch.Tensor, labels: torch.Tensor, data: ImageData,
             recipe: Recipe, num_branches: int | None = None, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent of `model` (or of its first `num_branches` branches)."""
    _nonempty(labels)
    (predicted,) = predict(model, images, data, recipe, lambda m, x: [m(x, num_branches=num_branches)], batch_size)
    return _accuracy(predicted, labels)


def evaluate_prefixes(model: ParaFormer, images: torch.Tensor, labels: torch.Tensor, data: ImageData,
                      recipe: Recipe, batch_size: int = 512) -> list[float]:
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
        return tqdm(total=total, desc=desc, initial=initial, unit="epoch", ascii=True, file=sys.stdout,
                    mininterval=0, dynamic_ncols=False, ncols=100)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, initial=initial, unit="epoch")


def train(model_config: ModelConfig, data_config: DataConfig, recipe: Recipe, *, name: str | None = None,
          data: ImageData | None = None, parent: RunResult | None = None, init: Initialization | None = None,
          results_root: Path | None = None, progress: bool = True,
          on_epoch_end: Callable[[dict], None] | None = None) -> RunResult:
    """Train (or fetch from the run cache) one model and return its record.

    `data` may be passed to reuse images already loaded for `data_config`. `parent` is a finished run whose
    model this one expands (`ModelConfig.expanded`): its weights are copied in before training, and its key
    becomes part of this run's. `init` gives starting weights instead (fine-tuning); their digest becomes part
    of the key. `on_epoch_end` is called with each epoch's log entry after its checkpoint is
    safely written (so interrupting it loses nothing).
    """
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
    name = run_name(name, model_config, data_config, recipe)
    policy = retrain_policy()
    fingerprint = data_fingerprint_of(data_config, data)
    key = run_key(model_config, data_config, recipe, parent, init, fingerprint)
    record_path, checkpoint_path, weights_path = run_paths(name, key, results_root)
    _remove_leftovers(record_path, checkpoint_path, weights_path)
    if record_path.exists():
        result = read_record(record_path, key)
        result.cached = True
        if not result.stale:
            return result
        if policy != "stale":
            warnings.warn(f"run {name} ({record_path}) was trained by other code (digest {result.code_digest or '?'}, "
                          f"now {code_digest()}); its numbers may differ from this code's: PARAFORMER_RETRAIN=stale "
                          f"(make reproduce RETRAIN=stale) retrains it", StaleRunWarning, stacklevel=2)
            return result
        record_path.unlink()  # asked for: the run is trained again by this code
        weights_path.unlink(missing_ok=True)

    data = data if data is not None else load_data(data_config)
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
    for folder in {record_path.parent, checkpoint_path.parent, weights_path.parent}:
        check_writable(folder)
    device = resolve_device(recipe.device)
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
    history: list[dict] = []
    wall_seconds, state = 0.0, load_checkpoint(checkpoint_path, model, device)
    if state is not None:
        model.load_state_dict(state["model"])
        history, wall_seconds = state["history"], state["wall_seconds"]

    n_train = len(data.train_labels)
    batches = math.ceil(n_train / recipe.batch_size)
    passes = progressive.PASSES[recipe.method]
    epochs = stages[-1].first_epoch + stages[-1].num_epochs
    bar = _progress(epochs, f"{name} {recipe.method} [{device.type}]", len(history), progress)
    model.train()
    stage, optimizer, loss_sum = None, None, float("nan")
    for epoch in range(len(history), epochs):
        if stage is None or epoch == stage.first_epoch + stage.num_epochs:
            stage = progressive.stage_of(stages, epoch)
            progressive.set_trainable(model, stage)
            optimizer = build_optimizer(model, recipe)
            if state is not None and state["stage"] == stage.index:  # resuming inside this stage
                optimizer.load_state_dict(state["optimizer"])
            steps_per_epoch = batches * sum(progressive.steps_per_batch(recipe.method, stage.active_branches))
            stage_steps = steps_per_epoch * stage.num_epochs
            warmup_steps = round(recipe.warmup_epochs * steps_per_epoch)
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)
        torch.manual_seed(recipe.seed * 1_000_003 + epoch)
        step_count, lr = (epoch - stage.first_epoch) * steps_per_epoch, 0.0

        def step(loss: torch.Tensor, clip: float | None) -> None:
            """One optimizer step at the schedule's learning rate; the methods' updates call it."""
            nonlocal step_count, lr
            lr = learning_rate(step_count, stage_steps, warmup_steps, recipe)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            step_count += 1

        for update in passes:
            order = torch.randperm(n_train, generator=generator)
            loss_sum, seen = 0.0, 0
            for i in range(batches):
                idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
                images = augment_batch(data.train_images[idx], recipe.augment, generator)
                x = prepare_batch(images, data, model_config, device)
                y = data.train_labels[idx].to(device, non_blocking=True)
                with _autocast(device, recipe):
                    loss_sum += update(model, x, y, stage, recipe, step) * len(idx)
                seen += len(idx)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"{name}: training loss became {loss_sum} in epoch {epoch + 1}; lower Recipe.lr")
        train_seconds = time.perf_counter() - started
        entry = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "lr": lr, "branches": stage.active_branches}
        if model_config.is_incremental:
            entry["test_acc"] = evaluate(model, data.test_images, data.test_labels, data, recipe)
        else:
            prefix_accs = evaluate_prefixes(model, data.test_images, data.test_labels, data, recipe)
            entry["test_acc"] = prefix_accs[stage.active_branches - 1]
            entry["prefix_test_acc"] = prefix_accs
        entry["train_seconds"] = train_seconds
        entry["seconds"] = time.perf_counter() - started
        wall_seconds += entry["seconds"]
        history.append(entry)
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "stage": stage.index,
                     "history": history, "wall_seconds": wall_seconds}, checkpoint_path, keep_previous=True)
        if bar is not None:
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", acc=f"{entry['test_acc']:.2f}")
            bar.update(1)
        if on_epoch_end is not None:
            on_epoch_end(entry)
    if bar is not None:
        bar.close()

    config = {"model": asdict(model_config), "data": asdict(data_config), "recipe": asdict(recipe)}
    if parent is not None:
        config["parent"] = {"name": parent.name, "key": parent.key}
    if init is not None:
        config["init"] = {"source": init.source, "digest": init.digest}
    result = RunResult(
        name=name, key=key,
        # in its JSON form (tuples as lists), so that a fresh result equals the one read back from the cache
        config=json.loads(json.dumps(config)),
        history=history, final_test_acc=history[-1]["test_acc"], num_params=model.num_parameters(),
        wall_seconds=wall_seconds, device=device_name(device), data_source=data.source,
        code_version=code_version(), torch_version=torch.__version__,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), code_digest=code_digest(), data_fingerprint=fingerprint,
    )
    atomic_save(model.state_dict(), weights_path)
    atomic_write_json(result.to_json(), record_path)
    _remove_leftovers(record_path, checkpoint_path, weights_path)
    return result


def _remove_leftovers(record_path: Path, checkpoint_path: Path, weights_path: Path) -> None:
    """Temporary files of writers killed mid-write and, once the record exists, the run's checkpoints. On a
    read-only results folder (finished runs can still be read there) nothing is removed."""
    try:
        for folder in {record_path.parent, checkpoint_path.parent, weights_path.parent}:
            remove_orphan_temporaries(folder)
        if record_path.exists():
            checkpoint_path.unlink(missing_ok=True)
            previous_path(checkpoint_path).unlink(missing_ok=True)
    except OSError:
        pass


def load_checkpoint(path: Path, model: ParaFormer, device: torch.device) -> dict | None:
    """The resume state of an unfinished run, or None to start from the beginning. A checkpoint that cannot
    be read, or does not fit `model`, is moved aside (to `<name>.corrupt`) with a warning, and the previous
    one (kept by every write) is tried next; a kill between the two renames of a write leaves only that one."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            state = torch.load(candidate, map_location=device, weights_only=True)
            shapes = {name: tuple(t.shape) for name, t in state["model"].items()}
            if shapes != expected or not {"optimizer", "stage", "history", "wall_seconds"} <= set(state):
                raise ValueError("it does not hold this run's model and training state")
            return state
        except Exception as error:  # truncated, empty, foreign: every reader error means "not usable"
            aside = candidate.with_name(candidate.name + ".corrupt")
            os.replace(candidate, aside)
            warnings.warn(f"checkpoint {candidate} is unusable ({type(error).__name__}: {str(error)[:120]}); moved "
                          f"it to {aside.name} and resuming from the checkpoint before it, or from the start",
                          RuntimeWarning, stacklevel=3)
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def load_trained_model(result: RunResult, results_root: Path | None = None,
                       device: str | torch.device = "cpu") -> ParaFormer:
    """The weights a finished run saved (kept locally; they are not committed)."""
    _, _, weights_path = run_paths(result.name, result.key, results_root)
    if not weights_path.exists():
        raise FileNotFoundError(f"no saved weights for run {result.name} at {weights_path}; delete its record "
                                f"{run_paths(result.name, result.key, results_root)[0]} to train it again")
    model = ParaFormer(result.model_config)
    try:
        model.load_state_dict(torch.load(weights_path, map_location=device, weights_only=True))
    except Exception as error:  # truncated or foreign file: any reader error
        raise RunCacheError(weights_path, f"holds no usable weights of {result.name} ({type(error).__name__})",
                            f"delete it and its record {run_paths(result.name, result.key, results_root)[0]} to "
                            "train the run again") from error
    return model.to(device)


def stale_records(root: Path | None = None) -> tuple[list[Path], int]:
    """The finished runs under `root`/runs whose records were made by other code than this, and how many
    records there are in all."""
    folder = (Path(root) if root is not None else results_dir()) / "runs"
    records = sorted(folder.glob("*.json")) if folder.is_dir() else []
    stale = []
    for path in records:
        try:
            if read_record(path).stale:
                stale.append(path)
        except RunCacheError:
            stale.append(path)  # unreadable: certainly not this code's
    return stale, len(records)


def _report_stale(argv: list[str] | None = None) -> int:
    """`python -m paraformer.train --report-stale [--profile P]`: one loud line when the run cache holds runs
    made by other code (what `make reproduce` prints at its end)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m paraformer.train")
    parser.add_argument("--report-stale", action="store_true", required=True,
                        help="say how many cached runs were trained by other code")
    parser.add_argument("--profile", default=None, help="the profile whose run cache to look at")
    args = parser.parse_args(argv)
    if args.profile is not None:
        from .experiments import get_profile

        get_profile(args.profile)  # makes its results folder the active one
    stale, total = stale_records()
    if stale:
        print(f"WARNING: {len(stale)} of {total} finished runs in {stale[0].parent} were trained by other code than "
              f"this ({code_digest()}); the tables built from them say so. `make reproduce RETRAIN=stale` "
              f"retrains them.", file=sys.stderr)
    else:
        print(f"run cache: all {total} finished runs were trained by this code ({code_digest()})")
    return 0


if __name__ == "__main__":
    sys.exit(_report_stale())
