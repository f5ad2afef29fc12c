"""Profiles (how big an experiment is) and the model sweeps that the table notebooks share.

Three profiles scale every experiment:
- `ci`: seconds per notebook, a few hundred images; used by the notebook regression tests.
- `quick`: a reduced version on the offline datasets that fits this project's 2-core CPU budget
  (the whole suite in about an hour); the default of `make reproduce`.
- `gpu`: the full offline datasets (CIFAR-10, Fashion-MNIST) at the authors' width, sized so that the whole suite
  takes about 20 minutes on one H100 (`python -m paraformer.estimate --profile gpu` prints the estimate).
- `paper`: the papers' datasets and 500 epochs; meant for GPUs. Hyperparameters the papers omit are
  our choices and are stated here.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
from scipy import stats

from .config import METHODS, ConfigError, DataConfig, ModelConfig, Recipe
from .data import ImageData, load_data
from .train import RunResult, train


@dataclass(frozen=True)
class Profile:
    name: str
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

    def data_config(self, dataset: str) -> DataConfig:
        return DataConfig(dataset=dataset, n_train=self.n_train, n_test=self.n_test, val_fraction=self.val_fraction)

    def model_config(self, name: str, data: ImageData) -> ModelConfig:
        """Para-F-m-n (`name` = "m-n") sized for this profile and fitted to `data`."""
        if data.image_size not in self.patch_size:
            raise ConfigError(f"profile {self.name!r} has no patch size for {data.image_size}px images; "
                              f"add it to Profile.patch_size (known: {sorted(self.patch_size)})")
        return ModelConfig.from_name(
            name, image_size=data.image_size, in_channels=data.in_channels, num_classes=data.num_classes,
            patch_size=self.patch_size[data.image_size], width=self.width, num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio, dropout=self.dropout,
        )

    def describe(self) -> str:
        subset = f"{self.n_train or 'all'} train / {self.n_test or 'all'} test images"
        if self.val_fraction:
            subset += f" ({self.val_fraction:.0%} of train held out for validation)"
        return (f"profile `{self.name}`: {subset} per dataset; width {self.width}, {self.num_heads} heads, "
                f"MLP ratio {self.mlp_ratio:g}, dropout {self.dropout:g}; {self.recipe.describe()}; "
                f"seeds {list(self.seeds)}")


PROFILES = {
    "ci": Profile(
        name="ci", datasets=("fashion_mnist",), n_train=512, n_test=200, width=32, num_heads=2, mlp_ratio=2.0,
        dropout=0.0, recipe=Recipe(epochs=4, batch_size=32, lr=2e-3, weight_decay=0.05, warmup_epochs=0.5,
                                   augment=()),
    ),
    # Small batches give more optimizer steps for the same CPU time, and in 10 epochs augmentation only slows
    # learning: on Para-F-1-1, batch 32 without augmentation reached 73.7% (Fashion-MNIST) and 36.0% (CIFAR-10)
    # against 65.9% and 32.2% at batch 64 with flips (measured 2026-11-23).
    "quick": Profile(
        name="quick", datasets=("cifar10", "fashion_mnist"), n_train=2500, n_test=1000, width=64, num_heads=4,
        mlp_ratio=2.0, dropout=0.0, recipe=Recipe(epochs=10, batch_size=32, lr=2e-3, weight_decay=0.05,
                                                  warmup_epochs=1.0, augment=()),
    ),
    # Between quick and paper: every image of the offline CIFAR-10 (50,000 / 10,000) and Fashion-MNIST (60,000 /
    # 10,000) at native size with patch 4, the authors' width (192, 3 heads, MLP ratio 4), one seed. The recipe is
    # a short from-scratch ViT recipe: batch 512 with AdamW at lr 1e-3 (the usual 5e-4 per 256 images, halved for
    # stability without a long warmup), 3 warmup epochs and cosine decay, label smoothing 0.1, and random crop
    # (4 px zero padding) + flip, which are batched on the device. RandAugment, mixup and dropout are left out:
    # they pay off over hundreds of epochs, not 40, and RandAugment runs image by image. torch.compile is on:
    # ignored where it cannot run (see Recipe.compile). Epochs are set by the time budget (the estimate above).
    "gpu": Profile(
        name="gpu", datasets=("cifar10", "fashion_mnist"), n_train=None, n_test=None, width=192, num_heads=3,
        mlp_ratio=4.0, dropout=0.0, recipe=Recipe(epochs=40, batch_size=512, lr=1e-3, weight_decay=0.05,
                                                  warmup_epochs=3.0, augment=("flip", "crop"), compile=True),
    ),
    # The 2024 paper gives only "500 epochs, ViT-style patches and position encoding", and (its Table 1) holds
    # 5% of each training set out for validation, which we do too. Width, heads and
    # dropout follow the authors' public ParaFormer code (width 192, 3 heads, dropout 0.1); the optimizer
    # recipe is a standard from-scratch ViT recipe. RandAugment is left out so that data loading does not
    # dominate GPU time; add it to Recipe.augment to test its effect.
    "paper": Profile(
        name="paper", datasets=("cifar10", "cifar100", "stl10", "oxford_pets", "flowers102"), n_train=None,
        n_test=None, width=192, num_heads=3, mlp_ratio=4.0, dropout=0.1, val_fraction=0.05,
        recipe=Recipe(epochs=500, batch_size=128, lr=5e-4, weight_decay=0.05, warmup_epochs=5.0),
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called `name`, made the active one: from here on `config.results_dir()` (run cache, tables,
    figures) is that profile's folder, so a notebook writes where its profile belongs however it was started."""
    if not isinstance(name, str) or name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    from .config import set_active_profile

    set_active_profile(name)
    return PROFILES[name]


def run_sweep(profile: Profile, model_names: list[str], datasets: tuple[str, ...] | None = None,
              progress: bool = True, methods: tuple[str, ...] = ("joint",),
              seeds: tuple[int, ...] | None = None) -> tuple[pd.DataFrame, list[RunResult]]:
    """Train (or fetch from the run cache) every model with every method (`Recipe.method`) on every dataset
    with every seed (the profile's unless given).

    Returns one row per run (dataset, model, method, seed, accuracy, size, time, provenance) and the records.
    """
    rows, results = [], []
    for dataset in datasets or profile.datasets:
        data_config = profile.data_config(dataset)
        data = load_data(data_config)
        for name, method, seed in itertools.product(model_names, methods, seeds or profile.seeds):
            model_config = profile.model_config(name, data)
            result = train(model_config, data_config, replace(profile.recipe, seed=seed, method=method), data=data,
                           progress=progress)
            results.append(result)
            rows.append({
                "dataset": dataset, "model": model_config.name, "method": method,
                "branch_depth": model_config.branch_depth, "num_layers": model_config.num_layers, "seed": seed,
                "test_images": len(data.test_labels), "test_acc": result.final_test_acc,
                "best_test_acc": max(h["test_acc"] for h in result.history), "num_params": result.num_params,
                "train_seconds": result.wall_seconds, "cached": result.cached, "run_key": result.key,
                "data_source": result.data_source, "device": result.device, "code_version": result.code_version,
                "code_digest": result.code_digest,
            })
    return pd.DataFrame(rows), results


def compare_with_paper(runs: pd.DataFrame, paper_table: dict) -> pd.DataFrame:
    """Mean (and std over seeds) of our accuracy beside the paper's, one row per dataset and model."""
    grouped = runs.groupby(["dataset", "model", "branch_depth", "num_layers", "test_images"], sort=False)
    table = grouped.agg(ours=("test_acc", "mean"), ours_std=("test_acc", "std"), seeds=("seed", "count"),
                        params=("num_params", "first"), train_seconds=("train_seconds", "sum")).reset_index()
    table["paper"] = pd.to_numeric([paper_table.get(d, {}).get(m) for d, m in zip(table["dataset"], table["model"])])
    table["ours_minus_paper"] = table["ours"] - table["paper"]
    # Binomial standard error of the mean accuracy over all test predictions: the measurement noise that a
    # difference between two cells has to exceed (seed-to-seed variation comes on top, in our_acc_std).
    p = table["ours"] / 100
    table["ours_se"] = 100 * (p * (1 - p) / (table["test_images"] * table["seeds"])) ** 0.5
    columns = ["dataset", "model", "branch_depth", "num_layers", "params", "paper", "ours", "ours_se", "ours_std",
               "ours_minus_paper", "seeds", "test_images", "train_seconds"]
    return table[columns].rename(columns={"paper": "paper_acc", "ours": "our_acc", "ours_se": "our_acc_se",
                                          "ours_std": "our_acc_std"})


def difference_noise(accuracy: float, test_images: int) -> float:
    """Two standard errors (in points) of the difference between two accuracies near `accuracy` percent, each
    measured on `test_images` predictions: what a difference must exceed to stand out from test-set noise."""
    p = accuracy / 100
    return 2 * math.sqrt(2) * 100 * math.sqrt(p * (1 - p) / test_images)


def trend_summary(table: pd.DataFrame) -> list[str]:
    """Per dataset, in words: does our accuracy rise with the number of layers, as the paper's does, and
    are the steps larger than the noise of measuring an accuracy on this many test images?"""
    lines = []
    for dataset, rows in table.sort_values("num_layers").groupby("dataset", sort=False):
        accs = rows["our_acc"].tolist()
        rises = sum(b > a for a, b in zip(accs, accs[1:]))
        steps = len(accs) - 1
        verdict = ("rises at every step" if rises == steps else "never rises" if rises == 0
                   else f"rises at {rises} of {steps} steps")
        overall = accs[-1] - accs[0]
        spread = " -> ".join(f"{m.removeprefix('Para-F-')}: {a:.1f}" for m, a in zip(rows["model"], accs))
        line = f"**{dataset}**: our accuracy {verdict} ({spread}; {overall:+.1f} points overall)."
        n = int(rows["test_images"].iloc[0] * rows["seeds"].min())
        threshold = difference_noise(rows["our_acc"].mean(), n)
        line += (f" With {n} test predictions per model, a difference between two models must exceed about "
                 f"{threshold:.1f} points (two standard errors) to stand out from test-set noise: the overall "
                 f"change of {overall:+.1f} points {'does' if abs(overall) > threshold else 'does not'}.")
        paper = rows["paper_acc"].dropna()
        if len(paper):
            gap = rows["ours_minus_paper"].dropna()
            line += (f" Paper: {paper.iloc[0]:.1f} -> {paper.iloc[-1]:.1f}; ours minus paper ranges from "
                     f"{gap.min():+.1f} to {gap.max():+.1f} points.")
        else:
            line += " The paper has no number for this dataset."
        lines.append(line)
    return lines


def depth_sweep_summary(table: pd.DataFrame, paper_table: dict) -> list[str]:
    """Per dataset, in words: do our runs show the 2024 paper's two depth findings (Table 3 against Table 2)?
    (1) deeper branches beat Para-F-1-24 at the same 24 layers; (2) Para-F-6-6 beats Para-F-2-24 and 3-24.
    `table` holds both sweeps (compare_with_paper rows); `paper_table` maps dataset -> model -> the paper's %."""
    lines = []
    for dataset, rows in table.groupby("dataset", sort=False):
        acc = rows.set_index("model")["our_acc"]
        paper = paper_table.get(dataset, {})
        needed = ["Para-F-1-24", "Para-F-6-6", "Para-F-2-24", "Para-F-3-24"]
        if any(name not in acc for name in needed):
            lines.append(f"**{dataset}**: needs {', '.join(needed)} to test the findings; this run has "
                         f"{', '.join(acc.index)}.")
            continue
        n = int((rows["test_images"] * rows["seeds"]).min())
        noise = difference_noise(acc.mean(), n)

        def compare(a: str, b: str) -> tuple[str, bool]:
            """The comparison in words, and whether `a` wins beyond noise."""
            gap = acc[a] - acc[b]
            word = "beats" if gap > noise else "loses to" if gap < -noise else "is within noise of"
            text = f"{a.removeprefix('Para-F-')} {word} {b.removeprefix('Para-F-')} ({gap:+.1f})"
            if a in paper and b in paper:
                text += f" [paper {paper[a] - paper[b]:+.1f}]"
            return text, gap > noise

        deeper = [name for name in acc.index if name.endswith("-24") and name != "Para-F-1-24"]
        first, won_first = zip(*(compare(name, "Para-F-1-24") for name in deeper))
        second, won_second = zip(*(compare("Para-F-6-6", name) for name in ("Para-F-2-24", "Para-F-3-24")))
        wins, both = sum(won_first), sum(won_second)
        lines.append(
            f"**{dataset}** (differences in points; beyond two standard errors of a difference, "
            f"{noise:.1f} points at {n} test predictions, counts as a win or loss): "
            f"(1) deeper branches beat Para-F-1-24 at 24 layers in {wins} of {len(deeper)} cases: "
            + "; ".join(first) + ". "
            f"(2) Para-F-6-6, a plain ViT of depth 6, beats {both} of 2-24 and 3-24: " + "; ".join(second) + ". "
            f"In our run finding (1) {'holds' if wins == len(deeper) else 'fails'} and finding (2) "
            f"{'holds' if both == 2 else 'fails'}" + ("." if paper else "; the paper has no numbers for this dataset."))
    return lines


def profile_record(profile: Profile) -> dict:
    """The profile as plain data, for printing in notebooks beside the results it produced."""
    record = asdict(profile)
    record["recipe"] = asdict(profile.recipe)
    return record


# --- the 2025 paper: ParaFormer against ViT, under every training method (notebooks 03 and 04) ---------------

@dataclass(frozen=True)
class Comparison:
    """A ParaFormer trained by every method of `paraformer.progressive`, against the ViT with as many layers
    (so as many parameters) under the same recipe. A validation split is held out so that compression
    (notebook 04) chooses branches on it, never on the test split; both notebooks then share the runs."""

    profile: Profile
    paraformer: str  # Para-F-m-n name of the ParaFormer; the ViT is Para-F-n-n

    @property
    def vit(self) -> str:
        layers = ModelConfig.from_name(self.paraformer).num_layers
        return f"{layers}-{layers}"


_paper = PROFILES["paper"]
COMPARISONS = {
    "ci": Comparison(replace(PROFILES["ci"], seeds=(0, 1), val_fraction=0.1), "1-4"),
    # Six depth-1 branches against ViT-6: the authors' variant costs m(m+1)/2 + m branch passes per
    # minibatch, so a few branches keep 5 methods x 3 seeds x 2 datasets within about 20 minutes here.
    "quick": Comparison(replace(PROFILES["quick"], seeds=(0, 1, 2), val_fraction=0.1), "1-6"),
    # One seed: the paired comparison over seeds is quick's job; at full scale one seed's test-set noise is small.
    "gpu": Comparison(replace(PROFILES["gpu"], val_fraction=0.1), "1-6"),
    # The 2025 paper's datasets, and the authors' public code's shape and length: 8 branches of depth 2,
    # 300 epochs, 10% of the training set held out. The code upsamples images to 224 px with patch 16; we keep
    # the native size with patch 4 (8 x 8 or 7 x 7 patches), which suits 32 px images better.
    "paper": Comparison(replace(_paper, datasets=("cifar10", "cifar100", "fashion_mnist"), seeds=(0, 1, 2),
                                val_fraction=0.1, recipe=replace(_paper.recipe, epochs=300)), "2-16"),
}


def get_comparison(profile: str) -> Comparison:
    get_profile(profile)  # the same error for an unknown name
    return COMPARISONS[profile]


def method_label(model: str, method: str, vit: str) -> str:
    """'ViT-6' for the ViT, else 'Para-F-1-6 prefix'."""
    if model == f"Para-F-{vit}":
        return f"ViT-{vit.split('-')[1]}"
    return f"{model} {method}"


def run_comparison(comparison: Comparison, datasets: tuple[str, ...] | None = None, methods: tuple[str, ...] = METHODS,
                   seeds: tuple[int, ...] | None = None, progress: bool = True) -> tuple[pd.DataFrame, list[RunResult]]:
    """The ViT (joint training) and the ParaFormer under each of `methods`: one row per run, with a `label`."""
    vit_runs, vit_results = run_sweep(comparison.profile, [comparison.vit], datasets, progress, seeds=seeds)
    para_runs, para_results = run_sweep(comparison.profile, [comparison.paraformer], datasets, progress, methods, seeds)
    runs = pd.concat([vit_runs, para_runs], ignore_index=True)
    runs["label"] = [method_label(m, k, comparison.vit) for m, k in zip(runs["model"], runs["method"])]
    return runs, vit_results + para_results


def versus_vit_table(runs: pd.DataFrame, paper_gain: float) -> pd.DataFrame:
    """Per dataset and label: mean and std over seeds, and the difference to the ViT of the same seed
    (paired, so that seed-to-seed variation shared by both models cancels), beside the paper's best gain."""
    vit = runs[runs["label"].str.startswith("ViT")].set_index(["dataset", "seed"])["test_acc"]
    runs = runs.assign(minus_vit=[acc - vit.get((d, s), float("nan"))
                                  for d, s, acc in zip(runs["dataset"], runs["seed"], runs["test_acc"])])
    table = runs.groupby(["dataset", "label", "model", "method"], sort=False).agg(
        params=("num_params", "first"), our_acc=("test_acc", "mean"), our_acc_std=("test_acc", "std"),
        seeds=("seed", "count"), ours_minus_vit=("minus_vit", "mean"), ours_minus_vit_std=("minus_vit", "std"),
        seconds_per_run=("train_seconds", "mean"), test_images=("test_images", "first")).reset_index()
    is_vit = table["label"].str.startswith("ViT")
    table.loc[is_vit, ["ours_minus_vit", "ours_minus_vit_std"]] = float("nan")
    table["p_value"] = [paired_p_value(m, sd, n) for m, sd, n in
                        zip(table["ours_minus_vit"], table["ours_minus_vit_std"], table["seeds"])]
    table["paper_best_gain_over_vit"] = [float("nan") if v else paper_gain for v in is_vit]
    order = {dataset: i for i, dataset in enumerate(dict.fromkeys(runs["dataset"]))}
    return table.sort_values("dataset", key=lambda d: d.map(order), kind="stable").reset_index(drop=True)


def paired_p_value(mean: float, std: float, n: int) -> float:
    """Two-sided p-value of a paired t-test that the mean of `n` per-seed differences is zero (NaN for n < 2).
    It measures seed-to-seed variation only: every seed is tested on the same test images."""
    if n < 2 or not math.isfinite(mean) or not math.isfinite(std):
        return float("nan")
    if std == 0:
        return 0.0 if mean else 1.0
    return float(2 * stats.t.sf(abs(mean) / (std / math.sqrt(n)), df=n - 1))


def versus_vit_summary(table: pd.DataFrame, paper_gain: float) -> list[str]:
    """Per dataset, in words: which ParaFormer variants beat the ViT, by how much, and beyond noise or not."""
    lines = []
    for dataset, rows in table.groupby("dataset", sort=False):
        vit = rows[rows["label"].str.startswith("ViT")].iloc[0]
        paras = rows[~rows["label"].str.startswith("ViT")].sort_values("ours_minus_vit", ascending=False)
        n = int(vit["seeds"])
        parts = []
        for _, r in paras.iterrows():
            p = r["p_value"]
            verdict = "" if math.isnan(p) else f", p = {p:.2f}" + (" (significant at 5%)" if p < 0.05 else "")
            parts.append(f"{r['method']} {r['ours_minus_vit']:+.2f} ± {r['ours_minus_vit_std']:.2f}{verdict}")
        best = paras.iloc[0]
        verdict = ("beats" if best["ours_minus_vit"] > 0 else "does not beat")
        lines.append(f"**{dataset}**: {vit['label']} reaches {vit['our_acc']:.2f} ± {vit['our_acc_std']:.2f} % "
                     f"({n} seeds). Our best ParaFormer ({best['method']}) {verdict} it: {best['ours_minus_vit']:+.2f} "
                     f"points, against the paper's up to +{paper_gain:.2f}. Differences to the ViT of the same seed, "
                     f"mean ± std over seeds (p: paired t-test over seeds): " + "; ".join(parts) + ".")
    return lines


def learning_curves(runs: pd.DataFrame, results: list[RunResult]) -> pd.DataFrame:
    """One row per run and epoch: test accuracy against epochs and against cumulative training seconds."""
    rows = []
    for (_, run), result in zip(runs.iterrows(), results):
        seconds = 0.0
        for h in result.history:
            seconds += h["train_seconds"]
            rows.append({"dataset": run["dataset"], "label": run["label"], "method": run["method"],
                         "seed": run["seed"], "epoch": h["epoch"], "train_seconds": seconds,
                         "test_acc": h["test_acc"], "branches": h["branches"]})
    return pd.DataFrame(rows)


def time_to_target(curves: pd.DataFrame, reference: str, fraction: float = 0.95) -> pd.DataFrame:
    """Per dataset and label: the first epoch (and its mean cumulative training seconds) at which the
    seed-mean test accuracy reaches `fraction` of the final seed-mean accuracy of the `reference` label."""
    mean = curves.groupby(["dataset", "label", "epoch"], sort=False)[["test_acc", "train_seconds"]].mean().reset_index()
    rows = []
    for dataset, per_dataset in mean.groupby("dataset", sort=False):
        ref = per_dataset[per_dataset["label"] == reference]
        target = fraction * ref.loc[ref["epoch"].idxmax(), "test_acc"]
        for label, curve in per_dataset.groupby("label", sort=False):
            hit = curve[curve["test_acc"] >= target]
            rows.append({"dataset": dataset, "label": label, "target_acc": target,
                         "epochs_to_target": hit["epoch"].min() if len(hit) else float("nan"),
                         "seconds_to_target": hit.loc[hit["epoch"].idxmin(), "train_seconds"] if len(hit) else float("nan"),
                         "final_acc": curve.loc[curve["epoch"].idxmax(), "test_acc"],
                         "total_seconds": curve["train_seconds"].max()})
    return pd.DataFrame(rows)


def convergence_summary(targets: pd.DataFrame, reference: str) -> list[str]:
    """Per dataset, in words: which methods reach the target sooner than the reference, in epochs and seconds."""
    lines = []
    for dataset, rows in targets.groupby("dataset", sort=False):
        ref = rows[rows["label"] == reference].iloc[0]
        parts = []
        for _, r in rows.iterrows():
            if math.isnan(r["epochs_to_target"]):
                parts.append(f"{r['label']} never (final {r['final_acc']:.1f})")
            else:
                parts.append(f"{r['label']} after {int(r['epochs_to_target'])} epoch(s) / {r['seconds_to_target']:.1f} s")
        faster = [r["label"] for _, r in rows.iterrows() if r["label"] != reference
                  and not math.isnan(r["seconds_to_target"]) and r["seconds_to_target"] < ref["seconds_to_target"]]
        sooner = [r["label"] for _, r in rows.iterrows() if r["label"] != reference
                  and not math.isnan(r["epochs_to_target"]) and r["epochs_to_target"] < ref["epochs_to_target"]]
        lines.append(f"**{dataset}** (target {ref['target_acc']:.1f}% = {ref['target_acc'] / ref['final_acc']:.2f} x "
                     f"{reference}'s final seed-mean accuracy): " + "; ".join(parts) + ". "
                     f"Sooner than {reference} in epochs: {', '.join(sooner) or 'none'}; "
                     f"in training seconds: {', '.join(faster) or 'none'}.")
    return lines
