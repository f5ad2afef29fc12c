"""How notebook 06 turns benchmark CSVs into its tables and verdicts (made-up times, so each figure is known)."""

import math

import pandas as pd
import pytest
import torch

from paraformer.bench import branch_processes, speed
from paraformer.experiments.paper import FAIRSCALE_SPEEDUP, PAPER_2024, PAPER_2025
from paraformer.experiments.speedup import (KINDS, MIN_SPREAD, PREDICTED, UNKNOWN_SPREAD, ClaimNeeds, Machine,
                                            at_depth, benchmark_depth, branch_process_table, by_kind,
                                            cost_model_check, cost_model_lines, cost_model_predictions,
                                            cost_model_summary, layers_table, median_interval, multi_bars,
                                            multi_machine, multi_table, only_missing, paired_ratio, ratio_spread,
                                            speed_line, speed_testable, speed_verdicts, strategy_table, summary,
                                            summary_sections, verdict_table)

CPU = {"device": "test CPU, 1 thread(s)", "device_type": "cpu"}
GPU = {"device": "test GPU", "device_type": "cuda"}


def verdicts(data) -> dict:
    return {v.key: v for v in speed_verdicts(data)}


def strategies(loop, fused, auto, chose):
    return pd.DataFrame([{"model": "Para-F-1-4", "batch": 8, "mode": "train", "strategy": strategy,
                          "seconds": seconds, "auto_chose": chose if strategy == "auto" else "", **CPU}
                         for strategy, seconds in (("loop", loop), ("fused", fused), ("auto", auto))])


def test_auto_is_compared_with_the_faster_of_loop_and_fused():
    table = strategy_table(strategies(0.010, 0.020, 0.0104, "loop"))
    assert table.loc[0, "auto_vs_best"] == pytest.approx(1.04)
    assert table.loc[0, "auto_chose"] == "loop"


def test_the_auto_target_is_judged_on_autos_worst_shape():
    # auto chose fused, the slower, and runs as fast as fused: 1.2x the best, the two fused medians agree
    missed = verdicts({"strategies": strategies(0.010, 0.012, 0.012, "fused")})["auto"]
    assert (missed.kind, missed.verdict.verdict) == ("target", "contradicted")
    assert missed.verdict.ours == pytest.approx(1 / 1.2)
    assert missed.verdict.threshold == pytest.approx(1 / 1.05)
    assert missed.verdict.high == pytest.approx(missed.verdict.ours * math.exp(MIN_SPREAD))
    met = verdicts({"strategies": strategies(0.010, 0.020, 0.0101, "loop")})["auto"]
    assert met.verdict.verdict == "supported" and met.verdict.ours == pytest.approx(1 / 1.01)


def test_the_interval_is_the_largest_disagreement_of_two_medians_of_one_computation():
    # auto and the loop it chose are one computation: 4% apart
    spread, _ = ratio_spread({"strategies": strategies(0.010, 0.020, 0.0104, "loop")})
    assert spread == pytest.approx(math.log(1.04))
    assert ratio_spread({"strategies": strategies(0.010, 0.020, 0.0100, "loop")})[0] == MIN_SPREAD
    assert ratio_spread({"layers": layers()})[0] == UNKNOWN_SPREAD  # nothing timed twice
    # at 4%, auto 1.04x the best is within 5% or not: the measurement cannot tell
    assert verdicts({"strategies": strategies(0.010, 0.020, 0.0104, "loop")})["auto"].verdict.verdict == \
        "inconclusive"


def layers(rows=((1, 1.0, 1.0, 10.0, 10.0), (24, 24.0, 6.0, 240.0, 60.0))):
    """(n, ViT-n ms, Para-F-1-n ms, ViT-n train ms, Para-F-1-n train ms) per layer count."""
    out = []
    for n, vit, para, vit_train, para_train in rows:
        for family, depth, seconds, train in (("ViT", n, vit, vit_train), ("ParaFormer", 1, para, para_train)):
            for mode, t, batch in (("inference", seconds / 1e3, 1), ("train", train / 1e3, 16)):
                out.append({"model": f"ViT-{n}" if family == "ViT" else f"Para-F-1-{n}", "family": family,
                            "branch_depth": depth, "strategy": "loop" if family == "ViT" else "auto",
                            "num_layers": n, "mode": mode, "batch": batch, "seconds": t,
                            "images_per_second": batch / t, **CPU})
    return pd.DataFrame(out)


def test_the_n_over_m_table_puts_the_papers_ratio_beside_ours():
    table = layers_table(layers()).set_index("model")
    assert table.loc["Para-F-1-24", "paper_N_over_M"] == 24
    assert table.loc["Para-F-1-24", "inference_speedup"] == pytest.approx(4.0)
    assert table.loc["Para-F-1-24", "train_speedup"] == pytest.approx(4.0)
    judged = verdicts({"layers": layers()})
    latency, growth = judged["latency"].verdict, judged["growth_one_device"].verdict
    assert (latency.verdict, latency.ours, latency.threshold) == ("supported", pytest.approx(4.0),
                                                                  pytest.approx(1 / 0.6))
    assert (judged["growth_one_device"].kind, growth.verdict, growth.ours) == ("comparison", "contradicted",
                                                                               pytest.approx(1 / 6))


def test_the_single_device_ratios_are_measurements_not_verdicts_on_the_papers_claims():
    # without the one-branch-per-process CSV the 2024 claims are not testable, whatever one device shows
    judged = verdicts({"layers": layers()})
    assert {key: v.kind for key, v in judged.items() if key in ("growth_one_device", "n_over_m_one_device")} == \
        {"growth_one_device": "comparison", "n_over_m_one_device": "comparison"}
    papers = {key: v for key, v in judged.items() if v.kind == "paper"}
    assert list(papers) == ["growth", "n_over_m"]
    assert all(v.verdict.verdict == "not testable here" and v.source == PAPER_2024 for v in papers.values())


def test_the_latency_target_is_a_speed_up_judged_in_its_own_direction():
    # ViT-24 over Para-F-1-24: 4x is above the 1/0.6 = 1.67x the target asks for; 1.25x (latency 0.8x) is below
    met = verdicts({"layers": layers()})["latency"]
    missed = verdicts({"layers": layers(((1, 1.0, 1.0, 10.0, 10.0), (24, 10.0, 8.0, 240.0, 60.0)))})["latency"]
    assert (met.verdict.ours, met.verdict.verdict) == (pytest.approx(4.0), "supported")
    assert (missed.verdict.ours, missed.verdict.verdict) == (pytest.approx(1.25), "contradicted")
    assert met.verdict.threshold == pytest.approx(1 / 0.6) and met.kind == "target"
    assert met.unit == "x (ViT-24 over Para-F-1-24, batch-1 latency, one device)"


def test_the_n_over_m_claim_leaves_out_n_over_m_of_one():
    # Para-F-1-1 against ViT-1 reaches 80% of its N/M = 1; Para-F-1-24 reaches 95% of 24
    n_over_m = verdicts({"layers": layers(((1, 1.0, 1.25, 10.0, 10.0), (24, 24.0, 24 / 22.8, 240.0, 60.0)))})
    claim = n_over_m["n_over_m_one_device"].verdict
    assert claim.ours == pytest.approx(0.95)
    assert claim.verdict == "supported"  # 0.95 / e^0.05 = 0.904 > 0.9
    only_one = verdicts({"layers": layers(((1, 1.0, 1.25, 10.0, 10.0),))})["n_over_m_one_device"].verdict
    assert only_one.verdict == "not testable here" and math.isnan(only_one.ours)


def steps(processes, rows, device=CPU):
    return pd.DataFrame([{"method": m, "model": "Para-F-1-4" if m.startswith("branch") else "ViT-4",
                          "micro_batches": k, "seconds": s, "processes": processes, **device} for m, k, s in rows])


def multi(device=CPU, fairscale_at_2=0.30):
    return {"multi_steps_1": steps(1, [("branch", 1, 0.10), ("torch-1f1b", 1, 0.40), ("fairscale", 1, 0.40),
                                       ("fairscale", 2, 0.38)], device),
            "multi_steps_2": steps(2, [("branch", 1, 0.06), ("branch, 1 process", 1, 0.102),
                                       ("torch-1f1b", 4, 0.24), ("fairscale", 2, 0.39),
                                       ("fairscale", 4, fairscale_at_2)], device)}


def test_the_multi_device_table_keeps_each_pipelines_best_micro_batch_count():
    table = multi_table(multi()).set_index(["processes", "method"])
    assert table.loc[(2, "fairscale"), "micro_batches"] == 4
    assert table.loc[(2, "fairscale"), "vs_branch"] == pytest.approx(5.0)
    assert table.loc[(2, "fairscale"), "speedup_over_1_process"] == pytest.approx(0.38 / 0.30)


def with_ddp(data):
    """`data` with ddp steps of the ViT and of the ParaFormer at 1 and 2 processes."""
    for processes, vit, para in ((1, 0.30, 0.12), (2, 0.20, 0.05)):
        ddp = pd.DataFrame([{"method": "ddp", "model": model, "micro_batches": 1, "seconds": seconds,
                             "processes": processes, **CPU}
                            for model, seconds in (("ViT-4", vit), ("Para-F-1-4", para))])
        data[f"multi_steps_{processes}"] = pd.concat([data[f"multi_steps_{processes}"], ddp], ignore_index=True)
    return data


def test_the_multi_device_table_keeps_ddp_of_each_model_apart():
    data = with_ddp(multi())
    table = multi_table(data).set_index(["processes", "method", "model"])
    assert table.loc[(2, "ddp", "ViT-4"), "step_ms"] == pytest.approx(200.0)
    assert table.loc[(2, "ddp", "Para-F-1-4"), "vs_branch"] == pytest.approx(0.05 / 0.06)
    assert table.loc[(2, "ddp", "ViT-4"), "speedup_over_1_process"] == pytest.approx(1.5)
    assert table.loc[(2, "ddp", "Para-F-1-4"), "speedup_over_1_process"] == pytest.approx(2.4)
    assert table.loc[(2, "torch-1f1b", "ViT-4"), "speedup_over_1_process"] == pytest.approx(0.40 / 0.24)
    assert len(verdicts(data)) == len(verdicts(multi()))  # ddp is tabulated, not judged


def test_the_bar_chart_has_a_bar_for_each_method_and_model():
    bars = multi_bars(multi_table(with_ddp(multi())))
    assert list(bars.columns) == [1, 2]
    assert bars.loc["ddp (ViT-4)", 2] == pytest.approx(200.0)  # not averaged with the ParaFormer's 50 ms
    assert bars.loc["ddp (Para-F-1-4)", 2] == pytest.approx(50.0)
    assert bars.loc["fairscale (ViT-4)", 1] == pytest.approx(380.0)  # its best micro-batch count
    assert math.isnan(bars.loc["branch, 1 process (Para-F-1-4)", 1])  # timed in the 2-process run only
    assert len(bars) == 6


def test_the_scaling_target_and_a_missing_pipeline():
    judged = verdicts(multi())
    scaling = judged["scaling"].verdict
    assert (judged["scaling"].kind, scaling.ours, scaling.threshold) == ("target", pytest.approx(1.7), 1.7)
    assert scaling.verdict == "inconclusive"  # 1.70 +- 2%: on the threshold
    gpipe = judged["torch-gpipe"].verdict
    assert gpipe.verdict == "not testable here" and math.isnan(gpipe.ours)


def test_fairscale_on_a_cpu_is_not_testable_here():
    fairscale = verdicts(multi(CPU))["fairscale"]
    assert (fairscale.kind, fairscale.source, fairscale.verdict.verdict) == ("paper", PAPER_2025, "not testable here")
    assert fairscale.verdict.ours == pytest.approx(5.0) and fairscale.verdict.paper == FAIRSCALE_SPEEDUP[0]
    rule = speed_testable(ClaimNeeds(2, "FairScale's Pipe", ("cuda",)), Machine("cpu", None, 2))
    assert rule.cause == "overlap" and fairscale.verdict.reason == rule.reason


def test_fairscale_on_gpus_is_judged_against_the_papers_lower_end():
    lower = FAIRSCALE_SPEEDUP[0] - FAIRSCALE_SPEEDUP[1]
    faster = verdicts(multi(GPU))["fairscale"].verdict
    assert (faster.verdict, faster.ours, faster.threshold) == ("supported", pytest.approx(5.0), pytest.approx(lower))
    slower = verdicts(multi(GPU, fairscale_at_2=0.12))["fairscale"].verdict  # 2.0x
    assert (slower.verdict, slower.ours) == ("contradicted", pytest.approx(2.0))


def test_the_torch_pipelines_are_compared_without_a_paper_figure():
    for device in (CPU, GPU):
        f1b = verdicts(multi(device))["torch-1f1b"]
        assert (f1b.kind, f1b.verdict.paper, f1b.verdict.threshold) == ("comparison", None, 1.0)
        assert (f1b.verdict.verdict, f1b.verdict.ours) == ("supported", pytest.approx(4.0))


def test_the_papers_claims_the_targets_and_the_measurements_are_listed_apart():
    data = {"strategies": strategies(0.010, 0.012, 0.012, "fused"), "layers": layers(), **multi(),
            branch_processes.NAME: branch_rounds()}
    judged = speed_verdicts(data)
    table = verdict_table(judged)
    assert list(table["key"]) == ["growth", "n_over_m", "fairscale", "auto", "latency", "scaling",
                                  "growth_train", "n_over_m_train", "growth_one_device", "n_over_m_one_device",
                                  "torch-gpipe", "torch-1f1b"]
    groups = by_kind(judged)
    assert {kind: [v.key for v in group] for kind, group in groups.items()} == {
        "paper": ["growth", "n_over_m", "fairscale"], "target": ["auto", "latency", "scaling"],
        "comparison": ["growth_train", "n_over_m_train", "growth_one_device", "n_over_m_one_device", "torch-gpipe",
                       "torch-1f1b"]}
    assert set(table.loc[table["kind"] == "paper", "source"]) == {PAPER_2024, PAPER_2025}
    assert set(table.loc[table["kind"] != "paper", "source"]) == {""}
    assert table["unit"].str.match(r"^(x|share of N/M) \(.+ over .+\)$").all()  # every ratio says what it divides
    assert set(table["verdict"]) <= {"supported", "contradicted", "inconclusive", "not testable here"}
    # the summary: a line per verdict under its kind's title, in that order; no cost model without its costs
    sections = summary_sections(data)
    assert [title for title, _ in sections] == ["", *(KINDS[kind] for kind in groups)]
    assert sections[1:] == [(KINDS[kind], [speed_line(v) for v in group]) for kind, group in groups.items()]
    assert PREDICTED not in dict(sections)
    assert summary(data) == [line for _, lines in sections for line in lines]  # the flat list: 1 + a line each
    assert len(summary(data)) == 1 + len(judged)


def test_only_missing_benchmarks_are_measured_when_other_devices_csvs_are_kept():
    data = {"layers": layers(), **multi()}  # multi_steps only: the costs CSVs are missing
    assert only_missing(["strategies", "layers", "multi"], data, (1, 2)) == ["strategies", "multi"]
    data.update({"multi_costs_1": pd.DataFrame(), "multi_costs_2": pd.DataFrame()})
    assert only_missing(["layers", "multi"], data, (1, 2)) == []
    assert only_missing(["multi"], data, (1, 2, 4)) == ["multi"]
    with pytest.raises(ValueError, match=r"unknown benchmark\(s\) \['cost'\]"):
        only_missing(["cost"], data, (1, 2))


def predicted(depths=(4, 8), batch=4):
    """A made-up `costmodel.predictions` table: every time doubles from the first depth to the next, the
    two all-reduce models agree up to 2 devices, and steps were measured at the first depth, 1 and 2 devices."""
    rows = []
    for scale, depth in enumerate(depths, start=1):
        for p in (1, 2, 4, 8):
            times = {("branch", "Para-F-1-n"): (100 / p, 1), ("ddp", "ViT-n"): (300 / p, 1),
                     ("ddp", "Para-F-1-n"): (100 / p, 2), ("mgrit-1it", "ViT-n"): (400 / p, 0)}
            if p <= depth:  # a pipeline needs a layer per device
                times[("pipeline (GPipe)", "ViT-n")] = (300 / p, 0)
            for (method, model), (compute, latency) in times.items():
                if method == "ddp" and p > batch:  # data parallelism needs an image per device
                    continue
                if method == "mgrit-1it" and p > 2:
                    continue
                ring, tree = compute + latency * p, compute + latency * min(p, 2)
                seen = scale == 1 and p <= 2 and (method, model) != ("ddp", "Para-F-1-n")
                rows.append({"depth": depth, "method": method, "model": model.replace("n", str(depth)),
                             "devices": p, "micro_batches": 1, "predicted_ring_ms": scale * ring,
                             "predicted_tree_ms": scale * tree, "measured_ms": 1.25 * ring if seen else math.nan})
    table = pd.DataFrame(rows)
    for model in ("ring", "tree"):
        table[f"{model}_over_measured"] = table[f"predicted_{model}_ms"] / table["measured_ms"]
    return table


def test_the_cost_model_figure_has_a_line_for_each_method_and_model_at_the_benchmarks_depth():
    lines = {line.label: line for line in cost_model_lines(predicted(), depth=4)}
    assert list(lines) == ["branch, Para-F-1-4", "ddp, ViT-4", "ddp, Para-F-1-4", "mgrit-1it, ViT-4",
                           "pipeline (GPipe), ViT-4"]
    vit, para = lines["ddp, ViT-4"], lines["ddp, Para-F-1-4"]
    assert vit.devices == para.devices == (1, 2, 4)
    assert vit.ring_ms == pytest.approx((301, 152, 79)) and vit.tree_ms == pytest.approx((301, 152, 77))
    assert para.ring_ms == pytest.approx((102, 54, 33)) and para.measured_devices == ()
    assert lines["branch, Para-F-1-4"].tree_ms == pytest.approx((101, 52, 27, 14.5))
    assert lines["branch, Para-F-1-4"].measured_ms == pytest.approx((1.25 * 101, 1.25 * 52))
    # a pipeline all-reduces nothing, and MGRIT runs at 1 and 2 devices only, where the models agree: one line each
    assert lines["pipeline (GPipe), ViT-4"].tree_ms is None and lines["mgrit-1it, ViT-4"].tree_ms is None
    assert lines["pipeline (GPipe), ViT-4"].devices == (1, 2, 4)
    deeper = {line.label: line for line in cost_model_lines(predicted(), depth=8)}
    assert deeper["pipeline (GPipe), ViT-8"].ring_ms == pytest.approx((600, 300, 150, 75))
    with pytest.raises(ValueError, match=r"depths \[4, 8\]; say which one"):
        cost_model_lines(predicted())
    without_depth = predicted(depths=(4,)).drop(columns="depth")  # an older table: one depth
    assert [line.label for line in cost_model_lines(without_depth)] == list(lines)
    assert at_depth(predicted(), 8)["model"].str.endswith("-8").all()


def test_the_cost_model_note_divides_gpipe_and_the_paraformers_ddp_by_branch():
    note = cost_model_summary(predicted(), depth=4)
    assert (note.depth, note.branch, note.checked_devices) == (4, "branch, Para-F-1-4", (1, 2))
    assert note.checked == pytest.approx((0.8, 0.8)) and note.checked_agree
    assert list(note.ratios) == ["ddp, Para-F-1-4", "pipeline (GPipe), ViT-4"]  # not the ViT's ddp, not MGRIT
    gpipe, ddp = note.ratios["pipeline (GPipe), ViT-4"], note.ratios["ddp, Para-F-1-4"]
    # the pipeline at devices up to the depth, data parallelism up to the batch
    assert gpipe["ring"] == pytest.approx({1: 300 / 101, 2: 150 / 52, 4: 75 / 29})
    assert gpipe["tree"] == pytest.approx({1: 300 / 101, 2: 150 / 52, 4: 75 / 27})
    assert ddp["ring"] == pytest.approx({1: 102 / 101, 2: 54 / 52, 4: 33 / 29})
    assert ddp["tree"] == pytest.approx({1: 102 / 101, 2: 54 / 52, 4: 29 / 27})
    assert cost_model_summary(predicted(), depth=8).checked is None  # nothing measured at another depth
    assert isinstance(note.words(), str)


def test_the_benchmark_depth_is_the_settings_vits():
    assert (benchmark_depth("ci"), benchmark_depth("quick")) == (4, 24)


def test_on_one_gpu_notebooks_06_and_08_measure_one_process_and_report_two_as_not_measured(monkeypatch):
    from paraformer.bench import speed
    from paraformer.experiments import layer_parallel, speedup
    from paraformer.experiments.profiles import get_profile

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(speed, "device_name", lambda device: GPU["device"])
    stored, asked = {}, []

    def measure(bench, multi, only, processes, device=None, root=None):  # what the benchmark writes on one GPU
        asked.append((only, processes))
        stored["multi_steps_1"] = steps(1, [("branch", 1, 0.10), ("torch-gpipe", 1, 0.40), ("torch-1f1b", 1, 0.40),
                                            ("fairscale", 1, 0.40)], GPU)
        stored["multi_costs_1"] = pd.DataFrame({"kind": ["compute"], "seconds": [0.01], "profile": ["gpu"], **GPU})
    monkeypatch.setattr(speed, "run", measure)
    monkeypatch.setattr(speed, "load", lambda profile: dict(stored))
    data, measured = speedup.run("gpu", only=("multi",))  # the notebooks' default: processes=None
    assert asked == [(("multi",), (1,))] and measured == ["multi"]
    table = multi_table(data)
    assert table["status"].tolist() == ["measured"] * 4 + ["not measured here (1 GPU)"]
    assert table["processes"].tolist() == [1] * 4 + [2] and math.isnan(table["step_ms"].iloc[-1])
    assert list(multi_bars(table).columns) == [1]  # no bar for what was not measured
    judged = verdicts(data)
    assert list(judged) == ["growth", "n_over_m", "fairscale", "scaling", "growth_train", "n_over_m_train",
                            "torch-gpipe", "torch-1f1b"]
    one_gpu = speed_testable(ClaimNeeds(2), Machine("cuda", 1, 0))  # every one of them presumes 2 devices
    assert one_gpu.cause == "devices"
    for verdict in (v.verdict for v in judged.values()):
        assert (verdict.verdict, verdict.reason) == ("not testable here", one_gpu.reason)
        assert math.isnan(verdict.ours)
    assert speedup.predictions(data, "gpu") is None  # the cost model needs the 2-process costs
    # notebook 08: with its 1-process rows measured, what its speed claims lack is at 2 processes alone
    setting = get_profile("gpu").layer_parallel
    serial = pd.DataFrame([{"method": method, "model": "ViT-24", "micro_batches": 1, "seconds": seconds,
                            "processes": 1, **GPU} for method, seconds in (("ddp", 0.30), ("mgrit-1it", 0.40))])
    data = {**data, "multi_steps_1": pd.concat([data["multi_steps_1"], serial], ignore_index=True)}
    assert {p for *_, p in layer_parallel.missing_speed_rows(data, "gpu", setting)} == {2}
    lp = layer_parallel.speed_verdicts(data, "gpu", setting)
    assert [(v.key, v.verdict.verdict) for v in lp] == [("acceleration", "not testable here"),
                                                        ("mgrit_scaling", "not testable here"),
                                                        ("mgrit_vs_branch", "not testable here")]
    assert set(layer_parallel.speed_table(data)["processes"]) == {1}


# --- the 2024 claims on two processes, one branch each ---------------------------------------------------------------

def branch_rounds(ms=None, rounds=7, device=CPU, devices=2):
    """A made-up one-branch-per-process CSV: every call's milliseconds in every round (a call -> ms mapping per
    mode, the same in each round but for a slow first round that every call shares)."""
    ms = ms or {"inference": {"Para-F-1-1 on 1 process": 1.0, "Para-F-1-2 on 1 process": 1.9,
                              "Para-F-1-2 on 2 processes": 1.1, "ViT-4 on 1 process": 4.0,
                              "Para-F-2-4 on 1 process": 3.0, "Para-F-2-4 on 2 processes": 2.0},
                "train": {"Para-F-1-1 on 1 process": 10.0, "Para-F-1-2 on 1 process": 19.0,
                          "Para-F-1-2 on 2 processes": 20.0, "ViT-4 on 1 process": 40.0,
                          "Para-F-2-4 on 1 process": 30.0, "Para-F-2-4 on 2 processes": 16.0}}
    rows = []
    for mode, calls in ms.items():
        for call, t in calls.items():
            model, processes = call.split(" on ")[0], int(call.split(" on ")[1].split()[0])
            rows += [{"call": call, "model": model, "processes": processes, "mode": mode, "round": r,
                      "batch": 1 if mode == "inference" else 8, "seconds": t / 1e3 * (3 if r == 0 else 1),
                      "devices": devices, "cores": "0 1", **device} for r in range(rounds)]
    return pd.DataFrame(rows)


def test_a_median_is_bounded_by_order_statistics_at_95_percent_or_refused():
    # n = 11: P(Binomial(11, 1/2) <= 1) = 12/2048 <= 2.5% < P(<= 2) = 67/2048, so the 2nd smallest and 2nd largest
    assert median_interval(range(1, 12)) == (6, 2, 10)
    assert median_interval([5, 1, 3, 2, 4, 6]) == (3.5, 1, 6)  # n = 6: 1/64 <= 2.5%, the extremes
    with pytest.raises(ValueError, match="5 rounds cannot bound a median"):
        median_interval(range(5))  # 1/32 > 2.5%: no order statistic will do


def test_two_calls_are_divided_round_by_round():
    # round by round the ratio is exactly 2, though each call's times spread 20-fold: the interval is the floor's
    rounds = pd.DataFrame([{"mode": "train", "round": r, "call": call, "seconds": t * (2 if call == "a" else 1)}
                           for r, t in enumerate((1, 20, 3, 4, 5, 6)) for call in ("a", "b")])
    found = paired_ratio(rounds, "train", "a", "b")
    assert (found.ratio, found.rounds) == (2.0, 6)
    assert (found.low, found.high) == (pytest.approx(2 * math.exp(-MIN_SPREAD)), pytest.approx(2 * math.exp(MIN_SPREAD)))
    with pytest.raises(ValueError, match=r"no inference rounds of \['a', 'b'\]"):
        paired_ratio(rounds, "inference", "a", "b")


def test_the_2024_claims_are_judged_with_a_branch_per_process():
    judged = verdicts({branch_processes.NAME: branch_rounds()})
    growth, n_over_m = judged["growth"], judged["n_over_m"]
    # Para-F-1-1 alone 1.0 ms, Para-F-1-2 on two 1.1 ms: 0.91x, above 1/1.25
    assert (growth.kind, growth.source, growth.verdict.verdict) == ("paper", PAPER_2024, "supported")
    assert (growth.verdict.ours, growth.verdict.threshold) == (pytest.approx(1 / 1.1), pytest.approx(0.8))
    assert growth.unit == "x (1-1 on 1 over 1-2 on 2 processes, batch-1 inference)"
    # ViT-4 alone 4.0 ms, Para-F-2-4 on two 2.0 ms: 2.0x, above 0.9 x N/M = 1.8
    assert (n_over_m.verdict.ours, n_over_m.verdict.threshold) == (pytest.approx(2.0), pytest.approx(1.8))
    assert n_over_m.verdict.verdict == "supported"
    assert n_over_m.unit == "x (ViT-4 on 1 over 2-4 on 2 processes, batch-1 inference)"
    # the training step's ratios are measurements: 10 / 20 = 0.5x and 40 / 16 = 2.5x
    assert (judged["growth_train"].kind, judged["growth_train"].verdict.verdict) == ("comparison", "contradicted")
    assert judged["n_over_m_train"].verdict.ours == pytest.approx(2.5)
    table = branch_process_table(branch_rounds()).set_index(["mode", "call"])
    assert table.loc[("inference", "Para-F-2-4 on 2 processes"), "median_ms"] == pytest.approx(2.0)
    assert table.loc[("inference", "Para-F-2-4 on 2 processes"), "processes"] == 2


def test_the_2024_claims_cannot_hold_without_a_second_device():
    data = {speed.MACHINE: pd.DataFrame({"devices": [1], "unit": ["GPU"], "device_type": ["cuda"],
                                         "device": ["test GPU"]})}
    for key in ("growth", "n_over_m"):
        verdict = verdicts(data)[key].verdict
        assert verdict.verdict == "not testable here" and math.isnan(verdict.ours)
        assert verdict.reason == speed_testable(ClaimNeeds(2), Machine("cuda", 1, 0)).reason


def test_one_rule_decides_which_speed_claims_a_machine_can_test():
    two = ClaimNeeds(2)
    fairscale = ClaimNeeds(2, "FairScale's Pipe", ("cuda",))
    assert speed_testable(two, Machine("cuda", 1, 0)).cause == "devices"  # one GPU
    assert speed_testable(two, Machine("cpu", 2, 0)).cause == "measured"  # two cores, nothing run on them
    assert speed_testable(two, Machine("cpu", None, 1)).cause == "measured"  # a single-device figure
    assert speed_testable(fairscale, Machine("cpu", 2, 2)).cause == "overlap"
    assert speed_testable(fairscale, Machine("cuda", 2, 2)) is None
    assert speed_testable(two, Machine("cpu", 2, 2)) is None  # a plain claim on two cores
    assert speed_testable(ClaimNeeds(1), Machine("cpu", None, 1)) is None
    with pytest.raises(ValueError, match="ClaimNeeds.processes=0"):
        speed_testable(ClaimNeeds(0), Machine("cpu", 2, 2))
    # the multi-process figures' machine: their device, or this machine where a method was not measured
    assert multi_machine(multi(GPU), 2, "fairscale") == Machine("cuda", None, 2)
    here = {speed.MACHINE: pd.DataFrame({"devices": [1], "device_type": ["cuda"]})}
    assert multi_machine({**multi(GPU), **here}, 2, "torch-gpipe") == Machine("cuda", 1, 0)


def test_cost_model_predictions_and_the_measurements_they_are_checked_against_are_tables_apart():
    every = cost_model_predictions(predicted())
    assert set(every["figure"]) == {"predicted"} and len(every) == len(predicted())
    assert not [column for column in every.columns if "measured" in column]
    check = cost_model_check(predicted(), depth=4)
    assert set(check["figure"]) == {"measured"} and check["measured_ms"].notna().all()
    assert sorted(set(check["devices"])) == [1, 2]
    assert len(check) == predicted()["measured_ms"].notna().sum()
