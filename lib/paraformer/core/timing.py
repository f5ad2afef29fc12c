"""Timing: the one loop every benchmark (and `auto` execution's choice) measures with.

Calls are timed in rounds, each running every call once, after untimed warm-up rounds (allocations, kernel choice,
caches). Each call's median is kept, so that a slow spell of the machine falls on every call alike and one step
that waited for another process moves no figure; the order rotates between rounds, so that no call always follows
the same one. Across ranks, every call starts together and lasts as long as its slowest rank.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.distributed as dist


def timed(call: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call, waiting for the GPU's queued work before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def median_seconds(calls: dict[object, Callable[[], object] | None], repeats: int, warmup: int,
                   device: torch.device, across_ranks: bool = False) -> dict[object, float]:
    """Median seconds of each call over `repeats` timed rounds after `warmup` untimed ones (see the module
    docstring). `across_ranks`: every rank of the default process group times its own part of each call, after a
    barrier, and the slowest rank's time counts; a call that is None on a rank leaves that rank idle meanwhile."""
    ranks = across_ranks and dist.is_initialized()
    names = list(calls)
    times: dict = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if ranks:
                dist.barrier()
            seconds = timed(calls[name], device) if calls[name] is not None else 0.0
            if round_index >= warmup:
                times[name].append(seconds)
    if ranks:
        slowest = torch.tensor([times[name] for name in names], dtype=torch.float64,
                               device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        times = dict(zip(names, slowest.tolist()))
    return {name: statistics.median(times[name]) for name in names}
