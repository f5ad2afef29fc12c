"""Pretrained weights: torchvision's ImageNet ViT-B/16 as a ParaFormer, and the fine-tuning experiment of
the 2024 paper's Table 4 (notebook 07).

ViT-B/16 is Para-F-12-12: one branch of 12 layers. torchvision's layout maps onto ours one to one:

    conv_proj                          -> patch_embed       (the same conv, kernel = stride = 16)
    class_token, encoder.pos_embedding -> cls_token, pos_embed
    encoder_layer_i.ln_1 / ln_2        -> branches.0.i.norm1 / norm2   (LayerNorm eps 1e-6: ModelConfig.norm_eps)
    self_attention.in_proj_*           -> attn.qkv          (rows packed q, k, v, heads contiguous in each:
                                                             exactly the order our qkv projection splits)
    self_attention.out_proj            -> attn.proj
    mlp.0 / mlp.3                      -> mlp.fc1 / fc2     (exact GELU in both)
    encoder.ln, heads.head             -> norm, head        (torchvision normalizes every token, then takes
                                                             the CLS token; we take it first: the same numbers)

Any key left unmapped fails the import, so a layout torchvision changes cannot be imported half right.

The weights expect ImageNet-normalized RGB. Our data pipeline normalizes each dataset with its own statistics
and keeps greyscale images in one channel; the patch projection is linear, so the import folds the change
of normalization (and, for greyscale, the sum over the three colour channels) into its weights exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
import torchvision

from .config import ConfigError, DataConfig, ModelConfig, Recipe
from .data import IMAGENET_MEAN, IMAGENET_STD, load_data
from .experiments.accuracy import AccuracyClaim, accuracy_table
from .experiments.stats import Verdict, judge
from .flops import run_training_flops
from .model import ParaFormer
from .train import Initialization, RunResult, train

IMAGENET_VIT = torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1  # Google's original ImageNet weights


class PretrainedUnavailable(RuntimeError):
    """The ImageNet weights are neither in torchvision's cache nor downloadable here."""


def config_from_torchvision(vit: torchvision.models.VisionTransformer, in_channels: int = 3) -> ModelConfig:
    """The ModelConfig of a ParaFormer with one branch that computes what `vit` computes."""
    if not isinstance(vit, torchvision.models.VisionTransformer):
        raise ConfigError(f"expected a torchvision VisionTransformer, got {type(vit).__name__}")
    if hasattr(vit.heads, "pre_logits"):
        raise ConfigError("torchvision ViTs with a representation layer (representation_size) have no ParaFormer "
                          "equivalent; use one whose heads are a single Linear")
    if vit.attention_dropout:
        raise ConfigError(f"the ViT has attention_dropout={vit.attention_dropout}; ParaFormer has no dropout on "
                          "attention weights, so only attention_dropout=0 imports exactly")
    return ModelConfig(
        image_size=vit.image_size, in_channels=in_channels, patch_size=vit.patch_size, width=vit.hidden_dim,
        num_heads=vit.encoder.layers[0].num_heads, mlp_ratio=vit.mlp_dim / vit.hidden_dim,
        branch_depth=len(vit.encoder.layers), num_layers=len(vit.encoder.layers), dropout=vit.dropout,
        norm_eps=vit.encoder.ln.eps, num_classes=vit.heads.head.out_features)


def _our_name(name: str) -> str:
    """torchvision state-dict key -> ParaFormer key (KeyError for anything this mapping does not know)."""
    fixed = {"class_token": "cls_token", "conv_proj.weight": "patch_embed.weight",
             "conv_proj.bias": "patch_embed.bias", "encoder.pos_embedding": "pos_embed",
             "encoder.ln.weight": "norm.weight", "encoder.ln.bias": "norm.bias",
             "heads.head.weight": "head.weight", "heads.head.bias": "head.bias"}
    if name in fixed:
        return fixed[name]
    prefix, _, rest = name.partition(".encoder_layer_")
    layer, _, part = rest.partition(".")
    inside = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
              "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj": "attn.proj",
              "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}
    if prefix == "encoder.layers" and layer.isdigit():
        module, _, tensor = part.rpartition(".")
        for theirs, ours in inside.items():
            if part == theirs:
                return f"branches.0.{layer}.{ours}"
            if module == theirs:
                return f"branches.0.{layer}.{ours}.{tensor}"
    raise KeyError(name)


def fold_normalization(weight: torch.Tensor, bias: torch.Tensor, data_mean, data_std, weights_mean, weights_std):
    """Patch-projection weights for images normalized with (data_mean, data_std) that compute what (weight,
    bias) compute on the same images normalized with (weights_mean, weights_std). A greyscale image
    (one data channel) is the RGB image whose three channels all hold the grey value."""
    colours, channels = weight.shape[1], len(data_mean)
    if len(data_std) != channels or channels not in (1, colours) or (len(weights_mean), len(weights_std)) != (
            colours, colours):
        raise ConfigError(f"cannot fold a normalization of {channels} data channel(s) into a patch projection of "
                          f"{colours} channels (data mean/std {data_mean}/{data_std}, weights expect "
                          f"{weights_mean}/{weights_std})")
    source = [c if channels == colours else 0 for c in range(colours)]
    # pixel = data_std * x + data_mean, and the weights read (pixel - weights_mean) / weights_std
    scale = torch.tensor([data_std[s] / weights_std[c] for c, s in enumerate(source)], dtype=torch.float64)
    shift = torch.tensor([(data_mean[s] - weights_mean[c]) / weights_std[c] for c, s in enumerate(source)],
                         dtype=torch.float64)
    w = weight.double()
    folded_bias = bias.double() + (w.sum(dim=(2, 3)) * shift).sum(dim=1)
    folded = w * scale.view(1, -1, 1, 1)
    if channels == 1:
        folded = folded.sum(dim=1, keepdim=True)
    return folded.to(weight.dtype), folded_bias.to(bias.dtype)


def from_torchvision(vit: torchvision.models.VisionTransformer, in_channels: int = 3, data_mean=None,
                     data_std=None, weights_mean=IMAGENET_MEAN, weights_std=IMAGENET_STD) -> ParaFormer:
    """`vit`'s weights in a ParaFormer with one branch (Para-F-12-12 for ViT-B/16).

    Without `data_mean`/`data_std` the ParaFormer reads exactly the input `vit` reads. With them, it reads
    images normalized by (data_mean, data_std) with `in_channels` channels (1 = greyscale) and computes what
    `vit` computes on the same images as RGB normalized by (weights_mean, weights_std)."""
    if (data_mean is None) != (data_std is None):
        raise ConfigError("give both data_mean and data_std, or neither")
    if data_mean is None and in_channels != 3:
        raise ConfigError(f"in_channels={in_channels} needs data_mean and data_std to fold the colour channels")
    model = ParaFormer(config_from_torchvision(vit, in_channels))
    state = {}
    for name, tensor in vit.state_dict().items():
        try:
            state[_our_name(name)] = tensor.detach().clone()
        except KeyError:
            raise ConfigError(f"torchvision ViT weight {name!r} has no place in a ParaFormer; the import knows "
                              "torchvision's VisionTransformer layout (see paraformer.pretrained)") from None
    if data_mean is not None:
        state["patch_embed.weight"], state["patch_embed.bias"] = fold_normalization(
            state["patch_embed.weight"], state["patch_embed.bias"], data_mean, data_std, weights_mean, weights_std)
    model.load_state_dict(state)  # strict: every ParaFormer weight must come from the ViT
    return model.to(next(vit.parameters()).device)


def load_imagenet_vit() -> torchvision.models.VisionTransformer:
    """torchvision's vit_b_16 with its ImageNet weights, from torchvision's cache or downloaded into it."""
    try:
        # torch.hub announces a download (on stdout) with the cache path, which would land in committed notebooks
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            state = IMAGENET_VIT.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as error:  # no network: URLError (an OSError); a corrupt file: RuntimeError
        reason = str(getattr(error, "reason", error)).splitlines()[0]
        raise PretrainedUnavailable(
            f"torchvision's ImageNet weights for vit_b_16 ({IMAGENET_VIT.url}) are not cached and could not be "
            f"downloaded ({reason}); copy the file into {torch.hub.get_dir()}/checkpoints/ to use them") from None
    vit = torchvision.models.vit_b_16()
    vit.load_state_dict(state)
    return vit


# --- the fine-tuning experiment (notebook 07) ------------------------------------------------------------

PRETRAINED_MODES = ("auto", "required", "never")


@dataclass(frozen=True)
class FinetuneProfile:
    """Fine-tuning one 12-layer ViT's weights, as the sequential ViT and regrouped into parallel branches."""

    name: str
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
            raise ConfigError(f"FinetuneProfile.pretrained={self.pretrained!r}; choose one of {PRETRAINED_MODES}")

    def data_config(self, dataset: str, model_image_size: int | None = None) -> DataConfig:
        """The data of `dataset`, decoded at `model_image_size` when given (the ImageNet ViT takes 224 px images,
        so CIFAR's 32 px ones are upsampled when decoded: train() never resizes), else at `decode_size` or the
        dataset's own size."""
        return DataConfig(dataset=dataset, n_train=self.n_train, n_test=self.n_test, val_fraction=self.val_fraction,
                          image_size=model_image_size or self.decode_size.get(dataset),
                          n_test_per_epoch=self.n_test_per_epoch)

    def describe(self) -> str:
        subset = f"{self.n_train or 'all'} train / {self.n_test or 'all'} test images per dataset"
        if self.val_fraction:
            subset += f" ({self.val_fraction:.0%} of train held out)"
        if self.n_test_per_epoch:
            subset += f" ({self.n_test_per_epoch} test images for the per-epoch curves)"
        return (f"fine-tuning profile `{self.name}`: {subset}; {self.recipe.describe()}; seeds {list(self.seeds)}; "
                f"ImageNet weights: {self.pretrained}; without them, a random 12-layer torchvision ViT of width "
                f"{self.random_width} ({self.random_heads} heads, MLP ratio 4) at each dataset's native size")

    def random_vit(self, image_size: int, seed: int) -> torchvision.models.VisionTransformer:
        if image_size not in self.random_patch:
            raise ConfigError(f"finetune profile {self.name!r} has no patch size for {image_size}px images; add it "
                              f"to FinetuneProfile.random_patch (known: {sorted(self.random_patch)})")
        torch.manual_seed(seed)
        return torchvision.models.VisionTransformer(
            image_size=image_size, patch_size=self.random_patch[image_size], num_layers=12,
            num_heads=self.random_heads, hidden_dim=self.random_width, mlp_dim=4 * self.random_width)


# Hyperparameters the paper omits follow the ViT paper's fine-tuning recipe (SGD with momentum 0.9, no weight
# decay, gradient clipping at norm 1, cosine decay) with a learning rate of 0.01 and batch 128.
_finetune_recipe = Recipe(epochs=10, batch_size=128, optimizer="sgd", lr=0.01, weight_decay=0.0, warmup_epochs=0.5,
                          label_smoothing=0.0, grad_clip=1.0, augment=("flip", "crop"))
FINETUNE_PROFILES = {
    "ci": FinetuneProfile("ci", ("fashion_mnist",), n_train=256, n_test=100, pretrained="never", random_width=16,
                          random_heads=2, recipe=replace(_finetune_recipe, epochs=2, batch_size=32, augment=())),
    # ViT-B/16 at 224 px trains at a few images per second on a 2-core CPU: with ImageNet weights this profile
    # is a GPU job (minutes); with the random stand-in it runs here in a few minutes: three seeds on every test
    # image, so, to fit the suite's hour, CIFAR-10 alone and 5 epochs instead of the paper's 10.
    "quick": FinetuneProfile("quick", ("cifar10",), n_train=1000, n_test=None, pretrained="auto",
                             recipe=replace(_finetune_recipe, epochs=5, batch_size=32, augment=()), seeds=(0, 1, 2),
                             n_test_per_epoch=1000),
    # Whole offline datasets on one GPU. The GPU machines have no internet: unless torchvision's ViT-B/16 weights
    # are in its cache there, this runs the random stand-in, at the authors' width (192, 3 heads).
    "gpu": FinetuneProfile("gpu", ("cifar10", "fashion_mnist"), n_train=None, n_test=None, pretrained="auto",
                           random_width=192, random_heads=3, recipe=replace(_finetune_recipe, batch_size=512)),
    # The paper's datasets, whole, 10 epochs, 5% held out as in its Table 1. Pets and Flowers are decoded at
    # 224 px rather than fitted to 96 px first.
    "paper": FinetuneProfile("paper", ("cifar10", "cifar100", "stl10", "oxford_pets", "flowers102"), n_train=None,
                             n_test=None, pretrained="required", val_fraction=0.05, recipe=_finetune_recipe,
                             decode_size={"oxford_pets": 224, "flowers102": 224}, seeds=(0, 1, 2)),
}


def get_finetune_profile(name: str) -> FinetuneProfile:
    if name not in FINETUNE_PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {sorted(FINETUNE_PROFILES)}")
    return FINETUNE_PROFILES[name]


def pretrained_vit(mode: str) -> tuple[torchvision.models.VisionTransformer | None, str]:
    """The ImageNet ViT-B/16 (or None for random weights) under `mode`, and one line saying which it is."""
    if mode not in PRETRAINED_MODES:
        raise ConfigError(f"pretrained={mode!r}; choose one of {PRETRAINED_MODES}")
    if mode == "never":
        return None, "Weights: random (this profile never loads ImageNet weights); NOT a pretrained fine-tune."
    try:
        return load_imagenet_vit(), f"Weights: torchvision {IMAGENET_VIT} (ImageNet-1k, Google's original ViT-B/16)."
    except PretrainedUnavailable as error:
        if mode == "required":
            raise
        # the line goes into committed notebooks and tables: no machine path, no raw network error (the error
        # itself, with both, is what pretrained="required" raises)
        return None, ("Weights not available: torchvision's ImageNet weights for vit_b_16 are not in its cache and "
                      "could not be downloaded, so this run fine-tunes RANDOM weights and its numbers are not a "
                      "pretrained fine-tune (pretrained='required' says where to put the file).")


def arrangement(branch_depth: int, layers: int = 12) -> str:
    if branch_depth == layers:
        return "sequential (1 branch)"
    return f"{layers // branch_depth} branches x depth {branch_depth}"


def run_finetune(profile: FinetuneProfile, vit: torchvision.models.VisionTransformer | None,
                 datasets: tuple[str, ...] | None = None, seeds: tuple[int, ...] | None = None,
                 progress: bool = True) -> tuple[pd.DataFrame, list[RunResult]]:
    """Fine-tune `vit`'s weights (None: the profile's randomly initialized stand-in, drawn per seed) on every
    dataset with every seed (the profile's unless given), as the sequential ViT and regrouped into parallel
    branches (`profile.branch_depths`), each with a new head."""
    rows, results = [], []
    for dataset in datasets or profile.datasets:
        data_config = profile.data_config(dataset, vit.image_size if vit is not None else None)
        data = load_data(data_config)
        for seed in seeds or profile.seeds:
            more_rows, more_results = _finetune_seed(profile, vit, dataset, data_config, data, seed, progress)
            rows += more_rows
            results += more_results
    return pd.DataFrame(rows), results


def _finetune_seed(profile, vit, dataset, data_config, data, seed, progress):
    """The fine-tunes of one seed on one dataset: one row and one record per arrangement."""
    source = f"torchvision {IMAGENET_VIT}" if vit is not None else "random (not pretrained)"
    kind = "imagenet" if vit is not None else "random"
    recipe = replace(profile.recipe, seed=seed)
    rows, results = [], []
    base_vit = vit if vit is not None else profile.random_vit(data.image_size, seed)
    sequential = from_torchvision(base_vit, data.in_channels, data.mean, data.std)
    for depth in profile.branch_depths:
        model = sequential.regroup(depth)
        config = dataclasses.replace(model.config, num_classes=data.num_classes)
        weights = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
        layout = arrangement(depth, config.num_layers)
        init = Initialization(f"{source}, {layout}", weights)
        result = train(config, data_config, recipe, data=data, init=init, progress=progress,
                       name=f"{dataset}-{config.name}-finetune-{kind}")
        results.append(result)
        rows.append({"dataset": dataset, "model": config.name, "arrangement": layout,
                     "weights": source, "branch_depth": depth, "num_layers": config.num_layers, "seed": seed,
                     "train_images": len(data.train_labels), "test_images": len(data.test_labels),
                     "image_size": config.image_size, "test_acc": result.final_test_acc,
                     "correct": result.correct(), "num_params": result.num_params, "epochs": len(result.history),
                     "train_seconds": result.wall_seconds,
                     "train_tflop": run_training_flops(result, n_train=len(data.train_labels)) / 1e12,
                     "cached": result.cached, "run_key": result.key,
                     "data_source": result.data_source, "device": result.device,
                     "code_version": result.code_version, "code_digest": result.code_digest})
    return rows, results


def finetune_table(runs: pd.DataFrame, paper_table: dict) -> pd.DataFrame:
    """Per dataset and arrangement: our mean accuracy over seeds with its 95% interval, the paper's Table 4 beside
    it only where the weights are ImageNet's (a random-weights fine-tune is no measurement of Table 4), and the
    arrangement's difference to the sequential fine-tune of the same weights."""
    table = accuracy_table(runs, ("dataset", "model"))
    first = runs.drop_duplicates(["dataset", "model"]).set_index(["dataset", "model"])
    for column in ("arrangement", "weights", "epochs", "train_images", "image_size"):
        table[column] = [first.loc[(d, m), column] for d, m in zip(table["dataset"], table["model"])]
    pretrained = ~table["weights"].str.startswith("random")
    table["paper_acc"] = [paper_table.get(d, {}).get(m, float("nan")) if p else float("nan")
                          for d, m, p in zip(table["dataset"], table["model"], pretrained)]
    sequential = table[table["branch_depth"] == table["num_layers"]].set_index("dataset")["our_acc"]
    table["minus_sequential"] = table["our_acc"] - table["dataset"].map(sequential)
    table["ours_minus_paper"] = table["our_acc"] - table["paper_acc"]
    columns = ["dataset", "model", "arrangement", "weights", "params", "paper_acc", "our_acc", "our_acc_low",
               "our_acc_high", "ours_minus_paper", "minus_sequential", "seeds", "test_images", "epochs",
               "train_images", "image_size", "seconds_per_run", "train_tflop"]
    return table.rename(columns={"test_acc": "our_acc"})[columns]


def finetune_claims(runs: pd.DataFrame) -> list[AccuracyClaim]:
    """Per dataset and parallel arrangement: the regrouped weights fine-tune at least as well as the sequential
    ViT (the claim is "no worse": a difference above -1 point)."""
    claims = []
    for dataset, rows in runs.groupby("dataset", sort=False):
        sequential = rows[rows["branch_depth"] == rows["num_layers"]]["model"].iloc[0]
        for model, arrangement_words in dict.fromkeys(zip(rows["model"], rows["arrangement"])):
            if model != sequential:
                claims.append(AccuracyClaim(dataset, model, sequential, f"regrouped as {arrangement_words}, the "
                                            f"weights fine-tune within 1 point of the sequential ViT on {dataset}",
                                            threshold=-1.0))
    return claims


def table4_verdicts(table: pd.DataFrame) -> list[Verdict]:
    """The paper's Table 4 accuracy per dataset: judged against our sequential fine-tune of ImageNet weights
    (our interval against the paper's figure, 1 point either side counting as reproduced), or not testable here
    when the weights are random."""
    verdicts = []
    for _, row in table[table["arrangement"].str.startswith("sequential")].iterrows():
        claim = f"ViT-B/16 fine-tunes to the paper's Table 4 accuracy on {row['dataset']}"
        if row["weights"].startswith("random"):
            verdicts.append(judge(claim, float("nan"), float("nan"), float("nan"),
                                  not_testable="torchvision's ImageNet ViT-B/16 weights are not available here; a "
                                               "random-weights fine-tune says nothing about Table 4"))
        elif math.isnan(row["paper_acc"]):
            verdicts.append(judge(claim, float("nan"), float("nan"), float("nan"),
                                  not_testable="the paper has no number for this dataset"))
        else:
            gap, low, high = (row["our_acc"] - row["paper_acc"], row["our_acc_low"] - row["paper_acc"],
                              row["our_acc_high"] - row["paper_acc"])
            verdicts.append(judge(claim, gap, low, high, threshold=-1.0, paper=float(row["paper_acc"])))
    return verdicts
