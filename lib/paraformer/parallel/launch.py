"""Joining the process group that torchrun describes, one rank per device: NCCL with one GPU per rank where CUDA is
present, else gloo."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def init_process_group(backend: str | None = None, timeout_seconds: float = 300) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...): NCCL with one GPU per rank
    where CUDA is present, else gloo. Returns (rank, world size, this rank's device)."""
    if "RANK" not in os.environ:
        raise RuntimeError("no torch.distributed environment: launch with torchrun --nproc_per_node N ...")
    cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if cuda else "gloo")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds))
    return dist.get_rank(), dist.get_world_size(), device
