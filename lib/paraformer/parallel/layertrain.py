"""Training a ViT layer-parallel through `train()`: MGRIT gradients inside an ordinary optimizer step, and the
adaptive rule that watches their error (`Recipe.solver="mgrit"`; the 2026 paper, arXiv 2601.09026; docs/parallel.md).

`MGRITTraining` wraps the model as the training loop calls it: the stem and the head run as usual, and the chain
of layers between them is one autograd node (`_MGRITChain`) whose forward pass is an MGRIT solve and whose
backward pass the MGRIT solve of the adjoint (`paraformer.parallel.mgrit.LayerParallel`), returning the layers'
parameter gradients, so `loss.backward()`, the clip, the optimizer and the checkpoints are those of every other run.

The adaptive rule: the solver's error does not shrink with the gradient, so near a minimum the MGRIT gradient is
more and more bias. Every `check_every` steps the backward pass also computes the chain's exact gradient on the
same minibatch and output cotangent and records the relative errors of the output and of the gradient (tokens'
cotangent and layer gradients, as one vector). "iterate" switches to backpropagation once its cycles would make
the two-level solve exact (MGRIT would then cost more than the serial chain).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..core.config import ConfigError, Recipe
from ..core.model import ParaFormer
from .launch import control_group
from .mgrit import LayerParallel, MGRITConfig, layer_step, relative_error


def mgrit_config(recipe: Recipe, iterations: tuple[int, int] | None = None) -> MGRITConfig:
    """The solver a recipe asks for, at its own iteration counts or at `iterations` (forward, adjoint)."""
    forward, backward = recipe.mgrit_iterations if iterations is None else iterations
    return MGRITConfig(levels=recipe.mgrit_levels, coarsening=recipe.mgrit_coarsening,
                       fine_relaxation=recipe.mgrit_relaxation, forward_iterations=forward,
                       backward_iterations=backward)


class _MGRITChain(torch.autograd.Function):
    """tokens -> the last layer's (batch, tokens, width) output, by MGRIT forward and adjoint solves.

    Across P ranks each solves its own layers; the output is broadcast from the last rank, so that every rank
    computes the same head and loss. Backward gives the tokens' cotangent on the first rank (zero elsewhere) and
    each layer's gradient on its owner (None elsewhere): `Processes.complete_gradients` (paraformer.parallel.processes)
    completes them after backward."""

    @staticmethod
    def forward(ctx, training: "MGRITTraining", tokens: torch.Tensor, *parameters: torch.Tensor) -> torch.Tensor:
        solver = training.solver()
        output = solver.solve_forward(tokens, tokens)
        if solver.world_size > 1:
            if output is None:
                output = torch.empty_like(tokens)
            dist.broadcast(output, src=solver.world_size - 1, group=solver.group)
        ctx.training, ctx.solver, ctx.check = training, solver, training.check_due()
        ctx.save_for_backward(tokens, output)
        return output

    @staticmethod
    def backward(ctx, output_cotangent: torch.Tensor):
        tokens, output = ctx.saved_tensors
        solver, training = ctx.solver, ctx.training
        entering, per_layer = solver.solve_adjoint(output_cotangent if solver.is_last else None, tokens)
        if entering is None:  # not the first rank: the stem's gradient comes from there
            entering = torch.zeros_like(tokens)
        local = {id(p): g for params, grads in per_layer for p, g in zip(params, grads)}
        parameters = training.chain_parameters()
        grads = [local.get(id(p)) for p in parameters]
        if ctx.check:
            whole = [entering, *(g if g is not None else torch.zeros_like(p) for g, p in zip(grads, parameters))]
            if solver.world_size > 1:  # the check compares the whole chain's gradient, on every rank
                flat = torch.cat([g.reshape(-1) for g in whole])
                dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=solver.group)
                whole = [flat]
            training.compare_with_exact(tokens, output, output_cotangent, whole)
        return (None, entering, *grads)


class MGRITTraining(nn.Module):
    """`model` as the training loop calls it, with the chain of layers solved by MGRIT while training; see the
    module docstring. `step_number` counts training steps over the whole run (`start_epoch` sets it)."""

    def __init__(self, model: ParaFormer, recipe: Recipe, distributed: bool = False):
        super().__init__()
        # refuse, before any work, a model the recipe's MGRIT cannot train (one line, with the fix)
        if model.num_branches != 1 or model.config.is_incremental:
            raise ConfigError(f"Recipe.solver='mgrit' trains a ViT (one branch of depth n, 'n-n'), not "
                              f"{model.config.name}")
        if model.config.dropout:
            raise ConfigError(f"Recipe.solver='mgrit' re-evaluates every layer several times per step and would draw "
                              f"new dropout masks each time; set ModelConfig.dropout=0 (got {model.config.dropout})")
        LayerParallel(model, mgrit_config(recipe))  # checks the residual and that layers split into coarse intervals
        self.model, self.recipe = model, recipe
        self.group = dist.group.WORLD if distributed else None  # the ranks that share the layers (None: one process)
        self.control = control_group() if distributed else None  # the checks' figures: host values
        self.iterations: tuple[int, int] | None = tuple(recipe.mgrit_iterations)  # None: backpropagation
        self.switch_step: int | None = None  # the step from which training is serial, if it switched
        self.step_number = 0
        self.checks: list[list] = []  # this epoch's [step, output error, gradient error, iterations or None]
        self._solver_cache: dict[tuple[int, int], LayerParallel] = {}

    def solver(self) -> LayerParallel:
        if self.iterations not in self._solver_cache:
            self._solver_cache[self.iterations] = LayerParallel(self.model, mgrit_config(self.recipe, self.iterations),
                                                                group=self.group)
        return self._solver_cache[self.iterations]

    def check_due(self) -> bool:
        every = self.recipe.mgrit_check_every
        return bool(every) and self.step_number % every == 0

    def chain_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.branches[0].parameters() if p.requires_grad]

    def forward(self, images: torch.Tensor, num_branches: int | None = None) -> torch.Tensor:
        if not self.model.training or self.iterations is None:
            return self.model(images, num_branches)
        tokens = self.model.embed(images)
        output = _MGRITChain.apply(self, tokens, *self.chain_parameters())
        self.step_number += 1
        return self.model.classify(output[:, 0])

    def compare_with_exact(self, tokens: torch.Tensor, output: torch.Tensor, output_cotangent: torch.Tensor,
                           mgrit_grads: list[torch.Tensor]) -> None:
        """The adaptive rule's check: the exact chain on the same tokens and cotangent against MGRIT's."""
        layers, params = list(self.model.branches[0]), self.chain_parameters()
        with torch.enable_grad():
            x = x0 = tokens.detach().requires_grad_(True)
            for layer in layers:
                x = layer_step(layer, x, self.model.config.step)
            exact = torch.autograd.grad(x, [x0, *params], output_cotangent)
        flat = lambda tensors: torch.cat([t.reshape(-1) for t in tensors])  # noqa: E731
        errors = torch.tensor([relative_error(output, x.detach()), relative_error(flat(mgrit_grads), flat(exact))],
                              dtype=torch.float64)
        if self.group is not None:  # rank 0's figures decide on every rank, so that all run the same cycles
            dist.broadcast(errors, src=0, group=self.control)
        output_error, gradient_error = errors.tolist()
        step = self.step_number - 1  # the step whose backward pass this is
        self.checks.append([step, output_error, gradient_error, list(self.iterations)])
        if gradient_error > self.recipe.mgrit_tolerance:
            self.adapt(step)

    def adapt(self, step: int) -> None:
        more = (self.iterations[0] + 1, self.iterations[1] + 1)
        exact_after = mgrit_config(self.recipe).iterations_to_converge(self.model.config.num_layers)  # two-level
        if self.recipe.mgrit_adapt == "serial" or max(more) >= exact_after:
            self.iterations, self.switch_step = None, step + 1
        else:
            self.iterations = more

    def start_epoch(self, first_step: int, history: list[dict]) -> None:
        """Before an epoch: its first step number, and the solver's state as the last finished epoch left it (so a
        resumed run continues as an uninterrupted one)."""
        self.step_number, self.checks = first_step, []
        if history:
            iterations, self.switch_step = history[-1]["mgrit_iterations"], history[-1]["solver_switch_step"]
            self.iterations = tuple(iterations) if iterations is not None else None

    def epoch_summary(self) -> dict:
        """What the run history keeps of this epoch's solver: its state at the end, and every check."""
        return {"mgrit_iterations": list(self.iterations) if self.iterations is not None else None,
                "solver_switch_step": self.switch_step, "mgrit_checks": self.checks}
