"""The 2024 paper's speed claims where they can hold: one branch of a Para-Former per process. Wang & Li 2024 argue
that a Para-Former's inference time does not grow with its number of layers, and that a depth-M Para-Former runs
N/M times faster than a depth-N serial network, both presuming that every branch has a device of its own. On two
devices that holds for two branches, so one torchrun run on 2 processes (one device each; on the CPU one core each,
the ranks pinned to distinct cores with one thread) times, in the same interleaved rounds:

- Para-F-1-2 on 2 processes (a depth-1 branch each, `BranchParallel`) and Para-F-1-1 on 1 (rank 0 alone, rank 1
  idle): the time from 1 to 2 layers, a layer per device;
- Para-F-2-4 on 2 processes (a depth-2 branch each) and the serial ViT-4 on 1: N/M = 2;
- Para-F-1-2 and Para-F-2-4 on 1 process: the same models without the second device, what the model alone gives.

Each call at batch-1 inference (the claims' "inference time") and as a training step (forward, backward, gradient
sync and AdamW in fp32, as `paraformer.bench.multi` times it). Every round's time is kept, not only the median, so
that each ratio's interval comes from the repeats (`paraformer.experiments.speedup`). `speed.run` launches it
(`make bench`); rank 0 writes bench/<profile>/branch_processes.csv.
"""

from __future__ import annotations

import os
import sys

import pandas as pd
import torch
import torch.distributed as dist

from ..core.config import ConfigError
from ..core.timing import median_seconds
from ..parallel.branch import BranchParallel
from ..parallel.launch import init_process_group
from .multi import _training_step as fp32_training_step
from .speed import (MIN_REPEATS, PROCESSES, BenchSettings, BranchProcessSettings, benchmark_matmul,  # noqa: F401
                    devices_here, settings_digest, shown, steady_allocator, worker_settings, write_bench)

NAME = "branch_processes"  # the CSV's name, and the benchmark's in `speed.BENCHMARKS`
# (the model on one process, the model on PROCESSES): each pair a ratio of the paper's claims
GROWTH = ("1-1", "1-2")  # a layer per device: Para-F-1-1 alone against Para-F-1-2 on two
N_OVER_M = ("4-4", "2-4")  # N/M = 2: the serial ViT-4 against Para-F-2-4, a depth-2 branch per device


def model_name(model: str) -> str:
    """A model's name in the CSV: "ViT-4" for the serial network of the N/M pair, else "Para-F-1-2" (Para-F-1-1,
    a single layer, is named as the ParaFormer it is in the growth pair)."""
    return f"ViT-{model.split('-')[1]}" if model == N_OVER_M[0] else f"Para-F-{model}"


def call_name(model: str, processes: int) -> str:
    """A timed call's name in the CSV: "Para-F-1-2 on 2 processes", "ViT-4 on 1 process"."""
    return f"{model_name(model)} on {processes} process{'' if processes == 1 else 'es'}"


def pin_to_core(local_rank: int) -> int:
    """Bind this process (and the threads it starts later: gloo's, torch's) to one core of those it may use, a
    different one per local rank, so that the two ranks never share a core and no rank wanders onto the other's."""
    cores = sorted(os.sched_getaffinity(0))
    core = cores[local_rank % len(cores)]
    os.sched_setaffinity(0, {core})
    return core


def round_seconds(calls: dict[str, object], repeats: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Every timed round's seconds of each call (the slowest rank's), in `core.timing`'s loop: `warmup` untimed
    rounds, then `repeats` rounds in rotating order, kept one by one rather than as a median."""
    names = list(calls)
    median_seconds(calls, warmup, 0, device, across_ranks=True)  # warm-up rounds, whose times are dropped
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        shift = index % len(names)
        once = median_seconds({name: calls[name] for name in names[shift:] + names[:shift]}, 1, 0, device,
                              across_ranks=True)
        for name, seconds in once.items():
            rounds[name].append(seconds)
    return rounds


def timed_calls(shape: BenchSettings, setting: BranchProcessSettings, device: torch.device,
                mode: str) -> tuple[dict[str, object], dict[str, tuple[str, int]], int]:
    """This rank's calls of one mode (None where the call runs on rank 0 alone), each call's (model, processes),
    and the batch."""
    rank = dist.get_rank()
    batch = 1 if mode == "inference" else setting.train_batch
    images = torch.randn(batch, 3, shape.image_size, shape.image_size, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    calls, what = {}, {}
    for alone, shared in (GROWTH, N_OVER_M):
        for model, processes in ((alone, 1), (shared, 1), (shared, PROCESSES)):
            name = call_name(model, processes)
            if name in calls:
                continue
            torch.manual_seed(0)
            # on one process the faster strategy for several branches; one branch per rank needs none
            net = shape.model(model, "auto" if processes == 1 else "loop").to(device)
            parallel = BranchParallel(net) if processes > 1 else net
            if processes == 1 and rank != 0:
                calls[name] = None
            elif mode == "inference":
                calls[name] = _inference(parallel.eval(), images)
            else:
                sync = parallel.sync_gradients if processes > 1 else None
                calls[name] = fp32_training_step(parallel.train(), images, labels, sync)
            what[name] = (model_name(model), processes)
    return calls, what, batch


def _inference(model: torch.nn.Module, images: torch.Tensor):
    def run():
        with torch.inference_mode():
            model(images)
    return run


def measure(shape: BenchSettings, setting: BranchProcessSettings, device: torch.device) -> pd.DataFrame:
    """Every round of every call, both modes (rows on every rank; rank 0 writes them)."""
    if dist.get_world_size() != PROCESSES:
        raise RuntimeError(f"the one-branch-per-process benchmark runs on {PROCESSES} processes, not "
                           f"{dist.get_world_size()}: torchrun --nproc_per_node {PROCESSES} -m {__name__}")
    rows = []
    for mode in ("inference", "train"):
        calls, what, batch = timed_calls(shape, setting, device, mode)
        for name, seconds in round_seconds(calls, setting.repeats, setting.warmup, device).items():
            model, processes = what[name]
            rows += [{"call": name, "model": model, "processes": processes, "mode": mode, "batch": batch,
                      "round": index, "seconds": t} for index, t in enumerate(seconds)]
    return pd.DataFrame(rows)


# the parts of --settings, as speed.bench_branch_processes writes them, and their classes
WORKER_SETTINGS = {"bench": BenchSettings, "claims": BranchProcessSettings}


def main(argv: list[str] | None = None) -> None:
    root, (shape, setting) = worker_settings(f"torchrun --nproc_per_node {PROCESSES} -m {__name__}",
                                             __doc__.splitlines()[0], WORKER_SETTINGS, argv)
    cpu = not torch.cuda.is_available()
    # counted before pinning, which leaves this process one core
    devices, unit = devices_here(torch.device("cpu" if cpu else "cuda"))
    core = pin_to_core(int(os.environ.get("LOCAL_RANK", 0))) if cpu else -1
    if cpu:
        torch.set_num_threads(1)
    steady_allocator()
    rank, world, device = init_process_group(timeout_seconds=1800)
    try:
        cores = [None] * world
        dist.all_gather_object(cores, core)
        with benchmark_matmul(device):
            table = measure(shape, setting, device)
        if rank == 0:
            table = table.assign(devices=devices, unit=unit, cores=" ".join(str(c) for c in cores) if cpu else "",
                                 threads_per_process=torch.get_num_threads())
            path = write_bench(table, NAME, shape.name, device, root, settings=settings_digest(shape, setting),
                               device_type=device.type)
            print(f"wrote {shown(path)}", file=sys.stderr)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
