"""How long every notebook trains at a profile, before any of them starts: each notebook's own plan
(`plan(profile)` of its module) through `paraformer.experiments.estimate`, every run that several notebooks make
(02 remakes 01's sweep, 04 reuses 03's runs) counted once, in the first notebook that makes it.

    python -m paraformer.tools.estimate --profile gpu [--flops-per-second 2e14] [--notebooks 01 03] [--runs]
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import pandas as pd

from ..core.config import ConfigError, OneLineArgumentParser
from ..experiments import (compression, depth_sweep, expansion, finetune, layer_parallel, layer_sweep, report,
                           speedup, versus_vit)
from ..experiments.estimate import CAVEAT, Estimate, Throughput, minutes_text, rate
from ..experiments.profiles import PROFILES, get_profile

# notebook -> its module (each has `plan(profile)` and `estimate(profile, flops_per_second=...)`)
NOTEBOOKS = {module.NOTEBOOK: module for module in (layer_sweep, depth_sweep, versus_vit, compression, expansion,
                                                     speedup, finetune, layer_parallel, report)}


def notebook_name(name: str) -> str:
    """'01', '1', '01_layer_sweep' or 'notebooks/01_layer_sweep.ipynb' -> '01_layer_sweep'."""
    stem = os.path.basename(str(name)).removesuffix(".ipynb")
    matches = [nb for nb in NOTEBOOKS if nb == stem or (stem.isdigit() and nb.split("_")[0] == stem.zfill(2))]
    if len(matches) != 1:
        raise ConfigError(f"unknown notebook {name!r}; choose one of {sorted(NOTEBOOKS)} (or their numbers)")
    return matches[0]


@dataclass
class SuiteEstimate:
    """Every notebook's estimate at a profile; `table` has one row per notebook and a total that counts every run
    once (in the first notebook that makes it)."""

    profile: str
    estimates: dict[str, Estimate]
    rate: Throughput

    @property
    def runs(self) -> pd.DataFrame:
        runs = pd.concat([e.runs for e in self.estimates.values()], ignore_index=True)
        return runs.assign(first_in=runs.groupby(["run", "key"])["notebook"].transform("first"))

    @property
    def table(self) -> pd.DataFrame:
        runs, rows = self.runs, []
        for name, estimate in self.estimates.items():
            mine = runs[runs["notebook"] == name]
            own = mine[mine["first_in"] == name]
            rows.append({"notebook": name, "runs": len(mine), "shared": len(mine) - len(own),
                         "cached": int((own["cached"] == True).sum()),  # noqa: E712
                         "pflop": float(own["pflop"].sum()), "minutes": float(own["minutes"].sum()),
                         "minutes_alone": float(mine["minutes"].sum()), "note": estimate.note})
        table = pd.DataFrame(rows)  # never empty: a suite has at least one notebook
        total = {"notebook": "total", "runs": int(table["runs"].sum() - table["shared"].sum()), "shared": 0,
                 "cached": int(table["cached"].sum()), "pflop": table["pflop"].sum(),
                 "minutes": table["minutes"].sum(), "minutes_alone": float("nan"), "note": ""}
        return pd.concat([table, pd.DataFrame([total])], ignore_index=True)

    def summary(self) -> str:
        total = self.table.iloc[-1]
        return (f"Estimate for the suite at profile {self.profile}: {int(total['runs'])} distinct train() runs, "
                f"{total['pflop']:.3g} PFLOP, about {minutes_text(total['minutes'])} at {self.rate.describe()}. An "
                f"estimate: {CAVEAT}.")


def profile_notebooks(profile: str) -> list[str]:
    """The notebooks `make reproduce` runs at `profile` (`Profile.notebooks`; all of them by default)."""
    return [nb for nb in NOTEBOOKS if get_profile(profile).runs_notebook(nb)]


def estimate_suite(profile: str, flops_per_second=None, notebooks: list[str] | None = None) -> SuiteEstimate:
    """Every notebook (or those named) at `profile` with its default parameters."""
    get_profile(profile)  # refuses an unknown one
    throughput = rate(flops_per_second, profile)
    chosen = [notebook_name(nb) for nb in notebooks] if notebooks else profile_notebooks(profile)
    return SuiteEstimate(profile, {nb: NOTEBOOKS[nb].estimate(profile, flops_per_second=throughput) for nb in NOTEBOOKS
                                   if nb in chosen}, throughput)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m paraformer.tools.estimate",
                                   description="Estimate how long each notebook trains at a profile (FLOPs counted "
                                               "on the real models / a model FLOP rate), before starting any of them.")
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES), help="the profile to estimate")
    parser.add_argument("--flops-per-second", type=float, metavar="RATE",
                        help="model FLOP rate to assume, e.g. 2e14; default: measure this machine's")
    parser.add_argument("--notebooks", nargs="+", metavar="NB",
                        help="notebooks by number or name (default: all), e.g. 01 03")
    parser.add_argument("--runs", action="store_true", help="print every run, not only the per-notebook table")
    parser.add_argument("--list-notebooks", action="store_true",
                        help="only print the notebooks the profile runs, one path per line (make reproduce reads it)")
    args = parser.parse_args(argv)
    if args.list_notebooks:
        print("\n".join(f"notebooks/{nb}.ipynb" for nb in profile_notebooks(args.profile)))
        return 0
    try:
        suite = estimate_suite(args.profile, args.flops_per_second, args.notebooks)
    except ConfigError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    table = suite.table.round({"pflop": 3, "minutes": 1, "minutes_alone": 1})
    print(suite.summary())
    print(table.drop(columns="note").to_string(index=False, na_rep=""))
    notes = [f"{row.notebook}: {row.note}" for row in table.itertuples() if row.note]
    if notes:
        print("\n".join(["notes:", *notes]))
    if args.runs:
        columns = ["notebook", "run", "method", "seed", "learns", "epochs", "train_images", "pflop", "minutes",
                   "first_in", "cached"]
        print(suite.runs[columns].round(3).to_string(index=False))
    print("runs: train() calls; shared: runs an earlier notebook makes (counted there); cached: finished runs in the "
          "run cache; minutes: this notebook's own runs at the rate; minutes_alone: all its runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
