"""The claims report: every paper claim the suite tests, with its verdict, gathered from the notebooks' tables.

Each notebook writes its headline verdicts on the papers' claims (not every comparison behind them) to
`tables/claims_<notebook>.csv` of its profile's results folder (`write_claims`); the last notebook reads them for
every profile that has them (`collect_claims`) and writes `results/REPORT.md` (`write_report`): one row per claim
with the paper's figure, ours with its interval, the verdict and its reason, per profile and device, made from the
tables alone (never by hand) and stating which runs (code, device) they came from.
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
    rows = [(paper, v.claim, v.paper, v.ours, v.low, v.high, 100 * v.confidence, v.minimum_detectable, v.verdict,
             v.reason, notebook, profile, device) for paper, v in zip(papers, verdicts)]  # in CLAIM_COLUMNS order
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
    frames = []
    for name in profiles:
        for path in sorted((root if name == "quick" else root / name).glob("tables/claims_*.csv")):
            table = pd.read_csv(path)
            if list(table.columns) != CLAIM_COLUMNS:
                raise ValueError(f"{path} is not a claims table (columns {list(table.columns)}); delete it or rerun "
                                 "its notebook")
            frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CLAIM_COLUMNS)


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
            ours = verdict = device = ""
            if not found.empty:
                r = found.iloc[-1]
                verdict, device = r["verdict"], r["device"]
                ours = ("-" if verdict == "not testable here" or not math.isfinite(r["ours"])
                        else f"{r['ours']:.3g} [{r['low']:.3g}, {r['high']:.3g}]")
                if verdict == "inconclusive" and pd.notna(r["minimum_detectable"]):
                    verdict += f" (detects {r['minimum_detectable']:.2g})"
            row.update({f"{profile}: ours": ours, f"{profile}: verdict": verdict, f"{profile}: device": device})
        rows.append(row)
    return pd.DataFrame(rows)


def report_markdown(claims: pd.DataFrame, notes: list[str]) -> str:
    """The report as Markdown: the verdict table, counts per verdict, then each claim's reason."""
    counts = claims.groupby(["profile", "verdict"]).size().unstack(fill_value=0)
    lines = ["# Claims report", "",
             "Written by `notebooks/99_report.ipynb` from the claims tables of the other notebooks "
             "(`results/tables/claims_*.csv`, and `results/<profile>/tables/` for other profiles); do not edit.", "",
             report_table(claims).to_markdown(index=False), "", "## Verdicts per profile", "",
             counts.reset_index().to_markdown(index=False), "", "## Why", ""]
    for _, r in claims.iterrows():
        lines.append(f"- **{r['claim']}** ({r['profile']}, {r['device']}): {r['verdict']}; {r['reason']}")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_report(claims: pd.DataFrame, notes: list[str], profile: str) -> Path:
    """`REPORT.md` in `profile`'s results folder and, for quick, the README's results table."""
    path = atomic_write_text(report_markdown(claims, notes), results_dir(profile) / "REPORT.md")
    if profile == "quick":  # the committed results: the README's results table follows them
        update_readme(project_root() / "README.md", claims)
    return path


def readme_block(claims: pd.DataFrame) -> str:
    """The README's results table (the committed profiles' figures and verdicts), between its markers."""
    shown = claims[claims["profile"].isin(REPORTED)]
    if shown.empty:
        body = "No claims tables yet: `make reproduce` writes them (and this table)."
    else:
        table = report_table(shown)
        keep = ["claim", "paper's figure"] + [c for c in table.columns if c.endswith((": ours", ": verdict"))]
        body = table[keep].to_markdown(index=False)
    return f"{README_START}\n{body}\n{README_END}"


def update_readme(path: Path, claims: pd.DataFrame) -> bool:
    """Put `readme_block(claims)` between the README's markers (exactly one pair); True if it changed."""
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
        target = fraction * ref[ref["epoch"] == ref["epoch"].max()]["test_acc"].mean()
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
    """Write `profile`'s REPORT.md (for quick, the README's table too) from its profiles' claims; returns them."""
    claims = collect_claims(reported_profiles(profile))
    notes = [f"profiles: {', '.join(sorted(set(claims['profile'])))}; each claim's device is in its row",
             "ours: the measured effect (an accuracy difference in points, or a ratio) with its interval; its level is "
             "in the notebook's claims table (95%, or higher after Holm's or Bonferroni's correction)"]
    write_report(claims, notes, profile)
    return claims
