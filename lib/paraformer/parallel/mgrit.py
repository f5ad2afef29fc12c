"""Layer parallelism by MGRIT (multigrid reduction in time) across the layers of a deep ViT: the 2026 paper's route
(Jiang et al., *Layer-Parallel Training for Transformers*, arXiv 2601.09026).

A pre-norm ViT of depth N is forward Euler, u_{j+1} = Phi_j(u_j) with Phi_j(u) = u + h Attn_j(LN u), then
+ h MLP_j(LN .), for the stem's tokens u_0. Instead of running the N steps in order, each of P ranks owns N / P
consecutive layers and the whole chain is solved iteratively:

- Grids. Level 0 is every layer; level l keeps every c^l-th point (c the coarsening factor). A level-l step from
  point j uses layer j alone with the step c^l h (TorchBraid's coarse propagator). The points of level l + 1 are
  the level-l *C-points*, the others its *F-points*.
- F-relaxation propagates each coarse interval from its C-point through its F-points: all intervals at once, with
  no communication, since every rank owns whole intervals. C-relaxation updates each C-point from the F-point
  before it (the first C-point of a rank from its neighbour's last point: one message). FCF = F, C, F.
- Coarse correction (FAS, the problem being nonlinear): at each C-point j, the fine residual after relaxation is
  injected as the coarse right-hand side g'_j = g_j + Phi^l(u_{j-s}) - Phi^{l+1}(u_{j-cs}); the coarse problem
  v_j = Phi^{l+1}(v_{j-cs}) + g'_j is solved by one cycle of the next level, the coarsest one serially (a chain of
  N / c^(L-1) steps across the ranks), and its values replace the C-points. Levels between the finest and the
  coarsest end their cycle with an F-relaxation (the interpolation to their F-points).
- Start: a serial sweep on the coarsest grid, then F-relaxation on every coarse level, so that zero iterations
  already give an approximation. End: an F-relaxation on the finest level; the output is the last layer applied to
  the last point.

With enough iterations the solve is exact (two levels: N / c - 1 iterations; each one makes one more coarse
interval exact), to float rounding, since the coarse correction adds and subtracts the same coarse step.

The backward pass is a second MGRIT solve, of the discrete adjoint run backwards: lambda_N = dLoss/du_N and
lambda_j = J_j^T lambda_{j+1}, each step a vector-Jacobian product of its layer re-evaluated on the stored forward
state (a coarse step's VJP is that of the coarse step at its first point), by the same solver on the reversed
chain, whose ranks come in the opposite order. Parameter gradients come from a final sweep over every layer with
the converged-or-not adjoint: inexact solves give a biased gradient, which the convergence table measures and the
adaptive rule watches.

The iterate does not depend on how the points are shared among ranks (they exchange values, never approximate
across a rank boundary), so one process computes exactly what P processes compute (the 2-process tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..core.config import ConfigError
from ..core.model import Layer, ParaFormer
from .launch import grad_or_zero, sum_into_gradients

RELAXATIONS = ("F", "FCF")


@dataclass(frozen=True)
class MGRITConfig:
    levels: int = 2  # grid levels, at least 2: the finest (every layer) to the coarsest (solved serially)
    coarsening: int = 4  # fine steps per coarse step between neighbouring levels (TorchBraid's default)
    fine_relaxation: str = "F"  # relaxation on the finest level: "F" or "FCF"
    coarse_relaxation: str = "FCF"  # on the levels between the finest and the coarsest (3 levels or more)
    forward_iterations: int = 2  # MGRIT cycles of the forward solve (0: coarse prediction and F-relaxation only)
    backward_iterations: int = 1  # MGRIT cycles of the adjoint solve

    def __post_init__(self):
        for name, least in (("levels", 2), ("coarsening", 2), ("forward_iterations", 0), ("backward_iterations", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"MGRITConfig.{name}={value!r} must be an int >= {least}"
                                  + (" (one level is serial training)" if name == "levels" else ""))
        for name in ("fine_relaxation", "coarse_relaxation"):
            if getattr(self, name) not in RELAXATIONS:
                raise ConfigError(f"MGRITConfig.{name}={getattr(self, name)!r} must be one of {RELAXATIONS}")

    @property
    def coarsest_spacing(self) -> int:
        """Fine steps per step of the coarsest grid: every rank's share of the layers must be a multiple of it."""
        return self.coarsening ** (self.levels - 1)

    def iterations_to_converge(self, depth: int) -> int:
        """Two-level iterations after which the solve is exact: one per coarse interval but the first and last."""
        return max(0, depth // self.coarsening - 1)


def check_layout(depth: int, world_size: int, config: MGRITConfig) -> int:
    """The number of layers per rank, after checking that every rank owns whole intervals of the coarsest grid."""
    if depth % world_size:
        raise ConfigError(f"depth {depth} cannot be shared evenly by {world_size} ranks; use a process count that "
                          f"divides it")
    share = depth // world_size
    if share % config.coarsest_spacing:
        raise ConfigError(f"each of {world_size} ranks would own {share} layers, not a multiple of coarsening^"
                          f"(levels-1) = {config.coarsest_spacing}; use fewer levels, a smaller coarsening or "
                          f"fewer processes")
    return share


def layer_step(layer: Layer, x: torch.Tensor, step: float) -> torch.Tensor:
    """One forward-Euler step of a pre-norm layer with step size `step`; with the model's own step
    (`ModelConfig.step`) it is the layer itself."""
    if step == layer.step:  # the model's own code, so that MGRIT's fine steps are the serial model's bit for bit
        return layer(x)
    x = x + step * layer.attn(layer.norm1(x))
    return x + step * layer.mlp(layer.norm2(x))


class _Link:
    """This rank's neighbours along a chain: `previous` sends it the value entering its first point, `next`
    receives the value leaving its last. None at the ends of the chain (and for a single process)."""

    def __init__(self, previous: int | None, next_: int | None, group):
        self.previous, self.next, self.group = previous, next_, group

    def pass_on(self, outgoing: Callable[[], torch.Tensor], like: torch.Tensor) -> torch.Tensor | None:
        """Send outgoing() to the next rank (if any) and return what the previous rank sent (if any)."""
        work = dist.isend(outgoing().contiguous(), self.next, group=self.group) if self.next is not None else None
        received = self.receive(like)
        if work is not None:
            work.wait()
        return received

    def receive(self, like: torch.Tensor) -> torch.Tensor | None:
        if self.previous is None:
            return None
        received = torch.empty_like(like)
        dist.recv(received, self.previous, group=self.group)
        return received


class ChainSolver:
    """MGRIT for this rank's points [start, stop) of a chain u_{j+s} = step(level, j, u_j) on points 0..N.

    `step(level, j, x)` is the level-`level` step from point j (spacing coarsening^level); u_0 is fixed (the
    initial condition, on the rank with start 0). Values are dicts from global point index to tensor."""

    def __init__(self, step, start: int, stop: int, config: MGRITConfig, link: _Link):
        self.step, self.start, self.stop, self.config, self.link = step, start, stop, config, link

    def spacing(self, level: int) -> int:
        return self.config.coarsening ** level

    def points(self, level: int) -> range:
        return range(self.start, self.stop, self.spacing(level))

    def is_c_point(self, level: int, j: int) -> bool:
        return j % self.spacing(level + 1) == 0

    @staticmethod
    def _plus(value: torch.Tensor, rhs: dict, j: int) -> torch.Tensor:
        return value + rhs[j] if j in rhs else value  # a zero right-hand side is not added, to keep exactness

    def _sweep(self, level: int, u: dict, rhs: dict, kind: str, entering: torch.Tensor | None = None) -> None:
        """Each of this rank's `kind` points ("F", "C" or "all") but u_0 from the point before it, in order;
        `entering` (what the previous rank sent) for this rank's first point, a C-point."""
        s = self.spacing(level)
        for j in self.points(level):
            if j and kind in ("all", "C" if self.is_c_point(level, j) else "F"):
                u[j] = self._plus(entering if j == self.start else self.step(level, j - s, u[j - s]), rhs, j)

    def f_relax(self, level: int, u: dict, rhs: dict) -> None:
        self._sweep(level, u, rhs, "F")

    def c_relax(self, level: int, u: dict, rhs: dict) -> None:
        s = self.spacing(level)
        entering = self.link.pass_on(lambda: self.step(level, self.stop - s, u[self.stop - s]), u[self.start])
        self._sweep(level, u, rhs, "C", entering)

    def relax(self, level: int, u: dict, rhs: dict) -> None:
        kind = self.config.fine_relaxation if level == 0 else self.config.coarse_relaxation
        self.f_relax(level, u, rhs)
        if kind == "FCF":
            self.c_relax(level, u, rhs)
            self.f_relax(level, u, rhs)

    def coarse_rhs(self, level: int, u: dict, rhs: dict) -> dict:
        """FAS right-hand side of level + 1 at its points: g_j + Phi^level(u_{j-s}) - Phi^{level+1}(u_{j-cs})."""
        s, cs = self.spacing(level), self.spacing(level + 1)

        def defect(j: int) -> torch.Tensor:  # the fine step into C-point j minus the coarse step into it
            return self.step(level, j - s, u[j - s]) - self.step(level + 1, j - cs, u[j - cs])

        entering = self.link.pass_on(lambda: defect(self.stop), u[self.start])
        return {j: self._plus(entering if j == self.start else defect(j), rhs, j) for j in self.points(level + 1) if j}

    def serial_sweep(self, level: int, u: dict, rhs: dict) -> None:
        """Solve level `level` exactly: a chain through the ranks in order (the only serial part of MGRIT)."""
        s = self.spacing(level)
        self._sweep(level, u, rhs, "all", self.link.receive(u[self.start]))
        if self.link.next is not None:
            dist.send(self.step(level, self.stop - s, u[self.stop - s]).contiguous(), self.link.next,
                      group=self.link.group)

    def cycle(self, level: int, u: dict, rhs: dict) -> None:
        """One MGRIT V-cycle on level `level`: relax, solve the coarse problem, correct the C-points."""
        if level == self.config.levels - 1:
            self.serial_sweep(level, u, rhs)
            return
        self.relax(level, u, rhs)
        coarse_rhs = self.coarse_rhs(level, u, rhs)
        coarse = {j: u[j] for j in self.points(level + 1)}
        self.cycle(level + 1, coarse, coarse_rhs)
        u.update(coarse)
        if level > 0:
            self.f_relax(level, u, rhs)

    def solve(self, initial: torch.Tensor | None, like: torch.Tensor, iterations: int,
              guess: dict | None = None) -> dict:
        """Every point of [start, stop) after `iterations` cycles, from the coarse prediction (or `guess`)."""
        u = dict(guess) if guess is not None else {j: like for j in self.points(0)}  # placeholders, overwritten
        if self.start == 0:
            u[0] = initial
        if guess is None:
            coarsest = self.config.levels - 1
            self.serial_sweep(coarsest, u, {})
            for level in range(coarsest - 1, 0, -1):
                self.f_relax(level, u, {})
        for _ in range(iterations):
            self.cycle(0, u, {})
        self.f_relax(0, u, {})
        return u


def layer_vjp(layer: Layer, x: torch.Tensor, step: float, cotangent: torch.Tensor, with_parameters: bool = False):
    """(dx, parameter gradients or None) of `layer_step(layer, x, step)` against `cotangent`, recomputing it."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = layer_step(layer, x, step)
        params = [p for p in layer.parameters() if p.requires_grad] if with_parameters else []
        grads = torch.autograd.grad(y, [x, *params], cotangent)
    return grads[0], (params, grads[1:])


class LayerParallel:
    """This rank's share of a ViT (a one-branch ParaFormer) trained by MGRIT across its layers: every rank holds the
    whole model and sees the same minibatch; rank r owns layers [r L, (r + 1) L), rank 0 also the stem, the last
    rank the head. `loss_and_gradients` fills every parameter's .grad on every rank (one all-reduce of the flat
    gradient, each part non-zero on its owner alone). Without torch.distributed, or with `group` of one rank, it is
    the single-process solver."""

    def __init__(self, model: ParaFormer, config: MGRITConfig, step: float | None = None, group=None):
        if model.num_branches != 1 or model.config.is_incremental:
            raise ConfigError(f"layer parallelism needs a one-branch ParaFormer (a ViT), got {model.config.name}")
        if model.config.residual != "pre-norm":
            raise ConfigError(f"MGRIT reads the pre-norm residual as an ODE step; residual="
                              f"{model.config.residual!r} has no such reading: use residual='pre-norm'")
        if model.config.dropout and model.training:
            raise ConfigError(f"dropout={model.config.dropout}: MGRIT re-evaluates each layer several times per "
                              f"step and would draw new masks each time; train layer-parallel with dropout 0")
        self.model, self.config = model, config
        self.step_size = model.config.step if step is None else step  # h of the finest level
        self.layers = list(model.branches[0])
        self.depth = len(self.layers)
        distributed = dist.is_available() and dist.is_initialized()
        self.group, self.rank = group, dist.get_rank(group) if distributed else 0
        self.world_size = dist.get_world_size(group) if distributed else 1
        self.share = check_layout(self.depth, self.world_size, config)
        self.start, self.stop = self.rank * self.share, (self.rank + 1) * self.share
        last = self.world_size - 1
        self.is_first, self.is_last = self.rank == 0, self.rank == last
        forward_link = _Link(self.rank - 1 if self.rank else None, self.rank + 1 if self.rank < last else None, group)
        # the adjoint runs from the last layer to the first: the ranks come in the opposite order
        backward_link = _Link(forward_link.next, forward_link.previous, group)
        self.forward_solver = ChainSolver(self._forward_step, self.start, self.stop, config, forward_link)
        self.backward_solver = ChainSolver(self._adjoint_step, self.depth - self.stop, self.depth - self.start,
                                           config, backward_link)
        self.states: dict[int, torch.Tensor] = {}

    def _forward_step(self, level: int, j: int, x: torch.Tensor) -> torch.Tensor:
        return layer_step(self.layers[j], x, self.step_size * self.config.coarsening ** level)

    def _adjoint_step(self, level: int, k: int, cotangent: torch.Tensor) -> torch.Tensor:
        span = self.config.coarsening ** level
        i = self.depth - k - span  # the forward step from point i to i + span, transposed
        return layer_vjp(self.layers[i], self.states[i], self.step_size * span, cotangent, with_parameters=False)[0]

    def _token_shape(self, images: torch.Tensor) -> tuple[int, int, int]:
        return images.shape[0], self.model.config.num_patches + 1, self.model.config.width

    def forward(self, images: torch.Tensor, iterations: int | None = None) -> torch.Tensor | None:
        """The (batch, tokens, width) output of the last layer on the last rank (None elsewhere), by MGRIT; the
        forward states are kept for the adjoint."""
        with torch.no_grad():
            tokens = self.model.embed(images) if self.is_first else None
        return self.solve_forward(tokens, images.new_zeros(self._token_shape(images)), iterations)

    def solve_forward(self, tokens: torch.Tensor | None, like: torch.Tensor,
                      iterations: int | None = None) -> torch.Tensor | None:
        """The chain from the stem's `tokens` (on the first rank; None elsewhere) to the last layer's output (on the
        last rank), in `iterations` cycles (default: the config's); `like` gives the tokens' shape everywhere."""
        iterations = self.config.forward_iterations if iterations is None else iterations
        with torch.no_grad():
            initial = tokens.detach() if self.is_first else None
            self.states = self.forward_solver.solve(initial, like, iterations)
            if self.is_last:
                return self._forward_step(0, self.depth - 1, self.states[self.depth - 1])
        return None

    def solve_adjoint(self, output_cotangent: torch.Tensor | None, like: torch.Tensor,
                      iterations: int | None = None) -> tuple[torch.Tensor | None, list]:
        """The adjoint of the last `solve_forward` from the cotangent of its output (on the last rank): the
        cotangent of the stem's tokens (first rank; None elsewhere) and, for each local layer, (parameters,
        gradients) from the final sweep."""
        iterations = self.config.backward_iterations if iterations is None else iterations
        with torch.no_grad():
            adjoint = self.backward_solver.solve(output_cotangent, like, iterations)
        entering_first, per_layer = None, []
        for j in range(self.start, self.stop):  # the final sweep: every local layer's VJP against its adjoint
            cotangent = adjoint[self.depth - (j + 1)]
            dx, params_and_grads = layer_vjp(self.layers[j], self.states[j], self.step_size, cotangent, True)
            per_layer.append(params_and_grads)
            if j == 0:
                entering_first = dx
        return entering_first, per_layer

    def loss_and_gradients(self, images: torch.Tensor, labels: torch.Tensor,
                           loss_fn: Callable = F.cross_entropy) -> torch.Tensor:
        """The loss (on every rank), with every parameter's .grad set to its MGRIT gradient (accumulated onto any
        gradient already there, as backward() does)."""
        like = images.new_zeros(self._token_shape(images))
        output = self.forward(images)
        loss = torch.zeros((), device=images.device)
        output_cotangent = None
        if self.is_last:
            with torch.enable_grad():
                output.requires_grad_(True)
                loss = loss_fn(self.model.classify(output[:, 0]), labels)
                head = [p for p in (*self.model.norm.parameters(), *self.model.head.parameters()) if p.requires_grad]
                output_cotangent, *head_grads = torch.autograd.grad(loss, [output, *head])
            self._accumulate(head, head_grads)
        entering_first, per_layer = self.solve_adjoint(output_cotangent, like)
        for params, grads in per_layer:
            self._accumulate(params, grads)
        if self.is_first:
            with torch.enable_grad():
                tokens = self.model.embed(images)
                stem = [p for p in (*self.model.patch_embed.parameters(), self.model.cls_token, self.model.pos_embed)
                        if p.requires_grad]
                if stem:
                    self._accumulate(stem, torch.autograd.grad(tokens, stem, entering_first))
        return self._share_gradients(loss.detach())

    @staticmethod
    def _accumulate(params, grads) -> None:
        for p, g in zip(params, grads):
            p.grad = g.detach().clone() if p.grad is None else p.grad + g

    def _share_gradients(self, loss: torch.Tensor) -> torch.Tensor:
        """Sum every parameter's gradient (each non-zero on its owner only) and the loss across ranks."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.world_size == 1:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            return loss
        return sum_into_gradients(params, [grad_or_zero(p) for p in params] + [loss], self.group)[-1]


def serial_reference(model: ParaFormer, images: torch.Tensor, labels: torch.Tensor, step: float | None = None,
                     loss_fn: Callable = F.cross_entropy) -> tuple[torch.Tensor, torch.Tensor]:
    """(last layer's tokens, loss) of the serial chain with step `step`, gradients set by ordinary backward: what
    MGRIT converges to. Every token is computed in the last layer too, as MGRIT does. `step` defaults to the
    model's own (`ModelConfig.step`)."""
    step = model.config.step if step is None else step
    x = model.embed(images)
    for layer in model.branches[0]:
        x = layer_step(layer, x, step)
    loss = loss_fn(model.classify(x[:, 0]), labels)
    loss.backward()
    return x.detach(), loss.detach()


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).norm() / reference.norm().clamp_min(torch.finfo(reference.dtype).tiny))


def flat_gradient(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
