"""Multi-device training-step benchmark: branch parallelism against pipeline, data and layer parallelism of the
equivalent sequential ViT (same width, layers and batch); the methods are listed in docs/parallel.md. `make bench`
runs it (`paraformer.bench.speed` passes the profile's settings as JSON); by hand,
`python -m paraformer.tools.bench --profile quick --only multi`.

One process per device: on CPU, gloo with one thread per process; on GPUs, NCCL with one GPU per process. Each
step is forward, backward, gradient sync and an AdamW step, in fp32 (the pipelines run without autocast; matrix
products in TF32 on CUDA, `speed.benchmark_matmul`, recorded as `matmul_precision`), timed by
`paraformer.core.timing.median_seconds` across the ranks. Branch parallelism is taken in turn with the whole model
on rank 0 alone, so that the speed-up is a ratio of times from one run; FairScale's Pipe (the 2025 paper's
baseline) runs its P partitions in rank 0's process while the other ranks idle; MGRIT uses two levels, k forward
iterations and one backward. A method that cannot run (FairScale not installed, layers or batch that P does not
divide) is skipped with a message. Rank 0 writes multi_steps_<P>.csv, and multi_costs_<P>.csv with what
`paraformer.bench.costmodel` is fed, into `speed.bench_dir(profile)`.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..core.config import ConfigError
from ..core.steps import training_step
from ..core.timing import median_seconds
from ..parallel.branch import BranchParallel, branch_shares  # contiguous, balanced: also the pipeline stages
from ..parallel.launch import init_process_group
from ..parallel.mgrit import LayerParallel, MGRITConfig, check_layout, layer_step, layer_vjp
from ..parallel.pipeline import sequential_vit
from ..parallel.processes import rank_share
from .speed import (BenchSettings, benchmark_matmul, settings_digest, shown, steady_allocator, worker_settings,
                    write_bench)


@dataclass(frozen=True)
class MultiSettings:
    paraformer: str  # Para-F-m-n timed with branch parallelism
    vit: str  # the equivalent sequential ViT, timed with the pipelines
    batch: int
    micro_batches: tuple[int, ...]  # the pipelines' micro-batch counts to try
    steps: int  # timed steps (the median is kept), after `warmup` untimed ones
    warmup: int
    # layer-parallel MGRIT of the ViT: two levels of this coarsening, timed at each forward iteration count (one
    # backward iteration); every rank's share of the layers at the largest process count must be a multiple of it
    mgrit_coarsening: int = 4
    mgrit_iterations: tuple[int, ...] = (1, 2)
    # the process counts measured unless others are asked for, those of them the machine has devices for
    # (`speed.process_counts`): the verdicts and the cost model are made at 1 and 2
    processes: tuple[int, ...] = (1, 2)


def vit_name(setting: MultiSettings) -> str:
    """The sequential ViT's name in tables: ViT-n for Para-F-n-n."""
    return "ViT-" + setting.vit.split("-")[1]


def _median_steps(steps: dict, repeats: int, warmup: int, device: torch.device) -> dict[str, float]:
    return median_seconds(steps, repeats, warmup, device, across_ranks=True)


def _median_step(step, repeats: int, warmup: int, device: torch.device) -> float:
    return _median_steps({"step": step}, repeats, warmup, device)["step"]


def _training_step(model, images, labels, sync=None):
    """Forward, backward, gradient sync (if any) and an AdamW step, in fp32."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return training_step(model, images, labels, optimizer, amp=False, complete_gradients=sync)


def _inputs(setting: MultiSettings, shape: BenchSettings, device: torch.device):
    images = torch.randn(setting.batch, 3, shape.image_size, shape.image_size, device=device)
    return images, torch.randint(0, 10, (setting.batch,), device=device)


def time_branch_parallel(shape: BenchSettings, setting: MultiSettings, device: torch.device) -> list[dict]:
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = shape.model(setting.paraformer).to(device)
    images, labels = _inputs(setting, shape, device)
    parallel = BranchParallel(model)
    steps = {"branch": _training_step(parallel, images, labels, parallel.sync_gradients)}
    if world > 1:
        steps["branch, 1 process"] = _training_step(model, images, labels) if rank == 0 else None
    seconds = _median_steps(steps, setting.steps, setting.warmup, device)
    return [{"method": method, "model": f"Para-F-{setting.paraformer}", "micro_batches": 1, "seconds": t}
            for method, t in seconds.items()]


def time_torch_pipelines(shape: BenchSettings, setting: MultiSettings, device: torch.device) -> list[dict]:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    stages = sequential_vit(shape.model(setting.vit))
    bounds = branch_shares(len(stages), world)[rank]
    stage_module = torch.nn.Sequential(*[stages[i] for i in bounds]).to(device)
    optimizer = torch.optim.AdamW(stage_module.parameters(), lr=1e-4)
    images, labels = _inputs(setting, shape, device)
    # the first stage is fed the images, the last the labels (one stage: both)
    inputs, targets = ((images,) if rank == 0 else ()), ({"target": labels} if rank == world - 1 else {})
    rows = []
    for name, schedule_class in (("torch-gpipe", ScheduleGPipe), ("torch-1f1b", Schedule1F1B)):
        for micro in setting.micro_batches:
            if setting.batch % micro or (schedule_class is Schedule1F1B and micro < world):
                continue  # 1F1B needs at least as many micro-batches as stages
            stage = PipelineStage(stage_module, rank, world, device)
            schedule = schedule_class(stage, n_microbatches=micro, loss_fn=F.cross_entropy)

            def step():
                optimizer.zero_grad(set_to_none=True)
                schedule.step(*inputs, **targets)
                optimizer.step()

            rows.append({"method": name, "model": vit_name(setting), "micro_batches": micro,
                         "seconds": _median_step(step, setting.steps, setting.warmup, device)})
    return rows


def ddp_training_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device):
    """`_training_step` under DistributedDataParallel on this rank's share of the global batch (`images`, `labels`:
    the same on every rank). Every parameter of a plain ParaFormer (a ViT included) gets a gradient, the CLS-only last
    layer's too (its query, key and value rows of qkv are slices of one weight), so DDP need not seek unused ones."""
    from torch.nn.parallel import DistributedDataParallel

    share = rank_share(len(images), dist.get_rank(), dist.get_world_size())
    parallel = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                       find_unused_parameters=False)
    return _training_step(parallel, images[share], labels[share])


def time_ddp(shape: BenchSettings, setting: MultiSettings, device: torch.device) -> list[dict]:
    """DDP steps of the ViT and of the ParaFormer, in turn; at one process, DDP over one rank (which adds nothing)."""
    rank_share(setting.batch, 0, dist.get_world_size())  # refused here, before anything is built
    torch.manual_seed(0)
    models = {vit_name(setting): shape.model(setting.vit).to(device),
              f"Para-F-{setting.paraformer}": shape.model(setting.paraformer).to(device)}
    images, labels = _inputs(setting, shape, device)
    steps = {name: ddp_training_step(model, images, labels, device) for name, model in models.items()}
    seconds = _median_steps(steps, setting.steps, setting.warmup, device)
    return [{"method": "ddp", "model": name, "micro_batches": 1, "seconds": t} for name, t in seconds.items()]


def mgrit_config(setting: MultiSettings, iterations: int) -> MGRITConfig:
    return MGRITConfig(coarsening=setting.mgrit_coarsening, forward_iterations=iterations, backward_iterations=1)


def time_layer_parallel(shape: BenchSettings, setting: MultiSettings, device: torch.device) -> list[dict]:
    """MGRIT steps of the ViT at each iteration count, in turn; AdamW updates the whole (replicated) model."""
    torch.manual_seed(0)
    model = shape.model(setting.vit).to(device)
    check_layout(model.config.num_layers, dist.get_world_size(), mgrit_config(setting, 1))  # refused alike everywhere
    images, labels = _inputs(setting, shape, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def mgrit_step(solver: LayerParallel):
        def step():
            optimizer.zero_grad(set_to_none=True)
            solver.loss_and_gradients(images, labels)
            optimizer.step()
        return step

    steps = {f"mgrit-{k}it": mgrit_step(LayerParallel(model, mgrit_config(setting, k), group=dist.group.WORLD))
             for k in setting.mgrit_iterations}
    seconds = _median_steps(steps, setting.steps, setting.warmup, device)
    return [{"method": method, "model": vit_name(setting), "micro_batches": 1, "seconds": t}
            for method, t in seconds.items()]


def time_fairscale(shape: BenchSettings, setting: MultiSettings, device: torch.device) -> list[dict]:
    """FairScale's Pipe with one partition per process of this run, all in rank 0's process (FairScale runs its
    partitions in threads, on the devices it is given: every GPU, or 'cpu' once per partition), while the other
    ranks idle. Torn down explicitly after each micro-batch count: a Pipe left to the interpreter's exit hangs it."""
    try:
        import fairscale.nn  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"FairScale is not installed ({error}); install the bench extra: "
                          "pip install -e '.[bench]'") from None
    rank, partitions = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    stages = sequential_vit(shape.model(setting.vit))
    balance = [len(r) for r in branch_shares(len(stages), partitions)]
    devices = ([torch.device("cuda", i) for i in range(partitions)] if device.type == "cuda"
               else ["cpu"] * partitions)
    images, labels = _inputs(setting, shape, torch.device("cpu"))
    rows = []
    for micro in setting.micro_batches:
        if setting.batch % micro:
            continue
        pipe = step = None
        if rank == 0:
            from fairscale.nn import Pipe

            pipe = Pipe(stages, balance=balance, devices=devices, chunks=micro, checkpoint="never")
            step = _training_step(pipe, images.to(pipe.devices[0]), labels.to(pipe.devices[-1]))
        try:
            seconds = _median_step(step, setting.steps, setting.warmup, device)
        finally:
            del pipe, step
            gc.collect()
        rows.append({"method": "fairscale", "model": vit_name(setting), "micro_batches": micro, "seconds": seconds})
    return rows


def measure_costs(shape: BenchSettings, setting: MultiSettings, device: torch.device) -> list[dict]:
    """What the cost model is fed (`kind`, `what`, `batch`, `bytes`, `seconds`): on one process, the compute times
    (see `costmodel`) at every power-of-two batch up to the full one (every micro-batch size a pipeline could use,
    and the batch / P of data parallelism where P is a power of two); on several, an all-reduce and a send/receive
    round trip over a wide range of message sizes, those the methods use included (DDP's: a whole model's
    gradients). Communication is cheap to time and noisy, so it gets three times the repeats."""
    world = dist.get_world_size()
    tokens = (shape.image_size // shape.patch_size) ** 2 + 1
    width = shape.width
    sizes = [1 << i for i in range(setting.batch.bit_length()) if setting.batch % (1 << i) == 0]
    rows = []
    if world == 1:
        torch.manual_seed(0)
        vit = shape.model(setting.vit).to(device)
        stages = sequential_vit(vit)
        layer, last = stages[1], stages[-2]
        for batch in sizes:
            x = torch.randn(batch, tokens, width, device=device, requires_grad=True)
            images = torch.randn(batch, 3, shape.image_size, shape.image_size, device=device)
            cotangent = torch.randn(batch, tokens, width, device=device)

            def forward_only():  # an MGRIT forward step: no graph
                with torch.no_grad():
                    layer_step(layer, x, 1.0)

            for what, fn in (("layer", lambda: layer(x).sum().backward()),
                             ("layer_forward", forward_only),
                             # an MGRIT adjoint step: the layer recomputed, its input's VJP only
                             ("layer_vjp", lambda: layer_vjp(layer, x, 1.0, cotangent, with_parameters=False)),
                             ("cls_layer", lambda: last(x).sum().backward()),
                             ("stem_head", lambda: stages[-1](stages[0](images)[:, 0]).sum().backward())):
                seconds = _median_step(fn, setting.steps, setting.warmup, device)
                rows.append({"kind": "compute", "what": what, "batch": batch, "bytes": 0, "seconds": seconds})
        params = list(vit.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        for p in params:
            p.grad = torch.zeros_like(p)
        count = sum(p.numel() for p in params)
        seconds = _median_step(optimizer.step, setting.steps, setting.warmup, device)
        rows.append({"kind": "compute", "what": "adamw_per_parameter", "batch": 0, "bytes": 4 * count,
                     "seconds": seconds / count})
        return rows
    rank = dist.get_rank()
    stem_bytes = 4 * (width * (3 * shape.patch_size ** 2 + 2) + tokens * width)
    # DDP's gradients, every parameter of a model: tens of MB at GPU widths, beyond the spread's 4 MB
    gradient_bytes = {4 * shape.model(name).num_parameters() for name in (setting.vit, setting.paraformer)}
    spread = {1 << 10, 1 << 14, 1 << 18, 1 << 22}
    messages = {("allreduce", n) for n in spread | {setting.batch * width * 4, stem_bytes} | gradient_bytes}
    messages |= {("p2p", n) for n in spread | {b * tokens * width * 4 for b in sizes}}
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
        seconds = _median_step(fn, 3 * setting.steps, setting.warmup, device)
        rows.append({"kind": kind, "what": "round trip" if kind == "p2p" else "sum", "batch": 0, "bytes": nbytes,
                     "seconds": seconds})
    return rows


# the parts of --settings, as speed.bench_multi writes them, and their classes
WORKER_SETTINGS = {"bench": BenchSettings, "multi": MultiSettings}


def main(argv: list[str] | None = None) -> None:
    root, (shape, setting) = worker_settings("torchrun --nproc_per_node P -m paraformer.bench.multi",
                                             __doc__.splitlines()[0], WORKER_SETTINGS, argv)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # one core per process (FairScale: one per partition thread)
    steady_allocator()
    rank, world, device = init_process_group(timeout_seconds=1800)
    with benchmark_matmul(device):  # its fp32 products: TF32 on CUDA, recorded in every row
        try:
            rows = time_branch_parallel(shape, setting, device) + time_torch_pipelines(shape, setting, device)
            for name, timer in (("FairScale", time_fairscale), ("layer-parallel MGRIT", time_layer_parallel),
                                ("DDP", time_ddp)):
                try:
                    rows += timer(shape, setting, device)
                except ConfigError as error:  # refused alike on every rank, before any collective: no rank waits
                    if rank == 0:
                        print(f"skipping {name}: {error}", file=sys.stderr)
            costs = measure_costs(shape, setting, device)
            if rank == 0:
                for name, table in (("steps", rows), ("costs", costs)):
                    df = pd.DataFrame(table).assign(processes=world, threads_per_process=torch.get_num_threads())
                    path = write_bench(df, f"multi_{name}_{world}", shape.name, device, root,
                                       settings=settings_digest(shape, setting), device_type=device.type)
                    print(f"wrote {shown(path)}", file=sys.stderr)
        finally:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
