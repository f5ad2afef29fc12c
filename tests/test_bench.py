"""What the benchmark harness measures again, the errors it gives, and the one timing loop every benchmark uses
(its timings are benchmarks, not tests)."""

import pandas as pd
import pytest
import torch

from paraformer.bench import speed as bench
from paraformer.core.config import ConfigError
from paraformer.core.provenance import device_name
from paraformer.core.timing import median_seconds
from paraformer.experiments.profiles import get_profile

HERE = device_name(torch.device("cpu"))


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
