"""Layer-parallel training through train(): the step h of the ODE reading, MGRIT gradients inside an ordinary
optimizer step, the adaptive rule and its record, and exact resume."""

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from paraformer.core.config import ConfigError, DataConfig, ModelConfig, Recipe, from_dict
from paraformer.core.model import ParaFormer
from paraformer.parallel.layertrain import MGRITTraining
from paraformer.parallel.mgrit import flat_gradient, layer_step
from paraformer.core.runcache import run_key
from paraformer.core.runcache import run_paths
from paraformer.training import train
from tests.test_model import small
from tests.test_train import toy_data

DEPTH = 8
VIT = ModelConfig(image_size=16, patch_size=4, width=32, num_heads=2, mlp_ratio=2.0, branch_depth=DEPTH,
                  num_layers=DEPTH, num_classes=4, step=1 / DEPTH)
MGRIT = Recipe(epochs=3, batch_size=16, lr=3e-3, warmup_epochs=0.5, augment=(), seed=1, solver="mgrit",
               mgrit_coarsening=2, mgrit_iterations=(0, 0))
DATA = DataConfig(dataset="toy")


def test_a_step_h_adds_h_times_each_sub_block_and_h_1_is_the_ordinary_layer():
    torch.manual_seed(0)
    plain = ParaFormer(small("1-1"))
    scaled = ParaFormer(small("1-1", step=0.25))
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(3, 17, 32)
    layer = scaled.branches[0][0]
    mid = x + 0.25 * layer.attn(layer.norm1(x))
    assert torch.equal(layer(x), mid + 0.25 * layer.mlp(layer.norm2(mid)))
    ordinary = plain.branches[0][0]
    mid = x + ordinary.attn(ordinary.norm1(x))
    assert torch.equal(ordinary(x), mid + ordinary.mlp(ordinary.norm2(mid)))
    assert not torch.equal(layer(x), ordinary(x))


def test_the_default_step_leaves_every_earlier_run_key_as_it_was():
    """The committed runs were keyed before ModelConfig.step and the solver fields existed."""
    records = sorted(Path(__file__).resolve().parents[1].glob("results/runs/*.json"))[:20]
    assert records, "the committed quick runs are part of the repository"
    for path in records:
        record = json.loads(path.read_text())
        config = record["config"]
        if "parent" in config or "init" in config:
            continue
        model, data, recipe = (from_dict(cls, config[part]) for cls, part in
                               ((ModelConfig, "model"), (DataConfig, "data"), (Recipe, "recipe")))
        assert run_key(model, data, recipe, data_fingerprint=record["data_fingerprint"]) == record["key"], path.name
    assert run_key(VIT, DATA, MGRIT) != run_key(replace(VIT, step=1.0), DATA, MGRIT)
    assert run_key(VIT, DATA, MGRIT) != run_key(VIT, DATA, replace(MGRIT, solver="backprop"))


@pytest.mark.parametrize("fields, message", [
    (dict(solver="parareal"), "solver='parareal'"),
    (dict(solver="mgrit", method="prefix"), "method='joint'"),
    (dict(solver="mgrit", compile=True), "compile=False"),
    (dict(mgrit_iterations=(1,)), "mgrit_iterations"),
    (dict(mgrit_iterations=(1, -1)), "mgrit_iterations"),
    (dict(mgrit_adapt="faster"), "mgrit_adapt='faster'"),
    (dict(mgrit_check_every=-1), "mgrit_check_every=-1"),
    (dict(mgrit_tolerance=0.0), "mgrit_tolerance=0.0"),
])
def test_a_recipe_the_solver_cannot_follow_is_refused(fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Recipe(**fields)


@pytest.mark.parametrize("model, message", [
    (replace(VIT, branch_depth=4, num_branches=None), "one branch"),
    (replace(VIT, dropout=0.1), "dropout"),
    (replace(VIT, branch_depth=7, num_layers=7, num_branches=None), "multiple of"),
])
def test_a_model_the_solver_cannot_train_is_refused_before_any_work(model, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train(model, DATA, MGRIT, data=toy_data(), results_root=tmp_path, progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_step_other_than_one_needs_the_pre_norm_residual_and_the_loop():
    with pytest.raises(ConfigError, match="residual='authors'"):
        replace(VIT, residual="authors")
    with pytest.raises(ConfigError, match="execution='loop'"):
        ParaFormer(small("1-2", step=0.5), execution="fused")


def gradients(model: ParaFormer, recipe: Recipe, x, y) -> torch.Tensor:
    model = copy.deepcopy(model)
    forward = MGRITTraining(model, recipe) if recipe.solver == "mgrit" else model
    F.cross_entropy(forward(x), y).backward()
    return flat_gradient(model)


def test_mgrit_gradients_are_backprops_once_the_solves_are_exact_and_biased_before():
    torch.manual_seed(0)
    model, x, y = ParaFormer(VIT), torch.randn(5, 3, 16, 16), torch.randint(0, 4, (5,))
    exact = gradients(model, replace(MGRIT, solver="backprop"), x, y)
    converged = gradients(model, replace(MGRIT, mgrit_iterations=(3, 3)), x, y)  # depth 8 / coarsening 2 - 1
    assert torch.allclose(converged, exact, rtol=1e-4, atol=1e-6)
    inexact = gradients(replace_step(model, 1.0), replace(MGRIT, mgrit_iterations=(0, 0)), x, y)
    reference = gradients(replace_step(model, 1.0), replace(MGRIT, solver="backprop"), x, y)
    assert (inexact - reference).norm() / reference.norm() > 1e-3


def replace_step(model: ParaFormer, step: float) -> ParaFormer:
    """The same weights with another step h (h = 1 makes MGRIT's coarse steps poor)."""
    other = ParaFormer(replace(model.config, step=step))
    other.load_state_dict(model.state_dict())
    return other


def test_the_adaptive_rule_raises_the_iterations_then_switches_to_backprop_and_says_when():
    torch.manual_seed(0)
    model = ParaFormer(replace(VIT, step=1.0))
    recipe = replace(MGRIT, mgrit_iterations=(0, 0), mgrit_check_every=2, mgrit_tolerance=1e-9)
    solver = MGRITTraining(model, recipe)
    solver.start_epoch(0, [])
    seen = []
    for _ in range(6):
        x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))
        F.cross_entropy(solver(x), y).backward()
        seen.append(solver.iterations)
    # checks at steps 0, 2, 4; each finds the error above 1e-9 and adds a cycle, until 3 would be exact
    assert seen == [(1, 1), (1, 1), (2, 2), (2, 2), None, None]
    summary = solver.epoch_summary()
    assert [check[0] for check in summary["mgrit_checks"]] == [0, 2, 4]
    assert [check[3] for check in summary["mgrit_checks"]] == [[0, 0], [1, 1], [2, 2]]
    assert all(check[2] > 0 for check in summary["mgrit_checks"])
    assert summary["solver_switch_step"] == 5 and summary["mgrit_iterations"] is None
    switched = replace(recipe, mgrit_adapt="serial")
    solver = MGRITTraining(copy.deepcopy(model), switched)
    solver.start_epoch(10, [])
    F.cross_entropy(solver(x), y).backward()
    assert solver.iterations is None and solver.switch_step == 11


def test_a_loose_tolerance_keeps_the_iterations_and_checks_still_measure():
    torch.manual_seed(0)
    solver = MGRITTraining(ParaFormer(VIT), replace(MGRIT, mgrit_check_every=1, mgrit_tolerance=10.0))
    solver.start_epoch(0, [])
    for _ in range(2):
        F.cross_entropy(solver(torch.randn(4, 3, 16, 16)), torch.randint(0, 4, (4,))).backward()
    assert solver.iterations == (0, 0) and solver.switch_step is None
    assert len(solver.checks) == 2 and all(0 < check[1] < 1 and 0 < check[2] < 10 for check in solver.checks)


ADAPTIVE = replace(MGRIT, mgrit_check_every=3, mgrit_tolerance=0.02)


def test_a_layer_parallel_run_learns_and_records_its_solver_per_epoch(tmp_path):
    result = train(VIT, DATA, ADAPTIVE, data=toy_data(), results_root=tmp_path, progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    steps_per_epoch = 96 // 16
    for entry in result.history:
        checks = entry["mgrit_checks"]
        first = (entry["epoch"] - 1) * steps_per_epoch
        assert [c[0] for c in checks] == [s for s in range(first, first + steps_per_epoch) if s % 3 == 0]
    switched = [e["solver_switch_step"] for e in result.history]
    assert switched[-1] is None or result.history[-1]["mgrit_iterations"] is None
    record = json.loads(run_paths(result.name, result.key, tmp_path)[0].read_text())
    assert from_dict(Recipe, record["config"]["recipe"]) == ADAPTIVE


def test_an_interrupted_layer_parallel_run_resumes_with_its_solver_state(tmp_path):
    data = toy_data()
    exact = replace(ADAPTIVE, device="cpu")  # bit-exact resume is the CPU's claim (docs/run-cache.md)
    straight = train(VIT, DATA, exact, data=data, results_root=tmp_path / "a", progress=False)

    def stop(entry):
        if entry["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(VIT, DATA, exact, data=data, results_root=tmp_path / "b", progress=False, on_epoch_end=stop)
    resumed = train(VIT, DATA, exact, data=data, results_root=tmp_path / "b", progress=False)
    drop_time = lambda history: [{k: v for k, v in h.items() if "seconds" not in k} for h in history]  # noqa: E731
    assert drop_time(resumed.history) == drop_time(straight.history)
    assert any(e["mgrit_iterations"] != [0, 0] for e in straight.history)  # the state did change on the way
