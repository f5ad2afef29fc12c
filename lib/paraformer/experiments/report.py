"""The claims report: every paper claim the suite tests, with its verdict, gathered from the notebooks' tables.

Each notebook writes its headline verdicts on the papers' claims (not every comparison behind them) to
`tables/claims_<notebook>.csv` of its profile's results folder (`write_claims`); the last notebook reads them for
every profile that has them (`collect_claims`) and writes `results/REPORT.md` (`write_report`): one row per claim
with the paper's figure, ours with its interval, the verdict and its reason, per profile and device, made from the
tables alone (never by hand) and stating which runs (code, device) they came from.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
from scipy import stats

from ..core.files import atomic_write_text
from ..core.paths import project_root, results_dir, results_root
from .estimate import Estimate, estimate as estimate_runs
from .regime import FAR_BELOW, LINEAR_MARGIN, Regime, describe as describe_regime
from .stats import VERDICTS, Verdict, headline, judge, render
from .tables import write_table

CLAIM_COLUMNS = ["paper", "claim", "source", "source_note", "paper_figure", "unit", "ours", "low", "high",
                 "interval_pct", "threshold", "minimum_detectable", "p_value", "verdict", "reason", "paper_effect",
                 "regime_status", "arms", "paper_arms", "chance", "linear_acc", "epochs", "train_images",
                 "paper_epochs", "caveat", "notebook", "profile", "device"]
PROFILE_ORDER = ("cpu", "quick", "gpu", "paper", "ci")  # columns of the report, the main one first where it has results
REPORTED = ("cpu", "quick", "gpu", "paper")  # the profiles whose results are committed; ci's are a test's, reported alone
README_START = "<!-- claims: written by notebooks/99_report.ipynb (make reproduce) from results/tables/claims_*.csv -->"
README_END = "<!-- claims end -->"
NBSP = "\u00a0"  # joins the words of a figure so that a table cell never wraps inside it
# A browser also breaks a line after a hyphen inside a word ("Para-F-|1-2"): the unit's names take the no-break one.
NB_HYPHEN = "\u2011"


def _numbers(values: tuple[float, ...]) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def _parse_numbers(text) -> tuple[float, ...]:
    return () if not isinstance(text, str) or not text.strip() else tuple(float(v) for v in text.split())


def _optional(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def claim_rows(verdicts: list[Verdict], paper: str | list[str], notebook: str, profile: str,
               device: str) -> pd.DataFrame:
    """Verdicts as rows of a claims table (`CLAIM_COLUMNS`); `paper`: the paper of every verdict, or one each."""
    papers = [paper] * len(verdicts) if isinstance(paper, str) else list(paper)
    if len(papers) != len(verdicts):
        raise ValueError(f"claim_rows got {len(verdicts)} verdicts but {len(papers)} papers")
    rows = []
    for paper, v in zip(papers, verdicts):
        r = v.regime
        rows.append({
            "paper": paper, "claim": v.claim, "source": v.source, "source_note": v.source_note,
            "paper_figure": v.paper, "unit": v.unit, "ours": v.ours, "low": v.low, "high": v.high,
            "interval_pct": 100 * v.confidence, "threshold": v.threshold, "minimum_detectable": v.minimum_detectable,
            "p_value": v.p_value, "verdict": v.verdict, "reason": v.reason, "paper_effect": v.paper_effect,
            "regime_status": v.regime_status, "arms": _numbers(r.arms) if r else "",
            "paper_arms": _numbers(r.paper_arms) if r else "", "chance": r.chance if r else None,
            "linear_acc": r.linear if r else None, "epochs": r.epochs if r else None,
            "train_images": r.train_images if r else None, "paper_epochs": r.paper_epochs if r else None,
            "caveat": v.caveat, "notebook": notebook, "profile": profile, "device": device})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def verdict_of_row(row: pd.Series) -> Verdict:
    """The verdict a claims-table row holds (the inverse of `claim_rows`), so that every rendering of a committed
    claim goes through `stats.render`."""
    regime = None
    if _parse_numbers(row["arms"]):
        images = _optional(row["train_images"])
        regime = Regime(row["profile"], _parse_numbers(row["arms"]), _parse_numbers(row["paper_arms"]),
                        _optional(row["chance"]), _optional(row["linear_acc"]), _optional(row["epochs"]),
                        None if images is None else int(images), _optional(row["paper_epochs"]))
    return Verdict(row["claim"], row["ours"], row["low"], row["high"], row["threshold"], row["verdict"], row["reason"],
                   _optional(row["paper_figure"]), _optional(row["minimum_detectable"]), row["interval_pct"] / 100,
                   _optional(row["p_value"]), row["unit"], _optional(row["paper_effect"]), regime, row["source"],
                   row["source_note"] if isinstance(row["source_note"], str) else "",
                   row["caveat"] if isinstance(row["caveat"], str) else "")


def claim_line(row: pd.Series) -> str:
    """One line for a committed claim (`stats.render` of `verdict_of_row`)."""
    return render(verdict_of_row(row))


def with_sources(verdicts: list[Verdict], sources: list[str], notes: list[str | None] | None = None) -> list[Verdict]:
    """`verdicts` with their source ("paper", "summary" or "ours") and, where `notes` has one, that note as the
    verdict's caveat (e.g. why it holds by construction), which every rendering shows."""
    if len(sources) != len(verdicts):
        raise ValueError(f"with_sources got {len(verdicts)} verdicts but {len(sources)} sources")
    notes = notes or [None] * len(verdicts)
    return [replace(v, source=src, caveat=note or v.caveat) for v, src, note in zip(verdicts, sources, notes)]


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


def _profile_folder(root: Path, name: str) -> Path:
    return root if name == "quick" else root / name


def collect_claims(profiles: tuple[str, ...], root: Path | None = None) -> pd.DataFrame:
    """Every `claims_*.csv` of `profiles` under the results root (quick's tables at the top, every other profile's
    in <root>/<profile>/tables), in notebook order. A claims file that is not a claims table is refused by name."""
    root = Path(root) if root is not None else results_root()
    frames = []
    for name in profiles:
        for path in sorted(_profile_folder(root, name).glob("tables/claims_*.csv")):
            table = pd.read_csv(path, keep_default_na=True)
            if list(table.columns) != CLAIM_COLUMNS:
                raise ValueError(f"{path} is not a claims table of this version (columns {list(table.columns)}); "
                                 "rerun its notebook, or delete it")
            frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CLAIM_COLUMNS)


def ours_cell(row: pd.Series) -> str:
    """Our figure with its interval and unit, joined by no-break spaces, "+0.75 [-0.27, 2] points", and the unit's
    in-word hyphens no-break ones ("x (Para-F-1-1 on 1 process over ...)"); the numbers keep their minus signs."""
    if row["verdict"] == "not testable here" or not math.isfinite(row["ours"]):
        return "-"
    ratio = row["unit"].startswith("x")
    sign = "+" if not ratio and row["ours"] > 0 else ""
    unit = re.sub(r"(?<=\w)-(?=\w)", NB_HYPHEN, row["unit"])
    return NBSP.join([f"{sign}{row['ours']:.3g}", f"[{row['low']:.3g},", f"{row['high']:.3g}]", *unit.split()])


def verdict_cell(row: pd.Series) -> str:
    """The verdict word with what qualifies it: the scale (`stats.headline`), what an inconclusive design
    detects, and whether the paper's own figure lies inside our interval."""
    verdict = verdict_of_row(row)
    words = headline(verdict)
    if verdict.verdict == "inconclusive" and verdict.minimum_detectable is not None:
        words += f"; detects {verdict.minimum_detectable:.2g}"
    if verdict.paper_effect is not None:
        words += f"; paper's figure {verdict.paper_effect}"
    return words


def _link(row: pd.Series) -> str:
    """Links to the notebook and its claims table, relative to results/REPORT.md."""
    folder = "" if row["profile"] == "quick" else f"{row['profile']}/"
    return (f"[{row['notebook'][:2]}]({folder}notebooks/{row['notebook']}.ipynb) "
            f"[claims]({folder}tables/claims_{row['notebook']}.md)")


def report_table(claims: pd.DataFrame) -> pd.DataFrame:
    """One row per (paper, claim): its source, the paper's figure, and per profile that tested it ours with its
    interval and unit, and the verdict; the links go to the main profile's notebook and claims table."""
    profiles = [p for p in PROFILE_ORDER if p in set(claims["profile"])]
    rows = []
    for (paper, claim), group in claims.groupby(["paper", "claim"], sort=False):
        figure = group["paper_figure"].dropna()
        first = group.iloc[0]
        row = {"paper": paper, "claim": claim, "source": first["source"],
               "paper's figure": f"{figure.iloc[0]:g}" if len(figure) else "-"}
        for profile in profiles:
            found = group[group["profile"] == profile]
            row[f"{profile}: ours"] = ours_cell(found.iloc[-1]) if not found.empty else ""
            row[f"{profile}: verdict"] = verdict_cell(found.iloc[-1]) if not found.empty else ""
        main = group[group["profile"] == next(p for p in profiles if p in set(group["profile"]))].iloc[-1]
        row["notebook"] = _link(main)
        rows.append(row)
    return pd.DataFrame(rows)


def paper_tables(claims: pd.DataFrame, links: bool = True) -> str:
    """`report_table` as Markdown, one section per paper, so that no row repeats the paper's name. `links=False`
    drops the links column, whose targets are relative to results/REPORT.md (notebook 99 shows the tables from
    results/notebooks/, where they would not resolve)."""
    table = report_table(claims)
    sections = []
    for paper, rows in table.groupby("paper", sort=False):
        rows = rows.drop(columns=["paper"] if links else ["paper", "notebook"])
        sections += [f"## {paper}", "", rows.to_markdown(index=False), ""]
    return "\n".join(sections).rstrip("\n")


def verdict_counts(claims: pd.DataFrame) -> pd.DataFrame:
    """Per profile: how many claims got each verdict, and how many of them speak only for their own scale."""
    rows = []
    for profile in [p for p in PROFILE_ORDER if p in set(claims["profile"])]:
        group = claims[claims["profile"] == profile]
        scale_only = sum(verdict_of_row(r).at_scale_only for _, r in group.iterrows())
        rows.append({"profile": profile, **{v: int((group["verdict"] == v).sum()) for v in VERDICTS},
                     "of which at this scale only": scale_only})
    return pd.DataFrame(rows)


def devices(claims: pd.DataFrame) -> dict[str, list[str]]:
    """Each profile's devices, once each (a row may name several, joined by "; ")."""
    found = {}
    for profile in [p for p in PROFILE_ORDER if p in set(claims["profile"])]:
        names = claims[claims["profile"] == profile]["device"].dropna()
        found[profile] = list(dict.fromkeys(d.strip() for text in names for d in str(text).split(";") if d.strip()))
    return found


READING = [
    "**ours**: the measured effect with its interval. *points*: accuracy of the claim's first model minus the "
    "second's, in percentage points, paired by seed and test image; *x (A over B)*: a ratio of times. The interval's "
    "level is in the claims table (95%, or higher after Holm's correction over a notebook's comparisons); with "
    "several seeds it is a t interval over seeds that adds the test images' variance.",
    "**thresholds**: a claim holds when our effect exceeds its threshold: 0 points for \"beats\"; -1 point for "
    "\"within 1 point\" and \"loses under 1 point\"; a ratio of 1 for \"faster\", or the fraction of the claimed "
    "speed-up the claim's row names. *supported* / *contradicted*: the whole interval lies above / below it; "
    "*inconclusive*: it contains it (\"detects D\": the smallest effect this design finds 80% of the time); *not "
    "testable here*: the measurement says nothing about the claim (the reason is below).",
    f"**at this scale**: the verdict is a finding at its profile's scale only, because the models there are "
    f"*under-trained* (their mean accuracy does not beat a logistic regression on the same pixels and split by "
    f"{LINEAR_MARGIN:g} points) or *far below the paper* (under {FAR_BELOW:g} of the paper's distance above chance).",
    "**paper's figure inside / excluded**: whether our interval contains the paper's own figure for the same effect.",
    "**source**: *paper* (its text: a table, a section, the abstract), *summary* (a third-party summary of it), "
    "*ours* (a question or an extension of this suite's).",
]


def report_markdown(claims: pd.DataFrame, notes: list[str]) -> str:
    """The report as Markdown: the verdict counts, the devices per profile, how to read it, one table per paper,
    then each claim's reason, regime and source."""
    lines = ["# Claims report", "",
             "Written by `notebooks/99_report.ipynb` from the claims tables of the other notebooks "
             "(`results/tables/claims_*.csv`, and `results/<profile>/tables/` for other profiles); do not edit.", "",
             "## Verdicts", "", verdict_counts(claims).to_markdown(index=False), ""]
    lines += [f"- **{profile}** ran on: {'; '.join(names)}" for profile, names in devices(claims).items()]
    lines += ["", "## How to read it", ""] + [f"- {words}" for words in READING]
    lines += ["", paper_tables(claims)]
    lines += ["", "## Why", ""]
    for _, r in claims.iterrows():
        verdict = verdict_of_row(r)
        source = f"source: {r['source']}" + (f" ({r['source_note']})" if verdict.source_note else "")
        lines.append(f"- **{r['claim']}** ({r['profile']}): {headline(verdict)}; {r['reason']}"
                     + (f"; regime: {describe_regime(verdict.regime)}" if verdict.regime else "")
                     + f"; {source}")
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
        keep = ["claim", "source", "paper's figure"] + [c for c in table.columns if c.endswith((": ours", ": verdict"))]
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


# Epoch counts are whole epochs: each first epoch at the target stands for a crossing anywhere in the epoch before
# it (uniform rounding, variance 1/12), so a paired difference of two counts is known to no better than 2/12 epochs
# squared. Seeds that all give the same difference have no spread, and without this floor their t interval would have
# no width: three seeds one epoch sooner would read as certain.
EPOCH_COUNT_VARIANCE = 2 / 12


def convergence_verdicts(epochs: pd.DataFrame, reference: str, labels: list[str], alpha: float = 0.05,
                         source: str = "paper", source_note: str = "") -> list[Verdict]:
    """ "<label> reaches the target in fewer epochs than <reference>", per dataset and label: the paired (by seed)
    difference reference minus label, with a t interval at the Bonferroni level over the family, its variance over
    seeds at least the counts' own (`EPOCH_COUNT_VARIANCE`); not testable with fewer than 2 seeds."""
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
            verdicts.append(judge(claim, float("nan"), float("nan"), float("nan"), unit="epochs", source=source,
                                  source_note=source_note,
                                  not_testable=f"{len(seeds)} paired seed(s); an interval needs at least 2"))
            continue
        diff = pd.Series([ref[s] - other[s] for s in seeds], dtype=float)
        mean, sd = float(diff.mean()), math.sqrt(max(float(diff.var(ddof=1)), EPOCH_COUNT_VARIANCE))
        half = float(stats.t.ppf(1 - level / 2, len(seeds) - 1) * sd / math.sqrt(len(seeds)))
        censored = int(rows[rows["label"].isin([label, reference])]["censored"].sum())
        verdict = judge(claim, mean, mean - half, mean + half, 0.0, confidence=1 - level, unit="epochs",
                        source=source, source_note=source_note,
                        correction=f"t over {len(seeds)} seeds, Bonferroni over {len(family)}",
                        minimum_detectable=float((stats.t.ppf(1 - level / 2, len(seeds) - 1)
                                                  + stats.norm.ppf(0.8)) * sd / math.sqrt(len(seeds))))
        if censored:
            verdict = replace(verdict, reason=verdict.reason + f" ({censored} run(s) never reached the target: "
                              "counted one epoch past their last)")
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
    notes = [f"profiles: {', '.join(p for p in PROFILE_ORDER if p in set(claims['profile']))} (the first is the "
             "main column where several tested a claim); docs/profiles.md says what each one trains"]
    write_report(claims, notes, profile)
    return claims
