"""Notebook 04, compression by selective branch usage (the 2025 paper's "up to 15.07x"): keep k of a trained
ParaFormer's m branches, the first k (`prefix`) or chosen by forward selection on the validation split (`greedy`);
the notebook's markdown states the protocol. The test split never chooses: neither the branches nor, for every seed,
how many to keep (the seed-mean validation accuracy does). Every kept model is built for real
(`ParaFormer.select_branches`, no weights of dropped branches) and makes its own test predictions, so that kept and
full models (and a ViT of the kept size) are compared on the same images and seeds by paired tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.config import METHODS, ConfigError, ModelConfig, Recipe
from ..core.data import ImageData
from ..core.flops import inference_flops_per_image
from ..core.model import ParaFormer, load_model, save_model
from ..core.paths import results_dir
from ..core.runcache import RunResult, load_trained_model
from ..training.evaluation import predict, prepare_batch
from .accuracy import AccuracyClaim, judge_claims, claims_note, verdict_table
from .estimate import Estimate, estimate as estimate_runs
from .linear_baseline import linear_accuracies
from .paper import BEST_COMPRESSION, PAPER_2025
from .plan import PlannedRun, execute, sweep, sweep_rows
from .profiles import get_profile
from .report import write_claims
from .stats import Verdict, accuracy_interval, judge, render
from .tables import provenance, save_figure, write_table  # noqa: F401 (save_figure: the notebook's figure)

NOTEBOOK = "04_compression"


def forward_flops(model: ParaFormer) -> int:
    """FLOPs of one image's forward pass through `model` (all its branches; see `paraformer.core.flops`)."""
    return inference_flops_per_image(model.config)


@torch.inference_mode()
def branch_cls_outputs(model: ParaFormer, images: torch.Tensor, data: ImageData, batch_size: int = 512) -> torch.Tensor:
    """(num_branches, images, width): every branch's CLS output, so that any subset's sum is a cheap addition."""
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        tokens = model.embed(prepare_batch(images[start:start + batch_size], data, model.config, device))
        chunks.append(torch.stack([branch(tokens) for branch in model.branches]).cpu())
    return torch.cat(chunks, dim=1)


@torch.inference_mode()
def _subset_accuracy(model: ParaFormer, outputs: torch.Tensor, labels: torch.Tensor, subset: list[int]) -> float:
    total = outputs[subset[0]]
    for b in subset[1:]:  # in selection order, one at a time, as the compressed model sums them
        total = total + outputs[b]
    head_device = next(model.parameters()).device
    predicted = model.classify(total.to(head_device)).argmax(1).cpu()
    return 100.0 * (predicted == labels).sum().item() / len(labels)


def greedy_order(model: ParaFormer, outputs: torch.Tensor, labels: torch.Tensor) -> list[tuple[list[int], float]]:
    """Forward selection: for k = 1..m, the chosen subset of k branches and its accuracy on `labels`."""
    chosen, steps = [], []
    remaining = list(range(model.num_branches))
    while remaining:
        scores = {b: _subset_accuracy(model, outputs, labels, chosen + [b]) for b in remaining}
        best = max(remaining, key=lambda b: (scores[b], -b))  # ties go to the earlier branch
        chosen.append(best)
        remaining.remove(best)
        steps.append((list(chosen), scores[best]))
    return steps


def compression_table(model: ParaFormer, data: ImageData, recipe: Recipe) -> pd.DataFrame:
    """One row per (selection, k): the kept branches, validation and test accuracy, the three ratios, and the
    kept model's per-image test correctness (`correct`)."""
    if len(data.val_labels) == 0:
        raise ConfigError("compression chooses branches on a validation split, and this data has none; "
                          "set DataConfig.val_fraction > 0")
    val_outputs = branch_cls_outputs(model, data.val_images, data)
    full_params, full_flops, m = model.num_parameters(), forward_flops(model), model.num_branches
    candidates = [("prefix", list(range(k))) for k in range(1, m + 1)]
    candidates += [("greedy", subset) for subset, _ in greedy_order(model, val_outputs, data.val_labels)]
    rows = []
    for selection, subset in candidates:
        kept = model.select_branches(subset)
        params = kept.num_parameters()
        (predicted,) = predict(kept, data.test_images, data, recipe, lambda m, x: [m(x)])
        correct = (predicted == data.test_labels).numpy()
        rows.append({
            "selection": selection, "branches_kept": len(subset),
            "layers_kept": len(subset) * model.config.branch_depth, "branches": " ".join(map(str, subset)),
            "val_acc": _subset_accuracy(model, val_outputs, data.val_labels, subset),
            "test_acc": 100.0 * correct.mean(), "correct": correct,
            "params": params, "param_ratio": full_params / params, "branch_ratio": m / len(subset),
            "flops_ratio": full_flops / forward_flops(kept)})
    return pd.DataFrame(rows)


def smallest_within(table: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per selection, the fewest branches whose *validation* accuracy is within `tolerance` points of the full
    model's: the compression one would choose without looking at the test split."""
    picks = []
    for _, rows in table.groupby("selection", sort=False):
        full = rows.loc[rows["branches_kept"].idxmax()]
        ok = rows[rows["val_acc"] >= full["val_acc"] - tolerance]
        pick = ok.loc[ok["branches_kept"].idxmin()].copy()
        pick["full_val_acc"], pick["full_test_acc"] = full["val_acc"], full["test_acc"]
        picks.append(pick)
    return pd.DataFrame(picks).reset_index(drop=True)


# --- every seed, and the claims ---------------------------------------------------------------------------

def vit_sizes(model_config) -> list[int]:
    """Layers of the ViTs trained from scratch beside the compressed models: k x branch depth for every k that
    compresses at least 2x (k <= m / 2). The full size is notebook 03's ViT."""
    return [k * model_config.branch_depth for k in range(1, model_config.num_branches // 2 + 1)]


def _plans(profile: str, datasets) -> tuple[list[PlannedRun], list[PlannedRun]]:
    comparison = get_profile(profile).comparison
    sizes = vit_sizes(ModelConfig.from_name(comparison.paraformer))
    return (sweep(NOTEBOOK, comparison.scale, [comparison.paraformer], datasets, METHODS),
            sweep(NOTEBOOK, comparison.scale, [f"{n}-{n}" for n in sizes], datasets))


def plan(profile: str, datasets=None) -> list[PlannedRun]:
    """Notebook 03's ParaFormers of every method and seed, then the ViTs of `vit_sizes`, every seed."""
    return sum(_plans(profile, datasets), [])


def estimate(profile: str, datasets=None, flops_per_second=None) -> Estimate:
    return estimate_runs(NOTEBOOK, profile, plan(profile, datasets), flops_per_second)


def describe(profile: str) -> str:
    comparison = get_profile(profile).comparison
    return (f"ParaFormer Para-F-{comparison.paraformer}, seeds {list(comparison.scale.seeds)}; this run: "
            f"{comparison.scale.describe()}")


@dataclass
class Runs:
    runs: pd.DataFrame  # the ParaFormers (`plan.sweep_rows`), one per dataset, method and seed
    records: list[RunResult]  # of `runs`, row by row
    table: pd.DataFrame  # `compression_table` of every one of them
    vits: pd.DataFrame  # the ViTs of the kept sizes, from scratch
    vit_layers: list[int]  # their sizes


def run(profile: str, datasets=None, progress: bool = True) -> Runs:
    """Train (or fetch: notebook 03 trains the ParaFormers) the plan, and compress every ParaFormer."""
    folder, (planned_paraformers, planned_vits) = results_dir(profile), _plans(profile, datasets)
    trained = execute(planned_paraformers + planned_vits, folder, progress)
    paraformers, vits = trained[:len(planned_paraformers)], trained[len(planned_paraformers):]
    rows = sweep_rows(paraformers)
    # a kept model costs no training of its own: what trained it is its full model's run
    compressed = pd.concat([compression_table(load_trained_model(t.result, folder), t.data, t.planned.recipe).assign(
        dataset=t.planned.data.dataset, method=t.planned.recipe.method, seed=t.planned.recipe.seed, train_tflop=tflop)
        for t, tflop in zip(paraformers, rows["train_tflop"])], ignore_index=True)
    return Runs(rows, [t.result for t in paraformers], compressed, sweep_rows(vits),
                vit_sizes(paraformers[0].planned.model))


def compression_means(table: pd.DataFrame, vit_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per dataset, method, selection and kept branches, over seeds: test accuracy with its 95% interval; with
    `vit_runs` (`plan.sweep_rows`), the ViT of as many layers from scratch beside it (NaN for sizes not trained)."""
    rows = []
    for (dataset, method, selection, k), group in table.groupby(["dataset", "method", "selection", "branches_kept"],
                                                                sort=False):
        acc, low, high = accuracy_interval(np.stack(group.sort_values("seed")["correct"]))
        first = group.iloc[0]
        rows.append({"dataset": dataset, "method": method, "selection": selection, "branches_kept": k,
                     "layers_kept": first["layers_kept"], "params": first["params"],
                     "param_ratio": first["param_ratio"], "branch_ratio": first["branch_ratio"],
                     "flops_ratio": first["flops_ratio"], "seeds": len(group), "val_acc": group["val_acc"].mean(),
                     "test_acc": acc, "test_acc_low": low, "test_acc_high": high,
                     "train_tflop": group["train_tflop"].mean(),
                     "greedy_subsets": "; ".join(group["branches"]) if selection == "greedy" else ""})
    means = pd.DataFrame(rows)
    if vit_runs is not None:
        vits = vit_runs.groupby(["dataset", "num_layers"])[["test_acc", "train_tflop"]].mean()
        for column, name in (("test_acc", "vit_same_size_acc"), ("train_tflop", "vit_same_size_tflop")):
            means[name] = [vits[column].get((d, n), float("nan"))
                           for d, n in zip(means["dataset"], means["layers_kept"])]
    return means


def compression_overview(means: pd.DataFrame) -> pd.DataFrame:
    """The reader's summary of `compression_means`: one row per dataset, method and selection, one column per
    number of kept branches ("1/6" to "6/6") holding the mean test accuracy over seeds."""
    m = int(means["branches_kept"].max())
    wide = means.pivot_table(index=["dataset", "method", "selection"], columns="branches_kept", values="test_acc",
                             sort=False)
    wide.columns = [f"{k}/{m}" for k in wide.columns]
    return wide.reset_index()


def arms(table: pd.DataFrame, vit_runs: pd.DataFrame) -> pd.DataFrame:
    """Every compared model as a row per dataset and seed with its per-image correctness, labelled "<method>
    <selection> k/m" for kept models and "ViT-n from scratch": the runs table `judge_claims` reads."""
    m = int(table["branches_kept"].max())
    kept = table.assign(label=[f"{method} {selection} {k}/{m}" for method, selection, k in
                               zip(table["method"], table["selection"], table["branches_kept"])])
    vits = vit_runs.assign(label=[f"ViT-{n} from scratch" for n in vit_runs["num_layers"]])
    return pd.concat([rows[["dataset", "seed", "label", "correct"]] for rows in (kept, vits)], ignore_index=True)


def compression_claims(means: pd.DataFrame, picks: pd.DataFrame, vit_layers: list[int],
                       tolerance: float) -> list[AccuracyClaim]:
    """The paired comparisons behind the compression claims, per dataset: (a) each method's chosen prefix model
    loses less than `tolerance` points against its full model; (b) the first branch alone of each progressive
    method beats joint training's first branch; (c) each method's first branch beats a ViT of the same layers
    trained from scratch (the other sizes are in the tables, not tested, to keep the family small)."""
    m = int(means["branches_kept"].max())
    claims = []
    for dataset in dict.fromkeys(means["dataset"]):
        methods = list(dict.fromkeys(means[means["dataset"] == dataset]["method"]))
        for _, pick in picks[(picks["dataset"] == dataset) & (picks["selection"] == "prefix")].iterrows():
            k = int(pick["branches_kept"])
            if k < m:
                claims.append(AccuracyClaim(
                    dataset, f"{pick['method']} prefix {k}/{m}", f"{pick['method']} prefix {m}/{m}",
                    f"{pick['method']}: its first {k} of {m} branches (x{pick['param_ratio']:.2f}) lose under "
                    f"{tolerance:g} point on {dataset}", column="label", threshold=-tolerance))
        claims += [AccuracyClaim(dataset, f"{method} prefix 1/{m}", f"joint prefix 1/{m}", f"{method}: its first "
                                 f"branch beats joint's first branch on {dataset}", column="label")
                   for method in methods if method != "joint" and "joint" in methods]
        depth = int(means["layers_kept"].min())  # of one branch
        claims += [AccuracyClaim(dataset, f"{method} prefix 1/{m}", f"ViT-{depth} from scratch", f"{method}: its first "
                                 f"branch beats ViT-{depth} from scratch on {dataset}", column="label")
                   for method in methods if depth in vit_layers]
    return claims


def best_compression_verdict(picks: pd.DataFrame, means: pd.DataFrame, paper_ratio: float) -> Verdict:
    """The paper's "up to x15.07": not testable where even one kept branch compresses less than that; else whether
    a model kept within the tolerance (on validation) reaches it."""
    reachable = float(means["param_ratio"].max())
    best = float(picks["param_ratio"].max())
    claim = f"compression up to x{paper_ratio:g} (parameters, within tolerance on validation)"
    if reachable < paper_ratio:
        m = int(means["branches_kept"].max())
        return judge(claim, best, best, best, paper_ratio, paper=paper_ratio,
                     not_testable=f"a model of {m} branches kept to one is only x{reachable:.2f} smaller, so x"
                                  f"{paper_ratio:g} is out of reach by construction (our best within tolerance: "
                                  f"x{best:.2f})")
    # the ratio of a chosen model is exact: the verdict is whether the tolerance admits one that large
    return judge(claim, best, best, best, paper_ratio - 1e-9, paper=paper_ratio)


def export_best(picks: pd.DataFrame, runs: pd.DataFrame, records: list[RunResult], profile: str) -> str:
    """Save the full and the most compressed chosen model (first seed) as ParaFormer files under the profile's
    models/ folder, load the compressed one back, and say whether it gives the same logits."""
    best = picks.loc[picks["param_ratio"].idxmax()]
    index = list(zip(runs["dataset"], runs["method"])).index((best["dataset"], best["method"]))
    record = records[index]
    full = load_trained_model(record, results_dir(profile)).eval()
    kept = full.select_branches(list(range(int(best["branches_kept"])))).eval()
    folder = results_dir(profile) / "models"
    full_file = save_model(full, folder / f"{record.name}-full.pt")
    kept_file = save_model(kept, folder / f"{record.name}-first{int(best['branches_kept'])}.pt")
    loaded = load_model(kept_file).eval()
    x = torch.randn(8, full.config.in_channels, full.config.image_size, full.config.image_size,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = torch.equal(loaded(x), kept(x))
    return (f"{best['dataset']} {best['method']} (seed {runs.iloc[index]['seed']}): {full.num_branches} -> "
            f"{loaded.num_branches} branches; file {full_file.stat().st_size / 1e3:.0f} kB -> "
            f"{kept_file.stat().st_size / 1e3:.0f} kB; the loaded model gives the same logits: {same}")


@dataclass
class Findings:
    means: pd.DataFrame  # every kept subset, mean over seeds (`compression_means`)
    overview: pd.DataFrame  # the reader's view of it (`compression_overview`)
    picks: pd.DataFrame  # per method and selection, the fewest branches within the tolerance on validation
    claims: list[AccuracyClaim]
    verdicts: list[Verdict]
    headline: Verdict  # the paper's "up to x15.07": the report's


def findings(result: Runs, profile: str, tolerance: float = 1.0) -> Findings:
    """Writes tables/compression*.{csv,md} and the report's claim. `tolerance`: accuracy points (on validation) a
    compressed model may lose against the full model."""
    scale = get_profile(profile).comparison.scale
    means = compression_means(result.table, result.vits)
    picks = pd.concat([smallest_within(rows, tolerance).assign(dataset=d, method=m)
                       for (d, m), rows in means.groupby(["dataset", "method"], sort=False)], ignore_index=True)
    found = compression_claims(means, picks, result.vit_layers, tolerance)
    runs = arms(result.table, result.vits)
    linear = linear_accuracies([scale.data_config(d) for d in dict.fromkeys(runs["dataset"])], results_dir(profile))
    verdicts = judge_claims(runs, found, profile, linear)
    headline = best_compression_verdict(picks, means, BEST_COMPRESSION)
    notes = [
        "every kept model is a ParaFormer holding only the kept branches; val_acc (mean over seeds) chose the greedy "
        "subsets (greedy_subsets: each seed's, 0-based); test_acc: mean over seeds on all test images, with its 95% "
        "interval; vit_same_size_acc: a ViT with as many layers, trained from scratch with the same recipe and seeds "
        "(for kept sizes of x2 or more)",
        "param_ratio: full / kept parameters (stem and head included); branch_ratio: m / k; flops_ratio: forward "
        "FLOPs per image (paraformer.core.flops)",
        "train_tflop: counted training FLOPs of the full model's run (mean over seeds; a kept model needs no training "
        "of its own); vit_same_size_tflop: those of the same-size ViT's run",
        scale.describe() + "; the ParaFormers are notebook 03's runs",
        *provenance(result.runs),
    ]
    write_table(means, "compression_all", "Compression: every kept branch subset, mean over seeds", notes,
                profile=profile)
    columns = ["dataset", "method", "selection", "branches_kept", "param_ratio", "branch_ratio", "flops_ratio",
               "full_val_acc", "val_acc", "full_test_acc", "test_acc", "test_acc_low", "test_acc_high",
               "vit_same_size_acc", "train_tflop", "vit_same_size_tflop", "seeds"]
    write_table(picks[columns], "compression", f"Compression within {tolerance:g} point of the full model (chosen on "
                "validation, mean over seeds)",
                [f"paper: {PAPER_2025}, abstract: 'up to {BEST_COMPRESSION}x model compression through selective "
                 f"branch usage' (how it is counted is not public); ours: {render(headline)}", *notes],
                profile=profile)
    write_table(verdict_table(verdicts, found), "compression_claims",
                "Compression claims: each comparison, paired by seed and test image",
                [claims_note("a 'lose under' claim holds when the difference exceeds minus the tolerance"),
                 *notes[2:3]], profile=profile)
    write_claims([headline], PAPER_2025, NOTEBOOK, profile, result.runs["device"].iloc[0])
    return Findings(means, compression_overview(means), picks, found, verdicts, headline)
