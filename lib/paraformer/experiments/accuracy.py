"""Accuracy tables with intervals, and accuracy claims judged by paired tests (docs/notebooks.md, "Accuracies and
intervals"): every run records which test images its final model got right (`RunResult.correct`), so that two
models are compared image by image and seed by seed (`stats.paired_difference`); `judge_claims` applies Holm's
correction over a notebook's claims and gives each the regime its arms were trained in (`regime_of`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .paper import source
from .regime import Regime
from .stats import PairedClaim, Verdict, accuracy_interval, judge_family, paired_difference


@dataclass(frozen=True)
class AccuracyClaim:
    """ "`better` is more accurate than `worse` on `dataset`", rows of a runs table picked by `column`."""

    dataset: str
    better: str
    worse: str
    claim: str  # in words
    paper: float | None = None  # the paper's difference (better minus worse, points), where it gives one
    column: str = "model"  # the runs table's column that `better` and `worse` name (e.g. "label")
    threshold: float = 0.0  # the claim holds when better minus worse exceeds this (e.g. -1: "loses under 1 point")
    paper_arms: tuple[float, ...] = ()  # the paper's accuracy of each arm (points), where it gives them
    source: str = "paper"  # where the claim comes from (`paper.SOURCES`: paper, summary or ours)
    source_note: str = ""
    paper_epochs: float | None = None  # the paper's training length for these arms, where it says


def correctness(runs: pd.DataFrame, **match) -> tuple[np.ndarray, list[int]]:
    """Per-image correctness of the runs matching `match` (column=value), one row per seed in seed order, and the
    seeds. Refuses an empty selection or one with a seed twice (two runs that a table would silently average)."""
    rows = runs
    for column, value in match.items():
        rows = rows[rows[column] == value]
    if rows.empty:
        raise ValueError(f"no runs match {match}; the table has {sorted(runs.columns)} with e.g. "
                         f"{runs.iloc[0][list(match)].to_dict() if len(runs) else 'no rows'}")
    if rows["seed"].duplicated().any():
        raise ValueError(f"the runs matching {match} have a seed more than once: {sorted(rows['seed'])}; pick one "
                         "method or configuration per comparison")
    rows = rows.sort_values("seed")
    lengths = {len(c) for c in rows["correct"]}
    if len(lengths) != 1:
        raise ValueError(f"the runs matching {match} were scored on different numbers of test images {lengths}")
    return np.stack(list(rows["correct"])), rows["seed"].tolist()


def accuracy_table(runs: pd.DataFrame, keys: tuple[str, ...] = ("dataset", "model"),
                   paper_table: dict | None = None) -> pd.DataFrame:
    """One row per group of `keys`: mean accuracy over seeds, its 95% interval, seeds, test images, parameters,
    training seconds per run, and (with `paper_table`, dataset -> model -> %) the paper's figure beside ours."""
    rows = []
    for values, group in runs.groupby(list(keys), sort=False):
        values = values if isinstance(values, tuple) else (values,)
        correct, seeds = correctness(group, **dict(zip(keys, values)))
        mean, low, high = accuracy_interval(correct)
        row = dict(zip(keys, values))
        for column in ("branch_depth", "num_layers", "method"):
            if column in group and column not in row:
                row[column] = group[column].iloc[0]
        row.update(params=int(group["num_params"].iloc[0]), seeds=len(seeds), test_images=correct.shape[1],
                   our_acc=mean, our_acc_low=low, our_acc_high=high,
                   seed_std=float(group["test_acc"].std()) if len(seeds) > 1 else float("nan"),
                   seconds_per_run=float(group["train_seconds"].mean()))
        if "train_tflop" in group:
            row["train_tflop"] = float(group["train_tflop"].mean())
        if paper_table is not None:
            paper = paper_table.get(row.get("dataset"), {}).get(row.get("model"))
            row["paper_acc"] = float("nan") if paper is None else float(paper)
            row["ours_minus_paper"] = mean - row["paper_acc"]
        rows.append(row)
    return pd.DataFrame(rows)


def compare_with_paper(runs: pd.DataFrame, paper_table: dict) -> pd.DataFrame:
    """Per dataset and model: our mean accuracy over seeds with its 95% interval, beside the paper's."""
    table = accuracy_table(runs, ("dataset", "model"), paper_table)
    columns = ["dataset", "model", "branch_depth", "num_layers", "params", "paper_acc", "our_acc", "our_acc_low",
               "our_acc_high", "ours_minus_paper", "seed_std", "seeds", "test_images", "seconds_per_run"]
    return table[columns + [c for c in ("train_tflop",) if c in table]]


def beats(dataset: str, better: str, worse: str, paper_table: dict, source_key: str,
          paper_epochs: float | None = None) -> AccuracyClaim:
    """"`better` beats `worse` on `dataset`", with the paper's difference and arms where `paper_table` has both;
    `source_key`: the claim's entry in `paper.SOURCES`."""
    paper = paper_table.get(dataset, {})
    both = better in paper and worse in paper
    claim = f"{better.removeprefix('Para-F-')} beats {worse.removeprefix('Para-F-')} on {dataset}"
    return AccuracyClaim(dataset, better, worse, claim, paper[better] - paper[worse] if both else None,
                         paper_arms=(paper[better], paper[worse]) if both else (), paper_epochs=paper_epochs,
                         **source(source_key))


def regime_of(runs: pd.DataFrame, claim: AccuracyClaim, profile: str,
              linear: dict[str, float] | None = None) -> Regime:
    """The regime a claim's arms were trained in: each arm's seed-mean accuracy (points) beside the paper's, chance,
    the linear baseline on the same data (`linear`: dataset -> points), epochs and training images."""
    arms, rows = [], None
    for arm in (claim.better, claim.worse):
        correct, _ = correctness(runs, dataset=claim.dataset, **{claim.column: arm})
        arms.append(100.0 * float(correct.mean()))
        rows = runs[(runs["dataset"] == claim.dataset) & (runs[claim.column] == arm)]
    first = rows.iloc[0]
    return Regime(profile, tuple(arms), claim.paper_arms,
                  chance=100.0 / first["num_classes"] if "num_classes" in rows else None,
                  linear=(linear or {}).get(claim.dataset),
                  epochs=float(first["epochs"]) if "epochs" in rows else None,
                  train_images=int(first["train_images"]) if "train_images" in rows else None,
                  paper_epochs=claim.paper_epochs)


def judge_claims(runs: pd.DataFrame, claims: list[AccuracyClaim], profile: str | None = None,
                 linear: dict[str, float] | None = None, alpha: float = 0.05) -> list[Verdict]:
    """Each claim's paired difference (by seed and image) and verdict, Holm-corrected over all `claims`, with the
    regime its arms were trained in where `profile` is given (`regime_of`; `linear`: dataset -> the linear
    baseline, points)."""
    family = []
    for claim in claims:
        better, better_seeds = correctness(runs, dataset=claim.dataset, **{claim.column: claim.better})
        worse, worse_seeds = correctness(runs, dataset=claim.dataset, **{claim.column: claim.worse})
        if better_seeds != worse_seeds:
            raise ValueError(f"{claim.claim}: the two sides have seeds {better_seeds} and {worse_seeds}; a paired "
                             "comparison needs the same seeds")
        family.append(PairedClaim(claim.claim, paired_difference(better, worse), claim.threshold, claim.paper,
                                  None if profile is None else regime_of(runs, claim, profile, linear),
                                  claim.source, claim.source_note))
    return judge_family(family, alpha)


def claims_note(extra: str = "") -> str:
    """The note under a table of `verdict_table` rows: what its columns mean, then `extra`."""
    return ("ours: accuracy difference in points, paired by seed and test image; low/high: its interval at confidence "
            "interval_pct (%), set by Holm's correction over the comparisons of the same table; minimum_detectable: "
            "the difference this design finds 80% of the time at the 5% level" + (f"; {extra}" if extra else ""))


def verdict_table(verdicts: list[Verdict], claims: list[AccuracyClaim] | None = None) -> pd.DataFrame:
    """One row per verdict (its columns: `claims_note`), after the claim's dataset where `claims` are given."""
    datasets = [{"dataset": c.dataset} for c in claims] if claims is not None else [{}] * len(verdicts)
    return pd.DataFrame([{**d, "claim": v.claim, "ours": v.ours, "low": v.low, "high": v.high,
                          "interval_pct": 100 * v.confidence, "minimum_detectable": v.minimum_detectable,
                          "p_value": v.p_value, "paper": v.paper, "verdict": v.verdict, "reason": v.reason}
                         for d, v in zip(datasets, verdicts)])
