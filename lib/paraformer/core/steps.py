"""One training step, for the trainer and every benchmark: the device and precision a recipe asks for, its
optimizer, and `optimizer_step`, the one place where weights change. The benchmarks time `training_step`, a
closure over one batch built on the same `optimizer_step`, so that what they time is what training does.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .config import ConfigError, Recipe


def resolve_device(name: str) -> torch.device:
    """`Recipe.device` as a torch device: "auto" is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Recipe.device={name!r} but CUDA is not available here; use device='auto' or 'cpu'")
    return device


def precision(device: torch.device, amp: bool = True, dtype: str = "bfloat16") -> str:
    """What a step computes in: autocast in `dtype` (Recipe.amp_dtype) where `amp` (Recipe.amp) asks and the device
    is CUDA, else fp32."""
    if not (amp and device.type == "cuda"):
        return "fp32"
    return "fp16 autocast" if dtype == "float16" else "bf16 autocast"


def autocast(device: torch.device, amp: bool = True, dtype: str = "bfloat16"):
    kind = precision(device, amp, dtype)
    return torch.autocast(device.type, dtype=torch.float16 if kind == "fp16 autocast" else torch.bfloat16,
                          enabled=kind != "fp32")


def grad_scaler(device: torch.device, amp: bool = True, dtype: str = "bfloat16") -> "torch.amp.GradScaler | None":
    """fp16 gradients underflow without loss scaling, so fp16 autocast trains with a GradScaler (as the authors'
    code does); bf16 and fp32 need none."""
    if precision(device, amp, dtype) != "fp16 autocast":
        return None
    return torch.amp.GradScaler(device.type)


def build_optimizer(model: torch.nn.Module, recipe: Recipe,
                    device: torch.device | None = None) -> torch.optim.Optimizer:
    # Weight decay on weight matrices only: decaying norms, biases, the CLS token and the position
    # embedding hurts ViTs.
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.dim() >= 2 and n not in ("cls_token", "pos_embed")]
    decay_ids = {id(p) for p in decay}
    other = [p for _, p in params if id(p) not in decay_ids]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": other, "weight_decay": 0.0}]
    # One fused kernel for all parameters on CUDA. Not on the CPU, where it would change the rounding of the
    # committed runs' updates for no measured gain.
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    if recipe.optimizer in ("adamw", "adam"):
        return {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[recipe.optimizer](groups, lr=recipe.lr, **fused)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters: list | None = None,
                   clip: float | None = None, complete_gradients: Callable[[], None] | None = None,
                   scaler: "torch.amp.GradScaler | None" = None):
    """Zero the gradients, backpropagate `loss`, complete the gradients (a multi-process run's sum over ranks),
    clip their global norm over `parameters` to `clip` (None: no clipping) and step. Returns that norm before
    clipping, for the step log (measured only where `parameters` are given), else None. With a `scaler` (fp16),
    the loss is scaled, the gradients unscaled before the norm, and a step with an inf or NaN gradient is skipped,
    as GradScaler does."""
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if complete_gradients is not None:
        complete_gradients()
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = None
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
    elif parameters is not None:  # the norm alone: the gradients are left as they are
        grads = [p.grad for p in parameters if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return norm


def training_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  optimizer: torch.optim.Optimizer | None = None, label_smoothing: float = 0.0, amp: bool = True,
                  complete_gradients: Callable[[], None] | None = None) -> Callable[[], None]:
    """One training step of `model` on this batch, as a call for a benchmark to time: the forward pass and the
    cross-entropy under the device's precision (`autocast`), then `optimizer_step`; without an optimizer, the
    forward and backward passes alone."""
    def step() -> None:
        with autocast(images.device, amp):
            loss = F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
        if optimizer is None:
            model.zero_grad(set_to_none=True)
            loss.backward()
            if complete_gradients is not None:
                complete_gradients()
        else:
            optimizer_step(optimizer, loss, complete_gradients=complete_gradients)
    return step
