"""Evaluation: a model's predicted label for every image of a split, in batches, and accuracies from them."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..core.config import ConfigError, ModelConfig, Recipe
from ..core.data import ImageData, normalization, normalize, resize_images
from ..core.model import ParaFormer
from ..core.steps import autocast


def prepare_batch(images: torch.Tensor, data: ImageData, model_config: ModelConfig,
                  device: torch.device, recipe: Recipe | None = None) -> torch.Tensor:
    """uint8 images -> normalized float on `device` (as `recipe` normalizes; None: the dataset's statistics).
    Their size must be the model's: resizing is chosen when decoding (DataConfig.image_size) or by the recipe's
    "resize" (Recipe.augment), both part of the run key, never done here without a word."""
    if recipe is not None and "resize" in recipe.augment:
        images = resize_images(images.to(device, non_blocking=True), model_config.image_size)
    if tuple(images.shape[-2:]) != (model_config.image_size,) * 2:
        raise ConfigError(f"{model_config.name} takes {model_config.image_size}px images but the data are "
                          f"{images.shape[-2]}x{images.shape[-1]}; set DataConfig.image_size={model_config.image_size} "
                          f"to resize them when decoding, or ModelConfig.image_size={images.shape[-1]}")
    mean, std = normalization(data, recipe.normalization if recipe is not None else "dataset")
    return normalize(images.to(device, non_blocking=True), mean, std)


def evaluation_batch_size(device: torch.device) -> int:
    """Images per evaluation batch: large on a GPU, where small batches leave it idle; 512 on the CPU, as the
    committed runs were evaluated (a batch's size can change the last bit of its logits, hence a rare tie)."""
    return 4096 if device.type == "cuda" else 512


def _fp32_logits(head: torch.nn.Linear, inputs: tuple[torch.Tensor], logits: torch.Tensor) -> torch.Tensor | None:
    """A head's forward hook: under autocast, its logits again in fp32 from its input (fp32 already: autocast runs
    LayerNorm in fp32). bf16 keeps 8 significant bits, so two close logits can round to one value, a tie that argmax
    would give to the lower class whatever the fp32 logits say. Without autocast (the CPU) it changes nothing."""
    if not torch.is_autocast_enabled(logits.device.type):
        return None
    with torch.autocast(logits.device.type, enabled=False):
        return F.linear(inputs[0].float(), head.weight.float(), None if head.bias is None else head.bias.float())


@torch.inference_mode()
def predict(model: ParaFormer, images: torch.Tensor, data: ImageData, recipe: Recipe,
            heads: Callable[[ParaFormer, torch.Tensor], list[torch.Tensor]], batch_size: int | None = None):
    """`heads(model, x)` gives a list of logit tensors from one forward pass; for each, every image's predicted
    label, on the CPU (batched, in evaluation mode, in the recipe's precision but for the heads' logits, which are
    fp32 so that argmax picks from fp32 values; `batch_size` defaults to `evaluation_batch_size`)."""
    device = next(model.parameters()).device
    batch_size = batch_size or evaluation_batch_size(device)
    was_training = model.training
    model.eval()
    predictions = []
    # the shared head and each task's last layer; a stand-in model without them (a table of logits) keeps its own
    linears = [getattr(model, "head", None), *(head[-1] for head in getattr(model, "task_heads", ()))]
    hooks = [linear.register_forward_hook(_fp32_logits) for linear in linears if linear is not None]
    try:
        for start in range(0, len(images), batch_size):
            x = prepare_batch(images[start:start + batch_size], data, model.config, device, recipe)
            with autocast(device, recipe.amp, recipe.amp_dtype):
                predictions.append([logits.argmax(1) for logits in heads(model, x)])
    finally:
        for hook in hooks:
            hook.remove()
    model.train(was_training)
    return [torch.cat(per_head).cpu() for per_head in zip(*predictions)]  # one transfer per head


def refuse_empty(labels: torch.Tensor) -> None:
    if len(labels) == 0:
        raise ConfigError("cannot evaluate on an empty split (check DataConfig.n_test / val_fraction)")


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent; an empty split is refused."""
    refuse_empty(labels)
    return 100.0 * (predicted == labels).sum().item() / len(labels)


def evaluate(model: ParaFormer, images: torch.Tensor, labels: torch.Tensor, data: ImageData,
             recipe: Recipe, num_branches: int | None = None, batch_size: int | None = None) -> float:
    """Top-1 accuracy in percent of `model` (or of its first `num_branches` branches)."""
    refuse_empty(labels)  # before any work
    (predicted,) = predict(model, images, data, recipe, lambda m, x: [m(x, num_branches=num_branches)], batch_size)
    return accuracy(predicted, labels)


def evaluate_prefixes(model: ParaFormer, images: torch.Tensor, labels: torch.Tensor, data: ImageData,
                      recipe: Recipe, batch_size: int | None = None) -> list[float]:
    """Top-1 accuracy of every prefix model 1..num_branches, from one forward pass."""
    refuse_empty(labels)
    predicted = predict(model, images, data, recipe, lambda m, x: m.prefix_logits(x), batch_size)
    return [accuracy(p, labels) for p in predicted]
