"""The cost model's formulas, on made-up costs where every term can be checked by hand."""

import pandas as pd
import pytest

from paraformer.core.config import ConfigError
from paraformer.bench.costmodel import Costs, _on, ddp_buckets, mgrit_coarsening, predictions
from paraformer.experiments.profiles import get_profile

CI = get_profile("ci")

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
    table = predictions({"multi_costs_1": one, "multi_costs_2": two}, CI.bench, CI.multi, depths=(4,))
    table = table.set_index(["method", "devices"])
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
        predictions({"multi_costs_1": pd.DataFrame()}, CI.bench, CI.multi)


# Compute proportional to the batch between 8 and 64 images: a layer 1 ms per 8 images, a CLS-only layer 0.2 ms,
# stem and head 0.1 ms; communication and AdamW as in COSTS.
PROPORTIONAL = Costs(layer=((8, 64), (0.008, 0.064)), cls_layer=((8, 64), (0.0016, 0.0128)),
                     stem_head=((8, 64), (0.0008, 0.0064)), adamw=1e-9, allreduce=(1e-4, 1e-9), p2p=(5e-4, 0.0))


def test_ddp_computes_the_whole_model_on_its_share_of_the_batch_and_all_reduces_every_gradient():
    vit = dict(batch=64, num_branches=1, branch_depth=24, parameters=100_000)
    alone = 0.0064 + 23 * 0.064 + 0.0128 + 1e-9 * 100_000  # the whole batch, nothing to all-reduce
    assert PROPORTIONAL.ddp_step(1, **vit) == pytest.approx(alone)
    # 32 images per rank; 400 kB of gradients, one bucket: a ring of two pays 2 alpha and moves the message once
    two = 0.0032 + 23 * 0.032 + 0.0064 + (2 * 1e-4 + 400_000 * 1e-9) + 1e-9 * 100_000
    assert PROPORTIONAL.ddp_step(2, **vit) == pytest.approx(two)
    # a ParaFormer of 24 CLS-only branches on 4 ranks of 16 images; a ring of 4 pays 6 alpha and moves 1.5 times
    para = dict(batch=64, num_branches=24, branch_depth=1, parameters=100_000)
    four = 0.0016 + 24 * 0.0032 + (6 * 1e-4 + 1.5 * 400_000 * 1e-9) + 1e-9 * 100_000
    assert PROPORTIONAL.ddp_step(4, **para) == pytest.approx(four)
    # 24 ranks do not divide 64: the slowest has 3 images, below the smallest measured batch (its 8-image time)
    many = 0.0008 + 24 * 0.0016 + (46 * 1e-4 + 2 * 23 / 24 * 400_000 * 1e-9) + 1e-9 * 100_000
    assert PROPORTIONAL.ddp_step(24, **para) == pytest.approx(many)


def test_ddp_pays_one_all_reduce_latency_per_gradient_bucket():
    assert [ddp_buckets(n) for n in (1000, 1 << 20, (1 << 20) + 1, 26 << 20, (26 << 20) + 1)] == [1, 1, 2, 2, 3]
    parameters = 10 << 20  # 40 MiB of gradients: a 1 MiB bucket, then 25 MiB and 14 MiB
    step = COSTS.ddp_step(2, batch=64, num_branches=1, branch_depth=24, parameters=parameters)
    compute = 0.001 + 23 * 0.010 + 0.002
    assert step == pytest.approx(compute + 3 * 2 * 1e-4 + 4 * parameters * 1e-9 + 1e-9 * parameters)


def test_ddp_is_not_predicted_for_more_ranks_than_images():
    with pytest.raises(ValueError, match="batch of 8 over 24 ranks"):
        COSTS.ddp_step(24, batch=8, num_branches=1, branch_depth=4, parameters=1000)


def test_predictions_have_ddp_of_both_models_beside_the_measured_steps_up_to_64_devices():
    one, two = measured_costs()
    steps = pd.DataFrame([{"method": "ddp", "model": model, "micro_batches": 1, "seconds": seconds, "processes": p}
                          for p, model, seconds in ((1, "ViT-4", 0.010), (1, "Para-F-1-4", 0.004),
                                                    (2, "ViT-4", 0.006), (2, "Para-F-1-4", 0.003))])
    bench = {"multi_costs_1": one, "multi_costs_2": two, "multi_steps_1": steps[steps["processes"] == 1],
             "multi_steps_2": steps[steps["processes"] == 2]}
    table = predictions(bench, CI.bench, CI.multi, depths=(4,))
    assert sorted(set(table.loc[table["method"] == "branch", "devices"])) == [1, 2, 4, 8, 24, 64]
    ddp = table[table["method"] == "ddp"].set_index(["model", "devices"])
    # the ci batch is 8 images: no data parallelism on 24 or 64 devices
    assert sorted(ddp.index) == sorted((m, p) for m in ("ViT-4", "Para-F-1-4") for p in (1, 2, 4, 8))
    assert ddp.loc[("ViT-4", 1), "measured_ms"] == pytest.approx(10.0)
    assert ddp.loc[("Para-F-1-4", 2), "measured_ms"] == pytest.approx(3.0)
    assert ddp.loc[("Para-F-1-4", 2), "ring_over_measured"] == pytest.approx(
        ddp.loc[("Para-F-1-4", 2), "predicted_ring_ms"] / 3.0)
    assert ddp["measured_ms"].loc[[("ViT-4", 4), ("Para-F-1-4", 8)]].isna().all()
    # as many parameters; the ViT-4 runs 3 layers of every token and a CLS-only one, the Para-F-1-4 four CLS-only
    # ones: on 1 process (8 images) 3 (cls_layer(8) - layer(8)) apart
    difference = ddp.loc[("Para-F-1-4", 1), "predicted_ring_ms"] - ddp.loc[("ViT-4", 1), "predicted_ring_ms"]
    assert difference == pytest.approx(1e3 * 3 * (0.004 - 0.0026))


# MGRIT's steps on top of COSTS: a forward 3 ms, a VJP 6 ms (flat in the batch)
MGRIT_COSTS = Costs(**{**COSTS.__dict__, "layer_forward": ((1, 64), (0.003, 0.003)),
                       "layer_vjp": ((1, 64), (0.006, 0.006))})


def mgrit(ranks, depth=16, **kw):
    args = dict(batch=64, tokens=65, width=64, parameters=100_000, coarsening=4, forward_iterations=1,
                backward_iterations=1)
    return MGRIT_COSTS.mgrit_step(ranks, depth, **{**args, **kw})


def test_mgrit_on_one_rank_pays_the_coarse_chains_relaxations_and_final_sweeps():
    # depth 16, c = 4: relax = 12 steps, coarse chain 4, right-hand side 2 * 4; one iteration each way
    steps = 4 + (12 + 8 + 4) + 12
    forward = 0.003 * steps + 0.003  # and the last layer once more, for the output
    backward = 0.006 * steps + 16 * 0.010  # the final sweep takes every layer's parameter gradients
    assert mgrit(1) == pytest.approx(0.001 + forward + backward + 1e-9 * 100_000)


def test_mgrit_on_two_ranks_halves_the_relaxations_and_sends_the_activations():
    # 8 layers each: relax 6, right-hand side 2 * 2; the coarse chains stay 4 steps (through both ranks)
    steps = 4 + (6 + 4 + 4) + 6
    one_way = (5e-4 + 0.0) / 2  # half the round trip (flat in COSTS)
    messages = (2 - 1) * (1 + 1) + 1  # prediction and coarse chain: one each; the right-hand side: one
    solve = steps, messages
    forward = 0.003 * solve[0] + one_way * solve[1] + 0.003
    backward = 0.006 * solve[0] + one_way * solve[1] + 8 * 0.010
    update = (2 * 1e-4 + 4 * 100_000 * 1e-9) + 1e-9 * 100_000  # the whole gradient all-reduced, then AdamW
    assert mgrit(2) == pytest.approx(0.001 + forward + backward + update)
    assert mgrit(1, forward_iterations=2) - mgrit(1) == pytest.approx(0.003 * (12 + 8 + 4))


def test_mgrit_needs_whole_coarse_intervals_per_rank_and_its_own_measurements():
    with pytest.raises(ConfigError, match="own 2 layers, not a multiple"):
        mgrit(8)
    assert mgrit_coarsening(24, 8, 4) == 3 and mgrit_coarsening(24, 2, 4) == 4 and mgrit_coarsening(24, 24, 4) is None
    with pytest.raises(ValueError, match="no layer_forward or layer_vjp rows"):
        COSTS.mgrit_step(1, 16, 64, 65, 64, 1000, 4, 1, 1)


def test_predictions_have_mgrit_per_iteration_count_and_depth_where_the_layers_can_be_shared():
    one, two = measured_costs()
    one = pd.concat([one, pd.DataFrame([{"kind": "compute", "what": what, "batch": b, "bytes": 0, "seconds": t * b}
                                        for what, t in (("layer_forward", 1e-4), ("layer_vjp", 2e-4))
                                        for b in (8, 64)])])
    steps = pd.DataFrame([{"method": "mgrit-1it", "model": "ViT-4", "micro_batches": 1, "seconds": 0.02,
                           "processes": 2}])
    bench = {"multi_costs_1": one, "multi_costs_2": two, "multi_steps_2": steps}
    table = predictions(bench, CI.bench, CI.multi, depths=(4, 48))
    mgrit_rows = table[table["method"].str.startswith("mgrit")].set_index(["depth", "method", "devices"])
    assert set(mgrit_rows.index.get_level_values("method")) == {"mgrit-1it", "mgrit-2it"}
    # depth 4 on 4 ranks leaves one layer each: no coarse interval; depth 48 on 24 ranks: 2 layers, coarsening 2
    assert sorted(set(mgrit_rows.loc[4].index.get_level_values("devices"))) == [1, 2]
    assert sorted(set(mgrit_rows.loc[48].index.get_level_values("devices"))) == [1, 2, 4, 8, 24]
    assert mgrit_rows.loc[(48, "mgrit-1it", 24), "coarsening"] == 2
    assert mgrit_rows.loc[(4, "mgrit-1it", 2), "measured_ms"] == pytest.approx(20.0)
    assert mgrit_rows.loc[(48, "mgrit-1it", 2), "measured_ms"] != mgrit_rows.loc[(48, "mgrit-1it", 2),
                                                                                  "measured_ms"]  # NaN: not measured
