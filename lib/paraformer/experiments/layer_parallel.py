"""The layer-parallel experiment (notebook 08): Jiang et al., *Layer-Parallel Training for Transformers* (arXiv
2601.09026), tested on a ViT.

The paper (only its abstract is public here) claims that
1. MGRIT over the layers of a transformer read as a neural ODE gives parallel acceleration over the layer
   dimension;
2. the inexact solves bias the gradient, which slows convergence near a minimum; an algorithm detects that
   transition and switches to serial training or raises the solver's accuracy;
3. accuracy is commensurate with serial pre-training, and fine-tuning is unaffected.

Ours, for every seed of the profile, on a ViT of depth N with the ODE step h = 1/N in every arm (the serial arm too,
so that the arms differ in how the gradient is computed and nothing else; `Recipe.solver`,
`paraformer.parallel.layertrain`):
- `serial`: backpropagation;
- `fixed`: two-level MGRIT at a fixed number of (forward, adjoint) cycles;
- `adaptive`: MGRIT from the same cycles, its gradient checked against the exact one every `check_every` steps, one
  more cycle past `tolerance` and backpropagation once that would make the solve exact (`Recipe.mgrit_adapt`);
- fine-tuning: the serial arm's final weights, with a new head, fine-tuned on a second dataset of the same image
  shape by backpropagation and by fixed-cycle MGRIT.
"Commensurate" and "unaffected" are judged as "layer-parallel minus serial exceeds -`margin` points", paired by
seed and test image (`accuracy.judge_claims`, Holm over the three). The paper gives no margin; 1 point is ours.

Speed comes from the multi-process benchmark (`make bench`, `paraformer.parallel.multibench`): the MGRIT step at
the most processes it ran, against the serial ViT's step on one process (DDP over one rank, which adds nothing to
a plain step), judged like every speed ratio of notebook 06 (`speedup.judge_ratio`); benchmarks measured before
those rows existed leave the claim not testable, saying which rows are missing. Which method the cost model
(`paraformer.parallel.costmodel`) predicts fastest at more devices and deeper models is a prediction, in words.

Why N = 8 with coarsening 2 at `quick` (and `ci`): it is the shallowest ViT in which two ranks each own whole
coarse intervals (4 layers, two intervals each) while one two-level cycle is still inexact (the solve is exact after
N / c - 1 = 3 cycles, so the adaptive rule has two steps to take before it switches); and the 2-core CPU budget: a
quick MGRIT run of ViT-8 takes about 80 s, of ViT-16 about 150 s, times three arms, three seeds and the fine-tunes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import pandas as pd

from .. import bench, speedup
from ..config import MGRIT_ADAPTATIONS, ConfigError, DataConfig, ModelConfig, Recipe
from ..data import DATASETS, load_data
from ..parallel import convergence, costmodel
from ..parallel.mgrit import MGRITConfig, check_layout
from ..parallel.multibench import MULTI_SETTINGS, vit_name
from ..runcache import Initialization, RunResult, read_record, run_paths, step_log_path
from ..runlog import read_step_log
from ..train import load_trained_model, train
from .accuracy import AccuracyClaim, accuracy_table
from .profiles import PROFILES, Profile

ARMS = ("serial", "fixed", "adaptive")  # the pre-training arms, in table order
FINETUNE_ARMS = ("serial", "fixed")  # fine-tuning the serial arm's weights: by backprop, by fixed-cycle MGRIT
PHASES = ("pre-training", "fine-tuning")


@dataclass(frozen=True)
class LayerParallelSetting:
    """One profile's layer-parallel experiment; the data subset sizes, width, recipe and seeds are the profile's."""

    name: str  # the profile (`experiments.profiles.PROFILES`)
    dataset: str  # pre-training, where the three arms are compared
    # fine-tuned on from the serial arm's weights (a new head); must have the pre-training images' size and channels
    finetune_dataset: str
    depth: int  # N: the ViT's layers; every arm uses the ODE step h = 1/N
    coarsening: int  # MGRIT fine steps per coarse step
    levels: int = 2  # MGRIT grid levels
    fixed_iterations: tuple[int, int] = (1, 1)  # (forward, adjoint) cycles of the fixed arm and the MGRIT fine-tune
    adaptive_start: tuple[int, int] = (1, 1)  # (forward, adjoint) cycles the adaptive arm starts from
    check_every: int = 20  # steps between the adaptive arm's checks against the exact gradient
    tolerance: float = 0.01  # relative gradient error past which the adaptive arm adapts
    adapt: str = "iterate"  # past the tolerance: "iterate" (one more cycle, backprop once exact) or "serial"
    # points: layer-parallel minus serial accuracy must exceed -margin for "commensurate" and "unaffected" (the
    # paper gives no margin: ours)
    margin: float = 1.0
    finetune_epochs: int = 2  # epochs of each fine-tune (the rest of the recipe is the profile's)

    def __post_init__(self):
        if self.name not in PROFILES:
            raise ConfigError(f"LayerParallelSetting.name={self.name!r} is not a profile; choose one of "
                              f"{sorted(PROFILES)}")
        for field in ("dataset", "finetune_dataset"):
            if getattr(self, field) not in DATASETS:
                raise ConfigError(f"LayerParallelSetting.{field}={getattr(self, field)!r} is not a registry "
                                  f"dataset; choose one of {sorted(DATASETS)}")
        before, after = DATASETS[self.dataset], DATASETS[self.finetune_dataset]
        if self.finetune_dataset == self.dataset:  # the claims pick runs by dataset: the phases would mix
            raise ConfigError(f"LayerParallelSetting.finetune_dataset={self.finetune_dataset!r} is the pre-training "
                              "dataset; fine-tune on another one of the same image shape (e.g. 'mnist')")
        if (before.image_size, before.in_channels) != (after.image_size, after.in_channels):
            raise ConfigError(f"LayerParallelSetting.finetune_dataset={self.finetune_dataset!r} has "
                              f"{after.image_size}px images with {after.in_channels} channel(s), {self.dataset} "
                              f"{before.image_size}px with {before.in_channels}: the pre-trained weights need the "
                              "same shape; choose a dataset that has it")
        if self.adapt not in MGRIT_ADAPTATIONS:
            raise ConfigError(f"LayerParallelSetting.adapt={self.adapt!r}; choose one of {MGRIT_ADAPTATIONS}")
        if self.margin <= 0 or self.tolerance <= 0 or self.check_every < 1 or self.finetune_epochs < 1:
            raise ConfigError(f"LayerParallelSetting margin={self.margin}, tolerance={self.tolerance}, check_every="
                              f"{self.check_every} and finetune_epochs={self.finetune_epochs} must all be positive")
        check_layout(self.depth, 1, MGRITConfig(levels=self.levels, coarsening=self.coarsening))  # spacings divide N
        exact = self.exact_after
        for field in ("fixed_iterations", "adaptive_start"):
            if max(getattr(self, field)) >= exact:
                raise ConfigError(f"LayerParallelSetting.{field}={getattr(self, field)}: at depth {self.depth} and "
                                  f"coarsening {self.coarsening} the solve is exact after {exact} cycles, so the "
                                  f"arm would be serial training; use fewer than {exact}")

    @property
    def profile(self) -> Profile:
        return PROFILES[self.name]

    @property
    def exact_after(self) -> int:
        """Two-level cycles after which MGRIT computes what backpropagation does."""
        return MGRITConfig(levels=self.levels, coarsening=self.coarsening).iterations_to_converge(self.depth)

    def data_config(self, phase: str) -> DataConfig:
        if phase not in PHASES:
            raise ConfigError(f"phase={phase!r}; choose one of {PHASES}")
        return self.profile.data_config(self.dataset if phase == "pre-training" else self.finetune_dataset)

    def model_config(self, data) -> ModelConfig:
        """The profile's ViT-N fitted to `data` (anything with image_size, in_channels and num_classes), at h = 1/N
        and without dropout, which MGRIT refuses (it re-evaluates every layer several times per step)."""
        config = self.profile.model_config(f"{self.depth}-{self.depth}", data)
        return replace(config, step=1 / self.depth, dropout=0.0)

    def recipe(self, arm: str, seed: int, phase: str = "pre-training") -> Recipe:
        """The profile's recipe for one arm and seed. torch.compile is off in every arm: MGRIT cannot be compiled,
        and the serial arm is to differ from the others in its gradients alone."""
        arms = ARMS if phase == "pre-training" else FINETUNE_ARMS
        if arm not in arms:
            raise ConfigError(f"arm={arm!r} is not a {phase} arm; choose one of {arms}")
        base = replace(self.profile.recipe, seed=seed, compile=False)
        if phase == "fine-tuning":
            base = replace(base, epochs=self.finetune_epochs)
        if arm == "serial":
            return base
        mgrit = replace(base, solver="mgrit", mgrit_levels=self.levels, mgrit_coarsening=self.coarsening)
        if arm == "fixed":
            return replace(mgrit, mgrit_iterations=self.fixed_iterations)
        return replace(mgrit, mgrit_iterations=self.adaptive_start, mgrit_check_every=self.check_every,
                       mgrit_tolerance=self.tolerance, mgrit_adapt=self.adapt)

    def run_name(self, arm: str, phase: str) -> str:
        dataset = self.dataset if phase == "pre-training" else self.finetune_dataset
        stage = "" if phase == "pre-training" else "-finetune"
        return f"{dataset}-ViT-{self.depth}-layer-parallel{stage}-{arm}"

    def describe(self) -> str:
        f, b = self.fixed_iterations
        return (f"ViT-{self.depth} at h = 1/{self.depth} on {self.dataset}, then fine-tuned on {self.finetune_dataset} "
                f"({self.finetune_epochs} epochs); MGRIT: {self.levels} levels, coarsening {self.coarsening} (exact "
                f"after {self.exact_after} cycles), fixed {f} forward / {b} adjoint cycles; adaptive from "
                f"{self.adaptive_start}, checked every {self.check_every} steps, {self.adapt} past a relative "
                f"gradient error of {self.tolerance:g}; 'commensurate' and 'unaffected': within {self.margin:g} "
                f"point (our margin); {self.profile.describe()}")


LAYER_PARALLEL_SETTINGS = {
    "ci": LayerParallelSetting("ci", "fashion_mnist", "mnist", depth=8, coarsening=2, check_every=5),
    # fine-tunes as long as the pre-training: at 2 epochs a ViT at h = 1/8 had not settled on MNIST (22-42%)
    "quick": LayerParallelSetting("quick", "fashion_mnist", "mnist", depth=8, coarsening=2, finetune_epochs=5),
    # The paper's regime: deeper, coarsening 4 (TorchBraid's default; exact after 7 cycles), the full datasets.
    "gpu": LayerParallelSetting("gpu", "fashion_mnist", "mnist", depth=32, coarsening=4, finetune_epochs=10),
    "paper": LayerParallelSetting("paper", "fashion_mnist", "mnist", depth=32, coarsening=4, finetune_epochs=10),
}


def get_layer_parallel_setting(profile: str) -> LayerParallelSetting:
    if profile not in LAYER_PARALLEL_SETTINGS:
        raise ConfigError(f"unknown profile {profile!r} for the layer-parallel experiment; choose one of "
                          f"{sorted(LAYER_PARALLEL_SETTINGS)}")
    return LAYER_PARALLEL_SETTINGS[profile]


# --- the runs ------------------------------------------------------------------------------------------------

def _row(setting: LayerParallelSetting, phase: str, arm: str, data, result: RunResult, recipe: Recipe) -> dict:
    return {"phase": phase, "dataset": setting.data_config(phase).dataset,
            "arm": arm, "model": result.model_config.name, "solver": recipe.describe_solver(), "seed": recipe.seed,
            "test_images": len(data.test_labels), "test_acc": result.final_test_acc, "correct": result.correct(),
            "num_params": result.num_params, "epochs": len(result.history), "train_seconds": result.wall_seconds,
            "cached": result.cached, "run_name": result.name, "run_key": result.key,
            "data_source": result.data_source, "device": result.device, "code_version": result.code_version,
            "code_digest": result.code_digest}


def run_arms(setting: LayerParallelSetting, seeds: tuple[int, ...] | None = None, progress: bool = True,
             results_root=None, data=None) -> tuple[pd.DataFrame, list[RunResult]]:
    """Train (or fetch from the run cache) the three pre-training arms for every seed (the profile's unless
    given): one row per run, in the shape `accuracy.judge_claims` reads (`arm` names the side), and the records.
    `data`: the pre-training images, if already loaded."""
    data_config = setting.data_config("pre-training")
    data = data if data is not None else load_data(data_config)
    model_config = setting.model_config(data)
    rows, records = [], []
    for seed in seeds or setting.profile.seeds:
        for arm in ARMS:
            recipe = setting.recipe(arm, seed)
            result = train(model_config, data_config, recipe, data=data, name=setting.run_name(arm, "pre-training"),
                           progress=progress, results_root=results_root)
            rows.append(_row(setting, "pre-training", arm, data, result, recipe))
            records.append(result)
    return pd.DataFrame(rows), records


def pretrained_weights(result: RunResult, results_root=None) -> Initialization:
    """A finished run's final weights without its head, as the starting point of a fine-tune (which gets a new
    head for its own classes)."""
    state = load_trained_model(result, results_root).state_dict()
    weights = {name: tensor for name, tensor in state.items() if not name.startswith("head.")}
    seed = result.config["recipe"]["seed"]
    return Initialization(f"run {result.name} (seed {seed}), head dropped", weights)


def run_finetune(setting: LayerParallelSetting, arms: pd.DataFrame, records: list[RunResult],
                 progress: bool = True, results_root=None, data=None) -> tuple[pd.DataFrame, list[RunResult]]:
    """For every seed of `arms` (from `run_arms`), the serial arm's final weights fine-tuned on the fine-tuning
    dataset by each of `FINETUNE_ARMS`: one row per run and the records."""
    data_config = setting.data_config("fine-tuning")
    data = data if data is not None else load_data(data_config)
    model_config = setting.model_config(data)
    serial = {row["seed"]: record for (_, row), record in zip(arms.iterrows(), records)
              if row["phase"] == "pre-training" and row["arm"] == "serial"}
    if not serial:
        raise ConfigError("run_finetune needs the serial pre-training runs of run_arms; the table has none")
    rows, out = [], []
    for seed, pretrained in serial.items():
        init = pretrained_weights(pretrained, results_root)
        for arm in FINETUNE_ARMS:
            recipe = setting.recipe(arm, seed, "fine-tuning")
            result = train(model_config, data_config, recipe, data=data, init=init, progress=progress,
                           name=setting.run_name(arm, "fine-tuning"), results_root=results_root)
            rows.append(_row(setting, "fine-tuning", arm, data, result, recipe))
            out.append(result)
    return pd.DataFrame(rows), out


def run_experiment(setting: LayerParallelSetting, progress: bool = True,
                   results_root=None) -> tuple[pd.DataFrame, list[RunResult]]:
    """`run_arms`, then `run_finetune` from its serial runs: every run of the notebook, one table."""
    arms, records = run_arms(setting, progress=progress, results_root=results_root)
    tuned, tuned_records = run_finetune(setting, arms, records, progress=progress, results_root=results_root)
    return pd.concat([arms, tuned], ignore_index=True), records + tuned_records


# --- accuracy -------------------------------------------------------------------------------------------------

def accuracy_claims(setting: LayerParallelSetting) -> list[AccuracyClaim]:
    """The paper's "commensurate with serial pre-training" (the fixed and the adaptive arm) and "fine-tuning is
    unaffected" (fixed-cycle MGRIT against backprop, both from the serial weights), each as "minus serial exceeds
    -margin"."""
    f, b = setting.fixed_iterations
    fixed = f"MGRIT, fixed {f} forward / {b} adjoint cycles"
    within = f"within {setting.margin:g} point"
    return [
        AccuracyClaim(setting.dataset, "fixed", "serial", f"layer-parallel pre-training ({fixed}) is commensurate "
                      f"with serial: {within} on {setting.dataset}", column="arm", threshold=-setting.margin),
        AccuracyClaim(setting.dataset, "adaptive", "serial", f"layer-parallel pre-training (MGRIT, adaptive) is "
                      f"commensurate with serial: {within} on {setting.dataset}", column="arm",
                      threshold=-setting.margin),
        AccuracyClaim(setting.finetune_dataset, "fixed", "serial", f"fine-tuning layer-parallel ({fixed}) is "
                      f"unaffected: {within} of serial fine-tuning on {setting.finetune_dataset}", column="arm",
                      threshold=-setting.margin),
    ]


def arms_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per phase and arm: mean accuracy over seeds with its 95% interval, and the difference to the serial arm of
    the same phase."""
    table = accuracy_table(runs, ("phase", "dataset", "arm"))
    first = runs.drop_duplicates(["phase", "arm"]).set_index(["phase", "arm"])
    table["solver"] = [first.loc[(p, a), "solver"] for p, a in zip(table["phase"], table["arm"])]
    table["model"] = [first.loc[(p, a), "model"] for p, a in zip(table["phase"], table["arm"])]
    serial = table[table["arm"] == "serial"].set_index("phase")["our_acc"]
    table["minus_serial"] = table["our_acc"] - table["phase"].map(serial)
    columns = ["phase", "dataset", "arm", "model", "solver", "params", "our_acc", "our_acc_low", "our_acc_high",
               "minus_serial", "seed_std", "seeds", "test_images", "seconds_per_run"]
    return table[columns]


# --- the solver's record ----------------------------------------------------------------------------------------

def _checks(record: RunResult) -> list[list]:
    return [check for entry in record.history for check in entry.get("mgrit_checks") or []]


def solver_checks(runs: pd.DataFrame, records: list[RunResult]) -> pd.DataFrame:
    """Every check of the exact gradient that a run made (the adaptive arm's): phase, arm, seed, step, the relative
    errors of the chain's output and of its gradient, and the (forward, adjoint) cycles it was made at."""
    rows = []
    for (_, run), record in zip(runs.iterrows(), records):
        for step, output_error, gradient_error, cycles in _checks(record):
            rows.append({"phase": run["phase"], "arm": run["arm"], "seed": run["seed"], "step": step,
                         "output_error": output_error, "gradient_error": gradient_error,
                         "cycles": tuple(cycles) if cycles is not None else None})
    return pd.DataFrame(rows, columns=["phase", "arm", "seed", "step", "output_error", "gradient_error", "cycles"])


def solver_table(runs: pd.DataFrame, records: list[RunResult]) -> pd.DataFrame:
    """One row per MGRIT run: the cycles it started and ended with ("backprop" once switched), the step it switched
    at, the steps from which it adapted (one more cycle, or backprop), how many checks it made and how many found
    the gradient error past its recipe's tolerance, and the errors of the first, worst and last check."""
    rows = []
    for (_, run), record in zip(runs.iterrows(), records):
        recipe = record.config["recipe"]
        if recipe["solver"] != "mgrit":
            continue
        checks, tolerance = _checks(record), recipe["mgrit_tolerance"]
        errors = [check[2] for check in checks]
        final = record.history[-1].get("mgrit_iterations")
        switches = [entry.get("solver_switch_step") for entry in record.history
                    if entry.get("solver_switch_step") is not None]
        rows.append({"phase": run["phase"], "arm": run["arm"], "seed": run["seed"],
                     "start_cycles": tuple(recipe["mgrit_iterations"]),
                     "end_cycles": tuple(final) if final is not None else "backprop",
                     "switch_step": switches[0] if switches else None,
                     "adapted_from": tuple(check[0] + 1 for check in checks if check[2] > tolerance),
                     "checks": len(checks), "past_tolerance": sum(error > tolerance for error in errors),
                     "first_gradient_error": errors[0] if errors else math.nan,
                     "worst_gradient_error": max(errors) if errors else math.nan,
                     "last_gradient_error": errors[-1] if errors else math.nan})
    table = pd.DataFrame(rows, columns=["phase", "arm", "seed", "start_cycles", "end_cycles", "switch_step",
                                        "adapted_from", "checks", "past_tolerance", "first_gradient_error",
                                        "worst_gradient_error", "last_gradient_error"])
    # a step or None, as the history records it (pandas would turn a column of steps and Nones into floats)
    table["switch_step"] = pd.Series([row["switch_step"] for row in rows], dtype=object)
    return table


def readable(table: pd.DataFrame, scientific: tuple[str, ...] = ()) -> pd.DataFrame:
    """`table` for a reader and its CSV: tuples (cycles, steps) as comma-separated text, and the `scientific`
    columns in scientific notation, since the tables' CSVs keep two decimals and would print a relative error of
    4e-3 as 0.00 (the exact values are in the run records)."""
    def text(value, column):
        if isinstance(value, tuple):
            return ", ".join(str(v) for v in value)
        if column in scientific and isinstance(value, float):
            return f"{value:.2e}" if math.isfinite(value) else ""
        return value

    return table.assign(**{c: [text(v, c) for v in table[c]] for c in table.columns})


def step_losses(runs: pd.DataFrame, seed: int, results_root=None) -> pd.DataFrame:
    """The per-step training loss of every run of one seed (its step log): phase, arm, step, loss. Step logs stay
    where a run was trained (only the records are committed): a run without one gives its epochs' mean losses at
    each epoch's last step instead, with a warning, so that a fresh checkout still draws the curves."""
    frames, coarse = [], []
    for _, run in runs[runs["seed"] == seed].iterrows():
        record_path = run_paths(run["run_name"], run["run_key"], results_root)[0]
        log_path = step_log_path(record_path)
        if log_path.is_file():
            log = read_step_log(log_path)[["step", "loss"]]
        else:
            log = _epoch_losses(read_record(record_path, run["run_key"]))
            coarse.append(run["run_name"])
        frames.append(log.assign(phase=run["phase"], arm=run["arm"]))
    if coarse:
        warnings.warn(f"no step log for {', '.join(coarse)} (step logs are not committed): their curves are the "
                      "epochs' mean losses, at each epoch's last step", stacklevel=2)
    return pd.concat(frames, ignore_index=True)[["phase", "arm", "step", "loss"]]


def _epoch_losses(record: RunResult) -> pd.DataFrame:
    """(step, loss) of each epoch of a one-stage run with one step per minibatch: its last step, its mean loss."""
    data, recipe = record.config["data"], record.config["recipe"]
    train_images = round(data["n_train"] * (1 - data["val_fraction"]))
    per_epoch = math.ceil(train_images / recipe["batch_size"])
    return pd.DataFrame({"step": [entry["epoch"] * per_epoch - 1 for entry in record.history],
                         "loss": [entry["train_loss"] for entry in record.history]})


# --- the MGRIT convergence table ----------------------------------------------------------------------------------

def convergence_rows(setting: LayerParallelSetting) -> tuple[pd.DataFrame, str]:
    """`paraformer.parallel.convergence`'s table for this profile and where it comes from: its CSV in the
    profile's tables, else (profiles measured on the quick setting) the committed quick one, else, at ci, computed
    here (seconds: the ci setting, with this experiment's coarsening added); an empty table, saying how to make it,
    otherwise."""
    own = convergence.get_setting(setting.name)
    candidates = [(setting.name, convergence.output_paths(setting.name)[0])]
    if setting.name != "quick" and own == convergence.get_setting("quick"):
        candidates.append(("quick", convergence.output_paths("quick")[0]))
    for profile, path in candidates:
        if path.is_file():
            return pd.read_csv(path), f"tables/mgrit_convergence.csv of the {profile} profile"
    if setting.name == "ci":
        coarsenings = tuple(sorted({*own.coarsenings, setting.coarsening}))
        table = convergence.convergence_table(replace(own, coarsenings=coarsenings), progress=False)
        return table, f"computed here (the ci setting, coarsenings {list(coarsenings)})"
    return (pd.DataFrame(), f"not made yet: python -m paraformer.parallel.convergence --profile {setting.name}")


def convergence_view(table: pd.DataFrame, setting: LayerParallelSetting) -> pd.DataFrame:
    """The rows of the convergence table at the experiment's levels, coarsening, F-relaxation and h = 1/N: the
    relative gradient error per depth (rows) and cycle count (columns)."""
    if table.empty:
        return table
    rows = table[(table["levels"] == setting.levels) & (table["coarsening"] == setting.coarsening)
                 & (table["relaxation"] == "F") & (table["step"].astype(str) == "1/N")]
    wide = rows.pivot_table(index="depth", columns="iterations", values="gradient_error")
    wide.columns = [f"{k} cycles" for k in wide.columns]
    return wide.reset_index()


# --- speed ------------------------------------------------------------------------------------------------------

SERIAL_METHOD = "ddp"  # at one process: the plain serial step of the ViT (DDP over one rank adds nothing)


def mgrit_method(setting: LayerParallelSetting) -> str | None:
    """The benchmark's method for the fixed arm's solver, or None where the benchmark does not time it (it times
    k forward cycles with one adjoint cycle)."""
    forward, adjoint = setting.fixed_iterations
    return f"mgrit-{forward}it" if adjoint == 1 else None


def speed_data(profile: str, processes: tuple[int, ...] = (1, 2),
               measure_other_device: bool = True) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The profile's benchmark CSVs (`bench.load`), with the multi-process benchmark measured here first where its
    CSVs are missing or, unless `measure_other_device` is False, were measured on another kind of device (as
    notebook 06 does; `make bench` measures everything afresh); and what was measured."""
    data = bench.load(profile)
    todo = [name for name in bench.to_measure(data, processes) if name == "multi"]
    if not measure_other_device:
        todo = speedup.only_missing(todo, data, processes)
    if todo:
        bench.run(profile, only=tuple(todo), processes=processes)
        data = bench.load(profile)
    return data, todo


def _step(steps: pd.DataFrame, method: str | None, model: str, processes: int) -> float | None:
    """The best measured step (over micro-batch counts) of `method` on `model` at `processes`, or None."""
    if steps.empty or method is None:
        return None
    rows = steps[(steps["method"] == method) & (steps["model"] == model) & (steps["processes"] == processes)]
    return float(rows["seconds"].min()) if len(rows) else None


def _top_processes(steps: pd.DataFrame) -> int:
    """The most processes the benchmark ran (2 where it ran none, the count the claims are made for)."""
    counts = sorted(set(steps["processes"])) if len(steps) else []
    return max(counts) if counts and max(counts) > 1 else 2


def _speed_claims(profile: str, setting: LayerParallelSetting, top: int) -> list[tuple]:
    """(key, kind, claim, slower step, faster step) per speed claim, each step as (method, model, processes)."""
    multi = MULTI_SETTINGS[profile]
    vit, para, method = vit_name(multi), f"Para-F-{multi.paraformer}", mgrit_method(setting)
    label = method or f"MGRIT with {setting.fixed_iterations[1]} adjoint cycles"
    return [("acceleration", "paper", f"layer-parallel training accelerates over serial: {label} of {vit} on {top} "
             f"processes against the serial {vit} step on one", (SERIAL_METHOD, vit, 1), (method, vit, top)),
            ("mgrit_scaling", "comparison", f"{label} of {vit} on {top} processes faster than on one",
             (method, vit, 1), (method, vit, top)),
            ("mgrit_vs_branch", "comparison", f"{label} of {vit} faster than branch parallelism of {para} (as many "
             f"layers, the same width) on {top} processes", ("branch", para, top), (method, vit, top))]


def speed_row_words(row: tuple[str | None, str, int], setting: LayerParallelSetting) -> str:
    """A benchmark row (method, model, processes) of `missing_speed_rows` in words, with the CSV it belongs in."""
    method, model, processes = row
    if method is None:
        return f"an MGRIT step with {setting.fixed_iterations[1]} adjoint cycles (the benchmark times one)"
    return f"{method} {model} at {processes} process{'es' if processes > 1 else ''} (multi_steps_{processes}.csv)"


def missing_speed_rows(data: dict[str, pd.DataFrame], profile: str,
                       setting: LayerParallelSetting) -> list[tuple[str | None, str, int]]:
    """The benchmark rows, as (method, model, processes), that the speed claims need and `data` lacks (empty when
    nothing is missing); method None: the fixed arm's solver, which the benchmark does not time."""
    steps = costmodel.multi_steps(data)
    needed = {step: None for *_, slow, fast in _speed_claims(profile, setting, _top_processes(steps))
              for step in (slow, fast)}
    return [step for step in needed if _step(steps, *step) is None]


def speed_verdicts(data: dict[str, pd.DataFrame], profile: str,
                   setting: LayerParallelSetting) -> list[speedup.SpeedVerdict]:
    """The paper's "parallel acceleration over the layer dimension": the serial ViT's step on one process over the
    fixed arm's MGRIT step on the most processes the benchmark ran (kind "paper"); and two comparisons the paper
    gives no figure for: MGRIT's own speed-up from one process, and branch parallelism of the ParaFormer with as
    many layers and the same width against it. A claim whose rows the CSVs lack is not testable, saying which."""
    steps = costmodel.multi_steps(data)
    spread, _ = speedup.ratio_spread(data)
    device = speedup.device_of(steps) if len(steps) else "no benchmark"
    out = []
    for key, kind, claim, slow, fast in _speed_claims(profile, setting, _top_processes(steps)):
        times = [_step(steps, *slow), _step(steps, *fast)]
        missing = [speed_row_words(step, setting) for step, t in zip((slow, fast), times) if t is None]
        if missing:
            why = (f"the benchmark CSVs lack {'; '.join(missing)} (measured before those rows were timed, or "
                   "skipped there); make bench measures them")
            out.append(speedup.judge_ratio(key, kind, claim, math.nan, 1.0, spread, "", device, not_testable=why))
            continue
        (slow_method, slow_model, slow_p), (fast_method, fast_model, fast_p) = slow, fast
        detail = (f"{slow_method} {slow_model} at {slow_p} process(es): {1e3 * times[0]:.1f} ms; {fast_method} "
                  f"{fast_model} at {fast_p}: {1e3 * times[1]:.1f} ms (the benchmark's ViT has h = 1, which changes "
                  "no time)")
        out.append(speedup.judge_ratio(key, kind, claim, times[0] / times[1], 1.0, spread, detail, device))
    return out


def speed_table(data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The multi-process table (`speedup.multi_table`) cut to what this notebook compares: the serial ViT (DDP at
    one process) and its DDP, every MGRIT row and branch parallelism, with each step's speed-up over the serial ViT
    step on one process."""
    if costmodel.multi_steps(data).empty:
        return pd.DataFrame(columns=["processes", "method", "model", "step_ms", "speedup_over_1_process",
                                     "serial_over_this"])
    table = speedup.multi_table(data)
    keep = table["method"].isin([SERIAL_METHOD, "branch"]) | table["method"].str.startswith("mgrit-")
    table = table[keep & ~((table["method"] == SERIAL_METHOD) & table["model"].str.startswith("Para-F"))].copy()
    serial = table[(table["method"] == SERIAL_METHOD) & (table["processes"] == 1)]["step_ms"]
    table["serial_over_this"] = float(serial.iloc[0]) / table["step_ms"] if len(serial) else math.nan
    columns = ["processes", "method", "model", "step_ms", "speedup_over_1_process", "serial_over_this"]
    return table[columns].reset_index(drop=True)


@dataclass(frozen=True)
class CostModelWinners:
    """Which way of training the ViT the cost model predicts fastest, per depth and device count, and MGRIT's step
    against branch parallelism of the ParaFormer with as many layers (a prediction, not a verdict)."""

    # depth, devices, allreduce, fastest (the fastest line that trains the ViT), fastest_ms, mgrit_over_branch
    table: pd.DataFrame
    mgrit: str | None  # the MGRIT method compared with branch parallelism; None where the costs cannot predict it

    def words(self) -> list[str]:
        if self.table.empty:
            return ["Cost model: no predictions (the benchmark's 1- and 2-process cost CSVs are missing)."]
        head = ("Cost model (a prediction, not a verdict; ring all-reduce, devices and links like the measured ones; "
                "every all-reduce model in tables/layer_parallel_cost_model.csv): per depth, the fastest way to train "
                "the ViT at each device count")
        if self.mgrit is None:
            head += (" (no MGRIT prediction: the cost CSVs lack its layer_forward and layer_vjp rows, or no device "
                     "count shares the layers in whole coarse intervals)")
        else:
            head += (f", and {self.mgrit}'s step over the branch-parallel ParaFormer's of as many layers and the same "
                     "width (above 1: branch parallelism is faster)")
        lines = [head + "."]
        for depth, rows in self.table[self.table["allreduce"] == "ring"].groupby("depth", sort=True):
            wins: dict[str, list[str]] = {}
            for _, row in rows.sort_values("devices").iterrows():
                wins.setdefault(row["fastest"], []).append(str(row["devices"]))
            where = "; ".join(f"{method} at {', '.join(devices)}" for method, devices in wins.items())
            ratios = rows.dropna(subset=["mgrit_over_branch"])
            against = ("; over branch parallelism " + ", ".join(
                f"{r['mgrit_over_branch']:.2f}x at {r['devices']}" for _, r in ratios.iterrows()) if len(ratios)
                else "")
            lines.append(f"{depth} layers: fastest {where} device(s){against}")
        return lines


def cost_model_winners(data: dict[str, pd.DataFrame], profile: str, setting: LayerParallelSetting) -> CostModelWinners:
    """From `costmodel.predictions` of the benchmark CSVs `data` (every depth; none without the 1- and 2-process
    costs): per depth, device count and all-reduce model, the fastest of the lines that train the ViT
    (`speedup.cost_model_lines`: the pipeline, DDP, MGRIT), and the fixed arm's MGRIT step over the branch-parallel
    ParaFormer's (another model, of as many layers and the same width)."""
    has_costs = {"multi_costs_1", "multi_costs_2"} <= set(data)
    predicted = costmodel.predictions(data, profile) if has_costs else pd.DataFrame()
    method = mgrit_method(setting)
    rows, compared = [], None
    for depth in sorted(set(predicted["depth"])) if not predicted.empty else []:
        lines = speedup.cost_model_lines(predicted, depth)
        branch = next(line for line in lines if line.method == "branch")
        vit = [line for line in lines if line.model.startswith("ViT-")]
        mgrit = next((line for line in vit if line.method == method), None)
        compared = compared or (mgrit.method if mgrit is not None else None)
        for allreduce in ("ring", "tree"):
            at = {line.method: line.predicted_ms(allreduce) for line in vit}
            for devices in sorted({p for times in at.values() for p in times}):
                times = {name: t[devices] for name, t in at.items() if devices in t}
                fastest = min(times, key=times.get)
                ratio = (mgrit.predicted_ms(allreduce)[devices] / branch.predicted_ms(allreduce)[devices]
                         if mgrit is not None and devices in mgrit.devices and devices in branch.devices
                         else math.nan)
                rows.append({"depth": depth, "devices": devices, "allreduce": allreduce, "fastest": fastest,
                             "fastest_ms": times[fastest], "mgrit_over_branch": ratio})
    columns = ["depth", "devices", "allreduce", "fastest", "fastest_ms", "mgrit_over_branch"]
    return CostModelWinners(pd.DataFrame(rows, columns=columns), compared)


def claims_device(runs: pd.DataFrame, verdicts: list[speedup.SpeedVerdict]) -> str:
    """The devices behind the claims table: the training runs' and the benchmark's."""
    return "; ".join(dict.fromkeys([*runs["device"], *(v.device for v in verdicts)]))
