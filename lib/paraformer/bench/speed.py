"""Speed benchmarks (strategies, layers, multi, branch_processes: docs/parallel.md): `make bench` (python -m paraformer.tools.bench)
writes CSVs under results/bench/, and notebook 06 reads them. Every figure is a ratio of times measured in the same
run on the same device, never a timed test; times are medians over repeats, the models interleaved repeat by repeat
(`paraformer.core.timing`).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

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

BENCHMARKS = ("strategies", "layers", "multi", "branch_processes")


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


def matmul_precision(device: torch.device) -> str:
    """What `device`'s fp32 matrix products compute in now, for the benchmark rows: "tf32" or "fp32" on CUDA
    (cuBLAS's TF32 switch), and on the CPU what oneDNN is set to ("fp32" unless someone asked for "tf32" or "bf16")."""
    if device.type == "cuda":
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    setting = getattr(torch.backends.mkldnn.matmul, "fp32_precision", "none")
    return "fp32" if setting in ("none", "ieee") else setting


@contextmanager
def benchmark_matmul(device: torch.device) -> Iterator[str]:
    """The benchmarks' fp32 matrix products, chosen rather than inherited: on CUDA in TF32 (what fp32 training on a
    GPU uses, and torch leaves off by default), restored afterwards; on the CPU left as they are, so that its
    numbers stay those measured before. Yields `matmul_precision`, which every benchmark row records."""
    before = torch.backends.cuda.matmul.allow_tf32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield matmul_precision(device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


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


def settings_digest(*settings) -> str:
    """A short digest of the settings dataclasses a benchmark was timed at (`expected_digests`), stamped on every
    row of its CSV, so that a CSV timed at other settings (repeats, batches, shapes) is measured again
    (`to_measure`) instead of being read as current. The multi-process benchmark's `processes` is left out: it
    says which counts to measure, and each count has its own CSV."""
    fields = [{k: v for k, v in asdict(part).items() if k != "processes"} for part in settings]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def expected_digests(settings: BenchSettings, multi, claims) -> dict[str, str]:
    """Each benchmark's `settings_digest` at a profile's settings: `settings` (its `BenchSettings`), `multi` (its
    `MultiSettings`) and `claims` (the one-branch-per-process benchmark's `BranchProcessSettings`)."""
    return {"strategies": settings_digest(settings), "layers": settings_digest(settings),
            "multi": settings_digest(settings, multi), "branch_processes": settings_digest(settings, claims)}


def write_bench(df: pd.DataFrame, name: str, profile: str, device: torch.device, root: Path | None = None, *,
                settings: str, **device_columns) -> Path:
    """`bench_dir(profile)/<name>.csv`, rows stamped with the device (then `device_columns`), its fp32 matrix
    products' precision (`benchmark_matmul`), torch, code, profile and `settings` (`settings_digest`)."""
    df = df.assign(device=device_name(device), **device_columns, matmul_precision=matmul_precision(device),
                   torch_version=torch.__version__, code_version=code_version(), profile=profile,
                   settings_digest=settings)
    return atomic_write_text(df.to_csv(index=False), bench_dir(profile, root) / f"{name}.csv")


NOT_MEASURED = "multi_not_measured"  # `with_not_measured`'s table among the CSVs of `load`
MACHINE = "machine"  # `with_not_measured`'s description of this machine among them (its devices, one process each)


@dataclass(frozen=True)
class ProcessCounts:
    """The multi-process benchmark's process counts on this machine, one device each (a GPU; on the CPU, a core):
    those it measures, and those beyond its devices, which it reports as not measured here instead of failing."""

    measured: tuple[int, ...]
    not_measured: tuple[int, ...]
    devices: int  # how many this machine has
    unit: str  # "GPU" or "CPU core"
    device: torch.device  # their kind

    def status(self, processes: int) -> str:
        """A count's status in the tables: "measured", or "not measured here (1 GPU)" beyond this machine."""
        if processes not in self.not_measured:
            return "measured"
        return f"not measured here ({self.devices} {self.unit}{'' if self.devices == 1 else 's'})"


def devices_here(device: torch.device) -> tuple[int, str]:
    """How many processes of one device each this machine runs on `device`'s kind: its GPUs, or on the CPU the
    cores this process may use (the benchmark gives each process one thread); and what they are."""
    if device.type == "cuda":
        return torch.cuda.device_count(), "GPU"
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1), "CPU core"


def process_counts(multi, processes: tuple[int, ...] | None = None,
                   device: torch.device | None = None) -> ProcessCounts:
    """`processes` (None: `multi.processes`, the profile's) split into those this machine runs on `device` (None:
    the ranks', CUDA when present) and those it cannot."""
    requested = tuple(processes) if processes is not None else tuple(multi.processes)
    device = device or resolve_device("auto")
    devices, unit = devices_here(device)
    return ProcessCounts(tuple(p for p in requested if p <= devices), tuple(p for p in requested if p > devices),
                         devices, unit, device)


def with_not_measured(data: dict[str, pd.DataFrame], counts: ProcessCounts) -> dict[str, pd.DataFrame]:
    """`data` (from `load`) with, under `MACHINE`, this machine (`device_type`, `devices`: how many processes of
    one device each it runs, `unit`) and, under `NOT_MEASURED`, the counts it cannot run and no CSV holds: one row
    each (`processes`, `status`), which the tables and verdicts report in place of a measurement. Both are stamped
    like the CSVs with the device and code that could (not) measure them."""
    stamp = dict(device=device_name(counts.device), device_type=counts.device.type, code_version=code_version())
    machine = pd.DataFrame({"devices": [counts.devices], "unit": [counts.unit]}).assign(**stamp)
    missing = [p for p in counts.not_measured if f"multi_steps_{p}" not in data]
    if not missing:
        return {**data, MACHINE: machine}
    table = pd.DataFrame({"processes": missing, "status": [counts.status(p) for p in missing]})
    return {**data, MACHINE: machine, NOT_MEASURED: table.assign(**stamp)}


def bench_multi(settings: BenchSettings, multi, processes: tuple[int, ...] | None = None,
                root: Path | None = None) -> ProcessCounts:
    """`paraformer.bench.multi` (`multi`: its `MultiSettings`) through torchrun at each process count (None: the
    profile's) this machine has the devices for; the others are reported as not measured here."""
    env = dict(os.environ)  # with PARAFORMER_RESULTS as it is here, the ranks find the same folder as this process
    if not torch.cuda.is_available():
        env["OMP_NUM_THREADS"] = "1"  # what the benchmark sets anyway; saying it silences torchrun's warning
    counts = process_counts(multi, processes)
    for count in counts.not_measured:
        print(f"multi-process benchmark: {count} processes {counts.status(count)}, one device each",
              file=sys.stderr)
    given = json.dumps({"bench": asdict(settings), "multi": asdict(multi)})
    for count in counts.measured:
        print(f"multi-process benchmark: {count} process(es) of the {settings.name} settings", file=sys.stderr)
        torchrun("paraformer.bench.multi", count, given, root, env)
    return counts


def torchrun(module: str, count: int, given: str, root: Path | None, env: dict) -> None:
    """`module` on `count` processes of this machine (torchrun), passed the settings JSON `given`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}",
               "-m", module, "--settings", given]
    if root is not None:
        command += ["--root", str(root)]
    done = subprocess.run(command, env=env)
    if done.returncode:
        raise RuntimeError(f"the {count}-process benchmark {module} failed with exit code {done.returncode} (its "
                           f"output is above); run it by hand: {' '.join(command[2:])}")


def worker_settings(prog: str, description: str, parts: dict[str, type], argv: list[str] | None = None
                    ) -> tuple[Path | None, list]:
    """The command line of a benchmark that `torchrun` starts: --settings, the JSON of one settings dataclass per
    part of `parts` (its key in the JSON: its class), as `bench_multi` and `bench_branch_processes` write it, and
    --root. Returns the root and the settings, in the order of `parts`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    fields = ", ".join(f'"{key}": {kind.__name__} fields' for key, kind in parts.items())
    parser.add_argument("--settings", required=True, help=f"JSON {{{fields}}}, as paraformer.bench.speed writes it")
    parser.add_argument("--root", type=Path, default=None,
                        help="write into ROOT/bench/<profile>/ instead of the profile's results folder")
    args = parser.parse_args(argv)
    given = json.loads(args.settings)
    return args.root, [kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in given[key].items()})
                       for key, kind in parts.items()]  # JSON has lists where the dataclasses hold tuples


# The one-branch-per-process benchmark's settings (`paraformer.bench.branch_processes`, which imports this module).
PROCESSES = 2  # one branch per process: the most two devices give
MIN_REPEATS = 6  # the fewest rounds whose extremes bound the median at 95% (1 - 2 / 2^6 > 0.95)


@dataclass(frozen=True)
class BranchProcessSettings:
    """How long the one-branch-per-process benchmark times; its models have the profile's `BenchSettings` shape."""

    train_batch: int = 64  # the training step's batch (quick's multi-process batch)
    repeats: int = 41  # timed rounds, every one kept: at least 6 for a 95% interval of a median ratio
    warmup: int = 5  # untimed rounds first

    def __post_init__(self):
        if self.repeats < MIN_REPEATS:
            raise ConfigError(f"BranchProcessSettings.repeats={self.repeats}: a 95% interval of a median needs at "
                              f"least {MIN_REPEATS} rounds; use {MIN_REPEATS} or more")
        if self.warmup < 1 or self.train_batch < 1:
            raise ConfigError(f"BranchProcessSettings(warmup={self.warmup}, train_batch={self.train_batch}): both "
                              "must be at least 1")


def bench_branch_processes(settings: BenchSettings, claims=None, root: Path | None = None) -> ProcessCounts:
    """`paraformer.bench.branch_processes` (`claims`: its `BranchProcessSettings`, None: the defaults) through
    torchrun on 2 processes, where this machine has two devices; reported as not measured here otherwise."""
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["OMP_NUM_THREADS"] = "1"
    counts = process_counts(None, (PROCESSES,))
    if not counts.measured:
        print(f"one-branch-per-process benchmark: {PROCESSES} processes {counts.status(PROCESSES)}, one device each",
              file=sys.stderr)
        return counts
    claims = claims if claims is not None else BranchProcessSettings()
    print(f"one-branch-per-process benchmark: {PROCESSES} processes of the {settings.name} settings", file=sys.stderr)
    torchrun("paraformer.bench.branch_processes", PROCESSES,
             json.dumps({"bench": asdict(settings), "claims": asdict(claims)}), root, env)
    return counts


def default_claims(multi):
    """The one-branch-per-process benchmark's settings for a profile without its own: its defaults, training at
    the multi-process benchmark's batch."""
    return BranchProcessSettings(train_batch=multi.batch)


def load(profile_name: str, root: Path | None = None) -> dict[str, pd.DataFrame]:
    """Every benchmark CSV of a profile, by file name without .csv (empty if none has been written)."""
    return {path.stem: pd.read_csv(path) for path in sorted(bench_dir(profile_name, root).glob("*.csv"))}


def to_measure(data: dict[str, pd.DataFrame], processes: tuple[int, ...] = (1, 2),
               device: torch.device | None = None, digests: dict[str, str] | None = None) -> list[str]:
    """The benchmarks with no CSV in `data` (from `load`), one measured on another kind of device, or (where
    `digests`, from `expected_digests`, is given) one timed at other settings or at settings it does not record:
    those must be run here before their tables mean anything for this machine and profile."""
    device = device or resolve_device("auto")
    here = device_name(device).split(",")[0]  # the device model, without the thread count

    def stale(benchmark, names):
        def other_settings(df):
            return digests is not None and ("settings_digest" not in df
                                            or set(df["settings_digest"]) != {digests[benchmark]})
        return any(name not in data or {d.split(",")[0] for d in data[name]["device"]} != {here}
                   or other_settings(data[name]) for name in names)

    todo = [name for name in ("strategies", "layers") if stale(name, [name])]
    if stale("multi", [f"multi_{kind}_{p}" for kind in ("steps", "costs") for p in processes]):
        todo.append("multi")
    if stale("branch_processes", ["branch_processes"]):
        todo.append("branch_processes")
    return todo


def run(settings: BenchSettings, multi, only: tuple[str, ...] = BENCHMARKS, processes: tuple[int, ...] | None = None,
        device: torch.device | None = None, root: Path | None = None, claims=None) -> None:
    """Run the benchmarks `only` of a profile's settings and write their CSVs (what `make bench` does); the
    multi-process one at `processes` (None: the profile's), where this machine has the devices; the
    one-branch-per-process one with `claims` (its `BranchProcessSettings`, None: the defaults at the
    multi-process benchmark's batch) where it has two."""
    device = device or resolve_device("auto")
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHMARKS)}")
    print(f"benchmark profile {settings.name} on {device_name(device)}: {asdict(settings)}", file=sys.stderr)
    steady_allocator()
    with benchmark_matmul(device):
        for name in only:
            if name == "multi":  # its processes choose their own (bench.multi)
                bench_multi(settings, multi, processes, root)
            elif name == "branch_processes":
                bench_branch_processes(settings, claims or default_claims(multi), root)
            else:
                benchmark = bench_strategies if name == "strategies" else bench_layers
                path = write_bench(benchmark(settings, device), name, settings.name, device, root,
                                   settings=settings_digest(settings))
                print(f"wrote {shown(path)}", file=sys.stderr)
