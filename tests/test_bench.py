"""What the benchmark harness measures again, the errors it gives, and the one timing loop every benchmark uses
(its timings are benchmarks, not tests)."""

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from paraformer.bench import branch_processes, multi, speed as bench
from paraformer.core.config import ConfigError
from paraformer.core.provenance import device_name
from paraformer.core.timing import median_seconds
from paraformer.experiments.profiles import get_profile
from paraformer.tools import bench as bench_tool

HERE = device_name(torch.device("cpu"))
ROOT = Path(__file__).resolve().parents[1]


def csvs(device):
    names = ["strategies", "layers", "branch_processes"] + [f"multi_{k}_{p}" for k in ("steps", "costs")
                                                             for p in (1, 2)]
    return {name: pd.DataFrame({"device": [device]}) for name in names}


def test_nothing_is_measured_again_when_every_csv_comes_from_this_kind_of_device():
    assert bench.to_measure(csvs(HERE), device=torch.device("cpu")) == []
    # the thread count is not the device: the multi-process runs use one thread per process
    assert bench.to_measure(csvs(HERE.split(",")[0] + ", 1 thread(s)"), device=torch.device("cpu")) == []


def test_missing_csvs_and_csvs_from_another_device_are_measured_here():
    data = csvs("NVIDIA H100 80GB HBM3")
    assert bench.to_measure(data, device=torch.device("cpu")) == ["strategies", "layers", "multi", "branch_processes"]
    data = csvs(HERE)
    del data["multi_costs_2"]
    assert bench.to_measure(data, device=torch.device("cpu")) == ["multi"]
    assert bench.to_measure(csvs(HERE), processes=(1, 2, 4), device=torch.device("cpu")) == ["multi"]
    del data["branch_processes"]
    assert bench.to_measure(data, device=torch.device("cpu")) == ["multi", "branch_processes"]


QUICK = get_profile("quick")
QUICK_DIGESTS = bench.expected_digests(QUICK.bench, QUICK.multi, bench.default_claims(QUICK.multi))


def stamped(data: dict[str, pd.DataFrame], digests: dict[str, str]) -> dict[str, pd.DataFrame]:
    """`data` as the benchmarks write it: each CSV with the digest of the settings it was timed at."""
    return {name: df.assign(settings_digest=digests["multi" if name.startswith("multi") else name])
            for name, df in data.items()}


def test_csvs_timed_at_other_settings_or_not_saying_theirs_are_measured_again():
    cpu, claims = torch.device("cpu"), bench.default_claims(QUICK.multi)
    data = stamped(csvs(HERE), QUICK_DIGESTS)
    assert bench.to_measure(data, device=cpu, digests=QUICK_DIGESTS) == []
    # fewer repeats make every benchmark another one: BenchSettings shapes them all
    fewer = bench.expected_digests(replace(QUICK.bench, repeats=QUICK.bench.repeats - 1), QUICK.multi, claims)
    assert bench.to_measure(data, device=cpu, digests=fewer) == ["strategies", "layers", "multi", "branch_processes"]
    longer = bench.expected_digests(QUICK.bench, replace(QUICK.multi, steps=QUICK.multi.steps + 1), claims)
    assert bench.to_measure(data, device=cpu, digests=longer) == ["multi"]
    rounds = bench.expected_digests(QUICK.bench, QUICK.multi, replace(claims, repeats=claims.repeats + 1))
    assert bench.to_measure(data, device=cpu, digests=rounds) == ["branch_processes"]
    # other process counts are not other settings: each count has its own CSV
    assert bench.expected_digests(QUICK.bench, replace(QUICK.multi, processes=(1, 2, 4)), claims) == QUICK_DIGESTS
    data["layers"] = data["layers"].drop(columns="settings_digest")  # written before CSVs said their settings
    assert bench.to_measure(data, device=cpu, digests=QUICK_DIGESTS) == ["layers"]
    assert bench.to_measure(data, device=cpu) == []  # without digests: the device alone


def test_the_benchmark_workers_stamp_the_digest_the_notebook_expects(monkeypatch):
    sent = {}

    def run(command, env):  # what the worker would be given, instead of starting it
        module = command[command.index("-m", 3) + 1]
        sent[module] = command[command.index("--settings"):]
        return SimpleNamespace(returncode=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(bench.subprocess, "run", run)
    bench.bench_multi(QUICK.bench, QUICK.multi, (2,))
    bench.bench_branch_processes(QUICK.bench, bench.default_claims(QUICK.multi))
    for benchmark, worker in (("multi", multi), ("branch_processes", branch_processes)):
        _, parsed = bench.worker_settings(benchmark, "", worker.WORKER_SETTINGS, sent[worker.__name__])
        assert bench.settings_digest(*parsed) == QUICK_DIGESTS[benchmark]


def test_the_committed_quick_benchmarks_say_they_were_timed_at_quicks_settings():
    # else a changed quick setting would leave notebook 06 reading CSVs timed at the old one
    data = {name: df for name, df in bench.load("quick", ROOT / "results").items() if name != "throughput"}
    assert sorted(data) == sorted(["strategies", "layers", "branch_processes"]
                                  + [f"multi_{kind}_{p}" for kind in ("steps", "costs") for p in (1, 2)])
    for name, df in data.items():
        assert set(df["settings_digest"]) == {QUICK_DIGESTS["multi" if name.startswith("multi") else name]}, name


def test_unknown_profiles_and_benchmarks_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown profile 'fast'; choose one of"):
        get_profile("fast")
    with pytest.raises(ConfigError, match=r"unknown benchmark\(s\) \['speed'\]"):
        bench.run(get_profile("ci").bench, get_profile("ci").multi, only=("speed",))


def test_the_timing_loop_times_every_call_every_round_in_a_rotating_order():
    calls = []
    medians = median_seconds({name: (lambda n=name: calls.append(n)) for name in "abc"}, repeats=3, warmup=1,
                             device=torch.device("cpu"))
    assert sorted(medians) == ["a", "b", "c"]
    assert calls == list("abc") + list("bca") + list("cab") + list("abc")  # warm-up round, then three timed


def test_the_timing_loop_keeps_the_median_of_each_call():
    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # perf_counter before and after each of three timed calls

    def fake_timed(call, device):
        call()
        return -next(clock) + next(clock)

    import paraformer.core.timing as timing
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(timing, "timed", fake_timed)
        assert median_seconds({"a": lambda: None}, repeats=3, warmup=0, device=torch.device("cpu")) == {"a": 2.0}


# --- process counts: what the machine has --------------------------------------------------------------------------

def one_gpu(monkeypatch) -> None:
    """A machine with one GPU, as far as the benchmarks can tell (nothing here touches CUDA itself)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(bench, "device_name", lambda device: f"test {device.type}")


def fake_torchrun(monkeypatch) -> list[int]:
    """The process counts the multi-process benchmark is launched at, instead of launching it."""
    launched = []

    def run(command, env):
        launched.append(int(next(arg for arg in command if arg.startswith("--nproc_per_node=")).split("=")[1]))
        return SimpleNamespace(returncode=0)
    monkeypatch.setattr(bench.subprocess, "run", run)
    return launched


def test_on_one_gpu_the_gpu_benchmark_runs_one_process_and_reports_two_as_not_measured(monkeypatch, tmp_path):
    one_gpu(monkeypatch)
    launched = fake_torchrun(monkeypatch)
    gpu = get_profile("gpu")
    for processes in ((1, 2), None):  # both asked for (make bench's NPROC), and the profile's counts
        counts = bench.bench_multi(gpu.bench, gpu.multi, processes, root=tmp_path)
        assert (counts.measured, counts.not_measured, counts.devices, counts.unit) == ((1,), (2,), 1, "GPU")
        assert (counts.status(1), counts.status(2)) == ("measured", "not measured here (1 GPU)")
    assert launched == [1, 1]
    # make bench PROFILE=gpu, through the command line
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    assert bench_tool.main(["--profile", "gpu", "--only", "multi"]) == 0 and launched == [1, 1, 1]


def test_the_default_counts_are_one_and_two_as_far_as_the_cpu_has_cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cores, measured in ((2, (1, 2)), (8, (1, 2)), (1, (1,))):
        monkeypatch.setattr(bench.os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        for name in ("ci", "quick"):  # the committed quick benchmarks: 1 and 2 processes on a 2-core CPU
            counts = bench.process_counts(get_profile(name).multi)
            assert counts.measured == measured and counts.not_measured == (1, 2)[len(measured):]
    assert counts.status(2) == "not measured here (1 CPU core)"


def test_benchmarks_on_cuda_take_fp32_products_in_tf32_and_every_row_records_the_precision(monkeypatch, tmp_path):
    seen = []

    def strategies(settings, device, progress=True):  # what the benchmark's products ran in
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return pd.DataFrame({"seconds": [1.0]})
    monkeypatch.setattr(bench, "bench_strategies", strategies)
    monkeypatch.setattr(bench, "device_name", lambda device: f"test {device.type}")
    ci, before = get_profile("ci"), torch.backends.cuda.matmul.allow_tf32
    for device, recorded in ((torch.device("cuda"), "tf32"), (torch.device("cpu"), "fp32")):
        bench.run(ci.bench, ci.multi, only=("strategies",), device=device, root=tmp_path)
        assert set(bench.load("ci", tmp_path)["strategies"]["matmul_precision"]) == {recorded}
    assert seen == [True, before]  # on the CPU, as it was
    assert torch.backends.cuda.matmul.allow_tf32 == before  # and given back after the CUDA benchmarks


# --- one branch per process: the 2024 claims' benchmark ----------------------------------------------------------

def test_on_one_gpu_the_one_branch_per_process_benchmark_is_not_launched_and_the_machine_is_recorded(monkeypatch,
                                                                                                    tmp_path):
    one_gpu(monkeypatch)
    machine = bench.with_not_measured({}, bench.process_counts(get_profile("ci").multi))[bench.MACHINE]
    # recorded too where every count asked for was measured: the 2024 claims still need to know the devices
    assert bench.MACHINE in bench.with_not_measured({}, bench.process_counts(None, (1,)))
    launched = fake_torchrun(monkeypatch)  # after code_version's git, which runs through subprocess.run too
    counts = bench.bench_branch_processes(get_profile("ci").bench, root=tmp_path)
    assert launched == [] and counts.not_measured == (branch_processes.PROCESSES,)
    assert (int(machine["devices"].iloc[0]), machine["unit"].iloc[0], machine["device_type"].iloc[0]) == \
        (1, "GPU", "cuda")


def test_the_one_branch_per_process_settings_refuse_too_few_rounds_for_an_interval():
    with pytest.raises(ConfigError, match="repeats=5"):
        branch_processes.BranchProcessSettings(repeats=5)
    with pytest.raises(ConfigError, match="warmup=0"):
        branch_processes.BranchProcessSettings(warmup=0)


@pytest.mark.skipif(len(getattr(bench.os, "sched_getaffinity", lambda pid: {0})(0)) < 2 or torch.cuda.is_available(),
                    reason="needs two CPU cores (one process pinned to each)")
def test_two_pinned_processes_time_every_call_in_every_round(tmp_path):
    ci = get_profile("ci")
    settings = branch_processes.BranchProcessSettings(train_batch=4, repeats=6, warmup=1)
    bench.run(ci.bench, ci.multi, only=("branch_processes",), root=tmp_path, claims=settings)
    rounds = bench.load("ci", tmp_path)[branch_processes.NAME]
    calls = {(mode, call) for mode, call in zip(rounds["mode"], rounds["call"])}
    (alone, shared), (serial, branched) = branch_processes.GROWTH, branch_processes.N_OVER_M
    names = {branch_processes.call_name(model, p) for model, p in ((alone, 1), (shared, 1), (shared, 2),
                                                                   (serial, 1), (branched, 1), (branched, 2))}
    assert calls == {(mode, name) for mode in ("inference", "train") for name in names}
    assert rounds.groupby(["mode", "call"]).size().eq(6).all()  # every round kept, not a median
    assert set(rounds["cores"]) == {" ".join(str(c) for c in sorted(bench.os.sched_getaffinity(0))[:2])}
    assert set(rounds["devices"]) == {len(bench.os.sched_getaffinity(0))}
    assert set(rounds.loc[rounds["mode"] == "train", "batch"]) == {4}
    assert (rounds["seconds"] > 0).all()
    assert set(rounds["settings_digest"]) == {bench.expected_digests(ci.bench, ci.multi, settings)["branch_processes"]}
