"""How long a notebook trains at a profile, estimated before anyone starts it (`python -m paraformer.tools.estimate`
for every notebook at once).

Why: a profile sizes a whole suite of runs (the `gpu` profile is meant to fit about 20 minutes of one H100, the
`paper` profile days), and the only other way to learn what a notebook costs is to start it. The estimate takes the
notebook's own plan (`plan(profile)` of its module: the exact `train()` calls), counts each run's floating-point
operations on the real model, and divides by a measured throughput:

1. **FLOPs.** Per training image, `core.flops.stage_flops` counts one minibatch of the method's updates stage by
   stage; per test image, the evaluation train() runs after every epoch (`evaluation_flops_per_image`). Times
   images, epochs and stages. A layer-parallel run (`Recipe.solver="mgrit"`) is counted through its solver
   instead, one step of `MGRITTraining`, which evaluates each layer several times. Only matrix products and
   convolutions count: optimizer updates, normalization and data loading do not.
   Augmentation is not counted in FLOPs but timed: `augmentation_seconds_per_image` runs the recipe's augmentations
   on a batch of the run's images on this machine (RandAugment, image by image in torchvision's, is no rounding
   error), times images, passes and epochs.
2. **Time.** `measure_flops_per_second` times a few training steps of the profile's ViT-6 on this machine (CUDA
   with bfloat16 autocast where there is one, else the CPU): a model FLOP throughput, not the device's peak. Read
   the minutes as an order of magnitude (`CAVEAT` says why).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ..core.config import ConfigError, ModelConfig, Recipe
from ..core.data import augment_batch, image_counts
from ..core.flops import _meta_model, count_flops, evaluation_flops_per_image, stage_flops
from ..core.model import ParaFormer
from ..core.paths import results_dir
from ..core.provenance import device_name
from ..core.runcache import run_paths
from ..core.steps import build_optimizer, training_step
from ..core.timing import median_seconds
from ..parallel.layertrain import MGRITTraining
from ..core.progressive import PASSES
from .plan import PlannedRun, data_shape, key_of
from .profiles import get_profile, profile_device

# --- FLOPs of a run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunCost:
    epochs: int  # epochs of the whole run (all stages)
    train_images: int
    test_images: int
    learns: str  # what requires a gradient, in words
    train_flops: float
    eval_flops: float


def _learns(stages, model: ModelConfig, method: str, parent: ModelConfig | None) -> str:
    if method == "frozen":
        return f"one branch per stage ({len(stages)} stages)"
    names = frozenset(n for n, _ in _meta_model(model).named_parameters())
    inherited = frozenset(n for n, _ in _meta_model(parent).named_parameters()) if parent is not None else frozenset()
    trainable = stages[0][0].trainable
    if trainable == names:
        return "all"
    if trainable == names - inherited:
        return "new parameters (inherited frozen)"
    return f"{len(trainable)} of {len(names)} tensors"


def run_cost(run: PlannedRun) -> RunCost:
    """A run's FLOPs: per-image counts x images x epochs, of its training and of the evaluation after each epoch."""
    n_train, _, n_test = image_counts(run.data)
    parent = run.parent.model if run.parent is not None else None
    stages = stage_flops(run.model, run.recipe.method, parent, run.recipe.freeze_inherited, run.recipe.prefix_weights)
    epochs = run.recipe.epochs  # per stage: `frozen` runs the recipe once per branch it trains
    # an MGRIT run (method joint: one stage) evaluates each layer several times per step: counted through its solver
    train = (mgrit_step_flops(run.model, run.recipe) if run.recipe.solver == "mgrit"
             else sum(flops for _, flops in stages))
    return RunCost(epochs * len(stages), n_train, n_test, _learns(stages, run.model, run.recipe.method, parent),
                   train * n_train * epochs, evaluation_flops_per_image(run.model) * len(stages) * n_test * epochs)


@functools.lru_cache(maxsize=None)
def _mgrit_counts(model: ModelConfig, recipe: Recipe) -> tuple[float, float]:
    """Counted FLOPs per image of one MGRIT training step through `MGRITTraining` (stem, forward solve, head,
    adjoint solve and the final sweep), without and with the adaptive rule's check against the exact gradient. On
    the CPU with zero weights (the check reads its errors as numbers, which the meta device has not)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

    x = torch.zeros(1, model.in_channels, model.image_size, model.image_size)
    y = torch.zeros(1, dtype=torch.long)
    counts = []
    for every in (0, 1):  # a check is due at step 0 whenever checks are on
        net = _meta_model(model).to_empty(device="cpu")
        for tensor in net.parameters():
            torch.nn.init.zeros_(tensor)
        solver = MGRITTraining(net, replace(recipe, mgrit_check_every=every))
        solver.start_epoch(0, [])
        # FlopCounterMode's module tracker hooks every module's gradients, and those hooks refuse the
        # torch.autograd.grad calls that MGRIT's backward makes; its dispatch mode alone counts the same operators
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), _FlopCounterMode(counter):
            F.cross_entropy(solver(x), y).backward()
        counts.append(float(counter.get_total_flops()))
    return counts[0], counts[1]


def mgrit_step_flops(model: ModelConfig, recipe: Recipe) -> float:
    """Counted FLOPs per training image of a step of `recipe`'s MGRIT (`Recipe.solver="mgrit"`) at its own cycles,
    with its checks (every `mgrit_check_every` steps one serial forward and backward of the layers) spread over the
    steps. The adaptive rule's later cycles are not known before the run: they are not counted."""
    # only the fields that decide what an MGRIT step computes, on an otherwise default recipe: one count (cached)
    # serves every seed and learning rate
    recipe = Recipe(solver="mgrit", mgrit_levels=recipe.mgrit_levels, mgrit_coarsening=recipe.mgrit_coarsening,
                    mgrit_relaxation=recipe.mgrit_relaxation, mgrit_iterations=recipe.mgrit_iterations,
                    mgrit_check_every=recipe.mgrit_check_every)
    plain, checked = _mgrit_counts(model, recipe)
    every = recipe.mgrit_check_every
    return plain + ((checked - plain) / every if every else 0.0)


# --- throughput ---------------------------------------------------------------------------------------------

CPU_BATCH_LIMIT = 64  # a CPU times steps of at most this many images: larger ones take seconds and gain little


class Throughput(float):
    """A measured model FLOP rate (FLOPs per second) that says what it was measured on."""

    device: str
    detail: str

    def __new__(cls, flops_per_second: float, device: str, detail: str = ""):
        rate = super().__new__(cls, flops_per_second)
        rate.device, rate.detail = device, detail
        return rate

    def describe(self) -> str:
        if not self.device:
            return f"{self / 1e12:.3g} TFLOP/s (given)"
        return f"{self / 1e12:.3g} TFLOP/s measured on {self.device}" + (f" ({self.detail})" if self.detail else "")


_MEASURED: dict[tuple, Throughput] = {}


def measure_flops_per_second(profile: str = "quick", device: str | torch.device | None = None,
                             batch_size: int | None = None, repeats: int = 5) -> Throughput:
    """Counted FLOPs / the median seconds of `repeats` joint training steps (after one warm-up) of `profile`'s ViT-6
    at its width, batch and first dataset's image size, uncompiled, on `device` (None: CUDA with bfloat16 autocast
    if available, else the CPU at most `CPU_BATCH_LIMIT` images a step, which the GPU profiles refuse unless asked
    for, `profiles.profile_device`); remembered per device, profile and batch."""
    scale = get_profile(profile).scale
    device = profile_device(profile) if device is None else torch.device(device)
    batch = batch_size or scale.recipe.batch_size
    if device.type == "cpu" and batch_size is None:
        batch = min(batch, CPU_BATCH_LIMIT)
    key = (str(device), profile, batch)
    if key not in _MEASURED:
        config = scale.model_config("6-6", data_shape(scale.data_config(scale.datasets[0])))
        recipe = replace(scale.recipe, method="joint")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            model = ParaFormer(config).to(device).train()
            images = torch.randn(batch, config.in_channels, config.image_size, config.image_size, device=device)
            labels = torch.randint(0, config.num_classes, (batch,), device=device)
            step = training_step(model, images, labels, build_optimizer(model, recipe), recipe.label_smoothing,
                                 recipe.amp)
            seconds = median_seconds({"step": step}, repeats, 1, device)["step"]
        flops = count_flops(training_step(model, images[:1], labels[:1], label_smoothing=recipe.label_smoothing,
                                          amp=recipe.amp)) * batch
        detail = f"ViT-6 width {config.width}, batch {batch}, {'bf16' if device.type == 'cuda' else 'fp32'}"
        _MEASURED[key] = Throughput(flops / seconds, device_name(device), detail)
    return _MEASURED[key]


def rate(flops_per_second, profile: str) -> Throughput:
    """`flops_per_second` as a `Throughput`: a number given, or (None) measured here."""
    if flops_per_second is None:
        return measure_flops_per_second(profile)
    if isinstance(flops_per_second, Throughput):
        return flops_per_second
    if isinstance(flops_per_second, bool) or not isinstance(flops_per_second, (int, float)) \
            or not math.isfinite(flops_per_second) or flops_per_second <= 0:
        raise ConfigError(f"flops_per_second={flops_per_second!r} must be a positive number (FLOP/s)")
    return Throughput(float(flops_per_second), "", "given")


# --- estimates ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def augmentation_seconds_per_image(augment: tuple[str, ...], randaugment: str, magnitude: int,
                                   crop_padding: int | None, channels: int, size: int, input_size: int,
                                   batch: int) -> float:
    """Seconds per training image of `augment_batch` as a run calls it, on this machine's training device, timed
    on a batch of random images (the median of 3, after a first call)."""
    if not augment:
        return 0.0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where this machine would train
    images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, device=device)
    generator = torch.Generator(device).manual_seed(0)

    def call() -> None:
        augment_batch(images, augment, generator, crop_padding, magnitude, randaugment, input_size)
    return median_seconds({"augment": call}, repeats=3, warmup=1, device=device)["augment"] / batch


def augmentation_seconds(run: PlannedRun) -> float:
    """The seconds a run spends augmenting: per image (`augmentation_seconds_per_image`) x training images x the
    method's passes per epoch x epochs."""
    recipe = run.recipe
    if not recipe.augment:
        return 0.0
    shape = data_shape(run.data)
    n_train = image_counts(run.data)[0]
    stages = len(stage_flops(run.model, recipe.method, run.parent.model if run.parent else None,
                             recipe.freeze_inherited, recipe.prefix_weights))
    per_image = augmentation_seconds_per_image(recipe.augment, recipe.randaugment, recipe.randaugment_magnitude,
                                               recipe.crop_padding, shape.in_channels, shape.image_size,
                                               run.model.image_size, min(recipe.batch_size, 256))
    return per_image * n_train * len(PASSES[recipe.method]) * recipe.epochs * stages


CAVEAT = ("counted FLOPs / a ViT-6's model FLOP rate; narrower, shallower and depth-1 models use a device less "
          "well, and data loading, compilation and checkpoints come on top")
COLUMNS = ["notebook", "run", "model", "dataset", "method", "seed", "learns", "parent", "init", "epochs", "batch",
           "train_images", "test_images", "train_pflop", "eval_pflop", "pflop", "augment_minutes", "minutes", "cached",
           "key", "note"]


def run_rows(runs: list[PlannedRun], folder: Path, flops_per_second: float) -> pd.DataFrame:
    """One row per planned run (`COLUMNS`); `cached`: whether the run cache under `folder` holds it, None where its
    key cannot be known yet (its starting weights not made)."""
    rows = []
    for run in runs:
        key = key_of(run, folder, stand_in=True)  # "planned-...": not known yet (see `plan.key_of`)
        cost = run_cost(run)
        flops = cost.train_flops + cost.eval_flops
        augment_minutes = augmentation_seconds(run) / 60
        rows.append({
            "notebook": run.notebook, "run": run.name, "model": run.model.name, "dataset": run.data.dataset,
            "method": run.recipe.method, "seed": run.recipe.seed, "learns": cost.learns,
            "parent": run.parent.name if run.parent else "", "init": run.init.description if run.init else "",
            "epochs": cost.epochs, "batch": run.recipe.batch_size, "train_images": cost.train_images,
            "test_images": cost.test_images, "train_pflop": cost.train_flops / 1e15,
            "eval_pflop": cost.eval_flops / 1e15, "pflop": flops / 1e15, "augment_minutes": augment_minutes,
            "minutes": flops / flops_per_second / 60 + augment_minutes,
            "cached": None if key.startswith("planned-") else run_paths(run.name, key, folder)[0].is_file(),
            "key": key, "note": run.note,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


@dataclass
class Estimate:
    """What one notebook trains at a profile: one row per `train()` run, and the rate that turns FLOPs into time."""

    notebook: str
    profile: str
    runs: pd.DataFrame
    rate: Throughput
    note: str = ""  # what the runs do not show: a notebook that trains nothing, runs not plannable yet

    @property
    def pflop(self) -> float:
        return float(self.runs["pflop"].sum())

    @property
    def minutes(self) -> float:
        return float(self.runs["minutes"].sum())

    def summary(self) -> str:
        """One line: runs, PFLOP, minutes at the rate, and how many of them the run cache holds."""
        head = f"Estimate for {self.notebook} at profile {self.profile}: "
        if self.runs.empty:
            return head + f"0 train() runs, 0 minutes ({self.note})."
        n = len(self.runs)
        line = head + f"{n} train() run(s), {self.pflop:.3g} PFLOP, about {minutes_text(self.minutes)} at " \
                      f"{self.rate.describe()}"
        known = self.runs["cached"].dropna()
        if len(known):
            left = self.minutes - float(self.runs.loc[self.runs["cached"] == True, "minutes"].sum())  # noqa: E712
            line += (f"; {int(known.sum())} of {len(known)}{' checkable' if len(known) < n else ''} run(s) already in "
                     f"the run cache ({minutes_text(left)} to go)")
        if self.note:
            line += f" ({self.note})"
        return line + ". An estimate: " + CAVEAT + "."


def minutes_text(minutes: float) -> str:
    if minutes >= 120:
        return f"{minutes / 60:.3g} h"
    return f"{minutes:.2g} min" if minutes < 10 else f"{minutes:.0f} min"


def estimate(notebook: str, profile: str, runs: list[PlannedRun], flops_per_second=None, note: str = "") -> Estimate:
    """The estimate of `runs` (a notebook's plan; a run it asks for twice counts once) at `profile`;
    `flops_per_second` a rate (e.g. 2e14), or None to measure this machine's (`measure_flops_per_second`)."""
    throughput = rate(flops_per_second, profile)
    return Estimate(notebook, profile, run_rows(list(dict.fromkeys(runs)), results_dir(profile), float(throughput)),
                    throughput, note)
