"""Training throughput against a peer: our training step beside timm's VisionTransformer of the same shape.

Why: every other speed figure of the suite compares our models with each other, so a slow ViT baseline would
flatter the ParaFormers and still leave the suite slow. timm's ViT is built with our input, width, heads, MLP ratio
and layers, hence the same parameter count (checked: a mismatch is refused). Timed is one full training step (zero
grad, forward, label-smoothed cross-entropy 0.1, backward, AdamW; fp32 on the CPU, bf16 autocast and fused AdamW
on CUDA with its remaining fp32 products in TF32 (`matmul_precision`), for both), ours and timm's in alternating
rounds after warm-up, the median of each kept, so that drift in the machine's speed hits both alike. FLOPs per
image count one forward and backward (FlopCounterMode; the optimizer's elementwise work left out, as usual for MFU),
against the matrix-product peak measured in the same run.
Our last layer of each branch computes the CLS row alone, hence fewer FLOPs (see docs/parallel.md; for
Para-F-1-12, `same_architecture` is False). The target, as data: our step at most `TARGET_RATIO` x timm's time on
every shape (`target_met` per row, `speed_target` over the table).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..core.config import ConfigError, ModelConfig
from ..core.files import atomic_write_text, remove_orphan_temporaries
from ..core.flops import count_flops
from ..core.model import ParaFormer
from ..core.provenance import code_version, device_name
from ..core.steps import precision, training_step
from ..core.timing import median_seconds, timed
from .speed import ModelShape, bench_dir, benchmark_matmul

TARGET_RATIO = 1.0  # our step time / timm's, at most, on every shape
TARGET = f"our step at most {TARGET_RATIO:g}x timm's time on every shape measured"
LABEL_SMOOTHING = 0.1


@dataclass(frozen=True)
class ThroughputSettings(ModelShape):
    models: tuple[str, ...]  # Para-F-m-n names, each timed against timm's ViT with as many layers
    batches: tuple[int, ...]
    repeats: int  # timed rounds, each one step of ours and one of timm's; the median of each is kept
    warmup: int  # untimed rounds first (allocations, kernel choice)
    matmul_size: int  # side of the square matrix product that measures the device's peak


def require_timm():
    """The timm module, or a one-line ConfigError saying how to install it."""
    try:
        import timm
        from timm.models import vision_transformer  # noqa: F401  (the class the peer is built from)
    except ImportError:
        raise ConfigError("the throughput benchmark needs timm: pip install timm "
                          "(or pip install -e \".[bench]\")") from None
    return timm


def timm_vit(config: ModelConfig) -> torch.nn.Module:
    """timm's VisionTransformer with `config`'s input, width, heads, MLP and layers: a class token read by the
    head (global_pool='token'), qkv bias, no dropout or drop-path, as ours."""
    require_timm()
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=config.image_size, patch_size=config.patch_size, in_chans=config.in_channels,
                             num_classes=config.num_classes, embed_dim=config.width, depth=config.num_layers,
                             num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, qkv_bias=True, class_token=True,
                             global_pool="token", drop_rate=0.0, pos_drop_rate=0.0, proj_drop_rate=0.0,
                             attn_drop_rate=0.0, drop_path_rate=0.0)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_same_parameters(config: ModelConfig, ours: torch.nn.Module, peer: torch.nn.Module) -> int:
    """The shared parameter count; a RuntimeError when the two differ (the peer would not be the same shape)."""
    mine, theirs = parameter_count(ours), parameter_count(peer)
    if mine != theirs:
        raise RuntimeError(f"{config.name} has {mine} parameters but timm's ViT-{config.num_layers} has {theirs}: "
                           "not the same shape, so the comparison is refused")
    return mine


def benchmark_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
    """One training step as a call: what the trainer does per minibatch (see the module docstring)."""
    model.train()
    fused = {"fused": True} if images.device.type == "cuda" else {}  # the CPU keeps AdamW's default
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused)
    return training_step(model, images, labels, optimizer, label_smoothing=LABEL_SMOOTHING)


def step_flops_per_image(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """FLOPs of one forward (with the loss) and backward of `model` on this batch, divided by the batch. The
    images need no gradient, so the patch projection's backward is half that of the other layers."""
    flops = count_flops(training_step(model, images, labels, label_smoothing=LABEL_SMOOTHING))
    model.zero_grad(set_to_none=True)
    return flops / images.shape[0]


def matmul_peak(device: torch.device, size: int, repeats: int = 5) -> float:
    """The device's measured matrix-product rate in FLOP/s: a size^3 product in fp32 on the CPU, in bf16 on CUDA
    (ten in a row per timing there, so that the synchronisation does not count); the best of `repeats`."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    products = 10 if device.type == "cuda" else 1

    def run() -> None:
        for _ in range(products):
            torch.mm(a, b)
    run()  # warm-up
    return products * 2 * size ** 3 / min(timed(run, device) for _ in range(repeats))


def meets_target(ratio: float) -> bool:
    return bool(ratio <= TARGET_RATIO)


def speed_target(table: pd.DataFrame) -> dict:
    """Whether the target is met on every row (of `model`, `batch`, `ratio`, `target_met`), on which, the worst."""
    worst = table.loc[table["ratio"].idxmax()]
    return {"target": TARGET, "met": bool(table["target_met"].all()), "rows": len(table),
            "rows_met": int(table["target_met"].sum()),
            "per_row": {f"{r.model} batch {r.batch}": bool(r.target_met) for r in table.itertuples()},
            "worst_ratio": float(worst["ratio"]), "worst_model": worst["model"], "worst_batch": int(worst["batch"])}


def measure(profile: ThroughputSettings, device: torch.device | str = "cpu", batches: tuple[int, ...] | None = None,
            repeats: int | None = None, progress: bool = True) -> pd.DataFrame:
    """One row per model and batch: ours against timm's ViT with as many layers (see the module docstring)."""
    timm = require_timm()
    device = torch.device(device)
    with benchmark_matmul(device) as fp32_matmul:  # the few fp32 products left under autocast: TF32 on CUDA
        table = _measure(profile, device, timm, batches, repeats or profile.repeats, progress)
    table.insert(table.columns.get_loc("precision") + 1, "matmul_precision", fp32_matmul)
    return table


def _measure(profile: ThroughputSettings, device: torch.device, timm, batches: tuple[int, ...] | None, repeats: int,
             progress: bool) -> pd.DataFrame:
    peak = matmul_peak(device, profile.matmul_size)
    rows = []
    for name in profile.models:
        config = profile.config(name)
        torch.manual_seed(0)
        ours, peer = ParaFormer(config).to(device), timm_vit(config).to(device)
        parameters = check_same_parameters(config, ours, peer)
        for batch in batches or profile.batches:
            images = torch.randn(batch, config.in_channels, config.image_size, config.image_size, device=device)
            labels = torch.randint(0, config.num_classes, (batch,), device=device)
            flops = {"our": step_flops_per_image(ours, images, labels),
                     "timm": step_flops_per_image(peer, images, labels)}
            steps = {"our": benchmark_step(ours, images, labels), "timm": benchmark_step(peer, images, labels)}
            seconds = median_seconds(steps, repeats, profile.warmup, device)
            row = {"profile": profile.name, "model": config.name, "peer": f"timm ViT-{config.num_layers}",
                   "same_architecture": config.branch_depth == config.num_layers, "parameters": parameters,
                   "timm_parameters": parameter_count(peer), "batch": batch,
                   "our_step_ms": 1e3 * seconds["our"], "timm_step_ms": 1e3 * seconds["timm"],
                   "our_images_per_s": batch / seconds["our"], "timm_images_per_s": batch / seconds["timm"],
                   "ratio": seconds["our"] / seconds["timm"], "target_ratio": TARGET_RATIO}
            row["target_met"] = meets_target(row["ratio"])
            for who in ("our", "timm"):
                rate = flops[who] * batch / seconds[who]
                row |= {f"{who}_gflops_per_image": flops[who] / 1e9, f"{who}_tflops_per_s": rate / 1e12,
                        f"{who}_mfu": rate / peak}
            rows.append(row)
            if progress:
                print(f"throughput {config.name} batch {batch}: ours {row['our_step_ms']:.1f} ms "
                      f"({row['our_images_per_s']:.0f} images/s), {row['peer']} {row['timm_step_ms']:.1f} ms: "
                      f"{row['ratio']:.2f}x ({'met' if row['target_met'] else 'NOT met'}), MFU ours "
                      f"{row['our_mfu']:.0%}, timm {row['timm_mfu']:.0%}", file=sys.stderr, flush=True)
            del steps  # the optimizers and their state
        del ours, peer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    table = pd.DataFrame(rows)
    return table.assign(matmul_peak_tflops_per_s=peak / 1e12, precision=precision(device),
                        device=device_name(device), threads=torch.get_num_threads(), torch_version=torch.__version__,
                        timm_version=timm.__version__, code_version=code_version(), repeats=repeats,
                        warmup=profile.warmup, measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def output_path(profile: str, root: Path | None = None) -> Path:
    """`results_dir(profile)/bench/<profile>/throughput.csv` (results/bench/quick/ for quick)."""
    return bench_dir(profile, root) / "throughput.csv"


MARKDOWN_COLUMNS = ["model", "peer", "batch", "our_step_ms", "timm_step_ms", "ratio", "target_met",
                    "our_images_per_s", "timm_images_per_s", "our_gflops_per_image", "timm_gflops_per_image",
                    "our_tflops_per_s", "our_mfu", "timm_mfu"]


def write(table: pd.DataFrame, path: Path) -> tuple[Path, Path]:
    """The CSV, and beside it a Markdown table of its main columns with the provenance and the verdict."""
    remove_orphan_temporaries(Path(path).parent)
    csv_path = atomic_write_text(table.to_csv(index=False), path)
    shown = table[MARKDOWN_COLUMNS].round(3).astype(str)
    lines = ["| " + " | ".join(MARKDOWN_COLUMNS) + " |", "|" + "---|" * len(MARKDOWN_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    first, target = table.iloc[0], speed_target(table)
    fp32 = f" (fp32 products in {first['matmul_precision']})" if "matmul_precision" in table else ""
    notes = [f"{first['device']}, {first['precision']}{fp32}, torch {first['torch_version']}, "
             f"timm {first['timm_version']}, code {first['code_version']}; median of {first['repeats']} alternating "
             f"rounds after {first['warmup']}; matmul peak {first['matmul_peak_tflops_per_s']:.3f} TFLOP/s, "
             "measured in the same run",
             f"target ({TARGET}): {'met' if target['met'] else 'NOT met'}, on {target['rows_met']} of "
             f"{target['rows']} rows; worst {target['worst_ratio']:.2f}x ({target['worst_model']}, batch "
             f"{target['worst_batch']})",
             "FLOPs per image are those of one forward and backward (FlopCounterMode); our last layer of each branch "
             "computes the CLS row alone, so ours are fewer than timm's even for the ViT; Para-F rows have the same "
             "parameters as the timm ViT but far less work"]
    text = "\n".join(["# Training throughput: ours against timm's VisionTransformer", "", *lines, "",
                      *(f"- {note}" for note in notes)])
    md_path = atomic_write_text(text + "\n", Path(path).with_suffix(".md"))
    return csv_path, md_path
