"""Configuration: dataclasses for the model, the data and the training recipe, and where files live. Every
result records its three configs, so renaming or re-defaulting a field here changes the run-cache key.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field, the value and the fix."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """The package's command lines: a bad argument gives one line and exit code 2, like a bad config (argparse's
    own error prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _check_types(obj) -> None:
    """Fail loudly on a wrong type (a string where an int belongs is a common notebook slip)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every `<= 0` check below
            raise ConfigError(f"{type(obj).__name__}.{f.name}={value!r} must be a finite number")
        allowed = _allowed_types(hints[f.name])
        if isinstance(value, bool):  # an int to isinstance, but never where an int or a float belongs
            fits = bool in allowed
        else:
            fits = isinstance(value, allowed) or (float in allowed and isinstance(value, int))
        if not fits:
            raise ConfigError(f"{type(obj).__name__}.{f.name}={value!r} has type {type(value).__name__}; expected "
                              + " or ".join(t.__name__ for t in allowed))


def _allowed_types(hint) -> tuple[type, ...]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _allowed_types(arg))
    return (origin or hint,)  # NoneType has no origin


def from_dict(cls, values: dict):
    """Build a config dataclass from a plain dict; unknown keys fail instead of being ignored."""
    if not isinstance(values, dict):
        raise ConfigError(f"{cls.__name__} needs a dict, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}; known keys are {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _lists_to_tuples(obj, *names: str) -> None:
    """Frozen configs hold tuples (hashable, and equal after a JSON round trip); accept lists too."""
    for name in names:
        if isinstance(getattr(obj, name), list):
            object.__setattr__(obj, name, tuple(getattr(obj, name)))


def _positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{type(obj).__name__}.{name}={value!r} must be positive")


def _one_of(obj, name: str, choices: tuple) -> None:
    if getattr(obj, name) not in choices:
        raise ConfigError(f"{type(obj).__name__}.{name}={getattr(obj, name)!r} is unknown; choose from {choices}")


RESIDUALS = ("pre-norm", "authors")  # ModelConfig.residual
INITS = ("trunc-normal", "authors")  # ModelConfig.init
# ModelConfig.as_authors(): their attention's dim_head is 64, which their training script never changes
AUTHORS_MODEL = dict(residual="authors", head_dim=64, qkv_bias=False, init="authors")


@dataclass(frozen=True)
class ModelConfig:
    """A ParaFormer Para-F-m-n: `num_layers` (n) Transformer layers in n/m parallel branches of depth m. Give
    `num_layers` or `num_branches` (the other is derived). A ViT of depth d is `branch_depth=d, num_layers=d`."""

    image_size: int = 32  # input height = width, in pixels
    in_channels: int = 3  # 3 for RGB, 1 for greyscale
    patch_size: int = 4  # square patches, linearly projected; must divide image_size
    width: int = 64  # token dimension (the paper's hidden size)
    num_heads: int = 4  # attention heads; must divide width
    mlp_ratio: float = 4.0  # MLP hidden size = mlp_ratio * width
    branch_depth: int = 1  # m: Transformer layers in series inside one branch
    num_layers: int | None = None  # n: total layers over all branches (n / m branches)
    num_branches: int | None = None  # alternative to num_layers: number of parallel branches
    dropout: float = 0.0  # dropout after the embedding, the attention projection and the MLP
    norm_eps: float = 1e-5  # LayerNorm epsilon (torchvision's pretrained ViTs use 1e-6; see paraformer.core.weights)
    # "pre-norm": y = x + f(LN(x)), the standard ViT layer; "authors": y = LN(x) + f(LN(x)), the residual of the
    # authors' public code (see paraformer.core.model.Layer), for the authors' recipe (notebook 03)
    residual: str = "pre-norm"
    num_classes: int = 10  # outputs of the shared head
    # Class-incremental models (see ParaFormer.expand): task t adds task_branches[t] branches and a head for
    # task_classes[t] new classes, which reads the sum of the branches up to its own. Empty = one head.
    task_classes: tuple[int, ...] = ()  # classes of each task, in label order; sums to num_classes
    task_branches: tuple[int, ...] = ()  # branches each task added; sums to num_branches
    # h: each pre-norm sub-block adds h f(LN x), the forward-Euler reading of a ViT that layer-parallel training
    # (arXiv 2601.09026) rests on; they take h = 1/depth. 1 = the ordinary layer, bit for bit.
    step: float = 1.0
    # The authors' public model, bug for bug (ModelConfig.authors; paraformer.core.model): their attention has
    # num_heads heads of a fixed 64 whatever the width, no query/key/value bias, and PyTorch's default init.
    head_dim: int | None = None  # width of each attention head; None = width / num_heads, the usual split
    qkv_bias: bool = True  # a bias on the query/key/value projection
    init: str = "trunc-normal"  # "trunc-normal" (std 0.02, ViT's) or "authors" (N(0, 1) tokens, PyTorch's defaults)

    def __post_init__(self):
        _lists_to_tuples(self, "task_classes", "task_branches")
        _check_types(self)
        _positive(self, "image_size", "in_channels", "patch_size", "width", "num_heads", "mlp_ratio",
                  "branch_depth", "num_layers", "num_branches", "num_classes", "norm_eps", "step")
        if self.step != 1.0 and self.residual != "pre-norm":
            raise ConfigError(f"ModelConfig.step={self.step} scales the pre-norm residual x + h f(LN x); "
                              f"residual={self.residual!r} has no such step: use residual='pre-norm' or step=1")
        if self.num_layers is None and self.num_branches is None:
            raise ConfigError("ModelConfig needs num_layers (n) or num_branches; got neither")
        if self.num_layers is not None and self.num_layers % self.branch_depth:
            raise ConfigError(f"ModelConfig.num_layers={self.num_layers} is not a multiple of branch_depth="
                              f"{self.branch_depth}; Para-F-m-n needs m to divide n")
        branches = self.num_branches if self.num_branches is not None else self.num_layers // self.branch_depth
        if self.num_layers is not None and branches * self.branch_depth != self.num_layers:
            raise ConfigError(f"ModelConfig.num_branches={self.num_branches} disagrees with num_layers="
                              f"{self.num_layers} / branch_depth={self.branch_depth}; give only one of them")
        object.__setattr__(self, "num_branches", branches)
        object.__setattr__(self, "num_layers", branches * self.branch_depth)
        if self.image_size % self.patch_size:
            raise ConfigError(f"ModelConfig.patch_size={self.patch_size} does not divide image_size={self.image_size}")
        if self.width % self.num_heads and self.head_dim is None:
            raise ConfigError(f"ModelConfig.num_heads={self.num_heads} does not divide width={self.width}; change "
                              "one, or give head_dim")
        if self.head_dim is not None and self.head_dim <= 0:
            raise ConfigError(f"ModelConfig.head_dim={self.head_dim} must be positive (or None: width / num_heads)")
        _one_of(self, "init", INITS)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ModelConfig.dropout={self.dropout} must be in [0, 1)")
        _one_of(self, "residual", RESIDUALS)
        if int(self.mlp_ratio * self.width) < 1:
            raise ConfigError(f"ModelConfig.mlp_ratio={self.mlp_ratio} gives an empty MLP at width={self.width}")
        if self.task_classes or self.task_branches:
            tasks = (self.task_classes, self.task_branches)
            if (len(tasks[0]) != len(tasks[1]) or len(tasks[0]) < 2 or sum(tasks[0]) != self.num_classes
                    or sum(tasks[1]) != self.num_branches or min(tasks[0] + tasks[1]) < 1):
                raise ConfigError(
                    f"ModelConfig.task_classes={self.task_classes} and task_branches={self.task_branches} must be "
                    f"positive, of equal length (at least 2 tasks), and sum to num_classes={self.num_classes} and "
                    f"num_branches={self.num_branches}; build class-incremental models with ParaFormer.expand()")

    @classmethod
    def from_name(cls, name: str, **fields) -> "ModelConfig":
        """`ModelConfig.from_name("1-24", width=64)` or `"Para-F-6-24"`: the paper's Para-F-m-n naming."""
        spec = str(name).removeprefix("Para-F-").removeprefix("para-f-")
        try:
            depth, layers = (int(part) for part in spec.split("-"))
        except ValueError:
            raise ConfigError(f"model name {name!r} is not of the form 'm-n' or 'Para-F-m-n' (e.g. '1-24')") from None
        return cls(branch_depth=depth, num_layers=layers, **fields)

    def as_authors(self) -> "ModelConfig":
        """This model as the authors' public code builds it (GitHub DUAT-Maker/Shallow-Paraformer, models/
        ParaFormer.py): y = LN(x) + f(LN(x)), num_heads heads of 64 whatever the width, no query/key/value bias,
        N(0, 1) position embedding and CLS token, PyTorch's default init elsewhere (docs/authors-recipe.md)."""
        return dataclasses.replace(self, **AUTHORS_MODEL)

    @property
    def name(self) -> str:
        return f"Para-F-{self.branch_depth}-{self.num_layers}"

    @property
    def is_incremental(self) -> bool:
        """A class-incremental model: one head per task, not one shared head."""
        return len(self.task_classes) > 1

    def with_branches(self, num_branches: int, **fields) -> "ModelConfig":
        """The same model with another number of branches (and any other fields changed)."""
        return dataclasses.replace(self, num_layers=None, num_branches=num_branches, **fields)

    def expanded(self, num_new_branches: int, num_new_classes: int = 0) -> "ModelConfig":
        """This model grown by `num_new_branches` branches and, for a new task, `num_new_classes` classes."""
        for name, value, least in (("num_new_branches", num_new_branches, 1), ("num_new_classes", num_new_classes, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name}={value!r} must be an int >= {least}")
        if not num_new_classes:
            if self.is_incremental:
                raise ConfigError("a class-incremental model grows only with a new task: give num_new_classes > 0 "
                                  "(new branches without new classes would change the last task's logits)")
            return self.with_branches(self.num_branches + num_new_branches)
        return self.with_branches(
            self.num_branches + num_new_branches, num_classes=self.num_classes + num_new_classes,
            task_classes=(self.task_classes or (self.num_classes,)) + (num_new_classes,),
            task_branches=(self.task_branches or (self.num_branches,)) + (num_new_branches,))

    def is_expansion_of(self, smaller: "ModelConfig") -> bool:
        """True when this model is `smaller` with branches (and possibly tasks) appended."""
        same = [f.name for f in dataclasses.fields(self)
                if f.name not in ("num_layers", "num_branches", "num_classes", "task_classes", "task_branches")]
        if self.num_branches < smaller.num_branches or any(getattr(self, n) != getattr(smaller, n) for n in same):
            return False
        if not (self.is_incremental or smaller.is_incremental):
            return self.num_classes == smaller.num_classes  # more branches in the shared sum
        old = (smaller.task_classes or (smaller.num_classes,), smaller.task_branches or (smaller.num_branches,))
        new = (self.task_classes, self.task_branches)
        return len(new[0]) >= len(old[0]) and new[0][:len(old[0])] == old[0] and new[1][:len(old[1])] == old[1]

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_ratio * self.width)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class DataConfig:
    """Which images a run sees. Subsets are class-stratified and drawn with `subset_seed` alone,
    so every model in a sweep sees exactly the same images whatever its training seed."""

    dataset: str = "cifar10"  # a registry name (see paraformer.core.data.DATASETS) or a path to an ImageFolder root
    n_train: int | None = None  # training images (stratified subset); None = the whole training split
    n_test: int | None = None  # test images (stratified subset); None = the whole test split
    # test images scored after every epoch for the learning curves (a stratified subset of the n_test, drawn with
    # subset_seed); None = all of them. The final model is always scored on all n_test images.
    n_test_per_epoch: int | None = None
    val_fraction: float = 0.0  # share of the training subset held out (stratified) as a validation split
    image_size: int | None = None  # resize images to this square size when decoding; None = native size
    # ImageFolder roots: convert every image to 1 (greyscale) or 3 (RGB) channels; None = the images' own kind,
    # which must then be the same for all of them. Registry datasets have one kind (None or that number).
    channels: int | None = None
    subset_seed: int = 0  # seed of the subset and validation draws
    classes: tuple[int, ...] | None = None  # keep only these class indices (labels keep their numbers); None = all

    def __post_init__(self):
        _lists_to_tuples(self, "classes")
        _check_types(self)
        _positive(self, "n_train", "n_test", "n_test_per_epoch", "image_size")
        if self.n_test is not None and self.n_test_per_epoch is not None and self.n_test_per_epoch > self.n_test:
            raise ConfigError(f"DataConfig.n_test_per_epoch={self.n_test_per_epoch} exceeds n_test={self.n_test}: "
                              "the per-epoch images are a subset of the test images; lower it or set None (all)")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"DataConfig.channels={self.channels!r} must be 1 (greyscale), 3 (RGB) or None "
                              "(the images' own)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"DataConfig.val_fraction={self.val_fraction} must be in [0, 1)")
        if self.classes is not None and (not self.classes or len(set(self.classes)) != len(self.classes)
                                         or not all(isinstance(c, int) and c >= 0 for c in self.classes)):
            raise ConfigError(f"DataConfig.classes={self.classes} must be distinct class indices >= 0 (or None)")


# "resize": each training batch (and each evaluated one) to the model's image size, where the images are smaller;
# after "randaugment" it reproduces the authors' order (RandAugment on the 32 px image, then the resize to 224).
AUGMENTATIONS = ("flip", "crop", "randaugment", "resize")
RANDAUGMENTS = ("torchvision", "authors")  # Recipe.randaugment
NORMALIZATIONS = ("dataset", "authors")  # Recipe.normalization
AMP_DTYPES = ("bfloat16", "float16")  # Recipe.amp_dtype
# How the branches learn (paraformer.core.progressive): the plain baseline and the three progressive variants.
METHODS = ("joint", "authors", "prefix", "frozen")
# How gradients are computed (Recipe.solver): backpropagation, or MGRIT across the layers (paraformer.parallel).
SOLVERS = ("backprop", "mgrit")
MGRIT_ADAPTATIONS = ("iterate", "serial")  # Recipe.mgrit_adapt
# How a run is shared across processes (Recipe.parallel; paraformer.parallel.processes).
PARALLELISMS = ("none", "data", "branch", "layer")


@dataclass(frozen=True)
class Recipe:
    """How a model is trained. The learning rate is a pure function of the step (linear warmup, then
    cosine or constant), so a resumed run follows exactly the schedule of an uninterrupted one."""

    epochs: int = 10  # passes over the training subset
    batch_size: int = 128  # images per optimizer step
    optimizer: str = "adamw"  # "adamw", "adam" or "sgd" (momentum 0.9, nesterov)
    lr: float = 1e-3  # peak learning rate, reached after warmup
    weight_decay: float = 0.05  # decoupled for adamw; L2 for adam and sgd (not applied to norms, biases, tokens)
    warmup_epochs: float = 1.0  # linear warmup from 0 to lr, in epochs (fractions allowed)
    schedule: str = "cosine"  # after warmup: "cosine" (to 0 at the end) or "constant"
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    grad_clip: float | None = None  # clip the global gradient norm to this value; None = no clipping
    # any of AUGMENTATIONS, applied on the fly to training batches. None unless asked for: a flip is wrong for data
    # with handedness (digits, letters), and at 8 px a flip or a crop each cost 20-30 points (sklearn's digits); the
    # profiles and the named datasets' recipes say theirs.
    augment: tuple[str, ...] = ()
    randaugment_magnitude: int = 9  # of "randaugment" (2 operations per image); the authors' code uses 14
    # which RandAugment: torchvision's v2.RandAugment, or "authors", their code's 16 operations bug for bug
    # (paraformer.core.authors_augment)
    randaugment: str = "torchvision"
    crop_padding: int | None = None  # zero padding per side of "crop", in px; None = 1/8 of the side, at least 1
    # "dataset": each dataset's own mean and std; "authors": mean 0.5 and std 0.2 for every channel, as their code
    normalization: str = "dataset"
    seed: int = 0  # initialization, shuffling, augmentation and dropout
    device: str = "auto"  # "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # autocast on CUDA (amp_dtype); ignored on CPU, where it would only be slower
    amp_dtype: str = "bfloat16"  # of autocast on CUDA: "bfloat16", or "float16" with a GradScaler (the authors')
    method: str = "joint"  # one of METHODS; see paraformer.core.progressive
    prefix_weights: tuple[float, ...] = ()  # "prefix" method: weight of each prefix's loss; () = all equal
    freeze_inherited: bool = False  # with a parent run (train(parent=...)): train only what the parent lacked
    # torch.compile the model for training and evaluation. Same numbers in expectation, not bit for bit (fused
    # kernels round differently), so it is part of the run key; recorded in the run. Where torch cannot compile
    # (no C compiler, or an unsupported device) it fails at the first step with torch's error.
    compile: bool = False
    # Layer-parallel training (arXiv 2601.09026; paraformer.parallel.layertrain): "backprop" is ordinary
    # backpropagation; "mgrit" solves the forward pass and its adjoint by MGRIT across the layers of a ViT, with
    # a few cycles, so that the gradient is inexact. The mgrit_* fields matter only then.
    solver: str = "backprop"
    mgrit_levels: int = 2  # grid levels, at least 2 (paraformer.parallel.mgrit.MGRITConfig)
    mgrit_coarsening: int = 4  # fine steps per coarse step between neighbouring levels
    mgrit_relaxation: str = "F"  # on the finest level, "F" or "FCF" (coarser levels use FCF)
    mgrit_iterations: tuple[int, int] = (1, 1)  # MGRIT cycles of the forward solve and of the adjoint solve
    # The adaptive rule: every mgrit_check_every steps (0: never) the MGRIT gradient of the layers is compared with
    # the exact one on the same minibatch; past a relative error of mgrit_tolerance, mgrit_adapt decides:
    # "iterate" adds a cycle to both solves (backprop once that would make them exact), "serial" backprop at once.
    mgrit_check_every: int = 0
    mgrit_tolerance: float = 0.1
    mgrit_adapt: str = "iterate"
    # Training across processes (paraformer.parallel.processes), launched by torchrun --nproc_per_node P:
    # "data" (DistributedDataParallel), "branch" (a ParaFormer's branches shared over the ranks) or "layer" (MGRIT
    # across the layers of a ViT, with solver="mgrit"); "none" for one process.
    parallel: str = "none"
    processes: int = 1  # ranks the run trains on: torchrun's WORLD_SIZE must equal it

    def __post_init__(self):
        _lists_to_tuples(self, "augment", "prefix_weights", "mgrit_iterations")
        _check_types(self)
        _positive(self, "epochs", "batch_size", "lr", "grad_clip", "mgrit_tolerance")
        for name, choices in (("solver", SOLVERS), ("mgrit_adapt", MGRIT_ADAPTATIONS), ("parallel", PARALLELISMS),
                              ("optimizer", ("adamw", "adam", "sgd")), ("schedule", ("cosine", "constant")),
                              ("method", METHODS), ("randaugment", RANDAUGMENTS),
                              ("normalization", NORMALIZATIONS), ("amp_dtype", AMP_DTYPES)):
            _one_of(self, name, choices)
        if (len(self.mgrit_iterations) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                       for i in self.mgrit_iterations)):
            raise ConfigError(f"Recipe.mgrit_iterations={self.mgrit_iterations} must be two counts >= 0 (forward "
                              "cycles, adjoint cycles), e.g. (1, 1)")
        if self.mgrit_check_every < 0:
            raise ConfigError(f"Recipe.mgrit_check_every={self.mgrit_check_every} must be >= 0 (0: never check)")
        if isinstance(self.processes, bool) or self.processes < 1:
            raise ConfigError(f"Recipe.processes={self.processes!r} must be an int >= 1")
        if (self.parallel == "none") != (self.processes == 1):
            raise ConfigError(f"Recipe.parallel={self.parallel!r} with processes={self.processes}: one process "
                              "trains with parallel='none', several with 'data', 'branch' or 'layer'")
        if self.processes > 1 and self.method != "joint":
            raise ConfigError(f"training across processes supports method='joint' (got {self.method!r}): the "
                              "progressive methods change what is trainable or what each step computes")
        if (self.parallel == "layer") != (self.solver == "mgrit" and self.processes > 1):
            raise ConfigError(f"Recipe.parallel={self.parallel!r} with solver={self.solver!r}: layer parallelism is "
                              "the MGRIT solver's (parallel='layer' with solver='mgrit'; one process: parallel='none')")
        if self.solver == "mgrit":
            if self.method != "joint":
                raise ConfigError(f"Recipe.solver='mgrit' trains a ViT, which has no branches to approximate "
                                  f"progressively; use method='joint', not {self.method!r}")
            if self.compile:
                raise ConfigError("Recipe.solver='mgrit' runs its own solver, which torch.compile cannot trace; "
                                  "set compile=False")
        if self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ConfigError("Recipe.weight_decay and Recipe.warmup_epochs must be >= 0")
        if not 0 <= self.seed < 2 ** 63:
            raise ConfigError(f"Recipe.seed={self.seed} is out of range: torch seeds its generators with a 64-bit "
                              "integer; use a seed in 0..2**63-1")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"Recipe.warmup_epochs={self.warmup_epochs:g} exceeds epochs={self.epochs}: the "
                              f"learning rate would never reach its peak lr={self.lr:g}; use warmup_epochs <= epochs")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"Recipe.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not 0 <= self.randaugment_magnitude <= 30:
            raise ConfigError(f"Recipe.randaugment_magnitude={self.randaugment_magnitude} must be in 0..30 "
                              "(RandAugment's scale; the authors' code uses 14)")
        if self.crop_padding is not None and self.crop_padding < 0:
            raise ConfigError(f"Recipe.crop_padding={self.crop_padding} must be >= 0 px (or None: 1/8 of the side)")
        unknown = [name for name in self.augment if name not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"Recipe.augment has unknown augmentation(s) {unknown}; choose from {AUGMENTATIONS}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"Recipe.device={self.device!r} is unknown; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.freeze_inherited and self.method == "authors":
            # Its first steps train prefixes made only of inherited branches, which would have nothing to train.
            raise ConfigError("Recipe.freeze_inherited=True cannot be combined with method='authors'; use method "
                              "'joint', 'prefix' or 'frozen' to train only what the parent lacked")
        if self.prefix_weights and (self.method != "prefix" or min(self.prefix_weights) < 0
                                    or sum(self.prefix_weights) <= 0):
            raise ConfigError(f"Recipe.prefix_weights={self.prefix_weights} needs method='prefix' and non-negative "
                              "weights with a positive sum (one per branch)")

    @classmethod
    def authors(cls, epochs: int, **fields) -> "Recipe":
        """The training recipe of the authors' public ParaFormer code (train_ParaFormer.py and data_utils.py of
        GitHub DUAT-Maker/Shallow-Paraformer; docs/authors-recipe.md): Adam at a constant 1e-4 without weight decay
        or label smoothing, batch 500, their RandAugment (2 operations, magnitude 14) on the native image, the
        resize to the model's size, a random crop with 4 px of padding, a flip, mean 0.5 and std 0.2, and fp16
        with a GradScaler on CUDA. Pair it with `ModelConfig.as_authors()` (dropout 0.1) and, where the images
        allow, 224 px inputs with patch 16."""
        settings = dict(epochs=epochs, batch_size=500, optimizer="adam", lr=1e-4, weight_decay=0.0, warmup_epochs=0.0,
                        schedule="constant", label_smoothing=0.0, augment=("randaugment", "resize", "crop", "flip"),
                        randaugment_magnitude=14, randaugment="authors", crop_padding=4, normalization="authors",
                        amp_dtype="float16")
        return cls(**{**settings, **fields})

    def describe(self) -> str:
        clip = f", gradient clip {self.grad_clip}" if self.grad_clip is not None else ""
        return (f"{self.epochs} epochs, batch {self.batch_size}, {self.optimizer} lr {self.lr:g} wd "
                f"{self.weight_decay:g}, {self.warmup_epochs:g} warmup epochs + {self.schedule}{clip}, label smoothing "
                f"{self.label_smoothing:g}, augment {'+'.join(self.augment) or 'none'}"
                + (f" ({'the authors' if self.randaugment == 'authors' else 'torchvision'} RandAugment magnitude "
                   f"{self.randaugment_magnitude})" if "randaugment" in self.augment else "")
                + ((" (crop: zero padding of 1/8 of the image side, at least 1 px)" if self.crop_padding is None
                    else f" (crop: {self.crop_padding} px zero padding)") if "crop" in self.augment else "")
                + (", normalized with mean 0.5 and std 0.2" if self.normalization == "authors" else "")
                + (", fp16 autocast with loss scaling on CUDA" if self.amp and self.amp_dtype == "float16" else "")
                + (f"; gradients by {self.describe_solver()}" if self.solver != "backprop" else ""))

    def describe_solver(self) -> str:
        if self.solver == "backprop":
            return "backpropagation"
        forward, backward = self.mgrit_iterations
        rule = "fixed"
        if self.mgrit_check_every:
            rule = (f"checked against backprop every {self.mgrit_check_every} steps, {self.mgrit_adapt} past a "
                    f"relative gradient error of {self.mgrit_tolerance:g}")
        return (f"MGRIT across the layers ({self.mgrit_levels} levels, coarsening {self.mgrit_coarsening}, "
                f"{self.mgrit_relaxation}-relaxation, {forward} forward / {backward} adjoint cycles, {rule})")
