"""Branch parallelism across devices (docs/parallel.md): every rank sees the same minibatch and holds the stem, the
head and a contiguous share of the branches; one all-reduce sums the ranks' partial sums of CLS outputs, and every
rank applies the head to the same total and computes the same loss. Gradients are then exact with that all-reduce
and one for the stem's gradients:
- the sum's backward is the identity: each rank's loss is the whole loss, so the gradient reaching the total is
  complete on every rank (a differentiable all-reduce would sum it again, world_size times too large);
- a branch's parameters live on one rank, and the head's gradient is the same everywhere;
- the stem feeds every branch, so each rank holds the part of its gradient that flows through its own branches:
  `sync_gradients` sums those parts (nothing to sync when the stem is frozen).
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.distributed as dist
from torch import nn

from ..core.config import ConfigError
from ..core.model import ParaFormer
from .launch import grad_or_zero, sum_into_gradients


class _SumAcrossRanks(torch.autograd.Function):
    """all_reduce(sum) forward; identity backward: an exact gradient when every rank computes the same loss from
    the sum (see the module docstring)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def branch_shares(num_branches: int, world_size: int) -> list[range]:
    """Contiguous, balanced shares of the branches: rank r holds branches shares[r] (the first ranks one more
    when the division is not even)."""
    if world_size > num_branches:
        raise ConfigError(f"{world_size} ranks for {num_branches} branches: every rank needs at least one branch; "
                          f"use at most {num_branches} processes")
    size, extra = divmod(num_branches, world_size)
    starts = [r * size + min(r, extra) for r in range(world_size + 1)]
    return [range(starts[r], starts[r + 1]) for r in range(world_size)]


def shared_view(model: ParaFormer, share: range) -> ParaFormer:
    """`model` restricted to branches `share`, holding the same modules and parameters (no copy): what
    `select_branches` computes, for a rank that trains its share in place."""
    view = copy.copy(model)  # a new attribute dict over the same submodules and parameters
    view._modules = dict(model._modules)
    view._modules["branches"] = nn.ModuleList(model.branches[i] for i in share)
    view.config = model.config.with_branches(len(share))
    return view


class BranchParallel(nn.Module):
    """This rank's part of a branch-parallel ParaFormer: the stem, the head and branches `share` of `model`.

    Build it from the same full model (same weights) on every rank; `forward` returns the full model's logits
    on every rank. A rank whose branches, stem and head are all frozen gets logits that need no gradient.

    Dropout: the replicated stem's masks must agree on every rank, which each rank's own stream would not give (its
    branches consume it unequally). So each forward call draws the stem's masks from a stream seeded by (`seed`,
    call number), the same everywhere, and the branches' from one seeded by (`seed`, call number, rank); the
    caller's random state is left as it was. `calls` counts the calls, restored with a checkpoint for exact resume.

    `share_weights`: hold this rank's part as the model's own modules rather than a copy, so that an optimizer of
    `model` sees the gradients (training, `paraformer.parallel.processes`); a copy otherwise (the benchmarks)."""

    def __init__(self, model: ParaFormer, group=None, seed: int = 0, share_weights: bool = False):
        super().__init__()
        if model.config.is_incremental:
            raise ConfigError("BranchParallel needs a plain ParaFormer, not a class-incremental one")
        self.group = group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.num_branches = model.num_branches
        self.share = branch_shares(model.num_branches, self.world_size)[self.rank]
        self.local = shared_view(model, self.share) if share_weights else model.select_branches(list(self.share))
        self.local.execution = model.execution
        self.seed, self.calls = seed, 0
        for name, p in self.local.named_parameters():  # what is frozen in the model stays frozen here
            p.requires_grad_(model.get_parameter(self.global_name(name)).requires_grad)

    def global_name(self, local_name: str) -> str:
        """The full model's name of a parameter of `self.local` (local branch i is branch share.start + i)."""
        parts = local_name.split(".")
        if parts[0] == "branches":
            parts[1] = str(self.share.start + int(parts[1]))
        return ".".join(parts)

    def forward(self, images: torch.Tensor, num_branches: int | None = None) -> torch.Tensor:
        """Logits of the first `num_branches` branches (all by default), summed across ranks."""
        k = self.num_branches if num_branches is None else num_branches
        if not 1 <= k <= self.num_branches:
            raise ConfigError(f"num_branches={num_branches} is out of range: this model has 1..{self.num_branches}")
        stochastic = self.training and self.local.config.dropout > 0
        with self._dropout_stream(0, stochastic):
            tokens = self.local.embed(images)
        local = max(0, min(k, self.share.stop) - self.share.start)  # this rank's branches inside the prefix
        if local:
            with self._dropout_stream(1 + self.rank, stochastic):
                outputs = self.local.branch_outputs(tokens, local)
            partial = sum(outputs[1:], outputs[0])  # in branch order, as the single-process model adds them
        else:  # no branch inside the prefix here, but the all-reduce needs every rank
            partial = torch.zeros_like(tokens[:, 0])
        if stochastic:
            self.calls += 1
        return self.local.classify(_SumAcrossRanks.apply(partial, self.group))

    @contextlib.contextmanager
    def _dropout_stream(self, stream: int, stochastic: bool):
        """Draw random numbers from the stream (seed, call, stream) inside, and restore the caller's state after."""
        if not stochastic:
            yield
            return
        device = self.local.cls_token.device
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            # distinct, fixed seeds per (seed, call, stream); manual_seed of the devices in use only, since
            # fork_rng restores those alone
            value = (self.seed * 1_000_003 + self.calls) * 1_009 + stream
            torch.default_generator.manual_seed(value)
            if cuda:
                index = device.index if device.index is not None else torch.cuda.current_device()
                torch.cuda.default_generators[index].manual_seed(value)
            yield

    def sync_gradients(self) -> int:
        """Sum the stem's gradient parts across ranks (call after backward, before the optimizer step). Returns
        the number of tensors reduced: 0 when the stem is frozen."""
        # Decided by requires_grad, the same on every rank, never by whether a gradient exists here: a rank
        # without branches in the prefix has none, and every rank must join the same collectives.
        params = [p for p in self.stem_parameters() if p.requires_grad]
        if params:  # one flat buffer, one collective
            sum_into_gradients(params, [grad_or_zero(p) for p in params], self.group)
        return len(params)

    def stem_parameters(self) -> list[nn.Parameter]:
        return [self.local.patch_embed.weight, self.local.patch_embed.bias, self.local.cls_token,
                self.local.pos_embed]
