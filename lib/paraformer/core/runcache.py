"""The run cache: a finished run's record, its key and files, and the checkpoint an unfinished run resumes from
(docs/run-cache.md). The key covers the configs and the data, not the code: a record made by code that computes
other numbers (`numerics`, see `paraformer.training.numerics`) is stale, still returned with a `StaleRunWarning`,
and retrained instead when PARAFORMER_RETRAIN=stale (`make reproduce RETRAIN=stale`).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import reprlib
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, DataConfig, ModelConfig, Recipe, from_dict
from .data import ImageData, data_fingerprint
from .model import ParaFormer
from .files import previous_path, remove_orphan_temporaries
from .paths import results_dir

# Bump when a change to the training code makes old records incomparable (it is part of every run key).
# 4: the final model scored on all test images with its per-image predictions recorded (DataConfig.n_test_per_epoch)
RUN_FORMAT = 4


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
    final_test_acc: float  # of the final model on all test images (history's test_acc may use a subset)
    num_params: int
    wall_seconds: float  # training + evaluation time summed over all sessions of the run
    device: str
    data_source: str
    code_version: str
    torch_version: str
    finished_at: str
    code_digest: str = ""  # the training code's digest (paraformer.training.numerics.code_digest)
    data_fingerprint: str = ""  # the data source's fingerprint (paraformer.core.data.data_fingerprint); part of the key
    precision: str = ""  # "fp32" or "bf16 autocast" (what Recipe.amp gave on this device); "" in older records
    # The final model's predicted label of every test image and the true labels, in the test split's order, as
    # `encode_labels` writes them (one byte per image before compression): what paired tests compare.
    test_predictions: str = ""
    test_labels: str = ""
    final_prefix_test_acc: list[float] | None = None  # of every prefix on all test images (plain models)
    final_val_acc: float | None = None  # of the final model on the validation split; None without one
    # the canary digest of the numbers that code computes (paraformer.training.numerics); "" in older records
    numerics: str = ""
    # with Recipe.compile: what Dynamo compiled in the run (paraformer.core.compilation.CompileCount.summary);
    # None for an uncompiled run and in older records
    compiled: dict[str, int] | None = None
    cached: bool = field(default=False, compare=False)  # True when loaded from the run cache

    @property
    def model_config(self) -> ModelConfig:
        return from_dict(ModelConfig, self.config["model"])

    def to_json(self) -> dict:
        record = asdict(self)
        record.pop("cached")
        return record

    @property
    def test_images(self) -> int:
        return len(self.correct())

    def correct(self) -> np.ndarray:
        """Per test image (the split's order): was the final model right? Refused for records without predictions."""
        if not self.test_predictions or not self.test_labels:
            raise RunCacheError(Path(f"{self.name}-{self.key}.json"), "has no per-image test predictions (recorded "
                                "before RUN_FORMAT 4)", "retrain it: PARAFORMER_RETRAIN=stale, or delete the record")
        return decode_labels(self.test_predictions) == decode_labels(self.test_labels)


def encode_labels(labels) -> str:
    """Class indices (0..255) as text for a JSON record: one byte each, zlib-compressed, base64."""
    values = np.asarray(labels)
    if values.ndim != 1 or (values.size and (values.min() < 0 or values.max() > 255)):
        raise ValueError(f"encode_labels needs a 1-d sequence of class indices in 0..255, got shape {values.shape}")
    return base64.b64encode(zlib.compress(values.astype(np.uint8).tobytes(), 9)).decode("ascii")


def decode_labels(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8).astype(np.int64)


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
    for field_name, value in values.items():
        kind, nullable = _RECORD_TYPES.get(field_name, (None, True))
        if kind is not None and not (value is None and nullable) and not _KIND_CHECKS[kind](value):
            raise RunCacheError(path, f"has {field_name}={reprlib.repr(value)}, not {kind} (edited by hand?)", fix)
    if not 0 <= values["final_test_acc"] <= 100:
        raise RunCacheError(path, f"has final_test_acc={values['final_test_acc']!r}, not a percentage", fix)
    if key is not None and values["key"] != key:
        raise RunCacheError(path, f"holds run {values['key']}, not {key}", fix)
    return RunResult(**values)


# What each field of a record holds (and whether it may be null): a hand-edited value of another kind is refused by
# `read_record` rather than loaded into a table, where a string accuracy would average wrongly or fail far from its file.
_RECORD_TYPES = {
    **dict.fromkeys(("name", "key", "device", "data_source", "code_version", "torch_version", "finished_at",
                     "code_digest", "data_fingerprint", "precision", "test_predictions", "test_labels", "numerics"),
                    ("a string", False)),
    "config": ("a mapping", False), "history": ("a list", False), "compiled": ("a mapping", True),
    "num_params": ("an integer", False), "final_test_acc": ("a number", False), "wall_seconds": ("a number", False),
    "final_val_acc": ("a number", True), "final_prefix_test_acc": ("a list of numbers", True),
}


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_KIND_CHECKS = {
    "a string": lambda v: isinstance(v, str), "a mapping": lambda v: isinstance(v, dict),
    "a list": lambda v: isinstance(v, list), "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a number": _finite_number, "a list of numbers": lambda v: isinstance(v, list) and all(map(_finite_number, v)),
}


def retrain_policy() -> str:
    """PARAFORMER_RETRAIN: "" (use every finished run) or "stale" (retrain runs recorded by other code)."""
    policy = os.environ.get("PARAFORMER_RETRAIN", "")
    if policy not in ("", "stale"):
        raise ConfigError(f"PARAFORMER_RETRAIN={policy!r} is unknown; leave it empty, or set 'stale' to retrain the "
                          "runs made by other code")
    return policy


def training_allowed() -> bool:
    """PARAFORMER_TRAIN: "" (train what the run cache lacks) or "never" (refuse: the tables of a farmed profile are
    rendered from the run cache alone, and a run it lacks is an error, not an hour of training on a login node)."""
    policy = os.environ.get("PARAFORMER_TRAIN", "")
    if policy not in ("", "never"):
        raise ConfigError(f"PARAFORMER_TRAIN={policy!r} is unknown; leave it empty, or set 'never' to refuse to train "
                          "a run the run cache lacks")
    return policy == ""


class WeightsUnavailable(RuntimeError):
    """Starting weights that cannot be had here, or not yet (downloaded weights not in their cache): the key of a
    run that starts from them is unknown until they are."""


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


# Recipe fields added after a RUN_FORMAT, with the value that means "as before": at that value a field is left out
# of the key, so the runs recorded before it existed keep their keys (and their cache entries).
_LATER_FIELDS = {"compile": False, "solver": "backprop", "mgrit_levels": 2, "mgrit_coarsening": 4,
                 "mgrit_relaxation": "F", "mgrit_iterations": (1, 1), "mgrit_check_every": 0, "mgrit_tolerance": 0.1,
                 "mgrit_adapt": "iterate", "parallel": "none", "processes": 1, "randaugment": "torchvision",
                 "crop_padding": None, "normalization": "dataset", "amp_dtype": "bfloat16"}
_LATER_MODEL_FIELDS = {"step": 1.0, "head_dim": None, "qkv_bias": True, "init": "trunc-normal"}  # for ModelConfig


def run_key(model_config: ModelConfig, data_config: DataConfig, recipe: Recipe,
            parent: "RunResult | None" = None, init: Initialization | None = None,
            data_fingerprint: str | None = None) -> str:
    """A stable hash of everything that decides a run's numbers: the configs, the data source's fingerprint
    (`data_fingerprint_of`), and the parent run's key or the initial weights."""
    recipe_fields = {k: v for k, v in asdict(recipe).items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
    model_fields = {k: v for k, v in asdict(model_config).items()
                    if k not in _LATER_MODEL_FIELDS or v != _LATER_MODEL_FIELDS[k]}
    payload = {"format": RUN_FORMAT, "model": model_fields, "data": asdict(data_config), "recipe": recipe_fields}
    optional = {"data_fingerprint": data_fingerprint, "parent": parent and parent.key, "init": init and init.digest}
    payload.update({name: value for name, value in optional.items() if value is not None})
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_fingerprint_of(data_config: DataConfig, data: ImageData | None = None) -> str:
    """The fingerprint of the data a run trains on: its source's (paraformer.core.data.data_fingerprint), or, for
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
    """(record JSON, resume checkpoint, final weights) of one run under `root` (default: the results root)."""
    root = Path(root) if root is not None else results_dir()
    stem = f"{name}-{key}"
    return root / "runs" / f"{stem}.json", root / "checkpoints" / f"{stem}.pt", root / "models" / f"{stem}.pt"


def step_log_path(record_path: Path) -> Path:
    return record_path.with_name(record_path.stem + ".steps.csv")


def remove_leftovers(record_path: Path, checkpoint_path: Path, weights_path: Path) -> None:
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
    """The resume state of an unfinished run, or None to start afresh. An unreadable or unfitting checkpoint is
    moved aside (`<name>.corrupt`) with a warning and the previous one, kept by every write, is tried next."""
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


def load_trained_model(result: RunResult, results_root: Path | None = None,
                       device: str | torch.device = "cpu") -> ParaFormer:
    """The weights a finished run saved (kept locally; they are not committed)."""
    record_path, _, weights_path = run_paths(result.name, result.key, results_root)
    if not weights_path.exists():
        raise FileNotFoundError(f"no saved weights for run {result.name} at {weights_path}; delete its record "
                                f"{record_path} to train it again")
    model = ParaFormer(result.model_config)
    try:
        model.load_state_dict(torch.load(weights_path, map_location=device, weights_only=True))
    except Exception as error:  # truncated or foreign file: any reader error
        raise RunCacheError(weights_path, f"holds no usable weights of {result.name} ({type(error).__name__})",
                            f"delete it and its record {record_path} to train the run again") from error
    return model.to(device)


def load_runs(folder: Path | str | None = None) -> "pd.DataFrame":
    """Every run record of a results folder (the profile's folder, e.g. `results/` for quick or `results/gpu/`;
    default: quick's) as one DataFrame row, the configs flattened into `model.*`, `data.*` and `recipe.*` columns;
    `correct` is None in records made before per-image predictions. A damaged record is refused by name."""
    import pandas as pd

    folder = Path(folder) if folder is not None else results_dir()
    paths = sorted((folder / "runs").glob("*.json"))
    if not paths and not (folder / "runs").is_dir():
        raise FileNotFoundError(f"{folder} has no runs/ folder: give a profile's results folder, e.g. results/ "
                                "(quick) or results/gpu/")
    rows = []
    for path in paths:
        record = read_record(path)
        row = {"name": record.name, "key": record.key, "seed": record.config["recipe"]["seed"],
               "method": record.config["recipe"]["method"], "final_test_acc": record.final_test_acc,
               "final_val_acc": record.final_val_acc, "final_prefix_test_acc": record.final_prefix_test_acc,
               "num_params": record.num_params, "epochs_trained": len(record.history), "history": record.history,
               "correct": record.correct() if record.test_predictions else None,
               "wall_seconds": record.wall_seconds, "device": record.device, "precision": record.precision,
               "code_version": record.code_version, "code_digest": record.code_digest, "numerics": record.numerics,
               "torch_version": record.torch_version, "finished_at": record.finished_at,
               "data_source": record.data_source, "compiled": record.compiled, "record": str(path)}
        for part in ("model", "data", "recipe"):
            row.update({f"{part}.{k}": (tuple(v) if isinstance(v, list) else v)
                        for k, v in record.config[part].items()})
        if "parent" in record.config:
            row["parent"] = record.config["parent"]["key"]
        rows.append(row)
    return pd.DataFrame(rows)
