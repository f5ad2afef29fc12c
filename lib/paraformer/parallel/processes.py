"""Where one process stands in a training run, and what it computes of each step: `Recipe.solver` (in one process
the model itself, its branches compiled where Recipe.compile asks, or the MGRIT solver of
`paraformer.parallel.layertrain`), and across processes `Recipe.parallel` and `Recipe.processes`, launched by
torchrun (the schemes: docs/parallel.md).

Every rank holds the whole model, sees the same minibatches (shuffling and augmentation seeded by (seed, epoch)) and
ends every step with the same full gradient, so the replicas stay equal and rank 0 alone writes. Under "data",
dropout draws differ between ranks (seeded by (seed, epoch, rank)), as between the images of one batch; the
history's epoch loss is the whole minibatches', the step log's rank 0's share's. Under "branch" and "layer", one
all-reduce after backward sums every gradient: a branch's or layer's is non-zero on its owner alone, the stem's
parts add up, and the head's (the same on every rank) is counted once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..core.compilation import compile_branches
from ..core.config import ConfigError, Recipe
from ..core.model import ParaFormer
from .branch import BranchParallel
from .launch import control_group, grad_or_zero, init_process_group, sum_into_gradients
from .layertrain import MGRITTraining

DEFAULT_TIMEOUT_SECONDS = 300


class RankFailure(RuntimeError):
    """A multi-process run stopped on this rank because a collective failed or timed out."""


def timeout_seconds() -> float:
    value = os.environ.get("PARAFORMER_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_SECONDS))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"PARAFORMER_DIST_TIMEOUT={value!r} must be a positive number of seconds (default "
                          f"{DEFAULT_TIMEOUT_SECONDS})")
    return seconds


@dataclass(frozen=True)
class Processes:
    """Where this process stands in its run: rank `rank` of `world_size` (1: an ordinary run)."""

    rank: int = 0
    world_size: int = 1
    scheme: str = "none"  # Recipe.parallel
    timeout: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def writes(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag` on every rank (what rank 0 decided, e.g. whether the run is cached)."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)])
        dist.broadcast(value, src=0, group=control_group(self.timeout))
        return bool(value.item())

    def training_module(self, model: ParaFormer, recipe: Recipe) -> nn.Module:
        """The module a training step calls (the model itself unless the recipe asks for another)."""
        if recipe.solver == "mgrit":  # across processes too: "layer" shares the solver's layers
            return MGRITTraining(model, recipe, distributed=self.distributed)
        if self.shards_data:
            from torch.nn.parallel import DistributedDataParallel

            device = next(model.parameters()).device
            return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                           find_unused_parameters=False)
        if self.distributed:
            return BranchTraining(model, recipe.seed)
        if recipe.compile:
            compile_branches(model)
        return model

    @property
    def shards_data(self) -> bool:
        return self.distributed and self.scheme == "data"

    def share(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.shards_data:
            return images, labels
        part = rank_share(len(labels), self.rank, self.world_size)
        return images[part], labels[part]

    def epoch_seed(self, seed: int) -> int:
        """The global RNG's seed for an epoch (dropout, RandAugment): the same on every rank, but under "data" each
        rank's share of a minibatch draws its own masks, as other images would."""
        return seed * 1_009 + self.rank if self.shards_data else seed

    def minibatch_total(self, loss_sum: torch.Tensor) -> torch.Tensor:
        """An epoch's summed loss over whole minibatches: under "data" the sum of the ranks' shares."""
        if not self.shards_data:
            return loss_sum
        summed = loss_sum.detach().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed

    def complete_gradients(self, model: ParaFormer) -> None:
        """After backward: under "branch" and "layer" every rank's gradient becomes the full one (see the module
        docstring; DDP's own all-reduce does it under "data"). The head's gradient, the same on every rank, is kept
        on rank 0 alone before the sum."""
        params = [p for p in model.parameters() if p.requires_grad]
        if not (self.distributed and self.scheme in ("branch", "layer")) or not params:
            return
        head = {id(p) for p in (*model.norm.parameters(), *model.head.parameters())}
        sum_into_gradients(params, [torch.zeros_like(p) if id(p) in head and not self.writes else grad_or_zero(p)
                                    for p in params])

    def failure(self, error: BaseException) -> RankFailure:
        return RankFailure(f"rank {self.rank} of {self.world_size} stopped: {error} (a collective fails when "
                           f"another rank has failed or has not answered within PARAFORMER_DIST_TIMEOUT="
                           f"{self.timeout:g} s; that rank's own output says why)")


def join(recipe: Recipe) -> Processes:
    """This process's place in the run `recipe` asks for, joining torchrun's process group if need be. Refuses a
    launch that does not match the recipe (a run on 2 processes is another run than on 1: its key differs)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != recipe.processes:
        how = (f"torchrun --nproc_per_node {recipe.processes} -m paraformer.tools.train ..." if recipe.processes > 1
               else "python -m paraformer.tools.train ... (no torchrun)")
        raise ConfigError(f"Recipe.processes={recipe.processes} but this process was launched as one of {launched}; "
                          f"launch with {how}, or set Recipe.processes={launched}")
    if recipe.processes == 1:
        return Processes()
    timeout = timeout_seconds()
    if not dist.is_initialized():
        init_process_group(timeout_seconds=timeout)
    elif dist.get_world_size() != recipe.processes:
        raise ConfigError(f"Recipe.processes={recipe.processes} but the process group has {dist.get_world_size()} "
                          "ranks")
    control_group(timeout)  # here, where every rank is, before any rank's first control message
    return Processes(dist.get_rank(), dist.get_world_size(), recipe.parallel, timeout)


def rank_share(batch: int, rank: int, world: int) -> slice:
    """The images of a global batch that rank `rank` of `world` computes in data parallelism: an equal,
    contiguous share (DDP averages the ranks' gradients with equal weight, which is the whole batch's mean
    gradient only when every rank has as many images)."""
    if batch % world:
        raise ConfigError(f"data parallelism splits the batch of {batch} into equal shares, and {world} processes "
                          f"do not divide it; use a process count that divides {batch}")
    size = batch // world
    return slice(rank * size, (rank + 1) * size)


def check_layout(model: ParaFormer, recipe: Recipe, num_train: int) -> None:
    """Refuse, before any work, a run its scheme cannot split."""
    p = recipe.processes
    if recipe.parallel == "data":
        last = num_train % recipe.batch_size
        if recipe.batch_size % p or last % p:
            raise ConfigError(f"Recipe.parallel='data' gives every rank an equal share of each minibatch, and "
                              f"{p} processes do not divide batch_size={recipe.batch_size} (or the last minibatch "
                              f"of {last} images); choose a batch size and training-set size they divide")
    if recipe.parallel == "branch" and p > model.num_branches:
        raise ConfigError(f"Recipe.parallel='branch' needs a branch per rank: {model.config.name} has "
                          f"{model.num_branches} for {p} processes; use at most {model.num_branches}")


class BranchTraining(nn.Module):
    """`BranchParallel` over the model's own modules (the optimizer's parameters); `complete_gradients` sums the
    gradients that keep every replica equal."""

    def __init__(self, model: ParaFormer, seed: int):
        super().__init__()
        self.model = model
        self.parallel = BranchParallel(model, seed=seed, share_weights=True)

    def forward(self, images: torch.Tensor, num_branches: int | None = None) -> torch.Tensor:
        return self.parallel(images, num_branches)

    def start_epoch(self, first_step: int, history: list[dict] | None = None) -> None:
        self.parallel.calls = first_step  # one stochastic forward call per step: the dropout streams resume
