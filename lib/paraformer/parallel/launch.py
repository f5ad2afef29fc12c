"""Joining the process group that torchrun describes, one rank per device: NCCL with one GPU per rank where CUDA is
present, else gloo; the group that carries host values between ranks (`control_group`); and the one gradient sum
over the ranks that the parallel schemes share."""

from __future__ import annotations

import atexit
import os
from datetime import timedelta

import torch
import torch.distributed as dist


def init_process_group(backend: str | None = None, timeout_seconds: float = 300) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, ...): (rank, world size, this rank's device)."""
    if "RANK" not in os.environ:
        raise RuntimeError("no torch.distributed environment: launch with torchrun --nproc_per_node N ...")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds))
    return dist.get_rank(), dist.get_world_size(), device


_control_groups: dict = {}  # default group -> its control group (new_group is collective: make it once)
# Released before the interpreter tears down: a destroyed group whose last reference dies at interpreter exit takes
# gloo's threads down with std::terminate (seen as a SIGABRT after a run had finished).
atexit.register(_control_groups.clear)


def control_group(timeout_seconds: float = 300):
    """The group for host values between ranks (rank 0's decisions, the MGRIT solver's error figures): the default
    group where it serves CPU tensors (gloo), else a gloo group beside it. NCCL carries device memory only, and
    these values are born and read on the host, so a gloo group carries them without a copy to the device and a
    wait for its queue on the way back; tensors that live on the device (activations, gradients, losses) stay on
    the default group. Every rank must make the first call at the same point (the first `paraformer.parallel.
    processes.join` does), as for any new group."""
    world = dist.group.WORLD
    if world not in _control_groups:
        served = {part.split(":")[0] for part in dist.get_backend_config().split(",")}
        _control_groups[world] = world if "cpu" in served else dist.new_group(
            backend="gloo", timeout=timedelta(seconds=timeout_seconds))
    return _control_groups[world]


def grad_or_zero(p: torch.Tensor) -> torch.Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)


def sum_into_gradients(params: list, parts: list[torch.Tensor], group=None) -> torch.Tensor:
    """One all-reduce (sum) of `parts` flattened into one buffer; the first parts, one per parameter of `params`,
    become those parameters' .grad. Returns the summed buffer (any parts after the gradients are at its end)."""
    flat = torch.cat([part.reshape(-1) for part in parts])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    return flat
