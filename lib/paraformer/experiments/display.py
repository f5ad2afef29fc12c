"""What a notebook is given and what a reader sees in it: its parameters checked (`declare_parameters`,
`check_parameters`; docs/profiles.md) and its datasets (`check_data`), its verdicts first (`show_verdicts`), a short
table (`reader_table`) and one line per verdict (`verdict_lines`, with `verdict_details` below; docs/notebooks.md);
the package's errors for users in one line (`show_user_errors_in_one_line`).

Papermill only warns about a parameter the `parameters` cell does not define, and puts its `injected-parameters`
cell between the two calls, so every name that cell binds and the parameters cell did not is unknown. (The keyword
matters: papermill reads a line without "=" in the parameters cell as the continuation of the parameter above it,
and would show `declare_parameters(globals())` as part of that parameter's default.) A reader's table has no index
and rounds each number to what its interval supports, so that it fits a laptop's window beside JupyterLab.
"""

from __future__ import annotations

import html
import inspect
import math
import socket
import sys
import urllib.parse
from pathlib import Path

import pandas as pd

from ..core.compilation import CompileLimitError
from ..core.config import ConfigError
# core.data's own look-up and message, so that check_data finds exactly what load_data would find
from ..core.data import DATASETS, DatasetNotFoundError, _cache_path, _fingerprint, _locate, _not_found
from ..core.datasources import DataIntegrityError
from ..core.files import ResultsWriteError
from ..core.paths import data_dir, results_dir
from ..core.runcache import RunCacheError
from .profiles import profile_device
from .regime import describe as describe_regime
from .stats import Verdict, headline

# IPython binds these in every kernel's namespace, and more of them (_, _i3, Out[3] as _3) as cells run.
IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})
# Kept in the namespace itself, so that each kernel (and each test's namespace) has its own record.
_RECORD = "_paraformer_parameters"


class UnknownParameterError(ConfigError):
    def __init__(self, unknown: list[str], known: list[str]):
        self.unknown, self.known = tuple(unknown), tuple(known)
        super().__init__(f"unknown notebook parameter(s) {list(self.unknown)}; this notebook's parameters are "
                         f"{list(self.known)}")


def _values(namespace: dict) -> set[str]:
    """The names that could be parameters: papermill passes only values, never functions or modules, so the
    imports of declare_parameters and check_parameters themselves are left out."""
    return {name for name, value in namespace.items() if not name.startswith("_") and name not in IPYTHON_NAMES
            and not (inspect.ismodule(value) or callable(value))}


def declare_parameters(namespace: dict) -> None:
    """The last line of a notebook's parameters cell."""
    namespace[_RECORD] = {"parameters": sorted(_values(namespace)), "checked": False}


def check_parameters(namespace: dict) -> None:
    """The first line of the code cell after the parameters cell: fail on names papermill injected that the
    parameters cell does not define, on an unknown profile, and on a GPU profile where device "auto" would fall back
    to the CPU (`profiles.profile_device`). From here on, the kernel shows the package's errors for users in one
    line (`show_user_errors_in_one_line`)."""
    show_user_errors_in_one_line()
    record = namespace.get(_RECORD)
    if record is None:
        raise ConfigError("the notebook's parameters cell must end with declare_parameters(namespace=globals()) "
                          "(from paraformer.experiments.display)")
    # Papermill injects only between the parameters cell and this one. Run again by hand without the parameters
    # cell, this cell would see the names of the cells after it, which are no parameters of anyone's.
    if not record["checked"]:
        unknown = sorted(_values(namespace) - set(record["parameters"]))
        if unknown:
            raise UnknownParameterError(unknown, record["parameters"])
        record["checked"] = True
    if "profile" in namespace:
        profile_device(namespace["profile"])


MISSING = "–"  # an empty cell: the paper has no such figure, or the measurement does not apply


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number_text(value, digits: int = 1, signed: bool = False) -> str:
    """`value` rounded to `digits` decimals ("+" before positive differences when `signed`); whole numbers such
    as parameter counts and seeds with thousands separators; an empty cell as MISSING."""
    if _missing(value):
        return MISSING
    if isinstance(value, (str, bool)):
        return str(value)
    if isinstance(value, int):
        return f"{value:+,}" if signed else f"{value:,}"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def interval_text(mean, low, high, digits: int = 1, signed: bool = False) -> str:
    """"32.4 [31.5, 33.3]": an estimate and its interval, rounded alike."""
    if _missing(mean):
        return MISSING
    text = number_text(float(mean), digits, signed)
    if _missing(low) or _missing(high):
        return text
    return f"{text} [{number_text(float(low), digits, signed)}, {number_text(float(high), digits, signed)}]"


class ReaderTable:
    """A table of formatted cells, shown without an index: HTML in Jupyter, aligned text elsewhere (and in the
    notebook's plain-text output, so that a diff of a committed notebook reads as the table)."""

    def __init__(self, frame: pd.DataFrame, caption: str = ""):
        self.frame, self.caption = frame, caption

    def _repr_html_(self) -> str:
        caption = f"<p style='margin:0.2em 0'><i>{html.escape(self.caption)}</i></p>" if self.caption else ""
        return caption + self.frame.to_html(index=False, border=0, escape=True)

    def __repr__(self) -> str:
        text = self.frame.to_string(index=False)
        return f"{self.caption}\n{text}" if self.caption else text


def reader_table(table: pd.DataFrame, columns: list[tuple[str, object]], digits: int = 1,
                 signed: tuple[str, ...] = (), caption: str = "") -> ReaderTable:
    """The reader's view of `table`: one output column per (label, source) or (label, source, digits), where
    source is a column name or a (mean, low, high) triple of column names (shown as "mean [low, high]"). Floats
    get `digits` decimals (the paper's figures keep theirs), the labels in `signed` a sign; an output column with
    nothing in it is left out."""
    cells = {}
    for label, source, *own_digits in columns:
        digits_here = own_digits[0] if own_digits else digits
        if isinstance(source, tuple):
            values = [interval_text(*row, digits_here, label in signed) for row in zip(*(table[c] for c in source))]
        else:
            values = [number_text(_plain(value), digits_here, label in signed) for value in table[source]]
        if any(value != MISSING for value in values):
            cells[label] = values
    return ReaderTable(pd.DataFrame(cells), caption)


def _plain(value):
    """numpy scalars as Python numbers, so that integers print as integers."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return int(value)
    return value


def paper_text(value, signed: bool = False) -> str:
    """A paper's figure as it published it (15.58, 2.39, 3.3), with a sign for a difference."""
    if _missing(value):
        return MISSING
    return f"{value:+g}" if signed else f"{value:g}"


UNITS = {"points": (1, True), "x": (2, False), "epochs": (1, True)}  # unit -> (decimals, signed)


def verdict_line(verdict: Verdict, unit: str = "points") -> str:
    """One Markdown line: the claim, our figure with its interval, the paper's figure, the verdict word; for an
    inconclusive verdict the smallest effect the design would detect, for an untestable one why."""
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r} is not one of {sorted(UNITS)}")
    digits, signed = UNITS[unit]
    suffix = "x" if unit == "x" else f" {unit}"
    paper = f"; paper {paper_text(verdict.paper, signed)}{suffix}" if not _missing(verdict.paper) else ""
    if paper and verdict.paper_effect is not None:
        paper += f" ({verdict.paper_effect}" + (" at this scale)" if verdict.at_scale_only else ")")
    caveat = f" *Note: {verdict.caveat}.*" if verdict.caveat else ""
    if verdict.verdict == "not testable here":
        return f"**{verdict.claim}**: *not testable here*: {verdict.reason}{paper}{caveat}"
    found = interval_text(verdict.ours, verdict.low, verdict.high, digits, signed) + suffix
    level = "" if abs(verdict.confidence - 0.95) < 1e-9 else f" ({100 * verdict.confidence:.3g}% interval)"
    detects = ""
    if verdict.verdict == "inconclusive" and not _missing(verdict.minimum_detectable):
        detects = f" (this design detects {number_text(verdict.minimum_detectable, digits)}{suffix} or more)"
    regime = f" ({describe_regime(verdict.regime)})" if verdict.regime is not None else ""
    return f"**{verdict.claim}**: ours {found}{level}{regime}{paper} → **{headline(verdict)}**{detects}{caveat}"


NOT_RUN = "not run at this profile"


def verdict_lines(verdicts: list[Verdict], unit: str = "points") -> str:
    """`verdict_line` of each verdict, as a Markdown list ("not run at this profile" for none)."""
    if not verdicts:
        return f"- {NOT_RUN}"
    return "\n".join(f"- {verdict_line(v, unit)}" for v in verdicts)


def verdict_details(verdicts: list[Verdict], unit: str = "points", caption: str = "") -> ReaderTable:
    """The table below the verdict lines: each comparison's interval, its level (above 95% where a correction set
    it), the smallest effect the design detects, the paper's figure and the verdict."""
    digits, signed = UNITS[unit]
    rows = pd.DataFrame([(v.claim, MISSING if v.verdict == "not testable here" else
                          interval_text(v.ours, v.low, v.high, digits, signed), number_text(100 * v.confidence, 1),
                          number_text(v.minimum_detectable, digits), paper_text(v.paper, signed), v.verdict)
                         for v in verdicts], columns=["claim", "ours", "level (%)", "detects", "paper", "verdict"])
    rows = rows[[c for c in rows if c == "claim" or (rows[c] != MISSING).any()]]
    return ReaderTable(rows, caption)


def accuracy_columns(paper: bool = True) -> list[tuple[str, object]]:
    """The reader's accuracy columns of an `accuracy_table`: the paper's figure, then ours with its interval."""
    ours = ("ours (%) [95% interval]", ("our_acc", "our_acc_low", "our_acc_high"))
    return ([("paper (%)", "paper_acc", 2)] if paper else []) + [ours]


def plain_log_ticks(ax, axes: str = "xy") -> None:
    """Plain numbers (0.2, 6, 20, 300) on the log-scaled axes of `ax`, where matplotlib would write 6x10^0; minor
    ticks are labelled only where the axis spans few decades, as matplotlib decides."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        if axis.get_scale() == "log":
            axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
            axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))


# --- errors a user can fix, in one line ---------------------------------------------------------------------------

# The package's errors whose message names the bad value and the fix: a traceback would bury that line under
# frames of library code (and, for a dataset, under the chained download error).
USER_ERRORS = (ConfigError, DatasetNotFoundError, DataIntegrityError, ResultsWriteError, RunCacheError,
               CompileLimitError)


def one_line(error: BaseException) -> str:
    """"DatasetNotFoundError: <message>" on one line: a message's lines ("Provide it with", then "  - way" per
    line) joined by "; " after a colon."""
    lines = [line.strip().removeprefix("- ") for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(lines) > 1:
        text = f"{text.rstrip(':')}: {'; '.join(lines[1:])}"
    return f"{type(error).__name__}: {text}"


def _one_line_handler(shell, etype, value, tb, tb_offset=None):
    """IPython's custom exception handler: the error output holds one line (its ename and evalue as usual, so that
    papermill names the error); `%tb` still shows the whole traceback."""
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb
    shell._showtraceback(etype, value, [one_line(value)])


def show_user_errors_in_one_line(shell=None) -> bool:
    """Make the kernel (`shell`; None: the running one) show `USER_ERRORS` in one line; False outside IPython."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False
    shell.set_custom_exc(USER_ERRORS, _one_line_handler)
    return True


# --- the datasets a notebook needs, before anything downloads -------------------------------------------------------

PROBE_SECONDS = 3.0  # how long the download host may take to accept a connection before the data count as missing


def _download_urls(dataset_class) -> list[str]:
    """The http(s) addresses torchvision's dataset class downloads from, wherever the class keeps them (`url`,
    `mirrors`, `resources`, `_RESOURCES`, `_download_url_prefix`, ...)."""
    found = []

    def walk(value):
        if isinstance(value, str):
            if value.startswith(("http://", "https://")):
                found.append(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    for klass in dataset_class.__mro__:
        for value in vars(klass).values():
            walk(value)
    return found


def reachable(url: str, seconds: float = PROBE_SECONDS) -> BaseException | None:
    """None if `url`'s host accepts a TCP connection within `seconds`, else the error (no name, no route, time-out)."""
    address = urllib.parse.urlsplit(url)
    try:
        socket.create_connection((address.hostname, address.port or (443 if address.scheme == "https" else 80)),
                                 timeout=seconds).close()
    except OSError as error:
        return error
    return None


def _torchvision_files_present(spec) -> bool:
    """Whether torchvision's own files of `spec` are downloaded into `data_dir()` (its class opened without
    download; it checks them)."""
    import torchvision

    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    try:
        for kwargs in (spec.train_kwargs, spec.test_kwargs):
            dataset_class(str(data_dir()), download=False, **dict(kwargs))
    except (RuntimeError, OSError):  # torchvision's "Dataset not found or corrupted", a missing file
        return False
    return True


def on_disk(config) -> bool:
    """Whether `load_data(config)` of a registry dataset finds its images without a download: an offline copy, the
    idx files, its decoded cache or torchvision's downloaded files (`core.data` looks in that order)."""
    spec = DATASETS[config.dataset]
    source = _locate(spec)
    if source.kind != "torchvision":
        return True
    size = config.image_size or spec.image_size
    return _cache_path(spec.name, _fingerprint(source, spec), size).is_file() or _torchvision_files_present(spec)


def missing_datasets(runs, probe=reachable, first_only: bool = False) -> dict[str, BaseException]:
    """Dataset name -> why it cannot be had, for each registry dataset that `runs` (PlannedRuns: `run.data`) read
    and that is neither on disk (`on_disk`) nor downloadable: its download host did not answer `probe(url)`, asked
    once per host (`first_only`: no more hosts asked once one dataset is missing). Datasets given as an ImageFolder
    root are left to `load_data`, which refuses a missing one at once."""
    missing, hosts = {}, {}
    for config in dict.fromkeys(run.data for run in runs):
        if first_only and missing:
            break
        if config.dataset not in DATASETS or config.dataset in missing or on_disk(config):
            continue
        import torchvision

        urls = _download_urls(getattr(torchvision.datasets, DATASETS[config.dataset].torchvision_class))
        if not urls:  # nowhere to ask: torchvision will try and say why
            continue
        host = urllib.parse.urlsplit(urls[0]).hostname
        if host not in hosts:
            hosts[host] = probe(urls[0])
        if hosts[host] is not None:
            missing[config.dataset] = hosts[host]
    return missing


def check_data(runs, probe=reachable) -> None:
    """The line after `check_parameters` in a notebook that trains: stop at once, before any download attempt times
    out, when a dataset its plan (`runs`) reads is missing (`missing_datasets`): the package's
    DatasetNotFoundError for the first one, with every way to provide it."""
    missing = missing_datasets(runs, probe, first_only=True)
    if missing:
        name, why = next(iter(missing.items()))
        raise _not_found(DATASETS[name], why)


# --- the answer first: a notebook's verdicts at the top -----------------------------------------------------------

def claims_path(notebook: str, profile: str) -> Path:
    """The claims table a notebook writes (`report.write_claims`) in `profile`'s results folder."""
    return results_dir(profile) / "tables" / f"claims_{notebook}.csv"


def _claim_line(row: pd.Series) -> str:
    """A committed claim in one line: `report.claim_line` (its verdict, our figure with interval and unit, the regime
    and the paper's figure); a table written before claims carried their regime keeps its older line."""
    from .report import CLAIM_COLUMNS, claim_line  # (report imports the tables this module displays)
    if set(CLAIM_COLUMNS) <= set(row.index):
        return claim_line(row)
    unit = row.get("unit")
    unit = "" if _missing(unit) else ("x" if unit == "x" else f" {unit}")
    paper = "" if _missing(row["paper_figure"]) else f"; paper {paper_text(row['paper_figure'])}{unit}"
    if row["verdict"] == "not testable here":
        return f"**{row['claim']}**: *not testable here*{paper}"
    level = "" if abs(row["interval_pct"] - 95) < 1e-6 else f" ({row['interval_pct']:.3g}% interval)"
    ours = interval_text(row["ours"], row["low"], row["high"], 2) + unit
    return f"**{row['claim']}**: **{row['verdict']}**; ours {ours}{level}{paper}"


class VerdictSummary:
    """A notebook's verdicts at `profile`, one line per claim of its committed claims table, or one line saying
    the notebook has not run at that profile. Shown as Markdown; `update()` shows the table as it is now in the
    same output (after the notebook has written it)."""

    def __init__(self, notebook: str, profile: str):
        self.notebook, self.profile = notebook, profile
        self.handle = None  # IPython's display handle, once shown

    def claims(self) -> pd.DataFrame | None:
        path = claims_path(self.notebook, self.profile)
        return pd.read_csv(path) if path.is_file() else None

    def lines(self) -> list[str]:
        claims = self.claims()
        if claims is None or claims.empty:
            return [f"**Verdicts at the {self.profile} profile**: not yet run at this profile"]
        devices = "; ".join(dict.fromkeys(str(d) for d in claims["device"].dropna()))
        head = (f"**Verdicts at the {self.profile} profile** (tables/claims_{self.notebook}.csv"
                + (f", measured on {devices}" if devices else "") + "; how each was reached: below)")
        return [head] + [f"- {_claim_line(row)}" for _, row in claims.iterrows()]

    def _repr_markdown_(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def update(self) -> None:
        if self.handle is not None:
            self.handle.update(self)


def show_verdicts(notebook: str, profile: str, display=None) -> VerdictSummary:
    """Show `VerdictSummary(notebook, profile)` under the notebook's parameters and return it, so that the cell
    that writes the claims table can `update()` it. `display`: IPython's (a test passes its own)."""
    if display is None:
        from IPython.display import display
    summary = VerdictSummary(notebook, profile)
    summary.handle = display(summary, display_id=True)
    return summary
