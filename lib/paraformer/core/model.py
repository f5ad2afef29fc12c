"""The ParaFormer model: a shared ViT stem, parallel branches of pre-norm Transformer layers, a shared head
(docs/models-and-training.md#the-model-paraformercoremodel).

    tokens = stem(image)                      patch projection + CLS token + learned position embedding
    out_b  = branch_b(tokens), b = 1..B       each branch: `branch_depth` layers in series, y = x + f(LN(x))
    logits = head(sum_b out_b)                LayerNorm + Linear on the CLS token of the summed sequences

The branches' token sequences (stem tokens plus residual updates) are summed with equal weight, as in the authors'
code; as the head reads only the CLS token, only CLS outputs are summed, in branch order and one at a time, so
prefixes (`num_branches=k`), compressed copies and expanded models agree bit for bit. Class-incremental models
(`ModelConfig.task_classes`, built by `expand`) have one head per task, reading the branches that existed when
the task arrived, so later branches never change the logits of earlier classes.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, ModelConfig, from_dict
from .execution import AutoChoice, FusedBranches, check_strategy, loop_cls
from .files import atomic_save


class Attention(nn.Module):
    def __init__(self, width: int, num_heads: int, dropout: float, head_dim: int | None = None, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or width // num_heads
        inner = num_heads * self.head_dim  # = width, except in the authors' attention (ModelConfig.head_dim)
        self.qkv = nn.Linear(width, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """Self-attention of every token, or (cls_only) of the CLS token alone, which still reads all tokens."""
        batch, tokens, _ = x.shape
        heads = (self.num_heads, self.head_dim)
        inner = self.num_heads * self.head_dim
        if cls_only:  # q for the CLS token only: k and v still come from every token
            bias = self.qkv.bias
            q = F.linear(x[:, :1], self.qkv.weight[:inner], None if bias is None else bias[:inner])
            kv = F.linear(x, self.qkv.weight[inner:], None if bias is None else bias[inner:])
            q, kv = q.view(batch, 1, *heads), kv.view(batch, tokens, 2, *heads)
            q, k, v = q.transpose(1, 2), kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        else:
            # (3, batch, heads, tokens, head_dim): q, k, v each split across heads
            q, k, v = self.qkv(x).view(batch, tokens, 3, *heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).reshape(batch, q.shape[2], inner)
        return self.dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class Layer(nn.Module):
    """A standard pre-norm Transformer layer, y = x + f(LN(x)) for attention then MLP, so that one branch is an
    ordinary ViT. With `ModelConfig.residual="authors"`, the authors' code's layer instead: it adds the
    *normalized* input back, y = LN(x) + f(LN(x)). With `ModelConfig.step` h != 1 each sub-block adds h f(LN(x)):
    one forward-Euler step of the ODE that layer-parallel training solves (paraformer.parallel.mgrit)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.adds_normalized = config.residual == "authors"
        self.step = config.step
        self.norm1 = nn.LayerNorm(config.width, eps=config.norm_eps)
        self.attn = Attention(config.width, config.num_heads, config.dropout, config.head_dim, config.qkv_bias)
        self.norm2 = nn.LayerNorm(config.width, eps=config.norm_eps)
        self.mlp = MLP(config.width, config.mlp_hidden, config.dropout)

    def forward(self, x: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """(batch, tokens, width) -> the same shape, or (cls_only) the CLS token's output, (batch, 1, width)."""
        if self.adds_normalized:
            normed = self.norm1(x)
            x = (normed[:, :1] if cls_only else normed) + self.attn(normed, cls_only)
            normed = self.norm2(x)
            return normed + self.mlp(normed)
        if self.step != 1.0:
            x = (x[:, :1] if cls_only else x) + self.step * self.attn(self.norm1(x), cls_only)
            return x + self.step * self.mlp(self.norm2(x))
        # h = 1 without the product, so that the committed runs' layers compute exactly what they computed
        x = (x[:, :1] if cls_only else x) + self.attn(self.norm1(x), cls_only)
        return x + self.mlp(self.norm2(x))


class Branch(nn.Sequential):
    """`branch_depth` layers in series; branches share no weights. The head reads only the CLS token, so the last
    layer computes it alone (all tokens still serve as keys and values): the same numbers for less work."""

    def __init__(self, config: ModelConfig):
        super().__init__(*(Layer(config) for _ in range(config.branch_depth)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, width) stem tokens -> (batch, width) CLS output."""
        *first, last = self  # (slicing an nn.Sequential subclass would call __init__ with other arguments)
        for layer in first:
            tokens = layer(tokens)
        return last(tokens, cls_only=True)[:, 0]


class ParaFormer(nn.Module):
    def __init__(self, config: ModelConfig, execution: str = "loop"):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"ParaFormer needs a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.execution = execution  # how the branches run on one device: see paraformer.core.execution
        self._fused, self._auto = FusedBranches(), AutoChoice()
        # A conv with kernel = stride = patch is the linear projection of flattened patches.
        self.patch_embed = nn.Conv2d(config.in_channels, config.width, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.width))
        self.embed_dropout = nn.Dropout(config.dropout)
        self.branches = nn.ModuleList(Branch(config) for _ in range(config.num_branches))
        # The first task's head keeps the plain model's names, so that expanding a model keeps its state dict.
        classes = config.task_classes or (config.num_classes,)
        self.norm = nn.LayerNorm(config.width, eps=config.norm_eps)
        self.head = nn.Linear(config.width, classes[0])
        self.task_heads = nn.ModuleList(nn.Sequential(nn.LayerNorm(config.width, eps=config.norm_eps),
                                                      nn.Linear(config.width, c)) for c in classes[1:])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.config.init == "authors":  # their code: N(0, 1) tokens and PyTorch's own init of every module
            nn.init.normal_(self.pos_embed)
            nn.init.normal_(self.cls_token)
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d, nn.LayerNorm)):
                    module.reset_parameters()
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    @property
    def execution(self) -> str:
        return self._execution

    @execution.setter
    def execution(self, strategy: str) -> None:
        try:
            strategy = check_strategy(strategy)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if strategy != "loop" and self.config.step != 1.0:
            raise ConfigError(f"execution={strategy!r} computes the layer with step 1; a model with step="
                              f"{self.config.step} runs with execution='loop'")
        if strategy != "loop" and (self.config.residual != "pre-norm" or self.config.head_dim is not None
                                    or not self.config.qkv_bias):
            # the fused kernels fold each LayerNorm into the next product and never form LN(x) itself
            raise ConfigError(f"execution={strategy!r} computes only the standard pre-norm layer; a model with "
                              f"residual={self.config.residual!r}, head_dim={self.config.head_dim}, qkv_bias="
                              f"{self.config.qkv_bias} runs with execution='loop'")
        self._execution = strategy

    @property
    def auto_choices(self) -> dict[tuple, str]:
        """What `auto` chose so far, per (device, token shape, dtype, autograd, number of branches)."""
        return self._auto.choices

    def branch_outputs(self, tokens: torch.Tensor, num_branches: int) -> list[torch.Tensor]:
        """The (batch, width) CLS outputs of the first `num_branches` branches, run by `self.execution`."""
        branches = self.branches[:num_branches]
        strategy = self.execution
        if num_branches == 1:  # one branch runs the same way under every strategy: nothing to choose or fuse
            return loop_cls(branches, tokens)
        if strategy == "auto":
            strategy = self._auto.choose({"loop": loop_cls, "fused": self._fused}, branches, tokens)
        if strategy == "fused":
            return list(self._fused(branches, tokens).unbind(0))
        return loop_cls(branches, tokens)

    def task_ends(self) -> list[int]:
        """For each task, the number of branches its head reads (a plain model has one task: all branches)."""
        return list(itertools.accumulate(self.config.task_branches or (self.num_branches,)))

    def _check_prefix(self, num_branches: int | None) -> int:
        if num_branches is None:
            return self.num_branches
        if isinstance(num_branches, bool) or not isinstance(num_branches, int):
            raise ConfigError(f"num_branches={num_branches!r} must be an int from 1 to {self.num_branches}")
        if not 1 <= num_branches <= self.num_branches:
            raise ConfigError(f"num_branches={num_branches} is out of range: this model has 1..{self.num_branches}")
        if self.config.is_incremental and num_branches not in self.task_ends():
            raise ConfigError(f"num_branches={num_branches} splits a task of this class-incremental model; "
                              f"use a task boundary, one of {self.task_ends()}")
        return num_branches

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The shared stem: (batch, C, H, W) images -> (batch, 1 + patches, width) tokens."""
        c = self.config
        if images.dim() != 4 or images.shape[1:] != (c.in_channels, c.image_size, c.image_size):
            raise ConfigError(
                f"input of shape {tuple(images.shape)} does not fit the model: expected "
                f"(batch, {c.in_channels}, {c.image_size}, {c.image_size})"
            )
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.embed_dropout(x + self.pos_embed)

    def prefix_sums(self, images: torch.Tensor, num_branches: int | None = None) -> list[torch.Tensor]:
        """CLS tokens of the sums of branches 1..k, for k = 1..num_branches: one stem pass, one pass per branch."""
        tokens = self.embed(images)
        return list(itertools.accumulate(self.branch_outputs(tokens, self._check_prefix(num_branches))))

    def classify(self, summed_cls: torch.Tensor, task: int = 0) -> torch.Tensor:
        """A head (the shared one, or task `task`'s) on a (sum of) branch CLS output(s)."""
        if task == 0:
            return self.head(self.norm(summed_cls))
        return self.task_heads[task - 1](summed_cls)

    def logits(self, sums: list[torch.Tensor]) -> torch.Tensor:
        """Logits from prefix sums: the shared head on the last sum, or each task's head on its own sum."""
        if not self.config.is_incremental:
            return self.classify(sums[-1])
        ends = [end for end in self.task_ends() if end <= len(sums)]
        return torch.cat([self.classify(sums[end - 1], task) for task, end in enumerate(ends)], dim=1)

    def forward(self, images: torch.Tensor, num_branches: int | None = None) -> torch.Tensor:
        return self.logits(self.prefix_sums(images, num_branches))

    def prefix_logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every prefix model 1..num_branches, at the cost of one forward pass."""
        if self.config.is_incremental:
            raise ConfigError("prefix_logits needs a plain ParaFormer; a class-incremental model has "
                              f"prefixes only at its task boundaries {self.task_ends()}")
        return [self.classify(s) for s in self.prefix_sums(images)]

    def num_parameters(self, num_branches: int | None = None) -> int:
        """Parameters of the model restricted to its first `num_branches` branches (stem and heads included)."""
        dropped = self.branches[self._check_prefix(num_branches):]
        return sum(p.numel() for p in self.parameters()) - sum(p.numel() for p in dropped.parameters())

    # --- growing and shrinking ------------------------------------------------------------------------

    def expand(self, num_new_branches: int, num_new_classes: int = 0) -> "ParaFormer":
        """A larger copy: `num_new_branches` new branches (initialized from the global RNG) and, for new classes, a
        new head reading all branches. `bigger(x, num_branches=old)` (with new classes: the first old logits of
        `bigger(x)`) equals `self(x)` bit for bit, however the new branches are trained."""
        bigger = ParaFormer(self.config.expanded(num_new_branches, num_new_classes))
        bigger.to(next(self.parameters()).device)
        bigger.inherit(self)
        return bigger

    def inherit(self, smaller: "ParaFormer") -> list[str]:
        """Copy every weight of `smaller`, a model this one expands; returns the names of the new parameters."""
        if not self.config.is_expansion_of(smaller.config):
            raise ConfigError(f"{self.config.name} (task classes {self.config.task_classes or '-'}) is not an "
                              f"expansion of {smaller.config.name} (task classes {smaller.config.task_classes or '-'}); "
                              "build it with ParaFormer.expand or ModelConfig.expanded")
        missing, unexpected = self.load_state_dict(smaller.state_dict(), strict=False)
        assert not unexpected, unexpected  # guaranteed by is_expansion_of
        return missing

    def select_branches(self, indices: list[int]) -> "ParaFormer":
        """A smaller ParaFormer that holds only the branches `indices` (in that order), with this model's stem
        and head: a compressed model that runs without the other branches' weights."""
        if self.config.is_incremental:
            raise ConfigError("select_branches needs a plain ParaFormer, not a class-incremental one")
        indices = list(indices)
        bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_branches]
        if not indices or bad or len(set(indices)) != len(indices):
            raise ConfigError(f"branch indices {indices} must be distinct ints in 0..{self.num_branches - 1}")
        smaller = ParaFormer(self.config.with_branches(len(indices)))
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("branches.")}
        for new, old in enumerate(indices):
            prefix = f"branches.{old}."
            state.update({f"branches.{new}.{k[len(prefix):]}": v for k, v in self.state_dict().items()
                          if k.startswith(prefix)})
        smaller.load_state_dict(state)
        return smaller.to(next(self.parameters()).device)

    def regroup(self, branch_depth: int) -> "ParaFormer":
        """The same layers in branches of `branch_depth`: the layers are taken in order (branch 1's first, then
        branch 2's, ...) and cut into consecutive groups, with the same stem and head. A ViT of depth 12
        regrouped with branch_depth=3 is 4 parallel branches holding its layers 1-3, 4-6, 7-9 and 10-12."""
        if self.config.is_incremental:
            raise ConfigError("regroup needs a plain ParaFormer, not a class-incremental one")
        layers = self.config.num_layers
        if isinstance(branch_depth, bool) or not isinstance(branch_depth, int) or branch_depth < 1 \
                or layers % branch_depth:
            raise ConfigError(f"branch_depth={branch_depth!r} must be a positive int dividing the model's "
                              f"{layers} layers")
        regrouped = ParaFormer(dataclasses.replace(self.config, branch_depth=branch_depth, num_layers=layers,
                                                   num_branches=None))
        old_depth = self.config.branch_depth
        state = {}
        for key, value in self.state_dict().items():
            if key.startswith("branches."):
                branch, layer, rest = key.split(".", 3)[1:]
                index = int(branch) * old_depth + int(layer)
                key = f"branches.{index // branch_depth}.{index % branch_depth}.{rest}"
            state[key] = value
        regrouped.load_state_dict(state)
        return regrouped.to(next(self.parameters()).device)


def save_model(model: ParaFormer, path: str | Path) -> Path:
    """One file with the config and the weights, written atomically; `load_model` reads it back."""
    return atomic_save({"config": dataclasses.asdict(model.config), "state_dict": model.state_dict()}, Path(path))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ParaFormer:
    saved = torch.load(path, map_location=device, weights_only=True)
    model = ParaFormer(from_dict(ModelConfig, saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return model.to(device)


def count_parameters(config: ModelConfig) -> int:
    """Closed-form parameter count, used to check the model and to size models without building them."""
    w, h, n = config.width, config.mlp_hidden, config.num_layers
    inner = config.num_heads * (config.head_dim or w // config.num_heads)
    stem = config.in_channels * config.patch_size**2 * w + w + w + (config.num_patches + 1) * w
    qkv = 3 * w * inner + (3 * inner if config.qkv_bias else 0)
    layer = 2 * 2 * w + qkv + (inner * w + w) + (w * h + h) + (h * w + w)
    heads = len(config.task_classes) or 1  # each: LayerNorm + Linear to its classes
    head = heads * 2 * w + w * config.num_classes + config.num_classes
    return stem + n * layer + head
