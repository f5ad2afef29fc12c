"""Notebook 02, the 2024 paper's Table 3: 24 layers in branches of depth 2, 3 and 6, and the depth-6 ViT, beside
Table 2's depth-1 sweep (notebook 01's runs, for the figure and the first finding).

The paper's two findings, against Table 2: (1) at 24 layers, deeper branches beat depth-1 ones; (2) a plain ViT of
depth 6 beats 24 layers in branches of depth 2 or 3. Each is made of paired comparisons (by seed and test image,
Holm over the table's), and holds when all of them do (`stats.all_of`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..core.paths import results_dir
from .accuracy import AccuracyClaim, beats, claims_note, compare_with_paper, judge_claims, verdict_table
from .estimate import Estimate, estimate as estimate_runs
from .layer_sweep import MODELS as LAYER_MODELS, accuracy_note
from .linear_baseline import linear_accuracies, with_linear
from .paper import PAPER_2024, PAPER_EPOCHS, TABLE2_LAYER_SWEEP, TABLE3_DEPTH_SWEEP, combine, source, table3_exceptions
from .plan import PlannedRun, execute, sweep, sweep_rows
from .profiles import get_profile
from .report import write_claims
from .stats import Verdict, all_of, judge
from .tables import provenance, save_figure, write_table  # noqa: F401 (save_figure: the notebook's figure)

NOTEBOOK = "02_depth_sweep"
DEPTH_MODELS = ("6-6", "2-24", "3-24", "6-24")  # Table 3, Para-F-m-n names
PAPER_TABLES = combine(TABLE2_LAYER_SWEEP, TABLE3_DEPTH_SWEEP)
DEPTH_FINDINGS = {
    "deeper branches beat Para-F-1-24": [("Para-F-2-24", "Para-F-1-24"), ("Para-F-3-24", "Para-F-1-24"),
                                         ("Para-F-6-24", "Para-F-1-24")],
    "Para-F-6-6 beats Para-F-2-24 and 3-24": [("Para-F-6-6", "Para-F-2-24"), ("Para-F-6-6", "Para-F-3-24")],
}


def _sweeps(profile: str, depth_models, layer_models, datasets) -> tuple[list[PlannedRun], list[PlannedRun]]:
    scale = get_profile(profile).scale
    datasets = tuple(datasets or scale.depth_sweep_datasets)
    return sweep(NOTEBOOK, scale, depth_models, datasets), sweep(NOTEBOOK, scale, layer_models, datasets)


def plan(profile: str, depth_models=DEPTH_MODELS, layer_models=LAYER_MODELS, datasets=None) -> list[PlannedRun]:
    """The depth sweep, then notebook 01's layer sweep again, on Table 3's datasets (the profile's unless given)."""
    return sum(_sweeps(profile, depth_models, layer_models, datasets), [])


def run(profile: str, depth_models=DEPTH_MODELS, layer_models=LAYER_MODELS, datasets=None,
        progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or fetch) the plan: the depth sweep's rows and the layer sweep's (`plan.sweep_rows`)."""
    depth, layer = _sweeps(profile, depth_models, layer_models, datasets)
    trained = execute(depth + layer, results_dir(profile), progress)
    return sweep_rows(trained[:len(depth)]), sweep_rows(trained[len(depth):])


def estimate(profile: str, depth_models=DEPTH_MODELS, layer_models=LAYER_MODELS, datasets=None,
             flops_per_second=None) -> Estimate:
    return estimate_runs(NOTEBOOK, profile, plan(profile, depth_models, layer_models, datasets), flops_per_second)


def describe(profile: str, datasets=None) -> str:
    scale = get_profile(profile).scale
    return f"{scale.describe()}; datasets {', '.join(datasets or scale.depth_sweep_datasets)}"


def claims(runs: pd.DataFrame, paper_table: dict = PAPER_TABLES) -> list[AccuracyClaim]:
    """The comparisons behind the two depth findings, per dataset that has every model they need."""
    found = []
    for dataset in dict.fromkeys(runs["dataset"]):
        have = set(runs[runs["dataset"] == dataset]["model"])
        found += [beats(dataset, better, worse, paper_table, "table3", PAPER_EPOCHS) for pairs in DEPTH_FINDINGS.values()
                  for better, worse in pairs if {better, worse} <= have]
    return found


def depth_findings(found: list[AccuracyClaim], verdicts: list[Verdict]) -> list[Verdict]:
    """Each finding per dataset as one verdict made of its comparisons' (`all_of`); a finding whose models a
    dataset lacks is not testable there."""
    out = []
    for dataset in dict.fromkeys(c.dataset for c in found):
        for finding, pairs in DEPTH_FINDINGS.items():
            parts = [v for c, v in zip(found, verdicts) if c.dataset == dataset and (c.better, c.worse) in pairs]
            out.append(all_of(f"{finding} on {dataset}", parts, **_source(finding)) if len(parts) == len(pairs) else judge(
                f"{finding} on {dataset}", float("nan"), float("nan"), float("nan"),
                not_testable=f"the sweep lacks some of {sorted({m for p in pairs for m in p})}"))
    return out


def _source(finding: str) -> dict:
    """Table 3's source; the 6-6 finding says "consistently", which the paper's own table does not bear out on
    every dataset (`paper.table3_exceptions`)."""
    found = source("table3")
    if finding.startswith("Para-F-6-6"):
        exceptions = "; ".join(f"{d}: {words}" for d, words in table3_exceptions().items())
        found["source_note"] += f"; the paper says 'consistently', but its own Table 3 does not ({exceptions})"
    return found


@dataclass
class Findings:
    table: pd.DataFrame  # Table 3's models: ours beside the paper's
    both: pd.DataFrame  # both sweeps, for the figure
    claims: list[AccuracyClaim]
    verdicts: list[Verdict]  # one per claim
    findings: list[Verdict]  # the two findings per dataset: the report's


def findings(depth_runs: pd.DataFrame, layer_runs: pd.DataFrame, profile: str,
             linear: dict[str, float] | None = None) -> Findings:
    """Writes tables/table3_depth_sweep*.{csv,md} and the findings as the report's claims."""
    both_runs = pd.concat([layer_runs, depth_runs], ignore_index=True)
    if linear is None:  # the baseline on the runs' own images and split (cached like a run)
        scale = get_profile(profile).scale
        linear = linear_accuracies([scale.data_config(d) for d in dict.fromkeys(both_runs["dataset"])],
                                   results_dir(profile))
    table = with_linear(compare_with_paper(depth_runs, TABLE3_DEPTH_SWEEP), linear)
    found = claims(both_runs)
    verdicts = judge_claims(both_runs, found, profile, linear)
    summary = depth_findings(found, verdicts)
    notes = [
        accuracy_note(table, "Table 3"),
        "Para-F-6-6 is one branch of 6 layers: the depth-6 ViT the paper compares with.",
        get_profile(profile).scale.describe(),
        *provenance(depth_runs),
    ]
    write_table(table, "table3_depth_sweep", "Table 3: depth sweep (24 layers in branches of depth 2, 3, 6; ViT-6), "
                "paper vs ours", notes, profile=profile)
    write_table(verdict_table(verdicts, found), "table3_depth_sweep_claims",
                "Table 3's two findings: each comparison, paired by seed and test image",
                [claims_note("paper: the paper's difference (Tables 2 and 3)"), *notes[2:]], profile=profile)
    write_table(verdict_table(summary), "table3_depth_sweep_findings",
                "Table 3's two findings, each made of its comparisons",
                ["a finding holds when every comparison behind it does (table3_depth_sweep_claims); its figure and "
                 "interval are those of its weakest comparison"], profile=profile)
    write_claims(summary, PAPER_2024, NOTEBOOK, profile, depth_runs["device"].iloc[0])
    return Findings(table, compare_with_paper(both_runs, PAPER_TABLES), found, verdicts, summary)
