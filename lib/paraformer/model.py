"""The ParaFormer model: a shared ViT stem, parallel branches of pre-norm Transformer layers, a shared head.

    tokens = stem(image)                      patch projection + CLS token + learned position embedding
    out_b  = branch_b(tokens), b = 1..B       each branch: `branch_depth` layers in series, y = x + f(LN(x))
    logits = head(sum_b out_b)                LayerNorm + Linear on the CLS token of the summed sequences

Every branch starts from the same stem tokens and returns its whole token sequence (stem tokens plus its
residual updates), and the sequences are summed with equal weight, as in the authors' code. One branch of
depth n is exactly a ViT of depth n, so the ViT baseline is this class too (`ModelConfig(branch_depth=n,
num_layers=n)`).

`model(x, num_branches=k)` uses only the first k branches: the prefix models that progressive training
and compression work with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, ModelConfig


class Attention(nn.Module):
    def __init__(self, width: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        # (3, batch, heads, tokens, head_dim): q, k, v each split across heads
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        y = y.transpose(1, 2).reshape(batch, tokens, width)
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
    """A standard pre-norm Transformer layer. (The authors' code adds the *normalized* input back,
    y = LN(x) + f(LN(x)); we keep the usual y = x + f(LN(x)) so that one branch is an ordinary ViT.)"""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width)
        self.attn = Attention(config.width, config.num_heads, config.dropout)
        self.norm2 = nn.LayerNorm(config.width)
        self.mlp = MLP(config.width, config.mlp_hidden, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Branch(nn.Sequential):
    """`branch_depth` layers in series; branches share no weights."""

    def __init__(self, config: ModelConfig):
        super().__init__(*(Layer(config) for _ in range(config.branch_depth)))


class ParaFormer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"ParaFormer needs a ModelConfig, got {type(config).__name__}")
        self.config = config
        # A conv with kernel = stride = patch is the linear projection of flattened patches.
        self.patch_embed = nn.Conv2d(config.in_channels, config.width, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.width))
        self.embed_dropout = nn.Dropout(config.dropout)
        self.branches = nn.ModuleList(Branch(config) for _ in range(config.num_branches))
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    def _check_prefix(self, num_branches: int | None) -> int:
        if num_branches is None:
            return self.num_branches
        if isinstance(num_branches, bool) or not isinstance(num_branches, int):
            raise ConfigError(f"num_branches={num_branches!r} must be an int from 1 to {self.num_branches}")
        if not 1 <= num_branches <= self.num_branches:
            raise ConfigError(f"num_branches={num_branches} is out of range: this model has 1..{self.num_branches}")
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

    def branch_outputs(self, tokens: torch.Tensor, num_branches: int | None = None) -> list[torch.Tensor]:
        """Each of the first `num_branches` branches applied to the same stem tokens."""
        return [branch(tokens) for branch in self.branches[: self._check_prefix(num_branches)]]

    def classify(self, summed_tokens: torch.Tensor) -> torch.Tensor:
        """The shared head on a (sum of) branch output(s)."""
        return self.head(self.norm(summed_tokens[:, 0]))

    def forward(self, images: torch.Tensor, num_branches: int | None = None) -> torch.Tensor:
        outputs = self.branch_outputs(self.embed(images), num_branches)
        return self.classify(torch.stack(outputs).sum(0) if len(outputs) > 1 else outputs[0])

    def num_parameters(self, num_branches: int | None = None) -> int:
        """Parameters of the model restricted to its first `num_branches` branches (stem and head included)."""
        kept = self._check_prefix(num_branches)
        dropped = self.branches[kept:]
        return sum(p.numel() for p in self.parameters()) - sum(p.numel() for p in dropped.parameters())


def count_parameters(config: ModelConfig) -> int:
    """Closed-form parameter count, used to check the model and to size models without building them."""
    w, h, n = config.width, config.mlp_hidden, config.num_layers
    stem = config.in_channels * config.patch_size**2 * w + w + w + (config.num_patches + 1) * w
    layer = 2 * 2 * w + (3 * w * w + 3 * w) + (w * w + w) + (w * h + h) + (h * w + w)
    head = 2 * w + w * config.num_classes + config.num_classes
    return stem + n * layer + head
