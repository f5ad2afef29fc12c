"""How long a notebook trains at a profile, estimated before anyone starts it.

Why: a profile sizes a whole suite of runs (the `gpu` profile is meant to fit about 20 minutes of one H100, the
`paper` profile days), and the only other way to learn what a notebook costs is to start it. This module lists every
`train()` run a notebook makes, counts each run's floating-point operations on the real model, and divides by a
measured throughput:

1. **The runs.** For each notebook, the runs its code makes at a profile with its parameters, listed by
   mirroring the library functions the notebook calls (`experiments.run_sweep` / `run_comparison`, notebook 04's
   ViTs of every kept size, `expansion.run_class_incremental` / `run_growth`, `pretrained.run_finetune`,
   `layer_parallel.run_experiment`): model
   config, data config, recipe, parent run, and starting weights. Image counts come from the dataset registry
   (`data.DATASETS`), so nothing is decoded and datasets that are not available here can still be estimated.
   A run is identified as the run cache identifies it, by its name and `train.run_key`; runs that several
   notebooks make (02 reuses 01's layer sweep, 04 reuses 03's runs) are marked, and counted once in a suite total.
2. **Their FLOPs.** Per training image, torch's `FlopCounterMode` counts one minibatch of the method's updates
   (`progressive.PASSES`: forward, loss and backward of every pass, with `requires_grad` set stage by stage as
   `progressive.plan` and `set_trainable` set it), on one image of the model built without random weights: on the
   CPU for small models, on the meta device (shapes only) for large ones, with attention counted as the matrix
   products it is (the CPU's fused attention kernel is invisible to the counter). Per test image, the forward pass
   that `train()` evaluates after every epoch. Times images, epochs and stages. A layer-parallel run
   (`Recipe.solver="mgrit"`) is counted through its solver instead, one step of `MGRITTraining`, which evaluates
   each layer several times. Only matrix products and convolutions count: optimizer updates, normalization,
   augmentation and data loading do not.
3. **Time.** `measure_flops_per_second` times a few training steps of the profile's ViT-6 on this machine (CUDA
   with bfloat16 autocast where there is one, else the CPU) and divides the counted FLOPs by the seconds: a model
   FLOP throughput, not the device's peak. The estimate is FLOPs / that rate. Real runs differ by model shape:
   narrow, shallow and depth-1 models run at lower utilisation than the ViT-6 that was timed, and compilation,
   evaluation bookkeeping and checkpoint writes come on top, so read the minutes as an order of magnitude.

    estimate_notebook("01_layer_sweep", "gpu", flops_per_second=2e14).summary()
    estimate_suite("gpu").table
    python -m paraformer.estimate --profile gpu [--flops-per-second 2e14] [--notebooks 01 03]
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from types import SimpleNamespace

import pandas as pd
import torch
import torch.nn.functional as F

from . import progressive
from .config import METHODS, ConfigError, DataConfig, ModelConfig, OneLineArgumentParser, Recipe, results_dir
from .data import DATASETS, data_fingerprint
from .flops import count_flops
from .model import ParaFormer

# --- 1. the runs a notebook makes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One `train()` call a notebook will make: what `train` would be given."""

    notebook: str
    model: ModelConfig
    data: DataConfig
    recipe: Recipe
    name: str  # the run name train() records it under (its own default, or the one the notebook passes)
    parent: "PlannedRun | None" = None  # the run whose weights it inherits (train(parent=...))
    init: str | None = None  # starting weights in words (train(init=...)); None = random initialization
    note: str = ""  # anything the estimate should say about this run


def image_counts(data: DataConfig) -> tuple[int, int, int]:
    """(training, validation, test) images of `data`, from the registry's split sizes: what `load_data` returns,
    without decoding. A class subset keeps its share of each split (the registry's datasets are balanced, or
    nearly); the validation share is rounded as `load_data` rounds it."""
    spec = DATASETS.get(data.dataset)
    if spec is None or spec.num_train is None or spec.num_test is None:
        raise ConfigError(f"cannot estimate runs on {data.dataset!r}: estimates need a registry dataset with known "
                          f"split sizes (one of {sorted(DATASETS)})")
    share = len(data.classes) / spec.num_classes if data.classes is not None else 1.0
    n_train = data.n_train if data.n_train is not None else round(spec.num_train * share)
    n_test = data.n_test if data.n_test is not None else round(spec.num_test * share)
    n_val = round(data.val_fraction * n_train)
    return n_train - n_val, n_val, n_test


def _data_shape(data: DataConfig) -> SimpleNamespace:
    """What `Profile.model_config` reads of an `ImageData` (size, channels, classes), from the registry."""
    image_counts(data)  # the same error for a dataset the registry does not know
    spec = DATASETS[data.dataset]
    return SimpleNamespace(image_size=data.image_size or spec.image_size, in_channels=spec.in_channels,
                           num_classes=spec.num_classes)


def _sweep(notebook: str, profile, model_names, datasets=None, methods=("joint",), seeds=None) -> list[PlannedRun]:
    """The runs of `experiments.run_sweep(profile, model_names, datasets, methods=methods, seeds=seeds)`, in its
    order: datasets, then models x methods x seeds."""
    from .train import run_name

    runs = []
    for dataset in datasets or profile.datasets:
        data = profile.data_config(dataset)
        for name in model_names:
            for method in methods:
                for seed in seeds or profile.seeds:
                    model = profile.model_config(name, _data_shape(data))
                    recipe = replace(profile.recipe, seed=seed, method=method)
                    runs.append(PlannedRun(notebook, model, data, recipe, run_name(None, model, data, recipe)))
    return runs


def plan_layer_sweep(profile: str, models=("1-1", "1-6", "1-12", "1-24"), datasets=None) -> list[PlannedRun]:
    """Notebook 01: `run_sweep(settings, models, datasets)`."""
    from .experiments import get_profile

    return _sweep("01_layer_sweep", _quietly(get_profile, profile), models, datasets)


def plan_depth_sweep(profile: str, depth_models=("6-6", "2-24", "3-24", "6-24"),
                     layer_models=("1-1", "1-6", "1-12", "1-24"), datasets=None) -> list[PlannedRun]:
    """Notebook 02: the depth sweep, then the layer sweep of notebook 01 again (for its figure)."""
    from .experiments import get_profile

    settings = _quietly(get_profile, profile)
    datasets = datasets or settings.depth_sweep_datasets
    return (_sweep("02_depth_sweep", settings, depth_models, datasets)
            + _sweep("02_depth_sweep", settings, layer_models, datasets))


def plan_comparison(profile: str, datasets=None) -> list[PlannedRun]:
    """`run_comparison(comparison, datasets, METHODS)`: the ViT, then the ParaFormer by every method."""
    from .experiments import get_comparison

    comparison = _quietly(get_comparison, profile)
    return (_sweep("03_paraformer_vs_vit", comparison.profile, [comparison.vit], datasets)
            + _sweep("03_paraformer_vs_vit", comparison.profile, [comparison.paraformer], datasets, METHODS))


def plan_versus_vit(profile: str, datasets=None) -> list[PlannedRun]:
    """Notebook 03: the comparison at the recipe's rate (`plan_comparison`), every family's learning-rate grid on
    its first seed, the ViT at the joint ParaFormer's training compute, and the authors' recipe. The tuned runs
    depend on what the grid chooses: a family whose chosen rate is not the recipe's trains its other seeds again
    (up to (seeds - 1) x families x datasets more runs, not counted here)."""
    from .experiments import authors_variant, get_comparison
    from .experiments.baselines import _families
    from .flops import training_flops_per_image

    comparison = _quietly(get_comparison, profile)
    settings, nb = comparison.profile, "03_paraformer_vs_vit"
    runs = plan_comparison(profile, datasets)
    for model, method in _families(comparison, METHODS):
        for lr in settings.lr_grid:
            tuned = replace(settings, recipe=replace(settings.recipe, lr=lr))
            runs += _sweep(nb, tuned, [model], datasets, (method,), settings.seeds[:1])
    for dataset in datasets or settings.datasets:
        shape = _data_shape(settings.data_config(dataset))
        ratio = (training_flops_per_image(settings.model_config(comparison.paraformer, shape), "joint")
                 / training_flops_per_image(settings.model_config(comparison.vit, shape), "joint"))
        epochs = max(1, math.floor(settings.recipe.epochs * ratio + 0.5))
        shorter = replace(settings, recipe=replace(settings.recipe, epochs=epochs,
                                                   warmup_epochs=min(settings.recipe.warmup_epochs, epochs / 2)))
        runs += _sweep(nb, shorter, [comparison.vit], (dataset,))
    authors = authors_variant(comparison)
    runs += (_sweep(nb, authors.profile, [comparison.vit])
             + _sweep(nb, authors.profile, [comparison.paraformer], methods=("authors",)))
    # the grid's runs at the recipe's own rate are the comparison's first seed, trained once
    distinct = {(r.name, r.model, r.data, r.recipe): r for r in reversed(runs)}
    return [r for r in runs if distinct[(r.name, r.model, r.data, r.recipe)] is r]


def plan_compression(profile: str, datasets=None, tolerance=1.0) -> list[PlannedRun]:
    """Notebook 04: notebook 03's ParaFormers of every seed, then a ViT of every kept size that compresses at least
    2x (`compression.vit_sizes`), every seed. `tolerance` only chooses among trained models."""
    from .experiments import get_comparison
    from .experiments.compression import vit_sizes

    comparison = _quietly(get_comparison, profile)
    settings = comparison.profile
    sizes = vit_sizes(ModelConfig.from_name(comparison.paraformer))
    return (_sweep("04_compression", settings, [comparison.paraformer], datasets, METHODS)
            + _sweep("04_compression", settings, [f"{n}-{n}" for n in sizes], datasets))


def plan_expansion(profile: str) -> list[PlannedRun]:
    """Notebook 05: for every seed of the plan, `run_class_incremental`, then, for every seed, `run_growth`."""
    from .experiments import get_profile
    from .experiments.expansion import STRATEGIES, get_plan

    settings, plan = _quietly(get_profile, profile), get_plan(profile)
    runs = []
    for seed in plan.seeds:
        runs += _class_incremental(settings, plan, seed)
    for seed in plan.seeds:
        runs += _growth(settings, plan, seed)
    assert STRATEGIES == ("expand", "finetune", "joint"), "expansion's strategies changed: update plan_expansion"
    return runs


def _class_incremental(settings, plan, seed: int) -> list[PlannedRun]:
    """The runs of `expansion.run_class_incremental`: task 1 (shared by every strategy), then for each later task
    the expanded model learning only its new parameters (`expand`) or all (`finetune`), both from the previous
    task's run of their strategy, and the joint model from scratch on every class seen so far."""
    from .experiments.expansion import task_data_config

    nb, tasks, recipe = "05_expansion", plan.tasks(), replace(settings.recipe, seed=seed)
    first_data = task_data_config(settings, plan.dataset, tasks[0])
    configs = [replace(settings.model_config(f"1-{plan.branches_per_task}", _data_shape(first_data)),
                       num_classes=len(tasks[0]))]
    for task in tasks[1:]:
        configs.append(configs[-1].expanded(plan.branches_per_task, len(task)))
    first = PlannedRun(nb, configs[0], first_data, recipe, f"{plan.dataset}-task1")
    runs, last = [first], {"expand": first, "finetune": first}
    for t in range(1, len(tasks)):
        data = task_data_config(settings, plan.dataset, tasks[t])
        for strategy, freeze in (("expand", True), ("finetune", False)):
            last[strategy] = PlannedRun(nb, configs[t], data, replace(recipe, freeze_inherited=freeze),
                                        f"{plan.dataset}-task{t + 1}-{strategy}", parent=last[strategy])
            runs.append(last[strategy])
        seen = tuple(c for task in tasks[:t + 1] for c in task)
        runs.append(PlannedRun(nb, configs[t], task_data_config(settings, plan.dataset, seen), recipe,
                               f"{plan.dataset}-tasks1-{t + 1}-joint"))
    return runs


def _growth(settings, plan, seed: int) -> list[PlannedRun]:
    """The runs of `expansion.run_growth`: the first model, each growth step (new branches only, from the step
    before), and each grown size from scratch for the epochs that match the grown path's compute."""
    from .experiments.expansion import FROZEN_LAYER_COST, TRAINED_LAYER_COST
    from .train import run_name

    nb, data, recipe = "05_expansion", settings.data_config(plan.dataset), replace(settings.recipe, seed=seed)
    config = settings.model_config(f"1-{plan.growth_start}", _data_shape(data))
    run = PlannedRun(nb, config, data, recipe, run_name(None, config, data, recipe))
    compute, grown, runs = TRAINED_LAYER_COST * config.num_layers * recipe.epochs, [], [run]
    for _ in range(plan.growth_steps):
        old_layers, config = config.num_layers, config.expanded(plan.growth_step)
        run = PlannedRun(nb, config, data, replace(recipe, epochs=plan.growth_epochs, freeze_inherited=True),
                         f"{plan.dataset}-{config.name}-grown", parent=run)
        compute += (FROZEN_LAYER_COST * old_layers + TRAINED_LAYER_COST * (config.num_layers - old_layers)) \
            * plan.growth_epochs
        grown.append((config, compute))
        runs.append(run)
    for config, compute in grown:
        scratch = replace(recipe, epochs=max(1, round(compute / (TRAINED_LAYER_COST * config.num_layers))))
        runs.append(PlannedRun(nb, config, data, scratch, run_name(None, config, data, scratch)))
    return runs


def plan_finetune(profile: str, pretrained=None, datasets=None) -> list[PlannedRun]:
    """Notebook 07: `run_finetune` (every seed of the profile): per dataset, the 12-layer ViT's weights as the sequential ViT and
    regrouped into parallel branches (`branch_depths`), each with a new head. Which weights: `pretrained` (None =
    the profile's choice); "auto" means ImageNet's ViT-B/16 when torchvision has it cached here (a download
    is not assumed), else the profile's randomly initialized stand-in."""
    from .pretrained import IMAGENET_VIT, arrangement, get_finetune_profile

    settings = get_finetune_profile(profile)
    imagenet, why = _imagenet_weights(pretrained or settings.pretrained)
    kind, source = ("imagenet", f"torchvision {IMAGENET_VIT}") if imagenet else ("random", "random (not pretrained)")
    runs = []
    for dataset in datasets or settings.datasets:
        data = settings.data_config(dataset, 224 if imagenet else None)  # as run_finetune decodes for ViT-B/16
        shape = _data_shape(data)
        base = _torchvision_config(settings, shape, imagenet)
        for seed in settings.seeds:
            recipe = replace(settings.recipe, seed=seed)
            for depth in settings.branch_depths:
                model = replace(base, branch_depth=depth, num_layers=base.num_layers, num_branches=None,
                                num_classes=shape.num_classes)
                runs.append(PlannedRun("07_finetune_pretrained", model, data, recipe,
                                       f"{dataset}-{model.name}-finetune-{kind}",
                                       init=f"{source}, {arrangement(depth, model.num_layers)}", note=why))
    return runs


def _imagenet_weights(mode: str) -> tuple[bool, str]:
    """Whether notebook 07 fine-tunes ImageNet weights under `mode`, decided without the network, and why."""
    from .pretrained import IMAGENET_VIT, PRETRAINED_MODES

    if mode not in PRETRAINED_MODES:
        raise ConfigError(f"pretrained={mode!r}; choose one of {PRETRAINED_MODES}")
    cached = os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(IMAGENET_VIT.url)))
    if mode == "never":
        return False, "random weights (the profile never loads ImageNet's)"
    if mode == "required":
        return True, "ImageNet ViT-B/16" + ("" if cached else " (not in torchvision's cache here: the notebook "
                                                               "downloads it, or stops)")
    return cached, ("ImageNet ViT-B/16 (in torchvision's cache)" if cached else
                    "random stand-in: ImageNet weights are not in torchvision's cache here (a download is not assumed)")


def _torchvision_config(settings, shape, imagenet: bool) -> ModelConfig:
    """The ParaFormer config of the torchvision ViT that notebook 07 imports, built on the meta device (no weights
    are made or read) with the library's own constructors; the random state is left as it was."""
    import torchvision

    from .pretrained import config_from_torchvision

    cuda = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda), torch.device("meta"):
        vit = torchvision.models.vit_b_16() if imagenet else settings.random_vit(shape.image_size, seed=0)
    return config_from_torchvision(vit, shape.in_channels)


def plan_layer_parallel(profile: str, **_) -> list[PlannedRun]:
    """Notebook 08: `layer_parallel.run_experiment`: every seed's three pre-training arms (`ARMS`), then every
    seed's fine-tunes of its serial arm's weights (`FINETUNE_ARMS`). Its other parameters choose what it benchmarks,
    which this estimate does not cover. MGRIT runs are counted through their solver (`mgrit_step_flops`)."""
    from .experiments.layer_parallel import ARMS, FINETUNE_ARMS, PHASES, get_layer_parallel_setting

    setting, nb = get_layer_parallel_setting(profile), "08_layer_parallel"
    adaptive = ("the adaptive arm at its starting cycles and checks: more cycles later cost more, a switch to "
                "backprop less")
    runs = []
    for phase, arms in zip(PHASES, (ARMS, FINETUNE_ARMS)):
        data = setting.data_config(phase)
        model = setting.model_config(_data_shape(data))
        for seed in setting.profile.seeds:
            for arm in arms:
                init = f"the serial pre-training arm's weights, seed {seed}" if phase == "fine-tuning" else None
                runs.append(PlannedRun(nb, model, data, setting.recipe(arm, seed, phase), setting.run_name(arm, phase),
                                       init=init, note=adaptive if arm == "adaptive" else ""))
    return runs


def _quietly(get, profile: str):
    """A profile (or comparison) without making it the active one: an estimate must not move the results folder."""
    from . import config

    active = config.active_profile()
    try:
        return get(profile)
    finally:
        config.set_active_profile(active)


@dataclass(frozen=True)
class Notebook:
    planner: object  # profile, **parameters -> list[PlannedRun]
    defaults: dict  # the notebook's parameters (but `profile`) with their defaults in its parameters cell
    trains_nothing: str = ""  # why a notebook that trains nothing estimates to 0


NOTEBOOKS: dict[str, Notebook] = {
    "01_layer_sweep": Notebook(plan_layer_sweep, {"models": ["1-1", "1-6", "1-12", "1-24"], "datasets": None}),
    "02_depth_sweep": Notebook(plan_depth_sweep, {"depth_models": ["6-6", "2-24", "3-24", "6-24"],
                                                  "layer_models": ["1-1", "1-6", "1-12", "1-24"], "datasets": None}),
    "03_paraformer_vs_vit": Notebook(plan_versus_vit, {"datasets": None}),
    "04_compression": Notebook(plan_compression, {"datasets": None, "tolerance": 1.0}),
    "05_expansion": Notebook(plan_expansion, {}),
    "06_speedup": Notebook(lambda profile, **_: [], {"rerun": False, "processes": [1, 2], "measure_other_device": True},
                           trains_nothing="trains nothing: it reads the benchmark CSVs (and measures missing ones "
                                          "with paraformer.bench, which this estimate does not cover)"),
    "07_finetune_pretrained": Notebook(plan_finetune, {"pretrained": None, "datasets": None}),
    "08_layer_parallel": Notebook(plan_layer_parallel, {"processes": [1, 2], "measure_other_device": True}),
    "99_report": Notebook(lambda profile, **_: [], {},
                          trains_nothing="trains nothing: it gathers the other notebooks' claims tables"),
}


def notebook_name(name: str) -> str:
    """'01', '1', '01_layer_sweep' or 'notebooks/01_layer_sweep.ipynb' -> '01_layer_sweep'."""
    stem = os.path.basename(str(name)).removesuffix(".ipynb")
    matches = [nb for nb in NOTEBOOKS if nb == stem or (stem.isdigit() and nb.split("_")[0] == stem.zfill(2))]
    if len(matches) != 1:
        raise ConfigError(f"unknown notebook {name!r}; choose one of {sorted(NOTEBOOKS)} (or their numbers)")
    return matches[0]


def plan_notebook(notebook: str, profile: str, **parameters) -> list[PlannedRun]:
    """Every `train()` run `notebook` makes at `profile` with `parameters` (the notebook's; defaults for the rest)."""
    notebook = notebook_name(notebook)
    spec = NOTEBOOKS[notebook]
    unknown = sorted(set(parameters) - set(spec.defaults))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} of notebook {notebook}; its parameters are "
                          f"{sorted(spec.defaults)} (and the profile)")
    values = {**spec.defaults, **parameters}
    return spec.planner(profile, **values)


# --- 2. the FLOPs of a run -------------------------------------------------------------------------------------

# Where the counting runs. On the meta device only shapes exist, so the count costs the same for any model size, but
# every op goes through Python; small models count faster on the CPU for real, on one image. Both count the same
# FLOPs: on the CPU, attention is made to run as its matrix products (torch's fused CPU attention kernel is
# invisible to FlopCounterMode), which is how the meta device runs it anyway.
CPU_COUNT_LIMIT = 2e9  # forward FLOPs per image (roughly 2 x parameters x tokens) up to which the CPU counts


def _counting_device(config: ModelConfig) -> torch.device:
    from .model import count_parameters

    rough = 2 * count_parameters(config) * (config.num_patches + 1)
    return torch.device("cpu" if rough <= CPU_COUNT_LIMIT else "meta")


def _counting_model(config: ModelConfig, device: torch.device) -> ParaFormer:
    """`config`'s model on `device`, its weights zeros (their values change no count; no random draw is made)."""
    with torch.device("meta"):
        net = ParaFormer(config)
    net = net.to_empty(device=device)
    if device.type != "meta":
        with torch.no_grad():
            for tensor in net.parameters():
                tensor.zero_()
    return net


def _backward_only(loss: torch.Tensor, *_) -> None:
    """The `step` that progressive's updates call: here only the backward pass, which is what costs FLOPs."""
    loss.backward()


@dataclass(frozen=True)
class StageCost:
    """One stage of a run (`progressive.plan`; every method but `frozen` has one), per image and epoch."""

    active_branches: int  # the model trains as its prefix of this many branches
    learns: str  # what requires a gradient, in words
    train_flops: float  # one epoch's training (every pass of the method) per training image
    eval_flops: float  # one evaluation forward pass per test image (train() evaluates after every epoch)


@functools.lru_cache(maxsize=None)
def stage_costs(model: ModelConfig, method: str = "joint", freeze_inherited: bool = False,
                parent: ModelConfig | None = None, prefix_weights: tuple[float, ...] = ()) -> tuple[StageCost, ...]:
    """Counted FLOPs per image of each stage of a run of `model` trained by `method`, from a `parent` run's model
    if it has one (its parameters are the inherited ones, frozen under `freeze_inherited`)."""
    recipe = Recipe(method=method, freeze_inherited=freeze_inherited, prefix_weights=prefix_weights)
    device = _counting_device(model)
    net = _counting_model(model, device)
    with torch.device("meta"):  # the parent's parameter names are the inherited ones (as train() finds them)
        inherited = frozenset(n for n, _ in ParaFormer(parent).named_parameters()) if parent else frozenset()
    names = frozenset(n for n, _ in net.named_parameters())
    # one image: every op is per image, so the count is linear in the batch
    x = torch.zeros(1, model.in_channels, model.image_size, model.image_size, device=device)
    y = torch.zeros(1, dtype=torch.long, device=device)
    with torch.no_grad():  # what train() evaluates, whatever the stage: every prefix of a plain model (one forward
        # pass), every head of an incremental one
        evaluate = count_flops(lambda: net(x) if model.is_incremental else net.prefix_logits(x))
    costs = []
    for stage in progressive.plan(net, recipe, inherited):
        progressive.set_trainable(net, stage)

        def one_minibatch():  # every pass of the method sees each minibatch once per epoch
            for update in progressive.PASSES[method]:
                update(net, x, y, stage, recipe, _backward_only)

        train = count_flops(one_minibatch)
        net.zero_grad(set_to_none=True)
        costs.append(StageCost(stage.active_branches, _learns(stage, names, inherited, method), train, evaluate))
    return tuple(costs)


def _learns(stage: progressive.Stage, names: frozenset[str], inherited: frozenset[str], method: str) -> str:
    if stage.trainable == names:
        return "all"
    if method == "frozen":
        own = f"branch {stage.active_branches}"
        return own + (" + stem and head" if any(not n.startswith("branches.") for n in stage.trainable) else "")
    if stage.trainable == names - inherited:
        return "new parameters (inherited frozen)"
    return f"{len(stage.trainable)} of {len(names)} tensors"


def _mgrit_solver_recipe(recipe: Recipe) -> Recipe:
    """The fields of `recipe` that decide what an MGRIT step computes, on an otherwise default recipe: one count
    serves every seed and learning rate."""
    return Recipe(solver="mgrit", mgrit_levels=recipe.mgrit_levels, mgrit_coarsening=recipe.mgrit_coarsening,
                  mgrit_relaxation=recipe.mgrit_relaxation, mgrit_iterations=recipe.mgrit_iterations,
                  mgrit_check_every=recipe.mgrit_check_every)


@functools.lru_cache(maxsize=None)
def _mgrit_counts(model: ModelConfig, recipe: Recipe) -> tuple[float, float]:
    """Counted FLOPs per image of one MGRIT training step through `MGRITTraining` (stem, forward solve, head,
    adjoint solve and the final sweep), without and with the adaptive rule's check against the exact gradient."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

    from .parallel.layertrain import MGRITTraining

    def counted(work) -> int:
        # FlopCounterMode's module tracker hooks every module's gradients, and those hooks refuse the
        # torch.autograd.grad calls that MGRIT's backward makes; its dispatch mode alone counts the same operators
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), _FlopCounterMode(counter):
            work()
        return counter.get_total_flops()

    device = _counting_device(model)
    x = torch.zeros(1, model.in_channels, model.image_size, model.image_size, device=device)
    y = torch.zeros(1, dtype=torch.long, device=device)
    counts = []
    for every in (0, 1):  # a check is due at step 0 whenever checks are on
        net = _counting_model(model, device)
        solver = MGRITTraining(net, replace(recipe, mgrit_check_every=every))
        solver.start_epoch(0, [])
        counts.append(counted(lambda: F.cross_entropy(solver(x), y).backward()))
    return float(counts[0]), float(counts[1])


def mgrit_step_flops(model: ModelConfig, recipe: Recipe) -> float:
    """Counted FLOPs per training image of a step of `recipe`'s MGRIT (`Recipe.solver="mgrit"`) at its own cycles,
    with its checks (every `mgrit_check_every` steps one serial forward and backward of the layers) spread over the
    steps. The adaptive rule's later cycles are not known before the run: they are not counted."""
    recipe = _mgrit_solver_recipe(recipe)
    plain, checked = _mgrit_counts(model, recipe)
    every = recipe.mgrit_check_every
    return plain + ((checked - plain) / every if every else 0.0)


def train_step_flops(model: ModelConfig, batch_size: int = 1) -> float:
    """Counted FLOPs of one joint training step (forward and backward) on `batch_size` images."""
    return stage_costs(model)[0].train_flops * batch_size


@dataclass(frozen=True)
class RunCost:
    epochs: int  # epochs of the whole run (all stages)
    train_images: int
    test_images: int
    learns: str
    train_flops: float
    eval_flops: float

    @property
    def flops(self) -> float:
        return self.train_flops + self.eval_flops


def run_cost(run: PlannedRun) -> RunCost:
    """A run's FLOPs: each stage's per-image count x training images x its epochs, plus the evaluation forward
    pass over the test split after every epoch."""
    n_train, _, n_test = image_counts(run.data)
    stages = stage_costs(run.model, run.recipe.method, run.recipe.freeze_inherited,
                         run.parent.model if run.parent else None, run.recipe.prefix_weights)
    epochs = run.recipe.epochs  # per stage: `frozen` runs the recipe once per branch it trains
    learns = f"one branch per stage ({len(stages)} stages)" if run.recipe.method == "frozen" else stages[0].learns
    # an MGRIT run (method joint: one stage) evaluates each layer several times per step: counted through its solver
    train = (mgrit_step_flops(run.model, run.recipe) if run.recipe.solver == "mgrit"
             else sum(s.train_flops for s in stages))
    return RunCost(epochs * len(stages), n_train, n_test, learns, train * n_train * epochs,
                   sum(s.eval_flops for s in stages) * n_test * epochs)


# --- 3. throughput ---------------------------------------------------------------------------------------------

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
        return f"{self / 1e12:.3g} TFLOP/s measured on {self.device}" + (f" ({self.detail})" if self.detail else "")


_MEASURED: dict[tuple, Throughput] = {}


def measure_flops_per_second(device: str | torch.device | None = None, profile: str = "quick",
                             batch_size: int | None = None, min_seconds: float = 0.5, max_steps: int = 20,
                             remeasure: bool = False) -> Throughput:
    """Counted FLOPs / measured seconds of a few joint training steps (AdamW) of `profile`'s ViT-6 at its width
    and batch on its first dataset's image size, on `device` (None: CUDA with bfloat16 autocast if available, else
    the CPU, at most `CPU_BATCH_LIMIT` images per step), uncompiled. After one warm-up step, steps are timed one
    by one until `min_seconds` have passed (at least 3, at most `max_steps`), and the median step counts.
    Remembered per device, profile and batch for the rest of the process unless `remeasure`."""
    from .experiments import PROFILES
    from .train import build_optimizer, device_name, resolve_device

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    settings = PROFILES[profile]
    device = resolve_device("auto") if device is None else torch.device(device)
    batch = batch_size or settings.recipe.batch_size
    if device.type == "cpu" and batch_size is None:
        batch = min(batch, CPU_BATCH_LIMIT)
    key = (str(device), profile, batch)
    if key in _MEASURED and not remeasure:
        return _MEASURED[key]
    config = settings.model_config("6-6", _data_shape(settings.data_config(settings.datasets[0])))
    recipe = replace(settings.recipe, method="joint")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = ParaFormer(config).to(device).train()
        optimizer = build_optimizer(model, recipe)
        x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, device=device)
        y = torch.randint(0, config.num_classes, (batch,), device=device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and recipe.amp)

        def step():
            with autocast:
                loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def synchronize():
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        step()  # warm-up: allocation, kernel choice, optimizer state
        synchronize()
        times, started = [], time.perf_counter()
        while len(times) < 3 or (len(times) < max_steps and time.perf_counter() - started < min_seconds):
            begun = time.perf_counter()
            step()
            synchronize()
            times.append(time.perf_counter() - begun)
    # The median step: on a shared machine one step that waited for another process would move a mean a lot.
    seconds = sorted(times)[len(times) // 2]
    detail = f"ViT-6 width {config.width}, batch {batch}, {'bf16' if device.type == 'cuda' else 'fp32'}"
    _MEASURED[key] = Throughput(train_step_flops(config, batch) / seconds, device_name(device), detail)
    return _MEASURED[key]


def _check_profile(profile: str) -> None:
    from .experiments import get_profile

    _quietly(get_profile, profile)  # the one error for an unknown name


def _rate(flops_per_second, profile: str) -> Throughput:
    if flops_per_second is None:
        return measure_flops_per_second(profile=profile)
    if isinstance(flops_per_second, Throughput):
        return flops_per_second
    if isinstance(flops_per_second, bool) or not isinstance(flops_per_second, (int, float)) \
            or not math.isfinite(flops_per_second) or flops_per_second <= 0:
        raise ConfigError(f"flops_per_second={flops_per_second!r} must be a positive number (FLOP/s)")
    return Throughput(float(flops_per_second), "", "given")


def _rate_words(rate: Throughput) -> str:
    return rate.describe() if rate.device else f"{rate / 1e12:.3g} TFLOP/s (given)"


# --- 4. estimates ------------------------------------------------------------------------------------------------

def _identity(run: PlannedRun, fingerprints: dict) -> tuple[str, str, bool]:
    """(run name, run key, whether the key is the run cache's): the key as `train.run_key` makes it. A run that
    starts from given weights is keyed by their digest, which needs the weights: it gets a stand-in key from
    their description, good for telling runs apart but not for finding them in the cache."""
    from .train import run_key

    if run.data.dataset not in fingerprints:
        try:  # a file hash or a folder listing, never a decode
            fingerprints[run.data.dataset] = data_fingerprint(run.data)
        except (OSError, ConfigError):
            fingerprints[run.data.dataset] = None
    fingerprint = fingerprints[run.data.dataset]
    parent = None
    exact = fingerprint is not None and run.init is None
    if run.parent is not None:
        _, parent_key, parent_exact = _identity(run.parent, fingerprints)
        parent, exact = SimpleNamespace(key=parent_key), exact and parent_exact
    init = SimpleNamespace(digest=f"planned:{run.init}") if run.init is not None else None
    return run.name, run_key(run.model, run.data, run.recipe, parent, init, fingerprint), exact


def _in_cache(name: str, key: str, exact: bool, profile: str) -> bool | None:
    """Whether the run cache holds the finished run (None: cannot tell cheaply)."""
    from .train import run_paths

    return run_paths(name, key, results_dir(profile))[0].is_file() if exact else None


def _rows(runs: list[PlannedRun], profile: str, rate: float, makers: dict, fingerprints: dict) -> pd.DataFrame:
    rows = []
    for run in runs:
        name, key, exact = _identity(run, fingerprints)
        cost = run_cost(run)
        others = [nb for nb in makers.get((name, key), [run.notebook]) if nb != run.notebook]
        rows.append({
            "notebook": run.notebook, "run": name, "model": run.model.name, "dataset": run.data.dataset,
            "method": run.recipe.method, "seed": run.recipe.seed, "learns": cost.learns,
            "parent": run.parent.name if run.parent else "", "init": run.init or "",
            "epochs": cost.epochs, "batch": run.recipe.batch_size, "train_images": cost.train_images,
            "test_images": cost.test_images, "train_pflop": cost.train_flops / 1e15,
            "eval_pflop": cost.eval_flops / 1e15, "pflop": cost.flops / 1e15, "minutes": cost.flops / rate / 60,
            "first_in": makers.get((name, key), [run.notebook])[0], "also_in": ", ".join(others),
            "cached": _in_cache(name, key, exact, profile), "key": key, "note": run.note,
        })
    columns = ["notebook", "run", "model", "dataset", "method", "seed", "learns", "parent", "init", "epochs", "batch",
               "train_images", "test_images", "train_pflop", "eval_pflop", "pflop", "minutes", "first_in", "also_in",
               "cached", "key", "note"]
    return pd.DataFrame(rows, columns=columns)


def _makers(plans: dict[str, list[PlannedRun]], fingerprints: dict) -> dict[tuple[str, str], list[str]]:
    """(run name, key) -> the notebooks that make that run, in suite order."""
    makers: dict[tuple[str, str], list[str]] = {}
    for notebook in NOTEBOOKS:
        for run in plans.get(notebook, []):
            name, key, _ = _identity(run, fingerprints)
            if notebook not in makers.setdefault((name, key), []):
                makers[(name, key)].append(notebook)
    return makers


CAVEAT = ("counted FLOPs / a ViT-6's model FLOP rate; narrower, shallower and depth-1 models use a device less "
          "well, and data loading, compilation and checkpoints come on top")


@dataclass
class Estimate:
    """What one notebook trains at a profile: one row per `train()` run, and the rate that turns FLOPs into time."""

    notebook: str
    profile: str
    runs: pd.DataFrame
    flops_per_second: float
    rate: str  # where the rate comes from, in words
    note: str = ""  # for a notebook that trains nothing: why

    @property
    def pflop(self) -> float:
        return float(self.runs["pflop"].sum())

    @property
    def minutes(self) -> float:
        return float(self.runs["minutes"].sum())

    def summary(self) -> str:
        """One line: runs, PFLOP, minutes at the rate, shared and cached runs."""
        head = f"Estimate for {self.notebook} at profile {self.profile}: "
        if self.note:
            return head + f"0 train() runs, 0 minutes ({self.note})."
        n = len(self.runs)
        shared = self.runs[self.runs["also_in"] != ""]
        first = self.runs[self.runs["first_in"] != self.notebook]
        line = head + f"{n} train() run(s)"
        if len(shared):
            makers = sorted({nb for also in shared["also_in"] for nb in also.split(", ")})
            line += f" ({len(shared)} also made by {', '.join(makers)})"
        line += (f", {self.pflop:.3g} PFLOP, about {_minutes(self.minutes)} at {self.rate}")
        if len(first):
            line += f" ({_minutes(self.minutes - float(first['minutes'].sum()))} after the earlier notebooks ran)"
        known = self.runs["cached"].dropna()
        if len(known):
            left = self.minutes - float(self.runs.loc[self.runs["cached"] == True, "minutes"].sum())  # noqa: E712
            line += (f"; {int(known.sum())} of {len(known)}{' checkable' if len(known) < n else ''} run(s) already in "
                     f"the run cache ({_minutes(left)} to go)")
        elif n:
            line += "; the run cache is not checked (runs from given weights are keyed by the weights' digest)"
        return line + ". An estimate: " + CAVEAT + "."


def _minutes(minutes: float) -> str:
    if minutes >= 120:
        return f"{minutes / 60:.3g} h"
    return f"{minutes:.2g} min" if minutes < 10 else f"{minutes:.0f} min"


def estimate_notebook(notebook: str, profile: str, flops_per_second: float | None = None, **parameters) -> Estimate:
    """The estimate of `notebook` (a name or its number) at `profile`, with the notebook's `parameters` (its
    defaults for the rest). `flops_per_second`: a rate (e.g. 2e14), or None to measure this machine's
    (`measure_flops_per_second`). Runs that other notebooks make too (at their defaults) are marked."""
    notebook = notebook_name(notebook)
    _check_profile(profile)
    rate = _rate(flops_per_second, profile)
    plans = {nb: plan_notebook(nb, profile) for nb in NOTEBOOKS if nb != notebook}
    plans[notebook] = plan_notebook(notebook, profile, **parameters)
    fingerprints: dict = {}
    rows = _rows(plans[notebook], profile, rate, _makers(plans, fingerprints), fingerprints)
    return Estimate(notebook, profile, rows, float(rate), _rate_words(rate), NOTEBOOKS[notebook].trains_nothing)


@dataclass
class SuiteEstimate:
    """Every notebook's estimate at a profile; `table` has one row per notebook and a total that counts every run
    once (in the first notebook that makes it)."""

    profile: str
    estimates: dict[str, Estimate]
    flops_per_second: float
    rate: str

    @property
    def runs(self) -> pd.DataFrame:
        return pd.concat([e.runs for e in self.estimates.values()], ignore_index=True)

    @property
    def table(self) -> pd.DataFrame:
        rows = []
        for name, estimate in self.estimates.items():
            runs = estimate.runs
            own = runs[runs["first_in"] == name]
            rows.append({"notebook": name, "runs": len(runs), "shared": len(runs) - len(own),
                         "cached": int((own["cached"] == True).sum()),  # noqa: E712
                         "pflop": float(own["pflop"].sum()), "minutes": float(own["minutes"].sum()),
                         "minutes_alone": float(runs["minutes"].sum()),
                         "note": estimate.note or "; ".join(dict.fromkeys(
                             part for note in runs["note"] for part in note.split("; ") if part))})
        table = pd.DataFrame(rows, columns=["notebook", "runs", "shared", "cached", "pflop", "minutes",
                                            "minutes_alone", "note"])
        total = {"notebook": "total", "runs": int(table["runs"].sum() - table["shared"].sum()), "shared": 0,
                 "cached": int(table["cached"].sum()), "pflop": table["pflop"].sum(),
                 "minutes": table["minutes"].sum(), "minutes_alone": float("nan"), "note": ""}
        return pd.concat([table, pd.DataFrame([total])], ignore_index=True)

    @property
    def minutes(self) -> float:
        return float(self.table["minutes"].iloc[-1])

    def summary(self) -> str:
        total = self.table.iloc[-1]
        return (f"Estimate for the suite at profile {self.profile}: {int(total['runs'])} distinct train() runs, "
                f"{total['pflop']:.3g} PFLOP, about {_minutes(total['minutes'])} at {self.rate}. An estimate: "
                + CAVEAT + ".")


def estimate_suite(profile: str, flops_per_second: float | None = None,
                   notebooks: list[str] | None = None) -> SuiteEstimate:
    """Every notebook (or those named) at `profile` with its default parameters; shared runs count once, in the
    first notebook (in suite order) that makes them."""
    _check_profile(profile)
    rate = _rate(flops_per_second, profile)
    chosen = [notebook_name(nb) for nb in notebooks] if notebooks else list(NOTEBOOKS)
    plans = {nb: plan_notebook(nb, profile) for nb in NOTEBOOKS}
    fingerprints: dict = {}
    makers = _makers({nb: plans[nb] for nb in NOTEBOOKS if nb in chosen}, fingerprints)
    estimates = {nb: Estimate(nb, profile, _rows(plans[nb], profile, rate, makers, fingerprints), float(rate),
                              _rate_words(rate), NOTEBOOKS[nb].trains_nothing)
                 for nb in NOTEBOOKS if nb in chosen}
    return SuiteEstimate(profile, estimates, float(rate), _rate_words(rate))


# --- the command line --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from .experiments import PROFILES

    parser = OneLineArgumentParser(prog="python -m paraformer.estimate",
                            description="Estimate how long each notebook trains at a profile (FLOPs counted on the "
                                        "real models / a model FLOP rate), before starting any of them.")
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES), help="the profile to estimate")
    parser.add_argument("--flops-per-second", type=float, default=None, metavar="RATE",
                        help="model FLOP rate to assume, e.g. 2e14; default: measure this machine's")
    parser.add_argument("--notebooks", nargs="+", default=None, metavar="NB",
                        help="notebooks by number or name (default: all), e.g. 01 03")
    parser.add_argument("--runs", action="store_true", help="print every run, not only the per-notebook table")
    args = parser.parse_args(argv)
    try:
        suite = estimate_suite(args.profile, args.flops_per_second, args.notebooks)
    except ConfigError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    table = suite.table.assign(pflop=lambda t: t["pflop"].round(3), minutes=lambda t: t["minutes"].round(1),
                               minutes_alone=lambda t: t["minutes_alone"].round(1))
    print(suite.summary())
    print(table.drop(columns="note").to_string(index=False, na_rep=""))
    notes = [f"{row.notebook}: {row.note}" for row in table.itertuples() if row.note]
    if notes:
        print("\n".join(["notes:", *notes]))
    if args.runs:
        columns = ["notebook", "run", "method", "seed", "learns", "epochs", "train_images", "pflop", "minutes",
                   "first_in", "cached"]
        print(suite.runs[columns].round(3).to_string(index=False))
    print("runs: train() calls; shared: runs an earlier notebook makes (counted there); cached: finished runs in the "
          "run cache; minutes: this notebook's own runs at the rate; minutes_alone: all its runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
