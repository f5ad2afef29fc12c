"""The claims report: every paper claim the suite tests, with its verdict, gathered from the notebooks' tables.

Each notebook writes the verdicts on the papers' own claims (its headline verdicts, not every comparison behind
them) to `tables/claims_<notebook>.csv` of its profile's results folder (`write_claims`). The last notebook reads
those files for every profile that has them (`collect_claims`) and writes `results/REPORT.md` (`write_report`): one
row per claim, the paper's figure, ours with its interval, the verdict and its reason, per profile and device. The
report is made from the tables alone, never by hand, and states which runs (code, device) the tables came from.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from scipy import stats

from ..core.files import atomic_write_text
from ..core.paths import project_root, results_dir, results_root
from .estimate import Estimate, estimate as estimate_runs
from .stats import Verdict, judge
from .tables import write_table

CLAIM_COLUMNS = ["paper", "claim", "paper_figure", "ours", "low", "high", "interval_pct", "minimum_detectable",
                 "verdict", "reason", "notebook", "profile", "device"]
PROFILE_ORDER = ("quick", "gpu", "paper", "ci")  # columns of the report, where a profile has results
REPORTED = ("quick", "gpu", "paper")  # the profiles whose results are committed; ci's are a test's, reported alone
README_START = "<!-- claims: written by notebooks/99_report.ipynb (make reproduce) from results/tables/claims_*.csv -->"
README_END = "<!-- claims end -->"


def claim_rows(verdicts: list[Verdict], paper: str | list[str], notebook: str, profile: str,
               device: str) -> pd.DataFrame:
    """Verdicts as rows of a claims table (`CLAIM_COLUMNS`); `paper`: the paper of every verdict, or one each."""
    papers = [paper] * len(verdicts) if isinstance(paper, str) else list(paper)
    if len(papers) != len(verdicts):
        raise ValueError(f"claim_rows got {len(verdicts)} verdicts but {len(papers)} papers")
    rows = [{"paper": paper, "claim": v.claim, "paper_figure": v.paper, "ours": v.ours, "low": v.low,
             "high": v.high, "interval_pct": 100 * v.confidence, "minimum_detectable": v.minimum_detectable,
             "verdict": v.verdict, "reason": v.reason, "notebook": notebook, "profile": profile, "device": device}
            for paper, v in zip(papers, verdicts)]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def write_claims(verdicts: list[Verdict], paper: str | list[str], notebook: str, profile: str,
                 device: str) -> pd.DataFrame:
    """`tables/claims_<notebook>.csv` (and .md) in `profile`'s results folder; returns the rows."""
    rows = claim_rows(verdicts, paper, notebook, profile, device)
    write_table(rows, f"claims_{notebook}", f"Claims tested by notebook {notebook} ({profile} profile)",
                ["read by the report notebook (99_report), which gathers every notebook's claims"], profile=profile)
    return rows


def reported_profiles(profile: str) -> tuple[str, ...]:
    """The profiles the report of `profile` gathers: the committed ones (`REPORTED`), or ci's alone (a test's)."""
    return ("ci",) if profile == "ci" else REPORTED


def collect_claims(profiles: tuple[str, ...], root: Path | None = None) -> pd.DataFrame:
    """Every `claims_*.csv` of `profiles` under the results root (quick's tables at the top, every other profile's
    in <root>/<profile>/tables), in notebook order. A claims file that is not a claims table is refused by name."""
    root = Path(root) if root is not None else results_root()
    folders = [root / "tables" if name == "quick" else root / name / "tables" for name in profiles]
    frames = []
    for folder in folders:
        for path in sorted(folder.glob("claims_*.csv")):
            table = pd.read_csv(path)
            if list(table.columns) != CLAIM_COLUMNS:
                raise ValueError(f"{path} is not a claims table (columns {list(table.columns)}); delete it or rerun "
                                 "its notebook")
            frames.append(table)
    if not frames:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def _ours(row) -> str:
    if row["verdict"] == "not testable here" or not math.isfinite(row["ours"]):
        return "-"
    return f"{row['ours']:.3g} [{row['low']:.3g}, {row['high']:.3g}]"


def report_table(claims: pd.DataFrame) -> pd.DataFrame:
    """One row per (paper, claim), and per profile that tested it: ours with its interval, the verdict, the
    minimum detectable difference of an inconclusive one, and the device."""
    profiles = [p for p in PROFILE_ORDER if p in set(claims["profile"])]
    rows = []
    for (paper, claim), group in claims.groupby(["paper", "claim"], sort=False):
        figure = group["paper_figure"].dropna()
        row = {"paper": paper, "claim": claim, "paper's figure": f"{figure.iloc[0]:g}" if len(figure) else "-"}
        for profile in profiles:
            found = group[group["profile"] == profile]
            if found.empty:
                row.update({f"{profile}: ours": "", f"{profile}: verdict": "", f"{profile}: device": ""})
                continue
            r = found.iloc[-1]
            verdict = r["verdict"]
            if verdict == "inconclusive" and pd.notna(r["minimum_detectable"]):
                verdict += f" (detects {r['minimum_detectable']:.2g})"
            row.update({f"{profile}: ours": _ours(r), f"{profile}: verdict": verdict,
                        f"{profile}: device": r["device"]})
        rows.append(row)
    return pd.DataFrame(rows)


def report_markdown(claims: pd.DataFrame, notes: list[str]) -> str:
    """The report as Markdown: the verdict table, counts per verdict, then each claim's reason."""
    table = report_table(claims)
    counts = claims.groupby(["profile", "verdict"]).size().unstack(fill_value=0)
    lines = ["# Claims report", "",
             "Written by `notebooks/99_report.ipynb` from the claims tables of the other notebooks "
             "(`results/tables/claims_*.csv`, and `results/<profile>/tables/` for other profiles); do not edit.", "",
             table.to_markdown(index=False), "", "## Verdicts per profile", "",
             counts.reset_index().to_markdown(index=False),
             "", "## Why", ""]
    for _, r in claims.iterrows():
        lines.append(f"- **{r['claim']}** ({r['profile']}, {r['device']}): {r['verdict']}; {r['reason']}")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_report(claims: pd.DataFrame, notes: list[str], profile: str) -> Path:
    """`REPORT.md` in `profile`'s results folder (the results root for quick), and, for quick, the README's
    results table (`update_readme`)."""
    path = atomic_write_text(report_markdown(claims, notes), results_dir(profile) / "REPORT.md")
    if profile == "quick":  # the committed results: the README's results table follows them
        update_readme(project_root() / "README.md", claims)
    return path


def readme_block(claims: pd.DataFrame) -> str:
    """The README's results table: per claim, the paper's figure and each committed profile's figure and verdict,
    between the markers `update_readme` looks for."""
    shown = claims[claims["profile"].isin(REPORTED)]
    if shown.empty:
        body = "No claims tables yet: `make reproduce` writes them (and this table)."
    else:
        table = report_table(shown)
        keep = ["claim", "paper's figure"] + [c for c in table.columns if c.endswith((": ours", ": verdict"))]
        body = table[keep].to_markdown(index=False)
    return f"{README_START}\n{body}\n{README_END}"


def update_readme(path: Path, claims: pd.DataFrame) -> bool:
    """Replace the README's block between the markers by `readme_block(claims)`; True if it changed. Refuses a
    README without exactly one pair of markers."""
    path = Path(path)
    text = path.read_text()
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise ValueError(f"{path} needs exactly one '{README_START}' line and one '{README_END}' line around its "
                         "results table")
    before, rest = text.split(README_START)
    _, after = rest.split(README_END)
    new = before + readme_block(claims) + after
    if new != text:
        atomic_write_text(new, path)
    return new != text


# --- convergence, the one claim without a table of paired accuracies ---------------------------------------

def epochs_to_target(curves: pd.DataFrame, reference: str, fraction: float = 0.95) -> pd.DataFrame:
    """Per dataset, label and seed: the first epoch whose accuracy (on the per-epoch test images) reaches
    `fraction` of the reference label's seed-mean final accuracy; a run that never does counts as one epoch more
    than it trained (`censored`)."""
    rows = []
    for dataset, per_dataset in curves.groupby("dataset", sort=False):
        ref = per_dataset[per_dataset["label"] == reference]
        final = ref[ref["epoch"] == ref["epoch"].max()]["test_acc"].mean()
        target = fraction * final
        for (label, seed), curve in per_dataset.groupby(["label", "seed"], sort=False):
            hit = curve[curve["test_acc"] >= target]
            last = int(curve["epoch"].max())
            rows.append({"dataset": dataset, "label": label, "seed": seed, "target_acc": target,
                         "epochs": int(hit["epoch"].min()) if len(hit) else last + 1, "censored": hit.empty})
    return pd.DataFrame(rows)


def convergence_verdicts(epochs: pd.DataFrame, reference: str, labels: list[str], alpha: float = 0.05) -> list[Verdict]:
    """ "<label> reaches the target in fewer epochs than <reference>", per dataset and label: the paired (by seed)
    difference reference minus label, with a t interval at the Bonferroni level over the family; not testable
    with fewer than 2 seeds."""
    family = [(d, label) for d in dict.fromkeys(epochs["dataset"]) for label in labels]
    level = alpha / max(1, len(family))
    verdicts = []
    for dataset, label in family:
        rows = epochs[epochs["dataset"] == dataset]
        ref = rows[rows["label"] == reference].set_index("seed")["epochs"]
        other = rows[rows["label"] == label].set_index("seed")["epochs"]
        seeds = sorted(set(ref.index) & set(other.index))
        claim = f"{label} reaches 95% of {reference}'s final accuracy in fewer epochs on {dataset}"
        if len(seeds) < 2:
            verdicts.append(judge(claim, float("nan"), float("nan"), float("nan"),
                                  not_testable=f"{len(seeds)} paired seed(s); an interval needs at least 2"))
            continue
        diff = pd.Series([ref[s] - other[s] for s in seeds], dtype=float)
        mean, sd = float(diff.mean()), float(diff.std(ddof=1))
        half = float(stats.t.ppf(1 - level / 2, len(seeds) - 1) * sd / math.sqrt(len(seeds)))
        censored = int(rows[rows["label"].isin([label, reference])]["censored"].sum())
        verdict = judge(claim, mean, mean - half, mean + half, 0.0, confidence=1 - level,
                        correction=f"t over {len(seeds)} seeds, Bonferroni over {len(family)}",
                        minimum_detectable=float((stats.t.ppf(1 - alpha / 2, len(seeds) - 1)
                                                  + stats.norm.ppf(0.8)) * sd / math.sqrt(len(seeds))))
        if censored:
            verdict = Verdict(**{**verdict.to_dict(), "reason": verdict.reason + f" ({censored} run(s) never "
                                 "reached the target: counted one epoch past their last)"})
        verdicts.append(verdict)
    return verdicts


# --- notebook 99 ------------------------------------------------------------------------------------------------

NOTEBOOK = "99_report"


def plan(profile: str) -> list:
    """Notebook 99 trains nothing: it gathers the other notebooks' claims tables."""
    return []


def estimate(profile: str, flops_per_second=None) -> Estimate:
    return estimate_runs(NOTEBOOK, profile, [], flops_per_second, "trains nothing: it gathers the other notebooks' "
                         "claims tables")


def run(profile: str) -> pd.DataFrame:
    """Gather the claims of the profiles `profile`'s report covers and write its REPORT.md (and, for quick, the
    README's results table); returns the claims."""
    claims = collect_claims(reported_profiles(profile))
    notes = [f"profiles: {', '.join(sorted(set(claims['profile'])))}; each claim's device is in its row",
             "ours: the measured effect (an accuracy difference in points, or a ratio) with its interval; its level is "
             "in the notebook's claims table (95%, or higher after Holm's or Bonferroni's correction)"]
    write_report(claims, notes, profile)
    return claims
