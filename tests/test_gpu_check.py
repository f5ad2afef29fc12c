"""`make gpu-check` (paraformer.tools.gpu_check) on the CPU: one run with --quick, in a process that cannot import
pytest or papermill (the lent GPU has neither), answers every step as data: each present once with an allowed
status, the CUDA-only ones skipped for want of CUDA, none failed, the compiled runs compiled. A step that raises is
recorded as failed and the others still run; past the time budget the remaining steps are skipped; bad arguments
get one line."""

import ast
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from paraformer.core.config import METHODS, PARALLELISMS, ConfigError
from paraformer.tools import gpu_check
from paraformer.tools.gpu_check import CheckSettings, Context, Step, check_throughput, main, plan, run_check, run_steps

ROOT = Path(__file__).resolve().parents[1]
# sys.modules entries of None make `import pytest` and `import papermill` fail, as on the lent GPU
WITHOUT_PYTEST = ("import runpy, sys; sys.modules.update(pytest=None, papermill=None); "
                  "runpy.run_module('paraformer.tools.gpu_check', run_name='__main__')")


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One `--device cpu --quick` run (about 40 s on 2 cores): its process, its JSON, and its folder."""
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "lib"), os.environ.get("PYTHONPATH")])),
           "PARAFORMER_RESULTS": str(out / "results")}
    # a generous budget: on a busy machine no step may be skipped for time here
    done = subprocess.run([sys.executable, "-c", WITHOUT_PYTEST, "--device", "cpu", "--quick", "--out", str(out),
                           "--time-budget", "900"], capture_output=True, text=True, env=env, timeout=900)
    assert (out / "gpu-check.json").is_file(), done.stderr[-3000:]
    return done, json.loads((out / "gpu-check.json").read_text()), out


def steps_of(data: dict) -> dict[str, dict]:
    return {step["name"]: step for step in data["steps"]}


def test_the_cpu_run_passes_and_writes_the_json_and_the_summary_with_a_line_per_step(cpu_run):
    done, data, out = cpu_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert data["finished"] and data["ok"] and data["device"] == "cpu" and data["torch_version"] == torch.__version__
    assert data["code_version"] and data["device_name"] and data["settings"]["quick"] is True
    progress = [line for line in done.stderr.splitlines() if line.startswith("gpu-check ")]
    assert [line.split()[2].rstrip(":") for line in progress] == [s["name"] for s in data["steps"]]
    summary = (out / "gpu-check.md").read_text()
    assert all(f"| {s['name']} | {s['status']} |" in summary for s in data["steps"])
    assert not list(out.glob(".*.tmp"))  # written atomically


def test_every_step_is_present_once_with_an_allowed_status(cpu_run):
    _, data, _ = cpu_run
    names = [s["name"] for s in data["steps"]]
    assert names == [step.name for step in plan(quick=True)] and len(set(names)) == len(names)
    expected = ({f"train/{m}/backprop/{kind}" for m in METHODS for kind in ("eager", "compiled")}
                | {"train/joint/mgrit/eager", "train/joint/mgrit/compiled", "estimate/gpu-profile", "throughput"}
                | {f"train/parallel-{p}" for p in PARALLELISMS if p != "none"})
    assert expected <= set(names)
    assert {s["status"] for s in data["steps"]} <= {"ok", "failed", "skipped"}
    assert all(isinstance(s["seconds"], float) and s["seconds"] >= 0 for s in data["steps"])


def test_every_cuda_test_has_its_check():
    tree = ast.parse((ROOT / "tests" / "test_cuda.py").read_text())
    tests = {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    checks = [step.test.split("::")[1] for step in plan(quick=True) if step.group == "cuda-tests"]
    assert sorted(checks) == sorted(tests)


def test_on_the_cpu_the_cuda_only_checks_are_skipped_for_want_of_cuda_and_the_others_run(cpu_run):
    _, data, _ = cpu_run
    recorded = steps_of(data)
    cuda_only = {step.name for step in plan(quick=True) if step.cuda_only}
    assert cuda_only == {"cuda/augment-on-device", "cuda/data-on-device-without-waiting"}
    for name in cuda_only:
        assert (recorded[name]["status"], recorded[name]["reason"]) == ("skipped", "no CUDA")
    others = [s for s in data["steps"] if s["group"] == "cuda-tests" and s["name"] not in cuda_only]
    assert others and all(s["status"] == "ok" for s in others)


def test_no_step_failed_on_the_cpu_and_every_compiled_run_compiled(cpu_run):
    _, data, _ = cpu_run
    assert not [(s["name"], s["error"]) for s in data["steps"] if s["status"] == "failed"]
    recorded = steps_of(data)
    compiled = [s for s in data["steps"] if s["name"].endswith("/compiled") and s["status"] != "skipped"]
    assert len(compiled) == len(METHODS)
    # where no C++ compiler is found torch cannot compile on the CPU: then those runs must say so, not pass
    can_compile = any(shutil.which(name) for name in (os.environ.get("CXX", "g++"), "g++", "clang++", "c++"))
    for step in compiled + [recorded["cuda/compiled-learns-like-eager"]]:
        if can_compile:
            assert step["status"] == "ok" and step["figures"]["compiled"]["graphs"] > 0, step
            assert step["figures"]["compiled"]["eager_fallbacks"] == 0
        else:
            assert step["status"] == "failed" and step["error"], step
    refused = recorded["train/joint/mgrit/compiled"]
    assert (refused["status"], refused["reason"]) == ("skipped", "refused by its config") and refused["detail"]


def test_the_figures_a_reader_needs_are_recorded(cpu_run):
    _, data, _ = cpu_run
    recorded = steps_of(data)
    estimate = recorded["estimate/gpu-profile"]["figures"]
    assert estimate["flops_per_second"] > 0 and estimate["estimated_minutes"] > 0
    assert estimate["intended_minutes"] == 20 and estimate["ratio_to_intended"] is None  # a CPU, one notebook
    assert estimate["flops_per_second_for_intended"] == pytest.approx(estimate["pflop"] * 1e15 / 1200)
    rows = recorded["throughput"]["figures"]["rows"]
    assert rows and all(row["our_images_per_s"] > 0 and row["our_mfu"] > 0 for row in rows)
    precision = recorded["cuda/precision-and-optimizer"]["figures"]
    assert precision["precision"] == "fp32" and precision["fused_adamw"] is False
    assert recorded["cuda/resume"]["figures"]["comparison"] == "bit for bit"
    assert recorded["cuda/one-process-group"]["figures"]["backend"] == "gloo"


def test_without_timm_the_throughput_is_our_step_alone_with_its_flop_rate_and_mfu(monkeypatch, tmp_path):
    def no_timm():
        raise ConfigError("the throughput benchmark needs timm")
    monkeypatch.setattr(gpu_check.throughput, "require_timm", no_timm)
    monkeypatch.setattr(gpu_check, "steady_allocator", lambda: False)  # leave this process's allocator alone
    figures = check_throughput(Context(torch.device("cpu"), CheckSettings("cpu", quick=True), tmp_path))
    assert figures["peer"] is None and "timm" in figures["peer_missing"]
    rows = figures["rows"]
    assert [row["model"] for row in rows] == ["Para-F-2-2", "Para-F-1-2"]  # the ci profile's, at --quick
    assert all(row["our_tflops_per_s"] > 0 and 0 < row["our_mfu"] and "timm_step_ms" not in row for row in rows)


def _fake(name: str, run=None, **fields) -> Step:
    return Step(name, "fake", run or (lambda ctx: {"answer": 1}), **fields)


def _raise(ctx):
    raise RuntimeError("the kernel broke\nsecond line")


def test_a_step_that_raises_is_recorded_as_failed_and_the_others_still_run(tmp_path, capsys):
    steps = [_fake("first"), _fake("broken", _raise), _fake("after")]
    assert main(["--device", "cpu", "--out", str(tmp_path)], steps=steps) == 1
    data = json.loads((tmp_path / "gpu-check.json").read_text())
    assert [(s["name"], s["status"]) for s in data["steps"]] == [("first", "ok"), ("broken", "failed"),
                                                                   ("after", "ok")]
    broken = steps_of(data)["broken"]
    assert broken["error"] == "RuntimeError: the kernel broke" and "second line" in broken["traceback"]
    assert steps_of(data)["after"]["figures"] == {"answer": 1}
    assert not data["ok"] and data["counts"] == {"ok": 2, "failed": 1, "skipped": 0}
    assert "broken: failed" in capsys.readouterr().err


def test_past_the_time_budget_the_remaining_steps_are_skipped(tmp_path):
    slow = _fake("slow", lambda ctx: time.sleep(0.3) or {})
    code = main(["--device", "cpu", "--out", str(tmp_path), "--time-budget", "0.2"],
                steps=[slow, _fake("later"), _fake("last")])
    data = json.loads((tmp_path / "gpu-check.json").read_text())
    assert [(s["name"], s["status"], s["reason"]) for s in data["steps"]] == [
        ("slow", "ok", ""), ("later", "skipped", "time budget"), ("last", "skipped", "time budget")]
    assert code == 0  # skipped is not failed


def test_the_budget_is_counted_from_the_first_step_on_the_clock_given():
    now = [0.0]

    def tick(ctx):
        now[0] += 5
        return {}
    ctx = Context(torch.device("cpu"), CheckSettings("cpu"), Path("."))
    results = run_steps([_fake("a", tick), _fake("b", tick), _fake("c", tick)], ctx, budget=7, clock=lambda: now[0])
    assert [r.status for r in results] == ["ok", "ok", "skipped"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_asked_for_cuda_without_it_every_step_is_skipped_and_the_check_fails(tmp_path):
    stream = io.StringIO()
    data = run_check(CheckSettings("cuda", tmp_path), [_fake("a"), _fake("b", cuda_only=True)], stream=stream)
    assert [(s["status"], s["reason"]) for s in data["steps"]] == [("skipped", "no CUDA")] * 2
    assert not data["ok"] and "CUDA is not available" in stream.getvalue()


def test_a_cpu_run_writes_beside_a_gpu_run_not_over_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    assert CheckSettings("cuda").folder == tmp_path / "gpu-check"
    assert CheckSettings("cpu").folder == tmp_path / "gpu-check" / "cpu"
    assert CheckSettings("cpu", tmp_path / "x").folder == tmp_path / "x"


@pytest.mark.parametrize("argv", [["--time-budget", "0"], ["--time-budget", "nan"], ["--device", "tpu"]])
def test_a_bad_argument_gets_one_line(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv, steps=[])
    err = capsys.readouterr().err
    assert raised.value.code == 2 and len(err.strip().splitlines()) == 1 and "error:" in err


def test_an_unwritable_folder_gets_one_line_before_any_step(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    ran = []
    assert main(["--device", "cpu", "--out", str(tmp_path / "file" / "below")],
                steps=[_fake("a", lambda ctx: ran.append(1) or {})]) == 2
    assert not ran and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_make_gpu_check_runs_the_module_on_the_device_asked_for():
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make here")
    dry = subprocess.run([make, "-n", "-s", "gpu-check", "DEVICE=cpu", "GPU_CHECK=--quick"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "-m paraformer.tools.gpu_check --device cpu --quick" in dry
    assert "--device cuda" in subprocess.run([make, "-n", "-s", "gpu-check"], cwd=ROOT, capture_output=True, text=True,
                                             check=True).stdout
    assert gpu_check.CheckSettings.device == "cuda"  # the command line's default, as the Makefile's
