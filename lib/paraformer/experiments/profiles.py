"""The four profiles (`ci`, `quick`, `gpu`, `paper`; docs/profiles.md says what each is for), each everything it
runs in one place (the dataclasses are in `settings`). Hyperparameters the papers omit are our choices and are
stated here. `get_profile(name)` returns a profile and changes nothing else: where its results go is
`core.paths.results_dir` of its name.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..bench.convergence import ConvergenceSettings
from ..bench.multi import MultiSettings
from ..bench.speed import BenchSettings
from ..bench.throughput import ThroughputSettings
from ..core.config import ConfigError, Recipe
from ..core.steps import resolve_device
from .settings import (Comparison, ExpansionPlan, FinetuneSettings, LayerParallelSettings, Profile, Scale)

_ci = Scale(
    name="ci", datasets=("fashion_mnist",), n_train=512, n_test=200, width=32, num_heads=2, mlp_ratio=2.0,
    dropout=0.0, recipe=Recipe(epochs=4, batch_size=32, lr=2e-3, weight_decay=0.05, warmup_epochs=0.5, augment=()),
    n_test_per_epoch=100, lr_grid=(2e-3, 4e-3))
# Small batches give more optimizer steps for the same CPU time, and in 10 epochs augmentation only slows
# learning: on Para-F-1-1, batch 32 without augmentation reached 73.7% (Fashion-MNIST) and 36.0% (CIFAR-10)
# against 65.9% and 32.2% at batch 64 with flips (measured 2026-11-23).
# To keep `make reproduce` within an hour on a 2-core CPU from an empty run cache, with three seeds, the
# learning-rate grid and full test sets, what was cut (never seeds or test images): 4 epochs instead of 10 (at 5,
# with the arms issues 26 and 29 added, a whole run took 80 minutes on an AMD EPYC); CIFAR-10 alone, the dataset of
# the papers' tables (Fashion-MNIST's Table 2 sweep runs at the `cpu` profile, on all of it). quick measures early
# training; `cpu` is where the models have learned.
_quick = Scale(
    name="quick", datasets=("cifar10",), n_train=2500, n_test=None, width=64, num_heads=4,
    mlp_ratio=2.0, dropout=0.0, recipe=Recipe(epochs=4, batch_size=32, lr=2e-3, weight_decay=0.05,
                                              warmup_epochs=1.0, augment=()),
    seeds=(0, 1, 2), n_test_per_epoch=1000, lr_grid=(1e-3, 2e-3, 4e-3))
# Where the models have learned, on a 2-core CPU in about 4 hours (once, resumable through the run cache): all of
# Fashion-MNIST (54,000 train after 10% held out for validation, all 10,000 test images) at its native 28 px with patch
# 7 (16 tokens), width 64, three seeds. Para-F-1-6 reached 88.5% after 8 epochs there (against 69.5% at quick, and
# 84% for a logistic regression on the same pixels; measured 2026-12 by a science review). Notebooks 01 (Table 2's
# sweep) and 03 (ParaFormer against ViT, the methods, the authors' steps) only: the estimate
# (`python -m paraformer.tools.estimate --profile cpu`) puts Table 3's 24-layer sweep alone near the whole budget.
_cpu = Scale(
    name="cpu", datasets=("fashion_mnist",), n_train=None, n_test=None, width=64, num_heads=4, mlp_ratio=2.0,
    dropout=0.0, recipe=Recipe(epochs=8, batch_size=128, lr=2e-3, weight_decay=0.05, warmup_epochs=1.0, augment=()),
    patch_size={28: 7, 32: 4}, seeds=(0, 1, 2), val_fraction=0.1, n_test_per_epoch=2000, lr_grid=(1e-3, 2e-3, 4e-3))
# Between quick and paper: every image of the offline datasets at native size, the authors' width, one seed. A
# short from-scratch ViT recipe: AdamW at lr 1e-3 for batch 512 (the usual 5e-4 per 256 images, halved for
# stability without a long warmup), cosine decay, label smoothing 0.1, random crop (4 px zero padding) + flip,
# batched on the device. RandAugment, mixup and dropout are left out: they pay off over hundreds of epochs, not
# 40, and RandAugment runs image by image. Epochs are set by the time budget (the estimate above).
_gpu = Scale(
    name="gpu", datasets=("cifar10", "fashion_mnist"), n_train=None, n_test=None, width=192, num_heads=3,
    mlp_ratio=4.0, dropout=0.0, recipe=Recipe(epochs=40, batch_size=512, lr=1e-3, weight_decay=0.05,
                                              warmup_epochs=3.0, augment=("flip", "crop"), compile=True),
    lr_grid=(5e-4, 1e-3, 2e-3))
# The 2024 paper gives only "500 epochs, ViT-style patches and position encoding", and (its Table 1) holds 5% of
# each training set out for validation, which we do too. Width, heads and dropout follow the authors' public
# ParaFormer code (width 192, 3 heads, dropout 0.1); the optimizer recipe is a standard from-scratch ViT recipe.
# RandAugment is left out so that data loading does not dominate GPU time; add it to Recipe.augment to test it.
_paper = Scale(
    name="paper", datasets=("cifar10", "cifar100", "stl10", "oxford_pets", "flowers102"), n_train=None,
    n_test=None, width=192, num_heads=3, mlp_ratio=4.0, dropout=0.1, val_fraction=0.05,
    recipe=Recipe(epochs=500, batch_size=128, lr=5e-4, weight_decay=0.05, warmup_epochs=5.0, augment=("flip", "crop")),
    lr_grid=(2.5e-4, 5e-4, 1e-3))

# Notebook 07: hyperparameters the paper omits follow the ViT paper's fine-tuning recipe (SGD with momentum 0.9,
# no weight decay, gradient clipping at norm 1, cosine decay) with a learning rate of 0.01 and batch 128.
_finetune_recipe = Recipe(epochs=10, batch_size=128, optimizer="sgd", lr=0.01, weight_decay=0.0, warmup_epochs=0.5,
                          label_smoothing=0.0, grad_clip=1.0, augment=("flip", "crop"))
# The benchmarks' model shapes: tiny for ci; the authors' for the gpu and paper benchmarks and throughput vs timm.
_ci_shape = dict(width=32, num_heads=2, mlp_ratio=2.0, image_size=16, patch_size=4)
_authors_shape = dict(width=192, num_heads=3, mlp_ratio=4.0, image_size=32, patch_size=4)
_gpu_bench = dict(**_authors_shape, strategy_models=("1-6", "1-24", "2-24", "3-24", "6-24"), batches=(1, 32, 128, 512),
                  layer_counts=(1, 2, 4, 6, 12, 24, 48, 96), branch_depths=(2, 3, 6, 12), train_batch=512,
                  repeats=15, warmup=3)
_timm_peers = dict(**_authors_shape, models=("6-6", "12-12", "1-12"), batches=(128, 512))
_gpu_multi = MultiSettings("1-24", "24-24", batch=256, micro_batches=(1, 2, 4, 8, 16), steps=20, warmup=5)
# MGRIT's convergence table is computed in one process on the CPU: small enough for every profile but ci.
_convergence = ConvergenceSettings(depths=(8, 16, 32, 64), iterations=(0, 1, 2, 3), levels=(2, 3),
                                   coarsenings=(2, 4), relaxations=("F", "FCF"), steps=("1", "1/N"))

PROFILES = {
    "ci": Profile(
        name="ci", scale=_ci,
        comparison=Comparison(replace(_ci, seeds=(0, 1), val_fraction=0.1), "1-4", authors_datasets=("fashion_mnist",)),
        expansion=ExpansionPlan("fashion_mnist", 2, 1, (0,), growth_start=1, growth_step=1, growth_steps=2,
                                growth_epochs=2),
        bench=BenchSettings("ci", **_ci_shape, strategy_models=("1-4", "2-4"), batches=(1, 8), layer_counts=(1, 4),
                            branch_depths=(2,), train_batch=8, repeats=3, warmup=1),
        multi=MultiSettings("1-4", "4-4", batch=8, micro_batches=(1, 2), steps=3, warmup=1, mgrit_coarsening=2),
        finetune=FinetuneSettings("ci", ("fashion_mnist",), n_train=256, n_test=100, pretrained="never",
                                  random_width=16, random_heads=2,
                                  recipe=replace(_finetune_recipe, epochs=2, batch_size=32, augment=())),
        layer_parallel=LayerParallelSettings(_ci, "fashion_mnist", "mnist", depth=8, coarsening=2, check_every=5),
        convergence=ConvergenceSettings(depths=(8, 16), iterations=(0, 1, 2), levels=(2,), coarsenings=(4,),
                                        relaxations=("F",), steps=("1", "1/N")),
        # tiny, for the unit tests: seconds
        throughput=ThroughputSettings("ci", **_ci_shape, models=("2-2", "1-2"), batches=(8,), repeats=3, warmup=1,
                                      matmul_size=256),
    ),
    "quick": Profile(
        name="quick", scale=_quick,
        # Six depth-1 branches against ViT-6: the authors' variant costs m(m+1)/2 + m branch passes per minibatch,
        # so a few branches keep 5 methods x 3 seeds, their learning-rate grids, the compute- and steps-matched ViTs
        # within about 15 minutes here. Not the authors' recipe: its batch of 500 leaves 20 optimizer steps on 2,500
        # images, and its models stayed near chance (14-18% on CIFAR-10 at 5 epochs); `ci` runs it, `gpu` tests it.
        comparison=Comparison(replace(_quick, val_fraction=0.1), "1-6", authors_datasets=()),
        # CIFAR-10 in 5 tasks of 2 classes, two branches per task (10 branches at the end): the common small split,
        # sized like the other runs (250 training images per class).
        expansion=ExpansionPlan("cifar10", 2, 2, (0, 1, 2), growth_start=2, growth_step=2, growth_steps=3,
                                growth_epochs=4),
        bench=BenchSettings("quick", width=64, num_heads=4, mlp_ratio=2.0, image_size=32, patch_size=4,
                            strategy_models=("1-6", "1-24", "2-24", "3-24", "6-24"), batches=(1, 32, 128),
                            layer_counts=(1, 2, 4, 6, 12, 24), branch_depths=(2, 3, 6), train_batch=128,
                            repeats=5, warmup=1),
        # 5 timed steps after 1: the medians of a re-measure (a new CPU kind, new settings) within about 5 minutes
        multi=MultiSettings("1-24", "24-24", batch=64, micro_batches=(1, 2, 4, 8), steps=5, warmup=1),
        # ViT-B/16 at 224 px trains at a few images per second on a 2-core CPU: with ImageNet weights this is a GPU
        # job (minutes); with the random stand-in it runs here in a few minutes: three seeds on every test image,
        # so, to fit the suite's hour, CIFAR-10 alone and 3 epochs instead of the paper's 10 (random weights test
        # no claim of the paper: its rows are "not testable here" until pretrained weights are present).
        finetune=FinetuneSettings("quick", ("cifar10",), n_train=1000, n_test=None, pretrained="auto",
                                  recipe=replace(_finetune_recipe, epochs=3, batch_size=32, augment=()),
                                  seeds=(0, 1, 2), n_test_per_epoch=1000),
        # fine-tunes as long as the pre-training: at 2 epochs a ViT at h = 1/8 had not settled on MNIST (22-42%)
        layer_parallel=LayerParallelSettings(_quick, "fashion_mnist", "mnist", depth=8, coarsening=2,
                                             finetune_epochs=5),
        convergence=_convergence,
        # a 2-core CPU: about 5 minutes (batch 512 of a ViT-12 takes seconds per step there)
        throughput=ThroughputSettings("quick", **_timm_peers, repeats=5, warmup=1, matmul_size=2048),
    ),
    "gpu": Profile(
        name="gpu", scale=_gpu,
        # One seed: the paired comparison over seeds is quick's job; at full scale one seed's test-set noise is small.
        comparison=Comparison(replace(_gpu, val_fraction=0.1), "1-6", authors_datasets=("cifar10",),
                              authors_image_size=224),
        # the quick split at full CIFAR-10 scale (5,000 training images per class), one seed
        expansion=ExpansionPlan("cifar10", 2, 2, (0,), growth_start=2, growth_step=2, growth_steps=3, growth_epochs=10),
        bench=BenchSettings("gpu", **_gpu_bench),
        multi=_gpu_multi,
        # Whole offline datasets on one GPU. The GPU machines have no internet: unless torchvision's ViT-B/16
        # weights are in its cache there, this runs the random stand-in, at the authors' width (192, 3 heads).
        finetune=FinetuneSettings("gpu", ("cifar10", "fashion_mnist"), n_train=None, n_test=None, pretrained="auto",
                                  random_width=192, random_heads=3, recipe=replace(_finetune_recipe, batch_size=512)),
        # the paper's regime: deeper, coarsening 4 (TorchBraid's default; exact after 7 cycles), the full datasets
        layer_parallel=LayerParallelSettings(_gpu, "fashion_mnist", "mnist", depth=32, coarsening=4,
                                             finetune_epochs=10),
        convergence=_convergence,
        throughput=ThroughputSettings("gpu", **_timm_peers, repeats=30, warmup=10, matmul_size=8192),
    ),
    "paper": Profile(
        name="paper", scale=_paper,
        # The 2025 paper's datasets, and the authors' public code's shape and length: 8 branches of depth 2, 300
        # epochs, 10% of the training set held out. The code upsamples images to 224 px with patch 16; we keep the
        # native size with patch 4 (8 x 8 or 7 x 7 patches), which suits 32 px images better.
        comparison=Comparison(replace(_paper, datasets=("cifar10", "cifar100", "fashion_mnist"), seeds=(0, 1, 2),
                                      val_fraction=0.1, recipe=replace(_paper.recipe, epochs=300)), "2-16",
                              authors_datasets=("cifar10", "cifar100", "fashion_mnist"), authors_image_size=224),
        # CIFAR-100 in 10 tasks of 10 classes: the usual class-incremental split; growth steps of 4 branches for 100
        # epochs each (a fifth of the recipe) are our choice, untested at that scale.
        expansion=ExpansionPlan("cifar100", 10, 2, (0, 1, 2), growth_start=4, growth_step=4, growth_steps=3,
                                growth_epochs=100),
        bench=BenchSettings("paper", **_gpu_bench),
        multi=_gpu_multi,
        # The paper's datasets, whole, 10 epochs, 5% held out as in its Table 1. Pets and Flowers are decoded at
        # 224 px rather than fitted to 96 px first.
        finetune=FinetuneSettings("paper", ("cifar10", "cifar100", "stl10", "oxford_pets", "flowers102"),
                                  n_train=None, n_test=None, pretrained="required", val_fraction=0.05,
                                  recipe=_finetune_recipe, decode_size={"oxford_pets": 224, "flowers102": 224},
                                  seeds=(0, 1, 2)),
        layer_parallel=LayerParallelSettings(_paper, "fashion_mnist", "mnist", depth=32, coarsening=4,
                                             finetune_epochs=10),
        convergence=_convergence,
        throughput=None,
    ),
}

# cpu: quick's settings for the notebooks it does not run (they are never read at cpu)
PROFILES = {**{name: PROFILES[name] for name in ("ci", "quick")},
            "cpu": replace(PROFILES["quick"], name="cpu", scale=_cpu, notebooks=("01", "03", "99"),
                           comparison=Comparison(_cpu, "1-6", authors_datasets=())),
            **{name: PROFILES[name] for name in ("gpu", "paper")}}


def get_profile(name: str) -> Profile:
    """The profile called `name` (a value: nothing else changes)."""
    if not isinstance(name, str) or name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]


# Sized for GPUs: on the CPU, gpu alone would take about 200 hours. Device "auto" refuses the CPU for them unless it is
# asked for (`core.steps.resolve_device`): ci and quick keep "auto" -> CPU.
GPU_PROFILES = ("gpu", "paper")


def profile_device(name: str, device: str = "auto") -> torch.device:
    """The device a profile's runs and benchmarks take: `device` ("auto", "cpu", "cuda", ...), except that at the
    GPU profiles "auto" without usable CUDA is refused in one line (`NoCudaError`) unless PARAFORMER_ALLOW_CPU=1."""
    get_profile(name)
    return resolve_device(device, f"profile {name!r}" if name in GPU_PROFILES else None)
