"""The sequential ViT (a one-branch ParaFormer) as a stack of stages, the form that pipeline-parallel tools
(torch.distributed.pipelining, FairScale's Pipe) split across devices."""

from __future__ import annotations

import torch
from torch import nn

from ..core.config import ConfigError
from ..core.model import ParaFormer


class Stem(nn.Module):
    """A ParaFormer's stem as a module of its own, sharing its parameters."""

    forward = ParaFormer.embed  # reads config, patch_embed, cls_token, pos_embed and embed_dropout

    def __init__(self, model: ParaFormer):
        super().__init__()
        self.config = model.config
        self.patch_embed, self.cls_token, self.pos_embed = model.patch_embed, model.cls_token, model.pos_embed
        self.embed_dropout = model.embed_dropout


class LastLayer(nn.Module):
    """The last layer of a ViT: the CLS token alone, as the ParaFormer's branches compute it."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.layer(tokens, cls_only=True)[:, 0]


def sequential_vit(model: ParaFormer) -> nn.Sequential:
    """A one-branch ParaFormer (a ViT) as nn.Sequential(stem, layer 1, ..., last layer, head), sharing its
    parameters and computing the same logits: the form pipeline-parallel tools split into stages."""
    if model.num_branches != 1 or model.config.is_incremental:
        raise ConfigError(f"sequential_vit needs a one-branch ParaFormer (a ViT), got {model.config.name}")
    *layers, last = model.branches[0]
    return nn.Sequential(Stem(model), *layers, LastLayer(last), nn.Sequential(model.norm, model.head))  # head on CLS
