"""FLOP counting: torch's FlopCounterMode with attention counted on every device, and the suite's FLOPs per
inference image, per training image and per run.

The counter knows the CUDA attention kernels but not the CPU's fused one, nor what the meta device runs, so
attention is counted through its math kernel: the same matrix products (the numbers it computes are thrown away).

Convention: FLOPs of matrix products, convolutions and attention only, 2·m·n·k for an (m x k)·(k x n) product;
normalization, activations, softmax, residual adds, the loss and the optimizer update are not counted. Counts
are of what the model really computes (a branch's last layer works for the CLS token alone, `model.Branch`).
Backward passes are measured, not assumed to be 2x the forward: a product whose weights learn and whose input
carries a gradient costs 2x its forward, the patch projection (the image needs no gradient) 1x, and a frozen
part that nothing before it trains nothing. Counting runs on the meta device (shapes only), on one image: every
operation is per image, so a batch costs its size times as much, whatever the batch size.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from . import progressive
from .config import ConfigError, DataConfig, ModelConfig, Recipe, from_dict
from .data import image_counts
from .model import ParaFormer
from .runcache import RunResult, read_record, run_paths


def count_flops(work: Callable[[], object]) -> int:
    """FLOPs of the matrix products, convolutions and attention that `work()` runs (forward and any backward)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops()


def _meta_model(config: ModelConfig) -> ParaFormer:
    # On the meta device no weights exist, so nothing is drawn from the global RNG: counting never shifts the
    # random streams of a run that is being set up around it.
    with torch.device("meta"):
        return ParaFormer(config)


def _one_image(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(1, config.in_channels, config.image_size, config.image_size, device="meta")
    return x, torch.zeros(1, dtype=torch.long, device="meta")


@functools.lru_cache(maxsize=None)
def inference_flops_per_image(model_config: ModelConfig) -> int:
    """FLOPs of the forward pass of one image through the whole model: the stem, every branch (its last layer
    for the CLS token only) and the head (every task's head for a class-incremental model)."""
    net = _meta_model(model_config)
    x, _ = _one_image(model_config)
    with torch.no_grad():
        return count_flops(lambda: net(x))


@functools.lru_cache(maxsize=None)
def evaluation_flops_per_image(model_config: ModelConfig) -> int:
    """FLOPs per test image of the evaluation train() runs after every epoch: one forward pass that scores every
    prefix of a plain model's branches (one head each), or every task's head of a class-incremental one."""
    net = _meta_model(model_config)
    x, _ = _one_image(model_config)
    with torch.no_grad():
        return count_flops(lambda: net(x) if model_config.is_incremental else net.prefix_logits(x))


def _backward_only(loss: torch.Tensor, *_) -> None:
    # Stands in for StageTraining.step: of an optimizer step, only the backward pass is a counted product.
    loss.backward()


@functools.lru_cache(maxsize=None)
def stage_flops(model_config: ModelConfig, method: str = "joint", parent: ModelConfig | None = None,
                freeze_inherited: bool = False, prefix_weights: tuple[float, ...] = ()) -> tuple[tuple[progressive.Stage, int], ...]:
    """For each stage of a run (`progressive.plan`), the FLOPs per training image of one minibatch of all passes
    of `method`, with what requires a gradient set as `train()` sets it. `parent`: what a grown run inherits from."""
    recipe = Recipe(method=method, freeze_inherited=freeze_inherited, prefix_weights=prefix_weights)
    net = _meta_model(model_config)
    inherited = frozenset(n for n, _ in _meta_model(parent).named_parameters()) if parent is not None else frozenset()
    x, y = _one_image(model_config)
    costs = []
    for stage in progressive.plan(net, recipe, inherited):
        progressive.set_trainable(net, stage)

        def one_minibatch():
            for update in progressive.PASSES[method]:
                update(net, x, y, stage, recipe, _backward_only)

        costs.append((stage, count_flops(one_minibatch)))
        net.zero_grad(set_to_none=True)
    return tuple(costs)


def training_flops_per_image(model_config: ModelConfig, method: str = "joint", num_branches: int | None = None) -> int:
    """FLOPs one training image costs per epoch, for a model trained from scratch by `method`: forward and
    backward of every optimizer step of all the method's passes (`authors`: the m prefix steps of pass 1, each
    recomputing the stem, branches 1..i and the head, then the step on the full sum). `num_branches`: for
    `frozen`, the stage that trains that branch (default: the last); else the model's first `num_branches`."""
    stages = stage_flops(model_config, method)
    if method == "frozen":
        wanted = model_config.num_branches if num_branches is None else num_branches
        matching = [flops for stage, flops in stages if stage.active_branches == wanted]
        if not matching:
            raise ConfigError(f"method='frozen' has no stage with {num_branches!r} active branches; "
                              f"{model_config.name} has stages 1..{model_config.num_branches}")
        return matching[0]
    if num_branches is not None and num_branches != model_config.num_branches:
        if model_config.is_incremental:
            raise ConfigError("num_branches needs a plain ParaFormer; a class-incremental model has no prefixes "
                              "of its own to train")
        return training_flops_per_image(model_config.with_branches(num_branches), method)
    ((_, flops),) = stages
    return flops


def run_training_flops(run, recipe: Recipe | None = None, n_train: int | None = None,
                       parent=None, results_root=None) -> int:
    """Total training FLOPs of one run, summed over its stages (`frozen`: one per branch it trains; a grown run
    trains only what its parent lacked where the recipe says so), without the evaluation after each epoch.
    `run`: a `RunResult` (model, data and recipe from its config) or a `ModelConfig` (then give `recipe` and
    `n_train`, the training images per epoch; a RunResult's default is `data.image_counts` of its data config).
    `parent`: the parent's `RunResult` or `ModelConfig` for a grown run; a RunResult's parent is by default read
    from the run cache under `results_root`."""
    if isinstance(run, RunResult):
        model_config, recipe = run.model_config, recipe or from_dict(Recipe, run.config["recipe"])
        if n_train is None:
            n_train = image_counts(from_dict(DataConfig, run.config["data"]))[0]
        # the parent matters only where it decides what learns
        if parent is None and "parent" in run.config and (recipe.freeze_inherited or recipe.method == "frozen"):
            parent = _parent_record(run, results_root)
    elif isinstance(run, ModelConfig):
        model_config = run
        if recipe is None or n_train is None:
            raise ConfigError("run_training_flops of a ModelConfig needs recipe= and n_train=")
    else:
        raise ConfigError(f"run_training_flops needs a RunResult or a ModelConfig, got {type(run).__name__}")
    if isinstance(parent, RunResult):
        parent = parent.model_config
    if recipe.freeze_inherited and parent is None:
        raise ConfigError("Recipe.freeze_inherited=True trains only what the parent lacked: pass parent=")
    stages = stage_flops(model_config, recipe.method, parent, recipe.freeze_inherited, recipe.prefix_weights)
    # every stage is a whole run of the recipe (`frozen`: one per branch), so each lasts `recipe.epochs` epochs
    return sum(flops for _, flops in stages) * n_train * recipe.epochs


def _parent_record(run, results_root):
    name, key = run.config["parent"]["name"], run.config["parent"]["key"]
    record = run_paths(name, key, results_root)[0]
    if not record.exists():
        raise ConfigError(f"run {run.name} was grown from run {name} ({key}), whose record {record} is not here; "
                          "pass parent= (its RunResult or ModelConfig)")
    return read_record(record, key)
