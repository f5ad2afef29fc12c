"""How the branches learn: joint training of the full sum, and three forms of progressive approximation
(Wang, Wei & Li 2025), in which each new branch lowers the loss left by the branches before it, so that every
prefix 1..k is a classifier on its own. `Recipe.method` picks one; docs/models-and-training.md tables what each
does per minibatch and what it costs.

`authors` runs as the authors' public code: pass 1 of an epoch takes a clipped step on each prefix 1..i per
minibatch, pass 2 one step on the full sum. `frozen` runs one whole recipe per branch; nothing before branch k
requires a gradient in stage k, so the fixed sum of branches 1..k-1 is computed without one (across devices,
communication is forward only). A run from a parent run (`train(..., parent=...)`) inherits its weights, and
`frozen` continues its stages at the first new branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .config import ConfigError, Recipe
from .model import ParaFormer

# The authors' code clips every prefix step of pass 1 to this gradient norm.
AUTHORS_PREFIX_CLIP = 1.0


@dataclass(frozen=True)
class Stage:
    """A run of consecutive epochs with one set of trainable parameters (and one optimizer)."""

    index: int
    first_epoch: int
    num_epochs: int
    active_branches: int  # the model trains and is evaluated as its prefix of this many branches
    trainable: frozenset[str]  # names of the parameters that learn in this stage


def plan(model: ParaFormer, recipe: Recipe, inherited: frozenset[str] = frozenset()) -> list[Stage]:
    """The stages of a run: one for every method but `frozen`, which has one per branch it trains. `inherited`
    names the parameters copied from a parent run."""
    names = frozenset(name for name, _ in model.named_parameters())
    if recipe.method != "joint" and model.config.is_incremental:
        raise ConfigError(f"Recipe.method={recipe.method!r} is not defined for a class-incremental model "
                          "(its prefixes exist only at task boundaries); use method='joint'")
    if recipe.prefix_weights and len(recipe.prefix_weights) != model.num_branches:
        raise ConfigError(f"Recipe.prefix_weights has {len(recipe.prefix_weights)} weights but the model has "
                          f"{model.num_branches} branches; give one weight per branch")
    if recipe.method != "frozen":
        trainable = names - inherited if recipe.freeze_inherited else names
        return [Stage(0, 0, recipe.epochs, model.num_branches, trainable)]

    first = sum(any(name.startswith(f"branches.{b}.") for name in inherited) for b in range(model.num_branches))
    if first == model.num_branches:
        raise ConfigError("method='frozen' has no branch left to train: the parent run already has all "
                          f"{model.num_branches}; expand the model first")
    stages = []
    for index, branch in enumerate(range(first, model.num_branches)):
        own = {name for name in names if name.startswith(f"branches.{branch}.")}
        if branch == 0:  # a model trained from scratch: its first stage also learns the stem and the head
            own |= {name for name in names if not name.startswith("branches.")}
        stages.append(Stage(index, index * recipe.epochs, recipe.epochs, branch + 1, frozenset(own)))
    return stages


def stage_of(stages: list[Stage], epoch: int) -> Stage:
    return next(s for s in stages if s.first_epoch <= epoch < s.first_epoch + s.num_epochs)


def set_trainable(model: ParaFormer, stage: Stage) -> None:
    for name, parameter in model.named_parameters():
        learns = name in stage.trainable
        parameter.requires_grad_(learns)
        if not learns:  # a gradient an earlier stage left must not count in this stage's gradient norm
            parameter.grad = None


# --- per-minibatch updates ------------------------------------------------------------------------
# Each method's work on one minibatch: compute a loss, call `step(loss, clip, loss_on)` (`StageTraining.step`;
# `loss_on` names what the loss was computed on) once per optimizer step. An update returns the minibatch's loss
# as a detached float64 tensor: reading it as a number would wait for the device at every step.

Step = Callable[[torch.Tensor, float | None, str], None]


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)


def full_sum_update(model: ParaFormer, x, y, stage: Stage, recipe: Recipe, step: Step) -> torch.Tensor:
    """One step on the active model (all branches; for `frozen`, the stage's prefix)."""
    loss = _cross_entropy(model(x, num_branches=stage.active_branches), y, recipe)
    step(loss, recipe.grad_clip, f"branches 1-{stage.active_branches}")
    return loss.detach().double()


def prefix_update(model: ParaFormer, x, y, stage: Stage, recipe: Recipe, step: Step) -> torch.Tensor:
    """One step on the weighted mean of every prefix's loss, from one forward pass."""
    weights = recipe.prefix_weights or (1.0,) * model.num_branches
    losses = [w * _cross_entropy(logits, y, recipe) for w, logits in zip(weights, model.prefix_logits(x)) if w]
    loss = torch.stack(losses).sum() / sum(weights)
    step(loss, recipe.grad_clip, "every prefix")
    return loss.detach().double()


def authors_prefix_steps(model: ParaFormer, x, y, stage: Stage, recipe: Recipe, step: Step) -> torch.Tensor:
    """Pass 1 of the authors' epoch: a clipped step on each prefix 1..m in turn, recomputed after each step."""
    total = None
    for k in range(1, model.num_branches + 1):
        loss = _cross_entropy(model(x, num_branches=k), y, recipe)
        step(loss, AUTHORS_PREFIX_CLIP, f"branches 1-{k}")
        total = loss.detach().double() if total is None else total + loss.detach().double()
    return total / model.num_branches


# method -> the passes over the training data that make one epoch, each with its optimizer steps per minibatch
PASSES: dict[str, tuple[Callable, ...]] = {
    "joint": (full_sum_update,),
    "prefix": (prefix_update,),
    "frozen": (full_sum_update,),
    "authors": (authors_prefix_steps, full_sum_update),
}


def steps_per_batch(method: str, num_branches: int) -> list[int]:
    """Optimizer steps each pass of `method` takes per minibatch (the learning-rate schedule counts them)."""
    return [num_branches if update is authors_prefix_steps else 1 for update in PASSES[method]]


def optimizer_steps(method: str, branches_per_epoch: list[int], batches: int) -> int:
    """The optimizer steps a run of `method` takes: per epoch (its active branches) `batches` minibatches times the
    steps each of the epoch's passes takes per minibatch."""
    return sum(batches * sum(steps_per_batch(method, branches)) for branches in branches_per_epoch)
