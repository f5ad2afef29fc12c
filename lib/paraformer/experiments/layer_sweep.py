"""Notebook 01, the 2024 paper's Table 2: Para-F-1-n, n parallel branches of one layer, for n = 1, 6, 12, 24.

The claim: accuracy rises with the number of parallel layers. Tested per dataset as the largest model against the
smallest (the headline), then each step of the sweep, each paired by seed and test image, with Holm's correction
over the table's comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..core.paths import results_dir
from .accuracy import AccuracyClaim, beats, claims_note, compare_with_paper, judge_claims, verdict_table
from .estimate import Estimate, estimate as estimate_runs
from .linear_baseline import linear_accuracies, with_linear
from .paper import PAPER_2024, PAPER_EPOCHS, TABLE2_LAYER_SWEEP
from .plan import PlannedRun, execute, sweep, sweep_rows
from .profiles import PROFILES, get_profile
from .report import write_claims
from .stats import Verdict
from .tables import provenance, save_figure, write_table  # noqa: F401 (save_figure: the notebook's figure)

NOTEBOOK = "01_layer_sweep"
MODELS = ("1-1", "1-6", "1-12", "1-24")  # Para-F-m-n names


def plan(profile: str, models=MODELS, datasets=None) -> list[PlannedRun]:
    """Every model on every dataset (the profile's unless given) with every seed."""
    return sweep(NOTEBOOK, get_profile(profile).scale, models, datasets)


def run(profile: str, models=MODELS, datasets=None, progress: bool = True) -> pd.DataFrame:
    """Train (or fetch from the run cache) the plan: one row per run (`plan.sweep_rows`)."""
    return sweep_rows(execute(plan(profile, models, datasets), results_dir(profile), progress))


def estimate(profile: str, models=MODELS, datasets=None, flops_per_second=None) -> Estimate:
    return estimate_runs(NOTEBOOK, profile, plan(profile, models, datasets), flops_per_second)


def describe(profile: str) -> str:
    return get_profile(profile).scale.describe()


def describe_profiles() -> list[str]:
    """Every profile's scale in one line, with its datasets."""
    return [f"{p.scale.describe()}; datasets {', '.join(p.scale.datasets)}" for p in PROFILES.values()]


def claims(runs: pd.DataFrame, paper_table: dict = TABLE2_LAYER_SWEEP) -> list[AccuracyClaim]:
    """Per dataset, the largest sweep model against the smallest (the headline), then each step of the sweep."""
    found = []
    for dataset in dict.fromkeys(runs["dataset"]):
        models = runs[runs["dataset"] == dataset].drop_duplicates("model").sort_values("num_layers")["model"].tolist()
        pairs = ([(models[-1], models[0])] if len(models) > 2 else []) + list(zip(models[1:], models))
        found += [beats(dataset, better, worse, paper_table, "table2", PAPER_EPOCHS) for better, worse in pairs]
    return found


def accuracy_note(table: pd.DataFrame, paper_table: str) -> str:
    """The first note under the paper-vs-ours tables of Tables 2 and 3 (this notebook's and notebook 02's)."""
    return (f"paper_acc: {PAPER_2024}, {paper_table} (500 epochs, full datasets); empty = the paper has no such cell. "
            f"our_acc: final test accuracy on all {table['test_images'].min()} test images, mean over "
            f"{table['seeds'].min()} seed(s); our_acc_low/high: its 95% interval (t over seeds with the test "
            "images' variance); seed_std: std over seeds.")


@dataclass
class Findings:
    table: pd.DataFrame  # per dataset and model: ours with its interval beside the paper's
    claims: list[AccuracyClaim]
    verdicts: list[Verdict]  # one per claim
    headline: list[Verdict]  # per dataset, the largest model against the smallest: the report's


def findings(runs: pd.DataFrame, profile: str, linear: dict[str, float] | None = None) -> Findings:
    """Writes tables/table2_layer_sweep*.{csv,md} and the headline claims of the report."""
    if linear is None:  # the baseline on the runs' own images and split (cached like a run)
        scale = get_profile(profile).scale
        linear = linear_accuracies([scale.data_config(d) for d in dict.fromkeys(runs["dataset"])],
                                   results_dir(profile))
    table = with_linear(compare_with_paper(runs, TABLE2_LAYER_SWEEP), linear)
    found = claims(runs)
    verdicts = judge_claims(runs, found, profile, linear)
    largest = {d: rows.sort_values("num_layers")["model"].tolist() for d, rows in table.groupby("dataset")}
    headline = [v for c, v in zip(found, verdicts) if (c.better, c.worse) == (largest[c.dataset][-1],
                                                                               largest[c.dataset][0])]
    notes = [
        accuracy_note(table, "Table 2"),
        describe(profile),
        *provenance(runs),
    ]
    write_table(table, "table2_layer_sweep", "Table 2: layer sweep (branch depth 1), paper vs ours", notes,
                profile=profile)
    write_table(verdict_table(verdicts, found), "table2_layer_sweep_claims",
                "Table 2's claim, accuracy rises with parallel layers: each comparison, paired by seed and test image",
                [claims_note("paper: the paper's difference (Table 2)"), *notes[1:]], profile=profile)
    write_claims(headline, PAPER_2024, NOTEBOOK, profile, runs["device"].iloc[0])
    return Findings(table, found, verdicts, headline)
