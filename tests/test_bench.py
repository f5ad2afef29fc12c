"""What the benchmark harness measures again, and the errors it gives (its timings are benchmarks, not tests)."""

import pandas as pd
import pytest
import torch

from paraformer import bench
from paraformer.config import ConfigError

HERE = bench.device_label(torch.device("cpu"))


def csvs(device):
    names = ["strategies", "layers"] + [f"multi_{k}_{p}" for k in ("steps", "costs") for p in (1, 2)]
    return {name: pd.DataFrame({"device": [device]}) for name in names}


def test_nothing_is_measured_again_when_every_csv_comes_from_this_kind_of_device():
    assert bench.to_measure(csvs(HERE), device=torch.device("cpu")) == []
    # the thread count is not the device: the multi-process runs use one thread per process
    assert bench.to_measure(csvs(HERE.split(",")[0] + ", 1 thread(s)"), device=torch.device("cpu")) == []


def test_missing_csvs_and_csvs_from_another_device_are_measured_here():
    data = csvs("NVIDIA H100 80GB HBM3")
    assert bench.to_measure(data, device=torch.device("cpu")) == ["strategies", "layers", "multi"]
    data = csvs(HERE)
    del data["multi_costs_2"]
    assert bench.to_measure(data, device=torch.device("cpu")) == ["multi"]
    assert bench.to_measure(csvs(HERE), processes=(1, 2, 4), device=torch.device("cpu")) == ["multi"]


def test_unknown_profiles_and_benchmarks_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown profile 'fast'; choose one of"):
        bench.get_bench_profile("fast")
    with pytest.raises(ConfigError, match=r"unknown benchmark\(s\) \['speed'\]"):
        bench.run("ci", only=("speed",))


def test_interleaved_medians_time_every_call_every_repeat():
    calls = []
    medians = bench.interleaved_medians({name: (lambda n=name: calls.append(n)) for name in "abc"}, repeats=3,
                                        warmup=1, device=torch.device("cpu"))
    assert sorted(medians) == ["a", "b", "c"]
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")  # warm-up, then a rotating order
