"""Speed benchmarks: `make bench` (python -m paraformer.bench) writes CSVs under results/bench/, and notebook 06
reads them. Every figure is a ratio of times measured in the same run on the same device, never a timed test.

- strategies: the branch execution strategies of `paraformer.execution` (loop, fused, auto) per model, batch
  size and mode (inference, or a training step: forward and backward);
- layers: batch-1 inference latency and training throughput against the number of layers, for ParaFormers of
  depth-1 branches (each strategy) and for the sequential ViT with as many layers of the same width.

Times are medians over repeats, with the strategies interleaved repeat by repeat so that a slow spell of the
machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
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
    train_batch: int  # batch of the training-throughput measurements
    repeats: int  # timed repeats per measurement (the median is kept)
    warmup: int  # untimed calls first (allocations, caches, auto's own measurement)

    def model(self, name: str, execution: str = "loop") -> ParaFormer:
        config = ModelConfig.from_name(name, image_size=self.image_size, patch_size=self.patch_size,
                                       width=self.width, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
        return ParaFormer(config, execution=execution)


BENCH_PROFILES = {
    "ci": BenchProfile("ci", width=32, num_heads=2, mlp_ratio=2.0, image_size=16, patch_size=4,
                       strategy_models=("1-4", "2-4"), batches=(1, 8), layer_counts=(1, 4), train_batch=8,
                       repeats=3, warmup=1),
    # The quick profile's model shape (width 64, 4 heads, MLP ratio 2, 32 px, patch 4).
    "quick": BenchProfile("quick", width=64, num_heads=4, mlp_ratio=2.0, image_size=32, patch_size=4,
                          strategy_models=("1-6", "1-24", "2-24", "3-24", "6-24"), batches=(1, 32, 128),
                          layer_counts=(1, 2, 4, 6, 12, 24, 48), train_batch=128, repeats=9, warmup=2),
    # The paper profile's width (192, 3 heads, MLP ratio 4) at its 32 px input: GPU-sized.
    "paper": BenchProfile("paper", width=192, num_heads=3, mlp_ratio=4.0, image_size=32, patch_size=4,
                          strategy_models=("1-6", "1-24", "2-24", "3-24", "6-24"), batches=(1, 32, 128, 512),
                          layer_counts=(1, 2, 4, 6, 12, 24, 48, 96), train_batch=512, repeats=15, warmup=3),
}


def get_bench_profile(name: str) -> BenchProfile:
    if name not in BENCH_PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {sorted(BENCH_PROFILES)}")
    return BENCH_PROFILES[name]


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


def interleaved_medians(calls: dict[str, Callable[[], None]], repeats: int, warmup: int,
                        device: torch.device) -> dict[str, float]:
    """Median seconds of each call; every repeat runs every call once, in turn."""
    def timed(call) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(timed(call))
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
                seconds = interleaved_medians({s: step(m, images, mode) for s, m in models.items()},
                                              profile.repeats, profile.warmup, device)
                best = min(seconds["loop"], seconds["fused"])
                chosen = sorted(set(models["auto"]._auto.choices.values()))
                for strategy, t in seconds.items():
                    rows.append({"model": f"Para-F-{name}", "batch": batch, "mode": mode, "strategy": strategy,
                                 "seconds": t, "vs_best_of_loop_fused": t / best,
                                 "auto_chose": "+".join(chosen) if strategy == "auto" else ""})
                if progress:
                    print(f"strategies {name} batch {batch} {mode}: " + ", ".join(
                        f"{s} {1e3 * t:.2f} ms" for s, t in seconds.items()), file=sys.stderr)
    return pd.DataFrame(rows)


def bench_layers(profile: BenchProfile, device: torch.device, progress: bool = True) -> pd.DataFrame:
    """Batch-1 inference latency and training throughput against layers: Para-F-1-n under each strategy, and
    the ViT with n layers (one branch: the strategies coincide, so it runs `loop`)."""
    rows = []
    for layers in profile.layer_counts:
        torch.manual_seed(0)
        candidates = {f"Para-F-1-{layers} {s}": profile.model(f"1-{layers}", s).to(device) for s in STRATEGIES}
        candidates[f"ViT-{layers}"] = profile.model(f"{layers}-{layers}").to(device)
        for mode, batch in (("inference", 1), ("train", profile.train_batch)):
            images = torch.randn(batch, 3, profile.image_size, profile.image_size, device=device)
            seconds = interleaved_medians({label: step(m, images, mode) for label, m in candidates.items()},
                                          profile.repeats, profile.warmup, device)
            for label, t in seconds.items():
                family, _, strategy = label.partition(" ")
                rows.append({"family": "ViT" if family.startswith("ViT") else "ParaFormer m=1",
                             "strategy": strategy or "loop", "num_layers": layers, "mode": mode, "batch": batch,
                             "seconds": t, "images_per_second": batch / t})
            if progress:
                print(f"layers {layers} {mode}: " + ", ".join(f"{k} {1e3 * t:.2f} ms" for k, t in seconds.items()),
                      file=sys.stderr)
    return pd.DataFrame(rows)


def write_bench(df: pd.DataFrame, name: str, profile: BenchProfile, device: torch.device,
                root: Path | None = None) -> Path:
    """results/bench/<profile>/<name>.csv, every row stamped with the device, torch and code version."""
    df = df.assign(device=device_label(device), torch_version=torch.__version__, code_version=code_version(),
                   profile=profile.name)
    folder = (Path(root) if root is not None else results_dir()) / "bench" / profile.name
    return atomic_write_text(df.to_csv(index=False), folder / f"{name}.csv")


BENCHMARKS = {"strategies": bench_strategies, "layers": bench_layers}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paraformer.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=sorted(BENCH_PROFILES))
    parser.add_argument("--only", nargs="*", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    profile, device = get_bench_profile(args.profile), torch.device(args.device)
    print(f"benchmark profile {profile.name} on {device_label(device)}: {asdict(profile)}", file=sys.stderr)
    for name in args.only:
        path = write_bench(BENCHMARKS[name](profile, device), name, profile, device)
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
