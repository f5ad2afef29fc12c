"""Training-time estimates (paraformer.experiments.estimate, paraformer.tools.estimate): what each planned run costs
in FLOPs, what a notebook's and the suite's estimate say, and what the command line prints. Nothing here trains or
decodes a dataset."""

import ast
import inspect
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from paraformer.core.config import ConfigError, DataConfig, ModelConfig, Recipe
from paraformer.core.data import image_counts
from paraformer.core.flops import evaluation_flops_per_image, stage_flops
from paraformer.core.provenance import device_name
from paraformer.core.runcache import run_paths
from paraformer.experiments import compression, layer_sweep, versus_vit
from paraformer.experiments.estimate import estimate as estimate_runs
from paraformer.experiments.estimate import measure_flops_per_second, run_cost
from paraformer.experiments.plan import PlannedRun
from paraformer.experiments.profiles import get_profile
from paraformer.tools import estimate as suite_estimate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def results_root(tmp_path, monkeypatch):
    """An empty run cache."""
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    return tmp_path


def notebook_parameters(stem: str) -> dict:
    """The assignments of a notebook's parameters cell, as papermill sees them."""
    cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
    (cell,) = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    return {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse("".join(cell["source"])).body
            if isinstance(s, ast.Assign)}


# --- FLOPs of a run ----------------------------------------------------------------------------------------------

def vit(depth: int) -> ModelConfig:
    return ModelConfig(image_size=16, patch_size=4, width=32, num_heads=2, mlp_ratio=2.0, branch_depth=depth,
                       num_layers=depth, num_classes=10)


def test_a_run_costs_its_step_times_images_and_epochs_plus_an_evaluation_every_epoch():
    model = vit(3)
    data = DataConfig("cifar10", n_train=100, n_test=50, val_fraction=0.1)  # 90 images train, 10 validate
    cost = run_cost(PlannedRun("test", model, data, Recipe(epochs=3), "run"))
    ((_, step),) = stage_flops(model)
    assert (cost.epochs, cost.train_images, cost.test_images, cost.learns) == (3, 90, 50, "all")
    assert cost.train_flops == 3 * 90 * step
    assert cost.eval_flops == 3 * 50 * evaluation_flops_per_image(model)


def paraformer(branches: int) -> ModelConfig:
    """Depth-1 branches on 28 px greyscale images: the stem is small beside a branch, as in the ci profile."""
    return ModelConfig(image_size=28, in_channels=1, patch_size=4, width=64, num_heads=2, mlp_ratio=2.0,
                       branch_depth=1, num_branches=branches)


def test_a_frozen_run_has_a_stage_of_the_recipes_epochs_per_branch_and_evaluates_the_whole_model_each():
    data = DataConfig("fashion_mnist", n_train=64, n_test=32)
    cost = run_cost(PlannedRun("test", paraformer(4), data, Recipe(epochs=2, method="frozen"), "run"))
    assert (cost.epochs, cost.learns) == (8, "one branch per stage (4 stages)")
    assert cost.train_flops == 64 * 2 * sum(flops for _, flops in stage_flops(paraformer(4), "frozen"))
    assert cost.eval_flops == 8 * 32 * evaluation_flops_per_image(paraformer(4))


def test_a_grown_run_that_trains_only_new_branches_says_so_and_costs_less():
    data = DataConfig("fashion_mnist", n_train=64, n_test=32)
    parent = PlannedRun("test", paraformer(2), data, Recipe(), "parent")
    grown = [run_cost(PlannedRun("test", paraformer(4), data, Recipe(freeze_inherited=freeze), "grown",
                                 parent=parent)) for freeze in (False, True)]
    assert [cost.learns for cost in grown] == ["all", "new parameters (inherited frozen)"]
    assert grown[1].train_flops < grown[0].train_flops


def test_an_mgrit_run_is_counted_through_its_solver_and_costs_more_than_backprop():
    model = ModelConfig(image_size=16, patch_size=4, width=32, num_heads=2, mlp_ratio=2.0, branch_depth=8,
                        num_layers=8, num_classes=10, step=1 / 8)
    data = DataConfig("fashion_mnist", n_train=64, n_test=32)
    serial = run_cost(PlannedRun("test", model, data, Recipe(), "serial"))
    mgrit = run_cost(PlannedRun("test", model, data, Recipe(solver="mgrit", mgrit_coarsening=2), "mgrit"))
    checked = run_cost(PlannedRun("test", model, data, Recipe(solver="mgrit", mgrit_coarsening=2,
                                                              mgrit_check_every=1), "checked"))
    assert serial.train_flops < mgrit.train_flops < checked.train_flops
    assert mgrit.eval_flops == serial.eval_flops  # evaluation runs the serial network


def test_image_counts_come_from_the_registry_with_class_subsets_and_validation_shares():
    assert image_counts(DataConfig("cifar10")) == (50_000, 0, 10_000)
    assert image_counts(DataConfig("cifar10", val_fraction=0.05)) == (47_500, 2_500, 10_000)
    assert image_counts(DataConfig("cifar100", classes=tuple(range(10)))) == (5_000, 0, 1_000)
    assert image_counts(DataConfig("fashion_mnist", n_train=512, n_test=200, val_fraction=0.1)) == (461, 51, 200)
    # the paper's datasets that are not offline here: sizes from their specs, nothing is looked for
    assert image_counts(DataConfig("flowers102", val_fraction=0.05)) == (969, 51, 6_149)
    with pytest.raises(ConfigError, match="registry dataset"):
        image_counts(DataConfig("/no/such/folder"))


# --- the plans behind the estimates ------------------------------------------------------------------------------

@pytest.mark.parametrize("stem", list(suite_estimate.NOTEBOOKS))
def test_every_notebook_parameter_is_its_modules_with_the_same_default(stem):
    """What a notebook passes on reaches its module's plan or run with the default the notebook states."""
    module = suite_estimate.NOTEBOOKS[stem]
    parameters = notebook_parameters(stem)
    assert parameters.pop("profile") == "ci"
    signatures = [inspect.signature(getattr(module, name)).parameters for name in ("plan", "run", "findings", "speed_findings")
                  if callable(getattr(module, name, None))]
    for name, value in parameters.items():
        defaults = [s[name].default for s in signatures if name in s]
        assert defaults, f"{stem}: parameter {name} reaches no function of {module.__name__}"
        assert {json.dumps(list(d) if isinstance(d, tuple) else d) for d in defaults} == {json.dumps(value)}


def test_the_ci_plan_of_notebook_01_is_its_default_models_times_datasets_times_seeds():
    models = notebook_parameters("01_layer_sweep")["models"]
    scale = get_profile("ci").scale
    runs = layer_sweep.plan("ci")
    assert [(r.model.name, r.data.dataset, r.recipe.seed) for r in runs] == [
        (f"Para-F-{m}", d, s) for d, m, s in itertools.product(scale.datasets, models, scale.seeds)]
    assert {(r.data, r.recipe) for r in runs} == {(scale.data_config("fashion_mnist"), scale.recipe)}
    assert runs[0].model == ModelConfig.from_name("1-1", image_size=28, in_channels=1, num_classes=10, patch_size=4,
                                                  width=32, num_heads=2, mlp_ratio=2.0)


def test_notebook_04_trains_a_vit_of_every_kept_size_that_compresses_two_times_or_more():
    comparison = get_profile("ci").comparison
    runs = compression.plan("ci")
    seeds = list(comparison.scale.seeds)
    # notebook 03's ParaFormer on every seed, then a ViT of each kept size that compresses 2x or more, every seed
    assert [(r.model.name, r.recipe.seed) for r in runs if r.recipe.method == "joint"] == [
        (f"Para-F-{comparison.paraformer}", s) for s in seeds] + [(f"Para-F-{n}-{n}", s) for n in (1, 2) for s in seeds]


def test_the_paper_profile_is_planned_and_costed_without_its_datasets():
    runs = layer_sweep.plan("paper", models=["1-1"])
    assert [r.data.dataset for r in runs] == ["cifar10", "cifar100", "stl10", "oxford_pets", "flowers102"]
    assert [r.model.image_size for r in runs] == [32, 32, 96, 96, 96]
    assert run_cost(runs[2]).train_images == 4_750  # STL-10: 5,000 training images, 5% held out


# --- estimates of notebooks and of the suite ---------------------------------------------------------------------

def test_the_suite_counts_a_run_that_two_notebooks_make_once():
    suite = suite_estimate.estimate_suite("ci", flops_per_second=1e12)
    table = suite.table.set_index("notebook")
    runs = suite.runs
    distinct = runs.drop_duplicates(["run", "key"])
    # 02 trains notebook 01's layer sweep again (4 models at ci); 04 notebook 03's ParaFormers of both seeds (4 methods
    # x 2); at ci, 05's first growth model (Para-F-1-1 on the profile's data and recipe) is 01's Para-F-1-1
    assert table["shared"].to_dict() == {"01_layer_sweep": 0, "02_depth_sweep": 4, "03_paraformer_vs_vit": 0,
                                         "04_compression": 8, "05_expansion": 1, "06_speedup": 0,
                                         "07_finetune_pretrained": 0, "08_layer_parallel": 0, "99_report": 0,
                                         "total": 0}
    assert table.loc["total", "runs"] == len(distinct) == len(runs) - 13
    assert table.loc["total", "pflop"] == pytest.approx(distinct["pflop"].sum())
    assert table.loc["total", "minutes"] == pytest.approx(distinct["pflop"].sum() * 1e15 / 1e12 / 60
                                                          + distinct["augment_minutes"].sum())
    assert table.loc["02_depth_sweep", "minutes_alone"] > table.loc["02_depth_sweep", "minutes"]
    assert table.loc["06_speedup", "runs"] == 0 and table.loc["06_speedup", "note"].startswith("trains nothing")


def test_a_notebook_estimate_sees_the_run_cache(results_root):
    estimate = layer_sweep.estimate("ci", flops_per_second=1e12)
    assert list(estimate.runs["cached"]) == [False] * 4
    first = estimate.runs.iloc[0]
    record, _, _ = run_paths(first["run"], first["key"], results_root / "ci")
    record.parent.mkdir(parents=True)
    record.write_text("{}")  # where train() would look for the finished run
    assert list(layer_sweep.estimate("ci", flops_per_second=1e12).runs["cached"]) == [True, False, False, False]


def test_an_estimate_is_flops_over_the_rate_and_a_measured_rate_says_where_it_was_measured():
    given = layer_sweep.estimate("ci", flops_per_second=2e11)
    assert given.minutes == pytest.approx(given.pflop * 1e15 / 2e11 / 60)
    assert given.rate.describe() == "0.2 TFLOP/s (given)"
    rate = measure_flops_per_second("ci", "cpu", repeats=3)
    assert 1e8 < rate < 1e14 and rate.device == device_name(__import__("torch").device("cpu"))
    measured = layer_sweep.estimate("ci", flops_per_second=rate)
    assert measured.minutes == pytest.approx(given.minutes * 2e11 / rate)
    assert (rate.detail, rate.device) == ("ViT-6 width 32, batch 32, fp32", device_name(__import__("torch").device("cpu")))


# --- the command line --------------------------------------------------------------------------------------------

def test_the_command_line_prints_a_table_per_notebook_and_the_total(capsys):
    assert suite_estimate.main(["--profile", "ci", "--flops-per-second", "1e12", "--notebooks", "01", "2"]) == 0
    out = capsys.readouterr().out
    suite = suite_estimate.estimate_suite("ci", 1e12, ["01", "02"])
    lines = [line.split() for line in out.splitlines()]
    header = next(line for line in lines if line[:2] == ["notebook", "runs"])
    rows = {line[0]: dict(zip(header, line)) for line in lines if line and line[0] in ("01_layer_sweep",
                                                                                        "02_depth_sweep", "total")}
    assert {name: int(row["runs"]) for name, row in rows.items()} == {"01_layer_sweep": 4, "02_depth_sweep": 8,
                                                                      "total": 8}
    assert float(rows["total"]["minutes"]) == pytest.approx(round(suite.table["minutes"].iloc[-1], 1))


def test_the_command_line_refuses_an_unknown_profile_in_one_line():
    done = subprocess.run([sys.executable, "-m", "paraformer.tools.estimate", "--profile", "nosuch"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert len(done.stderr.splitlines()) == 1 and "invalid choice: 'nosuch'" in done.stderr


def test_the_command_line_refuses_a_bad_rate_and_an_unknown_notebook_in_one_line(capsys):
    assert suite_estimate.main(["--profile", "ci", "--flops-per-second", "-1"]) == 2
    assert suite_estimate.main(["--profile", "ci", "--flops-per-second", "1e12", "--notebooks", "09"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "positive number" in err[0] and "unknown notebook '09'" in err[1]


def test_augmentation_is_timed_into_the_estimate_where_a_recipe_augments():
    """The authors' RandAugment runs per operation on the native images, then the resize: not a FLOP of the model,
    but time all the same (issue 28: 224 px RandAugment once cost hours that no estimate showed)."""
    runs = list(dict.fromkeys(versus_vit.plan("ci")))
    rows = estimate_runs("03_paraformer_vs_vit", "ci", runs, flops_per_second=1e12).runs  # a row per distinct run
    authors = pd.Series([r.recipe.randaugment == "authors" and bool(r.recipe.augment) for r in runs])
    plain = pd.Series([not r.recipe.augment for r in runs])
    assert authors.any() and plain.any()
    assert (rows.loc[authors, "augment_minutes"] > 0).all() and (rows.loc[plain, "augment_minutes"] == 0).all()
    assert rows["minutes"].to_numpy() == pytest.approx(rows["pflop"].to_numpy() * 1e15 / 1e12 / 60
                                                       + rows["augment_minutes"].to_numpy())


def test_the_gpu_authors_variant_augments_native_images_and_resizes_them_to_224():
    runs = [r for r in versus_vit.plan("gpu") if r.recipe.randaugment == "authors"]
    assert runs and all(r.data.image_size is None and r.model.image_size == 224 and r.model.patch_size == 16
                        and r.recipe.augment == ("randaugment", "resize", "crop", "flip") for r in runs)
    assert all((r.model.head_dim, r.model.num_heads, r.model.qkv_bias, r.model.dropout) == (64, 3, False, 0.1)
               for r in runs)
