"""What the notebooks write: tables (CSV and Markdown) and figures in their profile's results folder, and the notes
that say where a table's runs came from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.files import atomic_path, atomic_write_text, remove_orphan_temporaries
from ..core.paths import results_dir
from ..training.numerics import code_digest, current_numerics, numbers_of


def write_table(df: pd.DataFrame, name: str, title: str, notes: list[str] = (), *,
                profile: str | None) -> tuple[Path, Path]:
    """`tables/<name>.csv` in `profile`'s results folder (`results/tables/` for quick; the results root for None)
    and a Markdown version with a title and notes (provenance, caveats)."""
    folder = results_dir(profile) / "tables"
    remove_orphan_temporaries(folder)
    csv_path = atomic_write_text(df.to_csv(index=False, float_format="%.2f"), folder / f"{name}.csv")
    shown = df.astype(object).where(df.notna(), None)  # tabulate leaves None cells empty, but prints NaN as "nan"
    # tabulate reads text that looks like a number as one and rounds it to two decimals: a learning rate "0.001"
    # written as text would read 0.00, so text columns are shown as written
    text = [i for i, column in enumerate(df.columns) if df[column].dropna().map(type).eq(str).all()
            and df[column].notna().any()]
    lines = [f"# {title}", "", shown.to_markdown(index=False, floatfmt=".2f", missingval="-",
                                                 disable_numparse=text), ""]
    md_path = atomic_write_text("\n".join(lines + [f"- {note}" for note in notes]) + "\n", folder / f"{name}.md")
    return csv_path, md_path


def save_figure(fig, name: str, *, profile: str) -> Path:
    """`figures/<name>.png` in `profile`'s results folder (`results/figures/` for quick)."""
    path = results_dir(profile) / "figures" / f"{name}.png"
    remove_orphan_temporaries(path.parent)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def provenance(runs: pd.DataFrame) -> list[str]:
    """Table notes saying where the rows of `runs` came from (its data_source, device and code_version columns),
    and `code_warnings(runs)`."""
    return [*[f"data: {source}" for source in sorted(set(runs["data_source"]))],
            f"runs on {sorted(set(runs['device']))}, code {sorted(set(runs['code_version']))}", *code_warnings(runs)]


def record_provenance(records) -> list[str]:
    """`provenance` of finished runs' records (RunResult) rather than of a table's rows."""
    return provenance(pd.DataFrame([{"data_source": r.data_source, "device": r.device, "code_version": r.code_version,
                                     "code_digest": r.code_digest, "numerics": r.numerics} for r in records]))


def code_warnings(runs: pd.DataFrame) -> list[str]:
    """One loud note when some runs of a table were trained by code not known to compute this code's numbers
    (`paraformer.training.numerics`; without code_digest and numerics columns, every row counts as unknown)."""
    unknown = [""] * len(runs)
    running = numbers_of(code_digest())
    stale = [numbers for numbers in map(numbers_of, runs.get("code_digest", unknown), runs.get("numerics", unknown))
             if numbers != running]
    if not stale:
        return []
    return [f"WARNING: {len(stale)} of {len(runs)} runs were trained by code not known to compute this code's "
            f"numbers ({sorted(set(stale))}; now {current_numerics() or 'code ' + code_digest()}); "
            "`make reproduce RETRAIN=stale` retrains them"]
