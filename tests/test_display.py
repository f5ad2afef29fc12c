"""What a reader sees: short tables rounded to what the measurement supports, one line per verdict, and
committed notebooks that JupyterLab opens without changing and that hold no path of the machine that ran them."""

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from paraformer.experiments.display import (MISSING, accuracy_columns, plain_log_ticks, reader_table, verdict_details,
                                            verdict_line)
from paraformer.experiments.regime import Regime
from paraformer.experiments.stats import judge

ROOT = Path(__file__).resolve().parents[1]
SOURCE_NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXECUTED_NOTEBOOKS = sorted((ROOT / "results").rglob("notebooks/*.ipynb"))
TABLES = sorted((ROOT / "results").rglob("tables/*.md")) + sorted((ROOT / "results").rglob("tables/*.csv"))


def test_a_reader_table_rounds_shows_intervals_and_leaves_out_what_is_empty():
    table = pd.DataFrame({"model": ["Para-F-1-1", "Para-F-1-24"], "params": [41610.0, 811466.0],
                          "paper_acc": [55.95, math.nan], "our_acc": [32.4123, 34.06], "our_acc_low": [31.5, 33.24],
                          "our_acc_high": [33.31, 35.0], "seed_std": [math.nan, math.nan], "seeds": [3, 3]})
    view = reader_table(table, [("model", "model"), ("params", "params"), *accuracy_columns(),
                                ("seed std", "seed_std"), ("seeds", "seeds")])
    assert view.frame.to_dict("list") == {
        "model": ["Para-F-1-1", "Para-F-1-24"], "params": ["41,610", "811,466"],
        "paper (%)": ["55.95", MISSING],  # the paper's figure as published
        "ours (%) [95% interval]": ["32.4 [31.5, 33.3]", "34.1 [33.2, 35.0]"],  # ours to a tenth of a point
        "seeds": ["3", "3"],
    }  # and the all-empty "seed std" is left out
    headers = re.findall(r"<th>(.*?)</th>", view._repr_html_())
    assert headers == list(view.frame.columns)  # no index column


def test_differences_carry_their_sign():
    view = reader_table(pd.DataFrame({"d": [1.04, -0.26]}), [("gain", "d")], signed=("gain",))
    assert view.frame["gain"].tolist() == ["+1.0", "-0.3"]


def test_a_verdict_reads_as_the_claim_our_figure_with_its_interval_and_the_verdict():
    supported = judge("A beats B", 2.04, 1.01, 3.06, minimum_detectable=1.5, paper=2.39)
    assert verdict_line(supported) == ("**A beats B**: ours +2.0 [+1.0, +3.1] points; paper +2.39 points (inside) → "
                                       "**supported**")
    corrected = judge("A beats C", 0.5, -0.4, 1.4, minimum_detectable=1.94, confidence=0.99375)
    assert verdict_line(corrected) == ("**A beats C**: ours +0.5 [-0.4, +1.4] points (99.4% interval) → "
                                       "**inconclusive** (this design detects 1.9 points or more)")
    ratio = judge("X is faster", 1.5, 1.2, 1.8, threshold=1.0)
    assert verdict_line(ratio, "x") == "**X is faster**: ours 1.50 [1.20, 1.80]x → **supported**"
    untestable = judge("Y", math.nan, math.nan, math.nan, not_testable="a CPU cannot overlap them")
    assert verdict_line(untestable, "x") == "**Y**: *not testable here*: a CPU cannot overlap them"
    with pytest.raises(ValueError, match="unit='percent'"):
        verdict_line(supported, "percent")


def test_a_verdict_from_an_under_trained_regime_reads_as_a_finding_at_that_scale_with_its_caveat():
    regime = Regime("quick", (31.0, 30.0), (72.0, 56.0), chance=10.0, linear=30.0, epochs=5, train_images=2500)
    verdict = replace(judge("A beats B", 0.75, -0.27, 2.0, paper=15.58, regime=regime), caveat="holds by design")
    assert verdict_line(verdict) == ("**A beats B**: ours +0.8 [-0.3, +2.0] points (ours 30-31%, paper 56-72%, "
                                     "linear 30%; 5 epochs, 2,500 images); paper +15.58 points (excluded at this "
                                     "scale) → **inconclusive at quick (under-trained)** *Note: holds by design.*")


def test_the_details_below_a_verdict_give_each_comparisons_level_and_power():
    verdicts = [judge("A beats B", 2.04, 1.01, 3.06, minimum_detectable=1.5, confidence=0.975),
                judge("A beats C", 0.5, -0.4, 1.4, minimum_detectable=1.94, confidence=0.95)]
    details = verdict_details(verdicts).frame
    assert details.to_dict("list") == {"claim": ["A beats B", "A beats C"],
                                       "ours": ["+2.0 [+1.0, +3.1]", "+0.5 [-0.4, +1.4]"],
                                       "level (%)": ["97.5", "95.0"], "detects": ["1.5", "1.9"],
                                       "verdict": ["supported", "inconclusive"]}  # no paper figure: no column


def test_log_axes_are_labelled_with_plain_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 4, 8, 24], [3, 4, 6, 9, 12])
    ax.set(xscale="log", yscale="log")
    plain_log_ticks(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels(minor=True) + ax.get_xticklabels(minor=True) if t.get_text()]
    plt.close(fig)
    assert labels and all(re.fullmatch(r"[0-9.]+", label) for label in labels)  # "6", not "6x10^0"


# --- the committed notebooks and tables -------------------------------------------------------------------

def _outputs(notebook: Path) -> list[str]:
    """Every text a notebook's outputs hold (streams, plain text, HTML, Markdown)."""
    texts = []
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            if "text" in output:
                texts.append("".join(output["text"]))
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/"):
                    texts.append("".join(value))
    return texts


# an absolute path: a slash after a space, quote, bracket or "=", then two or more path components
ABSOLUTE_PATH = re.compile(r"(?:^|[\s'\"(\[=,])(/[\w.~+-]+){2,}", re.MULTILINE)


@pytest.mark.parametrize("path", SOURCE_NOTEBOOKS + EXECUTED_NOTEBOOKS + TABLES + [ROOT / "results" / "REPORT.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_committed_output_or_table_names_a_path_of_the_machine_that_made_it(path):
    texts = _outputs(path) if path.suffix == ".ipynb" else [path.read_text()]
    found = [m.group(0).strip() for text in texts for m in ABSOLUTE_PATH.finditer(text)]
    assert found == []


@pytest.mark.parametrize("path", SOURCE_NOTEBOOKS + EXECUTED_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_committed_output_needs_a_live_kernel_to_render(path):
    kinds = {kind for cell in json.loads(path.read_text())["cells"] for output in cell.get("outputs", [])
             for kind in output.get("data", {})}
    assert {kind for kind in kinds if "widget" in kind} == set()  # a widget without its state: "model not found"


def test_the_path_check_finds_the_paths_it_is_meant_to():
    text = "weights: copy into /root/.cache/torch/hub/checkpoints/ or (/work/shared/datasets/cifar10.tar.gz)"
    assert [m.group(0).strip(" (") for m in ABSOLUTE_PATH.finditer(text)] == [
        "/root/.cache/torch/hub/checkpoints", "/work/shared/datasets/cifar10.tar.gz"]
    assert not list(ABSOLUTE_PATH.finditer("N/M, 1/6 of the branches, tables/claims_01.csv, epoch 2/5"))


@pytest.mark.parametrize("path", SOURCE_NOTEBOOKS + EXECUTED_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_notebooks_carry_the_kernelspec_a_fresh_install_has(path):
    from jupyter_client.kernelspec import KernelSpecManager

    installed = KernelSpecManager().get_kernel_spec("python3")
    kernelspec = json.loads(path.read_text())["metadata"]["kernelspec"]
    # JupyterLab rewrites a notebook whose display name differs from the kernel's: opening it would modify it
    assert kernelspec == {"display_name": installed.display_name, "language": installed.language, "name": "python3"}


@pytest.mark.parametrize("path", SOURCE_NOTEBOOKS + EXECUTED_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_result_is_shown_once_as_a_reader_table(path):
    cells = json.loads(path.read_text())["cells"]
    for cell in cells:
        if "".join(cell["source"]).startswith("# NBVAL_CHECK_OUTPUT"):  # the regression check: collapsed
            assert cell["metadata"]["jupyter"] == {"source_hidden": True, "outputs_hidden": True}
    for html in (text for text in _outputs(path) if "<table" in text):
        body = html[html.index("<tbody>"):]
        assert "<th" not in body  # a raw DataFrame puts its index in <th> cells; a reader table has none


# --- the answer first: verdicts under the title -------------------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from paraformer.core.config import ConfigError, DataConfig  # noqa: E402
from paraformer.core.data import DatasetNotFoundError  # noqa: E402
from paraformer.experiments import display  # noqa: E402
from paraformer.experiments.report import write_claims  # noqa: E402


class Recorder:
    """IPython's display and the handle it returns: what was shown, and each update."""

    def __init__(self):
        self.shown = []

    def __call__(self, obj, display_id=False):
        assert display_id is True  # an update needs the handle
        self.shown.append(obj._repr_markdown_())
        return SimpleNamespace(update=lambda new: self.shown.append(new._repr_markdown_()))


def test_before_a_notebook_has_run_at_a_profile_its_summary_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    shown = Recorder()
    display.show_verdicts("01_layer_sweep", "ci", display=shown)
    assert shown.shown == ["**Verdicts at the ci profile**: not yet run at this profile"]


def test_the_summary_shows_one_line_per_claim_and_the_claims_the_notebook_writes_later(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    shown = Recorder()
    summary = display.show_verdicts("01_layer_sweep", "ci", display=shown)
    verdicts = [judge("1-24 beats 1-1 on cifar10", 0.75, -0.27, 2.0, minimum_detectable=1.17, paper=15.58,
                      confidence=0.9917),
                judge("ViT-B/16 fine-tunes to Table 4", math.nan, math.nan, math.nan, not_testable="no weights")]
    write_claims(verdicts, "Wang & Li 2024", "01_layer_sweep", "ci", "a CPU")
    summary.update()
    assert len(shown.shown) == 2 and shown.shown[1].splitlines() == [
        "**Verdicts at the ci profile** (tables/claims_01_layer_sweep.csv, measured on a CPU; how each was reached: "
        "below)",
        # each line is the claim as stats.render words it, from the table's row (report.claim_line)
        "- 1-24 beats 1-1 on cifar10: inconclusive; ours +0.75 points [-0.27, 2]; paper's +15.6 points excluded.",
        "- ViT-B/16 fine-tunes to Table 4: not testable here (no weights)."]
    assert display.claims_path("01_layer_sweep", "ci") == tmp_path / "ci" / "tables" / "claims_01_layer_sweep.csv"


def test_a_claim_line_carries_the_unit_where_the_table_has_one():
    row = pd.Series({"claim": "N/M", "verdict": "supported", "ours": 1.9, "low": 1.8, "high": 2.0,
                     "interval_pct": 95.0, "paper_figure": 2.0, "unit": "x"})
    assert display._claim_line(row) == "**N/M**: **supported**; ours 1.90 [1.80, 2.00]x; paper 2x"


# --- data checked before any download; errors for users in one line ------------------------------------------------

@pytest.fixture
def bare_machine(tmp_path, monkeypatch):
    """A checkout with no data beside it: no offline copies, no caches, no downloads (PARAFORMER_* unset)."""
    from paraformer.core import paths

    for name in ("PARAFORMER_DATA", "PARAFORMER_OFFLINE_DATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(paths, "project_root", lambda: tmp_path / "checkout")
    return tmp_path


def planned(*datasets: str) -> list:
    return [SimpleNamespace(data=DataConfig(dataset=name)) for name in datasets]


class Probe:
    """The download-host probe: the addresses asked, and the answer (None: reachable)."""

    def __init__(self, error: BaseException | None):
        self.error, self.asked = error, []

    def __call__(self, url: str):
        self.asked.append(url)
        return self.error


def test_without_data_or_network_the_check_fails_before_any_download_asking_each_host_once(bare_machine):
    probe = Probe(TimeoutError("timed out"))
    assert display.missing_datasets(planned("cifar10", "cifar10", "cifar100"), probe) == \
        {"cifar10": probe.error, "cifar100": probe.error}
    assert probe.asked == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]  # one host, asked once
    with pytest.raises(DatasetNotFoundError):
        display.check_data(planned("stl10"), Probe(TimeoutError("timed out")))


def test_an_offline_copy_or_a_reachable_host_is_enough(bare_machine):
    shared = bare_machine / "shared" / "datasets"  # ../shared/datasets beside the checkout
    shared.mkdir(parents=True)
    (shared / "cifar10.tar.gz").write_bytes(b"")
    probe = Probe(TimeoutError("timed out"))
    assert display.missing_datasets(planned("cifar10"), probe) == {} and probe.asked == []
    assert display.missing_datasets(planned("mnist"), Probe(None)) == {}  # torchvision will download it


def test_a_dataset_given_as_a_folder_is_left_to_load_data(bare_machine):
    probe = Probe(TimeoutError("timed out"))
    assert display.missing_datasets(planned(str(bare_machine / "my_images")), probe) == {} and probe.asked == []


def test_an_error_for_users_reads_as_one_line_with_its_fixes():
    error = DatasetNotFoundError("dataset 'x' was found nowhere. Provide it with\n  - an offline copy\n  - or internet")
    assert display.one_line(error) == ("DatasetNotFoundError: dataset 'x' was found nowhere. Provide it with: an "
                                       "offline copy; or internet")
    assert display.one_line(ConfigError("profile='nosuch' is unknown")) == \
        "ConfigError: profile='nosuch' is unknown"


def test_the_kernel_shows_the_packages_errors_for_users_in_one_line():
    shown = []
    shell = SimpleNamespace(set_custom_exc=lambda errors, handler: shown.append((errors, handler)),
                            _showtraceback=lambda etype, value, stb: shown.append((etype, stb)))
    assert display.show_user_errors_in_one_line(shell)
    (errors, handler), = shown
    assert DatasetNotFoundError in errors and ConfigError in errors
    error = DatasetNotFoundError("found nowhere. Provide it with\n  - a copy")
    handler(shell, DatasetNotFoundError, error, None)
    assert shown[1] == (DatasetNotFoundError, ["DatasetNotFoundError: found nowhere. Provide it with: a copy"])
    assert display.show_user_errors_in_one_line(None) is False  # outside IPython: nothing to do


# --- training progress: one line per run ------------------------------------------------------------------------

from paraformer.training import progress  # noqa: E402


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def train_epochs(bar, epochs: int, clock: Clock, seconds: float = 4.0):
    for epoch in range(epochs):
        clock.now += seconds
        bar.set_postfix(loss=f"{1 / (epoch + 1):.3f}", acc="50.00", refresh=False)
        bar.update(1)


def test_a_live_run_replaces_its_one_output_and_leaves_the_summary_line():
    clock, outputs = Clock(), []
    handle = SimpleNamespace(update=lambda obj: outputs.append((repr(obj), obj._repr_html_())))
    bar = progress.LiveLine(3, "r [cpu]", 0, lambda obj, display_id: handle, clock)
    train_epochs(bar, 3, clock)
    bar.close()
    assert [text for text, _ in outputs] == ["r [cpu]: epoch 1/3 in 4.0 s, loss=1.000, acc=50.00",
                                             "r [cpu]: epoch 2/3 in 8.0 s, loss=0.500, acc=50.00",
                                             "r [cpu]: epoch 3/3 in 12.0 s, loss=0.333, acc=50.00",
                                             "r [cpu]: epoch 3/3 in 12.0 s, loss=0.333, acc=50.00"]
    assert "<progress" in outputs[0][1] and "<progress" not in outputs[-1][1]  # the saved form: the line alone


def test_under_papermill_a_run_prints_one_line_when_it_ends(capsys):
    clock = Clock()
    bar = progress.SummaryLine(5, "r [cpu]", 2, clock)  # resumed after epoch 2
    train_epochs(bar, 2, clock, seconds=45.0)
    bar.close()
    bar.close()
    assert capsys.readouterr().out == "r [cpu]: stopped at epochs 3-4/5 in 1 min 30 s, loss=0.500, acc=50.00\n"


def test_durations_read_in_the_largest_sensible_unit():
    assert [progress.duration_text(s) for s in (8.24, 184, 7500)] == ["8.2 s", "3 min 04 s", "2 h 05 min"]


# --- figures -------------------------------------------------------------------------------------------------------

from paraformer.experiments import figures, speedup  # noqa: E402

TABLES_DIR = ROOT / "results" / "tables"


@pytest.fixture
def drawn():
    """Figures made by a test, drawn (so that text positions exist) and closed after it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []

    def draw(fig):
        fig.canvas.draw()
        made.append(fig)
        return fig

    yield draw
    for fig in made:
        plt.close(fig)


def legend_texts(ax) -> list[list[str]]:
    """Every legend of `ax` (the one set last and those added as artists), as its entries' texts."""
    from matplotlib.legend import Legend

    legends = [a for a in ax.get_children() if isinstance(a, Legend)]
    return [[t.get_text() for t in legend.get_texts()] for legend in legends]


def test_the_compression_figure_ticks_each_kept_count_with_its_ratio_and_tells_method_from_selection(drawn):
    means = pd.read_csv(TABLES_DIR / "compression_all.csv")
    ax = drawn(figures.compression(means, "Para-F-1-6", "quick")).axes[0]
    kept = means.drop_duplicates("branches_kept").sort_values("branches_kept")
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{k}\n{r:.1f}x" for k, r in
                                                             zip(kept["branches_kept"], kept["param_ratio"])]
    assert sorted(legend_texts(ax)) == sorted([list(dict.fromkeys(means["method"])),
                                               ["first k branches", "best k on validation",
                                                "ViT of that size, from scratch"]])


def test_the_cost_model_figure_splits_its_legend_by_colour_and_by_line_style(drawn):
    # the notebook draws the predictions beside the measured steps, which it writes to a table of their own
    predicted = pd.read_csv(TABLES_DIR / "speed_cost_model.csv")
    measured = pd.read_csv(TABLES_DIR / "speed_cost_model_check.csv")[["method", "model", "devices", "measured_ms"]]
    predicted = predicted.merge(measured.assign(depth=24), on=["depth", "method", "model", "devices"], how="left")
    lines = speedup.cost_model_lines(predicted, 24)
    assert sum(len(line.measured_ms) for line in lines) == len(measured)  # every measured step is drawn
    ax = drawn(figures.cost_model(lines, "a CPU", 24)).axes[0]
    assert sorted(legend_texts(ax)) == sorted([[line.label for line in lines],
                                               ["predicted, ring all-reduce", "predicted, tree all-reduce", "measured"]])
    assert [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()] == []


def test_the_layer_speed_figure_ticks_exactly_the_measured_layer_counts(drawn):
    layers = pd.read_csv(ROOT / "results" / "bench" / "quick" / "layers.csv")
    for ax in drawn(figures.layer_speed(layers, "a CPU", "quick")).axes:
        labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_text()]
        assert labels == [str(n) for n in sorted(layers["num_layers"].unique())]


def test_the_growth_figure_titles_stay_above_their_own_panels(drawn):
    fig = drawn(figures.growth(pd.read_csv(TABLES_DIR / "expansion_growth.csv"), "fashion_mnist", "quick"))
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:  # a title wider than its panel runs into the next one
        title, panel = ax.title.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert panel.x0 <= title.x0 and title.x1 <= panel.x1


def incremental_metrics(seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = [dict(seed=seed, strategy=strategy, after_task=after, task=task, trained_params=10,
                 class_il_acc=50.0 + seed + (strategy == "joint") * 10 - 5 * (after - task), task_il_acc=70.0 + seed)
            for seed in seeds for strategy in ("expand", "finetune", "joint") for after in (1, 2, 3)
            for task in range(1, after + 1)]
    return pd.DataFrame(rows)


def test_the_class_incremental_curves_carry_the_interval_over_seeds(drawn):
    fig = drawn(figures.class_incremental(incremental_metrics(), "cifar10", "quick"))
    half = 4.302653 * 1.0 / 3 ** 0.5  # t(0.975, 2 degrees of freedom) x the s.d. of seeds 0, 1, 2 (1.0) / sqrt(3)
    for ax in fig.axes:
        assert len(ax.containers) == 3  # expand, finetune, joint: each with error bars
        for container in ax.containers:
            segments = container.lines[2][0].get_segments()
            assert [round(s[1][1] - s[0][1], 4) for s in segments] == [round(2 * half, 4)] * len(segments)
    assert figures.seed_interval(pd.Series([1.0, 2.0, 3.0])) == pytest.approx((2.0, 2.0 - half, 2.0 + half), 1e-5)
    assert figures.seed_interval(pd.Series([4.0])) == (4.0, 4.0, 4.0)


def test_the_convergence_band_is_named_in_the_legend(drawn):
    curves = pd.DataFrame([dict(dataset="d", label=label, seed=seed, epoch=epoch, test_acc=10.0 * epoch + seed,
                                train_seconds=float(epoch)) for label in ("ViT-2", "Para-F-1-2 joint")
                           for seed in (0, 1) for epoch in (1, 2, 3)])
    ax = drawn(figures.convergence(curves, "a CPU", "quick")).axes[0]
    assert legend_texts(ax) == [["ViT-2", "Para-F-1-2 joint", "band: ±1 s.d. over seeds"]]


def test_fine_tuning_curves_tick_whole_epochs(drawn):
    history = [{"epoch": e, "test_acc": 20.0 + e} for e in range(1, 6)]
    runs = pd.DataFrame([dict(dataset="cifar10", seed=0, arrangement="sequential", model="Para-F-12-12")])
    ax = drawn(figures.finetune_curves(runs, [SimpleNamespace(history=history)], {}, False)).axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
