"""Layer parallelism by MGRIT: with enough iterations it computes what serial training computes (outputs, loss and
every parameter gradient), with fewer it is a measurable approximation, and two gloo processes compute exactly
what one process computes."""

import copy

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from paraformer.core.config import ConfigError
from paraformer.core.model import ParaFormer
from paraformer.bench.convergence import ConvergenceSettings, convergence_table, write
from paraformer.parallel.mgrit import (LayerParallel, MGRITConfig, check_layout, flat_gradient, layer_step,
                                       relative_error, serial_reference)
from tests.test_model import small
from tests.test_parallel import free_port

WORLD_SIZE = 2


def vit(depth: int, seed: int = 0) -> ParaFormer:
    torch.manual_seed(seed)
    return ParaFormer(small(f"{depth}-{depth}"))


def batch(seed: int = 1):
    torch.manual_seed(seed)
    return torch.randn(6, 3, 16, 16), torch.randint(0, 7, (6,))


def serial(model: ParaFormer, step: float = 1.0):
    """(output tokens, loss, flat gradient) of ordinary backpropagation through a copy of `model`."""
    reference = copy.deepcopy(model)
    x, y = batch()
    out, loss = serial_reference(reference, x, y, step)
    return out, loss, flat_gradient(reference)


def layer_parallel(model: ParaFormer, config: MGRITConfig, step: float = 1.0):
    """(output tokens, loss, flat gradient) of MGRIT in one process, on a copy of `model`."""
    model = copy.deepcopy(model)
    solver = LayerParallel(model, config, step)
    x, y = batch()
    loss = solver.loss_and_gradients(x, y)
    return solver.forward(x), loss, flat_gradient(model)


def test_step_one_is_the_models_own_layer_bit_for_bit():
    layer = vit(2).branches[0][0]
    x = torch.randn(3, 17, 32)
    assert torch.equal(layer_step(layer, x, 1.0), layer(x))
    half = layer_step(layer, x, 0.5)  # and another step is the Euler step of both sub-blocks
    mid = x + 0.5 * layer.attn(layer.norm1(x))
    assert torch.equal(half, mid + 0.5 * layer.mlp(layer.norm2(mid)))


def test_the_serial_reference_is_the_vit():
    model = vit(4)
    x, y = batch()
    out, loss = serial_reference(copy.deepcopy(model), x, y)
    expected = torch.nn.functional.cross_entropy(model(x), y)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("levels, coarsening, relaxation", [(2, 4, "F"), (2, 2, "FCF"), (3, 2, "F")])
def test_enough_iterations_give_the_serial_outputs_and_gradients(levels, coarsening, relaxation):
    depth = 16
    config = MGRITConfig(levels=levels, coarsening=coarsening, fine_relaxation=relaxation,
                         forward_iterations=depth // coarsening, backward_iterations=depth // coarsening)
    model = vit(depth)
    out, loss, grad = layer_parallel(model, config)
    ref_out, ref_loss, ref_grad = serial(model)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)


def test_two_level_f_relaxation_is_exact_after_one_iteration_per_inner_coarse_interval():
    depth, coarsening = 16, 4
    model = vit(depth)
    ref_out, _, ref_grad = serial(model)
    needed = MGRITConfig(coarsening=coarsening).iterations_to_converge(depth)
    assert needed == 3
    errors = []
    for iterations in range(needed + 1):
        config = MGRITConfig(coarsening=coarsening, forward_iterations=iterations, backward_iterations=iterations)
        out, _, grad = layer_parallel(model, config)
        errors.append((relative_error(out, ref_out), relative_error(grad, ref_grad)))
    assert all(out > 1e-3 and grad > 1e-3 for out, grad in errors[:needed])  # a real approximation before
    assert errors[needed][0] < 1e-5 and errors[needed][1] < 1e-4  # and exact from that iteration on


def test_with_a_small_step_each_iteration_shrinks_the_error():
    depth = 16
    model = vit(depth)
    step = 1 / depth  # the paper's h = T / N, with T = 1
    ref_out, _, ref_grad = serial(model, step)
    errors = [layer_parallel(model, MGRITConfig(forward_iterations=k, backward_iterations=k), step)
              for k in range(3)]
    out_errors = [relative_error(out, ref_out) for out, _, _ in errors]
    grad_errors = [relative_error(grad, ref_grad) for _, _, grad in errors]
    assert out_errors[0] > out_errors[1] > out_errors[2] > 0
    assert grad_errors[0] > grad_errors[1] > grad_errors[2] > 0


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="levels=1"):
        MGRITConfig(levels=1)
    with pytest.raises(ConfigError, match="fine_relaxation='C'"):
        MGRITConfig(fine_relaxation="C")
    with pytest.raises(ConfigError, match="forward_iterations=-1"):
        MGRITConfig(forward_iterations=-1)
    with pytest.raises(ConfigError, match="depth 10 cannot be shared evenly by 4 ranks"):
        check_layout(10, 4, MGRITConfig())
    with pytest.raises(ConfigError, match="own 8 layers, not a multiple of .* 16"):
        check_layout(16, 2, MGRITConfig(levels=3))
    assert check_layout(32, 2, MGRITConfig(levels=3)) == 16
    with pytest.raises(ConfigError, match="one-branch ParaFormer"):
        LayerParallel(ParaFormer(small("2-4")), MGRITConfig())
    with pytest.raises(ConfigError, match="dropout=0.1"):
        LayerParallel(ParaFormer(small("4-4", dropout=0.1)), MGRITConfig())


def _worker(rank: int, port: int, depth: int, config: MGRITConfig, compare_serial: bool) -> None:
    model = vit(depth)
    # this process alone, before it joins the group (inside it, LayerParallel would share the layers out)
    expected = serial(model) if compare_serial else layer_parallel(model, config)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        parallel_model = copy.deepcopy(model)
        solver = LayerParallel(parallel_model, config, group=dist.group.WORLD)
        assert (solver.start, solver.stop) == (rank * depth // 2, (rank + 1) * depth // 2)
        x, y = batch()
        loss = solver.loss_and_gradients(x, y)
        out = solver.forward(x)
        torch.testing.assert_close(loss, expected[1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(flat_gradient(parallel_model), expected[2], rtol=1e-4, atol=1e-6)
        if rank == WORLD_SIZE - 1:
            torch.testing.assert_close(out, expected[0], rtol=1e-5, atol=1e-6)
        else:
            assert out is None
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("depth, config, compare_serial", [
    (16, MGRITConfig(forward_iterations=1, backward_iterations=1), False),  # an approximation, the same one
    (16, MGRITConfig(levels=3, coarsening=2, fine_relaxation="FCF", forward_iterations=2), False),
    (16, MGRITConfig(forward_iterations=3, backward_iterations=3), True),  # converged: serial training
])
def test_two_gloo_processes_compute_what_one_process_computes(depth, config, compare_serial):
    mp.spawn(_worker, args=(free_port(), depth, config, compare_serial), nprocs=WORLD_SIZE, join=True)


def test_the_convergence_table_measures_each_setting_the_layout_allows(tmp_path):
    setting = ConvergenceSettings(depths=(8, 16), iterations=(0, 1, 2), levels=(2, 3), coarsenings=(4,),
                                  relaxations=("F",), steps=("1", "1/N"), width=16, batch=4)
    table = convergence_table(setting, progress=False)
    # 3 levels of coarsening 4 need depths divisible by 16: depth 8 has two levels only
    assert sorted(set(zip(table.depth, table.levels))) == [(8, 2), (16, 2), (16, 3)]
    assert len(table) == 3 * 2 * 3
    exact = table[(table.depth == 8) & (table.iterations >= 1)]  # N / c - 1 = 1 iteration is exact at depth 8
    assert (exact.output_error < 1e-5).all() and (exact.gradient_error < 1e-4).all()
    small_step = table[(table.depth == 16) & (table.step == "1/N") & (table.levels == 2)].sort_values("iterations")
    assert small_step.output_error.is_monotonic_decreasing and small_step.gradient_error.is_monotonic_decreasing
    assert (table.h[table.step == "1/N"] == 1 / table.depth[table.step == "1/N"]).all()

    csv_path, md_path = write(table, setting, "ci", tmp_path)
    written = pd.read_csv(csv_path)
    assert list(written.depth) == list(table.depth) and (written.profile == "ci").all()
    assert written.output_error.to_numpy() == pytest.approx(table.output_error.to_numpy(), rel=1e-3)
    assert md_path.exists()


def _benchmark_worker(rank: int, port: int) -> None:
    from paraformer.bench import multi as multibench
    from paraformer.experiments.profiles import get_profile

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.set_num_threads(1)
        rows = multibench.time_layer_parallel(get_profile("ci").bench, get_profile("ci").multi, torch.device("cpu"))
        assert [(r["method"], r["model"]) for r in rows] == [("mgrit-1it", "ViT-4"), ("mgrit-2it", "ViT-4")]
        assert all(0 < r["seconds"] < 10 for r in rows)
        # a training step keeps the replicas equal: every rank applies the same all-reduced gradient
        model = vit(16)
        solver = LayerParallel(model, MGRITConfig(forward_iterations=1), group=dist.group.WORLD)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        x, y = batch()
        solver.loss_and_gradients(x, y)
        optimizer.step()
        after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        gathered = [torch.empty_like(after) for _ in range(WORLD_SIZE)]
        dist.all_gather(gathered, after)
        assert torch.equal(gathered[0], gathered[1]) and not torch.equal(before, after)
    finally:
        dist.destroy_process_group()


def test_the_benchmark_times_mgrit_per_iteration_count_and_its_step_keeps_replicas_equal():
    mp.spawn(_benchmark_worker, args=(free_port(),), nprocs=WORLD_SIZE, join=True)
