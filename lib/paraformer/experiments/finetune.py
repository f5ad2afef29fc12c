"""Notebook 07, the 2024 paper's Table 4: a 12-layer ViT's weights fine-tuned as the sequential ViT (Para-F-12-12)
and regrouped into parallel branches (12 x depth 1, 4 x depth 3), each with a new head.

With torchvision's ImageNet ViT-B/16 (`paraformer.core.weights`) the sequential fine-tune is judged against the
paper's Table 4; without them (no download here) a random 12-layer torchvision ViT stands in, which says nothing
about Table 4 and is said so everywhere its numbers appear. The regroupings are the suite's own question (the paper
has none): with random weights their claims are not testable, and the same comparisons stay in the notebook's tables
as an architecture check (`regrouping_verdicts`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import torchvision

from ..core.config import ConfigError
from ..core.data import DATASETS
from ..core.paths import results_dir
from ..core.runcache import Initialization
from ..core.weights import IMAGENET_VIT, PretrainedUnavailable, config_from_torchvision, from_torchvision, \
    load_imagenet_vit
from .accuracy import AccuracyClaim, accuracy_table, judge_claims, verdict_table
from .estimate import Estimate, estimate as estimate_runs
from .paper import PAPER_2024, TABLE4_FINETUNE
from .plan import PlannedRun, execute, planned, sweep_rows
from .profiles import get_profile
from .report import with_sources, write_claims
from .settings import PRETRAINED_MODES, FinetuneSettings
from .stats import Verdict, judge
from .tables import provenance, save_figure, write_table  # noqa: F401 (save_figure: the notebook's figure)

NOTEBOOK = "07_finetune_pretrained"
_imagenet_vit = functools.lru_cache(maxsize=1)(load_imagenet_vit)  # loaded once per process


def _imagenet_shape() -> torchvision.models.VisionTransformer:
    """torchvision's vit_b_16 without weights (on the meta device): its shape is all a plan needs, so that a plan
    or an estimate never waits for (or fails on) the download of the weights."""
    with torch.device("meta"):
        return torchvision.models.vit_b_16()


def arrangement(branch_depth: int, layers: int = 12) -> str:
    return ("sequential (1 branch)" if branch_depth == layers
            else f"{layers // branch_depth} branches x depth {branch_depth}")


@functools.lru_cache(maxsize=None)
def imagenet_available(mode: str) -> tuple[bool, str]:
    """Whether notebook 07 fine-tunes ImageNet weights under `mode` ("auto", "required", "never"), and one line
    saying which weights it fine-tunes. "required" fails without them."""
    if mode not in PRETRAINED_MODES:
        raise ConfigError(f"pretrained={mode!r}; choose one of {PRETRAINED_MODES}")
    if mode == "never":
        return False, "Weights: random (this profile never loads ImageNet weights); NOT a pretrained fine-tune."
    try:
        _imagenet_vit()
        return True, f"Weights: torchvision {IMAGENET_VIT} (ImageNet-1k, Google's original ViT-B/16)."
    except PretrainedUnavailable:
        if mode == "required":
            raise
        # the line goes into committed notebooks and tables: no machine path, no raw network error (the error
        # itself, with both, is what pretrained="required" raises)
        return False, ("Weights not available: torchvision's ImageNet weights for vit_b_16 are not in its cache and "
                       "could not be downloaded, so this run fine-tunes RANDOM weights and its numbers are not a "
                       "pretrained fine-tune (pretrained='required' says where to put the file).")


@dataclass(frozen=True)
class Regrouped:
    """Starting weights (see `plan.FromRun`): a 12-layer torchvision ViT's, ImageNet's or the random stand-in of
    `seed` (width, heads, patch), folded for `dataset`'s normalization and channels, regrouped into branches of
    `branch_depth`; the head dropped."""

    imagenet: bool
    dataset: str
    image_size: int
    seed: int
    branch_depth: int
    width: int
    heads: int
    patch: int

    @property
    def source(self) -> str:
        return f"torchvision {IMAGENET_VIT}" if self.imagenet else "random (not pretrained)"

    @property
    def description(self) -> str:
        return f"{self.source}, {arrangement(self.branch_depth)}"

    def vit(self) -> torchvision.models.VisionTransformer:
        if self.imagenet:
            return _imagenet_vit()
        with torch.random.fork_rng(devices=[]):  # drawn from its own seed; the global random state is kept
            torch.manual_seed(self.seed)
            return torchvision.models.VisionTransformer(
                image_size=self.image_size, patch_size=self.patch, num_layers=12, num_heads=self.heads,
                hidden_dim=self.width, mlp_dim=4 * self.width)

    def initialization(self, folder: Path) -> Initialization:
        spec = DATASETS[self.dataset]
        with torch.random.fork_rng(devices=[]):  # the ParaFormers built on the way draw weights they then replace
            model = from_torchvision(self.vit(), spec.in_channels, spec.mean, spec.std).regroup(self.branch_depth)
        return Initialization(self.description, {k: v for k, v in model.state_dict().items()
                                                 if not k.startswith("head.")})


def _weights(settings: FinetuneSettings, imagenet: bool, dataset: str, image_size: int, seed: int,
             depth: int) -> Regrouped:
    if not imagenet and image_size not in settings.random_patch:
        raise ConfigError(f"finetune settings {settings.name!r} have no patch size for {image_size}px images; add it "
                          f"to FinetuneSettings.random_patch (known: {sorted(settings.random_patch)})")
    return Regrouped(imagenet, dataset, image_size, seed, depth, settings.random_width, settings.random_heads,
                     settings.random_patch.get(image_size, 16))


def plan(profile: str, pretrained: str | None = None, datasets=None, *, imagenet: bool | None = None
         ) -> list[PlannedRun]:
    """Per dataset and seed, the 12-layer ViT's weights as the sequential ViT and regrouped into parallel branches
    (`FinetuneSettings.branch_depths`), each with a new head. `pretrained`: "auto", "required" or "never" (None:
    the profile's); ImageNet weights where they are found. `imagenet` (None: look for the weights) plans with or
    without them whether or not they are here (an estimate of runs that will have them)."""
    settings = get_profile(profile).finetune
    if imagenet is None:
        imagenet, _ = imagenet_available(pretrained or settings.pretrained)
    kind = "imagenet" if imagenet else "random"
    runs = []
    for dataset in datasets or settings.datasets:
        # the ImageNet ViT takes its own size (224 px): the images are decoded at it, as train() never resizes
        data = settings.data_config(dataset, _imagenet_shape().image_size if imagenet else None)
        spec = DATASETS[dataset]
        size = data.image_size or spec.image_size
        for seed in settings.seeds:
            for depth in settings.branch_depths:
                weights = _weights(settings, imagenet, dataset, size, seed, depth)
                if imagenet:
                    config = config_from_torchvision(_imagenet_shape(), spec.in_channels)
                else:
                    with torch.device("meta"):  # the config alone: no weights are made
                        config = config_from_torchvision(weights.vit(), spec.in_channels)
                model = replace(config, branch_depth=depth, num_layers=config.num_layers, num_branches=None,
                                num_classes=spec.num_classes)
                runs.append(planned(NOTEBOOK, model, data, replace(settings.recipe, seed=seed),
                                    f"{dataset}-{model.name}-finetune-{kind}", init=weights))
    return runs


def estimate(profile: str, pretrained: str | None = None, datasets=None, flops_per_second=None) -> Estimate:
    """The estimate of `plan`. Where the profile requires ImageNet weights that are not here (`paper` offline), the
    runs are costed as they will train once the weights are in place, and the estimate says the weights are missing:
    an estimate is for planning, and the notebook itself stops without them."""
    try:
        return estimate_runs(NOTEBOOK, profile, plan(profile, pretrained, datasets), flops_per_second)
    except PretrainedUnavailable:
        return estimate_runs(NOTEBOOK, profile, plan(profile, pretrained, datasets, imagenet=True), flops_per_second,
                             note=f"costed with torchvision's ImageNet {IMAGENET_VIT}, which this profile requires and "
                                  f"which is not in torch's cache here: the notebook stops until it is")


def describe(profile: str, pretrained: str | None = None) -> list[str]:
    settings = get_profile(profile).finetune
    return [f"This run: {settings.describe()}", imagenet_available(pretrained or settings.pretrained)[1]]


@dataclass
class Runs:
    runs: pd.DataFrame  # one row per fine-tune (`plan.sweep_rows` with arrangement, weights and images)
    records: list  # their RunResults, row by row
    imagenet: bool  # whether the weights were ImageNet's
    weights_line: str  # which weights, in words


def run(profile: str, pretrained: str | None = None, datasets=None, progress: bool = True) -> Runs:
    """Train (or fetch) the plan: `plan.sweep_rows`, with each fine-tune's arrangement, weights and images."""
    settings = get_profile(profile).finetune
    imagenet, line = imagenet_available(pretrained or settings.pretrained)
    trained = execute(plan(profile, pretrained, datasets), results_dir(profile), progress)
    models = [t.planned.model for t in trained]
    rows = sweep_rows(trained).assign(
        arrangement=[arrangement(m.branch_depth, m.num_layers) for m in models],
        weights=[t.planned.init.source for t in trained], train_images=[len(t.data.train_labels) for t in trained],
        image_size=[m.image_size for m in models], epochs=[len(t.result.history) for t in trained])
    return Runs(rows, [t.result for t in trained], imagenet, line)


# --- tables and claims --------------------------------------------------------------------------------------------

def finetune_table(runs: pd.DataFrame, paper_table: dict = TABLE4_FINETUNE) -> pd.DataFrame:
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
    return table[columns]


PAPER, OURS = "paper", "ours"  # who makes a claim: the paper's text (Table 4), or the suite (the regroupings)
NO_WEIGHTS = ("no pretrained weights here: a fine-tune of random weights says nothing about how pretrained weights "
              "survive regrouping (the same comparison on random weights is an architecture check in the notebook)")


def finetune_claims(runs: pd.DataFrame) -> list[AccuracyClaim]:
    """Per dataset and parallel arrangement: the regrouped weights fine-tune at least as well as the sequential
    ViT (the claim is "no worse": a difference above -1 point)."""
    claims = []
    for dataset, rows in runs.groupby("dataset", sort=False):
        sequential = rows[rows["branch_depth"] == rows["num_layers"]]["model"].iloc[0]
        claims += [AccuracyClaim(dataset, model, sequential, f"regrouped as {words}, the weights fine-tune within 1 "
                                 f"point of the sequential ViT on {dataset}", threshold=-1.0)
                   for model, words in dict.fromkeys(zip(rows["model"], rows["arrangement"])) if model != sequential]
    return claims


def regrouping_verdicts(runs: pd.DataFrame, claims: list[AccuracyClaim], imagenet: bool,
                        profile: str | None = None) -> tuple[list[Verdict], list[Verdict]]:
    """The regrouping claims' verdicts, and the architecture checks: with ImageNet weights the claims judged (paired,
    Holm over them) and no checks; with random weights every claim not testable, and the same comparisons judged
    under a name that says they are an architecture check on random weights."""
    if imagenet:
        return judge_claims(runs, claims, profile), []
    checks = [replace(c, claim=f"architecture check on random weights: {c.claim}") for c in claims]
    return ([judge(c.claim, math.nan, math.nan, math.nan, c.threshold, not_testable=NO_WEIGHTS) for c in claims],
            judge_claims(runs, checks, profile))


def table4_verdicts(table: pd.DataFrame) -> list[Verdict]:
    """The paper's Table 4 accuracy per dataset: judged against our sequential fine-tune of ImageNet weights
    (our interval against the paper's figure, 1 point either side counting as reproduced), or not testable here
    when the weights are random."""
    verdicts = []
    for _, row in table[table["arrangement"].str.startswith("sequential")].iterrows():
        claim, paper = f"ViT-B/16 fine-tunes to the paper's Table 4 accuracy on {row['dataset']}", row["paper_acc"]
        why = ("torchvision's ImageNet ViT-B/16 weights are not available here; a random-weights fine-tune says "
               "nothing about Table 4" if row["weights"].startswith("random") else
               "the paper has no number for this dataset" if math.isnan(paper) else None)
        if why:
            verdicts.append(judge(claim, float("nan"), float("nan"), float("nan"), not_testable=why))
        else:
            verdicts.append(judge(claim, row["our_acc"] - paper, row["our_acc_low"] - paper,
                                  row["our_acc_high"] - paper, threshold=-1.0, paper=float(paper)))
    return verdicts


@dataclass
class Findings:
    table: pd.DataFrame  # `finetune_table`
    paper_verdicts: list[Verdict]  # Table 4's accuracies (not testable with random weights)
    claims: list[AccuracyClaim]  # the regroupings against the sequential fine-tune (ours, not the paper's)
    verdicts: list[Verdict]  # theirs: not testable with random weights (`regrouping_verdicts`)
    checks: list[Verdict]  # the same comparisons on random weights, for the notebook alone; none with ImageNet's

    @property
    def report_verdicts(self) -> list[Verdict]:
        """What the report gets: Table 4's accuracies and the regrouping claims, never the architecture checks."""
        return self.paper_verdicts + self.verdicts

    @property
    def sources(self) -> list[str]:
        """Who makes each of `report_verdicts`: the paper's Table 4, or ours (the regroupings)."""
        return [PAPER] * len(self.paper_verdicts) + [OURS] * len(self.verdicts)


def findings(result: Runs, profile: str) -> Findings:
    """Every table, claim and verdict; writes tables/table4_finetune*.{csv,md} and the report's claims."""
    runs = result.runs
    table = finetune_table(runs)
    paper_verdicts = table4_verdicts(table)
    claims = finetune_claims(runs)
    verdicts, checks = regrouping_verdicts(runs, claims, result.imagenet, profile)
    title = "Table 4: fine-tuning ViT-B/16 (Para-F-12-12) and its parallel regroupings, paper vs ours"
    if not result.imagenet:
        title += " (OUR WEIGHTS ARE RANDOM, NOT PRETRAINED)"
    notes = [
        f"paper_acc: {PAPER_2024}, Table 4 (Google's ImageNet weights, 10 epochs of fine-tuning, full datasets), "
        "shown only beside a fine-tune of those weights; the paper has no parallel regroupings. our_acc: final test "
        "accuracy on all test images, mean over seeds, with its 95% interval (t over seeds with the test images' variance).",
        result.weights_line,
        "minus_sequential: our_acc minus the sequential fine-tune of the same weights on the same dataset; "
        "train_tflop: counted fine-tuning FLOPs per run (paraformer.core.flops)",
        get_profile(profile).finetune.describe(),
        *provenance(runs),
    ]
    write_table(table, "table4_finetune", title, notes, profile=profile)
    found = Findings(table, paper_verdicts, claims, verdicts, checks)
    write_table(verdict_table(found.report_verdicts + checks), "table4_finetune_claims",
                "Table 4's claims: the paper's accuracies, and regrouping the weights into branches (ours)",
                ["regrouping claims and checks: paired by seed and test image, Holm's correction over them, interval "
                 "at confidence interval_pct (%); 'within 1 point' holds when the difference exceeds -1; with random "
                 "weights the claims are not testable and the same comparisons are architecture checks, which the "
                 "report leaves out", result.weights_line], profile=profile)
    write_claims(with_sources(found.report_verdicts, found.sources), PAPER_2024, NOTEBOOK, profile,
                 runs["device"].iloc[0])
    return found
