"""Data parallelism in the multi-process benchmark: DDP's step on two gloo processes, each on half the batch,
updates the model exactly as one process does on the whole batch, and a batch the processes cannot share
equally is refused."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from paraformer.core.config import ConfigError
from paraformer.core.model import ParaFormer
from paraformer.bench import multi as multibench
from paraformer.experiments.profiles import get_profile
from paraformer.parallel.processes import rank_share
from tests.test_model import small
from tests.test_parallel import free_port

WORLD_SIZE = 2


def test_every_rank_gets_an_equal_contiguous_share_and_an_uneven_split_is_refused():
    assert [rank_share(8, r, 2) for r in (0, 1)] == [slice(0, 4), slice(4, 8)]
    assert rank_share(8, 0, 1) == slice(0, 8)
    with pytest.raises(ConfigError, match="batch of 8 into equal shares, and 3 processes"):
        rank_share(8, 1, 3)


def reference(name: str):
    """The model, a fixed global batch, and the model after one `_training_step` on that whole batch in one
    process, with the gradients of that step."""
    torch.manual_seed(0)
    model = ParaFormer(small(name))
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 7, (6,), generator=torch.Generator().manual_seed(2))
    alone = ParaFormer(small(name))
    alone.load_state_dict(model.state_dict())
    multibench._training_step(alone, x, y)()
    return model, x, y, alone


def _worker(rank: int, port: int, name: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        model, x, y, alone = reference(name)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        seen = []  # the images this rank computes: its half of the batch, not the whole batch again
        model.patch_embed.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
        multibench.ddp_training_step(model, x, y, torch.device("cpu"))()
        torch.testing.assert_close(seen, [x[3 * rank:3 * (rank + 1)]], rtol=0, atol=0)
        for n, p in model.named_parameters():
            expected = alone.get_parameter(n)
            # every parameter has a gradient (find_unused_parameters=False relies on it), the whole batch's mean
            assert expected.grad is not None and p.grad is not None, n
            torch.testing.assert_close(p.grad, expected.grad, rtol=1e-4, atol=1e-7, msg=n)
            # AdamW's first step moves each weight by about lr = 1e-4: the tolerance is a tenth of that
            assert not torch.equal(p.detach(), before[n]), n
            torch.testing.assert_close(p.detach(), expected.detach(), rtol=0, atol=1e-5, msg=n)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["4-4", "1-4"])  # the sequential ViT, and a ParaFormer of CLS-only branches
def test_ddp_on_two_gloo_processes_updates_the_model_as_one_process_on_the_whole_batch(name):
    mp.spawn(_worker, args=(free_port(), name), nprocs=WORLD_SIZE, join=True)


def _rows_worker(rank: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.set_num_threads(1)
        ci = get_profile("ci")
        rows = multibench.time_ddp(ci.bench, ci.multi, torch.device("cpu"))
        assert [(r["method"], r["model"], r["micro_batches"]) for r in rows] == [("ddp", "ViT-4", 1),
                                                                                 ("ddp", "Para-F-1-4", 1)]
        assert all(0 < r["seconds"] < 10 for r in rows)
    finally:
        dist.destroy_process_group()


def test_the_benchmark_times_ddp_of_both_models_of_the_setting():
    mp.spawn(_rows_worker, args=(free_port(),), nprocs=WORLD_SIZE, join=True)
