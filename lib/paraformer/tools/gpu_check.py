"""`make gpu-check`: everything a lent GPU has to answer, in one command that fits a few minutes of device time.

Why: a GPU is lent to this project rarely and briefly (about 5 minutes of device time, the machine's start included),
on a machine with torch, pandas and numpy but no papermill, no pytest and no internet, and the CUDA paths (bf16
autocast, fused AdamW, torch.compile, device-resident data, NCCL) have never run on one (docs/gpu.md). So this one
prepared command asks every question at once, each step timed and each failure caught and recorded as data, so that
one broken step costs its own answer and not the others':

1. `cuda/*`: the checks of tests/test_cuda.py, re-expressed as plain checks over the same library functions (on the
   CPU, those that mean something there, the CUDA-only ones recorded as skipped for want of CUDA);
2. `estimate/gpu-profile`: the estimate's model FLOP rate measured on the device, and from it the `gpu` profile's
   estimated minutes, against the ~20 minutes it was sized for;
3. `throughput`: our training step against timm's ViT of the same shape (`make throughput`), or ours alone, with
   its FLOP rate and MFU against the matrix-product peak measured in the same run, where timm is missing;
4. `train/<method>/<solver>/<eager|compiled>`: one short run of every training method and one-process solver on
   synthetic images, uncompiled and compiled, with what Dynamo compiled (`CompileCount`: graphs, recompiles).

The answers most wanted come first: steps are never cut short, but once `--time-budget` seconds have
passed every remaining step is recorded as skipped for the time budget. gpu-check.json (the data) and gpu-check.md
(a summary) are rewritten after every step, so that a device command killed at its limit still leaves the steps it
finished. Exit code 0 when every step is ok or skipped, 1 when one failed, 2 for bad arguments.

    python -m paraformer.tools.gpu_check [--device cuda|cpu] [--out FOLDER] [--quick] [--time-budget SECONDS]
"""

from __future__ import annotations

import gc
import importlib.metadata
import math
import os
import platform
import socket
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.distributed as dist

from ..bench import throughput
from ..bench.speed import benchmark_matmul, steady_allocator
from ..core.config import (METHODS, PARALLELISMS, SOLVERS, ConfigError, DataConfig, ModelConfig,
                           OneLineArgumentParser, Recipe)
from ..core.data import ImageData, augment_batch
from ..core.files import ResultsWriteError, atomic_write_json, atomic_write_text, remove_orphan_temporaries
from ..core.model import ParaFormer
from ..core.paths import results_root
from ..core.provenance import code_version, device_name
from ..core.steps import build_optimizer, cuda_unavailable_reason, precision
from ..core.timing import median_seconds
from ..experiments.estimate import measure_flops_per_second
from ..experiments.profiles import get_profile
from ..parallel.branch import BranchParallel
from ..parallel.launch import control_group, init_process_group
from ..training import canary, train, trainer
from ..training.numerics import code_digest
from .estimate import estimate_suite, profile_notebooks

STATUSES = ("ok", "failed", "skipped")
# why a step was skipped: a small vocabulary, so that a reader (or a test) can tell the reasons apart as data
NO_CUDA = "no CUDA"
TIME_BUDGET = "time budget"
SEVERAL_PROCESSES = "needs several processes"
REFUSED = "refused by its config"
INTENDED_GPU_MINUTES = 20.0  # what the gpu profile was sized for on one H100 (docs/gpu.md, experiments/estimate.py)
CUDA_TESTS = "tests/test_cuda.py"


class CheckFailed(AssertionError):
    """A check's claim that did not hold; the message says what was expected and what came."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --- what a check needs -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckSettings:
    """What the command line chose."""

    device: str = "cuda"  # "cuda" or "cpu"
    out: Path | None = None  # None: <results>/gpu-check, or <results>/gpu-check/cpu for a CPU run
    quick: bool = False  # small settings: tiny models, one epoch, few timed rounds, one notebook estimated
    time_budget: float = 240.0  # seconds after which the remaining steps are skipped

    @property
    def folder(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        # a CPU run never overwrites the GPU's answers
        return results_root() / "gpu-check" / ("cpu" if self.device == "cpu" else "")


@dataclass(frozen=True)
class RunSizes:
    """The toy runs: tiny, so that what a run costs on a GPU is its compilation, not its training."""

    model: ModelConfig  # the ParaFormer the CUDA tests' checks and every method train
    vit: ModelConfig  # the MGRIT solver's ViT (branch_depth = num_layers, step 1/depth)
    recipe: Recipe  # the CUDA tests' checks' (a resumed run needs at least 2 epochs)
    matrix_epochs: int  # of each run of the method and solver matrix
    n_train: int  # toy images
    n_test: int


# tests/test_train.py's toy task, which tests/test_cuda.py trains: 16 px images of four classes (which halves are
# bright), learnt in a few steps
TEST_MODEL = ModelConfig(image_size=16, patch_size=4, width=32, num_heads=2, mlp_ratio=2.0, branch_depth=1,
                         num_layers=3, num_classes=4, dropout=0.1)
TEST_RECIPE = Recipe(epochs=3, batch_size=16, lr=3e-3, warmup_epochs=0.5, augment=("flip", "crop"), seed=1)
TOY = DataConfig(dataset="gpu-check-toy")
CHANCE = 25.0  # % on the toy task's four classes
TEST_CUDA_ACCURACY = 90.0  # % that tests/test_cuda.py asks of a 3-epoch toy run (see check_precision_and_optimizer)
# the tests' own sizes; quick: a two-branch model of 4 tokens on a third of the images, the matrix for one epoch
FULL_SIZES = RunSizes(TEST_MODEL, ModelConfig(branch_depth=4, num_layers=4, step=1 / 4, **canary.SMALL), TEST_RECIPE,
                      matrix_epochs=2, n_train=96, n_test=48)
_TINY = dict(image_size=16, patch_size=8, width=16, num_heads=2, mlp_ratio=2.0, num_classes=4)
QUICK_SIZES = RunSizes(ModelConfig(branch_depth=1, num_layers=2, **_TINY),
                       ModelConfig(branch_depth=4, num_layers=4, step=1 / 4, **_TINY),
                       replace(TEST_RECIPE, epochs=2), matrix_epochs=1, n_train=32, n_test=16)


@dataclass
class Context:
    """What every step gets: the device, the settings, and a scratch folder for its runs (deleted afterwards)."""

    device: torch.device
    settings: CheckSettings
    scratch: Path

    @property
    def quick(self) -> bool:
        return self.settings.quick

    @property
    def sizes(self) -> RunSizes:
        return QUICK_SIZES if self.quick else FULL_SIZES

    def data(self) -> ImageData:
        return toy_data(self.sizes.n_train, self.sizes.n_test)

    def folder(self, name: str) -> Path:
        """A results folder of this step's own: a run cached by an earlier step must not answer for this one."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.scratch))

    def recipe(self, **fields) -> Recipe:
        """The CUDA tests' checks' recipe on this device."""
        return replace(self.sizes.recipe, device=self.device.type, **fields)


def toy_data(n_train: int = 96, n_test: int = 48) -> ImageData:
    """The numerics canary's images (`canary.toy_images`), training images first, then test images, from one
    generator: at 96 and 48, tests/test_train.py's toy task image for image."""
    images, labels = canary.toy_images(n_train + n_test, seed=0)
    train_images, train_labels, test_images, test_labels = images[:n_train], labels[:n_train], images[n_train:], \
        labels[n_train:]
    empty = torch.empty(0, *train_images.shape[1:], dtype=torch.uint8)
    return ImageData(name="gpu-check-toy", train_images=train_images, train_labels=train_labels, val_images=empty,
                     val_labels=torch.empty(0, dtype=torch.long), test_images=test_images, test_labels=test_labels,
                     classes=["top", "bottom", "both", "neither"], mean=(0.3, 0.3, 0.3), std=(0.3, 0.3, 0.3),
                     source="synthetic")


def run_figures(result) -> dict:
    """What a finished run shows: its accuracy, losses, time, precision and, compiled, what Dynamo compiled."""
    figures = {"final_test_acc": result.final_test_acc, "train_loss": [e["train_loss"] for e in result.history],
               "epochs": len(result.history), "wall_seconds": result.wall_seconds, "precision": result.precision,
               "device": result.device}
    if result.compiled is not None:
        figures["compiled"] = dict(result.compiled)
    return figures


@contextmanager
def patched(owner, name: str, replacement):
    """`owner.name` is `replacement` inside, as it was after (what pytest's monkeypatch did in the CUDA tests)."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextmanager
def environment(**values: str):
    """Environment variables set inside, restored after."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def host_syncs(call: Callable[[], object]) -> tuple[object, int]:
    """`call()`'s result and how many times it made the host wait for the GPU (torch's sync debug mode)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return result, sum("synchroniz" in str(w.message) for w in caught)


# --- tests/test_cuda.py, as plain checks ------------------------------------------------------------------------

def check_augment_on_device(ctx: Context) -> dict:
    """Flips and crops drawn on the GPU give the CPU's pixels for the same draws, and a CUDA generator's draws
    make the host wait not once."""
    images = ctx.data().train_images
    on_cpu = augment_batch(images, ("flip", "crop"), torch.Generator().manual_seed(5))
    on_gpu = augment_batch(images.to(ctx.device), ("flip", "crop"), torch.Generator().manual_seed(5))
    expect(on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), on_cpu),
           "the same draws gave other pixels on the GPU than on the CPU")
    gpu_images = images.to(ctx.device)
    torch.cuda.synchronize()
    drawn, syncs = host_syncs(lambda: [augment_batch(gpu_images, ("flip", "crop"),
                                                     torch.Generator(device=ctx.device).manual_seed(5))
                                       for _ in range(2)])
    expect(syncs == 0, f"drawing on the GPU made the host wait {syncs} time(s); expected none")
    expect(drawn[0].device.type == "cuda" and torch.equal(drawn[0], drawn[1]),
           "two draws from the same seed on the GPU differ")
    return {"host_syncs": syncs}


def check_precision_and_optimizer(ctx: Context) -> dict:
    """A run on the device records the precision it used (bf16 autocast on CUDA, fp32 on the CPU), with a fused AdamW
    on CUDA only, and learns the toy task (above chance, as tests/test_train.py holds); on CUDA the device is part
    of the run key. tests/test_cuda.py asks 90% of both runs, which the CPU run does not reach (75% after its 3
    epochs): whether each run does is recorded, not required."""
    cuda = ctx.device.type == "cuda"
    model = ctx.sizes.model
    fused = build_optimizer(ParaFormer(model).to(ctx.device), ctx.recipe(), ctx.device).defaults.get("fused")
    expect(bool(fused) == cuda, f"AdamW fused={fused} on {ctx.device.type}; expected fused on CUDA only")
    data, folder = ctx.data(), ctx.folder("precision")
    result = train(model, TOY, ctx.recipe(), data=data, results_root=folder, progress=False)
    expect(result.precision == precision(ctx.device), f"recorded precision {result.precision!r}; expected "
                                                      f"{precision(ctx.device)!r}")
    expect(result.device == device_name(ctx.device), f"recorded device {result.device!r}")
    expect(result.final_test_acc > CHANCE, f"{result.final_test_acc}% on the toy task: chance is {CHANCE}%")
    figures = {"fused_adamw": bool(fused), **run_figures(result),
               "reaches_test_cuda_accuracy": result.final_test_acc >= TEST_CUDA_ACCURACY}
    if cuda:
        cpu = train(model, TOY, replace(ctx.recipe(), device="cpu"), data=data, results_root=folder, progress=False)
        expect(result.key != cpu.key, "a CUDA run and a CPU run share a run key")
        expect(cpu.final_test_acc > CHANCE, f"the CPU run: {cpu.final_test_acc}% on the toy task")
        figures |= {"cpu_final_test_acc": cpu.final_test_acc,
                    "cpu_reaches_test_cuda_accuracy": cpu.final_test_acc >= TEST_CUDA_ACCURACY}
    return figures


def check_data_on_device_without_waiting(ctx: Context) -> dict:
    """A CUDA run holds its images and labels on the GPU, and an epoch makes the host wait a few times, not at every
    step (the epoch's loss and the step log)."""
    seen: dict = {"syncs": []}
    start_run, one_epoch = trainer.start_run, trainer.train_one_epoch

    def spying_start_run(*args, **kwargs):
        run = start_run(*args, **kwargs)
        seen["images"], seen["labels"] = run.train_images.device.type, run.train_labels.device.type
        return run

    def watched_epoch(*args):
        loss, syncs = host_syncs(lambda: one_epoch(*args))
        seen["syncs"].append(syncs)
        return loss

    recipe = ctx.recipe(method="authors", epochs=2)  # at full sizes 24 optimizer steps per epoch
    with patched(trainer, "start_run", spying_start_run), patched(trainer, "train_one_epoch", watched_epoch):
        train(ctx.sizes.model, TOY, recipe, data=ctx.data(), results_root=ctx.folder("resident"), progress=False,
              log_every=1000)
    expect(seen.get("images") == seen.get("labels") == "cuda", f"the data lived on {seen.get('images')}")
    expect(all(s <= 3 for s in seen["syncs"]), f"host waits per epoch {seen['syncs']}; expected at most 3")
    return {"data_device": seen["images"], "host_syncs_per_epoch": seen["syncs"]}


def check_compiled_learns_like_eager(ctx: Context) -> dict:
    """A compiled run compiles (graphs, no eager fallback) and learns like an uncompiled one, within 5 points."""
    folder, data, model = ctx.folder("compiled"), ctx.data(), ctx.sizes.model
    eager = train(model, TOY, ctx.recipe(), data=data, results_root=folder, progress=False)
    compiled = train(model, TOY, ctx.recipe(compile=True), data=data, results_root=folder, progress=False)
    expect(compiled.config["recipe"]["compile"] is True, "the compiled run's record says compile=False")
    summary = compiled.compiled or {}
    expect(summary.get("graphs", 0) > 0 and summary.get("eager_fallbacks", 1) == 0,
           f"compiled {summary}; expected graphs and no eager fallback")
    gap = abs(compiled.final_test_acc - eager.final_test_acc)
    expect(gap <= 5, f"compiled {compiled.final_test_acc}% against eager {eager.final_test_acc}%: more than 5 "
                     "points apart")
    return {"eager_test_acc": eager.final_test_acc, "compiled_test_acc": compiled.final_test_acc,
            "eager_seconds": eager.wall_seconds, "compiled_seconds": compiled.wall_seconds, "compiled": summary}


class _StopAfterFirstEpoch(KeyboardInterrupt):
    """As Ctrl-C after epoch 1's checkpoint; a subclass, so that a real Ctrl-C is never taken for it."""


def check_resume(ctx: Context) -> dict:
    """A run stopped after its first epoch resumes from the checkpoint and follows an uninterrupted one: within
    tolerance on CUDA (its kernels may sum in another order from one process to the next), bit for bit on the CPU
    (the CPU's claim, docs/run-cache.md)."""
    data, recipe, model, cuda = ctx.data(), ctx.recipe(), ctx.sizes.model, ctx.device.type == "cuda"
    straight = train(model, TOY, recipe, data=data, results_root=ctx.folder("straight"), progress=False)
    folder = ctx.folder("resumed")

    def stop(entry):
        if entry["epoch"] == 1:
            raise _StopAfterFirstEpoch

    try:
        train(model, TOY, recipe, data=data, results_root=folder, progress=False, on_epoch_end=stop)
        raise CheckFailed("the run was not stopped after its first epoch")
    except _StopAfterFirstEpoch:
        pass
    epochs: list[int] = []
    resumed = train(model, TOY, recipe, data=data, results_root=folder, progress=False,
                    on_epoch_end=lambda entry: epochs.append(entry["epoch"]))
    later = list(range(2, recipe.epochs + 1))
    expect(epochs == later, f"the resumed run trained epochs {epochs}; expected {later} (epoch 1 from its checkpoint)")
    losses = [[entry["train_loss"] for entry in run.history] for run in (straight, resumed)]
    if cuda:
        expect(all(math.isclose(a, b, rel_tol=0.05) for a, b in zip(*losses)),
               f"losses {losses[1]} resumed against {losses[0]}: more than 5% apart")
        expect(abs(resumed.final_test_acc - straight.final_test_acc) <= 100 * 3 / len(data.test_labels),
               f"accuracy {resumed.final_test_acc}% resumed against {straight.final_test_acc}%")
    else:
        expect(losses[0] == losses[1] and resumed.final_test_acc == straight.final_test_acc,
               f"losses {losses[1]} resumed against {losses[0]}: not bit for bit on the CPU")
    return {"comparison": "within tolerance" if cuda else "bit for bit", "straight_losses": losses[0],
            "resumed_losses": losses[1], "straight_test_acc": straight.final_test_acc,
            "resumed_test_acc": resumed.final_test_acc}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_one_process_group(ctx: Context) -> dict:
    """One process joins a process group (NCCL on CUDA, gloo on the CPU), sends a host value over the gloo control
    group beside it, and branch parallelism gives the single-process logits."""
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    with environment(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())):
        rank, world, device = init_process_group(backend)
        try:
            expect((rank, world, device.type, dist.get_backend()) == (0, 1, ctx.device.type, backend),
                   f"joined as {(rank, world, device.type, dist.get_backend())}")
            flag = torch.tensor([1])  # a host value: over gloo, which NCCL (device memory only) cannot carry
            dist.broadcast(flag, src=0, group=control_group())
            expect(dist.get_backend(control_group()) == "gloo" and flag.tolist() == [1],
                   f"the control group is {dist.get_backend(control_group())}, the value came as {flag.tolist()}")
            torch.manual_seed(0)
            # in eval mode: in training mode BranchParallel draws its dropout masks from streams of its own (so that
            # ranks agree), which the plain model's forward does not, so the model's dropout would tell them apart
            config = ctx.sizes.model
            model = ParaFormer(config).to(device).eval()
            x = torch.randn(6, config.in_channels, config.image_size, config.image_size, device=device)
            torch.testing.assert_close(BranchParallel(model).eval()(x), model(x))
            return {"backend": backend, "control_backend": dist.get_backend(control_group())}
        finally:
            dist.destroy_process_group()


# --- the estimate, the throughput, the training matrix ----------------------------------------------------------

def check_estimate(ctx: Context) -> dict:
    """The model FLOP rate the estimate measures on this device, and the gpu profile's minutes at it (quick: its
    first notebook alone, whose FLOPs are counted in seconds; 08's MGRIT counts take minutes on a small CPU)."""
    # a CPU times batches of 2 with --quick: a step of 64 images of the gpu profile's ViT takes seconds there
    batch = 2 if ctx.quick and ctx.device.type == "cpu" else None
    rate = measure_flops_per_second("gpu", ctx.device, batch_size=batch, repeats=2 if ctx.quick else 5)
    notebooks = profile_notebooks("gpu")[:1] if ctx.quick else profile_notebooks("gpu")
    suite = estimate_suite("gpu", flops_per_second=rate, notebooks=notebooks)
    table = suite.table
    minutes, pflop = float(table.iloc[-1]["minutes"]), float(table.iloc[-1]["pflop"])
    every = len(notebooks) == len(profile_notebooks("gpu"))
    return {"flops_per_second": float(rate), "rate": rate.describe(), "notebooks": notebooks,
            "every_notebook": every, "estimated_minutes": minutes, "pflop": pflop,
            # what the intended minutes ask of a device, from any machine: the FLOPs alone (augmentation on top)
            "flops_per_second_for_intended": pflop * 1e15 / (INTENDED_GPU_MINUTES * 60),
            "minutes_per_notebook": {row.notebook: float(row.minutes) for row in table.iloc[:-1].itertuples()},
            "intended_minutes": INTENDED_GPU_MINUTES,
            # the comparison the gpu profile was sized for: all notebooks, on a GPU
            "ratio_to_intended": minutes / INTENDED_GPU_MINUTES if every and ctx.device.type == "cuda" else None,
            "summary": suite.summary()}


def throughput_settings(ctx: Context):
    """The profiles' throughput settings: on CUDA the gpu profile's (quick: ViT-6 at batch 512, fewer rounds), on the
    CPU quick's (quick: ci's tiny ones)."""
    if ctx.device.type == "cuda":
        settings = get_profile("gpu").throughput
        if ctx.quick:
            settings = replace(settings, models=("6-6",), batches=(512,), repeats=10, warmup=3)
        return settings
    return get_profile("ci" if ctx.quick else "quick").throughput


def our_step_alone(settings: throughput.ThroughputSettings, device: torch.device) -> pd.DataFrame:
    """`throughput.measure`'s figures of our side alone, for a machine without timm: per model and batch the median
    step time, the FLOP rate and the MFU against the matrix-product peak measured in the same run, with the same
    step, FLOP count and peak as `make throughput`."""
    rows = []
    with benchmark_matmul(device) as fp32_matmul:
        peak = throughput.matmul_peak(device, settings.matmul_size)
        for name in settings.models:
            config = settings.config(name)
            torch.manual_seed(0)
            model = ParaFormer(config).to(device)
            for batch in settings.batches:
                images = torch.randn(batch, config.in_channels, config.image_size, config.image_size, device=device)
                labels = torch.randint(0, config.num_classes, (batch,), device=device)
                flops = throughput.step_flops_per_image(model, images, labels)
                step = throughput.benchmark_step(model, images, labels)
                seconds = median_seconds({"our": step}, settings.repeats, settings.warmup, device)["our"]
                rate = flops * batch / seconds
                rows.append({"model": config.name, "batch": batch, "our_step_ms": 1e3 * seconds,
                             "our_images_per_s": batch / seconds, "our_gflops_per_image": flops / 1e9,
                             "our_tflops_per_s": rate / 1e12, "our_mfu": rate / peak})
            del model, step  # the optimizer and its state
    return pd.DataFrame(rows).assign(matmul_peak_tflops_per_s=peak / 1e12, precision=precision(device),
                                     matmul_precision=fp32_matmul)


def check_throughput(ctx: Context) -> dict:
    """`make throughput` on this device with a small profile: ours against timm's ViT of the same shape; without
    timm, our step alone (`our_step_alone`)."""
    settings = throughput_settings(ctx)
    steady_allocator()  # as make throughput does: freed memory stays in the process, for steadier times
    try:
        throughput.require_timm()
    except ConfigError:
        table = our_step_alone(settings, ctx.device)
        figures = {"peer": None, "peer_missing": "timm is not installed: our step alone"}
    else:
        table = throughput.measure(settings, ctx.device, progress=False)
        target = throughput.speed_target(table)
        figures = {"peer": f"timm {table.iloc[0]['timm_version']}", "target": target["target"],
                   "target_met": target["met"], "worst_ratio": target["worst_ratio"]}
    columns = [c for c in throughput.MARKDOWN_COLUMNS + ["matmul_peak_tflops_per_s", "precision", "matmul_precision"]
               if c in table]
    return {**figures, "settings": settings.name, "rows": table[columns].to_dict("records")}


def check_training_run(model: ModelConfig, recipe: Recipe) -> Callable[[Context], dict]:
    """One short run of `recipe` on toy images on the device; compiled, it must have compiled (graphs, no eager
    fallback, no graph break), and its recompiles are recorded."""
    def check(ctx: Context) -> dict:
        result = train(model, TOY, replace(recipe, device=ctx.device.type), data=ctx.data(),
                       results_root=ctx.folder("train"), progress=False)
        losses = [entry["train_loss"] for entry in result.history]
        expect(all(math.isfinite(loss) for loss in losses), f"training losses {losses}")
        if recipe.compile:
            summary = result.compiled or {}
            expect(summary.get("graphs", 0) > 0, f"compile=True but nothing was compiled: {summary}")
            expect(summary.get("eager_fallbacks", 1) == 0 and summary.get("graph_breaks", 1) == 0,
                   f"compiled with eager fallbacks or graph breaks: {summary}")
        return {"model": model.name, "method": recipe.method, "solver": recipe.solver, "compile": recipe.compile,
                **run_figures(result)}
    return check


# --- steps ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One answer: `run(context)` returns its figures and raises where a claim fails."""

    name: str
    group: str
    run: Callable[[Context], dict] | None
    cuda_only: bool = False
    skip: str = ""  # a reason known before anything runs (one of the reasons above); "" = run it
    detail: str = ""  # what the reason leaves out, in words
    test: str = ""  # the test of tests/test_cuda.py this step re-expresses


@dataclass
class StepResult:
    name: str
    group: str
    status: str  # one of STATUSES
    seconds: float = 0.0
    reason: str = ""  # why skipped (one of the reasons above)
    detail: str = ""
    figures: dict = field(default_factory=dict)
    error: str = ""  # one line: the exception's type and first line
    traceback: str = ""
    warnings: list[str] = field(default_factory=list)  # distinct warnings the step raised (at most 5)
    test: str = ""


def _cuda_test(function: Callable[[Context], dict], test: str, cuda_only: bool = False) -> Step:
    name = "cuda/" + function.__name__.removeprefix("check_").replace("_", "-")
    return Step(name, "cuda-tests", function, cuda_only=cuda_only, test=f"{CUDA_TESTS}::{test}")


def training_steps(sizes: RunSizes) -> list[Step]:
    """Every method with backprop and every other one-process solver, eager and compiled; what a Recipe refuses
    (MGRIT is not compiled) and the schemes of several processes, recorded as skipped with the reason."""
    steps = []
    for solver in SOLVERS:
        mgrit = solver == "mgrit"
        # MGRIT trains a ViT, which has no branches for a progressive method: joint alone (Recipe refuses the rest)
        for method in ("joint",) if mgrit else METHODS:
            for compiled in (False, True):
                name = f"train/{method}/{solver}/{'compiled' if compiled else 'eager'}"
                try:
                    recipe = replace(sizes.recipe, epochs=sizes.matrix_epochs, method=method, solver=solver,
                                     compile=compiled, **(dict(mgrit_coarsening=2, augment=()) if mgrit else {}))
                except ConfigError as error:  # MGRIT compiled: its solver is not traceable
                    steps.append(Step(name, "training", None, skip=REFUSED, detail=str(error)))
                    continue
                steps.append(Step(name, "training", check_training_run(sizes.vit if mgrit else sizes.model, recipe)))
    for scheme in PARALLELISMS:
        if scheme != "none":
            steps.append(Step(f"train/parallel-{scheme}", "training", None, skip=SEVERAL_PROCESSES,
                              detail="torchrun with one process per GPU (make bench NPROC=..., docs/parallel.md)"))
    return steps


def plan(quick: bool) -> list[Step]:
    """Every step, in the order they run: the CUDA tests' checks, the estimate, the throughput, the training runs."""
    cuda = [
        _cuda_test(check_augment_on_device,
                   "test_flip_and_crop_on_the_gpu_give_the_cpus_pixels_and_draw_there_without_waiting", True),
        _cuda_test(check_precision_and_optimizer,
                   "test_a_cuda_run_uses_bf16_autocast_and_fused_adamw_and_records_both"),
        _cuda_test(check_data_on_device_without_waiting,
                   "test_the_data_live_on_the_gpu_and_an_epoch_does_not_wait_for_it_at_every_step", True),
        _cuda_test(check_compiled_learns_like_eager, "test_a_compiled_cuda_run_learns_like_an_eager_one"),
        _cuda_test(check_resume,
                   "test_a_resumed_cuda_run_follows_an_uninterrupted_one_within_tolerance_not_bit_for_bit"),
        _cuda_test(check_one_process_group,
                   "test_one_nccl_process_gives_the_single_process_logits_and_sends_host_values_beside_nccl"),
    ]
    return [*cuda, Step("estimate/gpu-profile", "estimate", check_estimate),
            Step("throughput", "throughput", check_throughput),
            *training_steps(QUICK_SIZES if quick else FULL_SIZES)]


# --- running and recording --------------------------------------------------------------------------------------

def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def plain(value):
    """`value` as JSON can hold it: numpy and pandas scalars as numbers, NaN as None, tuples and paths as lists and
    strings."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy, pandas and torch scalars
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def run_step(step: Step, ctx: Context) -> StepResult:
    """Run one step, catching and recording any failure; the device's memory is handed back afterwards."""
    result = StepResult(step.name, step.group, "ok", detail=step.detail, test=step.test)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            result.figures = plain(step.run(ctx) or {})
        except Exception as error:  # noqa: BLE001 (a failing step is data: the others go on)
            result.status, result.error, result.traceback = "failed", _one_line(error), traceback.format_exc()
    result.seconds = time.perf_counter() - started
    result.warnings = list(dict.fromkeys(f"{w.category.__name__}: {str(w.message).splitlines()[0]}"
                                         for w in caught if str(w.message).strip()))[:5]
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run_steps(steps: list[Step], ctx: Context, budget: float, on_result: Callable[[StepResult], None] = lambda r: None,
              clock: Callable[[], float] = time.perf_counter, cuda_missing: bool = False) -> list[StepResult]:
    """Every step in order; skipped where its reason is known, where it needs CUDA that is not there, or once
    `budget` seconds have passed since the first. `on_result` sees each result as it comes."""
    started, results = clock(), []
    for step in steps:
        if step.skip:
            result = StepResult(step.name, step.group, "skipped", reason=step.skip, detail=step.detail, test=step.test)
        elif (step.cuda_only and ctx.device.type != "cuda") or cuda_missing:
            result = StepResult(step.name, step.group, "skipped", reason=NO_CUDA, test=step.test)
        elif clock() - started > budget:
            result = StepResult(step.name, step.group, "skipped", reason=TIME_BUDGET, test=step.test,
                                detail=f"{budget:g} s had passed")
        else:
            result = run_step(step, ctx)
        results.append(result)
        on_result(result)
    return results


def environment_record(device: torch.device) -> dict:
    """The machine and the software, for the report's head."""
    usable = device.type != "cuda" or torch.cuda.is_available()
    record = {"device": device.type, "device_name": device_name(device) if usable else "CUDA not available",
              "torch_version": torch.__version__, "torch_cuda_build": torch.version.cuda,
              "cuda_available": torch.cuda.is_available(),
              "cuda_unavailable_reason": cuda_unavailable_reason(), "code_version": code_version(),
              # the training code's own digest: it names the code where a copied tree has no git history
              "code_digest": code_digest(),
              "python": platform.python_version(), "platform": platform.platform(), "host": socket.gethostname(),
              "cpu_threads": torch.get_num_threads()}
    for package in ("numpy", "pandas", "timm", "torchvision", "triton", "papermill"):  # read, not imported
        try:
            record[f"{package}_version"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            record[f"{package}_version"] = None
    if device.type == "cuda" and torch.cuda.is_available():
        try:  # a GPU in a bad state must not cost the steps their record
            props = torch.cuda.get_device_properties(device)
            record |= {"cuda_capability": f"{props.major}.{props.minor}",
                       "gpu_memory_gib": props.total_memory / 2**30, "multiprocessors": props.multi_processor_count,
                       "cudnn_version": torch.backends.cudnn.version()}
        except Exception as error:  # noqa: BLE001
            record["cuda_properties_error"] = _one_line(error)
    return record


def report(settings: CheckSettings, env: dict, results: list[StepResult], seconds: float, finished: bool,
           running: str = "") -> dict:
    counts = {status: sum(r.status == status for r in results) for status in STATUSES}
    return {"tool": "paraformer.tools.gpu_check", "settings": plain({**asdict(settings), "out": str(settings.folder)}),
            **env, "finished": finished, "running": running, "seconds": seconds, "counts": counts,
            "ok": counts["failed"] == 0, "steps": [asdict(r) for r in results]}


def _cell(text) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _brief(result: dict) -> str:
    """A step's main figures in a few words, for the summary's table."""
    if result["status"] == "skipped":
        return result["reason"] + (f": {result['detail']}" if result["detail"] else "")
    if result["status"] == "failed":
        return result["error"]
    figures = result["figures"]
    try:
        return _main_figures(figures)
    except (KeyError, TypeError, ValueError):  # figures of another shape: the summary must be written all the same
        return _all_figures(figures)


def _all_figures(f: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in f.items()
                     if not isinstance(v, (list, dict)))


def _main_figures(f: dict) -> str:
    if "estimated_minutes" in f:
        return (f"{f['flops_per_second'] / 1e12:.3g} TFLOP/s; gpu profile {f['estimated_minutes']:.3g} min"
                + ("" if f["every_notebook"] else f" ({', '.join(f['notebooks'])} only)")
                + f" (intended {f['intended_minutes']:g}, which takes "
                  f"{f['flops_per_second_for_intended'] / 1e12:.3g} TFLOP/s)")
    if "rows" in f:
        return "; ".join(f"{r['model']} b{r['batch']}: {r['our_images_per_s']:.0f} img/s, MFU {r['our_mfu']:.0%}"
                         + (f", {r['ratio']:.2f}x timm" if "ratio" in r else "") for r in f["rows"])
    if "final_test_acc" in f:
        text = f"acc {f['final_test_acc']:.1f}%, {f['wall_seconds']:.1f} s, {f['precision']}"
        if "compiled" in f:
            c = f["compiled"]
            text += f"; {c['graphs']} graphs, {c['recompiles']} recompiles, {c['eager_fallbacks']} eager fallbacks"
        return text
    return _all_figures(f)


def markdown(data: dict) -> str:
    counts = data["counts"]
    lines = ["# make gpu-check", "",
             f"{data['device_name']}, torch {data['torch_version']} (CUDA build {data['torch_cuda_build']}), code "
             f"{data['code_version']} (training code {data['code_digest']}), "
             f"{'quick' if data['settings']['quick'] else 'full'} settings, "
             f"{data['seconds']:.0f} s of a {data['settings']['time_budget']:g} s budget"
             + ("" if data["finished"] else f"; UNFINISHED (running: {data['running'] or 'none'})") + ".", "",
             f"**{'ok' if data['ok'] else 'FAILED'}**: {counts['ok']} ok, {counts['failed']} failed, "
             f"{counts['skipped']} skipped.", "",
             "| step | status | seconds | figures, reason or error |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']:.1f} | {_cell(_brief(r))} |" for r in data["steps"]]
    estimate = next((r for r in data["steps"] if r["name"] == "estimate/gpu-profile" and r["status"] == "ok"), None)
    if estimate is not None:
        lines += ["", f"Estimate: {estimate['figures']['summary']}"]
    lines += ["", "The data: gpu-check.json beside this file (figures, errors with tracebacks, warnings)."]
    return "\n".join(lines) + "\n"


def write(data: dict, folder: Path) -> tuple[Path, Path]:
    return (atomic_write_json(data, folder / "gpu-check.json"),
            atomic_write_text(markdown(data), folder / "gpu-check.md"))


def progress_line(index: int, total: int, result: StepResult) -> str:
    tail = {"ok": "", "failed": f": {result.error}", "skipped": f": {result.reason}"}[result.status]
    return f"gpu-check {index}/{total} {result.name}: {result.status} ({result.seconds:.1f} s){tail}"


def run_check(settings: CheckSettings, steps: list[Step] | None = None, stream=None) -> dict:
    """Run every step (`plan` unless given) under `settings`, writing the JSON and the summary after each; returns
    the final report. Progress goes to `stream` (sys.stderr as it is at the call)."""
    stream = stream if stream is not None else sys.stderr
    device = torch.device(settings.device)
    cuda_missing = device.type == "cuda" and not torch.cuda.is_available()
    steps = plan(settings.quick) if steps is None else steps
    folder = settings.folder
    remove_orphan_temporaries(folder)
    env = environment_record(device)
    started = time.perf_counter()
    results: list[StepResult] = []
    if cuda_missing:
        print(f"gpu-check: CUDA is not available here ({env['cuda_unavailable_reason'] or 'torch says no'}); every "
              "step is recorded as skipped (on a machine without a GPU: --device cpu, or make gpu-check DEVICE=cpu)",
              file=stream, flush=True)

    def record(result: StepResult | None) -> None:
        """Write what is known so far (before the first step too), so that a killed run leaves it."""
        if result is not None:
            results.append(result)
            print(progress_line(len(results), len(steps), result), file=stream, flush=True)
        upcoming = steps[len(results)].name if len(results) < len(steps) else ""
        write(report(settings, env, results, time.perf_counter() - started, False, upcoming), folder)

    record(None)  # the first write: an unwritable folder stops the check here, before any step
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        ctx = Context(device, settings, Path(scratch))
        run_steps(steps, ctx, settings.time_budget, record, cuda_missing=cuda_missing)
    data = report(settings, env, results, time.perf_counter() - started, True)
    if cuda_missing:  # asked for CUDA and found none: not a pass
        data["ok"] = False
    write(data, folder)
    return data


def _positive_seconds(text: str) -> float:
    value = float(text)  # argparse reports its ValueError, and the one below, as an invalid value
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a positive number of seconds")
    return value


def main(argv: list[str] | None = None, steps: list[Step] | None = None) -> int:
    """The command line; `steps` replaces the plan (the tests inject failing and slow steps)."""
    parser = OneLineArgumentParser(prog="python -m paraformer.tools.gpu_check",
                                   description="Everything a lent GPU has to answer, in one command: the CUDA tests' "
                                               "checks, the estimate's FLOP rate and the gpu profile's minutes, the "
                                               "throughput against timm, and a short run of every training method "
                                               "and solver, compiled and not. Writes gpu-check.json and gpu-check.md.")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda (default) or cpu: the same checks, the CUDA-only ones skipped")
    parser.add_argument("--out", type=Path, help="folder of gpu-check.json and gpu-check.md (default: "
                                                 "results/gpu-check, results/gpu-check/cpu with --device cpu)")
    parser.add_argument("--quick", action="store_true", help="small settings: tiny models, one epoch, few rounds, "
                                                             "the first notebook's estimate alone")
    parser.add_argument("--time-budget", type=_positive_seconds, default=CheckSettings.time_budget, metavar="SECONDS",
                        help="after this many seconds the remaining steps are recorded as skipped (default 240)")
    args = parser.parse_args(argv)
    settings = CheckSettings(args.device, args.out, args.quick, args.time_budget)
    try:
        data = run_check(settings, steps)
    except ResultsWriteError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    counts = data["counts"]
    print(f"gpu-check: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in "
          f"{data['seconds']:.0f} s; wrote {settings.folder / 'gpu-check.json'} and gpu-check.md", file=sys.stderr)
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
