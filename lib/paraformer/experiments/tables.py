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
    lines = [f"# {title}", "", shown.to_markdown(index=False, floatfmt=".2f", missingval="-"), ""]
    lines += [f"- {note}" for note in notes]
    md_path = atomic_write_text("\n".join(lines) + "\n", folder / f"{name}.md")
    return csv_path, md_path


def save_figure(fig, name: str, *, profile: str) -> Path:
    """`figures/<name>.png` in `profile`'s results folder (`results/figures/` for quick)."""
    path = results_dir(profile) / "figures" / f"{name}.png"
    remove_orphan_temporaries(path.parent)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def provenance(runs: pd.DataFrame) -> list[str]:
    """Table notes saying where a table's runs came from: the data sources, devices and code versions of the rows
    of `runs` (a DataFrame with data_source, device and code_version columns, and code_digest and numerics where
    known), and `code_warnings(runs)`."""
    return [*[f"data: {source}" for source in sorted(set(runs["data_source"]))],
            f"runs on {sorted(set(runs['device']))}, code {sorted(set(runs['code_version']))}", *code_warnings(runs)]


def record_provenance(records) -> list[str]:
    """`provenance` of finished runs' records (RunResult) rather than of a table's rows."""
    return provenance(pd.DataFrame([{"data_source": r.data_source, "device": r.device, "code_version": r.code_version,
                                     "code_digest": r.code_digest, "numerics": r.numerics} for r in records]))


def code_warnings(runs: pd.DataFrame) -> list[str]:
    """One loud note when some of the runs behind a table (rows with `code_digest` and `numerics` columns; without
    them, every row counts as unknown code) were trained by code not known to compute this code's numbers
    (`paraformer.training.numerics`); else none."""
    codes = list(runs["code_digest"]) if "code_digest" in runs else [""] * len(runs)
    numerics = list(runs["numerics"]) if "numerics" in runs else [""] * len(runs)
    running = numbers_of(code_digest())
    others = sorted({numbers_of(c, n) for c, n in zip(codes, numerics)} - {running})
    stale = sum(numbers_of(c, n) != running for c, n in zip(codes, numerics))
    if not stale:
        return []
    return [f"WARNING: {stale} of {len(codes)} runs were trained by code not known to compute this code's numbers "
            f"({others}; now {current_numerics() or 'code ' + code_digest()}); `make reproduce RETRAIN=stale` "
            f"retrains them"]
