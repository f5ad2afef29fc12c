"""How a ParaFormer runs its branches on one device (`ParaFormer.execution`; table in docs/models-and-training.md):
`loop`, one branch after another (the default, which training uses: prefixes agree with it bit for bit);
`fused`, all branches as one batched computation over stacked weights, one depth level at a time, with each
level's per-branch LayerNorm scale and shift folded into the qkv weights (at the first level every branch reads
the same stem tokens, so all qkv projections are one matrix product); `auto`, which times both the first time
it meets an input shape on a device (with or without gradients) and then runs the faster one there.

All three compute the same function from the same parameters and state dict; only the order of float
operations differs, so outputs and gradients agree to float tolerance.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .timing import median_seconds

STRATEGIES = ("loop", "fused", "auto")


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(f"execution strategy {name!r} is unknown; choose one of {STRATEGIES}")
    return name


# --- loop -----------------------------------------------------------------------------------------------

def loop_cls(branches: Sequence[nn.Module], tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each branch's (batch, width) CLS output, one branch after another."""
    return [branch(tokens) for branch in branches]


# --- fused ----------------------------------------------------------------------------------------------

def _level_weights(layers: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """The layers of one depth level (one per branch), stacked along a leading branch dimension, with each
    LayerNorm's scale and shift folded into the projection that follows it:
    W (g * n + b) + c = (W diag(g)) n + (W b + c)."""
    def stack(get):
        return torch.stack([get(layer) for layer in layers])

    qkv_w, qkv_b = stack(lambda l: l.attn.qkv.weight), stack(lambda l: l.attn.qkv.bias)
    fc1_w, fc1_b = stack(lambda l: l.mlp.fc1.weight), stack(lambda l: l.mlp.fc1.bias)
    g1, b1 = stack(lambda l: l.norm1.weight), stack(lambda l: l.norm1.bias)
    g2, b2 = stack(lambda l: l.norm2.weight), stack(lambda l: l.norm2.bias)
    return {
        "qkv_w": qkv_w * g1[:, None, :], "qkv_b": qkv_b + torch.einsum("bow,bw->bo", qkv_w, b1),
        "proj_w": stack(lambda l: l.attn.proj.weight), "proj_b": stack(lambda l: l.attn.proj.bias),
        "fc1_w": fc1_w * g2[:, None, :], "fc1_b": fc1_b + torch.einsum("bhw,bw->bh", fc1_w, b2),
        "fc2_w": stack(lambda l: l.mlp.fc2.weight), "fc2_b": stack(lambda l: l.mlp.fc2.bias),
    }


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, shared: bool) -> torch.Tensor:
    """Per-branch linear maps. x: (tokens..., width) read by every branch when `shared`, else (B, rows, width);
    weight (B, out, width), bias (B, out) -> (B, rows, out)."""
    if shared:  # one matrix product for all branches: the outputs sit side by side
        branches, out, width = weight.shape
        y = F.linear(x.reshape(-1, width), weight.reshape(branches * out, width), bias.reshape(-1))
        return y.view(-1, branches, out).transpose(0, 1)
    return torch.baddbmm(bias[:, None, :], x, weight.transpose(1, 2))


def _fused_level(x: torch.Tensor, w: dict, num_heads: int, eps: float, dropout: float, training: bool,
                 shared: bool, cls_only: bool) -> torch.Tensor:
    """One depth level of every branch. x: (batch, tokens, width) if `shared` (the stem tokens), else
    (B, batch, tokens, width). Returns (B, batch, tokens or 1, width)."""
    branches, width = w["qkv_w"].shape[0], w["qkv_w"].shape[2]
    batch, tokens = x.shape[-3], x.shape[-2]
    head_dim = width // num_heads
    n = F.layer_norm(x, (width,), eps=eps)  # the affine part is folded into qkv_w, qkv_b
    rows = n if shared else n.reshape(branches, batch * tokens, width)
    queries = 1 if cls_only else tokens
    if cls_only:  # q for the CLS token only; k and v for every token
        q_rows = n[:, :1] if shared else n[:, :, :1].reshape(branches, batch, width)
        q = _linear(q_rows, w["qkv_w"][:, :width], w["qkv_b"][:, :width], shared)
        kv = _linear(rows, w["qkv_w"][:, width:], w["qkv_b"][:, width:], shared)
        q = q.view(branches, batch, 1, num_heads, head_dim)
        k, v = kv.view(branches, batch, tokens, 2, num_heads, head_dim).unbind(3)
    else:
        q, k, v = _linear(rows, w["qkv_w"], w["qkv_b"], shared).view(
            branches, batch, tokens, 3, num_heads, head_dim).unbind(3)

    def heads_first(t):  # (B, batch, tokens, heads, head_dim) -> (batch, B * heads, tokens, head_dim)
        return t.permute(1, 0, 3, 2, 4).reshape(batch, branches * num_heads, t.shape[2], head_dim)

    y = F.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v))
    y = y.view(batch, branches, num_heads, queries, head_dim).permute(1, 0, 3, 2, 4)
    y = _linear(y.reshape(branches, batch * queries, width), w["proj_w"], w["proj_b"], shared=False)
    y = F.dropout(y, dropout, training).view(branches, batch, queries, width)
    residual = x[..., :queries, :]
    x = (residual.unsqueeze(0) if shared else residual) + y
    h = _linear(F.layer_norm(x, (width,), eps=eps).view(branches, batch * queries, width), w["fc1_w"], w["fc1_b"],
                shared=False)
    h = F.dropout(F.gelu(h), dropout, training)
    y = F.dropout(_linear(h, w["fc2_w"], w["fc2_b"], shared=False), dropout, training)
    return x + y.view(branches, batch, queries, width)


class FusedBranches:
    """Runs a list of branches as one batched computation. Without autograd (inference), the stacked and folded
    weights are kept between calls and rebuilt only when a parameter changes (its version or storage)."""

    def __init__(self):
        self._cache: dict[int, tuple[tuple, list[dict]]] = {}

    def __call__(self, branches: Sequence[nn.Module], tokens: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, width) stem tokens -> (B, batch, width) CLS outputs of the B branches."""
        first, x = branches[0][0], tokens
        levels = self._weights(branches)
        for level, weights in enumerate(levels):
            x = _fused_level(x, weights, first.attn.num_heads, first.norm1.eps, first.attn.dropout.p,
                             first.training, shared=level == 0, cls_only=level == len(levels) - 1)
        return x[:, :, 0]

    def _weights(self, branches: Sequence[nn.Module]) -> list[dict]:
        def build():
            return [_level_weights([branch[level] for branch in branches]) for level in range(len(branches[0]))]

        if torch.is_grad_enabled():
            self._cache.clear()
            return build()  # rebuilt every call, so that gradients flow to every branch's parameters
        version = tuple((p.data_ptr(), p._version) for branch in branches for p in branch.parameters())
        cached = self._cache.get(len(branches))
        if cached is None or cached[0] != version:
            cached = (version, build())
            self._cache[len(branches)] = cached
        return cached[1]


# --- auto -----------------------------------------------------------------------------------------------

class AutoChoice:
    """Remembers, per (device, input shape, dtype, autograd on or off, number of branches), which of `loop` and
    `fused` ran faster there (medians of `timing.median_seconds`). Measuring restores the random number generators,
    so dropout draws the masks it would draw unmeasured. `fused` must beat `loop` by `margin` to be chosen: where
    the two are that close, either is within a few percent of the best, and `loop` is the reference."""

    def __init__(self, repeats: int = 5, margin: float = 0.03):
        self.repeats, self.margin = repeats, margin
        self.choices: dict[tuple, str] = {}
        self.measured: dict[tuple, tuple[float, float]] = {}  # key -> (loop, fused) median seconds

    @staticmethod
    def key(branches: Sequence[nn.Module], tokens: torch.Tensor) -> tuple:
        return str(tokens.device), tuple(tokens.shape), tokens.dtype, torch.is_grad_enabled(), len(branches)

    def choose(self, run: dict, branches: Sequence[nn.Module], tokens: torch.Tensor) -> str:
        key = self.key(branches, tokens)
        if key not in self.choices:
            loop, fused = self.measured[key] = self.measure(run, branches, tokens)
            self.choices[key] = "fused" if fused < (1 - self.margin) * loop else "loop"
        return self.choices[key]

    def measure(self, run: dict, branches: Sequence[nn.Module], tokens: torch.Tensor) -> tuple[float, float]:
        """Median seconds of `loop` and of `fused` on these inputs (forward, and backward when autograd is on)."""
        params = [p for branch in branches for p in branch.parameters() if p.requires_grad]
        grad = torch.is_grad_enabled() and (tokens.requires_grad or bool(params))
        inputs = params + ([tokens] if tokens.requires_grad else [])

        def once(fn):
            def call():
                out = fn(branches, tokens)
                out = torch.stack(out) if isinstance(out, list) else out
                if grad:  # time the backward pass too, without touching any .grad
                    torch.autograd.grad(out.sum(), inputs, allow_unused=True)
            return call

        gpus = range(torch.cuda.device_count()) if tokens.device.type == "cuda" else []
        with torch.random.fork_rng(devices=gpus):  # two rounds warm up (allocations, caches); the order alternates
            seconds = median_seconds({"loop": once(run["loop"]), "fused": once(run["fused"])}, self.repeats, 2,
                                     tokens.device)
        return seconds["loop"], seconds["fused"]
