"""The cost model's formulas, on made-up costs where every term can be checked by hand."""

import pandas as pd
import pytest

from paraformer.parallel.costmodel import Costs, _on, predictions

# 10 ms per full layer, 2 ms per CLS-only layer, 1 ms stem and head (flat in the batch); 1 ns per parameter of
# AdamW; all-reduce latency 0.1 ms per ring step and 1 ns per byte; a round trip of 0.5 ms flat.
COSTS = Costs(layer=((1, 64), (0.010, 0.010)), cls_layer=((1, 64), (0.002, 0.002)),
              stem_head=((1, 64), (0.001, 0.001)), adamw=1e-9, allreduce=(1e-4, 1e-9), p2p=(5e-4, 0.0))


def branch(ranks, **kw):
    args = dict(num_branches=24, branch_depth=1, batch=64, width=64, stem_parameters=1000, head_parameters=500,
                branch_parameters=10_000)
    return COSTS.branch_parallel_step(ranks, **{**args, **kw})


def test_one_rank_pays_every_branch_and_no_communication():
    expected = 0.001 + 24 * 0.002 + 1e-9 * (1000 + 500 + 24 * 10_000)
    assert branch(1) == pytest.approx(expected)


def test_more_ranks_split_the_branches_and_pay_ring_all_reduces():
    two = 0.001 + 12 * 0.002 + (2 * 1e-4 + 4 * 64 * 64 * 1e-9) + (2 * 1e-4 + 4000 * 1e-9) \
        + 1e-9 * (1500 + 12 * 10_000)
    assert branch(2) == pytest.approx(two)
    assert branch(8) < branch(4) < branch(2) < branch(1)
    # the ring's latency grows with the ranks while the work per rank shrinks: here 24 ranks lose to 8
    assert branch(24) > branch(8)


def test_deeper_branches_run_their_layers_in_series_with_a_cls_only_last_layer():
    assert branch(1, num_branches=4, branch_depth=6) - branch(1, num_branches=4, branch_depth=6,
                                                               branch_parameters=0) == pytest.approx(4e-5)
    compute = branch(1, num_branches=4, branch_depth=6, branch_parameters=0, stem_parameters=0, head_parameters=0)
    assert compute == pytest.approx(0.001 + 4 * (5 * 0.010 + 0.002))


def test_a_one_stage_pipeline_is_the_sequential_model():
    step = COSTS.pipeline_step(stages=1, micro_batches=1, num_layers=24, batch=64, tokens=65, width=64,
                               parameters=100_000)
    assert step == pytest.approx(23 * 0.010 + 0.002 + 0.001 + 1e-4)


def test_a_gpipe_schedule_runs_micro_batches_plus_stages_minus_one_slots():
    step = COSTS.pipeline_step(stages=4, micro_batches=8, num_layers=24, batch=64, tokens=65, width=64,
                               parameters=100_000)
    slot = (23 * 0.010 + 0.002) / 4 + 5e-4
    assert step == pytest.approx(11 * slot + 0.001 + 1e-9 * 100_000 / 4)


def measured_costs():
    """Costs CSVs as the 1- and 2-process benchmarks write them, on lines the fit should recover."""
    one = pd.DataFrame([
        *({"kind": "compute", "what": "layer", "batch": b, "bytes": 0, "seconds": 0.001 + 0.0002 * b}
          for b in (8, 16, 32, 64)),
        *({"kind": "compute", "what": "cls_layer", "batch": b, "bytes": 0, "seconds": 0.0005 * b} for b in (8, 64)),
        {"kind": "compute", "what": "stem_head", "batch": 64, "bytes": 0, "seconds": 0.003},
        {"kind": "compute", "what": "adamw_per_parameter", "batch": 0, "bytes": 0, "seconds": 2e-9},
    ])
    two = pd.DataFrame([
        *({"kind": "allreduce", "what": "sum", "batch": 0, "bytes": n, "seconds": 2 * 3e-4 + n * 1e-9}
          for n in (1024, 16384)),
        *({"kind": "p2p", "what": "round trip", "batch": 0, "bytes": n, "seconds": 1e-4 + n * 2e-9}
          for n in (4096, 65536)),
    ])
    return one, two


def test_the_fit_recovers_the_lines_it_was_measured_from():
    costs = Costs.from_measurements(*measured_costs())
    assert costs.layer == ((8, 16, 32, 64), pytest.approx((0.0026, 0.0042, 0.0074, 0.0138)))
    assert costs.cls_layer == ((8, 64), pytest.approx((0.004, 0.032)))
    assert costs.allreduce == pytest.approx((3e-4, 1e-9))
    assert costs.p2p == pytest.approx((1e-4, 2e-9))
    assert costs.allreduce_seconds(1000, 2) == pytest.approx(2 * 3e-4 + 1000 * 1e-9)


def test_a_tree_all_reduce_pays_log2_p_latency_steps_where_a_ring_pays_p_minus_1():
    # alpha 0.1 ms, beta 1 ns per byte; both move 2 (P - 1) / P of the 1000 bytes per rank
    moved = 2 * 23 / 24 * 1000 * 1e-9
    assert COSTS.allreduce_seconds(1000, 24, "ring") == pytest.approx(2 * 23 * 1e-4 + moved)  # 4.6019 ms
    assert COSTS.allreduce_seconds(1000, 24, "tree") == pytest.approx(2 * 5 * 1e-4 + moved)  # 1.0019 ms
    assert COSTS.allreduce_seconds(1000, 2, "tree") == pytest.approx(COSTS.allreduce_seconds(1000, 2, "ring"))
    assert COSTS.allreduce_seconds(1000, 5, "tree") == pytest.approx(2 * 3 * 1e-4 + 2 * 4 / 5 * 1000 * 1e-9)
    # the branch-parallel step all-reduces twice (features and stem gradients): 2 x 36 latency steps fewer
    assert branch(24) - branch(24, allreduce="tree") == pytest.approx(2 * 36 * 1e-4)
    with pytest.raises(ValueError, match="'star' is unknown"):
        COSTS.allreduce_seconds(1000, 4, "star")


def test_predictions_give_both_all_reduce_models_which_agree_up_to_two_devices():
    one, two = measured_costs()
    table = predictions({"multi_costs_1": one, "multi_costs_2": two}, "ci").set_index(["method", "devices"])
    ring, tree = table["predicted_ring_ms"], table["predicted_tree_ms"]
    assert ring.loc[("branch", 1)] == pytest.approx(tree.loc[("branch", 1)])
    assert ring.loc[("branch", 2)] == pytest.approx(tree.loc[("branch", 2)])
    assert tree.loc[("branch", 24)] < ring.loc[("branch", 24)]
    assert (table.loc["pipeline (GPipe)", "predicted_ring_ms"] == table.loc["pipeline (GPipe)",
                                                                            "predicted_tree_ms"]).all()


def test_compute_is_interpolated_between_measured_batches_and_proportional_beyond_them():
    curve = ((8, 64), (0.004, 0.032))
    assert _on(curve, 36) == pytest.approx(0.018)
    assert _on(curve, 128) == pytest.approx(0.064)
    assert _on(curve, 2) == pytest.approx(0.004)  # below the smallest batch, per-call overheads dominate


def test_predictions_say_which_measurements_are_missing():
    with pytest.raises(ValueError, match=r"\['multi_costs_2'\] are missing"):
        predictions({"multi_costs_1": pd.DataFrame()}, "ci")
