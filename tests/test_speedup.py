"""How notebook 06 turns benchmark CSVs into its tables and verdicts (made-up times, so each figure is known)."""

import pandas as pd
import pytest

from paraformer.speedup import layers_table, multi_table, strategy_table, summary

CPU = {"device": "test CPU, 1 thread(s)", "device_type": "cpu"}


def strategies(auto_seconds):
    rows = []
    for strategy, seconds in (("loop", 0.010), ("fused", 0.020), ("auto", auto_seconds)):
        rows.append({"model": "Para-F-1-4", "batch": 8, "mode": "train", "strategy": strategy, "seconds": seconds,
                     "auto_chose": "loop" if strategy == "auto" else "", **CPU})
    return pd.DataFrame(rows)


def test_auto_is_compared_with_the_faster_of_loop_and_fused():
    table = strategy_table(strategies(0.0104))
    assert table.loc[0, "auto_vs_best"] == pytest.approx(1.04)
    assert table.loc[0, "auto_chose"] == "loop"


def test_the_summary_says_when_auto_misses_its_target():
    assert "NOT met. Worst case 1.200x" in summary({"strategies": strategies(0.012)})[0]
    assert "met. Worst case 1.040x" in summary({"strategies": strategies(0.0104)})[0]


def layers():
    rows = []
    for n, vit, para, vit_train, para_train in ((1, 1.0, 1.0, 10.0, 10.0), (24, 24.0, 6.0, 240.0, 60.0)):
        for family, depth, seconds, train in (("ViT", n, vit, vit_train), ("ParaFormer", 1, para, para_train)):
            for mode, t, batch in (("inference", seconds / 1e3, 1), ("train", train / 1e3, 16)):
                rows.append({"model": f"ViT-{n}" if family == "ViT" else f"Para-F-1-{n}", "family": family,
                             "branch_depth": depth, "strategy": "loop" if family == "ViT" else "auto",
                             "num_layers": n, "mode": mode, "batch": batch, "seconds": t,
                             "images_per_second": batch / t, **CPU})
    return pd.DataFrame(rows)


def test_the_n_over_m_table_puts_the_papers_ratio_beside_ours():
    table = layers_table(layers()).set_index("model")
    assert table.loc["Para-F-1-24", "paper_N_over_M"] == 24
    assert table.loc["Para-F-1-24", "inference_speedup"] == pytest.approx(4.0)
    assert table.loc["Para-F-1-24", "train_speedup"] == pytest.approx(4.0)
    lines = summary({"layers": layers()})
    assert "met, 0.25x (6.00 ms against 24.00 ms)" in lines[0]
    assert "grows 6.0x, that of the ViT 24.0x" in lines[1] and "**not supported**" in lines[1]


def steps(processes, rows):
    return pd.DataFrame([{"method": m, "model": "Para-F-1-4" if m.startswith("branch") else "ViT-4",
                          "micro_batches": k, "seconds": s, "processes": processes, **CPU} for m, k, s in rows])


def test_the_multi_device_table_keeps_each_pipelines_best_micro_batch_count():
    data = {"multi_steps_1": steps(1, [("branch", 1, 0.10), ("fairscale", 1, 0.40), ("fairscale", 2, 0.38)]),
            "multi_steps_2": steps(2, [("branch", 1, 0.06), ("branch, 1 process", 1, 0.102),
                                       ("fairscale", 2, 0.39), ("fairscale", 4, 0.30)])}
    table = multi_table(data).set_index(["processes", "method"])
    assert table.loc[(2, "fairscale"), "micro_batches"] == 4
    assert table.loc[(2, "fairscale"), "vs_branch"] == pytest.approx(5.0)
    assert table.loc[(2, "fairscale"), "speedup_over_1_process"] == pytest.approx(0.38 / 0.30)
    lines = summary(data)
    assert "NOT met, 1.70x" not in lines[0] and "met, 1.70x (ideal 2)" in lines[0]
    assert "torch-gpipe was not measured at 2 processes" in lines[1]
    assert "Para-F-1-4 is 5.00x faster than fairscale's best pipeline (4 micro-batches) of ViT-4" in lines[3]
    assert "above the paper's range 2.44-4.16x" in lines[3] and "no parallelism to offer" in lines[3]
