"""What a reader sees: short tables rounded to what the measurement supports, one line per verdict, and
committed notebooks that JupyterLab opens without changing and that hold no path of the machine that ran them."""

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from paraformer.experiments.display import (MISSING, accuracy_columns, plain_log_ticks, reader_table, verdict_details,
                                            verdict_line)
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
    assert verdict_line(supported) == ("**A beats B**: ours +2.0 [+1.0, +3.1] points; paper +2.39 points → "
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
