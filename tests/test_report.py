"""The claims report, convergence verdicts, fair baselines and the run-record loader: what the last notebook and a
researcher re-analysing the results rely on."""

import math
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from scipy.stats import t as t_dist

from paraformer.core.config import DataConfig, ModelConfig, Recipe
from paraformer.experiments import display, versus_vit
from paraformer.experiments.plan import sweep_rows
from paraformer.experiments.profiles import get_profile
from paraformer.experiments.regime import Regime
from paraformer.experiments.report import (CLAIM_COLUMNS, NBSP, REPORTED, claim_rows, collect_claims, paper_tables,
                                           convergence_verdicts, devices, epochs_to_target, report_markdown,
                                           report_table, reported_profiles, verdict_counts, verdict_of_row,
                                           write_claims)
from paraformer.experiments.stats import judge
from paraformer.experiments.versus_vit import choose_rates
from paraformer.core.runcache import load_runs, load_trained_model
from paraformer.training import train
from tests.test_train import MODEL, RECIPE, toy_data


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    return tmp_path


def verdicts():
    return [judge("A beats B", 2.0, 0.5, 3.5, paper=2.39), judge("C beats D", 0.5, -1.0, 2.0, minimum_detectable=2.8),
            judge("x3.30 faster", float("nan"), float("nan"), float("nan"), not_testable="a CPU cannot overlap")]


def test_claims_of_every_profile_are_gathered_into_one_row_per_claim(results):
    write_claims(verdicts(), "paper 2025", "03_x", "quick", "cpu")
    write_claims(verdicts()[:1], "paper 2025", "03_x", "gpu", "H100")
    write_claims(verdicts()[:1], "paper 2025", "03_x", "ci", "cpu")  # a test's: not in the committed profiles' report
    assert reported_profiles("quick") == ("cpu", "quick", "gpu", "paper") and reported_profiles("ci") == ("ci",)
    claims = collect_claims(reported_profiles("quick"), results)
    assert list(claims.columns) == CLAIM_COLUMNS and len(claims) == 4
    table = report_table(claims).set_index("claim")
    assert table.loc["A beats B", "quick: verdict"] == "supported; paper's figure inside"
    assert table.loc["C beats D", "quick: verdict"] == "inconclusive; detects 2.8"
    assert table.loc["C beats D", "gpu: verdict"] == ""  # not measured there
    assert table.loc["x3.30 faster", "quick: ours"] == "-" and table.loc["A beats B", "paper's figure"] == "2.39"
    assert devices(claims) == {"quick": ["cpu"], "gpu": ["H100"]}  # once per profile, not in every row


def test_a_committed_claim_reads_back_as_the_verdict_it_was_written_from():
    regime = Regime("quick", arms=(31.27, 32.02), paper_arms=(71.53, 55.95), chance=10.0, linear=29.5, epochs=5,
                    train_images=2500, paper_epochs=500)
    verdict = judge("1-24 beats 1-1 on cifar10", 0.75, -0.27, 2.0, paper=15.58, minimum_detectable=1.2,
                    confidence=0.992, regime=regime, source="paper", source_note="Table 2")
    verdict = replace(verdict, caveat="holds by construction")
    (_, row), = claim_rows([verdict], "Wang & Li 2024", "01_layer_sweep", "quick", "cpu").iterrows()
    assert verdict_of_row(row) == verdict
    # and through a CSV, as the report reads it
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "claims.csv"
        claim_rows([verdict], "Wang & Li 2024", "01_layer_sweep", "quick", "cpu").to_csv(path, index=False)
        (_, again), = pd.read_csv(path).iterrows()
    assert verdict_of_row(again) == verdict


def test_the_report_table_qualifies_a_verdict_by_its_scale_and_never_wraps_our_figure():
    low = Regime("quick", arms=(31.0, 32.0), paper_arms=(71.53, 55.95), chance=10.0, linear=30.5)
    rows = claim_rows([judge("1-24 beats 1-1", 0.75, -0.27, 2.0, paper=15.58, regime=low, minimum_detectable=1.2),
                       judge("P is faster", 2.5, 2.4, 2.6, threshold=1.0, unit="x (B over P)"),
                       judge("1-2 on 2 is faster", -0.5, -0.7, -0.3, threshold=1.0,
                             unit="x (Para-F-1-1 on 1 over Para-F-1-2 on 2)")],
                      "Wang & Li 2024", "01_layer_sweep", "quick", "cpu")
    table = report_table(rows).set_index("claim")
    assert table.loc["1-24 beats 1-1", "quick: verdict"] == ("inconclusive at quick (under-trained); detects 1.2; "
                                                            "paper's figure excluded")
    assert table.loc["1-24 beats 1-1", "quick: ours"] == NBSP.join(["+0.75", "[-0.27,", "2]", "points"])
    assert table.loc["P is faster", "quick: ours"] == NBSP.join(["2.5", "[2.4,", "2.6]", "x", "(B", "over", "P)"])
    # the names' hyphens are no-break ones; the minus signs stay minus signs
    assert table.loc["1-2 on 2 is faster", "quick: ours"] == NBSP.join(
        ["-0.5", "[-0.7,", "-0.3]", "x", "(Para\u2011F\u20111\u20111", "on", "1", "over", "Para\u2011F\u20111\u20112", "on", "2)"])
    assert " " not in "".join(table[["quick: ours"]].values.ravel())  # nothing for a browser to break a line at
    assert table.loc["P is faster", "notebook"] == ("[01](notebooks/01_layer_sweep.ipynb) "
                                                     "[claims](tables/claims_01_layer_sweep.md)")
    counts = verdict_counts(rows).set_index("profile")
    assert counts.loc["quick", "inconclusive"] == 1 and counts.loc["quick", "supported"] == 1
    assert counts.loc["quick", "of which at this scale only"] == 1


def test_the_report_leads_with_the_counts_and_names_each_device_once(results):
    write_claims(verdicts(), "paper 2025", "03_x", "quick", "cpu A")
    write_claims(verdicts()[:1], "paper 2024", "01_x", "quick", "cpu A; cpu A, 1 thread")
    text = report_markdown(collect_claims(("quick",), results), ["a note"])
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Verdicts" and "## paper 2025" in headings and "## paper 2024" in headings
    assert devices(collect_claims(("quick",), results)) == {"quick": ["cpu A", "cpu A, 1 thread"]}


def test_a_file_that_is_not_a_claims_table_is_refused_by_name(results):
    (results / "tables").mkdir()
    pd.DataFrame({"a": [1]}).to_csv(results / "tables" / "claims_bad.csv", index=False)
    with pytest.raises(ValueError, match="claims_bad.csv is not a claims table"):
        collect_claims(("quick",), results)


def test_claim_rows_need_one_paper_per_verdict():
    rows = claim_rows(verdicts(), ["p1", "p2", "p3"], "nb", "quick", "cpu")
    assert rows["paper"].tolist() == ["p1", "p2", "p3"] and rows["interval_pct"].tolist() == [95.0] * 3
    with pytest.raises(ValueError, match="3 verdicts but 2 papers"):
        claim_rows(verdicts(), ["p1", "p2"], "nb", "quick", "cpu")


def curves(epochs_by_label: dict, seeds=(0, 1, 2)) -> pd.DataFrame:
    """Accuracy 10 per epoch until the label's epoch of reaching 50, then 50 (the reference ends at 50)."""
    rows = []
    for label, reach in epochs_by_label.items():
        for seed in seeds:
            hit = reach[seed] if isinstance(reach, list) else reach
            for epoch in range(1, 7):
                rows.append({"dataset": "d", "label": label, "seed": seed, "epoch": epoch,
                             "test_acc": 50.0 if epoch >= hit else 10.0})
    return pd.DataFrame(rows)


def test_convergence_counts_epochs_to_the_target_paired_by_seed():
    epochs = epochs_to_target(curves({"joint": 5, "authors": [2, 3, 2], "never": 99}), "joint")
    by = epochs.set_index(["label", "seed"])
    assert by.loc[("authors", 1), "epochs"] == 3 and by.loc[("never", 0), "epochs"] == 7  # 6 epochs, then censored
    assert bool(by.loc[("never", 0), "censored"])
    sooner, never = convergence_verdicts(epochs, "joint", ["authors", "never"])
    assert sooner.verdict == "supported" and sooner.ours == pytest.approx(5 - 7 / 3)
    assert never.verdict == "contradicted" and never.confidence == pytest.approx(1 - 0.05 / 2)
    (alone,) = convergence_verdicts(epochs_to_target(curves({"joint": 5, "authors": 2}, seeds=(0,)), "joint"),
                                    "joint", ["authors"])
    assert alone.verdict == "not testable here"


def test_seeds_that_all_converge_one_epoch_sooner_are_not_certain_of_it():
    # whole-epoch counts that agree on every seed have no spread; the interval keeps the counts' resolution
    epochs = epochs_to_target(curves({"joint": 3, "authors": 2, "prefix": 2}), "joint")
    sooner, _ = convergence_verdicts(epochs, "joint", ["authors", "prefix"])
    assert sooner.ours == 1.0 and sooner.verdict == "inconclusive" and sooner.low < 0 < sooner.high
    # what it detects, at the level of its interval (Bonferroni over the two methods), from the counts' variance
    level = 0.05 / 2
    assert sooner.confidence == pytest.approx(1 - level)
    assert sooner.minimum_detectable == pytest.approx((t_dist.ppf(1 - level / 2, 2) + norm.ppf(0.8))
                                                      * math.sqrt(2 / 12) / math.sqrt(3))
    (much,) = convergence_verdicts(epochs_to_target(curves({"joint": 6, "authors": 2}), "joint"), "joint", ["authors"])
    assert much.ours == 4.0 and much.verdict == "supported" and much.high - much.low > 0


def test_the_grid_chooses_on_validation_and_breaks_ties_towards_the_recipes_rate():
    grid = pd.DataFrame([{"dataset": "d", "label": label, "lr": lr, "val_acc": acc, "test_acc": 100 - acc}
                         for label, accs in (("ViT-6", (40, 45, 45)), ("P joint", (50, 44, 43)))
                         for lr, acc in zip((1e-3, 2e-3, 4e-3), accs)])
    chosen = choose_rates(grid, recipe_lr=2e-3)
    picks = chosen[chosen["chosen"]].set_index("label")["lr"].to_dict()
    assert picks == {"ViT-6": 2e-3, "P joint": 1e-3}  # the test column never enters the choice
    with pytest.raises(ValueError, match="validation"):
        choose_rates(grid.assign(val_acc=float("nan")), 2e-3)


def test_the_compute_matched_vit_trains_for_the_paraformers_share_of_its_flops(monkeypatch):
    quick = get_profile("quick").comparison  # Para-F-1-6 against ViT-6, here for 5 epochs
    comparison = replace(quick, scale=replace(quick.scale, recipe=replace(quick.scale.recipe, epochs=5)))
    flops = {"Para-F-6-6": 4.0, "Para-F-1-6": 1.25}
    monkeypatch.setattr(versus_vit, "training_flops_per_image", lambda model, method: flops[model.name])
    # 5 epochs x 1.25 / 4 = 1.56 -> 2; halves round up (2.5 -> 3), not to the even number
    assert versus_vit.matched_epochs(comparison, "cifar10") == 2
    flops["Para-F-1-6"] = 4.0 * 2.5 / comparison.scale.recipe.epochs
    assert versus_vit.matched_epochs(comparison, "cifar10") == 3
    assert [r.recipe.epochs for r in versus_vit.matched_plan(comparison)] == [3, 3, 3]  # every seed


def test_any_results_folder_loads_into_one_row_per_run_with_its_config_and_predictions(tmp_path):
    data = toy_data()
    first = train(MODEL, DataConfig(dataset="toy"), RECIPE, data=data, results_root=tmp_path, progress=False)
    second = train(MODEL, DataConfig(dataset="toy"), Recipe(**{**RECIPE.__dict__, "seed": 5}), data=data,
                   results_root=tmp_path, progress=False)
    runs = load_runs(tmp_path).set_index("seed")
    assert sorted(runs.index) == [1, 5]
    assert runs.loc[5, "final_test_acc"] == second.final_test_acc and runs.loc[1, "key"] == first.key
    assert runs.loc[1, "model.num_layers"] == MODEL.num_layers and runs.loc[1, "recipe.augment"] == RECIPE.augment
    assert (runs.loc[1, "correct"] == first.correct()).all() and len(runs.loc[1, "history"]) == RECIPE.epochs
    with pytest.raises(FileNotFoundError, match="no runs/ folder"):
        load_runs(tmp_path / "nowhere")


def test_the_readmes_results_table_is_the_one_the_committed_claims_tables_give():
    from pathlib import Path

    from paraformer.experiments.report import README_END, README_START, readme_block

    root = Path(__file__).resolve().parents[1]
    try:
        committed = collect_claims(REPORTED, root / "results")
    except ValueError as error:  # tables written before the claims table gained its regime and source columns
        pytest.skip(f"the committed claims tables predate this version ({error}); make reproduce rewrites them")
    readme = (root / "README.md").read_text()
    block = readme[readme.index(README_START):readme.index(README_END) + len(README_END)]
    assert block == readme_block(committed)


def test_the_readme_block_is_replaced_between_its_markers_and_refused_without_them(tmp_path):
    from paraformer.experiments.report import README_END, README_START, readme_block, update_readme

    claims = claim_rows(verdicts(), "paper 2025", "03_x", "quick", "cpu")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold table\n{README_END}\noutro\n")
    assert update_readme(readme, claims) and not update_readme(readme, claims)  # the second time: nothing to change
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and readme_block(claims) in text
    assert "old table" not in text and "A beats B" in text
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="needs exactly one"):
        update_readme(tmp_path / "bare.md", claims)


def test_two_results_folders_are_compared_run_by_run_bit_for_bit(tmp_path, capsys):
    import json
    import shutil

    from paraformer.tools.compare_runs import main as compare_runs

    first = train(MODEL, DataConfig(dataset="toy"), RECIPE, data=toy_data(), results_root=tmp_path / "a",
                  progress=False)
    (tmp_path / "b" / "runs").mkdir(parents=True)
    record = f"{first.name}-{first.key}.json"
    shutil.copy(tmp_path / "a" / "runs" / record, tmp_path / "b" / "runs" / record)
    values = json.loads((tmp_path / "b" / "runs" / record).read_text())
    values["history"][0]["train_seconds"] += 1.0  # times are no numbers of the run
    (tmp_path / "b" / "runs" / record).write_text(json.dumps(values))
    assert compare_runs([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    weights = {name: tensor.clone() for name, tensor in load_trained_model(first, tmp_path / "a").state_dict().items()}
    (tmp_path / "b" / "models").mkdir()
    torch.save(weights, tmp_path / "b" / "models" / f"{first.name}-{first.key}.pt")
    assert compare_runs([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    weights["head.bias"][0] += 1e-6
    torch.save(weights, tmp_path / "b" / "models" / f"{first.name}-{first.key}.pt")
    assert compare_runs([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert capsys.readouterr().out.splitlines()[-2] == f"{record}: final weights differ"
    values["history"][1]["train_loss"] += 1e-9
    values["final_test_acc"] += 0.01
    (tmp_path / "b" / "runs" / record).write_text(json.dumps(values))
    assert compare_runs([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-4:-1] == [f"{record}: per-epoch history differs (epoch 2)", f"{record}: final_test_acc differs",
                            f"{record}: final weights differ"]


def test_the_notebook_shows_the_report_s_tables_one_per_paper_without_the_links_that_resolve_only_from_the_report():
    rows = pd.concat([claim_rows([judge("1-24 beats 1-1", 0.75, -0.27, 2.0)], "Wang & Li 2024", "01_layer_sweep",
                                 "quick", "cpu"),
                      claim_rows([judge("authors beats ViT-6", 3.6, -0.7, 7.9)], "Wang, Wei & Li 2025",
                                 "03_paraformer_vs_vit", "quick", "cpu")])
    with_links, without = paper_tables(rows), paper_tables(rows, links=False)
    headings = [line for line in without.splitlines() if line.startswith("## ")]
    assert headings == ["## Wang & Li 2024", "## Wang, Wei & Li 2025"]
    header = [cell.strip() for cell in without.splitlines()[2].strip("|").split("|")]
    assert header == ["claim", "source", "paper's figure", "quick: ours", "quick: verdict"]
    assert [cell.strip() for cell in with_links.splitlines()[2].strip("|").split("|")][-1] == "notebook"


def test_a_part_of_notebook_03_that_a_profile_does_not_run_is_an_empty_table_and_says_so():
    # quick and cpu do not run the authors' recipe: no runs, an empty labelled table, no verdicts
    comparison = get_profile("quick").comparison
    assert comparison.authors_datasets == () and versus_vit.authors_plan(comparison) == []
    empty = versus_vit._labelled(sweep_rows([]), comparison.authors_variant())
    assert empty.empty and "label" in empty.columns
    assert display.verdict_lines([]) == f"- {display.NOT_RUN}"
