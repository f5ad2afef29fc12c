"""Training-time estimates (paraformer.estimate): which runs a notebook makes, what each costs in FLOPs, and what the
command line prints. Nothing here trains or decodes a dataset."""

import ast
import itertools
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from paraformer import config, estimate, experiments, pretrained
from paraformer.experiments import expansion, sweeps
from paraformer.config import ConfigError, DataConfig, ModelConfig, Recipe
from paraformer.data import DATASETS, ImageData, data_fingerprint
from paraformer.estimate import PlannedRun, image_counts, plan_notebook, run_cost, stage_costs
from paraformer.runcache import encode_labels
from paraformer.train import RunResult, run_key, run_name, run_paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def results_root(tmp_path, monkeypatch):
    """An empty run cache, and no active profile before or after the test."""
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    monkeypatch.setattr(config, "_active_profile", None)
    return tmp_path


def notebook_parameters(stem: str) -> dict:
    """The assignments of a notebook's parameters cell, as papermill sees them."""
    cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
    (cell,) = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    return {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse("".join(cell["source"])).body
            if isinstance(s, ast.Assign)}


# --- FLOPs per image, against formulas ---------------------------------------------------------------------------

# A ViT: 16 px images in 4 px patches (16 patches + the CLS token), width 32, MLP 64, 10 classes.
P, T, C, PATCH, W, H, K = 16, 17, 3, 4, 32, 64, 10
STEM = 2 * P * (C * PATCH**2) * W  # patch projection (2 FLOPs per multiply-add)
LAYER = 2 * T * (3 * W * W + W * W + 2 * W * H) + 2 * (2 * T * T * W)  # qkv, proj, MLP; scores and mixing
# A branch's last layer computes only the CLS token's output: its query, attention, projection and MLP, while keys
# and values still come from every token.
CLS_LAYER = 2 * W * W + 2 * T * W * 2 * W + 2 * (2 * T * W) + 2 * W * W + 2 * 2 * W * H
HEAD = 2 * W * K


def vit(depth: int, **fields) -> ModelConfig:
    return ModelConfig(image_size=16, in_channels=C, patch_size=PATCH, width=W, num_heads=2, mlp_ratio=2.0,
                       branch_depth=depth, num_layers=depth, num_classes=K, **fields)


def test_a_joint_vit_step_costs_three_forward_passes_less_the_stem_input_gradient():
    forward = STEM + 2 * LAYER + CLS_LAYER + HEAD  # ViT-3: two full layers, then the CLS-only one
    (stage,) = stage_costs(vit(3))
    # backward = twice the forward (a gradient for each operand of every product), except that the images need
    # no gradient: the patch projection's backward computes its weights' gradient alone
    assert stage.train_flops == 3 * forward - STEM
    assert stage.eval_flops == forward
    assert (stage.active_branches, stage.learns) == (1, "all")


def test_a_run_costs_its_step_times_images_and_epochs_plus_an_evaluation_every_epoch():
    model = vit(3)
    data = DataConfig("cifar10", n_train=100, n_test=50, val_fraction=0.1)  # 90 images train, 10 validate
    run = PlannedRun("test", model, data, Recipe(epochs=3), "run")
    (stage,) = stage_costs(model)
    cost = run_cost(run)
    assert (cost.epochs, cost.train_images, cost.test_images) == (3, 90, 50)
    assert cost.train_flops == 3 * 90 * stage.train_flops
    assert cost.eval_flops == 3 * 50 * stage.eval_flops


def test_counting_on_the_cpu_and_on_the_meta_device_agree(monkeypatch):
    model = ModelConfig.from_name("2-4", image_size=16, patch_size=4, width=32, num_heads=2, num_classes=K)
    on_cpu = stage_costs.__wrapped__(model, "authors")
    monkeypatch.setattr(estimate, "CPU_COUNT_LIMIT", 0)  # every model too large for the CPU
    assert estimate._counting_device(model).type == "meta"
    assert stage_costs.__wrapped__(model, "authors") == on_cpu


def paraformer(branches: int, **fields) -> ModelConfig:
    """Depth-1 branches on 28 px greyscale images: the stem is small beside a branch, as in the ci profile."""
    return ModelConfig(image_size=28, in_channels=1, patch_size=4, width=64, num_heads=2, mlp_ratio=2.0,
                       branch_depth=1, num_branches=branches, **fields)


def test_the_authors_method_costs_m_m_plus_1_over_2_plus_m_branch_passes_against_m_for_joint():
    m = 4
    (joint,) = stage_costs(paraformer(m), "joint")
    (authors,) = stage_costs(paraformer(m), "authors")
    (prefix,) = stage_costs(paraformer(m), "prefix")
    # pass 1: prefixes 1..m, one step each; pass 2: the full sum. Each step also runs the stem and the head again,
    # which the branch count leaves out, so the ratio is close to it, not equal.
    assert authors.train_flops / joint.train_flops == pytest.approx((m * (m + 1) / 2 + m) / m, rel=0.05)
    assert authors.train_flops / joint.train_flops > (m * (m + 1) / 2 + m) / m  # the m extra stem passes
    # the prefix method asks every prefix for a prediction at the cost of one step (plus m - 1 small heads)
    assert prefix.train_flops == pytest.approx(joint.train_flops, rel=0.02)


def test_each_frozen_stage_trains_one_branch_on_a_fixed_sum_and_costs_less_than_a_joint_step():
    m = 4
    (joint,) = stage_costs(paraformer(m), "joint")
    stages = stage_costs(paraformer(m), "frozen")
    assert [s.active_branches for s in stages] == [1, 2, 3, 4]
    assert [s.learns for s in stages] == ["branch 1 + stem and head", "branch 2", "branch 3", "branch 4"]
    assert all(s.train_flops < joint.train_flops for s in stages)
    # from stage 2 on, every stage adds one branch that only runs forward (28 px, patch 4: 49 patches + CLS)
    t, w, h = 50, 64, 128
    branch_forward = 2 * w * w + 2 * t * w * 2 * w + 2 * (2 * t * w) + 2 * w * w + 2 * 2 * w * h
    steps = [b.train_flops - a.train_flops for a, b in zip(stages[1:], stages[2:])]
    assert steps == [branch_forward, branch_forward]
    # evaluation always runs the whole model, and a frozen run has a stage of the recipe's epochs per branch
    assert {s.eval_flops for s in stages} == {joint.eval_flops}
    run = PlannedRun("test", paraformer(m), DataConfig("fashion_mnist", n_train=64, n_test=32),
                     Recipe(epochs=2, method="frozen"), "run")
    assert run_cost(run).epochs == 8


def test_learning_only_new_branches_costs_the_old_ones_a_forward_pass_alone():
    parent, grown = paraformer(2), paraformer(4)
    (inherit_all,) = stage_costs(grown, "joint", False, parent)
    (new_only,) = stage_costs(grown, "joint", True, parent)
    assert inherit_all == stage_costs(grown, "joint")[0]  # inheriting weights changes no count
    assert new_only.learns == "new parameters (inherited frozen)"
    assert new_only.train_flops < inherit_all.train_flops


# --- which runs a notebook makes -------------------------------------------------------------------------------

@pytest.mark.parametrize("stem", list(estimate.NOTEBOOKS))
def test_the_estimate_knows_every_notebooks_parameters_and_defaults(stem):
    parameters = notebook_parameters(stem)
    assert parameters.pop("profile") == "ci"
    assert estimate.NOTEBOOKS[stem].defaults == parameters


def test_the_ci_plan_of_notebook_01_is_its_default_models_times_datasets_times_seeds():
    models = notebook_parameters("01_layer_sweep")["models"]
    settings = experiments.PROFILES["ci"]
    runs = plan_notebook("01", "ci")
    assert len(runs) == len(models) * len(settings.datasets) * len(settings.seeds)
    assert [(r.model.name, r.data.dataset, r.recipe.seed) for r in runs] == [
        (f"Para-F-{m}", d, s) for d, m, s in itertools.product(settings.datasets, models, settings.seeds)]
    assert {(r.data, r.recipe) for r in runs} == {(settings.data_config("fashion_mnist"), settings.recipe)}
    assert runs[0].model == ModelConfig.from_name("1-1", image_size=28, in_channels=1, num_classes=10, patch_size=4,
                                                  width=32, num_heads=2, mlp_ratio=2.0)


def test_parameters_a_notebook_lacks_are_refused():
    with pytest.raises(ConfigError, match="unknown parameter"):
        plan_notebook("01", "ci", model=["1-1"])
    assert [r.model.name for r in plan_notebook("01", "ci", models=["1-2"], datasets=["cifar10"])] == ["Para-F-1-2"]


def test_image_counts_come_from_the_registry_with_class_subsets_and_validation_shares():
    assert image_counts(DataConfig("cifar10")) == (50_000, 0, 10_000)
    assert image_counts(DataConfig("cifar10", val_fraction=0.05)) == (47_500, 2_500, 10_000)
    assert image_counts(DataConfig("cifar100", classes=tuple(range(10)))) == (5_000, 0, 1_000)
    assert image_counts(DataConfig("fashion_mnist", n_train=512, n_test=200, val_fraction=0.1)) == (461, 51, 200)
    # the paper's datasets that are not offline here: sizes from their specs, nothing is looked for
    assert image_counts(DataConfig("flowers102", val_fraction=0.05)) == (969, 51, 6_149)
    with pytest.raises(ConfigError, match="registry dataset"):
        image_counts(DataConfig("/no/such/folder"))


def fake_data(data_config: DataConfig) -> ImageData:
    """An ImageData of the registry's shape (one image per split), fingerprinted as load_data would do."""
    spec = DATASETS[data_config.dataset]
    size = data_config.image_size or spec.image_size
    images = torch.zeros(1, spec.in_channels, size, size, dtype=torch.uint8)
    labels = torch.zeros(1, dtype=torch.long)
    return ImageData(spec.name, images, labels, images[:0], labels[:0], images, labels,
                     [str(i) for i in range(spec.num_classes)], spec.mean, spec.std, "fake",
                     data_fingerprint(data_config))


@pytest.fixture
def recorded_train(monkeypatch):
    """The library's experiment functions with `train` and `load_data` replaced: every call is recorded and returns a
    record keyed exactly as train() keys it."""
    calls = []

    def fake_train(model_config, data_config, recipe, *, name=None, data=None, parent=None, init=None, **_):
        name = run_name(name, model_config, data_config, recipe)
        fingerprint = data.fingerprint if data is not None else data_fingerprint(data_config)
        key = run_key(model_config, data_config, recipe, parent, init, fingerprint)
        calls.append({"name": name, "key": key, "model": model_config, "data": data_config, "recipe": recipe,
                      "parent": parent.name if parent else "", "init": init.source if init else None})
        labels = encode_labels([0, 1] * 5)  # ten test images, half of them right
        return RunResult(name, key, {"model": asdict(model_config), "data": asdict(data_config),
                                     "recipe": asdict(recipe)}, [{"test_acc": 50.0, "train_seconds": 1.0}], 50.0,
                         0, 1.0, "cpu", "fake", "0", torch.__version__, "", data_fingerprint=fingerprint,
                         test_predictions=encode_labels([0] * 10), test_labels=labels)

    for module in (sweeps, expansion, pretrained):
        monkeypatch.setattr(module, "train", fake_train)
        monkeypatch.setattr(module, "load_data", fake_data)
    return calls


def planned(runs: list[PlannedRun]) -> list[dict]:
    fingerprints = {}
    return [{"name": r.name, "key": estimate._identity(r, fingerprints)[1] if r.init is None else None,
             "model": r.model, "data": r.data, "recipe": r.recipe, "parent": r.parent.name if r.parent else "",
             "init": r.init} for r in runs]


def without_init_keys(calls: list[dict]) -> list[dict]:
    return [{**c, "key": None} if c["init"] is not None else c for c in calls]


@pytest.mark.parametrize("profile", ["ci", "gpu"])
def test_the_plans_are_the_train_calls_the_library_makes(recorded_train, profile):
    settings, comparison, plan = (experiments.PROFILES[profile], experiments.COMPARISONS[profile],
                                  expansion.PLANS[profile])
    experiments.run_sweep(settings, ["1-1", "6-6"], progress=False)
    assert recorded_train == planned(plan_notebook("01", profile, models=["1-1", "6-6"]))
    recorded_train.clear()
    experiments.run_comparison(comparison, progress=False)
    assert recorded_train == planned(estimate.plan_comparison(profile))
    recorded_train.clear()
    for seed in plan.seeds:
        expansion.run_class_incremental(settings, plan, seed, progress=False)
    for seed in plan.seeds:
        expansion.run_growth(settings, plan, seed, progress=False)
    assert recorded_train == planned(plan_notebook("05", profile))
    recorded_train.clear()
    pretrained.run_finetune(pretrained.FINETUNE_PROFILES[profile], None, progress=False)  # random weights
    assert without_init_keys(recorded_train) == planned(plan_notebook("07", profile, pretrained="never"))


def test_notebook_04_trains_a_vit_of_every_size_its_compression_table_keeps():
    comparison = experiments.COMPARISONS["ci"]
    data_config = comparison.profile.data_config("fashion_mnist")
    data = fake_data(data_config)
    data.val_images, data.val_labels = data.test_images, data.test_labels
    model = comparison.profile.model_config(comparison.paraformer, data)
    from paraformer.experiments.compression import compression_table
    from paraformer.model import ParaFormer

    kept = sorted(set(compression_table(ParaFormer(model), data, comparison.profile.recipe)["layers_kept"]))
    runs = plan_notebook("04", "ci")
    assert kept == [1, 2, 3, 4]
    # notebook 03's ParaFormer on every seed, then a ViT of each kept size that compresses 2x or more, every seed
    seeds = list(comparison.profile.seeds)
    assert [(r.model.name, r.recipe.seed) for r in runs if r.recipe.method == "joint"] == [
        (f"Para-F-{comparison.paraformer}", s) for s in seeds] + [(f"Para-F-{n}-{n}", s) for n in (1, 2) for s in seeds]


# --- estimates of notebooks and of the suite ---------------------------------------------------------------------

def test_the_suite_counts_a_run_that_two_notebooks_make_once():
    suite = estimate.estimate_suite("ci", flops_per_second=1e12)
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
    assert table.loc["total", "minutes"] == pytest.approx(distinct["pflop"].sum() * 1e15 / 1e12 / 60)
    assert table.loc["02_depth_sweep", "minutes_alone"] > table.loc["02_depth_sweep", "minutes"]
    assert table.loc["06_speedup", "runs"] == 0 and "trains nothing" in table.loc["06_speedup", "note"]


def test_a_notebook_estimate_marks_the_runs_another_notebook_makes_and_sees_the_run_cache(results_root):
    layer_sweep = estimate.estimate_notebook("01", "ci", flops_per_second=1e12)
    assert layer_sweep.runs["also_in"].tolist() == ["02_depth_sweep, 05_expansion"] + ["02_depth_sweep"] * 3
    assert "0 of 4 run(s) already in the run cache" in layer_sweep.summary()
    first = layer_sweep.runs.iloc[0]
    record, _, _ = run_paths(first["run"], first["key"], results_root / "ci")
    record.parent.mkdir(parents=True)
    record.write_text("{}")  # where train() would look for the finished run
    depth_sweep = estimate.estimate_notebook("02", "ci", flops_per_second=1e12)
    layer_rows = depth_sweep.runs[depth_sweep.runs["first_in"] == "01_layer_sweep"]
    assert len(layer_rows) == 4 and layer_rows["cached"].sum() == 1
    assert "1 of 8 run(s) already in the run cache" in depth_sweep.summary()
    assert config.active_profile() is None  # estimating moves no notebook's results folder


def test_an_estimate_is_flops_over_the_rate_and_a_measured_rate_says_where_it_was_measured():
    given = estimate.estimate_notebook("03", "ci", flops_per_second=2e11)
    assert given.minutes == pytest.approx(given.pflop * 1e15 / 2e11 / 60)
    assert "at 0.2 TFLOP/s (given)" in given.summary()
    rate = estimate.measure_flops_per_second("cpu", "ci", min_seconds=0.1)
    assert 1e8 < rate < 1e14 and rate.device.startswith("cpu")
    measured = estimate.estimate_notebook("03", "ci", flops_per_second=rate)
    assert measured.minutes == pytest.approx(given.minutes * 2e11 / rate)
    assert f"measured on {rate.device} (ViT-6 width 32, batch 32, fp32)" in measured.summary()
    assert "trains nothing" in estimate.estimate_notebook("06", "ci", flops_per_second=1e12).summary()


def test_the_paper_profile_is_estimated_without_its_datasets():
    runs = plan_notebook("01", "paper", models=["1-1"])
    assert [r.data.dataset for r in runs] == ["cifar10", "cifar100", "stl10", "oxford_pets", "flowers102"]
    assert [r.model.image_size for r in runs] == [32, 32, 96, 96, 96]
    assert run_cost(runs[2]).train_images == 4_750  # STL-10: 5,000 training images, 5% held out


# --- the command line --------------------------------------------------------------------------------------------

def test_the_command_line_prints_a_table_per_notebook_and_the_total(capsys):
    assert estimate.main(["--profile", "ci", "--flops-per-second", "1e12", "--notebooks", "01", "2"]) == 0
    out = capsys.readouterr().out
    suite = estimate.estimate_suite("ci", 1e12, ["01", "02"])
    assert "Estimate for the suite at profile ci: 8 distinct train() runs" in out
    lines = [line.split() for line in out.splitlines()]
    header = next(line for line in lines if line[:2] == ["notebook", "runs"])
    rows = {line[0]: dict(zip(header, line)) for line in lines if line and line[0] in ("01_layer_sweep",
                                                                                        "02_depth_sweep", "total")}
    assert {name: int(row["runs"]) for name, row in rows.items()} == {"01_layer_sweep": 4, "02_depth_sweep": 8,
                                                                      "total": 8}
    assert float(rows["total"]["minutes"]) == pytest.approx(round(suite.minutes, 1))


def test_the_command_line_refuses_an_unknown_profile_in_one_line():
    done = subprocess.run([sys.executable, "-m", "paraformer.estimate", "--profile", "nosuch"], capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert len(done.stderr.splitlines()) == 1 and "invalid choice: 'nosuch'" in done.stderr


def test_the_command_line_refuses_a_bad_rate_and_an_unknown_notebook_in_one_line(capsys):
    assert estimate.main(["--profile", "ci", "--flops-per-second", "-1"]) == 2
    assert estimate.main(["--profile", "ci", "--flops-per-second", "1e12", "--notebooks", "09"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "positive number" in err[0] and "unknown notebook '09'" in err[1]
