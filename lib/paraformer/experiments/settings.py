"""What a profile is made of: one dataclass per experiment, and `Profile`, which holds one of each.

`paraformer.experiments.profiles` holds the four profiles (ci, quick, gpu, paper) built from these; every notebook
module reads its own part of the profile it is given (`Profile.comparison` for notebooks 03-04, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..bench.convergence import ConvergenceSettings
from ..bench.multi import MultiSettings
from ..bench.speed import BenchSettings
from ..bench.throughput import ThroughputSettings
from ..core.config import AUTHORS_MODEL, MGRIT_ADAPTATIONS, ConfigError, DataConfig, ModelConfig, Recipe
from ..core.data import DATASETS
from ..parallel.mgrit import MGRITConfig, check_layout


def _images(settings: "Scale | FinetuneSettings") -> str:
    """The data subset, as `Scale.describe` and `FinetuneSettings.describe` say it."""
    curves = f" ({settings.n_test_per_epoch} of them for the per-epoch curves)" if settings.n_test_per_epoch else ""
    held_out = f" ({settings.val_fraction:.0%} of train held out for validation)" if settings.val_fraction else ""
    return f"{settings.n_train or 'all'} train / {settings.n_test or 'all'} test images{curves}{held_out}"


@dataclass(frozen=True)
class Scale:
    """How big a profile's runs are (notebooks 01-02, and the base of every other experiment)."""

    name: str  # the profile's
    datasets: tuple[str, ...]  # datasets the sweep tables run on
    n_train: int | None  # training images per dataset (class-stratified subset); None = all
    n_test: int | None  # test images per dataset; None = all
    width: int  # token dimension of every model
    num_heads: int  # attention heads of every model
    mlp_ratio: float  # MLP hidden size / width
    dropout: float  # dropout of every model
    recipe: Recipe  # training recipe of every run
    patch_size: dict = field(default_factory=lambda: {28: 4, 32: 4, 96: 8, 224: 16})  # image size -> patch size
    seeds: tuple[int, ...] = (0,)  # training seeds per configuration
    val_fraction: float = 0.0  # share of the training images held out as validation (not trained on)
    n_test_per_epoch: int | None = None  # test images behind the per-epoch curves; None = all (final: always all)
    depth_datasets: tuple[str, ...] | None = None  # Table 3's datasets (notebook 02); None = `datasets`
    # learning rates each model family is tuned over on the validation split (notebook 03; one seed, then the
    # chosen rate runs every seed); () = no tuning, the recipe's rate
    lr_grid: tuple[float, ...] = ()
    # of every model: "pre-norm", ours; "authors", the authors' model (ModelConfig.as_authors: their residual,
    # attention, biases and init)
    residual: str = "pre-norm"
    image_size: int | None = None  # resize every image to this size when decoding; None = native
    # the models' input size where the recipe resizes each batch (Recipe.augment "resize"); None = the images' size
    input_size: int | None = None

    def data_config(self, dataset: str) -> DataConfig:
        return DataConfig(dataset=dataset, n_train=self.n_train, n_test=self.n_test, val_fraction=self.val_fraction,
                          n_test_per_epoch=self.n_test_per_epoch, image_size=self.image_size)

    @property
    def depth_sweep_datasets(self) -> tuple[str, ...]:
        return self.depth_datasets or self.datasets

    def model_config(self, name: str, data) -> ModelConfig:
        """Para-F-m-n (`name` = "m-n") sized for this profile and fitted to `data` (anything with image_size,
        in_channels and num_classes: loaded images, or a dataset's registry entry)."""
        size = self.input_size or data.image_size
        if size not in self.patch_size:
            raise ConfigError(f"profile {self.name!r} has no patch size for {size}px images; "
                              f"add it to Scale.patch_size (known: {sorted(self.patch_size)})")
        model = AUTHORS_MODEL if self.residual == "authors" else {"residual": self.residual}
        return ModelConfig.from_name(
            name, image_size=size, in_channels=data.in_channels, num_classes=data.num_classes,
            patch_size=self.patch_size[size], width=self.width, num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio, dropout=self.dropout, **model,
        )

    def describe(self) -> str:
        heads = f"{self.num_heads} heads of 64 (the authors' model)" if self.residual == "authors" else \
            f"{self.num_heads} heads"
        return (f"profile `{self.name}`: {_images(self)} per dataset; width {self.width}, {heads}, "
                f"MLP ratio {self.mlp_ratio:g}, dropout {self.dropout:g}; {self.recipe.describe()}; "
                f"seeds {list(self.seeds)}")


AUTHORS_HEADS, AUTHORS_DROPOUT = 3, 0.1  # their training script's --num_heads and --dropout / --emb_dropout


@dataclass(frozen=True)
class Comparison:
    """A ParaFormer trained by every method of `paraformer.core.progressive`, against the ViT with as many layers
    (so as many parameters) under the same recipe (notebooks 03-04). A validation split is held out so that
    compression (notebook 04) chooses branches on it, never on the test split; both notebooks then share the runs."""

    scale: Scale
    paraformer: str  # Para-F-m-n name of the ParaFormer; the ViT is Para-F-n-n
    authors_datasets: tuple[str, ...] = ()  # where the authors' recipe is run too (`authors_variant`)
    authors_image_size: int | None = None  # their 224 px (patch 16), where the profile can afford it; None = native

    @property
    def vit(self) -> str:
        layers = ModelConfig.from_name(self.paraformer).num_layers
        return f"{layers}-{layers}"

    def authors_variant(self) -> "Comparison":
        """The same comparison under the authors' exact recipe and model (`Recipe.authors`, `ModelConfig.as_authors`:
        their residual y = LN(x) + f(LN(x)), 3 heads of 64, no qkv bias, their init, dropout 0.1), their images
        resized to 224 px with patch 16 after their RandAugment where `authors_image_size` says so, for the same
        number of epochs, on `authors_datasets`: what separates our recipe's effect from the method's."""
        base, size = self.scale.recipe, self.authors_image_size
        scale = replace(self.scale, datasets=self.authors_datasets, residual="authors", lr_grid=(),
                        num_heads=AUTHORS_HEADS, dropout=AUTHORS_DROPOUT,
                        recipe=Recipe.authors(base.epochs, device=base.device, compile=base.compile),
                        image_size=None, input_size=size,
                        patch_size={**self.scale.patch_size, **({size: 16} if size else {})})
        return replace(self, scale=scale)


@dataclass(frozen=True)
class ExpansionPlan:
    """Class-incremental learning and capacity growth (notebook 05; the protocol is ours: `expansion`)."""

    dataset: str  # the class-incremental and growth experiments' dataset
    classes_per_task: int  # classes each task brings (the dataset's classes are split in label order)
    branches_per_task: int  # depth-1 branches each task adds
    seeds: tuple[int, ...]  # training seeds
    growth_start: int  # branches of the first model of the growth experiment
    growth_step: int  # branches added at each growth step
    growth_steps: int  # number of growth steps
    growth_epochs: int  # epochs each growth step trains its new branches

    def tasks(self) -> list[tuple[int, ...]]:
        total = DATASETS[self.dataset].num_classes
        if total % self.classes_per_task:
            raise ConfigError(f"ExpansionPlan.classes_per_task={self.classes_per_task} does not divide the "
                              f"{total} classes of {self.dataset}")
        return [tuple(range(start, start + self.classes_per_task)) for start in range(0, total, self.classes_per_task)]


PRETRAINED_MODES = ("auto", "required", "never")


@dataclass(frozen=True)
class FinetuneSettings:
    """Fine-tuning one 12-layer ViT's weights, as the sequential ViT and regrouped into branches (notebook 07)."""

    name: str  # the profile's
    datasets: tuple[str, ...]  # datasets fine-tuned on
    n_train: int | None  # training images per dataset (stratified subset); None = all
    n_test: int | None  # test images per dataset; None = all
    recipe: Recipe  # the fine-tuning recipe of every run
    # "auto": ImageNet weights when torchvision has them cached or can download them, else random weights;
    # "required": fail without them; "never": random weights (the ci profile, so that tests agree everywhere)
    pretrained: str
    val_fraction: float = 0.0  # share of the training images held out (not trained on)
    seeds: tuple[int, ...] = (0,)  # fine-tuning seeds (and, for the random stand-in, its initialization)
    n_test_per_epoch: int | None = None  # test images behind the per-epoch curves; None = all (final: always all)
    branch_depths: tuple[int, ...] = (12, 1, 3)  # 12: the sequential ViT; 1: 12 branches; 3: 4 branches
    decode_size: dict = field(default_factory=dict)  # dataset -> size its variable-size images are decoded at
    # The randomly initialized stand-in for ViT-B/16 (12 layers, MLP ratio 4): a torchvision VisionTransformer
    # small enough for this profile, at the dataset's native image size.
    random_width: int = 64
    random_heads: int = 4
    random_patch: dict = field(default_factory=lambda: {28: 4, 32: 4, 96: 8})  # image size -> patch size

    def __post_init__(self):
        if self.pretrained not in PRETRAINED_MODES:
            raise ConfigError(f"FinetuneSettings.pretrained={self.pretrained!r}; choose one of {PRETRAINED_MODES}")

    def data_config(self, dataset: str, model_image_size: int | None = None) -> DataConfig:
        """The data of `dataset`, decoded at `model_image_size` when given (the ImageNet ViT takes 224 px images,
        so CIFAR's 32 px ones are upsampled when decoded: train() never resizes), else at `decode_size` or the
        dataset's own size."""
        return DataConfig(dataset=dataset, n_train=self.n_train, n_test=self.n_test, val_fraction=self.val_fraction,
                          image_size=model_image_size or self.decode_size.get(dataset),
                          n_test_per_epoch=self.n_test_per_epoch)

    def describe(self) -> str:
        return (f"fine-tuning profile `{self.name}`: {_images(self)} per dataset; {self.recipe.describe()}; seeds "
                f"{list(self.seeds)}; ImageNet weights: {self.pretrained}; without them, a random 12-layer "
                f"torchvision ViT of width {self.random_width} ({self.random_heads} heads, MLP ratio 4) at each "
                "dataset's native size")


ARMS = ("serial", "fixed", "adaptive")  # the layer-parallel pre-training arms, in table order
FINETUNE_ARMS = ("serial", "fixed")  # fine-tuning the serial arm's weights: by backprop, by fixed-cycle MGRIT
PHASES = ("pre-training", "fine-tuning")


@dataclass(frozen=True)
class LayerParallelSettings:
    """One profile's layer-parallel experiment (notebook 08); data subsets, width, recipe and seeds: its `scale`'s."""

    scale: Scale
    dataset: str  # pre-training, where the three arms are compared
    # fine-tuned on from the serial arm's weights (a new head); must have the pre-training images' size and channels
    finetune_dataset: str
    depth: int  # N: the ViT's layers; every arm uses the ODE step h = 1/N
    coarsening: int  # MGRIT fine steps per coarse step
    levels: int = 2  # MGRIT grid levels
    fixed_iterations: tuple[int, int] = (1, 1)  # (forward, adjoint) cycles of the fixed arm and the MGRIT fine-tune
    adaptive_start: tuple[int, int] = (1, 1)  # (forward, adjoint) cycles the adaptive arm starts from
    check_every: int = 20  # steps between the adaptive arm's checks against the exact gradient
    tolerance: float = 0.01  # relative gradient error past which the adaptive arm adapts
    adapt: str = "iterate"  # past the tolerance: "iterate" (one more cycle, backprop once exact) or "serial"
    # points: layer-parallel minus serial accuracy must exceed -margin for "commensurate" and "unaffected" (the
    # paper gives no margin: ours)
    margin: float = 1.0
    finetune_epochs: int = 2  # epochs of each fine-tune (the rest of the recipe is the profile's)
    # The pre-training arms whose final weights are fine-tuned (a new head), every one by backpropagation with the
    # same recipe: the paper's "fine-tuning is unaffected" is about a model pre-trained layer-parallel, against the
    # serially pre-trained one. "serial" is the reference and must be among them.
    finetune_from: tuple[str, ...] = ("serial", "fixed")
    finetune_lr: float | None = None  # peak learning rate of the fine-tunes; None = the profile's recipe's
    finetune_train: int | None = None  # fine-tuning images (stratified subset); None = the profile's n_train
    # "unaffected" is not testable where the serial fine-tune's mean accuracy (%) stays under this (it has not
    # settled: 95 on MNIST, where a linear classifier on the pixels reaches about 90% from 2,500 images) ...
    finetune_floor: float = 95.0
    finetune_detectable: float = 2.0  # ... or where the design's minimum detectable difference exceeds these points

    def __post_init__(self):
        for name in ("dataset", "finetune_dataset"):
            if getattr(self, name) not in DATASETS:
                raise ConfigError(f"LayerParallelSettings.{name}={getattr(self, name)!r} is not a registry "
                                  f"dataset; choose one of {sorted(DATASETS)}")
        before, after = DATASETS[self.dataset], DATASETS[self.finetune_dataset]
        if self.finetune_dataset == self.dataset:  # the claims pick runs by dataset: the phases would mix
            raise ConfigError(f"LayerParallelSettings.finetune_dataset={self.finetune_dataset!r} is the "
                              "pre-training dataset; fine-tune on another one of the same image shape (e.g. 'mnist')")
        if (before.image_size, before.in_channels) != (after.image_size, after.in_channels):
            raise ConfigError(f"LayerParallelSettings.finetune_dataset={self.finetune_dataset!r} has "
                              f"{after.image_size}px images with {after.in_channels} channel(s), {self.dataset} "
                              f"{before.image_size}px with {before.in_channels}: the pre-trained weights need the "
                              "same shape; choose a dataset that has it")
        if self.adapt not in MGRIT_ADAPTATIONS:
            raise ConfigError(f"LayerParallelSettings.adapt={self.adapt!r}; choose one of {MGRIT_ADAPTATIONS}")
        if self.margin <= 0 or self.tolerance <= 0 or self.check_every < 1 or self.finetune_epochs < 1:
            raise ConfigError(f"LayerParallelSettings margin={self.margin}, tolerance={self.tolerance}, check_every="
                              f"{self.check_every} and finetune_epochs={self.finetune_epochs} must all be positive")
        if "serial" not in self.finetune_from or not set(self.finetune_from) <= set(ARMS):
            raise ConfigError(f"LayerParallelSettings.finetune_from={self.finetune_from}: name pre-training arms "
                              f"({ARMS}), 'serial' among them (the fine-tune the others are compared with)")
        if (self.finetune_lr is not None and self.finetune_lr <= 0) or self.finetune_detectable <= 0 or \
                (self.finetune_train is not None and self.finetune_train < 1):
            raise ConfigError(f"LayerParallelSettings finetune_lr={self.finetune_lr}, finetune_train="
                              f"{self.finetune_train} and finetune_detectable={self.finetune_detectable} must be "
                              "positive (None: the profile's learning rate and images)")
        check_layout(self.depth, 1, MGRITConfig(levels=self.levels, coarsening=self.coarsening))  # spacings divide N
        exact = self.exact_after
        for name in ("fixed_iterations", "adaptive_start"):
            if max(getattr(self, name)) >= exact:
                raise ConfigError(f"LayerParallelSettings.{name}={getattr(self, name)}: at depth {self.depth} and "
                                  f"coarsening {self.coarsening} the solve is exact after {exact} cycles, so the "
                                  f"arm would be serial training; use fewer than {exact}")

    @property
    def exact_after(self) -> int:
        """Two-level cycles after which MGRIT computes what backpropagation does."""
        return MGRITConfig(levels=self.levels, coarsening=self.coarsening).iterations_to_converge(self.depth)

    def data_config(self, phase: str) -> DataConfig:
        if phase not in PHASES:
            raise ConfigError(f"phase={phase!r}; choose one of {PHASES}")
        return self.scale.data_config(self.dataset if phase == "pre-training" else self.finetune_dataset)

    def model_config(self, data) -> ModelConfig:
        """The profile's ViT-N fitted to `data` (anything with image_size, in_channels and num_classes), at h = 1/N
        and without dropout, which MGRIT refuses (it re-evaluates every layer several times per step)."""
        return replace(self.scale.model_config(f"{self.depth}-{self.depth}", data), step=1 / self.depth, dropout=0.0)

    def recipe(self, arm: str, seed: int, phase: str = "pre-training") -> Recipe:
        """The profile's recipe for one arm and seed. torch.compile is off in every arm: MGRIT cannot be compiled,
        and the serial arm is to differ from the others in its gradients alone."""
        arms = ARMS if phase == "pre-training" else FINETUNE_ARMS
        if arm not in arms:
            raise ConfigError(f"arm={arm!r} is not a {phase} arm; choose one of {arms}")
        epochs = self.finetune_epochs if phase == "fine-tuning" else self.scale.recipe.epochs
        base = replace(self.scale.recipe, seed=seed, compile=False, epochs=epochs)
        if arm == "serial":
            return base
        mgrit = replace(base, solver="mgrit", mgrit_levels=self.levels, mgrit_coarsening=self.coarsening)
        if arm == "fixed":
            return replace(mgrit, mgrit_iterations=self.fixed_iterations)
        return replace(mgrit, mgrit_iterations=self.adaptive_start, mgrit_check_every=self.check_every,
                       mgrit_tolerance=self.tolerance, mgrit_adapt=self.adapt)

    def run_name(self, arm: str, phase: str) -> str:
        dataset, stage = (self.dataset, "") if phase == "pre-training" else (self.finetune_dataset, "-finetune")
        return f"{dataset}-ViT-{self.depth}-layer-parallel{stage}-{arm}"

    def describe(self) -> str:
        f, b = self.fixed_iterations
        return (f"ViT-{self.depth} at h = 1/{self.depth} on {self.dataset}, then fine-tuned on {self.finetune_dataset} "
                f"({self.finetune_epochs} epochs); MGRIT: {self.levels} levels, coarsening {self.coarsening} (exact "
                f"after {self.exact_after} cycles), fixed {f} forward / {b} adjoint cycles; adaptive from "
                f"{self.adaptive_start}, checked every {self.check_every} steps, {self.adapt} past a relative "
                f"gradient error of {self.tolerance:g}; 'commensurate' and 'unaffected': within {self.margin:g} "
                f"point (our margin); {self.scale.describe()}")


@dataclass(frozen=True)
class Profile:
    """Everything one profile runs, notebook by notebook."""

    name: str
    scale: Scale  # notebooks 01-02, and the train command line's defaults
    comparison: Comparison  # notebooks 03-04
    expansion: ExpansionPlan  # notebook 05
    bench: BenchSettings  # notebook 06 (make bench): one device
    multi: MultiSettings  # notebooks 06 and 08: across processes
    finetune: FinetuneSettings  # notebook 07
    layer_parallel: LayerParallelSettings  # notebook 08
    convergence: ConvergenceSettings  # notebook 08: MGRIT's error against serial
    throughput: ThroughputSettings | None  # make throughput (None: not sized for this profile)
    # the notebooks `make reproduce` runs at this profile (their numbers, e.g. "01"); None = every notebook. The others
    # say "not run at this profile" in the report rather than being run at a size that would not fit its budget.
    notebooks: tuple[str, ...] | None = None

    def runs_notebook(self, notebook: str) -> bool:
        return self.notebooks is None or notebook.split("_")[0] in self.notebooks
