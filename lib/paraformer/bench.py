"""Speed benchmarks: `make bench` (python -m paraformer.bench) writes CSVs under results/bench/, and notebook 06
reads them. Every figure is a ratio of times measured in the same run on the same device, never a timed test.

- strategies: the branch execution strategies of `paraformer.execution` (loop, fused, auto) per model, batch
  size and mode (inference, or a training step: forward and backward);
- layers: batch-1 inference latency and training throughput against the number of layers, for ParaFormers of
  depth-1 branches (each strategy) and for the sequential ViT with as many layers of the same width;
- multi: the multi-process training steps of `paraformer.parallel.multibench`, through torchrun at each process
  count.

Times are medians over repeats, with the strategies interleaved repeat by repeat so that a slow spell of the
machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from .config import ConfigError, ModelConfig, results_dir
from .execution import STRATEGIES
from .model import ParaFormer
from .results import atomic_write_text, code_version


@dataclass(frozen=True)
class BenchProfile:
    name: str
    width: int  # token dimension of every model
    num_heads: int
    mlp_ratio: float
    image_size: int  # square RGB input
    patch_size: int
    strategy_models: tuple[str, ...]  # Para-F-m-n names timed under every strategy
    batches: tuple[int, ...]  # batch sizes of the strategy benchmark
    layer_counts: tuple[int, ...]  # n of Para-F-1-n and of the ViT-n in the layer benchmark
    branch_depths: tuple[int, ...]  # deeper branches M of Para-F-M-n (auto) also timed there, where M divides n
    train_batch: int  # batch of the training-throughput measurements
    repeats: int  # timed repeats per measurement (the median is kept)
    warmup: int  # untimed calls first (allocations, caches, auto's own measurement)

    def model(self, name: str, execution: str = "loop") -> ParaFormer:
        config = ModelConfig.from_name(name, image_size=self.image_size, patch_size=self.patch_size,
                                       width=self.width, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
        return ParaFormer(config, execution=execution)


BENCH_PROFILES = {
    "ci": BenchProfile("ci", width=32, num_heads=2, mlp_ratio=2.0, image_size=16, patch_size=4,
                       strategy_models=("1-4", "2-4"), batches=(1, 8), layer_counts=(1, 4), branch_depths=(2,), train_batch=8,
                       repeats=3, warmup=1),
    # The quick profile's model shape (width 64, 4 heads, MLP ratio 2, 32 px, patch 4).
    "quick": BenchProfile("quick", width=64, num_heads=4, mlp_ratio=2.0, image_size=32, patch_size=4,
                          strategy_models=("1-6", "1-24", "2-24", "3-24", "6-24"), batches=(1, 32, 128),
                          layer_counts=(1, 2, 4, 6, 12, 24, 48), branch_depths=(2, 3, 6), train_batch=128,
                          repeats=15, warmup=2),
    # The gpu and paper profiles' width (192, 3 heads, MLP ratio 4) at 32 px: GPU-sized.
    "gpu": BenchProfile("gpu", width=192, num_heads=3, mlp_ratio=4.0, image_size=32, patch_size=4,
                        strategy_models=("1-6", "1-24", "2-24", "3-24", "6-24"), batches=(1, 32, 128, 512),
                        layer_counts=(1, 2, 4, 6, 12, 24, 48, 96), branch_depths=(2, 3, 6, 12), train_batch=512,
                        repeats=15, warmup=3),
    "paper": BenchProfile("paper", width=192, num_heads=3, mlp_ratio=4.0, image_size=32, patch_size=4,
                          strategy_models=("1-6", "1-24", "2-24", "3-24", "6-24"), batches=(1, 32, 128, 512),
                          layer_counts=(1, 2, 4, 6, 12, 24, 48, 96), branch_depths=(2, 3, 6, 12), train_batch=512,
                          repeats=15, warmup=3),
}


def get_bench_profile(name: str) -> BenchProfile:
    if name not in BENCH_PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {sorted(BENCH_PROFILES)}")
    return BENCH_PROFILES[name]


def shown(path: Path) -> str:
    """A file named for the log without this machine's path to it: its folder and name (e.g. quick/layers.csv)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def device_label(device: torch.device) -> str:
    """The device in words, for every row and figure: the GPU's name, or the CPU's model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} thread(s)"


def steady_allocator() -> bool:
    """Keep freed memory in the process instead of handing it back to the system (glibc's allocator; elsewhere
    nothing happens and False is returned). By default glibc unmaps large freed blocks, and the next call
    page-faults them in again: that cost up to a third of a training step here, varied from run to run, and fell
    unevenly on whichever model ran after a memory-hungry one. Every benchmark process calls this first, so it
    applies to every method alike."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    trim_threshold, top_pad, mmap_threshold = -1, -2, -3  # mallopt parameter numbers (malloc.h)
    settings = {trim_threshold: 1 << 30, top_pad: 256 << 20, mmap_threshold: 32 << 20}
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings.items())


def timed(call: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call, waiting for the GPU's queued work before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def interleaved_medians(calls: dict[object, Callable[[], None]], repeats: int, warmup: int,
                        device: torch.device) -> dict[object, float]:
    """Median seconds of each call; every repeat runs every call once, in turn, starting one further along."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict = {name: [] for name in calls}
    names = list(calls)
    for repeat in range(repeats):  # the order rotates, so that no call always follows the same one
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            times[name].append(timed(calls[name], device))
    return {name: statistics.median(t) for name, t in times.items()}


def step(model: ParaFormer, images: torch.Tensor, mode: str) -> Callable[[], None]:
    """One inference forward pass, or one training step's forward and backward (no optimizer: it costs the
    same under every strategy)."""
    if mode == "inference":
        model.eval()

        def run():
            with torch.inference_mode():
                model(images)
    elif mode == "train":
        model.train()

        def run():
            model.zero_grad(set_to_none=True)
            model(images).logsumexp(1).sum().backward()
    else:
        raise ConfigError(f"mode={mode!r}; use 'inference' or 'train'")
    return run


def bench_strategies(profile: BenchProfile, device: torch.device, progress: bool = True) -> pd.DataFrame:
    """Every strategy on every (model, batch, mode); `auto_vs_best` = auto's time / the faster of loop and fused."""
    rows = []
    for name in profile.strategy_models:
        torch.manual_seed(0)
        models = {s: profile.model(name, s).to(device) for s in STRATEGIES}
        for model in models.values():
            model.load_state_dict(models["loop"].state_dict())
        for batch in profile.batches:
            images = torch.randn(batch, 3, profile.image_size, profile.image_size, device=device)
            for mode in ("inference", "train"):
                models["auto"].auto_choices.clear()  # auto measures afresh, during the warm-up calls
                seconds = interleaved_medians({s: step(m, images, mode) for s, m in models.items()},
                                              profile.repeats, profile.warmup, device)
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


def bench_layers(profile: BenchProfile, device: torch.device, progress: bool = True) -> pd.DataFrame:
    """Batch-1 inference latency and training throughput against layers n: Para-F-1-n under each strategy, the
    ViT with n layers (one branch: the strategies coincide, so it runs `loop`), and Para-F-M-n for the profile's
    deeper branch depths M (auto), all interleaved."""
    rows = []
    for layers in profile.layer_counts:
        torch.manual_seed(0)
        # (family, branch depth, strategy) -> model
        candidates = {("ParaFormer", 1, s): profile.model(f"1-{layers}", s).to(device) for s in STRATEGIES}
        candidates |= {("ParaFormer", depth, "auto"): profile.model(f"{depth}-{layers}", "auto").to(device)
                       for depth in profile.branch_depths if layers % depth == 0 and depth < layers}
        candidates[("ViT", layers, "loop")] = profile.model(f"{layers}-{layers}").to(device)
        for mode, batch in (("inference", 1), ("train", profile.train_batch)):
            images = torch.randn(batch, 3, profile.image_size, profile.image_size, device=device)
            seconds = interleaved_medians({key: step(m, images, mode) for key, m in candidates.items()},
                                          profile.repeats, profile.warmup, device)
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
    """`<root>/bench/<profile>`, where `root` is by default the profile's results folder: results/bench/quick for
    the committed benchmarks, results/<profile>/bench/<profile> for the others."""
    return (Path(root) if root is not None else results_dir(profile_name)) / "bench" / profile_name


def write_bench(df: pd.DataFrame, name: str, profile: BenchProfile, device: torch.device,
                root: Path | None = None) -> Path:
    """`bench_dir(profile)/<name>.csv`, every row stamped with the device, torch and code version."""
    df = df.assign(device=device_label(device), torch_version=torch.__version__, code_version=code_version(),
                   profile=profile.name)
    return atomic_write_text(df.to_csv(index=False), bench_dir(profile.name, root) / f"{name}.csv")


def bench_multi(profile: BenchProfile, processes: tuple[int, ...], root: Path | None = None) -> list[Path]:
    """`paraformer.parallel.multibench` through torchrun at each process count, on this machine. Returns the CSVs
    written."""
    env = dict(os.environ)  # with PARAFORMER_RESULTS as it is here, the ranks find the same folder as this process
    if not torch.cuda.is_available():
        env["OMP_NUM_THREADS"] = "1"  # what multibench sets anyway; saying it silences torchrun's warning
    elif max(processes) > torch.cuda.device_count():
        raise ConfigError(f"processes={max(processes)} needs as many GPUs, and this machine has "
                          f"{torch.cuda.device_count()}; pass --processes up to that")
    written = []
    for count in processes:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}",
                   "-m", "paraformer.parallel.multibench", "--profile", profile.name]
        if root is not None:
            command += ["--root", str(root)]
        shown_command = [shown(Path(part)) if part == str(root) else part for part in command[2:]]
        print(f"multi-process benchmark: {' '.join(shown_command)}", file=sys.stderr)
        done = subprocess.run(command, env=env)
        if done.returncode:
            raise RuntimeError(f"the {count}-process benchmark failed with exit code {done.returncode} "
                               f"(its output is above); run it by hand: {' '.join(command[2:])}")
        written += [bench_dir(profile.name, root) / f"multi_{kind}_{count}.csv" for kind in ("steps", "costs")]
    return written


def load(profile_name: str, root: Path | None = None) -> dict[str, pd.DataFrame]:
    """Every benchmark CSV of a profile, by file name without .csv (empty if none has been written)."""
    return {path.stem: pd.read_csv(path) for path in sorted(bench_dir(profile_name, root).glob("*.csv"))}


def to_measure(data: dict[str, pd.DataFrame], processes: tuple[int, ...] = (1, 2),
               device: torch.device | None = None) -> list[str]:
    """The benchmarks ("strategies", "layers", "multi") that have no CSV in `data` (from `load`), or whose CSV was
    measured on another kind of device than this machine's: those must be run here before their tables mean
    anything for this machine."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = device_label(device).split(",")[0]  # the device model, without the thread count

    def stale(names):
        return any(name not in data or {d.split(",")[0] for d in data[name]["device"]} != {here} for name in names)

    todo = [name for name in ("strategies", "layers") if stale([name])]
    if stale([f"multi_{kind}_{p}" for kind in ("steps", "costs") for p in processes]):
        todo.append("multi")
    return todo


def run(profile_name: str, only: tuple[str, ...] = ("strategies", "layers", "multi"),
        processes: tuple[int, ...] = (1, 2), device: torch.device | None = None, root: Path | None = None) -> None:
    """Run the benchmarks of a profile and write their CSVs (what `make bench` does)."""
    profile = get_bench_profile(profile_name)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    unknown = set(only) - {"strategies", "layers", "multi"}
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {sorted(unknown)}; choose from strategies, layers, multi")
    print(f"benchmark profile {profile.name} on {device_label(device)}: {asdict(profile)}", file=sys.stderr)
    steady_allocator()
    for name in only:
        if name == "multi":
            bench_multi(profile, processes, root)
        else:
            benchmark = bench_strategies if name == "strategies" else bench_layers
            print(f"wrote {shown(write_bench(benchmark(profile, device), name, profile, device, root))}",
                  file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paraformer.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=sorted(BENCH_PROFILES))
    parser.add_argument("--only", nargs="*", default=["strategies", "layers", "multi"],
                        choices=["strategies", "layers", "multi"])
    parser.add_argument("--processes", nargs="*", type=int, default=[1, 2],
                        help="process counts of the multi-process benchmark (one device each)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    run(args.profile, tuple(args.only), tuple(args.processes), torch.device(args.device))


if __name__ == "__main__":
    main()
