"""One training step, for the trainer and every benchmark: the device and precision a recipe asks for, its
optimizer, and `optimizer_step`, the one place where weights change. The benchmarks time `training_step`, a
closure over one batch built on the same `optimizer_step`, so that what they time is what training does.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F

from .config import ConfigError, Recipe


ALLOW_CPU = "PARAFORMER_ALLOW_CPU"  # "1": device "auto" may fall back to the CPU where a GPU is expected


class NoCudaError(ConfigError):
    """Device "auto" found no usable CUDA where a GPU is expected (`resolve_device`'s `gpu_for`)."""

    def __init__(self, needs: str, torch_version: str, cuda_build: str | None, available: bool, reason: str):
        self.needs, self.torch_version, self.cuda_build = needs, torch_version, cuda_build
        self.available, self.reason = available, reason
        build = f"built for CUDA {cuda_build}" if cuda_build else "a CPU-only build"
        fix = (f"install an NVIDIA driver that supports CUDA {cuda_build} (or a torch build for your driver)"
               if cuda_build else "install a CUDA build of torch")
        super().__init__(f"{needs} is sized for a GPU, but device 'auto' finds no usable CUDA: torch {torch_version} "
                         f"({build}), torch.cuda.is_available() is {available}" + (f" ({reason})" if reason else "")
                         + f"; {fix}, or run on the CPU anyway (far slower) with {ALLOW_CPU}=1 or device 'cpu'")


def cuda_unavailable_reason() -> str:
    """Why torch finds no usable CUDA, in the first sentence of its own error (no driver, a driver too old for
    this build, no device visible, a CPU-only build); empty where it finds CUDA or gives no reason."""
    if torch.cuda.is_available():
        return ""
    try:
        torch.cuda.init()
    except (RuntimeError, AssertionError) as error:  # torch's two ways of saying it
        return str(error).strip().split(". ")[0].split("\n")[0]
    return ""


def resolve_device(name: str, gpu_for: str | None = None) -> torch.device:
    """`Recipe.device` as a torch device: "auto" is CUDA when present, else the CPU. Where `gpu_for` names what is
    sized for a GPU (a profile), "auto" without usable CUDA is refused (`NoCudaError`: days on the CPU instead of
    minutes should never happen unasked), unless PARAFORMER_ALLOW_CPU=1; "cpu" is always what it says."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if gpu_for is not None and os.environ.get(ALLOW_CPU) != "1":
            raise NoCudaError(gpu_for, torch.__version__, torch.version.cuda, False, cuda_unavailable_reason())
        return torch.device("cpu")
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
        # on the loss's device, like a measured norm: the step log gathers them into one tensor
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=loss.device)
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
