"""Pretrained weights: torchvision's ViTs (Google's ImageNet ViT-B/16 among them) as one-branch ParaFormers
(docs/models-and-training.md#pretrained-weights).

torchvision's layout maps onto ours one to one (`_our_name`; both MLPs use exact GELU). in_proj rows are packed
q, k, v with heads contiguous in each: exactly the order our qkv projection splits. torchvision normalizes every
token, then takes the CLS token; we take it first: the same numbers. Any key left unmapped fails the import, so
a layout torchvision changes cannot be imported half right. The patch projection is linear, so the import folds
the change from our per-dataset normalization to ImageNet's (and, for greyscale, the sum over the three colour
channels) into its weights exactly.
"""

from __future__ import annotations

import contextlib
import io

import torch
import torchvision

from .config import ConfigError, ModelConfig
from .data import IMAGENET_MEAN, IMAGENET_STD
from .model import ParaFormer
from .runcache import WeightsUnavailable

IMAGENET_VIT = torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1  # Google's original ImageNet weights


class PretrainedUnavailable(WeightsUnavailable):
    """The ImageNet weights are neither in torchvision's cache nor downloadable here."""


def config_from_torchvision(vit: torchvision.models.VisionTransformer, in_channels: int = 3) -> ModelConfig:
    """The ModelConfig of a ParaFormer with one branch that computes what `vit` computes."""
    if not isinstance(vit, torchvision.models.VisionTransformer):
        raise ConfigError(f"expected a torchvision VisionTransformer, got {type(vit).__name__}")
    if hasattr(vit.heads, "pre_logits"):
        raise ConfigError("torchvision ViTs with a representation layer (representation_size) have no ParaFormer "
                          "equivalent; use one whose heads are a single Linear")
    if vit.attention_dropout:
        raise ConfigError(f"the ViT has attention_dropout={vit.attention_dropout}; ParaFormer has no dropout on "
                          "attention weights, so only attention_dropout=0 imports exactly")
    return ModelConfig(
        image_size=vit.image_size, in_channels=in_channels, patch_size=vit.patch_size, width=vit.hidden_dim,
        num_heads=vit.encoder.layers[0].num_heads, mlp_ratio=vit.mlp_dim / vit.hidden_dim,
        branch_depth=len(vit.encoder.layers), num_layers=len(vit.encoder.layers), dropout=vit.dropout,
        norm_eps=vit.encoder.ln.eps, num_classes=vit.heads.head.out_features)


def _our_name(name: str) -> str:
    """torchvision state-dict key -> ParaFormer key (KeyError for anything this mapping does not know)."""
    fixed = {"class_token": "cls_token", "conv_proj.weight": "patch_embed.weight",
             "conv_proj.bias": "patch_embed.bias", "encoder.pos_embedding": "pos_embed",
             "encoder.ln.weight": "norm.weight", "encoder.ln.bias": "norm.bias",
             "heads.head.weight": "head.weight", "heads.head.bias": "head.bias"}
    if name in fixed:
        return fixed[name]
    prefix, _, rest = name.partition(".encoder_layer_")
    layer, _, part = rest.partition(".")
    inside = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
              "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj": "attn.proj",
              "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}
    if prefix == "encoder.layers" and layer.isdigit():
        module, _, tensor = part.rpartition(".")
        for theirs, ours in inside.items():
            if part == theirs:
                return f"branches.0.{layer}.{ours}"
            if module == theirs:
                return f"branches.0.{layer}.{ours}.{tensor}"
    raise KeyError(name)


def fold_normalization(weight: torch.Tensor, bias: torch.Tensor, data_mean, data_std, weights_mean, weights_std):
    """Patch-projection weights for images normalized with (data_mean, data_std) that compute what (weight, bias)
    compute on them normalized with (weights_mean, weights_std); one data channel is grey in all three RGB ones."""
    colours, channels = weight.shape[1], len(data_mean)
    if len(data_std) != channels or channels not in (1, colours) or (len(weights_mean), len(weights_std)) != (
            colours, colours):
        raise ConfigError(f"cannot fold a normalization of {channels} data channel(s) into a patch projection of "
                          f"{colours} channels (data mean/std {data_mean}/{data_std}, weights expect "
                          f"{weights_mean}/{weights_std})")
    source = [c if channels == colours else 0 for c in range(colours)]
    # pixel = data_std * x + data_mean, and the weights read (pixel - weights_mean) / weights_std
    scale = torch.tensor([data_std[s] / weights_std[c] for c, s in enumerate(source)], dtype=torch.float64)
    shift = torch.tensor([(data_mean[s] - weights_mean[c]) / weights_std[c] for c, s in enumerate(source)],
                         dtype=torch.float64)
    w = weight.double()
    folded_bias = bias.double() + (w.sum(dim=(2, 3)) * shift).sum(dim=1)
    folded = w * scale.view(1, -1, 1, 1)
    if channels == 1:
        folded = folded.sum(dim=1, keepdim=True)
    return folded.to(weight.dtype), folded_bias.to(bias.dtype)


def from_torchvision(vit: torchvision.models.VisionTransformer, in_channels: int = 3, data_mean=None,
                     data_std=None, weights_mean=IMAGENET_MEAN, weights_std=IMAGENET_STD) -> ParaFormer:
    """`vit`'s weights in a one-branch ParaFormer (Para-F-12-12 for ViT-B/16) that reads `vit`'s input or, given
    `data_mean`/`data_std`, images so normalized with `in_channels` channels (1 = greyscale), and computes what
    `vit` computes on the same images as RGB normalized by (weights_mean, weights_std)."""
    if (data_mean is None) != (data_std is None):
        raise ConfigError("give both data_mean and data_std, or neither")
    if data_mean is None and in_channels != 3:
        raise ConfigError(f"in_channels={in_channels} needs data_mean and data_std to fold the colour channels")
    model = ParaFormer(config_from_torchvision(vit, in_channels))
    state = {}
    for name, tensor in vit.state_dict().items():
        try:
            state[_our_name(name)] = tensor.detach().clone()
        except KeyError:
            raise ConfigError(f"torchvision ViT weight {name!r} has no place in a ParaFormer; the import knows "
                              "torchvision's VisionTransformer layout (see paraformer.core.weights)") from None
    if data_mean is not None:
        state["patch_embed.weight"], state["patch_embed.bias"] = fold_normalization(
            state["patch_embed.weight"], state["patch_embed.bias"], data_mean, data_std, weights_mean, weights_std)
    model.load_state_dict(state)  # strict: every ParaFormer weight must come from the ViT
    return model.to(next(vit.parameters()).device)


def load_imagenet_vit() -> torchvision.models.VisionTransformer:
    """torchvision's vit_b_16 with its ImageNet weights, from torchvision's cache or downloaded into it."""
    try:
        # torch.hub announces a download (on stdout) with the cache path, which would land in committed notebooks
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            state = IMAGENET_VIT.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as error:  # no network: URLError (an OSError); a corrupt file: RuntimeError
        reason = str(getattr(error, "reason", error)).splitlines()[0]
        raise PretrainedUnavailable(
            f"torchvision's ImageNet weights for vit_b_16 ({IMAGENET_VIT.url}) are not cached and could not be "
            f"downloaded ({reason}); copy the file into {torch.hub.get_dir()}/checkpoints/ to use them") from None
    vit = torchvision.models.vit_b_16()
    vit.load_state_dict(state)
    return vit
