"""Multi-device training-step benchmark: branch parallelism against pipeline parallelism on the equivalent
sequential ViT (same width, same total layers, same batch). `make bench` runs it; by hand:

    torchrun --nproc_per_node P -m paraformer.multibench --profile quick     # branch, torch pipelining
    python -m paraformer.multibench --profile quick --fairscale P            # FairScale Pipe (one process)

One process per device: on CPU, gloo with one thread per process; on GPUs, NCCL with one GPU per process.
Each method's step is forward, backward, gradient sync and an AdamW step. Pipelines are timed at every
micro-batch count of the profile and the best is reported beside the others, so that each baseline is tuned.
Rank 0 writes results/bench/<profile>/multi_<method>_<P>.csv.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .bench import device_label, get_bench_profile
from .config import results_dir
from .parallel import BranchParallel, init_process_group, sequential_vit, stage_bounds
from .results import atomic_write_text, code_version


@dataclass(frozen=True)
class MultiSetting:
    paraformer: str  # Para-F-m-n timed with branch parallelism
    vit: str  # the equivalent sequential ViT, timed with the pipelines
    batch: int
    micro_batches: tuple[int, ...]  # the pipelines' micro-batch counts to try
    steps: int  # timed steps (the median is kept), after `warmup` untimed ones
    warmup: int


MULTI_SETTINGS = {
    "ci": MultiSetting("1-4", "4-4", batch=8, micro_batches=(1, 2), steps=3, warmup=1),
    "quick": MultiSetting("1-24", "24-24", batch=64, micro_batches=(1, 2, 4, 8), steps=7, warmup=2),
    "paper": MultiSetting("1-24", "24-24", batch=256, micro_batches=(1, 2, 4, 8, 16), steps=20, warmup=5),
}


def _median_step(step, steps: int, warmup: int, device: torch.device, group=None) -> float:
    """Median seconds of `step()`. Ranks start each step together (a barrier, not timed) and a step lasts as long
    as its slowest rank: each rank times its own steps, and the maximum over ranks is kept per step."""
    times = []
    for i in range(warmup + steps):
        if dist.is_initialized():
            dist.barrier(group)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    if dist.is_initialized():
        slowest = torch.tensor(times, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX, group=group)
        times = slowest.tolist()
    return statistics.median(times)


def time_branch_parallel(profile_name: str, device: torch.device) -> list[dict]:
    setting, profile = MULTI_SETTINGS[profile_name], get_bench_profile(profile_name)
    torch.manual_seed(0)
    model = profile.model(setting.paraformer).to(device)
    parallel = BranchParallel(model)
    optimizer = torch.optim.AdamW([p for p in parallel.local.parameters()], lr=1e-4)
    images = torch.randn(setting.batch, 3, profile.image_size, profile.image_size, device=device)
    labels = torch.randint(0, 10, (setting.batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(parallel(images), labels).backward()
        parallel.sync_gradients()
        optimizer.step()

    seconds = _median_step(step, setting.steps, setting.warmup, device)
    return [{"method": "branch", "model": f"Para-F-{setting.paraformer}", "micro_batches": 1, "seconds": seconds}]


def time_torch_pipelines(profile_name: str, device: torch.device) -> list[dict]:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    setting, profile = MULTI_SETTINGS[profile_name], get_bench_profile(profile_name)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    stages = sequential_vit(profile.model(setting.vit))
    bounds = stage_bounds(len(stages), world)[rank]
    stage_module = torch.nn.Sequential(*[stages[i] for i in bounds]).to(device)
    optimizer = torch.optim.AdamW(stage_module.parameters(), lr=1e-4)
    images = torch.randn(setting.batch, 3, profile.image_size, profile.image_size, device=device)
    labels = torch.randint(0, 10, (setting.batch,), device=device)
    rows = []
    for name, schedule_class in (("torch-gpipe", ScheduleGPipe), ("torch-1f1b", Schedule1F1B)):
        for micro in setting.micro_batches:
            if setting.batch % micro or (schedule_class is Schedule1F1B and micro < world):
                continue  # 1F1B needs at least as many micro-batches as stages
            stage = PipelineStage(stage_module, rank, world, device)
            schedule = schedule_class(stage, n_microbatches=micro, loss_fn=F.cross_entropy)

            def step():
                optimizer.zero_grad(set_to_none=True)
                if world == 1:
                    schedule.step(images, target=labels)
                elif rank == 0:
                    schedule.step(images)
                elif rank == world - 1:
                    schedule.step(target=labels)
                else:
                    schedule.step()
                optimizer.step()

            seconds = _median_step(step, setting.steps, setting.warmup, device)
            rows.append({"method": name, "model": f"Para-F-{setting.vit}", "micro_batches": micro,
                         "seconds": seconds})
    return rows


def time_fairscale(profile_name: str, partitions: int, device: torch.device) -> list[dict]:
    """FairScale's Pipe in this one process: `partitions` partitions on `partitions` devices (all 'cpu' on a CPU
    machine, where its worker threads run the partitions side by side). Torn down explicitly: a Pipe left to
    the interpreter's exit hangs it."""
    from fairscale.nn import Pipe

    setting, profile = MULTI_SETTINGS[profile_name], get_bench_profile(profile_name)
    torch.manual_seed(0)
    stages = sequential_vit(profile.model(setting.vit))
    balance = [len(r) for r in stage_bounds(len(stages), partitions)]
    devices = ([torch.device("cuda", i) for i in range(partitions)] if device.type == "cuda"
               else ["cpu"] * partitions)
    images = torch.randn(setting.batch, 3, profile.image_size, profile.image_size)
    labels = torch.randint(0, 10, (setting.batch,))
    rows = []
    for micro in setting.micro_batches:
        if setting.batch % micro:
            continue
        pipe = Pipe(stages, balance=balance, devices=devices, chunks=micro, checkpoint="never")
        optimizer = torch.optim.AdamW(pipe.parameters(), lr=1e-4)
        first, last = pipe.devices[0], pipe.devices[-1]
        try:
            def step():
                optimizer.zero_grad(set_to_none=True)
                out = pipe(images.to(first))
                F.cross_entropy(out, labels.to(last)).backward()
                optimizer.step()

            seconds = _median_step(step, setting.steps, setting.warmup, device)
        finally:
            del pipe, optimizer
            gc.collect()
        rows.append({"method": "fairscale", "model": f"Para-F-{setting.vit}", "micro_batches": micro,
                     "seconds": seconds})
    return rows


def measure_costs(profile_name: str, device: torch.device) -> list[dict]:
    """What the cost model is fed (`kind`, `what`, `batch`, `bytes`, `seconds`): on one process, the compute time of
    one layer (every token, or the CLS token only) at each micro-batch size, of the stem and head, and of an
    AdamW step per parameter; on several, an all-reduce and a send/receive of each message size the methods use."""
    setting, profile = MULTI_SETTINGS[profile_name], get_bench_profile(profile_name)
    world = dist.get_world_size()
    tokens = (profile.image_size // profile.patch_size) ** 2 + 1
    width = profile.width
    sizes = sorted({setting.batch // m for m in setting.micro_batches if setting.batch % m == 0})
    rows = []
    if world == 1:
        torch.manual_seed(0)
        vit = profile.model(setting.vit).to(device)
        stages = sequential_vit(vit)
        layer, last = stages[1], stages[-2]
        for batch in sizes:
            x = torch.randn(batch, tokens, width, device=device, requires_grad=True)
            images = torch.randn(batch, 3, profile.image_size, profile.image_size, device=device)
            for what, fn in (("layer", lambda: layer(x).sum().backward()),
                             ("cls_layer", lambda: last(x).sum().backward()),
                             ("stem_head", lambda: stages[-1](stages[0](images)[:, 0]).sum().backward())):
                seconds = _median_step(fn, setting.steps, setting.warmup, device)
                rows.append({"kind": "compute", "what": what, "batch": batch, "bytes": 0, "seconds": seconds})
        params = [p for p in vit.parameters()]
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        for p in params:
            p.grad = torch.zeros_like(p)
        count = sum(p.numel() for p in params)
        seconds = _median_step(optimizer.step, setting.steps, setting.warmup, device)
        rows.append({"kind": "compute", "what": "adamw_per_parameter", "batch": 0, "bytes": 4 * count,
                     "seconds": seconds / count})
        return rows
    rank = dist.get_rank()
    messages = {("allreduce", setting.batch * width * 4), ("allreduce", 4 * (width * (3 * profile.patch_size ** 2 + 2)
                                                                           + tokens * width))}
    messages |= {("p2p", b * tokens * width * 4) for b in sizes}
    for kind, nbytes in sorted(messages):
        buffer = torch.zeros(nbytes // 4, device=device)
        if kind == "allreduce":
            def fn():
                dist.all_reduce(buffer)
        else:  # rank 0 -> rank 1 and back: one activation forward, one gradient backward
            def fn():
                if rank == 0:
                    dist.send(buffer, 1)
                    dist.recv(buffer, 1)
                elif rank == 1:
                    dist.recv(buffer, 0)
                    dist.send(buffer, 0)
        seconds = _median_step(fn, setting.steps, setting.warmup, device)
        rows.append({"kind": kind, "what": "round trip" if kind == "p2p" else "sum", "batch": 0, "bytes": nbytes,
                     "seconds": seconds})
    return rows


def write_rows(rows: list[dict], name: str, profile_name: str, processes: int, device: torch.device,
               root: Path | None = None) -> Path:
    df = pd.DataFrame(rows).assign(processes=processes, threads_per_process=torch.get_num_threads(),
                                   device=device_label(device), torch_version=torch.__version__,
                                   code_version=code_version(), profile=profile_name)
    folder = (Path(root) if root is not None else results_dir()) / "bench" / profile_name
    return atomic_write_text(df.to_csv(index=False), folder / f"multi_{name}_{processes}.csv")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paraformer.multibench", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=sorted(MULTI_SETTINGS))
    parser.add_argument("--fairscale", type=int, metavar="P", help="time FairScale Pipe with P partitions instead")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)  # one core per process (FairScale: one per partition thread)
    if args.fairscale:
        device = torch.device("cuda" if cuda else "cpu")
        rows = time_fairscale(args.profile, args.fairscale, device)
        path = write_rows(rows, "fairscale", args.profile, args.fairscale, device)
        print(f"wrote {path}", file=sys.stderr)
        return
    rank, world, device = init_process_group()
    try:
        rows = time_branch_parallel(args.profile, device) + time_torch_pipelines(args.profile, device)
        costs = measure_costs(args.profile, device)
        if rank == 0:
            for name, table in (("torchrun", rows), ("costs", costs)):
                print(f"wrote {write_rows(table, name, args.profile, world, device)}", file=sys.stderr)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
