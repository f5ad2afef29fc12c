"""Notebook 08's experiment (`paraformer.experiments.layer_parallel`): what each profile runs, what it refuses, the
claims it makes and how they are judged, what the solver's record says, the speed claims on made-up benchmark
rows (missing ones included), and a tiny run of every arm and fine-tune."""

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from paraformer.bench import costmodel
from paraformer.core.config import ConfigError
from paraformer.core.data import ImageData
from paraformer.core.flops import stage_flops
from paraformer.core.runcache import Initialization, load_trained_model, run_paths, step_log_path
from paraformer.experiments import layer_parallel as lp
from paraformer.experiments import plan as plans
from paraformer.experiments.accuracy import judge_claims
from paraformer.experiments.estimate import mgrit_step_flops, run_cost
from paraformer.experiments.profiles import PROFILES, get_profile

SETTINGS = {name: profile.layer_parallel for name, profile in PROFILES.items()}


@pytest.fixture(autouse=True)
def results_root(tmp_path, monkeypatch):
    """A throw-away results root."""
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    return tmp_path


# --- the settings ----------------------------------------------------------------------------------------------

def test_every_profile_has_a_setting_and_quick_trains_vit_8_at_coarsening_2():
    # the profiles that run notebook 08 (cpu does not: Profile.notebooks)
    run_here = {name: s for name, s in SETTINGS.items() if PROFILES[name].runs_notebook(lp.NOTEBOOK)}
    shapes = {name: (s.dataset, s.finetune_dataset, s.depth, s.coarsening, s.levels, s.exact_after, s.check_every)
              for name, s in run_here.items()}
    assert shapes == {"ci": ("fashion_mnist", "mnist", 8, 2, 2, 3, 5),
                      "quick": ("fashion_mnist", "mnist", 8, 2, 2, 3, 20),
                      "gpu": ("fashion_mnist", "mnist", 32, 4, 2, 7, 20),
                      "paper": ("fashion_mnist", "mnist", 32, 4, 2, 7, 20)}
    for name, setting in run_here.items():
        assert (setting.fixed_iterations, setting.adaptive_start, setting.tolerance, setting.adapt,
                setting.margin) == ((1, 1), (1, 1), 0.01, "iterate", 1.0)
        assert setting.scale == PROFILES[name].scale  # the profile's data, width, recipe and seeds


def test_the_arms_differ_only_in_how_the_gradient_is_computed():
    setting = SETTINGS["paper"]
    serial, fixed, adaptive = (setting.recipe(arm, seed=2) for arm in lp.ARMS)
    assert (serial.solver, fixed.solver, adaptive.solver) == ("backprop", "mgrit", "mgrit")
    assert (fixed.mgrit_coarsening, fixed.mgrit_levels, fixed.mgrit_iterations,
            fixed.mgrit_check_every) == (4, 2, (1, 1), 0)
    assert (adaptive.mgrit_iterations, adaptive.mgrit_check_every, adaptive.mgrit_tolerance,
            adaptive.mgrit_adapt) == ((1, 1), 20, 0.01, "iterate")
    solver_fields = {"solver", "mgrit_levels", "mgrit_coarsening", "mgrit_iterations", "mgrit_check_every",
                     "mgrit_tolerance", "mgrit_adapt"}
    plain = [{k: v for k, v in vars(r).items() if k not in solver_fields} for r in (serial, fixed, adaptive)]
    assert plain[0] == plain[1] == plain[2]
    # the profile's recipe otherwise, compile off (MGRIT cannot be compiled): the gpu profile compiles its runs
    assert serial == replace(PROFILES["paper"].scale.recipe, seed=2, compile=False)
    gpu = SETTINGS["gpu"]
    assert PROFILES["gpu"].scale.recipe.compile and {gpu.recipe(arm, seed=0).compile for arm in lp.ARMS} == {False}
    tuned = setting.recipe("fixed", seed=2, phase="fine-tuning")
    assert (tuned.epochs, tuned.solver, tuned.mgrit_iterations) == (setting.finetune_epochs, "mgrit", (1, 1))
    # every arm at h = 1/N and without dropout (the paper profile's models have 0.1, which MGRIT refuses)
    shape = SimpleNamespace(image_size=28, in_channels=1, num_classes=10)
    model = setting.model_config(shape)
    assert (model.num_layers, model.branch_depth, model.step, model.dropout) == (32, 32, 1 / 32, 0.0)
    assert PROFILES["paper"].scale.dropout == 0.1


@pytest.mark.parametrize("fields", [
    dict(finetune_dataset="fashion_mnist"),  # the claims pick each phase's runs by dataset
    dict(finetune_dataset="cifar10"),  # 32 px RGB: the pre-trained weights do not fit
    dict(depth=9),  # coarsening 2 does not divide it
    dict(fixed_iterations=(3, 3)),  # exact after 8 / 2 - 1 = 3 cycles: serial training
    dict(adaptive_start=(1, 3)),
    dict(adapt="faster"),
    dict(margin=0.0),
    dict(finetune_from=("fixed", "adaptive")),  # no serially pre-trained reference
    dict(finetune_from=("serial", "warm")),
    dict(finetune_lr=0.0),
    dict(finetune_train=0),
    dict(finetune_detectable=-2.0),
])
def test_a_setting_that_cannot_work_is_refused_in_one_line(fields):
    valid = SETTINGS["quick"]
    with pytest.raises(ConfigError) as refused:
        replace(valid, **fields)
    assert len(str(refused.value).splitlines()) == 1
    assert replace(valid, fixed_iterations=(2, 2), adaptive_start=(2, 0)).exact_after == 3  # just below: accepted


def test_an_unknown_profile_or_arm_is_refused():
    with pytest.raises(ConfigError):
        get_profile("nosuch")
    setting = SETTINGS["ci"]
    with pytest.raises(ConfigError):
        setting.recipe("adaptive", seed=0, phase="fine-tuning")  # fine-tuning has no adaptive arm
    with pytest.raises(ConfigError):
        setting.data_config("warm-up")


# --- the claims ---------------------------------------------------------------------------------------------------

def test_the_claims_are_layer_parallel_minus_serial_above_minus_the_margin():
    setting = replace(SETTINGS["ci"], margin=2.0)
    claims = lp.accuracy_claims(setting)
    assert [(c.dataset, c.column, c.better, c.worse, c.threshold, c.paper) for c in claims] == [
        ("fashion_mnist", "arm", "fixed", "serial", -2.0, None),
        ("fashion_mnist", "arm", "adaptive", "serial", -2.0, None),
        ("mnist", "arm", "fixed", "serial", -2.0, None)]


def made_up_runs(differences: dict[tuple[str, str], float], images: int = 1000, seeds=(0, 1)) -> pd.DataFrame:
    """Runs whose per-image correctness is known: serial right on 60% of the images, each other (phase, arm) that
    much more (points), the extra or missing images the same for every seed."""
    rows = []
    for (phase, arm), points in {("pre-training", "serial"): 0.0, ("fine-tuning", "serial"): 0.0,
                                 **differences}.items():
        right = int(round(images * (0.6 + points / 100)))
        correct = np.arange(images) < right
        for seed in seeds:
            rows.append({"phase": phase, "dataset": "fashion_mnist" if phase == "pre-training" else "mnist",
                         "arm": arm, "seed": seed, "correct": correct, "test_acc": 100 * correct.mean()})
    return pd.DataFrame(rows)


def test_the_claims_are_judged_on_runs_paired_by_arm_seed_and_image():
    setting = SETTINGS["ci"]
    runs = made_up_runs({("pre-training", "fixed"): 0.0, ("pre-training", "adaptive"): -5.0,
                         ("fine-tuning", "fixed"): -0.2})
    verdicts = judge_claims(runs, lp.accuracy_claims(setting))
    assert [(v.ours, v.verdict) for v in verdicts] == [(pytest.approx(0.0), "supported"),
                                                      (pytest.approx(-5.0), "contradicted"),
                                                      (pytest.approx(-0.2), "supported")]
    assert [v.threshold for v in verdicts] == [-1.0] * 3
    assert {v.confidence for v in verdicts} != {0.95}  # Holm over the three


def fine_tunes(serial: tuple[float, ...], fixed_minus_serial: tuple[float, ...], images: int = 10000) -> pd.DataFrame:
    """Runs of three seeds: every pre-training arm right on the same 60% of the images (the fixed arm layer-parallel
    throughout, the adaptive one for 30% and 60% and 45% of its steps), the serial fine-tune right on `serial` % of
    the images per seed, the fine-tune of the fixed arm's weights on that many points more per seed."""
    rows = []
    for seed, (accuracy, difference) in enumerate(zip(serial, fixed_minus_serial)):
        for phase, arm, points, share in [("pre-training", "serial", 60.0, 0.0), ("pre-training", "fixed", 60.0, 1.0),
                                          ("pre-training", "adaptive", 60.0, (0.3, 0.6, 0.45)[seed]),
                                          ("fine-tuning", "serial", accuracy, 0.0),
                                          ("fine-tuning", "fixed", accuracy + difference, 0.0)]:
            correct = np.arange(images) < round(images * points / 100)
            rows.append({"phase": phase, "dataset": "fashion_mnist" if phase == "pre-training" else "mnist",
                         "arm": arm, "seed": seed, "correct": correct, "test_acc": 100 * correct.mean(),
                         "layer_parallel_share": share})
    return pd.DataFrame(rows)


def test_unaffected_is_not_testable_while_the_serial_fine_tune_has_not_settled():
    setting = SETTINGS["quick"]
    claims = lp.accuracy_claims(setting)
    runs = fine_tunes(serial=(39.0, 64.0, 63.0), fixed_minus_serial=(0.0, 0.0, 0.0))  # quick's seeds, 2026-12
    verdicts = lp.judge_accuracy(runs, claims, setting)
    assert [v.verdict for v in verdicts][2] == "not testable here"
    assert verdicts[2].ours == pytest.approx(0.0) and verdicts[2].minimum_detectable is not None
    assert verdicts[:2] == judge_claims(runs, claims[:2])  # Holm over the two claims tested, not three
    # settled (>= 95%) and the same on every seed: judged with the others, Holm over all three
    settled = fine_tunes(serial=(97.0, 97.2, 96.8), fixed_minus_serial=(0.1, -0.1, 0.0))
    assert lp.judge_accuracy(settled, claims, setting) == judge_claims(settled, claims)
    assert lp.finetune_not_testable(settled, setting, minimum_detectable=1.9) is None


def test_unaffected_is_not_testable_where_the_design_cannot_detect_two_points():
    setting = SETTINGS["quick"]
    claims = lp.accuracy_claims(setting)
    scattered = fine_tunes(serial=(97.0, 97.2, 96.8), fixed_minus_serial=(3.0, -3.0, 0.0))  # the seeds disagree
    verdict = lp.judge_accuracy(scattered, claims, setting)[2]
    assert verdict.minimum_detectable > setting.finetune_detectable and verdict.verdict == "not testable here"
    wider = replace(setting, finetune_detectable=2 * verdict.minimum_detectable)
    assert lp.judge_accuracy(scattered, claims, wider)[2].verdict != "not testable here"


def test_the_pre_training_verdicts_say_what_share_of_steps_was_layer_parallel():
    setting = SETTINGS["quick"]
    runs = fine_tunes(serial=(97.0, 97.2, 96.8), fixed_minus_serial=(0.1, -0.1, 0.0))
    assert lp.share_words(runs, "fixed") == "layer-parallel for all of its optimizer steps"
    assert lp.share_words(runs, "adaptive") == "layer-parallel for 30-60% of its optimizer steps (seeds), serial for " \
                                              "the rest"
    claims = lp.accuracy_claims(setting)
    plain = judge_claims(runs, claims)
    shared = lp.with_shares(plain, claims, runs, setting)
    assert [v.reason for v in shared] == [
        plain[0].reason + "; the fixed arm was " + lp.share_words(runs, "fixed"),
        plain[1].reason + "; the adaptive arm was " + lp.share_words(runs, "adaptive"),
        plain[2].reason]  # a fine-tune is serial in every arm
    assert [replace(v, reason="") for v in shared] == [replace(v, reason="") for v in plain]


def test_the_share_of_layer_parallel_steps_comes_from_the_solver_switch_in_the_history():
    mgrit = {"solver": "mgrit"}
    switched = [{"solver_switch_step": None}, {"solver_switch_step": 121}, {"solver_switch_step": 121}]
    assert lp.layer_parallel_share({"solver": "backprop"}, [{}], 395) == 0.0
    assert lp.layer_parallel_share(mgrit, [{"solver_switch_step": None}] * 5, 395) == 1.0
    assert lp.layer_parallel_share(mgrit, switched, 395) == pytest.approx(121 / 395)


def test_the_claims_name_their_source_the_papers_text_or_ours():
    setting = SETTINGS["quick"]
    # fixed-cycle MGRIT is our question; the paper's method adapts, and its fine-tuning claim is the paper's
    assert lp.claim_sources(setting) == ["ours", "paper", "paper"]
    both = replace(setting, finetune_from=("serial", "fixed", "adaptive"))
    assert [c.better for c in lp.accuracy_claims(both)] == ["fixed", "adaptive", "fixed", "adaptive"]
    assert lp.claim_sources(both) == ["ours", "paper", "paper", "paper"]
    found = SimpleNamespace(sources=lp.claim_sources(setting))
    speed = SimpleNamespace(verdicts=[SimpleNamespace(kind="paper"), SimpleNamespace(kind="comparison")])
    assert lp.report_sources(found, speed) == ["ours", "paper", "paper", "paper"]


def test_every_arms_weights_are_fine_tuned_by_one_serial_recipe():
    setting = replace(SETTINGS["quick"], finetune_lr=4e-3, finetune_train=5000)
    tunes = [run for run in lp.plan("quick") if run.init is not None]
    assert [(run.recipe.seed, lp.arm_of(run.init.run.recipe)) for run in tunes] == [
        (seed, arm) for seed in (0, 1, 2) for arm in ("serial", "fixed")]
    assert {run.recipe.solver for run in tunes} == {"backprop"}
    assert tunes[0].recipe == tunes[1].recipe  # the same procedure for both weights
    assert {run.init.run.recipe.seed for run in tunes[:2]} == {0}  # each seed fine-tunes its own pre-training
    assert lp.finetune_recipe(setting, 1) == replace(setting.recipe("serial", 1, "fine-tuning"), lr=4e-3)
    assert (lp.finetune_data(setting).n_train, lp.finetune_data(SETTINGS["quick"]).n_train) == (5000, 2500)
    with pytest.raises(ConfigError):
        replace(setting, finetune_from=("fixed",))  # without the serial reference


# --- the solver's record ----------------------------------------------------------------------------------------

def record(recipe: dict, history: list[dict]) -> SimpleNamespace:
    return SimpleNamespace(config={"recipe": recipe}, history=history)


def test_the_solver_table_reads_adaptations_the_switch_and_the_checks_from_the_history():
    adaptive = record({"solver": "mgrit", "mgrit_iterations": [1, 1], "mgrit_tolerance": 0.01}, [
        {"mgrit_iterations": [2, 2], "solver_switch_step": None,
         "mgrit_checks": [[0, 1e-3, 0.004, [1, 1]], [20, 2e-3, 0.5, [1, 1]]]},
        {"mgrit_iterations": None, "solver_switch_step": 41,
         "mgrit_checks": [[40, 1e-4, 0.02, [2, 2]]]},
        {"mgrit_iterations": None, "solver_switch_step": 41, "mgrit_checks": []}])
    fixed = record({"solver": "mgrit", "mgrit_iterations": [1, 1], "mgrit_tolerance": 0.1},
                   [{"mgrit_iterations": [1, 1], "solver_switch_step": None, "mgrit_checks": []}])
    serial = record({"solver": "backprop"}, [{}])
    runs = pd.DataFrame({"phase": ["pre-training"] * 3, "arm": ["serial", "fixed", "adaptive"], "seed": [0, 0, 0],
                         "optimizer_steps": [60, 60, 60], "layer_parallel_share": [0.0, 1.0, 41 / 60]})
    table = lp.solver_table(runs, [serial, fixed, adaptive])
    assert table.drop(columns=["phase", "seed"]).to_dict("records") == [
        {"arm": "fixed", "start_cycles": (1, 1), "end_cycles": (1, 1), "switch_step": None, "optimizer_steps": 60,
         "layer_parallel_pct": 100.0, "adapted_from": (), "checks": 0, "past_tolerance": 0,
         "first_gradient_error": pytest.approx(math.nan, nan_ok=True),
         "worst_gradient_error": pytest.approx(math.nan, nan_ok=True),
         "last_gradient_error": pytest.approx(math.nan, nan_ok=True)},
        {"arm": "adaptive", "start_cycles": (1, 1), "end_cycles": "backprop", "switch_step": 41,
         "optimizer_steps": 60, "layer_parallel_pct": pytest.approx(100 * 41 / 60), "adapted_from": (21, 41),
         "checks": 3, "past_tolerance": 2, "first_gradient_error": 0.004,
         "worst_gradient_error": 0.5, "last_gradient_error": 0.02}]
    checks = lp.solver_checks(runs, [serial, fixed, adaptive])
    assert checks[["arm", "step", "gradient_error", "cycles"]].values.tolist() == [
        ["adaptive", 0, 0.004, (1, 1)], ["adaptive", 20, 0.5, (1, 1)], ["adaptive", 40, 0.02, (2, 2)]]
    shown = lp.readable(table, ("worst_gradient_error",))
    assert shown.loc[1, ["end_cycles", "adapted_from", "worst_gradient_error"]].tolist() == ["backprop", "21, 41",
                                                                                            "5.00e-01"]


# --- speed --------------------------------------------------------------------------------------------------------

CPU = {"device": "test CPU, 1 thread(s)", "device_type": "cpu", "profile": "quick"}


def steps(rows: list[tuple[str, str, int, float]]) -> dict[str, pd.DataFrame]:
    """multi_steps_<P> tables from (method, model, processes, seconds)."""
    frame = pd.DataFrame([{"method": m, "model": model, "micro_batches": 1, "seconds": t, "processes": p, **CPU}
                          for m, model, p, t in rows])
    return {f"multi_steps_{p}": group.reset_index(drop=True) for p, group in frame.groupby("processes")}


BRANCH = [("branch", "Para-F-1-24", 1, 0.20), ("branch", "Para-F-1-24", 2, 0.12),
          ("branch, 1 process", "Para-F-1-24", 2, 0.20)]


def test_benchmarks_without_the_mgrit_and_ddp_rows_leave_the_speed_claims_not_testable_and_say_which():
    setting = SETTINGS["quick"]
    data = steps(BRANCH + [("torch-gpipe", "ViT-24", 1, 0.5), ("torch-gpipe", "ViT-24", 2, 0.4)])
    assert lp.missing_speed_rows(data, "quick", setting) == [("ddp", "ViT-24", 1), ("mgrit-1it", "ViT-24", 2),
                                                              ("mgrit-1it", "ViT-24", 1)]
    verdicts = lp.speed_verdicts(data, "quick", setting)
    assert [(v.key, v.kind, v.verdict.verdict) for v in verdicts] == [
        ("acceleration", "paper", "not testable here"), ("mgrit_scaling", "comparison", "not testable here"),
        ("mgrit_vs_branch", "comparison", "not testable here")]
    assert all(math.isnan(v.verdict.ours) for v in verdicts)
    # no multi-process benchmark at all: the same, without a crash
    assert [v.verdict.verdict for v in lp.speed_verdicts({}, "quick", setting)] == ["not testable here"] * 3
    assert lp.speed_table({}).empty
    # a solver the benchmark does not time (it runs one adjoint cycle)
    two = replace(setting, fixed_iterations=(1, 2))
    assert lp.missing_speed_rows(data, "quick", two)[1] == (None, "ViT-24", 2)


def test_the_speed_claims_are_ratios_of_step_times_judged_by_speedups_rule():
    setting = SETTINGS["quick"]
    data = steps(BRANCH + [("ddp", "ViT-24", 1, 0.30), ("ddp", "Para-F-1-24", 1, 0.21), ("ddp", "ViT-24", 2, 0.2),
                           ("mgrit-1it", "ViT-24", 1, 0.40), ("mgrit-1it", "ViT-24", 2, 0.20),
                           ("mgrit-2it", "ViT-24", 2, 0.25)])
    assert lp.missing_speed_rows(data, "quick", setting) == []
    verdicts = {v.key: v.verdict for v in lp.speed_verdicts(data, "quick", setting)}
    assert {k: (v.ours, v.threshold, v.verdict) for k, v in verdicts.items()} == {
        "acceleration": (pytest.approx(1.5), 1.0, "supported"),  # serial 0.30 s over MGRIT on 2 processes 0.20 s
        "mgrit_scaling": (pytest.approx(2.0), 1.0, "supported"),
        "mgrit_vs_branch": (pytest.approx(0.6), 1.0, "contradicted")}  # branch 0.12 s over MGRIT 0.20 s
    # the interval is speedup's: the 1-process branch step timed in both runs agrees exactly, so the narrowest
    assert verdicts["acceleration"].high == pytest.approx(1.5 * math.exp(0.02))
    table = lp.speed_table(data)
    assert table[["processes", "method", "model"]].values.tolist() == [
        [1, "branch", "Para-F-1-24"], [1, "ddp", "ViT-24"], [1, "mgrit-1it", "ViT-24"], [2, "branch", "Para-F-1-24"],
        [2, "ddp", "ViT-24"], [2, "mgrit-1it", "ViT-24"], [2, "mgrit-2it", "ViT-24"]]
    assert table["serial_over_this"].tolist() == pytest.approx([1.5, 1.0, 0.75, 2.5, 1.5, 1.5, 1.2])


def predicted(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    """A costmodel.predictions table at depth 24 from (method, model, devices, ms); both all-reduce models alike."""
    return pd.DataFrame([{"depth": 24, "method": m, "model": model, "devices": p, "micro_batches": 1,
                          "predicted_ring_ms": t, "predicted_tree_ms": t, "measured_ms": math.nan}
                         for m, model, p, t in rows])


def test_the_cost_model_names_the_fastest_way_to_train_the_vit_and_mgrit_over_branch(monkeypatch):
    table = predicted([("branch", "Para-F-1-24", 1, 100.0), ("branch", "Para-F-1-24", 8, 20.0),
                       ("pipeline (GPipe)", "ViT-24", 1, 300.0), ("pipeline (GPipe)", "ViT-24", 8, 90.0),
                       ("ddp", "ViT-24", 1, 290.0), ("ddp", "ViT-24", 8, 80.0),
                       ("ddp", "Para-F-1-24", 1, 95.0), ("ddp", "Para-F-1-24", 8, 15.0),  # not the ViT: never named
                       ("mgrit-1it", "ViT-24", 1, 400.0), ("mgrit-1it", "ViT-24", 8, 60.0)])
    monkeypatch.setattr(costmodel, "predictions", lambda data, bench, multi: table)
    costs = {"multi_costs_1": pd.DataFrame(), "multi_costs_2": pd.DataFrame()}
    winners = lp.cost_model_winners(costs, "quick", SETTINGS["quick"])
    ring = winners.table[winners.table["allreduce"] == "ring"]
    assert ring[["devices", "fastest", "fastest_ms", "mgrit_over_branch"]].values.tolist() == [
        [1, "ddp", 290.0, 4.0], [8, "mgrit-1it", 60.0, 3.0]]
    assert winners.mgrit == "mgrit-1it"
    assert lp.cost_model_winners({}, "quick", SETTINGS["quick"]).table.empty  # no cost CSVs


# --- the estimate -------------------------------------------------------------------------------------------------

def test_an_mgrit_run_is_estimated_through_its_solver_each_cycle_and_each_check_adding_their_work():
    setting = SETTINGS["ci"]
    model = setting.model_config(SimpleNamespace(image_size=28, in_channels=1, num_classes=10))
    mgrit = setting.recipe("fixed", seed=0)
    counts = [mgrit_step_flops(model, replace(mgrit, mgrit_iterations=(k, k))) for k in (0, 1, 2)]
    serial = stage_flops(model)[0][1]
    assert serial < counts[0] < counts[1] < counts[2]
    assert counts[2] - counts[1] == counts[1] - counts[0]  # every cycle repeats the same steps
    checked = [mgrit_step_flops(model, replace(mgrit, mgrit_check_every=k)) for k in (1, 5)]
    assert checked[1] - counts[1] == pytest.approx((checked[0] - counts[1]) / 5)  # a check every 5 steps
    (serial_run, fixed_run, adaptive_run, *_) = lp.plan("ci")
    assert run_cost(fixed_run).train_flops == counts[1] * 512 * mgrit.epochs
    assert run_cost(serial_run).train_flops == serial * 512 * mgrit.epochs
    assert run_cost(adaptive_run).train_flops > run_cost(fixed_run).train_flops


# --- a tiny experiment, end to end --------------------------------------------------------------------------------

def digits_data(n_train: int = 64, n_test: int = 40, seed: int = 0) -> ImageData:
    """Ten classes of 28 px greyscale images, the shape of Fashion-MNIST and MNIST: class k is bright in row band k."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        for k in range(10):
            images[labels == k, :, 2 * k + 4:2 * k + 7] += 150
        return images, labels

    no_validation = (torch.empty(0, 1, 28, 28, dtype=torch.uint8), torch.empty(0, dtype=torch.long))
    return ImageData("digits", *split(n_train), *no_validation, *split(n_test), [str(k) for k in range(10)], (0.3,),
                     (0.3,), "synthetic")


@pytest.fixture
def tiny_ci(monkeypatch):
    """The ci profile cut to one epoch of 64 images and two seeds, on made-up data of Fashion-MNIST's and MNIST's
    shape (their fingerprints made up alike, so that a fine-tune finds the run its weights come from)."""
    ci = get_profile("ci")
    scale = replace(ci.scale, n_train=64, n_test=40, n_test_per_epoch=None, seeds=(0, 1),
                    recipe=replace(ci.scale.recipe, epochs=1, batch_size=16))
    setting = replace(ci.layer_parallel, scale=scale, check_every=2, finetune_epochs=1)
    monkeypatch.setitem(PROFILES, "ci", replace(ci, scale=scale, layer_parallel=setting))

    def made_up(config):
        data = digits_data(seed=0 if config.dataset == "fashion_mnist" else 1)
        data.fingerprint = f"made-up:{config.dataset}"
        return data

    monkeypatch.setattr(plans, "load_data", made_up)
    monkeypatch.setattr(plans, "_fingerprint", lambda config: f"made-up:{config.dataset}")
    return setting


def test_a_tiny_experiment_trains_every_arm_and_fine_tunes_the_serial_weights(tiny_ci, results_root):
    setting, folder = tiny_ci, results_root / "ci"
    runs, records = lp.run("ci", progress=False)
    assert runs[["phase", "dataset", "arm", "model", "seed", "test_images", "epochs", "optimizer_steps"]
                ].values.tolist() == [
        ["pre-training", "fashion_mnist", arm, "ViT-8", seed, 40, 1, 4] for seed in (0, 1) for arm in lp.ARMS] + [
        ["fine-tuning", "mnist", arm, "ViT-8", seed, 40, 1, 4] for seed in (0, 1) for arm in setting.finetune_from]
    assert [r.config["recipe"]["solver"] for r in records] == ["backprop", "mgrit", "mgrit"] * 2 + ["backprop"] * 4
    assert {r.config["model"]["step"] for r in records} == {1 / 8}
    shares = runs.set_index(["phase", "arm", "seed"])["layer_parallel_share"]
    assert [shares["pre-training", arm, seed] for seed in (0, 1) for arm in ("serial", "fixed")] == [0.0, 1.0] * 2
    assert shares["fine-tuning"].tolist() == [0.0] * 4
    # each fine-tune starts from its seed's weights of the arm it names, without their head
    for (_, tune), record in zip(runs.iloc[6:].iterrows(), records[6:]):
        source = records[lp.ARMS.index(tune["arm"]) + 3 * tune["seed"]]
        weights = {k: v for k, v in load_trained_model(source, folder).state_dict().items()
                   if not k.startswith("head.")}
        assert record.config["init"]["digest"] == Initialization("", weights).digest
    # the adaptive arm checked the exact gradient every 2 of its 4 steps
    checks = lp.solver_checks(runs, records)
    assert checks[["seed", "step"]].values.tolist() == [[0, 0], [0, 2], [1, 0], [1, 2]]
    losses = lp.step_losses(runs, 0, "ci")
    assert losses.groupby(["phase", "arm"], sort=False).size().to_dict() == {
        ("pre-training", "serial"): 4, ("pre-training", "fixed"): 4, ("pre-training", "adaptive"): 4,
        ("fine-tuning", "serial"): 4, ("fine-tuning", "fixed"): 4}
    # a checkout without the step logs (only records are committed) draws the epochs' mean losses instead
    for run in records:
        step_log_path(run_paths(run.name, run.key, folder)[0]).unlink()
    with pytest.warns(UserWarning):
        coarse = lp.step_losses(runs, 0, "ci")
    assert coarse["step"].tolist() == [3] * 5  # one epoch of 4 steps each
    assert coarse["loss"].tolist() == [r.history[0]["train_loss"] for r, s in zip(records, runs["seed"]) if s == 0]
    found = lp.findings(runs, records, "ci")
    assert [v.claim for v in found.verdicts] == [c.claim for c in lp.accuracy_claims(setting)]
    assert found.table[["phase", "arm", "weights", "model", "layer_parallel_pct"]].values.tolist()[:2] == [
        ["pre-training", "serial", "random", "ViT-8", 0.0], ["pre-training", "fixed", "random", "ViT-8", 100.0]]
    assert found.table["weights"].tolist()[3:] == ["serial pre-training", "fixed pre-training"]
    # the plan's keys are the runs trained, the fine-tunes' too now that their weights exist
    assert [plans.key_of(run, folder) for run in lp.plan("ci")] == runs["run_key"].tolist()
    # a second call trains nothing: every run comes from the run cache of the profile's folder
    again, _ = lp.run("ci", progress=False)
    assert again["cached"].all() and again["run_key"].tolist() == runs["run_key"].tolist()
    assert run_paths(records[0].name, records[0].key, folder)[0].is_file()
