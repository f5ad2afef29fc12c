"""Speed benchmarks (strategies, layers, multi: docs/parallel.md): `make bench` (python -m paraformer.tools.bench)
writes CSVs under results/bench/, and notebook 06 reads them. Every figure is a ratio of times measured in the same
run on the same device, never a timed test; times are medians over repeats, the models interleaved repeat by repeat
(`paraformer.core.timing`).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from ..core.config import ConfigError, ModelConfig
from ..core.execution import STRATEGIES
from ..core.files import atomic_write_text
from ..core.model import ParaFormer
from ..core.paths import results_dir
from ..core.provenance import code_version, device_name
from ..core.steps import resolve_device, training_step
from ..core.timing import median_seconds

BENCHMARKS = ("strategies", "layers", "multi")


@dataclass(frozen=True)
class ModelShape:
    """The shape of every model a benchmark builds (`BenchSettings`, `throughput.ThroughputSettings`)."""

    name: str  # the profile's
    width: int  # token dimension of every model
    num_heads: int
    mlp_ratio: float
    image_size: int  # square RGB input
    patch_size: int

    def config(self, name: str) -> ModelConfig:
        return ModelConfig.from_name(name, image_size=self.image_size, patch_size=self.patch_size, width=self.width,
                                     num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)


@dataclass(frozen=True)
class BenchSettings(ModelShape):
    """What the one-device benchmarks time; its shape is also the multi-process benchmark's (`multi`)."""

    strategy_models: tuple[str, ...]  # Para-F-m-n names timed under every strategy
    batches: tuple[int, ...]  # batch sizes of the strategy benchmark
    layer_counts: tuple[int, ...]  # n of Para-F-1-n and of the ViT-n in the layer benchmark
    branch_depths: tuple[int, ...]  # deeper branches M of Para-F-M-n (auto) also timed there, where M divides n
    train_batch: int  # batch of the training-throughput measurements
    repeats: int  # timed repeats per measurement (the median is kept)
    warmup: int  # untimed calls first (allocations, caches, auto's own measurement)

    def model(self, name: str, execution: str = "loop") -> ParaFormer:
        return ParaFormer(self.config(name), execution=execution)


def shown(path: Path) -> str:
    """A file named for the log without this machine's path to it: its folder and name (e.g. quick/layers.csv)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def steady_allocator() -> bool:
    """Keep freed memory in the process instead of handing it back to the system (glibc's allocator; elsewhere nothing
    happens and False is returned). By default glibc unmaps large freed blocks, and the next call page-faults them in
    again: that cost up to a third of a training step here, varied from run to run, and fell unevenly on whichever model
    ran after a memory-hungry one. Every benchmark process calls this first, so it applies to every method alike."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    trim_threshold, top_pad, mmap_threshold = -1, -2, -3  # mallopt parameter numbers (malloc.h)
    settings = {trim_threshold: 1 << 30, top_pad: 256 << 20, mmap_threshold: 32 << 20}
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings.items())


def step(model: ParaFormer, images: torch.Tensor, mode: str) -> Callable[[], None]:
    """One inference forward pass, or one training step's forward and backward (`training_step` without an
    optimizer: it costs the same under every strategy)."""
    if mode == "inference":
        model.eval()

        def run():
            with torch.inference_mode():
                model(images)
        return run
    if mode == "train":
        model.train()
        labels = torch.zeros(len(images), dtype=torch.long, device=images.device)
        return training_step(model, images, labels)
    raise ConfigError(f"mode={mode!r}; use 'inference' or 'train'")


def bench_strategies(settings: BenchSettings, device: torch.device, progress: bool = True) -> pd.DataFrame:
    """Every strategy on every (model, batch, mode); `auto_vs_best` = auto's time / the faster of loop and fused."""
    rows = []
    for name in settings.strategy_models:
        torch.manual_seed(0)
        models = {s: settings.model(name, s).to(device) for s in STRATEGIES}
        for model in models.values():
            model.load_state_dict(models["loop"].state_dict())
        for batch in settings.batches:
            images = torch.randn(batch, 3, settings.image_size, settings.image_size, device=device)
            for mode in ("inference", "train"):
                models["auto"].auto_choices.clear()  # auto measures afresh, during the warm-up calls
                seconds = median_seconds({s: step(m, images, mode) for s, m in models.items()},
                                         settings.repeats, settings.warmup, device)
                best = min(seconds["loop"], seconds["fused"])
                (key, chosen), = models["auto"].auto_choices.items()
                auto_loop, auto_fused = models["auto"]._auto.measured[key]
                for strategy, t in seconds.items():
                    rows.append({"model": f"Para-F-{name}", "batch": batch, "mode": mode, "strategy": strategy,
                                 "seconds": t, "vs_best_of_loop_fused": t / best,
                                 "auto_chose": chosen if strategy == "auto" else "",
                                 # what auto measured when it chose, to tell noise from a wrong rule
                                 "auto_measured_loop": auto_loop if strategy == "auto" else None,
                                 "auto_measured_fused": auto_fused if strategy == "auto" else None})
                if progress:
                    print(f"strategies {name} batch {batch} {mode}: " + ", ".join(
                        f"{s} {1e3 * t:.2f} ms" for s, t in seconds.items()), file=sys.stderr)
    return pd.DataFrame(rows)


def bench_layers(settings: BenchSettings, device: torch.device, progress: bool = True) -> pd.DataFrame:
    """Batch-1 inference latency and training throughput against layers n, all interleaved: Para-F-1-n under each
    strategy, ViT-n (one branch: the strategies coincide, so it runs `loop`), Para-F-M-n (auto) for deeper M."""
    rows = []
    for layers in settings.layer_counts:
        torch.manual_seed(0)
        # (family, branch depth, strategy) -> model
        candidates = {("ParaFormer", 1, s): settings.model(f"1-{layers}", s).to(device) for s in STRATEGIES}
        candidates |= {("ParaFormer", depth, "auto"): settings.model(f"{depth}-{layers}", "auto").to(device)
                       for depth in settings.branch_depths if layers % depth == 0 and depth < layers}
        candidates[("ViT", layers, "loop")] = settings.model(f"{layers}-{layers}").to(device)
        for mode, batch in (("inference", 1), ("train", settings.train_batch)):
            images = torch.randn(batch, 3, settings.image_size, settings.image_size, device=device)
            seconds = median_seconds({key: step(m, images, mode) for key, m in candidates.items()},
                                     settings.repeats, settings.warmup, device)
            for (family, depth, strategy), t in seconds.items():
                rows.append({"model": f"ViT-{layers}" if family == "ViT" else f"Para-F-{depth}-{layers}",
                             "family": family, "branch_depth": depth, "strategy": strategy, "num_layers": layers,
                             "mode": mode, "batch": batch, "seconds": t, "images_per_second": batch / t})
            if progress:
                print(f"layers {layers} {mode}: " + ", ".join(
                    f"{r['model']} {r['strategy']} {1e3 * r['seconds']:.2f} ms" for r in rows[-len(seconds):]),
                      file=sys.stderr)
    return pd.DataFrame(rows)


def bench_dir(profile_name: str, root: Path | None = None) -> Path:
    """`<root>/bench/<profile>`, `root` by default the profile's results folder: results/bench/quick for the
    committed benchmarks, results/<profile>/bench/<profile> for the others."""
    return (Path(root) if root is not None else results_dir(profile_name)) / "bench" / profile_name


def write_bench(df: pd.DataFrame, name: str, profile: str, device: torch.device, root: Path | None = None,
                **device_columns) -> Path:
    """`bench_dir(profile)/<name>.csv`, rows stamped with the device (then `device_columns`), torch, code, profile."""
    df = df.assign(device=device_name(device), **device_columns, torch_version=torch.__version__,
                   code_version=code_version(), profile=profile)
    return atomic_write_text(df.to_csv(index=False), bench_dir(profile, root) / f"{name}.csv")


def bench_multi(settings: BenchSettings, multi, processes: tuple[int, ...], root: Path | None = None) -> None:
    """`paraformer.bench.multi` (`multi`: its `MultiSettings`) through torchrun at each process count, here."""
    env = dict(os.environ)  # with PARAFORMER_RESULTS as it is here, the ranks find the same folder as this process
    if not torch.cuda.is_available():
        env["OMP_NUM_THREADS"] = "1"  # what the benchmark sets anyway; saying it silences torchrun's warning
    elif max(processes) > torch.cuda.device_count():
        raise ConfigError(f"processes={max(processes)} needs as many GPUs, and this machine has "
                          f"{torch.cuda.device_count()}; pass --processes up to that")
    given = json.dumps({"bench": asdict(settings), "multi": asdict(multi)})
    for count in processes:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}",
                   "-m", "paraformer.bench.multi", "--settings", given]
        if root is not None:
            command += ["--root", str(root)]
        print(f"multi-process benchmark: {count} process(es) of the {settings.name} settings", file=sys.stderr)
        done = subprocess.run(command, env=env)
        if done.returncode:
            raise RuntimeError(f"the {count}-process benchmark failed with exit code {done.returncode} "
                               f"(its output is above); run it by hand: {' '.join(command[2:])}")


def load(profile_name: str, root: Path | None = None) -> dict[str, pd.DataFrame]:
    """Every benchmark CSV of a profile, by file name without .csv (empty if none has been written)."""
    return {path.stem: pd.read_csv(path) for path in sorted(bench_dir(profile_name, root).glob("*.csv"))}


def to_measure(data: dict[str, pd.DataFrame], processes: tuple[int, ...] = (1, 2),
               device: torch.device | None = None) -> list[str]:
    """The benchmarks with no CSV in `data` (from `load`) or one measured on another kind of device: those must be
    run here before their tables mean anything for this machine."""
    device = device or resolve_device("auto")
    here = device_name(device).split(",")[0]  # the device model, without the thread count

    def stale(names):
        return any(name not in data or {d.split(",")[0] for d in data[name]["device"]} != {here} for name in names)

    todo = [name for name in ("strategies", "layers") if stale([name])]
    if stale([f"multi_{kind}_{p}" for kind in ("steps", "costs") for p in processes]):
        todo.append("multi")
    return todo


def run(settings: BenchSettings, multi, only: tuple[str, ...] = BENCHMARKS, processes: tuple[int, ...] = (1, 2),
        device: torch.device | None = None, root: Path | None = None) -> None:
    """Run the benchmarks `only` of a profile's settings and write their CSVs (what `make bench` does)."""
    device = device or resolve_device("auto")
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHMARKS)}")
    print(f"benchmark profile {settings.name} on {device_name(device)}: {asdict(settings)}", file=sys.stderr)
    steady_allocator()
    for name in only:
        if name == "multi":
            bench_multi(settings, multi, processes, root)
        else:
            benchmark = bench_strategies if name == "strategies" else bench_layers
            print(f"wrote {shown(write_bench(benchmark(settings, device), name, settings.name, device, root))}",
                  file=sys.stderr)
